-- Which server replica runs each sandbox, and which replicas are alive. A replica judges only
-- its own sandboxes; those of a replica not seen for a while are released deliberately by
-- whichever replica notices first.
ALTER TABLE sandboxes ADD COLUMN owner TEXT;

CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
