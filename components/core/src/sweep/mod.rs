//! The sweep: one tick of background work, run by the cron component or `POST /internal/sweep`.
//! Ticks are idempotent and may overlap (replicas, overlapping cron runs): the due index hands out
//! work, an operation lease keeps two sweeps off one operation, every action goes through the
//! journal. Each due operation gets one thing, by state: `pending_dispatch` is (re)dispatched with
//! the same key and bytes ([`crate::lifecycle::dispatch`]); past its deadline, one last look at the
//! seller, then `timed_out`; held by the seller (`submitted`, `working`, …) or `timed_out` within
//! the look-up horizon, a poll folded in through the state machine. Then it is filed again at its
//! next due time. Buyer notifications awaiting a retry are filed in the same index.

pub mod audit;
mod env;
mod lanes;
mod lookup;
mod memo;
pub mod purge;
pub mod reconcile;
mod resend;
mod tick;
mod work;

pub use env::SweepEnv;
pub use tick::tick;

#[cfg(test)]
mod notification_tests;
#[cfg(test)]
mod tests;
