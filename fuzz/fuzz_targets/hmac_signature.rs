//! Legacy HMAC webhook verification (`X-ADCP-Signature`, `X-ADCP-Timestamp`, the
//! duplicate-key body check). Input: signature line, timestamp line, body. A signature
//! line of `!` is replaced by a valid signature over the given timestamp and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::hmac_signature::{
    HmacError, WINDOW_S, has_duplicate_keys, sign, verify,
};
use orchestrator_fuzz::{NOW_S, first_line};

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef-0123456789";
const PREVIOUS: &[u8] = b"fuzz-previous-secret-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let (signature, rest) = first_line(data);
    let (timestamp, body) = first_line(rest);
    let timestamp = String::from_utf8_lossy(timestamp);
    let signature = match signature {
        b"!" => sign(SECRET, &timestamp, body),
        s => String::from_utf8_lossy(s).into_owned(),
    };
    let _ = verify(
        &[SECRET, PREVIOUS],
        Some(&signature),
        Some(&timestamp),
        body,
        NOW_S,
    );
    // A genuine signature inside the window verifies, unless the body repeats a key.
    let in_window = !timestamp.is_empty()
        && timestamp
            .trim()
            .parse::<i64>()
            .is_ok_and(|t| (NOW_S - t).abs() <= WINDOW_S);
    if in_window {
        let genuine = sign(PREVIOUS, &timestamp, body);
        let expected = if has_duplicate_keys(body) {
            Err(HmacError::MalformedBody)
        } else {
            Ok(())
        };
        assert_eq!(
            verify(
                &[SECRET, PREVIOUS],
                Some(&genuine),
                Some(&timestamp),
                body,
                NOW_S
            ),
            expected
        );
    }
});
