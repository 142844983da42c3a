-- seed/0002_items.sql: the starting item catalogue.
-- Idempotent: a row that differs is brought back to this file; other rows are left alone.
--
-- effects keys, read by scripts/rules:
--   heal, mana      points restored when used
--   teleport        {region, x, y}: where using it takes the player
--   buff            {stat, amount, seconds}: a timed bonus (amount is a fraction for speed)
--   atk, def, int   bonuses while equipped

INSERT INTO items (id, name, kind, stack, effects) VALUES
    ('potion_small',    'Small Healing Potion', 'consumable', 20, '{"heal": 50}'),
    ('potion_large',    'Large Healing Potion', 'consumable', 20, '{"heal": 200}'),
    ('elixir_mana',     'Mana Elixir',          'consumable', 20, '{"mana": 100}'),
    ('scroll_teleport', 'Scroll of Returning',  'scroll',     10,
        '{"teleport": {"region": "r1", "x": 500, "y": 500}}'),
    ('scroll_haste',    'Scroll of Haste',      'scroll',     10,
        '{"buff": {"stat": "speed", "amount": 0.25, "seconds": 60}}'),
    ('sword_iron',      'Iron Sword',           'weapon',     1,  '{"atk": 12}'),
    ('staff_oak',       'Oak Staff',            'weapon',     1,  '{"atk": 4, "int": 6}'),
    ('armour_leather',  'Leather Armour',       'armour',     1,  '{"def": 6}'),
    ('armour_chain',    'Chainmail',            'armour',     1,  '{"def": 14}'),
    ('ore_iron',        'Iron Ore',             'material',   99, '{}'),
    ('herb_moonleaf',   'Moonleaf',             'material',   99, '{}'),
    ('gold',            'Gold Coin',            'currency',   1000000, '{}')
ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, kind = EXCLUDED.kind, stack = EXCLUDED.stack,
        effects = EXCLUDED.effects
    WHERE (items.name, items.kind, items.stack, items.effects)
          IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.stack, EXCLUDED.effects);
