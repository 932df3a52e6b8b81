-- The Slack inbox's claims name the replica that holds them, so a live replica takes over the
-- rows of one that died (not seen in `replicas` for CENTAUR_REPLICA_DEAD_AFTER_SECS) without
-- waiting for the claim to run out, and a restarted replica takes back its own.
ALTER TABLE slack_inbox ADD COLUMN claimed_replica TEXT;
UPDATE slack_inbox SET claimed_replica = split_part(claimed_by, '/', 1)
    WHERE claimed_by IS NOT NULL;
