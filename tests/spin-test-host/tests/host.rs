//! The test host's own tests, against fixture components built from `fixtures/`.

use spin_test_host::{HostOptions, KvOp, TestHost};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn opts(state: &Path, vars: &[(&str, &str)]) -> HostOptions {
    HostOptions {
        manifest: fixtures().join("spin.toml"),
        state_file: state.to_path_buf(),
        variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..HostOptions::default()
    }
}

async fn start(state: &Path) -> TestHost {
    TestHost::start(opts(
        state,
        &[("password", "s3cret"), ("loopback", "http://127.0.0.1:*")],
    ))
    .await
    .expect("host starts")
}

async fn get(host: &TestHost, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("{}{}", host.base_url(), path))
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_spin_headers() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db")).await;
    let (s, body) = get(&host, "/exact?op=headers").await;
    assert_eq!(s, 200);
    let base = host.base_url();
    let addr = base.trim_start_matches("http://");
    for expected in [
        format!("spin-full-url=http://{addr}/exact?op=headers"),
        "spin-path-info=".to_string(),
        "spin-matched-route=/exact".to_string(),
        "spin-component-route=/exact".to_string(),
        "spin-raw-component-route=/exact".to_string(),
        "spin-base-path=/".to_string(),
        format!("uri=http://{addr}/exact?op=headers"),
    ] {
        assert!(
            body.lines().any(|l| l == expected),
            "missing `{expected}` in\n{body}"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("spin-client-addr=127.0.0.1:")),
        "{body}"
    );
    let (_, body) = get(&host, "/wild/a/b/?op=headers").await;
    assert!(body.contains("spin-path-info=/a/b/\n"), "{body}");
    assert!(body.contains("spin-component-route=/wild\n"), "{body}");
    assert!(
        body.contains("spin-raw-component-route=/wild/...\n"),
        "{body}"
    );
    let (_, body) = get(&host, "/users/42/files/x.txt?op=headers").await;
    assert!(body.contains("spin-path-match-id=42\n"), "{body}");
    assert!(body.contains("spin-path-info=/x.txt\n"), "{body}");
    // No public route leads to the private component; unknown paths are 404.
    assert_eq!(get(&host, "/").await.0, 404);
    assert_eq!(get(&host, "/hidden").await.0, 404);
    assert_eq!(get(&host, "/exact/more").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_defaults_templates_and_required() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db")).await;
    assert_eq!(
        get(&host, "/exact?op=var&name=greeting").await.1,
        "ok:hello world"
    );
    assert_eq!(
        get(&host, "/exact?op=var&name=password").await.1,
        "ok:s3cret"
    );
    assert!(
        get(&host, "/exact?op=var&name=nope")
            .await
            .1
            .contains("Undefined")
    );
    assert!(
        get(&host, "/exact?op=var&name=Bad-Name")
            .await
            .1
            .contains("InvalidName")
    );
    // A required variable without a value stops the app, as `spin up` does.
    let err = TestHost::start(opts(&dir.path().join("kv2.db"), &[]))
        .await
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("password"), "{err:#}");
    // A templated outbound host is validated with its default at load time.
    let bad = TestHost::start(opts(
        &dir.path().join("kv3.db"),
        &[("password", "x"), ("loopback", "not a host")],
    ))
    .await;
    assert!(bad.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_permissions_and_outbound_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db")).await;
    assert_eq!(
        get(&host, "/nokv/?op=kv-set&store=default&key=k&value=v")
            .await
            .1,
        "open-err:Error::AccessDenied"
    );
    assert_eq!(
        get(&host, "/exact?op=kv-set&store=other&key=k&value=v")
            .await
            .1,
        "open-err:Error::AccessDenied"
    );
    // A loopback server the `web` component may reach (through the templated rule).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("hi")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(
        get(&host, &format!("/exact?op=fetch&url={url}")).await.1,
        "status:200"
    );
    assert_eq!(
        get(&host, &format!("/nokv/?op=fetch&url={url}")).await.1,
        "err:ErrorCode::HttpRequestDenied"
    );
    assert_eq!(
        get(
            &host,
            &format!("/exact?op=fetch&url=http://localhost:{port}/x")
        )
        .await
        .1,
        "err:ErrorCode::HttpRequestDenied"
    );
    host.fail_outbound_matching(&format!(":{port}/x"));
    assert_eq!(
        get(&host, &format!("/exact?op=fetch&url={url}")).await.1,
        "err:ErrorCode::ConnectionRefused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_layout_increment_and_cas_quirks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let host = start(&db).await;
    assert_eq!(
        get(&host, "/exact?op=kv-set&store=default&key=greet&value=hi")
            .await
            .1,
        "Ok(())"
    );
    assert_eq!(
        get(&host, "/exact?op=incr&key=ctr&delta=1").await.1,
        "Ok(1)"
    );
    assert_eq!(
        get(&host, "/exact?op=incr&key=ctr&delta=41").await.1,
        "Ok(42)"
    );
    // Spin panics on incrementing a non-8-byte value; the host reports it instead.
    assert!(
        get(&host, "/exact?op=incr&key=greet&delta=1")
            .await
            .1
            .contains("incorrect length")
    );
    // CAS on a missing key is an unconditional upsert, even twice ("create if absent" is not atomic).
    assert_eq!(
        get(&host, "/exact?op=cas&key=c1&value=a&read=1").await.1,
        "swapped"
    );
    assert_eq!(
        get(&host, "/exact?op=cas&key=c2&value=a&read=0").await.1,
        "swapped"
    );
    assert_eq!(
        get(&host, "/exact?op=cas&key=c2&value=b&read=0").await.1,
        "swapped"
    );
    // With a read, the swap compares the value it read.
    assert_eq!(
        get(&host, "/exact?op=cas&key=c1&value=b&read=1").await.1,
        "swapped"
    );
    assert_eq!(
        get(&host, "/exact?op=kv-get&store=default&key=c1").await.1,
        "some:b"
    );
    host.kill();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, String, Vec<u8>)> = conn
        .prepare("SELECT store, key, value FROM spin_key_value ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ctr = rows.iter().find(|r| r.1 == "ctr").unwrap();
    assert_eq!(ctr.0, "default");
    assert_eq!(ctr.2, 42i64.to_le_bytes());
    assert_eq!(rows.iter().find(|r| r.1 == "greet").unwrap().2, b"hi");
    let pk: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'spin_key_value'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(pk.contains("PRIMARY KEY (store, key)"), "{pk}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_ticks_call_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db")).await;
    host.cron_tick(1_700_000_123).await.unwrap();
    assert_eq!(
        get(&host, "/exact?op=kv-get&store=default&key=cron:last")
            .await
            .1,
        "some:1700000123"
    );
    let err = host.cron_tick(13).await.unwrap_err();
    assert!(format!("{err:#}").contains("unlucky"));
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_reused_by_default_or_fresh_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db")).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(
            get(&host, "/exact?op=served")
                .await
                .1
                .parse::<u64>()
                .unwrap(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(seen, [1, 2, 3], "sequential requests reuse one instance");
    let mut o = opts(&dir.path().join("kv2.db"), &[("password", "x")]);
    o.instance_reuse = false;
    let fresh = TestHost::start(o).await.unwrap();
    for _ in 0..3 {
        assert_eq!(get(&fresh, "/exact?op=served").await.1, "1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_faults_output_shared_and_restarted_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let a = start(&db).await;
    let b = start(&db).await;
    a.reset_kv_counts();
    assert_eq!(
        get(&a, "/exact?op=kv-set&store=default&key=shared&value=1")
            .await
            .1,
        "Ok(())"
    );
    let c = a.kv_counts();
    assert_eq!((c.get(KvOp::Set), c.get(KvOp::Open)), (1, 1));
    // Two hosts on one state file see each other's writes.
    assert_eq!(
        get(&b, "/exact?op=kv-get&store=default&key=shared").await.1,
        "some:1"
    );
    a.fail_kv_call(1, Some(KvOp::Get));
    assert_eq!(
        get(&a, "/exact?op=kv-get&store=default&key=shared").await.1,
        "err:Error::Other(\"injected fault\")"
    );
    assert_eq!(
        get(&a, "/exact?op=kv-get&store=default&key=shared").await.1,
        "some:1"
    );
    assert_eq!(get(&a, "/exact?op=print").await.1, "printed");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        a.output().contains("[web] fixture says hello on stderr"),
        "{}",
        a.output()
    );
    // Abrupt stop, then a new host on the same file.
    a.kill();
    b.stop().await;
    let again = start(&db).await;
    assert_eq!(
        get(&again, "/exact?op=kv-get&store=default&key=shared")
            .await
            .1,
        "some:1"
    );
    assert!(get(&again, "/exact?op=kv-keys").await.1.contains("shared"));
}

/// A crash point kills the instance at the chosen call, before or after it is applied: the
/// request gets no answer, the host stays dead until killed, and a new host on the file
/// finds exactly what had landed. Calls of another component, or of another kind, are not
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn crash_points_kill_before_or_after_the_call_is_applied() {
    use spin_test_host::{CrashPoint, CrashWhen};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let set = |v: &str| format!("/exact?op=kv-set&store=default&key=k&value={v}");
    let answered = |host: &TestHost, path: String| {
        let url = format!("{}{path}", host.base_url());
        async move { reqwest::get(url).await.is_ok() }
    };
    let mut host = start(&db).await;
    assert_eq!(get(&host, &set("1")).await.1, "Ok(())");
    for (when, value, kept) in [
        (CrashWhen::BeforeApplied, "2", "some:1"),
        (CrashWhen::AfterApplied, "3", "some:3"),
    ] {
        // Not counted: another component's calls, and (by kind) the open and the get.
        host.crash_at_kv_call(CrashPoint {
            nth: 1,
            component: Some("no-such-component".into()),
            kind: None,
            when,
        });
        assert_eq!(get(&host, &set("x")).await.1, "Ok(())");
        assert_eq!(get(&host, &set("1")).await.1, "Ok(())");
        host.trace_kv_calls(true);
        host.crash_at_kv_call(CrashPoint {
            nth: 2,
            component: None,
            kind: Some(KvOp::Set),
            when,
        });
        assert_eq!(
            get(&host, "/exact?op=kv-get&store=default&key=k").await.1,
            "some:1"
        );
        assert_eq!(get(&host, &set("1")).await.1, "Ok(())");
        assert!(!host.crashed());
        assert!(!answered(&host, set(value)).await, "killed: no answer");
        assert!(host.crashed());
        let trace = host.kv_call_trace();
        assert_eq!(
            trace.iter().map(|c| c.op).collect::<Vec<_>>(),
            [KvOp::Get, KvOp::Set, KvOp::Set],
            "{trace:?}"
        );
        assert!(trace.iter().all(|c| c.key == "k"), "{trace:?}");
        // Dead: nothing more is served or applied.
        assert!(!answered(&host, set("4")).await);
        host.kill();
        let again = start(&db).await;
        assert_eq!(
            get(&again, "/exact?op=kv-get&store=default&key=k").await.1,
            kept,
            "{when:?}"
        );
        assert_eq!(get(&again, &set("1")).await.1, "Ok(())");
        host = again;
    }
}
