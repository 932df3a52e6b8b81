-- What a thread is about: its first user message's first non-empty line, whitespace collapsed,
-- at most 80 characters (79 and an ellipsis when longer). Set when the first user message is
-- stored (threads::title_of computes the same); existing threads get theirs from the messages
-- they have.
ALTER TABLE threads ADD COLUMN title TEXT;

UPDATE threads t SET title = shortened.title
FROM (
    SELECT thread_id,
           CASE WHEN char_length(line) > 80 THEN left(line, 79) || '…' ELSE line END AS title
    FROM (
        SELECT DISTINCT ON (m.thread_id) m.thread_id,
               btrim(regexp_replace(first_line.l, '\s+', ' ', 'g')) AS line
        FROM messages m,
             LATERAL (SELECT l FROM regexp_split_to_table(m.text, E'\n') WITH ORDINALITY AS x (l, n)
                      WHERE btrim(l, E' \t\r\f\v') <> '' ORDER BY n LIMIT 1) AS first_line
        WHERE m.role = 'user'
        ORDER BY m.thread_id, m.event_id
    ) AS firsts
) AS shortened
WHERE shortened.thread_id = t.id AND t.title IS NULL;

-- GET /agent/threads counts each thread's approvals waiting for a decision.
CREATE INDEX approvals_pending_by_thread ON approvals (thread_id) WHERE status = 'pending';
