-- rules/world_triggers.lua: world events that game conditions start. Pure: the region's owner
-- calls check() every CHECK_EVERY seconds with what it sees, and makes the events it returns.
--
-- state = { region = id, online = players in the region, now = epoch seconds,
--           active = { [type] = true } (running or scheduled there),
--           last = { [type] = epoch seconds the last one of that type started there } }
-- Returns a list of { type, params } to start now (often empty).
local _M = {}

_M.CHECK_EVERY = 10

-- A crowd draws an invasion: at least CROWD players in a region, none running, and none in
-- the last COOLDOWN seconds. Its strength grows with the crowd.
_M.CROWD = 50
_M.COOLDOWN = 2 * 3600


function _M.check(state)
    local out = {}
    if state.online >= _M.CROWD and not state.active.invasion and
       state.now - (state.last.invasion or -math.huge) >= _M.COOLDOWN then
        out[#out + 1] = { type = "invasion",
                          params = { hp = math.min(1000000, 100 * state.online),
                                     duration_s = 900 } }
    end
    return out
end


return _M
