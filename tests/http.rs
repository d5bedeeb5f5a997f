//! The HTTP API against the real server: every endpoint, every error code, the limits, auth,
//! idempotency, and malformed input that must never yield a 5xx nor stop the server.

mod common;

use common::TestServer;
use serde_json::{Value, json};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn key_invalidation_shape_and_seq() {
    let s = TestServer::start().await;
    let (st, v) = s
        .post_json("/invalidate/key", &json!({"keys": ["user:123", "user:456", "user:123"], "triggered_by": "admin", "request_id": "req-001"}), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["invalidated_count"], 2);
    assert_eq!(v["keys"], json!(["user:123", "user:456"]));
    assert_eq!(v["request_id"], "req-001");
    assert_eq!(v["duplicate"], false);
    let ts = v["published_at"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    let seq1 = v["seq"].as_u64().unwrap();
    let (_, v2) = s.invalidate_keys(&["a"]).await;
    assert!(v2["seq"].as_u64().unwrap() > seq1);
    let rid = v2["request_id"].as_str().unwrap();
    let parts: Vec<&str> = rid.split('-').collect();
    assert_eq!(parts[0], "inv");
    assert!(
        parts[1].parse::<u64>().unwrap() > 1_600_000_000_000,
        "{rid}"
    );
}

#[tokio::test]
async fn pattern_invalidation_matches_cache_keys() {
    let s = TestServer::start().await;
    let body = json!({"pattern": "user:123:*", "triggered_by": "cache_manager",
        "cache_keys": ["user:123:profile", "user:123:settings", "user:456:profile"], "request_id": "p-1"});
    let (st, v) = s.post_json("/invalidate/pattern", &body, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["pattern"], "user:123:*");
    assert_eq!(v["pattern_type"], "prefix");
    assert_eq!(
        v["matched_keys"],
        json!(["user:123:profile", "user:123:settings"])
    );
    assert_eq!(v["invalidated_count"], 2);
    assert_eq!(v["matched_keys_truncated"], false);
    assert_eq!(v["duplicate"], false);
    // Pushed even when nothing matched.
    let (st, v) = s
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "nothing:*", "triggered_by": "x"}),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["invalidated_count"], 0);
    assert_eq!(v["matched_keys"], json!([]));
}

#[tokio::test]
async fn pattern_types_inferred_and_explicit() {
    let s = TestServer::start().await;
    let cases = [
        (json!({"pattern": "user:1"}), "exact"),
        (json!({"pattern": "user:*"}), "prefix"),
        (json!({"pattern": "*:profile"}), "suffix"),
        (json!({"pattern": "user:*:profile"}), "glob"),
        (json!({"pattern": "user:?23"}), "glob"),
        (
            json!({"pattern": "user:[0-9]+", "pattern_type": "regex"}),
            "regex",
        ),
        (json!({"pattern": "a*b", "pattern_type": "exact"}), "exact"),
    ];
    for (mut body, expected) in cases {
        body["triggered_by"] = json!("t");
        let (st, v) = s.post_json("/invalidate/pattern", &body, None).await;
        assert_eq!(st, 200, "{body} {v}");
        assert_eq!(v["pattern_type"], expected, "{body}");
    }
    let (_, m) = s.get_json("/invalidate/metrics", None).await;
    assert_eq!(m["invalidations"]["by_type"]["glob"], 2);
    assert_eq!(m["invalidations"]["by_type"]["exact"], 2);
}

