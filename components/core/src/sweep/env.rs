//! What a tick needs.

use crate::config::SweepConfig;
use crate::foundation::clock::{Clock, Entropy};
use crate::foundation::cx::Cx;
use crate::foundation::log::Log;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::seller::port::SellerCalls;

pub struct SweepEnv<'a, S: Store, C: SellerCalls, T: Transport> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub entropy: &'a dyn Entropy,
    pub log: &'a dyn Log,
    pub sealing: &'a SealingKey,
    pub calls: &'a C,
    pub transport: &'a T,
    pub config: &'a SweepConfig,
}

impl<'a, S: Store, C: SellerCalls, T: Transport> SweepEnv<'a, S, C, T> {
    pub fn cx(&self) -> Cx<'a, S> {
        Cx::new(self.store, self.clock, self.log)
    }
}
