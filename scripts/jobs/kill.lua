-- jobs/kill.lua: a monster killed gives experience, 10 per level of the monster. Pure: the
-- pipeline (lib/pipeline.lua) sums the effects of a batch and writes them with the events'
-- ids in one transaction.
local _M = {}

_M.XP_PER_LEVEL = 10


function _M.effect(e)
    return { xp = _M.XP_PER_LEVEL * e.data.level }
end


return _M
