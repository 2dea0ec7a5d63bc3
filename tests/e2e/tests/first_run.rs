//! First run in one command: `scripts/dev.sh` writes `.env` with fresh development secrets,
//! and the app started with exactly those variables answers (a tenant is created with the
//! admin key, `/metrics` opens with the metrics token, `/readyz` reports the store ready).

use e2e::{Api, repo_root};
use serde_json::json;
use spin_test_host::{HostOptions, TestHost};
use std::collections::BTreeMap;
use std::process::Command;

/// `SPIN_VARIABLE_ADMIN_API_KEY=…` lines as Spin reads them: `admin_api_key` → value.
fn spin_variables(env_file: &str) -> BTreeMap<String, String> {
    env_file
        .lines()
        .filter_map(|l| l.strip_prefix("SPIN_VARIABLE_")?.split_once('='))
        .map(|(k, v)| (k.to_lowercase(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_sh_makes_an_env_the_app_runs_with_and_keeps_it_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let env_path = dir.path().join("dev.env");
    let run = || {
        Command::new("bash")
            .arg(repo_root().join("scripts/dev.sh"))
            .arg("--env-only")
            .env("ENV_FILE", &env_path)
            .output()
            .expect("bash runs scripts/dev.sh")
    };
    let out = run();
    assert!(out.status.success(), "{out:?}");
    let first = std::fs::read_to_string(&env_path).unwrap();
    let vars = spin_variables(&first);
    for name in [
        "admin_api_key",
        "sweep_token",
        "metrics_token",
        "encryption_key",
    ] {
        assert!(
            vars.get(name).is_some_and(|v| v.len() >= 64),
            "{name} in {first}"
        );
    }
    assert!(
        vars["encryption_key"]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(vars["extra_outbound_host"], "http://127.0.0.1:*");
    assert_eq!(vars["allow_private_networks"], "true");
    // The secrets are made once: a second run keeps them.
    assert!(run().status.success());
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner may read the secrets");
    }

    let host = TestHost::start(HostOptions {
        manifest: repo_root().join("spin.toml"),
        state_file: dir.path().join("kv.db"),
        variables: vars.clone(),
        ..HostOptions::default()
    })
    .await
    .expect("the app starts with the generated variables");
    let api = Api::new(host.base_url());
    let (s, b) = api
        .call(
            "POST",
            "/api/v1/tenants",
            Some(&vars["admin_api_key"]),
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = api
        .call("GET", "/metrics", Some(&vars["metrics_token"]), None)
        .await;
    assert_eq!(s, 200);
    // Readiness: the store answers; no sweep has run yet.
    let (s, ready) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["store"], "ok");
    assert_eq!(ready["sweep_last_finished_age_s"], serde_json::Value::Null);
}

/// The shipped runtime configs say what the README says they do, in Spin's format.
#[test]
fn shipped_runtime_configs_point_the_store_at_redis_and_production_blocks_private_networks() {
    let read = |name: &str| -> toml::Table {
        let text = std::fs::read_to_string(repo_root().join("runtime-config").join(name)).unwrap();
        text.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for name in ["redis.toml", "production.toml"] {
        let store = &read(name)["key_value_store"]["default"];
        assert_eq!(store["type"].as_str(), Some("redis"), "{name}");
        assert!(
            store["url"].as_str().unwrap().starts_with("redis://"),
            "{name}"
        );
    }
    let prod = read("production.toml");
    assert_eq!(
        prod["outbound_networking"]["block_networks"]
            .as_array()
            .unwrap(),
        &[toml::Value::from("private")]
    );
    assert!(read("redis.toml").get("outbound_networking").is_none());
}
