-- 0002_world.sql: the regions of the world, rectangles [x0, x1) x [y0, y1) in world units.
-- Each region has one owner node at a time (a lease in Redis, not here).

CREATE TABLE regions (
    id   text PRIMARY KEY,
    name text NOT NULL,
    x0   double precision NOT NULL,
    y0   double precision NOT NULL,
    x1   double precision NOT NULL,
    y1   double precision NOT NULL,
    CHECK (x0 < x1 AND y0 < y1)
);