#[tokio::test]
async fn bad_regex_is_invalid_pattern() {
    let s = TestServer::start().await;
    let (st, v) = s
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "user:[0-9", "pattern_type": "regex", "triggered_by": "t"}),
            None,
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(code(&v), "invalid_pattern");
    assert_eq!(field(&v), "pattern");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn validation_errors_name_fields() {
    let s = TestServer::start().await;
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        ("/invalidate/key", "{not json", 400, "invalid_json", ""),
        (
            "/invalidate/key",
            r#"{"keys": [], "triggered_by": "a"}"#,
            400,
            "validation_failed",
            "keys",
        ),
        (
            "/invalidate/key",
            r#"{"keys": "a", "triggered_by": "a"}"#,
            400,
            "validation_failed",
            "keys",
        ),
        (
            "/invalidate/key",
            r#"{"keys": [1], "triggered_by": "a"}"#,
            400,
            "validation_failed",
            "keys",
        ),
        (
            "/invalidate/key",
            r#"{"keys": ["a"]}"#,
            400,
            "validation_failed",
            "triggered_by",
        ),
        (
            "/invalidate/key",
            r#"{"keys": ["a"], "triggered_by": ""}"#,
            400,
            "validation_failed",
            "triggered_by",
        ),
        (
            "/invalidate/key",
            r#"{"keys": ["a\u0007"], "triggered_by": "x"}"#,
            400,
            "validation_failed",
            "keys",
        ),
        (
            "/invalidate/pattern",
            r#"{"triggered_by": "a"}"#,
            400,
            "validation_failed",
            "pattern",
        ),
        (
            "/invalidate/pattern",
            r#"{"pattern": "", "triggered_by": "a"}"#,
            400,
            "validation_failed",
            "pattern",
        ),
        (
            "/invalidate/pattern",
            r#"{"pattern": "a", "pattern_type": "x", "triggered_by": "a"}"#,
            400,
            "validation_failed",
            "pattern_type",
        ),
        (
            "/invalidate/pattern",
            r#"{"pattern": "a*", "cache_keys": "x", "triggered_by": "a"}"#,
            400,
            "validation_failed",
            "cache_keys",
        ),
    ];
    for (path, body, status, c, f) in cases {
        let (st, v) = s.post_raw(path, body, None).await;
        assert_eq!(st, *status, "{body}: {v}");
        assert_eq!(v["success"], false);
        assert_eq!(code(&v), *c, "{body}: {v}");
        if !f.is_empty() {
            assert_eq!(field(&v), *f, "{body}: {v}");
        }
    }
    let (_, m) = s.get_json("/invalidate/metrics", None).await;
    assert_eq!(m["invalidations"]["rejected"], cases.len() as u64);
    assert_eq!(m["invalidations"]["total"], 0);
}

