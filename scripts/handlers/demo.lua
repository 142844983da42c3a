-- handlers/demo.lua: a sample player document built from a Lua table on every request.
-- It is the Lua route of the benchmark (tools/bench), served the same way by the peer.
local time = require "mmo.time"


local _M = {}


function _M.player(req)
    return 200, {
        id = 42,
        name = "Aria",
        class = "mage",
        level = 3,
        xp = 1200,
        stats = { hp = 90, mp = 140, str = 5, int = 14, dex = 7, wis = 12 },
        position = { region = "r1", x = 120.5, y = 88.0 },
        guild = "Night Owls",
        buffs = { "haste", "shield" },
        created_at = "2026-11-28T10:00:00Z",
        served_at = time.now(),
        request_id = req.id,
    }
end


return _M
