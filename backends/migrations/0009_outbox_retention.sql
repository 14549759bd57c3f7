-- The outbox keeps events for OUTBOX_RETENTION_HOURS (backends.event_hub prunes older ones).
-- pruned_through is the largest id ever pruned: a subscription cursor at or above it can be
-- resumed exactly; one below it may have missed events and is refused (ids have gaps where
-- transactions rolled back, so "the oldest id left" could not tell a gap from a pruned event).
CREATE TABLE IF NOT EXISTS outbox_retention (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO outbox_retention (singleton) VALUES (true) ON CONFLICT DO NOTHING;