#[tokio::test]
async fn limits_are_enforced() {
    let s = TestServer::start().await;
    let long = "k".repeat(1025);
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": [long], "triggered_by": "x"}),
            None,
        )
        .await;
    assert_eq!(
        (st, code(&v), field(&v)),
        (400, "validation_failed", "keys")
    );
    let many: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": many, "triggered_by": "x"}),
            None,
        )
        .await;
    assert_eq!(
        (st, code(&v), field(&v)),
        (400, "validation_failed", "keys")
    );
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["a"], "triggered_by": "x".repeat(257)}),
            None,
        )
        .await;
    assert_eq!((st, field(&v)), (400, "triggered_by"));
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["a"], "triggered_by": "x", "request_id": "r".repeat(129)}),
            None,
        )
        .await;
    assert_eq!((st, field(&v)), (400, "request_id"));
    let (st, v) = s
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "p".repeat(1025), "triggered_by": "x"}),
            None,
        )
        .await;
    assert_eq!((st, field(&v)), (400, "pattern"));
    // 413 only for bytes over the body limit.
    let big = format!(
        r#"{{"keys": ["a"], "triggered_by": "x", "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    );
    let (st, v) = s.post_raw("/invalidate/key", &big, None).await;
    assert_eq!((st, code(&v)), (413, "payload_too_large"));
    // The pattern endpoint takes 8 MiB.
    let big = format!(
        r#"{{"pattern": "a*", "triggered_by": "x", "pad": "{}"}}"#,
        "x".repeat(2 << 20)
    );
    let (st, _) = s.post_raw("/invalidate/pattern", &big, None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn configured_limits_apply() {
    let s = TestServer::builder()
        .config_toml("[limits]\nmax_keys = 2\nmax_body_bytes = 200\n")
        .start()
        .await;
    let (st, v) = s.invalidate_keys(&["a", "b", "c"]).await;
    assert_eq!((st, field(&v)), (400, "keys"));
    let (st, _) = s
        .post_raw(
            "/invalidate/key",
            &format!(r#"{{"keys":["a"],"triggered_by":"{}"}}"#, "x".repeat(200)),
            None,
        )
        .await;
    assert_eq!(st, 413);
}

#[tokio::test]
async fn routes_404_405() {
    let s = TestServer::start().await;
    let (st, body) = s.get("/nope", None).await;
    assert_eq!(st, 404);
    assert!(body.contains("not_found"));
    let (st, body) = s.get("/invalidate/key", None).await;
    assert_eq!(st, 405);
    assert!(body.contains("method_not_allowed"));
    let (st, v) = s.post_json("/healthz", &json!({}), None).await;
    assert_eq!((st, code(&v)), (405, "method_not_allowed"));
}

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/healthz", None).await.0, 200);
    assert_eq!(s.get("/readyz", None).await.0, 200);
    for i in 0..3 {
        s.post_json(
            "/invalidate/key",
            &json!({"keys": [format!("user:{i}"), "order:1"], "triggered_by": "x"}),
            None,
        )
        .await;
    }
    s.post_json(
        "/invalidate/pattern",
        &json!({"pattern": "user:*", "triggered_by": "x", "cache_keys": ["user:1"]}),
        None,
    )
    .await;
    let (st, m) = s.get_json("/invalidate/metrics", None).await;
    assert_eq!(st, 200);
    let inv = &m["invalidations"];
    assert_eq!(inv["total"], 4);
    assert_eq!(inv["keys_total"], 7);
    assert_eq!(inv["by_type"]["exact"], 3);
    assert_eq!(inv["by_type"]["prefix"], 1);
    assert_eq!(
        inv["top_patterns"][0],
        json!({"pattern": "user:*", "count": 1})
    );
    assert_eq!(inv["top_prefixes"][0]["prefix"], "user");
    assert!(inv["per_second_1m"].as_f64().unwrap() > 0.0);
    assert_eq!(m["latency_us"]["count"], 4);
    assert!(m["latency_us"]["p99"].as_u64().unwrap() >= m["latency_us"]["p50"].as_u64().unwrap());
    for section in ["connections", "events", "index", "pattern_cache", "audit"] {
        assert!(m[section].is_object(), "{section} missing: {m}");
    }
    let (st, text) = s.get("/metrics", None).await;
    assert_eq!(st, 200);
    assert!(text.contains("invalidator_invalidations_total 4"), "{text}");
    assert!(text.contains("invalidator_invalidations_by_type_total{type=\"prefix\"} 1"));
    assert!(text.contains("invalidator_publish_latency_seconds_count 4"));
}

#[tokio::test]
async fn idempotency() {
    let s = TestServer::start().await;
    let body = json!({"keys": ["a", "b"], "triggered_by": "x", "request_id": "same"});
    let (_, first) = s.post_json("/invalidate/key", &body, None).await;
    // Same body with other key order, white space and an explicit null: duplicate.
    let raw = r#"{ "request_id": "same", "triggered_by": "x", "keys": ["a","b"], "unused": null }"#;
    let (st, dup) = s.post_raw("/invalidate/key", raw, None).await;
    assert_eq!(st, 200, "{dup}");
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["seq"], first["seq"]);
    assert_eq!(dup["published_at"], first["published_at"]);
    // Different body: 409.
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["c"], "triggered_by": "x", "request_id": "same"}),
            None,
        )
        .await;
    assert_eq!((st, code(&v)), (409, "request_id_conflict"));
    // Other endpoint: 409.
    let (st, _) = s
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "a*", "triggered_by": "x", "request_id": "same"}),
            None,
        )
        .await;
    assert_eq!(st, 409);
    // A refused request does not reserve its id.
    let (st, _) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": [], "triggered_by": "x", "request_id": "fresh"}),
            None,
        )
        .await;
    assert_eq!(st, 400);
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["z"], "triggered_by": "x", "request_id": "fresh"}),
            None,
        )
        .await;
    assert_eq!((st, &v["duplicate"]), (200, &json!(false)));
    let (_, m) = s.get_json("/invalidate/metrics", None).await;
    assert_eq!(m["invalidations"]["duplicates"], 1);
    assert_eq!(m["invalidations"]["total"], 2);
}

