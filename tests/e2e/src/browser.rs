//! A headless Chromium driven through chromedriver's W3C WebDriver JSON protocol, for the
//! console's browser tests. Debian's `chromium` and `chromium-driver` must be installed
//! (`scripts/test.sh` installs them when missing).

use base64::Engine;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session; dropping it ends the session and stops chromedriver.
pub struct Browser {
    http: reqwest::Client,
    driver: String,
    session: String,
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: `apt-get install -y chromium chromium-driver` (scripts/test.sh does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{driver}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // The machine's network is closed: without these, Chromium stalls on background
        // fetches (and as root it needs --no-sandbox).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser = Browser {
            http,
            driver,
            session: String::new(),
            child,
            _profile: profile,
        };
        let created = browser.command("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// Sends one WebDriver command (path relative to the driver, or to the session when it
    /// does not start with `/session`) and returns its `value`; panics on a WebDriver error.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = if path.starts_with("/session") {
            format!("{}{path}", self.driver)
        } else {
            format!("{}/session/{}/{path}", self.driver, self.session)
        };
        let mut req = self
            .http
            .request(method.parse().expect("method"), url)
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == "POST" {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        match v["value"].get("error") {
            Some(err) => Err(format!("{err}: {}", v["value"]["message"])),
            None => Ok(v["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .try_command(
                "POST",
                "element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element id in {v}"))
    }

    /// The element matching `css`, waiting up to 10 s for it to appear.
    async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.find(css).await {
                Ok(id) => return id,
                Err(e) if Instant::now() > deadline => {
                    panic!("no `{css}`: {e}\npage: {}", self.page_text().await)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("element/{id}/clear"), None)
            .await;
        self.command(
            "POST",
            &format!("element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("element/{id}/click"), None)
            .await;
    }

    /// The rendered text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.command("GET", &format!("element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the text of `css` contains `wanted` and returns it; panics with the page
    /// text after `within`.
    pub async fn wait_for_text(&self, css: &str, wanted: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(id) = self.find(css).await
                && let Ok(v) = self
                    .try_command("GET", &format!("element/{id}/text"), None)
                    .await
                && let Some(t) = v.as_str()
                && t.contains(wanted)
            {
                return t.to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "`{css}` never showed {wanted:?} within {within:?}\npage: {}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The page's visible text, for failure messages.
    pub async fn page_text(&self) -> String {
        self.try_command(
            "POST",
            "execute/sync",
            Some(json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
        )
        .await
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.command("GET", "screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 screenshot"))
            .expect("valid base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("screenshot written");
    }
}

impl Drop for Browser {
    /// Ends the session (so chromedriver stops Chromium) over a plain blocking request, then
    /// stops chromedriver.
    fn drop(&mut self) {
        if !self.session.is_empty()
            && let Some(addr) = self.driver.strip_prefix("http://")
            && let Ok(mut s) = std::net::TcpStream::connect(addr)
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
