//! Registrations against sellers that misbehave or change underneath a request: URL rules,
//! write-backs after a seller call, and what a seller change forgets.

use super::*;
use crate::records::seller::{self, Seller};
use crate::seller::port::{CallFailure, SellerCalls, SellerError};

/// What another request does to the registration while ours waits on the seller.
#[derive(Clone, Copy)]
enum Meanwhile {
    RotateCredentials,
    Remove,
}

/// A [`FakeSeller`] during whose call to `tool` the registration changes.
struct Meddling<'a> {
    w: &'a World,
    tool: &'static str,
    change: Meanwhile,
}

impl SellerCalls for Meddling<'_> {
    async fn call(&self, s: &Seller, tool: &str, args: Value) -> Result<Value, CallFailure> {
        if tool == self.tool {
            let (t, id) = (&s.tenant_id, &s.seller_id);
            match self.change {
                Meanwhile::Remove => seller::delete(&self.w.store, t, id).await.unwrap(),
                Meanwhile::RotateCredentials => {
                    let mut fresh = seller::get(&self.w.store, t, id).await.unwrap().unwrap();
                    fresh.credentials = Some(self.w.config.sealing.seal(
                        &SeededEntropy::new(9),
                        &seller::credentials_purpose(t, id),
                        b"rotated-token",
                    ));
                    seller::put(&self.w.store, &fresh).await.unwrap();
                }
            }
        }
        self.w.seller.call(s, tool, args).await
    }
}

impl World {
    fn call_with(
        &self,
        calls: &impl SellerCalls,
        method: &str,
        path: &str,
        key: &str,
    ) -> (StatusCode, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json");
        let req = match method {
            "POST" if path.ends_with("/operations") => {
                req.body(create_body("s1").to_string().into_bytes())
            }
            _ => req.body(Vec::new()),
        }
        .unwrap();
        let env = Env {
            store: &self.store,
            clock: &self.clock,
            entropy: &self.entropy,
            config: &self.config,
            log: &self.log,
            calls,
            transport: &self.transport,
            sweep: &self.sweep,
        };
        let resp = block_on(handle(&env, req));
        let body = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        (resp.status(), body)
    }

    /// The stored registration of seller `id` (whatever its tenant).
    fn stored_seller(&self, id: &str) -> Option<Seller> {
        let key = self
            .store
            .keys()
            .into_iter()
            .find(|k| k.starts_with("seller:") && k.ends_with(&format!(":{id}")))?;
        block_on(crate::foundation::store::get_json(&self.store, &key)).unwrap()
    }

    fn credentials_of(&self, id: &str) -> String {
        let s = self.stored_seller(id).unwrap();
        let purpose = seller::credentials_purpose(&s.tenant_id, id);
        self.config
            .sealing
            .open_string(&purpose, s.credentials.as_ref().unwrap())
            .unwrap()
    }
}

#[test]
fn a_capabilities_fetch_does_not_undo_a_rotation_or_removal_made_during_it() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    let rotate = Meddling {
        w: &w,
        tool: "get_adcp_capabilities",
        change: Meanwhile::RotateCredentials,
    };
    let (s, b) = w.call_with(&rotate, "POST", "/api/v1/sellers/s1/capabilities", &key);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("seller_changed")),
        "{b}"
    );
    assert_eq!(w.credentials_of("s1"), "rotated-token");
    let remove = Meddling {
        w: &w,
        tool: "get_adcp_capabilities",
        change: Meanwhile::Remove,
    };
    let (s, _) = w.call_with(&remove, "POST", "/api/v1/sellers/s1/capabilities", &key);
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(w.stored_seller("s1").is_none(), "the removal stands");
}

#[test]
fn an_auth_flag_from_a_dispatch_does_not_undo_a_rotation_made_during_the_call() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller.answer(Err(CallFailure::Seller(SellerError {
        code: "AUTH_INVALID".into(),
        message: "bad token".into(),
        recovery: crate::seller::port::Recovery::Terminal,
        retry_after_s: None,
        adcp: true,
    })));
    let rotate = Meddling {
        w: &w,
        tool: "create_media_buy",
        change: Meanwhile::RotateCredentials,
    };
    let (s, b) = w.call_with(&rotate, "POST", "/api/v1/operations", &key);
    assert!(s.is_success(), "{s} {b}");
    let stored = w.stored_seller("s1").unwrap();
    assert_eq!(w.credentials_of("s1"), "rotated-token");
    // The flag was about the replaced credentials: not set on the new registration.
    assert_eq!(stored.attention, None);
    // Without a change meanwhile the flag is set, on the record as stored.
    w.seller.answer(Err(CallFailure::Seller(SellerError {
        code: "AUTH_INVALID".into(),
        message: "bad token".into(),
        recovery: crate::seller::port::Recovery::Terminal,
        retry_after_s: None,
        adcp: true,
    })));
    let (s, _) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert!(s.is_success());
    let stored = w.stored_seller("s1").unwrap();
    assert!(stored.attention.unwrap().contains("AUTH_INVALID"));
    assert_eq!(w.credentials_of("s1"), "rotated-token");
}