#[tokio::test]
async fn idempotency_concurrent_same_id_publishes_once() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post_json(
                "/invalidate/key",
                &json!({"keys": ["k"], "triggered_by": "x", "request_id": "race"}),
                None,
            )
            .await
        }));
    }
    let mut seqs = std::collections::HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, 200);
        seqs.insert(v["seq"].as_u64().unwrap());
        if v["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(seqs.len(), 1);
}

const AUTH_TOML: &str = r#"
[[tokens]]
name = "orders-service"
token = "orders-secret"
scopes = ["invalidate", "subscribe"]
prefixes = ["orders:"]

[[tokens]]
name = "ops"
token_sha256 = "b6c8a8e2b4a9f0f8cbc87c3b6d68d5d6b1d9c5e0b6b3a8b9f3e2c1d0a9b8c7d6"
scopes = ["metrics"]

[[tokens]]
name = "admin"
token = "admin-secret"
scopes = ["invalidate", "subscribe", "audit:read", "metrics"]

[[tokens]]
name = "limited"
token = "limited-secret"
scopes = ["invalidate"]
rate_limit = { per_second = 1, burst = 2 }
"#;

#[tokio::test]
async fn auth_scopes_prefixes_and_rate_limits() {
    let s = TestServer::builder().config_toml(AUTH_TOML).start().await;
    let body = json!({"keys": ["orders:1"], "triggered_by": "x"});
    let (st, v) = s.post_json("/invalidate/key", &body, None).await;
    assert_eq!((st, code(&v)), (401, "unauthorized"));
    let (st, _) = s.post_json("/invalidate/key", &body, Some("wrong")).await;
    assert_eq!(st, 401);
    let (st, v) = s
        .post_json("/invalidate/key", &body, Some("orders-secret"))
        .await;
    assert_eq!(st, 200, "{v}");
    // Outside its prefixes.
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["orders:1", "users:1"], "triggered_by": "x"}),
            Some("orders-secret"),
        )
        .await;
    assert_eq!((st, code(&v)), (403, "forbidden"));
    let pat =
        |p: &str, t: Option<&str>| json!({"pattern": p, "pattern_type": t, "triggered_by": "x"});
    let cases = [
        ("orders:1:*", None, 200),
        ("orders:*:x", None, 200),
        ("*:profile", None, 403),
        ("users:*", None, 403),
        (".*", Some("regex"), 403),
    ];
    for (p, t, expected) in cases {
        let (st, v) = s
            .post_json("/invalidate/pattern", &pat(p, t), Some("orders-secret"))
            .await;
        assert_eq!(st, expected, "{p}: {v}");
    }
    // Missing scope.
    let (st, v) = s
        .get_json("/invalidate/metrics", Some("orders-secret"))
        .await;
    assert_eq!((st, code(&v)), (403, "forbidden"));
    assert_eq!(s.get("/audit/logs", Some("orders-secret")).await.0, 403);
    assert_eq!(s.get("/audit/logs", Some("admin-secret")).await.0, 200);
    assert_eq!(
        s.get("/invalidate/metrics", Some("admin-secret")).await.0,
        200
    );
    // Health needs no token.
    assert_eq!(s.get("/healthz", None).await.0, 200);
    assert_eq!(s.get("/readyz", None).await.0, 200);
    // Rate limit: burst 2, then 429 with Retry-After.
    let mut c = s.client().await;
    let b = json!({"keys": ["a"], "triggered_by": "x"}).to_string();
    assert_eq!(
        c.post_json("/invalidate/key", b.clone(), Some("limited-secret"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.post_json("/invalidate/key", b.clone(), Some("limited-secret"))
            .await
            .unwrap()
            .status,
        200
    );
    let r = c
        .post_json("/invalidate/key", b.clone(), Some("limited-secret"))
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(code(&r.json()), "rate_limited");
    assert!(r.retry_after.is_some());
}

#[tokio::test]
async fn open_mode_refused_off_loopback_without_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invalidator"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(common::fresh_dir("open"))
        .env_remove("INVALIDATOR_ALLOW_OPEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-open"));
}

