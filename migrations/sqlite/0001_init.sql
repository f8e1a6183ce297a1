-- tminus schema, SQLite. Times are epoch milliseconds (BIGINT) so that both
-- databases compare and sort them the same way.

CREATE TABLE run_counters (
    channel_key TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    number BIGINT NOT NULL,
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    env TEXT NOT NULL,
    runbook TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    phase_entered_at BIGINT NOT NULL,
    t0 BIGINT,
    ended_at BIGINT,
    end_reason TEXT,
    UNIQUE (platform, channel, number)
);
CREATE INDEX runs_by_status ON runs (status, id);

CREATE TABLE run_items (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    phase TEXT NOT NULL,
    item TEXT NOT NULL,
    state TEXT NOT NULL,
    by_person TEXT NOT NULL,
    at BIGINT NOT NULL,
    reason TEXT,
    PRIMARY KEY (run_id, phase, item)
);

CREATE TABLE signoffs (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    phase TEXT NOT NULL,
    role TEXT NOT NULL,
    person TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (run_id, phase, role, person)
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    platform TEXT NOT NULL,
    location TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_run ON audit_log (run_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    run_id BIGINT,
    message_key TEXT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    delivered_at BIGINT,
    failed_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_pending ON outbox (platform, channel, id)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

CREATE TABLE messages (
    message_key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    platform_ref TEXT NOT NULL,
    thread_ref TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE timers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timer_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    run_id BIGINT,
    due_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    fired_at BIGINT
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;

CREATE TABLE processed_requests (
    request_key TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
