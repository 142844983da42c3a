-- 0001_accounts.sql: accounts, and the audit log (append-only).
--
-- Usernames are unique without regard to case (the unique index on lower(username)); look
-- accounts up with `WHERE lower(username) = lower($1)` so the index is used.

CREATE TABLE accounts (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    roles         text[] NOT NULL DEFAULT '{player}'
                  CHECK (roles <@ ARRAY['player', 'moderator', 'designer', 'admin']::text[]),
    created_at    timestamptz NOT NULL DEFAULT now(),
    banned_until  timestamptz,
    ban_reason    text
);

CREATE UNIQUE INDEX accounts_username_lower_key ON accounts (lower(username));

-- Logins, role changes, bans, reloads, admin edits. actor is an account id (NULL: the system);
-- it is not a foreign key so that entries outlive the accounts they mention.
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  bigint,
    action text NOT NULL,
    target text,
    data   jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP;
END
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
