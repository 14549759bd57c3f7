-- API keys, persisted queries, and audit look-ups (issue 7).

-- A key is `mgk_<prefix>_<secret>`; only the SHA-256 of the whole key is stored (the secret
-- is 32 random bytes, so a fast hash is enough: nothing to brute-force). The prefix names
-- the key in lists, logs and the audit log. Rotation creates a new key and gives the old
-- one an expiry (the grace period); revocation is immediate.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix      text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL UNIQUE,
    name        text NOT NULL CHECK (btrim(name) <> ''),
    scopes      text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'admin']),
    tier        text NOT NULL DEFAULT 'standard',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    rotated_to  text        -- the prefix of the key that replaced this one
);

-- Automatic persisted queries without Redis, and the allow-list (allowed = registered by an admin).
CREATE TABLE persisted_queries (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    query      text NOT NULL,
    allowed    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- auditLog filters by actor or operation and pages by id (newest first).
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);
CREATE INDEX audit_log_operation_idx ON audit_log (operation, id);
