//! What a step that reads and writes operations runs with: the store, the time and the log,
//! passed as one value.

use super::{clock::Clock, log::Log, store::Store};

pub struct Cx<'a, S: Store> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub log: &'a dyn Log,
}

impl<S: Store> Clone for Cx<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Store> Copy for Cx<'_, S> {}

impl<'a, S: Store> Cx<'a, S> {
    pub fn new(store: &'a S, clock: &'a dyn Clock, log: &'a dyn Log) -> Self {
        Cx { store, clock, log }
    }
}