#[tokio::test]
async fn garbage_never_breaks_the_server() {
    let s = TestServer::start().await;
    let mut rng = fastrand::Rng::with_seed(7);
    let fragments = [
        "{",
        "}",
        "[",
        "]",
        "\"keys\"",
        "\"pattern\"",
        ":",
        ",",
        "\"triggered_by\"",
        "\"x\"",
        "null",
        "1e999",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "true",
        "-0",
        "\"*\"",
        "\"[\"",
        "\"pattern_type\"",
        "\"regex\"",
        "\"(\"",
        "\"cache_keys\"",
        "\"request_id\"",
        "\u{feff}",
        "\\",
        "9999999999999999999999",
    ];
    for i in 0..400 {
        let body: String = (0..rng.usize(0..24))
            .map(|_| fragments[rng.usize(..fragments.len())])
            .collect();
        let path = if i % 2 == 0 {
            "/invalidate/key"
        } else {
            "/invalidate/pattern"
        };
        let (st, v) = s.post_raw(path, &body, None).await;
        assert!(st < 500, "{body} -> {st} {v}");
        if st != 200 {
            assert_eq!(v["success"], false, "{body}");
        }
    }
    // Random bytes, including invalid UTF-8.
    let mut c = s.client().await;
    for _ in 0..100 {
        let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        let r = c.post_json("/invalidate/key", bytes, None).await.unwrap();
        assert!(r.status < 500);
    }
    assert_eq!(s.get("/healthz", None).await.0, 200);
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let mut s = TestServer::start().await;
    s.invalidate_keys(&["a"]).await;
    assert_eq!(s.sigterm(), 0);
}

#[tokio::test]
async fn seq_keeps_growing_across_restarts() {
    let dir = common::fresh_dir("restart");
    let mut s = TestServer::builder().data_dir(&dir).start().await;
    let (_, v) = s.invalidate_keys(&["a"]).await;
    let before = v["seq"].as_u64().unwrap();
    s.kill();
    let s = TestServer::builder().data_dir(&dir).start().await;
    let (_, v) = s.invalidate_keys(&["a"]).await;
    assert!(v["seq"].as_u64().unwrap() > before);
}

