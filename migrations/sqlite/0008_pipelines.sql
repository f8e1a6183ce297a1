-- The latest report of a pipeline (an integration of the bot file) on a
-- checklist item, per run: running, done or failed, who said so, the job's
-- page and a note.
CREATE TABLE item_reports (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    phase TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    by_name TEXT NOT NULL,
    url TEXT,
    note TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (run_id, phase, item)
);

-- The first answer to an API call made with an `Idempotency-Key`, written
-- in the transaction of its change: a repeat of the call (the same key from
-- the same integration, keyed like `processed_requests`) gets this answer
-- and changes nothing. `fingerprint` is the SHA-256 of the method, path and
-- body, so the key cannot be reused for another request.
CREATE TABLE api_answers (
    request_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    at BIGINT NOT NULL
);

-- Pipelines started from a "Run" button: the hook called for which item,
-- the one-time token the pipeline reports back with (valid while the item
-- waits on this call), when an attempt last began and when one was
-- answered. A call whose attempt began but was never answered may have
-- reached the pipeline; its retry carries the same Idempotency-Key.
CREATE TABLE hook_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    phase TEXT NOT NULL,
    item TEXT NOT NULL,
    hook TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    attempt_at BIGINT,
    called_at BIGINT,
    last_error TEXT
);
CREATE INDEX hook_calls_by_item ON hook_calls (run_id, phase, item, id);
