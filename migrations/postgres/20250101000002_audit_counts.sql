-- Exact `total_count` for `?triggered_by=X` (the most common filter) in O(1), and a
-- visibility map kept current so every other filtered count is an index-only scan.

-- Insert-only tables are vacuumed only for their visibility map; without it a filtered
-- count(*) visits the heap for every matching row (measured: 50,000 rows 177 ms before
-- VACUUM, 9 ms after). Vacuum after every 10,000 + 1% new rows instead of 1,000 + 20%.
ALTER TABLE invalidation_audit SET (
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.01
);

CREATE TABLE invalidation_audit_count_by_triggered_by (
    triggered_by TEXT   PRIMARY KEY,
    total        BIGINT NOT NULL
);

INSERT INTO invalidation_audit_count_by_triggered_by (triggered_by, total)
    SELECT triggered_by, count(*) FROM invalidation_audit GROUP BY triggered_by;

-- One statement per COPY/INSERT: the total, then one upsert per distinct triggered_by.
CREATE OR REPLACE FUNCTION invalidation_audit_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE invalidation_audit_count SET total = total + (SELECT count(*) FROM new_rows);
    INSERT INTO invalidation_audit_count_by_triggered_by AS c (triggered_by, total)
        SELECT triggered_by, count(*) FROM new_rows GROUP BY triggered_by
        ON CONFLICT (triggered_by) DO UPDATE SET total = c.total + EXCLUDED.total;
    RETURN NULL;
END
$$;

-- Counters move only through the trigger above (trigger depth 2), never directly.
CREATE OR REPLACE FUNCTION invalidation_audit_count_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION '% is maintained by trigger: % is not allowed', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER invalidation_audit_count_by_triggered_by_guard_trg
    BEFORE UPDATE OR DELETE ON invalidation_audit_count_by_triggered_by
    FOR EACH ROW EXECUTE FUNCTION invalidation_audit_count_guard();

CREATE TRIGGER invalidation_audit_count_by_triggered_by_no_truncate
    BEFORE TRUNCATE ON invalidation_audit_count_by_triggered_by
    FOR EACH STATEMENT EXECUTE FUNCTION invalidation_audit_reject_change();
