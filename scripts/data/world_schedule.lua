-- data/world_schedule.lua: world events that start by themselves, edited by designers.
--
-- Each entry starts an event of `type` (scripts/world_events/<type>.lua) in `region` whenever
-- (UTC epoch seconds - offset_s) is a multiple of every_s (at least 60): every_s = 86400 with
-- offset_s = 72000 is "every day at 20:00 UTC"; every_s = 3600, offset_s = 1800 is "every hour
-- at half past". `name` must be unique: with the start time it names the occurrence, so that
-- each is made once, whichever node makes it. The event lasts as its kind says (params.duration_s).
return {
    { name = "greenvale-evening-xp", type = "double_xp", region = "r1",
      every_s = 86400, offset_s = 72000, params = { multiplier = 2, duration_s = 3600 } },
    { name = "ironridge-raid", type = "invasion", region = "r2",
      every_s = 21600, offset_s = 3600, params = { hp = 5000, duration_s = 900 } },
}
