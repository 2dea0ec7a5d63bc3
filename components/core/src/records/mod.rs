//! What is kept in the store, one kind of record per module: the operation journal (and its
//! delivery marks),
//! tenants, sellers (with their capabilities and capability-change subscription), the buyer-notification outbox, metrics
//! counters, the tenant's summary counters, and the indexes every new operation is written into.

pub mod capabilities;
pub mod capability_subscription;
pub mod deliveries;
pub mod format;
pub mod gauges;
pub mod indexes;
pub mod interop;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod seller;
pub mod summary;
pub mod tenant;
pub mod tick_report;
