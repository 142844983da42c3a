-- world_events/double_xp.lua: for an hour (by default) experience in the region is worth
-- `multiplier` times as much. Rules that award experience ask lib.world_events.xp_multiplier
-- (region), which reads the active events' data.
--
-- params: {multiplier = 2 (1-10), duration_s = 3600}
local type = type


local _M = {}

_M.title = "Double XP"


function _M.validate(params)
    local m = params.multiplier
    if m ~= nil and (type(m) ~= "number" or m < 1 or m > 10) then
        return nil, "params.multiplier: a number from 1 to 10"
    end
    return true
end


function _M.duration(params)
    return params.duration_s or 3600
end


function _M.on_start(ev)
    ev.data = { multiplier = ev.params.multiplier or 2 }
end


return _M
