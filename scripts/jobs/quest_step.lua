-- jobs/quest_step.lua: a quest step reached advances the player's quest to it (never back: a
-- step reported late, after a later one, changes nothing).
local _M = {}


function _M.effect(e)
    return { quests = { [e.data.quest] = e.data.step } }
end


return _M
