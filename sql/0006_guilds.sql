-- 0006_guilds.sql: guilds and their members.
--
-- Guilds are global: their rows live in the main database (every database gets the schema, as
-- with 0005). guild_members has one row per member; its key makes a player a member of one
-- guild at most. A player's shard row keeps a copy of its guild id (players.guild_id) for the
-- player document and the live world; the membership row is the truth.

CREATE TABLE guilds (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    leader_id  bigint NOT NULL,                        -- a player id
    members    int NOT NULL DEFAULT 0 CHECK (members >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX guilds_name_key ON guilds (lower(name));

CREATE TABLE guild_members (
    player_id  bigint PRIMARY KEY,
    guild_id   bigint NOT NULL REFERENCES guilds (id) ON DELETE CASCADE,
    joined_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX guild_members_guild_idx ON guild_members (guild_id, joined_at);
