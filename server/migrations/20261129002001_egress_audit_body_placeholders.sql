-- Placeholders a request body carried (forwarded unchanged, never swapped into): the names of
-- the sandbox's secrets, and how many were not the sandbox's own.
ALTER TABLE egress_audit
    ADD COLUMN body_placeholders TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN body_unknown_placeholders INTEGER NOT NULL DEFAULT 0;
