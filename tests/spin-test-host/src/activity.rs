//! What an instance is doing with the host, so a request's instance keeps running until the
//! work its guest spawned after responding is done.
//!
//! Spin 4 waits for the guest's `wasi:http` handler task to exit, spawned work included
//! (`task.block(store)` after sending the response, spin@v4: crates/trigger-http/src/wasip3.rs).
//! wasmtime 44's `Service` binding does not hand out that task, so the host watches the
//! guest's host calls instead: the instance is done once no outbound request is in flight and
//! no key-value call came for [`QUIET`]. Guest work is all store and HTTP calls, so a pause
//! that long means it ended; [`CAP`] bounds a guest that never settles.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// No host call for this long after the response: the guest's work is done.
const QUIET: Duration = Duration::from_millis(50);
/// The longest an instance runs on after its response.
const CAP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    /// A host call was made.
    pub fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    /// An outbound request starts: in flight until the returned guard drops (its response
    /// body read to the end or dropped, or the request failed).
    pub fn outbound(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }

    /// Returns once the guest's work after its response is done (see the module docs).
    pub async fn settled(&self) {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let quiet = self.last.lock().map_or(true, |l| l.elapsed() >= QUIET);
            if (quiet && self.in_flight.load(Ordering::SeqCst) == 0) || started.elapsed() >= CAP {
                return;
            }
        }
    }
}

/// An outbound request in flight.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A response body that keeps its request in flight until it is read or dropped.
pub struct TrackedBody {
    pub body: UnsyncBoxBody<Bytes, ErrorCode>,
    pub in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        let this = self.get_mut();
        this.in_flight.0.touch();
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
