//! The URL rules for seller, `jwks_uri` and callback URLs: any text is judged without a
//! panic, and whatever passes the strict rules is an https URL with a host and no
//! credentials, and passes the relaxed ones too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::foundation::outbound_url::check;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let strict = check(url, false);
    let relaxed = check(url, true);
    if strict.is_ok() {
        assert!(relaxed.is_ok(), "{url}");
        let uri: http::Uri = url.parse().expect("a URL that passed parses");
        assert_eq!(uri.scheme_str(), Some("https"), "{url}");
        let authority = uri.authority().expect("an authority").as_str();
        assert!(!authority.contains('@'), "{url}");
    }
});
