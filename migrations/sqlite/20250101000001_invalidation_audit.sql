-- The audit trail of accepted invalidations (SPEC "Audit store"), embedded SQLite flavour.
--
-- Same columns as PostgreSQL. SQLite has no timestamp or jsonb type: `timestamp` is unix
-- microseconds (INTEGER, exact and index-friendly), `keys` is a JSON array in TEXT.
-- AUTOINCREMENT so an id is never reused.
CREATE TABLE invalidation_audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern       TEXT,
    keys          TEXT,
    triggered_by  TEXT    NOT NULL,
    "timestamp"   INTEGER NOT NULL,
    request_id    TEXT    NOT NULL UNIQUE,
    latency_ms    INTEGER,
    created_at    TEXT    DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    seq           INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('keys', 'pattern')),
    pattern_type  TEXT    CHECK (pattern_type IN ('exact', 'prefix', 'suffix', 'glob', 'regex')),
    matched_count INTEGER,
    latency_us    INTEGER,
    node_id       TEXT,
    token_name    TEXT,
    body_hash     TEXT
);

CREATE INDEX invalidation_audit_triggered_by_idx ON invalidation_audit (triggered_by, id);
CREATE INDEX invalidation_audit_pattern_idx ON invalidation_audit (pattern, id) WHERE pattern IS NOT NULL;
CREATE INDEX invalidation_audit_timestamp_idx ON invalidation_audit ("timestamp", id);
CREATE INDEX invalidation_audit_seq_idx ON invalidation_audit (seq);

-- SQLite has no GIN index: the `key` filter is served by this side table, filled by the
-- insert trigger below (one row per stored key).
CREATE TABLE invalidation_audit_keys (
    key      TEXT    NOT NULL,
    audit_id INTEGER NOT NULL,
    PRIMARY KEY (key, audit_id)
) WITHOUT ROWID;

-- Exact unfiltered `total_count` in O(1), as on PostgreSQL.
CREATE TABLE invalidation_audit_count (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    total     INTEGER NOT NULL
);
INSERT INTO invalidation_audit_count (singleton, total) VALUES (1, 0);

CREATE TRIGGER invalidation_audit_after_insert AFTER INSERT ON invalidation_audit
BEGIN
    INSERT OR IGNORE INTO invalidation_audit_keys (key, audit_id)
        SELECT value, NEW.id FROM json_each(NEW.keys);
    UPDATE invalidation_audit_count SET total = total + 1;
END;

-- Immutability enforced by the database itself. (SQLite has no TRUNCATE; its `DELETE FROM t`
-- truncate optimisation is disabled when the table has a DELETE trigger.)
CREATE TRIGGER invalidation_audit_no_update BEFORE UPDATE ON invalidation_audit
BEGIN
    SELECT RAISE(ABORT, 'invalidation_audit is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER invalidation_audit_no_delete BEFORE DELETE ON invalidation_audit
BEGIN
    SELECT RAISE(ABORT, 'invalidation_audit is append-only: DELETE is not allowed');
END;

CREATE TRIGGER invalidation_audit_keys_no_update BEFORE UPDATE ON invalidation_audit_keys
BEGIN
    SELECT RAISE(ABORT, 'invalidation_audit_keys is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER invalidation_audit_keys_no_delete BEFORE DELETE ON invalidation_audit_keys
BEGIN
    SELECT RAISE(ABORT, 'invalidation_audit_keys is append-only: DELETE is not allowed');
END;
