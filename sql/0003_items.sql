-- 0003_items.sql: the item catalogue. Inventories refer to items by id.
--
-- stack is how many fit in one inventory slot (1 for equipment). effects is what using or
-- equipping the item does, read by scripts/rules (e.g. {"heal": 50}, {"atk": 12}).

CREATE TABLE items (
    id      text PRIMARY KEY,
    name    text NOT NULL,
    kind    text NOT NULL,
    stack   int NOT NULL CHECK (stack > 0),
    effects jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(effects) = 'object')
);
