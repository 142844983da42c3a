-- 0007_territories.sql: territories inside regions, which guilds capture (rules/territory.lua).
--
-- Rows live in the main database. The region's owner node keeps the capture state in memory
-- and writes it here every few seconds, and at once (in one transaction with the audit entry)
-- when a territory changes hands.

CREATE TABLE territories (
    id              text PRIMARY KEY,
    region          text NOT NULL REFERENCES regions (id),
    name            text NOT NULL,
    x0              double precision NOT NULL,
    y0              double precision NOT NULL,
    x1              double precision NOT NULL,
    y1              double precision NOT NULL,
    owner_guild     bigint,
    capturing_guild bigint,
    progress        double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    changed_at      timestamptz,                       -- when it last changed hands
    CHECK (x0 < x1 AND y0 < y1)
);

CREATE INDEX territories_region_idx ON territories (region, id);
