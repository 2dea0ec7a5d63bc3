//! Talking to sellers: call port, breaker guard, MCP client, error mapping, capabilities (and
//! the subscription to their changes), tools.

pub mod capabilities;
pub mod capability_subscription;
pub mod error_mapping;
pub mod guard;
pub mod mcp;
pub mod port;
pub mod tools;
