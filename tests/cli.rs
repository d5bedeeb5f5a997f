//! The operator CLI against a running server.

mod common;

use std::process::Command;

use common::TestServer;

fn cli(s: &TestServer, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_invalidator"))
        .args(args)
        .env("INVALIDATOR_URL", s.url(""))
        .env_remove("INVALIDATOR_TOKEN")
        .output()
        .expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn invalidate_metrics_and_audit_subcommands() {
    let s = TestServer::start().await;
    let (code, out) = cli(
        &s,
        &[
            "invalidate",
            "key",
            "user:1",
            "user:2",
            "--by",
            "ops",
            "--request-id",
            "cli-1",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["invalidated_count"], 2);
    let (code, out) = cli(
        &s,
        &[
            "invalidate",
            "pattern",
            "user:[0-9]+",
            "--type",
            "regex",
            "--by",
            "ops",
            "--cache-key",
            "user:7",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["pattern_type"], "regex");
    assert_eq!(v["matched_keys"], serde_json::json!(["user:7"]));
    // A refused request exits non-zero and prints the error.
    let (code, out) = cli(
        &s,
        &[
            "invalidate",
            "pattern",
            "user:[",
            "--type",
            "regex",
            "--by",
            "ops",
        ],
    );
    assert_eq!(code, 1);
    assert!(out.contains("invalid_pattern"));
    let (code, out) = cli(&s, &["metrics"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"total\":2"), "{out}");
    let (code, out) = cli(&s, &["metrics", "--prometheus"]);
    assert_eq!(code, 0);
    assert!(out.contains("invalidator_invalidations_total 2"));
    // The audit log is written off the request path: poll.
    let mut table = String::new();
    for _ in 0..50 {
        table = cli(&s, &["audit", "--triggered-by", "ops"]).1;
        if table.contains("total_count: 2") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        table.contains("user:[0-9]+") && table.contains("user:1,user:2"),
        "{table}"
    );
    let (code, out) = cli(&s, &["audit", "--json", "--request-id", "cli-1"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["logs"][0]["request_id"], "cli-1");
}

#[test]
fn help_lists_env_vars_and_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_invalidator"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "INVALIDATOR_LISTEN",
        "127.0.0.1:4000",
        "DATABASE_URL",
        "NATS_URL",
        "INVALIDATOR_DATA_DIR",
        "./data",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Start `serve` with `args` and `env`; the port it answers `/healthz` on, among `ports`.
fn serving_port(args: &[String], env: &[(&str, String)], ports: &[u16]) -> u16 {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_invalidator"));
    cmd.arg("serve").args(args);
    for k in [
        "INVALIDATOR_LISTEN",
        "INVALIDATOR_DATA_DIR",
        "INVALIDATOR_CONFIG",
        "INVALIDATOR_NODE_ID",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let found = (0..200).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        ports
            .iter()
            .copied()
            .find(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
    });
    let _ = child.kill();
    let _ = child.wait();
    found.expect("the server listens on one of the expected ports")
}

/// Every option resolves as flag > environment > config file > default (the file's `listen`
/// and `data_dir` used to be ignored because the flags carried defaults).
#[test]
fn options_resolve_flag_then_env_then_file_then_default() {
    let dir = common::fresh_dir("precedence");
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file_dir = dir.join("from-file");
    let toml = dir.join("config.toml");
    std::fs::write(
        &toml,
        format!(
            "listen = \"127.0.0.1:{file_port}\"\ndata_dir = \"{}\"\nshutdown_timeout_secs = 3\n",
            file_dir.display()
        ),
    )
    .expect("write config");
    let ports = [file_port, env_port, flag_port];
    let config = vec!["--config".to_string(), toml.display().to_string()];
    assert_eq!(
        serving_port(&config, &[], &ports),
        file_port,
        "file over default"
    );
    assert!(file_dir.join("seq").exists(), "the file's data_dir is used");
    let env = [("INVALIDATOR_LISTEN", format!("127.0.0.1:{env_port}"))];
    assert_eq!(
        serving_port(&config, &env, &ports),
        env_port,
        "env over file"
    );
    let mut flags = config.clone();
    flags.extend(["--listen".to_string(), format!("127.0.0.1:{flag_port}")]);
    assert_eq!(
        serving_port(&flags, &env, &ports),
        flag_port,
        "flag over env"
    );
    let env_dir = dir.join("from-env");
    let env = [("INVALIDATOR_DATA_DIR", env_dir.display().to_string())];
    serving_port(&config, &env, &ports);
    assert!(env_dir.join("seq").exists(), "env data_dir over the file's");
}
