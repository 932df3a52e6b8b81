-- A thread's approval policy; NULL means the deployment's default (CENTAUR_APPROVAL_POLICY).
ALTER TABLE threads ADD COLUMN approval_policy TEXT
    CHECK (approval_policy IN ('never', 'on-request', 'always'));
