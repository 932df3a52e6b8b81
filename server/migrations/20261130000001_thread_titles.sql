-- What a thread is about: its first user message's first non-empty line, whitespace collapsed,
-- at most 80 characters (79 and an ellipsis when longer). Set when the first user message is
-- stored (threads::title_of computes the same); existing threads get theirs from the messages
-- they have.
ALTER TABLE threads ADD COLUMN title TEXT;

-- Each thread's first user message (in the thread's order, as the server titled it) is picked
-- first; only its lines are looked at. Whitespace is Rust's (`trim`, `split_whitespace`: Unicode
-- White_Space), listed, since `\s` and `[[:space:]]` depend on the database's locale; `\r`
-- before a line break is whitespace too, as for `str::lines`.
UPDATE threads t
SET title = CASE WHEN char_length(first_line.line) > 80
                 THEN left(first_line.line, 79) || '…' ELSE first_line.line END
FROM (
    SELECT DISTINCT ON (thread_id) thread_id, text
    FROM messages
    WHERE role = 'user'
    ORDER BY thread_id, event_id, id
) AS first_message,
LATERAL (
    SELECT collapsed.line
    FROM regexp_split_to_table(first_message.text, E'\n') WITH ORDINALITY AS split (raw, n),
         LATERAL (SELECT btrim(regexp_replace(split.raw,
                      '[\t\n\v\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+',
                      ' ', 'g'), ' ') AS line) AS collapsed
    WHERE collapsed.line <> ''
    ORDER BY split.n
    LIMIT 1
) AS first_line
WHERE first_message.thread_id = t.id AND t.title IS NULL;

-- GET /agent/threads counts each thread's approvals waiting for a decision.
CREATE INDEX approvals_pending_by_thread ON approvals (thread_id) WHERE status = 'pending';
