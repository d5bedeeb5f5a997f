-- Idempotency is scoped by token (SPEC "Idempotency"): the key is (token name, request_id).
-- SQLite cannot drop a UNIQUE column constraint, so the table is rebuilt with `scope` and
-- UNIQUE (scope, request_id); ids are kept, so the key side table stays valid. DROP TABLE
-- fires no DELETE trigger, and the triggers are created again after the copy, so the copy
-- neither counts twice nor fills the side table twice.
CREATE TABLE invalidation_audit_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern       TEXT,
    keys          TEXT,
    triggered_by  TEXT    NOT NULL,
    "timestamp"   INTEGER NOT NULL,
    request_id    TEXT    NOT NULL,
    latency_ms    INTEGER,
    created_at    TEXT    DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('keys', 'pattern')),
    pattern_type  TEXT    CHECK (pattern_type IN ('exact', 'prefix', 'suffix', 'glob', 'regex')),
    matched_count INTEGER,
    latency_us    INTEGER,
    node_id       TEXT,
    token_name    TEXT,
    body_hash     TEXT,
    scope         TEXT    NOT NULL DEFAULT '',
    UNIQUE (scope, request_id)
);

INSERT INTO invalidation_audit_new
    (id, pattern, keys, triggered_by, "timestamp", request_id, latency_ms, created_at, seq, kind,
     pattern_type, matched_count, latency_us, node_id, token_name, body_hash, scope)
SELECT id, pattern, keys, triggered_by, "timestamp", request_id, latency_ms, created_at, seq, kind,
       pattern_type, matched_count, latency_us, node_id, token_name, body_hash,
       COALESCE(token_name, '')
FROM invalidation_audit;

DROP TABLE invalidation_audit;
ALTER TABLE invalidation_audit_new RENAME TO invalidation_audit;

CREATE INDEX invalidation_audit_triggered_by_idx ON invalidation_audit (triggered_by, id);
CREATE INDEX invalidation_audit_pattern_idx ON invalidation_audit (pattern, id) WHERE pattern IS NOT NULL;
CREATE INDEX invalidation_audit_timestamp_idx ON invalidation_audit ("timestamp", id);
CREATE INDEX invalidation_audit_seq_idx ON invalidation_audit (seq);
CREATE INDEX invalidation_audit_request_id_idx ON invalidation_audit (request_id, id);

CREATE TRIGGER invalidation_audit_after_insert AFTER INSERT ON invalidation_audit
BEGIN
    INSERT OR IGNORE INTO invalidation_audit_keys (key, audit_id)
        SELECT value, NEW.id FROM json_each(NEW.keys);
    UPDATE invalidation_audit_count SET total = total + 1;
END;

CREATE TRIGGER invalidation_audit_no_update BEFORE UPDATE ON invalidation_audit
BEGIN
    SELECT RAISE(ABORT, 'invalidation_audit is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER invalidation_audit_no_delete BEFORE DELETE ON invalidation_audit
BEGIN
    SELECT RAISE(ABORT, 'invalidation_audit is append-only: DELETE is not allowed');
END;
