//! `Content-Digest` parsing. Input: the header value, a line feed, the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::rfc9421::{content_digest, digest_matches};
use orchestrator_fuzz::first_line;

fuzz_target!(|data: &[u8]| {
    let (header, body) = first_line(data);
    let header = String::from_utf8_lossy(header);
    let _ = digest_matches(&header, body);
    // What a signer sends always matches its own body.
    assert!(digest_matches(&content_digest(body), body));
});
