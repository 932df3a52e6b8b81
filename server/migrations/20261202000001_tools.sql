-- Tools (docs/tools.md): files tool calls save to threads, and each tool's identity at the
-- egress proxy.

CREATE TABLE thread_attachments (
    id         UUID PRIMARY KEY,
    thread_id  BIGINT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    -- The tool call that saved it.
    call_id    UUID NOT NULL,
    tool       TEXT NOT NULL,
    name       TEXT NOT NULL,
    mime       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX thread_attachments_by_thread ON thread_attachments (thread_id, created_at);

-- Tool calls made from a thread's sandbox: one row per `tool.call.started`, marked finished in
-- the transaction that appends its `tool.call.finished` (by the call itself, by the end of its
-- execution, or by the sweep at a replica's start for calls a restart cut short), so no
-- started call stays unfinished. Also what "approve for the session" remembers: an approved
-- call's approval, per sandbox, tool and method.
CREATE TABLE tool_calls (
    id           UUID PRIMARY KEY,
    thread_id    BIGINT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    -- The running execution when the call was made, if one was.
    execution_id UUID,
    sandbox_id   UUID NOT NULL,
    tool         TEXT NOT NULL,
    method       TEXT NOT NULL,
    approval_id  UUID,
    -- The replica serving the call, and its process (a restart of the same replica is another).
    replica      TEXT NOT NULL,
    incarnation  UUID NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ
);
CREATE INDEX tool_calls_unfinished ON tool_calls (execution_id) WHERE finished_at IS NULL;
CREATE INDEX tool_calls_for_session ON tool_calls (sandbox_id, tool, method)
    WHERE approval_id IS NOT NULL;

-- A tool's egress policy at the proxy, as its replicas last wrote it (the proxy knows it as
-- the sandbox `tool-<name>`). Synced with the sandboxes' policies; the sync merges `declared`
-- with the operator's entry (CENTAUR_TOOL_EGRESS) again, so a change there reaches the proxy
-- without a restart. A row is deleted when the tool is gone from its folders.
CREATE TABLE tool_egress (
    tool       TEXT PRIMARY KEY,
    -- What the tool's manifest asks for (its hosts and secret bindings).
    declared   JSONB NOT NULL,
    -- In force: `declared` merged with the operator's entry for the tool.
    policy     JSONB NOT NULL,
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
