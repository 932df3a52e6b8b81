-- `POST /agent/threads/{key}/interrupt?all=true` withdraws the messages waiting for a turn:
-- they stay in the thread's history, and no later turn takes them as input.
ALTER TABLE messages ADD COLUMN withdrawn_at TIMESTAMPTZ;
DROP INDEX messages_waiting;
CREATE INDEX messages_waiting ON messages (thread_id)
    WHERE execution_id IS NULL AND withdrawn_at IS NULL;
