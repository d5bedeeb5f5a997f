-- Soft invalidation (SPEC "Soft invalidation"): the row says whether the invalidation asked
-- cache managers to mark entries stale instead of dropping them.
ALTER TABLE invalidation_audit ADD COLUMN soft BOOLEAN NOT NULL DEFAULT FALSE;
