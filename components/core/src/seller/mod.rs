//! Talking to sellers: the port (`SellerCalls`, how a call can fail), the circuit-breaker
//! guard, the MCP client, AdCP error mapping, capability fetching and tool discovery.

pub mod capabilities;
pub mod error_mapping;
pub mod guard;
pub mod mcp;
pub mod port;
pub mod tools;
