-- Egress policies: what each sandbox may reach through the proxy. The server keeps the desired
-- state here and pushes it to the proxy; versions come from one sequence so the proxy can tell
-- a newer push from a late one.

-- A thread's own policy; NULL means the deployment's default.
ALTER TABLE threads ADD COLUMN egress_policy JSONB;

CREATE SEQUENCE egress_versions;

-- One row per sandbox the proxy should serve.
CREATE TABLE sandbox_egress (
    sandbox_id UUID PRIMARY KEY,
    thread_key TEXT,
    policy     JSONB NOT NULL,
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
