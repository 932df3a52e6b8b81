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

-- A tool's egress policy at the proxy, as its replicas last wrote it (the proxy knows it as
-- the sandbox `tool-<name>`). Synced with the sandboxes' policies.
CREATE TABLE tool_egress (
    tool       TEXT PRIMARY KEY,
    policy     JSONB NOT NULL,
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
