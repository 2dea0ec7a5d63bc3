//! A scripted outbound transport.

use crate::foundation::transport::*;
use std::cell::RefCell;
use std::collections::VecDeque;

/// Answers with queued responses (or errors) in order and records every request.
#[derive(Default)]
pub struct ScriptedTransport {
    pub replies: RefCell<VecDeque<Result<InboundResponse, TransportError>>>,
    pub requests: RefCell<Vec<OutboundRequest>>,
}

impl ScriptedTransport {
    pub fn reply(&self, status: u16, body: &str) {
        let resp = http::Response::builder()
            .status(status)
            .body(body.as_bytes().to_vec())
            .unwrap();
        self.replies.borrow_mut().push_back(Ok(resp));
    }

    pub fn reply_with(&self, resp: InboundResponse) {
        self.replies.borrow_mut().push_back(Ok(resp));
    }

    pub fn fail(&self, e: TransportError) {
        self.replies.borrow_mut().push_back(Err(e));
    }
}

impl Transport for ScriptedTransport {
    async fn send(
        &self,
        req: OutboundRequest,
        _: Limits,
    ) -> Result<InboundResponse, TransportError> {
        self.requests.borrow_mut().push(req);
        self.replies
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err(TransportError::Connect("no scripted reply".into())))
    }
}
