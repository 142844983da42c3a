-- handlers/mod_events.lua: what the game does with the events mods emit (mmo.events.on,
-- docs/modding.md). A mod's word is checked like a client's: the bounty mod may ask for gold,
-- within BOUNTY_MAX, once per kill (the grant's key), and nothing else.
local events = require "mmo.events"
local log = require "mmo.log"
local queue = require "mmo.queue"

local type = type
local tostring = tostring


local _M = {}

_M.BOUNTY_MAX = 1000 -- gold


-- bounty.paid {player_id, victim_id, item, qty, kill}: grant the gold (a queued job, once)
function _M.bounty_paid(p, mod)
    local qty = p.qty
    if mod ~= "bounty" or type(p.player_id) ~= "number" or p.item ~= "gold" or
        type(qty) ~= "number" or qty < 1 or qty > _M.BOUNTY_MAX or qty % 1 ~= 0 or
        type(p.kill) ~= "string" then
        log.warn("bounty.paid refused", { mod = mod, player_id = tostring(p.player_id),
                                          item = tostring(p.item), qty = tostring(qty) })
        return
    end
    local ok, err = queue.push("grant", { player_id = p.player_id, item = "gold", qty = qty },
                               { key = "bounty:" .. p.kill })
    if ok == nil then
        log.error("bounty not granted: " .. tostring(err), { player_id = p.player_id })
    end
end

events.on("bounty.paid", _M.bounty_paid)


return _M
