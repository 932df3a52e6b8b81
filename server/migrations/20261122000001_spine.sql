-- Threads, their sandboxes, messages, executions, the event log, approvals and API keys.

CREATE TABLE threads (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_key       TEXT NOT NULL UNIQUE,
    platform         TEXT NOT NULL,
    harness          TEXT NOT NULL,
    persona          TEXT,
    -- The id of the thread's newest event. Appends lock this row, so ids are dense and
    -- committed in order.
    last_event_id    BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_activity_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX threads_by_activity ON threads (last_activity_at DESC, id DESC);

CREATE TABLE sandboxes (
    id             UUID PRIMARY KEY,
    thread_id      BIGINT NOT NULL REFERENCES threads (id),
    backend        TEXT NOT NULL,
    harness        TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('ready', 'released')),
    ready_source   TEXT NOT NULL CHECK (ready_source IN ('warm_pool', 'cold')),
    token_hash     BYTEA NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    released_at    TIMESTAMPTZ,
    release_reason TEXT
);
-- A thread has at most one live sandbox.
CREATE UNIQUE INDEX sandboxes_one_live_per_thread ON sandboxes (thread_id) WHERE state <> 'released';

-- Idempotency of POST /agent/spawn.
CREATE TABLE spawn_requests (
    spawn_id     TEXT PRIMARY KEY,
    thread_id    BIGINT NOT NULL REFERENCES threads (id),
    sandbox_id   UUID NOT NULL REFERENCES sandboxes (id),
    ready_source TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE executions (
    id              UUID PRIMARY KEY,
    thread_id       BIGINT NOT NULL REFERENCES threads (id),
    status          TEXT NOT NULL
                    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    harness         TEXT NOT NULL,
    idempotency_key TEXT,
    max_duration_ms BIGINT NOT NULL,
    deadline_at     TIMESTAMPTZ NOT NULL,
    sandbox_id      UUID REFERENCES sandboxes (id),
    -- Highest runner event seq stored: retried batches are stored once.
    runner_seq      BIGINT NOT NULL DEFAULT 0,
    result_text     TEXT,
    error           TEXT,
    cancel_reason   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    CONSTRAINT executions_idempotency UNIQUE (thread_id, idempotency_key)
);
-- At most one queued or running execution per thread.
CREATE UNIQUE INDEX executions_one_active_per_thread ON executions (thread_id)
    WHERE status IN ('queued', 'running');
CREATE INDEX executions_active_by_deadline ON executions (deadline_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX executions_by_thread ON executions (thread_id, created_at DESC);

CREATE TABLE messages (
    id                UUID PRIMARY KEY,
    thread_id         BIGINT NOT NULL REFERENCES threads (id),
    role              TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    text              TEXT NOT NULL,
    client_message_id TEXT,
    event_id          BIGINT NOT NULL,
    -- The execution that took this message as input; NULL while it waits for one.
    execution_id      UUID REFERENCES executions (id),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT messages_client_id UNIQUE (thread_id, client_message_id)
);
CREATE INDEX messages_waiting ON messages (thread_id) WHERE execution_id IS NULL;

-- The event log. No foreign keys: the append locks the thread row in the same transaction,
-- and per-row FK checks would cost a third of the insert rate.
CREATE TABLE events (
    thread_id    BIGINT NOT NULL,
    event_id     BIGINT NOT NULL,
    execution_id UUID,
    type         TEXT NOT NULL,
    -- The exact JSON document sent to clients (json keeps it byte for byte).
    data         JSON NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (thread_id, event_id)
);

CREATE TABLE approvals (
    id           UUID PRIMARY KEY,
    thread_id    BIGINT NOT NULL REFERENCES threads (id),
    execution_id UUID NOT NULL REFERENCES executions (id),
    kind         TEXT NOT NULL,
    summary      TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approve', 'approve_for_session', 'deny', 'cancelled')),
    decided_by   TEXT,
    reason       TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at   TIMESTAMPTZ
);
CREATE INDEX approvals_pending ON approvals (execution_id) WHERE status = 'pending';

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
