//! The domain model: statuses, the state machine table, the operation record, the AdCP
//! tasks, and the reading of every AdCP answer shape into an observation.

pub mod operation;
pub mod payload;
pub mod state_machine;
pub mod status;
pub mod task;
pub mod webhook_path;

#[cfg(test)]
mod task_table_tests;
