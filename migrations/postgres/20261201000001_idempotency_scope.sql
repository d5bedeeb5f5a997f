-- Idempotency is scoped by token (SPEC "Idempotency"): the key is (token name, request_id),
-- so two tenants can never collide on, block or probe each other's ids. `scope` is the
-- token's name ('' in open mode); exactly-once writes now conflict on (scope, request_id).
ALTER TABLE invalidation_audit ADD COLUMN scope TEXT NOT NULL DEFAULT '';

-- Rows written before this migration: their scope is their token's name. The append-only
-- trigger is lifted for this one statement only (migrations run as the table's owner).
ALTER TABLE invalidation_audit DISABLE TRIGGER invalidation_audit_no_update_delete;
UPDATE invalidation_audit SET scope = token_name WHERE token_name IS NOT NULL;
ALTER TABLE invalidation_audit ENABLE TRIGGER invalidation_audit_no_update_delete;

ALTER TABLE invalidation_audit DROP CONSTRAINT invalidation_audit_request_id_key;
ALTER TABLE invalidation_audit
    ADD CONSTRAINT invalidation_audit_scope_request_id_key UNIQUE (scope, request_id);
-- `?request_id=` in /audit/logs filters on the id alone.
CREATE INDEX invalidation_audit_request_id_idx ON invalidation_audit (request_id, id);
