-- world_events/invasion.lua: a warlord invades the region. Players strike it (action
-- {kind = "strike", damage = n}, damage 1-100 a blow); the region wins when its health falls
-- to 0 before the time is out. Every player's damage is kept: the top five are announced.
--
-- params: {hp = 1000 (100-1000000), duration_s = 900}
local floor = math.floor
local pairs = pairs
local sort = table.sort
local tostring = tostring
local type = type


local _M = {}

_M.title = "Invasion"


function _M.validate(params)
    local hp = params.hp
    if hp ~= nil and (type(hp) ~= "number" or hp < 100 or hp > 1000000 or hp ~= floor(hp)) then
        return nil, "params.hp: a whole number from 100 to 1000000"
    end
    return true
end


local function top(data)
    local list = {}
    for who, dmg in pairs(data.damage) do
        list[#list + 1] = { player = who, damage = dmg }
    end
    sort(list, function(a, b)
        if a.damage ~= b.damage then
            return a.damage > b.damage
        end
        return a.player < b.player
    end)
    local out = {}
    for i = 1, math.min(5, #list) do
        out[i] = list[i]
    end
    return out
end


function _M.on_start(ev, ctx)
    local hp = ev.params.hp or 1000
    ev.data = { hp = hp, max_hp = hp, damage = {}, strikes = 0,
                target = { x = ctx.random(0, 1000), y = ctx.random(0, 1000) } }
end


function _M.on_player_action(ev, ctx, player, action)
    if type(action) ~= "table" or action.kind ~= "strike" then
        return
    end
    local dmg = action.damage
    if type(dmg) ~= "number" or dmg ~= dmg or dmg < 1 then
        return
    end
    dmg = floor(math.min(dmg, 100))
    local d = ev.data
    local who = tostring(player)
    d.damage[who] = (d.damage[who] or 0) + dmg
    d.strikes = d.strikes + 1
    d.hp = math.max(0, d.hp - dmg)
    if d.hp == 0 then
        ctx.finish({ outcome = "victory", top = top(d) })
    end
end


function _M.on_end(ev, _, reason)
    if reason == "time" then
        ev.result = { outcome = "defeat", hp_left = ev.data.hp, top = top(ev.data) }
    end
end


return _M
