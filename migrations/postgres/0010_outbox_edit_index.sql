-- Whether a newer edit of a card waits behind the one being claimed is
-- looked up by the card's key, lane and id in one index. With the key
-- alone in it, the planner could walk the lane's whole backlog in
-- `outbox_pending` instead, filtering by key, and did whenever its
-- statistics were older than the backlog.
DROP INDEX outbox_pending_key;
CREATE INDEX outbox_pending_key ON outbox (message_key, platform, channel, id)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND message_key IS NOT NULL;
