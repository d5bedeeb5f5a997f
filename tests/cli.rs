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
