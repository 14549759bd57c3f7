-- Instances wake when outbox rows commit (backends.outbox_listener): one notification per
-- transaction (PostgreSQL folds identical notifications of a transaction into one), sent at commit.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
