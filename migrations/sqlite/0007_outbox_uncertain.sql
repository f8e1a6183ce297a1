-- When the current claim of a message began, and since when an earlier
-- attempt may have reached the platform without tminus learning of it (a
-- claim whose lease ran out, a time-out, a connection that broke after the
-- request was sent, an outcome that could not be recorded). A message with
-- `uncertain_since` is looked for on the platform before it is posted again.
ALTER TABLE outbox ADD COLUMN claimed_at BIGINT;
ALTER TABLE outbox ADD COLUMN uncertain_since BIGINT;
