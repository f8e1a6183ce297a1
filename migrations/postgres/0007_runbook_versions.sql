-- Every runbook text a run has followed, once per content: a run pins the
-- version it started with, so editing the file never changes a live run.
CREATE TABLE runbook_versions (
    hash TEXT PRIMARY KEY,
    runbook TEXT NOT NULL,
    source TEXT NOT NULL,
    first_seen BIGINT NOT NULL
);

-- NULL for runs from before versions until start-up pins them to their
-- runbook file as it is then (or forever, when that file is gone).
ALTER TABLE runs ADD COLUMN runbook_version TEXT REFERENCES runbook_versions (hash);
