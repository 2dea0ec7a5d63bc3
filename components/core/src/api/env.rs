//! What a request handler works with: the configuration from Spin variables and the
//! injected store, clock, randomness, log and outbound calls.

use crate::config::SweepConfig;
use crate::foundation::clock::{Clock, Entropy};
use crate::foundation::cx::Cx;
use crate::foundation::log::Log;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::seller::port::SellerCalls;

/// Configuration from Spin variables.
#[derive(Debug)]
pub struct ApiConfig {
    pub admin_api_key: String,
    /// Origin sellers reach us at, without a trailing slash.
    pub public_base_url: String,
    /// Bearer token for `POST /internal/sweep`.
    pub sweep_token: String,
    /// Bearer token for `GET /metrics`.
    pub metrics_token: String,
    pub sealing: SealingKey,
    /// The `allow_private_networks` variable: registered URLs may be plain `http` and name
    /// internal addresses (development and tests only; off by default).
    pub allow_private_networks: bool,
}

/// What a request handler works with.
pub struct Env<'a, S: Store, C: SellerCalls, T: Transport> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub entropy: &'a dyn Entropy,
    pub config: &'a ApiConfig,
    pub log: &'a dyn Log,
    /// How operations reach their sellers.
    pub calls: &'a C,
    /// Plain outbound HTTP (buyer notifications).
    pub transport: &'a T,
    pub sweep: &'a SweepConfig,
}

impl<'a, S: Store, C: SellerCalls, T: Transport> Env<'a, S, C, T> {
    pub fn cx(&self) -> Cx<'a, S> {
        Cx::new(self.store, self.clock, self.log)
    }
}
