//! What the fuzz targets share: a plain-text request format that `scripts/fuzz.sh` can
//! write seeds in, a fixed key set that can also sign (so mutated inputs can be re-signed
//! and reach the checks after signature verification), and deterministic doubles for the
//! clock, randomness and outbound HTTP.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use orchestrator_core::auth::rfc9421::{self, Jwk};
use orchestrator_core::foundation::clock::{Clock, Entropy};
use orchestrator_core::foundation::transport::{
    InboundResponse, Limits, OutboundRequest, Transport, TransportError,
};
use sfv::{Dictionary, ListEntry, Parser};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::OnceLock;

/// The fixed "now" of every target: the `reference_now` of the spec's webhook-signing
/// vectors, so that their `created`/`expires` windows are current.
pub const NOW_S: i64 = 1_776_520_800;
pub const NOW_MS: u64 = NOW_S as u64 * 1000;

/// Runs a future to completion (the in-memory store yields once per call, so this needs a
/// real executor, the one the core's own tests use).
pub fn block_on<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Splits an input into at most `max` sections separated by a `----` line.
pub fn sections(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < max {
        match find(rest, b"\n----\n") {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 6..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits at the first line feed: (first line, the rest).
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A request in the seed text format: `METHOD TARGET`, then `Name: value` lines, an empty
/// line, and the body bytes.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn parse(data: &[u8]) -> Raw {
        let (head, body) = match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n');
        let start = lines.next().unwrap_or("");
        let (method, target) = start.split_once(' ').unwrap_or((start, ""));
        Raw {
            method: method.to_string(),
            target: target.trim().to_string(),
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// The request as `http` types; `None` when the method or target cannot be a request
    /// line at all. Header lines that are not valid HTTP are dropped (no server hands such
    /// a request to a component).
    pub fn to_request(&self, default_target: &str) -> Option<http::Request<Vec<u8>>> {
        let target = if self.target.is_empty() {
            default_target
        } else {
            &self.target
        };
        let mut req = http::Request::builder()
            .method(http::Method::from_bytes(self.method.as_bytes()).ok()?)
            .uri(target)
            .body(self.body.clone())
            .ok()?;
        append_headers(req.headers_mut(), &self.headers);
        Some(req)
    }
}

pub fn append_headers(map: &mut HeaderMap, headers: &[(String, String)]) {
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(n, v);
        }
    }
}

/// Sets one header, replacing earlier values (ignored if the value is not valid HTTP).
pub fn set_header(map: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        map.insert(name, v);
    }
}

/// Every value of a header joined with `, ` (as the verifier reads it).
pub fn joined(map: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = map
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A key the targets trust and can sign with. The key ids are the spec vectors' ids, so
/// seeds made from those vectors name a known key; the key material is our own.
pub struct Signer {
    pub kid: &'static str,
    key: SigningKey,
    jwk: Jwk,
}

enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// The fixed key set: one Ed25519 and one P-256 key for webhook signing (derived once:
/// key arithmetic would otherwise dominate every run).
pub fn signers() -> &'static [Signer] {
    static SIGNERS: OnceLock<Vec<Signer>> = OnceLock::new();
    SIGNERS.get_or_init(|| {
        let ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let es = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).expect("a valid P-256 scalar");
        let point = es.verifying_key().to_encoded_point(false);
        let jwk = |kid: &str, kty: &str, crv: &str, x: &[u8], y: Option<&[u8]>| Jwk {
            kid: kid.into(),
            kty: kty.into(),
            crv: Some(crv.into()),
            alg: None,
            use_: Some("sig".into()),
            key_ops: Some(vec!["verify".into()]),
            adcp_use: Some("webhook-signing".into()),
            x: URL_SAFE_NO_PAD.encode(x),
            y: y.map(|y| URL_SAFE_NO_PAD.encode(y)),
        };
        let (ed_kid, es_kid) = ("test-ed25519-webhook-2026", "test-es256-webhook-2026");
        vec![
            Signer {
                kid: ed_kid,
                jwk: jwk(
                    ed_kid,
                    "OKP",
                    "Ed25519",
                    &ed.verifying_key().to_bytes(),
                    None,
                ),
                key: SigningKey::Ed25519(ed),
            },
            Signer {
                kid: es_kid,
                jwk: jwk(
                    es_kid,
                    "EC",
                    "P-256",
                    point.x().expect("uncompressed point"),
                    point.y().map(|y| y.as_slice()),
                ),
                key: SigningKey::P256(es),
            },
        ]
    })
}

