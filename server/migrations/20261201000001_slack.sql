-- The Slack bridge (server/src/slack).

-- Everything Slack sent that the bridge must act on, stored before it is acknowledged: an event
-- (Events API, by Slack's event_id) or an interaction (a button click). The primary key is the
-- deduplication across Slack's retries and across replicas; a request that could not be stored
-- is answered 500, so Slack's retry of it is taken. Workers on every replica claim rows.
CREATE TABLE slack_inbox (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('event', 'interaction')),
    payload       JSONB NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts      INT NOT NULL DEFAULT 0,
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    done_at       TIMESTAMPTZ,
    error         TEXT
);
CREATE INDEX slack_inbox_waiting ON slack_inbox (received_at) WHERE done_at IS NULL;

-- A Centaur thread that lives in a Slack thread: where it is, who started it, and how far its
-- events have been delivered to Slack (the outbox's cursor), under a lease so one replica
-- delivers at a time.
CREATE TABLE slack_threads (
    thread_id          BIGINT PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
    team_id            TEXT NOT NULL,
    channel_id         TEXT NOT NULL,
    channel_name       TEXT,
    thread_ts          TEXT NOT NULL,
    started_by_id      TEXT NOT NULL,
    started_by_name    TEXT,
    delivered_event_id BIGINT NOT NULL DEFAULT 0,
    -- The deliverer's own state (slack::delivery::DeliveryState as JSON).
    delivery           JSONB NOT NULL DEFAULT '{}',
    lease_owner        TEXT,
    lease_until        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX slack_threads_place ON slack_threads (channel_id, thread_ts);

-- Every Slack message taken into a thread: a message seen twice (as app_mention and as message)
-- is taken once, and a link to any message finds its thread.
CREATE TABLE slack_messages (
    channel_id   TEXT NOT NULL,
    ts           TEXT NOT NULL,
    thread_id    BIGINT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    user_id      TEXT,
    -- The turn this message started, when it started one (its ✓ or ✗ goes on it).
    execution_id UUID,
    PRIMARY KEY (channel_id, ts)
);
