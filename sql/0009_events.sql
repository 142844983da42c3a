-- 0009_events.sql: game events processed (the pipeline, lib/pipeline.lua).
--
-- Every database gets it: an event's effects land on its player's shard, in one transaction
-- with the event's row here, so an event redelivered after a crash (before its XACK) finds its
-- row and has no second effect. The key is the client's id, scoped by account.

CREATE TABLE processed_events (
    account_id   bigint NOT NULL,
    id           text NOT NULL,
    type         text NOT NULL,
    player_id    bigint NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);

CREATE INDEX processed_events_at_idx ON processed_events (processed_at);
