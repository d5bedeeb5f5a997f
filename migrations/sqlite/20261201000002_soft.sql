-- Soft invalidation (SPEC "Soft invalidation"): 1 when cache managers were asked to mark the
-- entries stale instead of dropping them.
ALTER TABLE invalidation_audit ADD COLUMN soft INTEGER NOT NULL DEFAULT 0;
