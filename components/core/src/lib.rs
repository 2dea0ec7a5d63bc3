//! The orchestrator's domain logic, free of any Spin dependency.
//!
//! Everything here is a pure function over data or an `async` function over the
//! [`foundation::store::Store`] trait, with the clock and randomness passed in
//! ([`foundation::clock::Clock`], [`foundation::clock::Entropy`]). The Spin components are
//! thin adapters that supply a real store, clock and HTTP client; native tests supply
//! [`foundation::store::MemoryStore`] and fixed clocks.
//!
//! The modules are layers, lowest first; a module imports only from its own layer or lower
//! ones (`tests/architecture.rs` enforces it):
//! `foundation` → `model` → `auth` → `schedule` → `config` → `records` → `seller` →
//! `lifecycle` → the entry points `api`, `intake`, `sweep` (`api` may call `sweep`; `intake`
//! imports neither).

pub mod api;
pub mod auth;
pub mod config;
pub mod foundation;
pub mod intake;
pub mod lifecycle;
pub mod model;
pub mod records;
pub mod schedule;
pub mod seller;
pub mod sweep;

#[cfg(test)]
pub mod testing;
