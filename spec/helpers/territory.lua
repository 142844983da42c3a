-- helpers/territory.lua: what the territory specs set up. The real rules/territory.lua with its
-- capture rate raised (a copy in a scripts dir searched first), so a capture takes seconds, not
-- minutes; and a territory of r1 just east of its centre, where the bots of POST
-- /api/admin/bots stand around (they walk in over WebSocket).
local server = require "helpers.server"


local _M = {}


-- A scripts path: a temporary dir holding the fast rule, then the specs' scripts and the real
-- ones; and the dir (the caller removes it with server.rm_rf).
function _M.fast_rules(rate)
    local dir = server.tmpdir()
    local rule = server.read_file(server.ROOT .. "/scripts/rules/territory.lua")
    local fast, n = rule:gsub("_M%.RATE_PER_MEMBER_S = [%d%.]+",
                              "_M.RATE_PER_MEMBER_S = " .. tostring(rate))
    assert(n == 1, "rules/territory.lua: RATE_PER_MEMBER_S not found")
    server.write(dir .. "/rules/territory.lua", fast)
    return dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" .. server.ROOT .. "/scripts", dir
end


-- A territory (508, 490)-(528, 510) of r1 named name, with an id starting with prefix (those
-- of an earlier run are removed first); its id.
function _M.square(prefix, name)
    local tid = prefix .. server.letters(6)
    _M.clear(prefix)
    local out = server.psql("insert into territories (id, region, name, x0, y0, x1, y1) " ..
                            "values ('" .. tid .. "', 'r1', '" .. name .. "', 508, 490, 528, 510)")
    assert(out == "", out)
    return tid
end


function _M.clear(prefix)
    server.psql("delete from territories where id like '" .. prefix .. "%'")
end


return _M