#[test]
fn registration_refuses_urls_that_point_inside_or_carry_credentials_and_stores_nothing() {
    let w = World::new();
    let key = w.tenant("acme");
    let before = w.store.keys();
    for (url, says) in [
        ("http://seller.example/mcp", "https"),
        ("https://user:secret@seller.example/mcp", "credentials"),
        ("https://127.0.0.1:8080/mcp", "private"),
        ("https://169.254.169.254/latest", "private"),
        ("https://[::1]/mcp", "private"),
        ("https://10.0.0.5/mcp", "private"),
        ("https://localhost/mcp", "private"),
    ] {
        let (s, b) = w.call(
            "PUT",
            "/api/v1/sellers/s1",
            Some(&key),
            Some(json!({"mcp_url": url})),
        );
        assert_eq!(
            (s, b["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{url}: {b}"
        );
        assert!(b["message"].is_string());
        assert_eq!(b["details"]["fields"][0]["field"], "mcp_url");
        assert!(
            b["details"]["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{b}"
        );
        assert!(
            !b.to_string().contains("secret@"),
            "the URL's credentials are not echoed"
        );
        let (s, b) = w.call(
            "PUT",
            "/api/v1/callback",
            Some(&key),
            Some(json!({"url": url})),
        );
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {b}");
        assert_eq!(b["details"]["fields"][0]["field"], "url");
    }
    assert_eq!(w.store.keys(), before, "nothing stored");
    assert_eq!(w.seller.capability_calls.get(), 0, "nothing called");
}

#[test]
fn the_development_switch_allows_loopback_sellers_and_callbacks() {
    let mut w = World::new();
    w.config.allow_private_networks = true;
    let key = w.tenant("acme");
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/s1",
        Some(&key),
        Some(json!({"mcp_url": "http://127.0.0.1:9000/mcp"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = w.call(
        "PUT",
        "/api/v1/callback",
        Some(&key),
        Some(json!({"url": "http://127.0.0.1:9001/hook"})),
    );
    assert!(s.is_success(), "{b}");
    let (s, _) = w.call(
        "PUT",
        "/api/v1/sellers/s1",
        Some(&key),
        Some(json!({"mcp_url": "http://u:p@127.0.0.1:9000/mcp"})),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[test]
fn re_registering_or_removing_a_seller_forgets_its_cached_signing_keys() {
    use crate::auth::jwks::{self, CachedKeys};
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    let tenant = w.stored_seller("s1").unwrap().tenant_id;
    let cache = |w: &World| {
        let c = CachedKeys {
            jwks_uri: "https://seller.example/jwks.json".into(),
            fetched_at_ms: w.clock.0,
            attempted_at_ms: w.clock.0,
            ..Default::default()
        };
        block_on(async {
            assert!(
                jwks::claim_fetch(&w.store, &tenant, "s1", w.clock.0)
                    .await
                    .unwrap()
            );
            crate::foundation::store::set_json(&w.store, &keys::seller_jwks(&tenant, "s1"), &c)
                .await
                .unwrap();
        });
    };
    let leftovers = |w: &World| {
        w.store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&keys::seller_jwks(&tenant, "s1")))
            .collect::<Vec<_>>()
    };
    cache(&w);
    let (s, _) = w.call(
        "PUT",
        "/api/v1/sellers/s1",
        Some(&key),
        Some(json!({"mcp_url": "https://other-agent.example/mcp"})),
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        leftovers(&w),
        Vec::<String>::new(),
        "the old agent's keys are forgotten"
    );
    cache(&w);
    let (s, _) = w.call("DELETE", "/api/v1/sellers/s1", Some(&key), None);
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&w), Vec::<String>::new());
}

#[test]
fn an_operations_events_come_a_page_at_a_time_in_journal_order() {
    use crate::model::status::TaskStatus;
    use crate::records::journal::{self, EntryKind};
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t1"})));
    let (s, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let id = op["operation_id"].as_str().unwrap().to_string();
    for _ in 0..250 {
        let kind = EntryKind::Observed {
            observation: Box::new(crate::testing::obs(TaskStatus::Working, Some("t1"))),
        };
        block_on(journal::record(&w.store, &w.clock, &id, kind)).unwrap();
    }
    let head = block_on(w.store.increment(&keys::operation_seq(&id), 0)).unwrap() as u64;
    let path = format!("/api/v1/operations/{id}/events");
    let (mut seqs, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let q = match &cursor {
            Some(c) => format!("{path}?limit=100&cursor={c}"),
            None => format!("{path}?limit=100"),
        };
        let (s, page) = w.call("GET", &q, Some(&key), None);
        assert_eq!(s, StatusCode::OK, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 100);
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    assert_eq!(pages, head.div_ceil(100));
    let (_, first) = w.call("GET", &path, Some(&key), None);
    assert_eq!(
        first["events"].as_array().unwrap().len(),
        50,
        "50 by default"
    );
    for bad in ["limit=0", "limit=201", "cursor=x", "page=2"] {
        let (s, b) = w.call("GET", &format!("{path}?{bad}"), Some(&key), None);
        assert_eq!(
            (s, b["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{bad}"
        );
    }
}
