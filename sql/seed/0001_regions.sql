-- seed/0001_regions.sql: four regions tiling the 2000 x 2000 world, 1000 x 1000 each.
-- Idempotent: a row that differs is brought back to this file; other rows are left alone.

INSERT INTO regions (id, name, x0, y0, x1, y1) VALUES
    ('r1', 'Greenvale',  0,    0,    1000, 1000),
    ('r2', 'Ironridge',  1000, 0,    2000, 1000),
    ('r3', 'Mistmarsh',  0,    1000, 1000, 2000),
    ('r4', 'Emberwaste', 1000, 1000, 2000, 2000)
ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, x0 = EXCLUDED.x0, y0 = EXCLUDED.y0,
        x1 = EXCLUDED.x1, y1 = EXCLUDED.y1
    WHERE (regions.name, regions.x0, regions.y0, regions.x1, regions.y1)
          IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.x0, EXCLUDED.y0, EXCLUDED.x1, EXCLUDED.y1);
