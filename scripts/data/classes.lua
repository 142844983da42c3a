-- data/classes.lua: the playable classes and their base stats (level 1), and what each level
-- adds. Tables only: scripts/rules/player.lua turns them into a player's stats.
--
-- To add a class: add an entry here (every stat named in the others, a growth for each) and
-- a spec line in spec/unit/rules/player_spec.lua. docs/designers.md walks through it.
return {
    warrior = {
        name = "Warrior",
        base = { hp = 120, mp = 20, str = 12, int = 3, dex = 6, speed = 5.0 },
        growth = { hp = 14, mp = 2, str = 2, int = 0.2, dex = 0.6 },
    },
    mage = {
        name = "Mage",
        base = { hp = 70, mp = 120, str = 4, int = 13, dex = 6, speed = 5.0 },
        growth = { hp = 7, mp = 12, str = 0.3, int = 2, dex = 0.5 },
    },
    ranger = {
        name = "Ranger",
        base = { hp = 90, mp = 50, str = 7, int = 6, dex = 12, speed = 6.0 },
        growth = { hp = 10, mp = 5, str = 1, int = 0.5, dex = 1.8 },
    },
    cleric = {
        name = "Cleric",
        base = { hp = 100, mp = 90, str = 6, int = 10, dex = 5, speed = 5.0 },
        growth = { hp = 11, mp = 9, str = 0.6, int = 1.4, dex = 0.4 },
    },
}
