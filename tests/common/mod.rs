//! Test harness: the real `invalidator` binary on an ephemeral port with a fresh data dir,
//! driven by a real HTTP client.
#![allow(dead_code)]

pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use invalidator::http::client::HttpClient;
use serde_json::Value;

pub struct TestServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    data_dir: PathBuf,
}

#[derive(Default)]
pub struct Builder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    config_toml: Option<String>,
    data_dir: Option<PathBuf>,
}

/// A fresh directory under the target dir (left there for post-mortems; `cargo clean` removes it).
pub fn fresh_dir(tag: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!(
        "{tag}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

impl Builder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn config_toml(mut self, toml: impl Into<String>) -> Self {
        self.config_toml = Some(toml.into());
        self
    }

    /// Reuse a data dir (for restart tests).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> TestServer {
        tokio::task::spawn_blocking(move || self.start_blocking())
            .await
            .expect("spawn server")
    }

    fn start_blocking(self) -> TestServer {
        let data_dir = self.data_dir.unwrap_or_else(|| fresh_dir("server"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_invalidator"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(toml) = &self.config_toml {
            let path = data_dir.join("config.toml");
            std::fs::write(&path, toml).expect("write config");
            cmd.arg("--config").arg(path);
        }
        cmd.args(&self.args);
        for k in [
            "DATABASE_URL",
            "NATS_URL",
            "INVALIDATOR_CONFIG",
            "INVALIDATOR_ADMIN_TOKEN",
            "INVALIDATOR_LISTEN",
            "INVALIDATOR_DATA_DIR",
            "INVALIDATOR_NODE_ID",
        ] {
            cmd.env_remove(k);
        }
        cmd.env(
            "INVALIDATOR_LOG",
            std::env::var("INVALIDATOR_LOG").unwrap_or_else(|_| "warn".into()),
        );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn invalidator");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        break a.parse().expect("address");
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("server exited before listening: {status:?}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        TestServer {
            addr,
            child: Some(child),
            data_dir,
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Builder::default().start().await
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub async fn client(&self) -> HttpClient {
        HttpClient::connect(&self.addr.to_string())
            .await
            .expect("connect")
    }

    pub async fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut c = self.client().await;
        let r = c
            .post_json(path, body.to_string(), token)
            .await
            .expect("request");
        (r.status, r.json())
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), token).await
    }

    /// `POST /invalidate/key` of `keys`, triggered by "x", no token.
    pub async fn invalidate_keys(&self, keys: &[&str]) -> (u16, Value) {
        let body = serde_json::json!({"keys": keys, "triggered_by": "x"});
        self.post_json("/invalidate/key", &body, None).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut c = self.client().await;
        let r = c.get(path, token).await.expect("request");
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (s, body) = self.get(path, token).await;
        (s, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// SIGTERM, then wait for exit; returns the exit code (-1 if killed by a signal).
    pub fn sigterm(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return -1;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..600 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        -1
    }

    /// Kill -9 (no drain).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