/// SPEC "Idempotency": the key is (token name, request_id). Another tenant's `req-001` can
/// neither block nor reveal ours; a restart keeps the scopes apart (they come from the store).
#[tokio::test]
async fn idempotency_is_scoped_by_token() {
    let toml = r#"
[[tokens]]
name = "tenant-a"
token = "secret-a"
scopes = ["invalidate"]

[[tokens]]
name = "tenant-b"
token = "secret-b"
scopes = ["invalidate", "metrics"]
"#;
    let dir = common::fresh_dir("idem-scope");
    let mut s = TestServer::builder()
        .config_toml(toml)
        .data_dir(&dir)
        .start()
        .await;
    let body = json!({"keys": ["k"], "triggered_by": "t", "request_id": "req-001"});
    let (st, b) = s
        .post_json("/invalidate/key", &body, Some("secret-b"))
        .await;
    assert_eq!((st, b["duplicate"].clone()), (200, json!(false)));
    let (st, a) = s
        .post_json("/invalidate/key", &body, Some("secret-a"))
        .await;
    assert_eq!(
        (st, a["duplicate"].clone()),
        (200, json!(false)),
        "not blocked by tenant B: {a}"
    );
    assert_ne!(a["seq"], b["seq"]);
    // A different body under A's id is A's conflict, not B's.
    let other = json!({"keys": ["other"], "triggered_by": "t", "request_id": "req-001"});
    let (st, _) = s
        .post_json("/invalidate/key", &other, Some("secret-a"))
        .await;
    assert_eq!(st, 409);
    assert_eq!(s.sigterm(), 0);
    // After a restart the ids come back from the store, still per token.
    let s = TestServer::builder()
        .config_toml(toml)
        .data_dir(&dir)
        .start()
        .await;
    let (_, again) = s
        .post_json("/invalidate/key", &body, Some("secret-a"))
        .await;
    assert_eq!(
        (again["duplicate"].clone(), again["seq"].clone()),
        (json!(true), a["seq"].clone())
    );
    let (_, again) = s
        .post_json("/invalidate/key", &body, Some("secret-b"))
        .await;
    assert_eq!(
        (again["duplicate"].clone(), again["seq"].clone()),
        (json!(true), b["seq"].clone())
    );
}

/// A fresh `request_id` is proven new by the in-memory filter: no store lookup per request.
#[tokio::test]
async fn fresh_request_ids_cost_no_store_lookup() {
    let s = TestServer::start().await;
    let mut m = json!(null);
    for _ in 0..100 {
        m = s.get_json("/invalidate/metrics", None).await.1;
        if m["idempotency"]["filter_complete"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(m["idempotency"]["filter_complete"], true, "{m}");
    let before = m["idempotency"]["store_lookups"].as_u64().unwrap();
    for i in 0..50 {
        let body = json!({"keys": [format!("f:{i}")], "triggered_by": "t", "request_id": format!("fresh-{i}")});
        assert_eq!(s.post_json("/invalidate/key", &body, None).await.0, 200);
    }
    // A retry is answered from memory, also without the store.
    let body = json!({"keys": ["f:0"], "triggered_by": "t", "request_id": "fresh-0"});
    assert_eq!(
        s.post_json("/invalidate/key", &body, None).await.1["duplicate"],
        true
    );
    let m = s.get_json("/invalidate/metrics", None).await.1;
    assert_eq!(
        m["idempotency"]["store_lookups"].as_u64().unwrap(),
        before,
        "{m}"
    );
    assert!(m["idempotency"]["filter_ids"].as_u64().unwrap() >= 50);
}

/// Generated ids: `inv-<unix_ms>-<16 hex digits>` (64 random bits).
#[tokio::test]
async fn generated_request_ids_carry_64_random_bits() {
    let s = TestServer::start().await;
    let (_, v) = s.invalidate_keys(&["g:1"]).await;
    let id = v["request_id"].as_str().unwrap();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!(parts[0], "inv");
    assert!(parts[1].parse::<u64>().is_ok(), "{id}");
    assert!(
        parts[2].len() == 16 && parts[2].chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
}

/// SPEC "Soft invalidation": `soft` on any invalidation reaches the response, the event, the
/// audit row and the metrics; it defaults to false; a non-boolean is 400.
#[tokio::test]
async fn soft_invalidation_is_carried_everywhere() {
    let s = TestServer::start().await;
    let mut ws = common::ws::Ws::connect(&s).await;
    ws.subscribe(json!(["soft:*"])).await;
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["soft:1"], "triggered_by": "t", "soft": true, "request_id": "soft-1"}),
            None,
        )
        .await;
    assert_eq!((st, v["soft"].clone()), (200, json!(true)), "{v}");
    let ev = ws.event().await;
    assert_eq!(
        (ev["soft"].clone(), ev["tags"].clone()),
        (json!(true), json!(null)),
        "{ev}"
    );
    let (_, v) = s
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "soft:*", "triggered_by": "t"}),
            None,
        )
        .await;
    assert_eq!(v["soft"], false, "defaults to false: {v}");
    assert_eq!(ws.event().await["soft"], false);
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["soft:2"], "triggered_by": "t", "soft": "yes"}),
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].clone()),
        (400, json!("soft")),
        "{v}"
    );
    // The duplicate answer keeps it.
    let (_, dup) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["soft:1"], "triggered_by": "t", "soft": true, "request_id": "soft-1"}),
            None,
        )
        .await;
    assert_eq!(
        (dup["duplicate"].clone(), dup["soft"].clone()),
        (json!(true), json!(true))
    );
    let mut logs = json!(null);
    for _ in 0..100 {
        logs = s.get_json("/audit/logs?request_id=soft-1", None).await.1;
        if logs["total_count"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(logs["logs"][0]["soft"], true, "{logs}");
    let m = s.get_json("/invalidate/metrics", None).await.1;
    assert_eq!(m["invalidations"]["soft"], 1);
}

/// SPEC "Connections, timeouts and budgets": a client that sends half a request and waits is
/// cut off after `http.header_timeout_secs`, and others are served meanwhile.
#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::builder()
        .config_toml("[http]\nheader_timeout_secs = 1\n")
        .start()
        .await;
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(
        s.get("/healthz", None).await.0,
        200,
        "others are served meanwhile"
    );
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(
        read.is_ok(),
        "the server closed the half-sent request (or answered it)"
    );
    assert!(elapsed < std::time::Duration::from_secs(4), "{elapsed:?}");
}

