-- jobs/pvp_kill.lua: a player killed another. No xp or items of its own: it tells the mods
-- (docs/modding.md), once the event is committed, as the game event player.killed
-- {killer_id, victim_id, kill (the event's key)}; the bounty mod (scripts/mods/bounty) pays on it.
local _M = {}


function _M.effect(e)
    if e.data.victim == e.player_id then
        return {} -- no one kills themselves for a bounty
    end
    return { events = { { "player.killed", { killer_id = e.player_id, victim_id = e.data.victim,
                                              kill = e.account_id .. ":" .. e.id } } } }
end


return _M
