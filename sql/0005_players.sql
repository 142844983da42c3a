-- 0005_players.sql: players and their inventories.
--
-- Every database gets this schema (the main one and each shard of config.lua's section
-- shards); which tables hold rows depends on the database:
--   main:    player_directory (every player's id, unique name, account, shard) and its
--            sequence; a player's row lives in its shard, which may be the main database
--   shard n: players and inventory of the players whose home region maps to n
-- A player id is (a number from player_id_seq) * 64 + shard, so any node finds the shard of
-- any player from its id alone, forever.

CREATE SEQUENCE player_id_seq;

CREATE TABLE player_directory (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    account_id bigint NOT NULL,
    shard      int NOT NULL CHECK (shard >= 0 AND shard < 64),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (id % 64 = shard)
);

CREATE UNIQUE INDEX player_directory_name_key ON player_directory (lower(name));
CREATE INDEX player_directory_account_idx ON player_directory (account_id);

CREATE TABLE players (
    id         bigint PRIMARY KEY,
    account_id bigint NOT NULL,
    name       text NOT NULL,
    class      text NOT NULL,
    level      int NOT NULL DEFAULT 1 CHECK (level >= 1),
    xp         bigint NOT NULL DEFAULT 0 CHECK (xp >= 0),
    hp         int NOT NULL CHECK (hp >= 0),
    mp         int NOT NULL CHECK (mp >= 0),
    region     text NOT NULL,
    x          double precision NOT NULL,
    y          double precision NOT NULL,
    moved_at   double precision NOT NULL DEFAULT 0,  -- epoch seconds of the last move
    home_region text NOT NULL,
    appearance jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(appearance) = 'object'),
    buffs      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(buffs) = 'array'),
    guild_id   bigint,
    version    int NOT NULL DEFAULT 1,                -- bumped by every write (cache versions)
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX players_account_idx ON players (account_id);
CREATE INDEX players_region_idx ON players (region, id);

CREATE TABLE inventory (
    player_id bigint NOT NULL REFERENCES players (id) ON DELETE CASCADE,
    item      text NOT NULL REFERENCES items (id),
    qty       int NOT NULL CHECK (qty > 0),
    PRIMARY KEY (player_id, item)
);
