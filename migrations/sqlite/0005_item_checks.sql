-- The latest result of each checklist item's automated HTTP check, per run:
-- whether it passed, what it saw (status and latency, or why it failed),
-- and when it ran.
CREATE TABLE item_checks (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    phase TEXT NOT NULL,
    item TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (run_id, phase, item)
);
