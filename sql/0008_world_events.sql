-- 0008_world_events.sql: world events (scripts/world_events/<type>.lua) and their lifecycle.
--
-- Rows live in the main database. The region's owner node runs the active ones and writes
-- their state and data back (on every change of state, and every few seconds while active),
-- so that a restarted node, or the next owner of the region, resumes them where they were.
-- schedule_key: set for events made by a schedule entry (scripts/data/world_schedule.lua),
-- one row per entry and start time, so that every node may try and only one row is made.

CREATE TABLE world_events (
    id           bigserial PRIMARY KEY,
    type         text NOT NULL,
    region       text NOT NULL REFERENCES regions (id),
    params       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    state        text NOT NULL CHECK (state IN ('scheduled', 'active', 'ended')),
    starts_at    double precision NOT NULL,               -- epoch seconds
    ends_at      double precision NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    result       jsonb,
    end_reason   text,
    created_by   bigint,                                  -- account; null: a schedule
    schedule_key text UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (starts_at < ends_at)
);

CREATE INDEX world_events_live_idx ON world_events (region, id) WHERE state <> 'ended';
CREATE INDEX world_events_recent_idx ON world_events (ends_at DESC);
