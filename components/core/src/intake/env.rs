//! What the webhook intake works with, and what it answers.

use crate::foundation::clock::Clock;
use crate::foundation::cx::Cx;
use crate::foundation::http::Response;
use crate::foundation::log::Log;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::schedule::due::DueConfig;

/// Largest webhook body accepted (AdCP receiver contract: 413 above 1 MB).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

pub struct IntakeConfig {
    /// Origin the seller was given; `@target-uri` is rebuilt from it, not from whatever
    /// address the request reached us on (proxies, Spin's listener).
    pub public_base_url: String,
    pub sealing: SealingKey,
    pub due: DueConfig,
    /// The `allow_private_networks` variable: a `jwks_uri` may be plain `http` or internal.
    pub allow_private_networks: bool,
}

pub struct IntakeEnv<'a, S: Store, T: Transport> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub log: &'a dyn Log,
    pub config: &'a IntakeConfig,
    /// For key discovery (brand.json, JWKS) when the cache cannot answer.
    pub transport: &'a T,
}

impl<'a, S: Store, T: Transport> IntakeEnv<'a, S, T> {
    pub fn cx(&self) -> Cx<'a, S> {
        Cx::new(self.store, self.clock, self.log)
    }
}

/// The answer, plus the operation whose changes the component settles after responding
/// ([`super::settle`]).
pub struct Answer {
    pub response: Response,
    pub settle: Option<crate::model::operation::Operation>,
}
