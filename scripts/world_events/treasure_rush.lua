-- world_events/treasure_rush.lua: chests appear around the region; a player standing within
-- REACH of one picks it up (action {kind = "pick", chest = i, x = X, y = Y}: where the player
-- is, as the live world says). The rush ends when every chest is taken or the time is out.
--
-- params: {chests = 10 (1-100), duration_s = 600}
local floor = math.floor
local type = type


local _M = {}

_M.title = "Treasure rush"
_M.REACH = 5


function _M.validate(params)
    local n = params.chests
    if n ~= nil and (type(n) ~= "number" or n < 1 or n > 100 or n ~= floor(n)) then
        return nil, "params.chests: a whole number from 1 to 100"
    end
    return true
end


function _M.on_start(ev, ctx)
    local chests = {}
    for i = 1, ev.params.chests or 10 do
        chests[i] = { x = ctx.random(50, 950), y = ctx.random(50, 950) }
    end
    ev.data = { chests = chests, left = #chests, found = {} }
end


function _M.on_player_action(ev, ctx, player, action)
    if type(action) ~= "table" or action.kind ~= "pick" then
        return
    end
    local c = ev.data.chests[action.chest]
    if not c or c.taken_by or type(action.x) ~= "number" or type(action.y) ~= "number" then
        return
    end
    local dx, dy = action.x - c.x, action.y - c.y
    if dx * dx + dy * dy > _M.REACH * _M.REACH then
        return
    end
    c.taken_by = player
    ev.data.left = ev.data.left - 1
    ev.data.found[#ev.data.found + 1] = { chest = action.chest, player = player }
    if ev.data.left == 0 then
        ctx.finish({ outcome = "all_found" })
    end
end


return _M