impl Signer {
    /// The `alg` parameter this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.key {
            SigningKey::Ed25519(_) => "ed25519",
            SigningKey::P256(_) => "ecdsa-p256-sha256",
        }
    }

    /// The public key as a webhook-signing JWK.
    pub fn jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match &self.key {
            SigningKey::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(k, message);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// Replaces the `Signature` header with a valid signature, by our key of the same `keyid`,
/// over the components the request's own `Signature-Input` covers. Does nothing when the
/// input names no key of ours or cannot be turned into a signature base.
pub fn resign(
    method: &str,
    target_uri: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    signers: &[Signer],
) {
    let Some(input) = joined(headers, "signature-input") else {
        return;
    };
    let Ok(dict) = Parser::new(&input).parse::<Dictionary>() else {
        return;
    };
    let Some((label, ListEntry::InnerList(covered))) =
        dict.get_key_value("sig1").or_else(|| dict.first())
    else {
        return;
    };
    let keyid = covered.params.get("keyid").and_then(|v| {
        v.as_string()
            .map(|s| s.as_str().to_string())
            .or_else(|| v.as_token().map(|t| t.as_str().to_string()))
    });
    let Some(signer) = signers.iter().find(|s| Some(s.kid) == keyid.as_deref()) else {
        return;
    };
    let names: Vec<&str> = covered
        .items
        .iter()
        .filter_map(|i| i.bare_item.as_string().map(|s| s.as_str()))
        .collect();
    let base = {
        let req = rfc9421::Request {
            method,
            target_uri,
            headers,
            body,
            now_s: NOW_S,
        };
        rfc9421::signature_base(&req, &names, covered)
    };
    if let Ok(base) = base {
        let sig = URL_SAFE_NO_PAD.encode(signer.sign(base.as_bytes()));
        set_header(headers, "signature", &format!("{}=:{sig}:", label.as_str()));
    }
}

/// Signs a request from scratch in AdCP's webhook profile: the five required components,
/// a current window, the given nonce, the body's `Content-Digest`.
pub fn sign_fresh(
    method: &str,
    target_uri: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    signer: &Signer,
    nonce: &str,
) {
    set_header(headers, "content-digest", &rfc9421::content_digest(body));
    let input = format!(
        "sig1=(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");\
         created={NOW_S};expires={};nonce=\"{nonce}\";keyid=\"{}\";alg=\"{}\";tag=\"{}\"",
        NOW_S + 300,
        signer.kid,
        signer.alg(),
        rfc9421::TAG
    );
    set_header(headers, "signature-input", &input);
    resign(
        method,
        target_uri,
        headers,
        body,
        std::slice::from_ref(signer),
    );
}

/// A clock the API target can move forward.
pub struct StepClock(pub Cell<u64>);

impl Clock for StepClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

/// Deterministic "randomness": a counter through SplitMix64, so a crash reproduces.
pub struct CounterEntropy(pub Cell<u64>);

impl Entropy for CounterEntropy {
    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut z = self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            self.0.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Answers outbound requests with queued responses in order, then with a connect error.
#[derive(Default)]
pub struct ScriptedTransport {
    pub replies: RefCell<VecDeque<Result<InboundResponse, TransportError>>>,
}

impl ScriptedTransport {
    pub fn push(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        let mut resp = http::Response::new(body.to_vec());
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        append_headers(resp.headers_mut(), headers);
        self.replies.borrow_mut().push_back(Ok(resp));
    }
}

impl Transport for ScriptedTransport {
    async fn send(
        &self,
        _req: OutboundRequest,
        _limits: Limits,
    ) -> Result<InboundResponse, TransportError> {
        self.replies
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err(TransportError::Connect("no scripted reply".into())))
    }
}

/// The documented error contract of both HTTP surfaces: a failure answers JSON
/// `{"code": "...", "message": "..."}`.
pub fn assert_error_contract(resp: &http::Response<Vec<u8>>) {
    if resp.status().is_client_error() || resp.status().is_server_error() {
        let v: serde_json::Value = serde_json::from_slice(resp.body())
            .unwrap_or_else(|e| panic!("{} answered a non-JSON error: {e}", resp.status()));
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{} answered an error without code and message: {v}",
            resp.status()
        );
    }
}
