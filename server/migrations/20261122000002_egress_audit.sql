-- One row per request or tunnel through the egress proxy. Secret names, never values.
CREATE TABLE egress_audit (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL,
    sandbox_id      TEXT NOT NULL,
    thread_key      TEXT,
    host            TEXT NOT NULL,
    port            INTEGER NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    status          INTEGER,
    bytes_up        BIGINT NOT NULL,
    bytes_down      BIGINT NOT NULL,
    decision        TEXT NOT NULL,
    reason          TEXT,
    secrets_swapped TEXT[] NOT NULL,
    duration_ms     BIGINT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX egress_audit_by_thread ON egress_audit (thread_key, at);
CREATE INDEX egress_audit_refusals ON egress_audit (at) WHERE decision <> 'allowed';
