-- The approval policy an execution was queued with (its request's `approval_policy`), stored
-- with it so that a refused request changes nothing; NULL: the thread's policy when it is
-- claimed, else the deployment's default (CENTAUR_APPROVAL_POLICY).
ALTER TABLE executions ADD COLUMN approval_policy TEXT
    CHECK (approval_policy IN ('never', 'on-request', 'always'));
