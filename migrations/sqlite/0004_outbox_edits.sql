-- Finding a keyed message's pending edit, so a newer edit replaces it.
CREATE INDEX outbox_pending_key ON outbox (message_key)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND message_key IS NOT NULL;
