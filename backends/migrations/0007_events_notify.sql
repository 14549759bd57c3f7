-- Instances wake when outbox rows commit (backends.outbox_listener): one notification per
-- transaction (PostgreSQL folds identical notifications of a transaction into one), sent at commit.
-- Numbered after main's 0005/0006 and idempotent: a database where an earlier build of the
-- cache branch created the trigger (as 0005_events_notify) applies it again cleanly.
CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
