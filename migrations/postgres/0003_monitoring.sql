-- Monitoring: one row per tick of a run's window, and incidents.

CREATE TABLE monitor_ticks (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    tick_at BIGINT NOT NULL,
    level TEXT NOT NULL,
    readings TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, tick_at)
);

CREATE TABLE incidents (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT REFERENCES runs (id),
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    opened_at BIGINT NOT NULL
);
CREATE INDEX incidents_by_run ON incidents (run_id, status);
