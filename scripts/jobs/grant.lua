-- jobs/grant.lua: give a player items (mmo.queue.push("grant", {player_id, item, qty}, ...)),
-- e.g. a daily reward pushed with key = "daily:<player>:<day>" so that it is given once.
local players = require "lib.players"

local _M = {}


function _M.run(p)
    local rows, err = players.db_of(p.player_id).query(
        "insert into inventory (player_id, item, qty) select $1, $2, $3 " ..
        "where exists (select 1 from players where id = $1) " ..
        "on conflict (player_id, item) do update set qty = inventory.qty + excluded.qty " ..
        "returning player_id",
        p.player_id, p.item, p.qty)
    if not rows then
        error("grant: " .. tostring(err), 0)
    end
    if #rows > 0 then -- (a player deleted meanwhile got nothing)
        players.items_created("grant", p.qty)
    end
end

return _M
