//! The sweep: one tick of the orchestrator's background work, run by the cron component or
//! by `POST /internal/sweep`. Ticks are idempotent and may overlap (several replicas,
//! overlapping cron runs): the due index hands out work, an operation lease keeps two
//! sweeps off one operation, and every action goes through the journal.
//!
//! For each due operation the tick does exactly one thing, chosen from its state:
//! - `pending_dispatch`: (re)dispatch with the same key and bytes ([`crate::lifecycle::dispatch`]);
//! - past its deadline: one last look at the seller, then `timed_out`;
//! - held by the seller (`submitted`, `working`, …) or `timed_out` within the look-up horizon:
//!   poll the task status and fold the answer in through the state machine;
//!
//! and files the operation again at its next due time. Buyer notifications awaiting a retry
//! are filed in the same index.

mod env;
mod lookup;
mod memo;
pub mod purge;
pub mod reconcile;
mod tick;
mod work;

pub use env::SweepEnv;
pub use tick::tick;

#[cfg(test)]
mod notification_tests;
#[cfg(test)]
mod tests;