/// Over `http.max_connections_per_ip` a new connection is closed at once, and counted under
/// `limits.connections`; a freed place is usable again.
#[tokio::test]
async fn connections_over_the_per_ip_cap_are_refused_and_counted() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::builder()
        .config_toml("[http]\nmax_connections_per_ip = 2\n")
        .start()
        .await;
    let a = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed at once, not left hanging");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(a);
    let mut m = json!(null);
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (st, v) = s.get_json("/invalidate/metrics", None).await;
        if st == 200 {
            m = v;
            break;
        }
    }
    assert!(m["limits"]["connections"].as_u64() >= Some(1), "{m}");
}

/// SPEC "Browsers": an open-mode server refuses what a foreign web page could send it: a
/// foreign `Origin` (also on `/ws`, before the upgrade) and a non-loopback `Host`.
#[tokio::test]
async fn open_mode_refuses_foreign_origins_and_hosts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::builder()
        .config_toml("[http]\nallowed_origins = [\"http://tools.example\"]\n")
        .start()
        .await;
    let raw = async |head: String| {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        let mut out = vec![0u8; 4096];
        let n = c.read(&mut out).await.unwrap();
        String::from_utf8_lossy(&out[..n]).to_string()
    };
    let host = format!("127.0.0.1:{}", s.addr.port());
    let body = r#"{"keys":["o:1"],"triggered_by":"page"}"#;
    let post = |origin: &str, host: &str| {
        format!(
            "POST /invalidate/key HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let r = raw(post("http://evil.example", &host)).await;
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("forbidden"),
        "{r}"
    );
    let r = raw(post(&format!("http://{host}"), &host)).await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "the server's own origin: {r}"
    );
    let r = raw(post("http://tools.example", &host)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "an allowed origin: {r}");
    let r = raw(format!(
        "GET /audit/logs HTTP/1.1\r\nHost: rebound.example:{}\r\nConnection: close\r\n\r\n",
        s.addr.port()
    ))
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "DNS rebinding: {r}");
    let r = raw(format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ))
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403"),
        "no upgrade for a foreign page: {r}"
    );
    // Clients that are not browsers send no Origin and are served as before.
    assert_eq!(s.invalidate_keys(&["o:2"]).await.0, 200);
}
