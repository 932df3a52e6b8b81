-- The Slack inbox's claims name the replica that holds them, so a live replica takes over the
-- rows of one that died (not seen in `replicas` for CENTAUR_REPLICA_DEAD_AFTER_SECS) without
-- waiting for the claim to run out, and a restarted replica takes back its own.
-- Rows claimed before this migration keep `claimed_replica` NULL: their claims run out as
-- before (a replica id may contain '/', so it cannot be read back from `claimed_by`).
ALTER TABLE slack_inbox ADD COLUMN claimed_replica TEXT;
