-- The audit trail of accepted invalidations (SPEC "Audit store"), PostgreSQL flavour.
--
-- The original design's columns come first and keep their names and types; the extensions
-- follow. `request_id` is UNIQUE: it is both the idempotency key that survives restarts and
-- what makes every write path exactly-once (`INSERT ... ON CONFLICT (request_id) DO NOTHING`).
CREATE TABLE invalidation_audit (
    id            BIGSERIAL PRIMARY KEY,
    pattern       TEXT,
    keys          JSONB,
    triggered_by  TEXT        NOT NULL,
    "timestamp"   TIMESTAMPTZ NOT NULL,
    request_id    TEXT        NOT NULL,
    latency_ms    BIGINT,
    created_at    TIMESTAMPTZ DEFAULT NOW(),
    seq           BIGINT      NOT NULL,
    kind          TEXT        NOT NULL CHECK (kind IN ('keys', 'pattern')),
    pattern_type  TEXT        CHECK (pattern_type IN ('exact', 'prefix', 'suffix', 'glob', 'regex')),
    matched_count BIGINT,
    latency_us    BIGINT,
    node_id       TEXT,
    token_name    TEXT,
    body_hash     TEXT,
    CONSTRAINT invalidation_audit_request_id_key UNIQUE (request_id)
);

-- One index per `GET /audit/logs` filter. `(filter, id)` lets the newest-first page walk the
-- index backwards and stop after `limit` rows; `id` DESC paging itself uses the primary key.
CREATE INDEX invalidation_audit_triggered_by_idx ON invalidation_audit (triggered_by, id);
CREATE INDEX invalidation_audit_pattern_idx ON invalidation_audit (pattern, id) WHERE pattern IS NOT NULL;
CREATE INDEX invalidation_audit_timestamp_idx ON invalidation_audit ("timestamp", id);
-- `keys @> '["k"]'`: jsonb_path_ops is smaller and faster than the default opclass for @>.
CREATE INDEX invalidation_audit_keys_idx ON invalidation_audit USING GIN (keys jsonb_path_ops);
-- `max(seq)` at start-up (seq continues after a restart).
CREATE INDEX invalidation_audit_seq_idx ON invalidation_audit (seq);

-- Exact unfiltered `total_count` in O(1): `count(*)` over a million rows costs tens of ms and
-- `pg_class.reltuples` is an estimate. A statement-level trigger with a transition table adds
-- the number of rows each INSERT/COPY really inserted (rows skipped by ON CONFLICT are not in
-- `new_rows`), so a 5,000-row COPY costs one UPDATE, not 5,000.
CREATE TABLE invalidation_audit_count (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    total     BIGINT  NOT NULL
);
INSERT INTO invalidation_audit_count (singleton, total) VALUES (TRUE, 0);

CREATE FUNCTION invalidation_audit_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE invalidation_audit_count SET total = total + (SELECT count(*) FROM new_rows);
    RETURN NULL;
END
$$;

CREATE TRIGGER invalidation_audit_count_trg
    AFTER INSERT ON invalidation_audit
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_audit_count_rows();

-- Immutability enforced by the database itself, whoever connects: no UPDATE, no DELETE
-- (row triggers) and no TRUNCATE (statement trigger; TRUNCATE fires no row triggers).
CREATE FUNCTION invalidation_audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invalidation_audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER invalidation_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON invalidation_audit
    FOR EACH ROW EXECUTE FUNCTION invalidation_audit_reject_change();

CREATE TRIGGER invalidation_audit_no_truncate
    BEFORE TRUNCATE ON invalidation_audit
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_audit_reject_change();

-- The counter may only move through the trigger above (trigger depth 2), never directly.
CREATE FUNCTION invalidation_audit_count_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'invalidation_audit_count is maintained by trigger: % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER invalidation_audit_count_guard_trg
    BEFORE UPDATE OR DELETE ON invalidation_audit_count
    FOR EACH ROW EXECUTE FUNCTION invalidation_audit_count_guard();

CREATE TRIGGER invalidation_audit_count_no_truncate
    BEFORE TRUNCATE ON invalidation_audit_count
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_audit_reject_change();
