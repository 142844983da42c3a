-- 0010_quests.sql: how far each player is in each quest (game events of type quest_step).
-- Every database gets it; a player's rows live on its shard, next to its inventory.

CREATE TABLE player_quests (
    player_id  bigint NOT NULL REFERENCES players (id) ON DELETE CASCADE,
    quest      text NOT NULL,
    step       int NOT NULL CHECK (step >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (player_id, quest)
);
