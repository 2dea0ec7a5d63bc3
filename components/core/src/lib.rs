//! Domain logic, free of Spin: pure functions, or `async` ones over [`foundation::store::Store`]
//! with [`foundation::clock::Clock`], [`foundation::clock::Entropy`] passed in: Spin components
//! are thin adapters, native tests use [`foundation::store::MemoryStore`] and fixed clocks.
//! Layers, lowest first; each imports only its own layer or lower (`tests/architecture.rs` checks):
//! `foundation` → `model` → `auth` → `schedule` → `config` → `records` → `seller` → `lifecycle`
//! → the entry points `api`, `intake`, `sweep` (`api` may call `sweep`; `intake` imports neither).

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
