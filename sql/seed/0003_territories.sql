-- seed/0003_territories.sql: four territories per region, 100 x 100 each, around the centre.
-- Idempotent: shapes and names are brought back to this file; who owns what is left alone.

INSERT INTO territories (id, region, name, x0, y0, x1, y1) VALUES
    ('t-r1-mill',    'r1', 'Old Mill',        350,  350,  450,  450),
    ('t-r1-ford',    'r1', 'Willow Ford',     550,  350,  650,  450),
    ('t-r1-hill',    'r1', 'Beacon Hill',     350,  550,  450,  650),
    ('t-r1-grove',   'r1', 'Elder Grove',     550,  550,  650,  650),
    ('t-r2-mine',    'r2', 'Deep Mine',       1350, 350,  1450, 450),
    ('t-r2-forge',   'r2', 'Giant Forge',     1550, 350,  1650, 450),
    ('t-r2-pass',    'r2', 'Frost Pass',      1350, 550,  1450, 650),
    ('t-r2-keep',    'r2', 'Iron Keep',       1550, 550,  1650, 650),
    ('t-r3-bog',     'r3', 'Sunken Bog',      350,  1350, 450,  1450),
    ('t-r3-tower',   'r3', 'Drowned Tower',   550,  1350, 650,  1450),
    ('t-r3-isle',    'r3', 'Heron Isle',      350,  1550, 450,  1650),
    ('t-r3-shrine',  'r3', 'Moss Shrine',     550,  1550, 650,  1650),
    ('t-r4-crater',  'r4', 'Ash Crater',      1350, 1350, 1450, 1450),
    ('t-r4-spire',   'r4', 'Cinder Spire',    1550, 1350, 1650, 1450),
    ('t-r4-oasis',   'r4', 'Last Oasis',      1350, 1550, 1450, 1650),
    ('t-r4-gate',    'r4', 'Ember Gate',      1550, 1550, 1650, 1650)
ON CONFLICT (id) DO UPDATE
    SET region = EXCLUDED.region, name = EXCLUDED.name, x0 = EXCLUDED.x0, y0 = EXCLUDED.y0,
        x1 = EXCLUDED.x1, y1 = EXCLUDED.y1
    WHERE (territories.region, territories.name, territories.x0, territories.y0, territories.x1,
           territories.y1)
          IS DISTINCT FROM (EXCLUDED.region, EXCLUDED.name, EXCLUDED.x0, EXCLUDED.y0,
                            EXCLUDED.x1, EXCLUDED.y1);
