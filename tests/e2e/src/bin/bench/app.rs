//! The application on the test host (the real `.wasm` components from `spin.toml`) with one
//! tenant and one local fake seller, and operations created through the API.

use crate::seed::Seeder;
use e2e::Api;
use e2e::fake_seller::{Answer, FakeSeller};
use serde_json::{Value, json};
use spin_test_host::{HostOptions, TestHost};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct App {
    pub host: TestHost,
    pub seller: FakeSeller,
    pub api: Api,
    /// The tenant's API key.
    pub key: String,
    /// `public_base_url`: the host listens there, so RFC 9421 target URIs match.
    pub public: String,
    dir: tempfile::TempDir,
}

/// An operation waiting for its webhook, with what the seller was told to send back.
pub struct Pending {
    pub op: String,
    pub task_id: String,
    pub token: String,
    /// The Bearer token or HMAC secret (none for RFC 9421).
    pub secret: Option<String>,
    /// The path of the webhook URL registered (an RFC 9421 one names its signer).
    pub path: String,
}

pub fn create_body(webhook: bool) -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "webhook": webhook, "arguments": {
        "account": {"account_id": "acc_bench"}, "brand": {"domain": "acme.example"}, "start_time": "asap",
        "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

impl App {
    /// Starts a host on a fresh state file with a seller whose webhooks use `webhook_mode`.
    pub async fn start(webhook_mode: &str) -> App {
        App::start_in(webhook_mode, tempfile::tempdir().expect("temp dir")).await
    }

    /// The same, with the state file in `dir`.
    pub async fn start_in(webhook_mode: &str, dir: tempfile::TempDir) -> App {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let public = format!("http://{listen}");
        let host = host(&dir.path().join("kv.db"), &public, Some(listen)).await;
        let seller = FakeSeller::start().await;
        let api = Api::new(host.base_url());
        let key = api.tenant("Bench").await;
        let (s, b) = api
            .call(
                "PUT",
                "/api/v1/sellers/ssp",
                Some(&key),
                Some(json!({"mcp_url": seller.url, "webhook_mode": webhook_mode})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        App {
            host,
            seller,
            api,
            key,
            public,
            dir,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("kv.db")
    }

    /// Stops the host and continues on a copy of its state file in `dir`, with the same
    /// tenant and seller, listening at the same address.
    pub async fn move_to(self, dir: tempfile::TempDir) -> App {
        let from = self.state_file();
        let listen: SocketAddr = self
            .public
            .trim_start_matches("http://")
            .parse()
            .expect("listen address");
        self.host.kill();
        let to = dir.path().join("kv.db");
        std::fs::copy(&from, &to).expect("copy state file");
        // Written back now, or the first `fsync` the guests cause pays for the whole copy.
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .expect("sync state file");
        // The killed listener closes asynchronously.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(listen).is_err() {
            assert!(Instant::now() < deadline, "{listen} stays busy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let host = host(&to, &self.public, Some(listen)).await;
        App {
            api: Api::new(host.base_url()),
            host,
            dir,
            ..self
        }
    }

    /// `POST /api/v1/operations`; panics unless it is created.
    pub async fn create(&self, webhook: bool) -> Value {
        let (s, op) = self
            .api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&self.key),
                Some(create_body(webhook)),
            )
            .await;
        assert_eq!(s, 201, "{op}");
        op
    }

    /// Creates operations natively ([`crate::seed`]) for this tenant, on this state file.
    pub fn seeder(&self) -> Seeder {
        Seeder::new(&self.state_file(), &self.key, &self.public)
    }

    /// Creates `count` operations natively at the current time, that the seller accepts as
    /// `submitted` with distinct task ids and a webhook to come.
    pub async fn submitted(&self, count: usize, tag: &str) -> Vec<Pending> {
        for i in 0..count {
            self.seller.answer(Answer::Payload(
                json!({"status": "submitted", "task_id": format!("task_{tag}_{i}")}),
            ));
        }
        let seeder = self.seeder();
        let mut ops = Vec::new();
        for _ in 0..count {
            seeder.clock.0.set(now_ms());
            let (s, op) = seeder.create(&create_body(true)).await;
            assert_eq!(s, 201, "{op}");
            ops.push(op);
        }
        // What the seller received for each operation, found by the context we sent.
        let configs: HashMap<String, Value> = self
            .seller
            .calls()
            .into_iter()
            .filter(|(tool, _)| tool == "create_media_buy")
            .filter_map(|(_, args)| {
                let op = args["context"]["operation_id"].as_str()?.to_string();
                Some((op, args["push_notification_config"].clone()))
            })
            .collect();
        ops.iter()
            .map(|op| {
                assert_eq!(op["status"], "submitted", "{op}");
                let id = op["operation_id"].as_str().expect("id").to_string();
                let pnc = &configs[&id];
                let url = pnc["url"].as_str().expect("webhook url");
                Pending {
                    path: url[url.find("/webhooks/").expect("webhook path")..].to_string(),
                    task_id: op["task_id"].as_str().expect("task id").to_string(),
                    token: pnc["token"].as_str().expect("token").to_string(),
                    secret: pnc["authentication"]["credentials"]
                        .as_str()
                        .map(str::to_string),
                    op: id,
                }
            })
            .collect()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A directory on tmpfs when there is one: seeding there skips the disk's `fsync`s, and the
/// host then runs on a disk copy ([`App::move_to`]).
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

async fn host(state_file: &Path, public: &str, listen: Option<SocketAddr>) -> TestHost {
    TestHost::start(HostOptions {
        manifest: e2e::repo_root().join("spin.toml"),
        state_file: state_file.to_path_buf(),
        variables: e2e::variables(public),
        listen,
        ..HostOptions::default()
    })
    .await
    .expect("test host starts")
}
