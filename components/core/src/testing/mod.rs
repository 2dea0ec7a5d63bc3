//! Fixtures shared by the core's tests (compiled for tests only): clocks and randomness, a
//! scripted transport and seller, a store that loses answers, a log that keeps its lines,
//! sample operations, an RFC 9421 signing seller, and where the AdCP spec's schemas and
//! vectors are.

pub mod adcp;
mod clock;
mod log;
mod operation;
mod seller;
pub mod signer;
mod store;
mod transport;

pub use clock::{SeededEntropy, TestClock};
pub use log::Lines;
pub use operation::{obs, record, sample, sample_seller};
pub use seller::{FakeSeller, conformant_capabilities};
pub use store::LossyStore;
pub use transport::ScriptedTransport;
