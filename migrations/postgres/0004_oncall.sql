-- On-call: incidents climb an escalation policy; pages are recorded once per
-- person per step; rotation overrides hand a rotation to someone for a while.

ALTER TABLE incidents ADD COLUMN platform TEXT NOT NULL DEFAULT 'shell';
ALTER TABLE incidents ADD COLUMN policy TEXT;
-- Bumped whenever paging stops or starts again (acknowledge, re-open,
-- resolve), so a timer scheduled for an older climb does nothing.
ALTER TABLE incidents ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
-- The next position of the policy to page in this generation.
ALTER TABLE incidents ADD COLUMN next_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN acked_by TEXT;
ALTER TABLE incidents ADD COLUMN acked_at BIGINT;
ALTER TABLE incidents ADD COLUMN resolved_by TEXT;
ALTER TABLE incidents ADD COLUMN resolved_at BIGINT;
ALTER TABLE incidents ADD COLUMN resolution TEXT;
-- Incidents recorded before paging existed belong to their run's platform.
UPDATE incidents SET platform = (SELECT platform FROM runs WHERE runs.id = incidents.run_id)
    WHERE run_id IS NOT NULL;
UPDATE incidents SET status = 'triggered' WHERE status = 'open';

CREATE TABLE pages (
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    generation BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    person TEXT NOT NULL,
    step BIGINT NOT NULL,
    via TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (incident_id, generation, seq, person)
);

CREATE TABLE rotation_overrides (
    id BIGSERIAL PRIMARY KEY,
    rotation TEXT NOT NULL,
    person TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX rotation_overrides_by_end ON rotation_overrides (ends_at);
