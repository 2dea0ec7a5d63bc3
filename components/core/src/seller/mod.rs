//! Talking to sellers: call port, breaker guard, MCP client, error mapping, capabilities, tools.

pub mod capabilities;
pub mod error_mapping;
pub mod guard;
pub mod mcp;
pub mod port;
pub mod tools;
