//! The cluster recipe in `deploy/kubernetes`: the Kubernetes objects validate strictly with a
//! real validator (`kubernetes-validate`, the published schemas of Kubernetes 1.37 shipped in
//! its PyPI package), and the SpinKube objects agree with the application: the components
//! they deploy, the probe and sweep routes, and the secrets and keys they read exist.

use e2e::repo_root;
use std::process::Command;

fn docs(file: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(repo_root().join("deploy/kubernetes").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn of_kind<'a>(all: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    all.iter().filter(|d| d["kind"] == kind).collect()
}

/// Runs `kubernetes-validate --strict` (Kubernetes 1.37) on the files: success and output.
fn validate(files: &[std::path::PathBuf]) -> (bool, String) {
    let python = std::env::var("ADCP_PYTHON").unwrap_or_else(|_| {
        repo_root()
            .join(".venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let out = Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.37.0"])
        .args(files)
        .output()
        .expect("kubernetes-validate runs (scripts/test.sh installs it into .venv)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kubernetes_objects_validate_strictly_against_the_published_schemas() {
    let dir = repo_root().join("deploy/kubernetes");
    let (ok, text) = validate(&[dir.join("secrets.yaml"), dir.join("sweep-cronjob.yaml")]);
    assert!(ok, "{text}");
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
    assert_eq!(text.matches("passed for resource").count(), 3, "{text}");
    // The validator is real: a misspelt field in a copy of the CronJob is refused.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let cron = std::fs::read_to_string(dir.join("sweep-cronjob.yaml")).unwrap();
    std::fs::write(
        &bad,
        cron.replace("concurrencyPolicy:", "concurrencyPolicyy:"),
    )
    .unwrap();
    let (ok, text) = validate(&[bad]);
    assert!(!ok && text.contains("concurrencyPolicyy"), "{text}");
}

#[test]
fn the_spinapp_deploys_the_http_components_with_probes_secrets_and_an_external_sweep() {
    let manifest: toml::Table = std::fs::read_to_string(repo_root().join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let routes: Vec<&str> = manifest["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["route"].as_str().unwrap())
        .collect();
    let spin = docs("spinapp.yaml");
    let executor = of_kind(&spin, "SpinAppExecutor")[0];
    assert_eq!(executor["metadata"]["name"], "spintainer");
    assert!(
        executor["spec"]["deploymentConfig"]["spinImage"]
            .as_str()
            .unwrap()
            .contains("spin:v4.0.")
    );
    let app = &of_kind(&spin, "SpinApp")[0]["spec"];
    assert_eq!(app["executor"], "spintainer");
    assert!(app["replicas"].as_u64().unwrap() > 1);
    // The cron component stays out of the replicas: the CronJob sweeps once per cluster.
    let components: Vec<&str> = app["components"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(components, ["operations", "webhook"]);
    for c in &components {
        assert!(manifest["component"].get(*c).is_some(), "{c} in spin.toml");
    }
    assert_eq!(
        manifest["trigger"]["cron"][0]["component"].as_str(),
        Some("sweep")
    );
    for (probe, path) in [("liveness", "/healthz"), ("readiness", "/readyz")] {
        assert_eq!(app["checks"][probe]["httpGet"]["path"], path);
        assert!(routes.contains(&path), "{path} is routed");
    }
    // Every secret the app and the CronJob read exists with that key.
    let secrets = docs("secrets.yaml");
    let has = |name: &str, key: &str| {
        of_kind(&secrets, "Secret")
            .iter()
            .any(|s| s["metadata"]["name"] == name && s["stringData"].get(key).is_some())
    };
    assert!(has(
        app["runtimeConfig"]["loadFromSecret"].as_str().unwrap(),
        "runtime-config.toml"
    ));
    let declared: Vec<String> = manifest["variables"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for v in app["variables"].as_sequence().unwrap() {
        let name = v["name"].as_str().unwrap();
        assert!(
            declared.iter().any(|d| d == name),
            "{name} is an app variable"
        );
        let r = &v["valueFrom"]["secretKeyRef"];
        if r.is_mapping() {
            assert!(
                has(r["name"].as_str().unwrap(), r["key"].as_str().unwrap()),
                "{name}"
            );
        }
    }
    for required in [
        "admin_api_key",
        "sweep_token",
        "metrics_token",
        "encryption_key",
    ] {
        assert!(
            app["variables"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v["name"] == required && v["valueFrom"]["secretKeyRef"].is_mapping()),
            "{required} comes from a Secret"
        );
    }
    // The runtime config in the Secret is Spin's format: Redis, private networks blocked.
    let rc: toml::Table = of_kind(&secrets, "Secret")
        .iter()
        .find_map(|s| s["stringData"]["runtime-config.toml"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        rc["key_value_store"]["default"]["type"].as_str(),
        Some("redis")
    );
    assert_eq!(
        rc["outbound_networking"]["block_networks"]
            .as_array()
            .unwrap(),
        &[toml::Value::from("private")]
    );
    // The CronJob posts to the sweep route with the sweep token, after a readiness check.
    let cron = docs("sweep-cronjob.yaml");
    let job = &of_kind(&cron, "CronJob")[0]["spec"];
    let container = &job["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let script = container["args"][0].as_str().unwrap();
    assert!(
        script.contains("-X POST") && script.contains("/internal/sweep"),
        "{script}"
    );
    assert!(script.contains("/readyz"));
    assert!(routes.contains(&"/internal/sweep"));
    let token = &container["env"][0]["valueFrom"]["secretKeyRef"];
    assert!(has(
        token["name"].as_str().unwrap(),
        token["key"].as_str().unwrap()
    ));
    assert_eq!(job["concurrencyPolicy"], "Forbid");
}
