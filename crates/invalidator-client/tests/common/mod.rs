//! The real `invalidator` server binary for integration tests: `INVALIDATOR_BIN`, or
//! `<workspace root>/target/debug/invalidator` (build it with `cargo build --bin invalidator`).
//! Each server gets a free port and a fresh data dir; it can be killed with SIGKILL and
//! restarted on the same port and data dir. HTTP is spoken with a tiny blocking client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("INVALIDATOR_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("target/debug/invalidator")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Server {
    /// Start a server and wait for `/healthz`.
    pub fn start() -> Server {
        let dir = std::env::temp_dir().join(format!(
            "invalidator-client-test-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("create the data dir");
        let mut s = Server {
            port: free_port(),
            data_dir: dir,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = binary();
        assert!(
            bin.exists(),
            "no server binary at {} (run `cargo build --bin invalidator`, or set INVALIDATOR_BIN)",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir);
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
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("spawn the server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.get("/healthz") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the server exited before it was healthy: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the server on port {} is not healthy after 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http(self.port, "GET", path, None)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (_, body) = self.get(path).expect("GET");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = http(self.port, "POST", path, Some(&body.to_string())).expect("POST");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /invalidate/key`; the event's `seq`.
    pub fn invalidate_keys(&self, keys: &[&str]) -> u64 {
        let (status, v) = self.post(
            "/invalidate/key",
            &serde_json::json!({"keys": keys, "triggered_by": "client-tests"}),
        );
        assert_eq!(status, 200, "{v}");
        v["seq"].as_u64().expect("seq")
    }

    /// `POST /invalidate/pattern`; the event's `seq`.
    pub fn invalidate_pattern(&self, pattern: &str) -> u64 {
        let (status, v) = self.post(
            "/invalidate/pattern",
            &serde_json::json!({"pattern": pattern, "triggered_by": "client-tests"}),
        );
        assert_eq!(status, 200, "{v}");
        v["seq"].as_u64().expect("seq")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// One HTTP/1.1 request with `Connection: close`.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
