-- Finding whether a newer edit of the same card waits, so an older one is skipped.
CREATE INDEX outbox_pending_key ON outbox (message_key)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND message_key IS NOT NULL;
