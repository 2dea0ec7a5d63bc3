//! An operation's life after it is stored: applying what is observed and its effects,
//! dispatch, governance, derived operations (cancel follow-ups, re-plans), and deciding
//! what the operation needs next.

pub mod create;
pub mod dispatch;
pub mod effects;
pub mod governance;
pub mod linked;
pub mod next;

#[cfg(test)]
mod crash_tests;
