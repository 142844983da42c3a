-- tools/bench/wrkutil.lua -- what the wrk scripts of tools/bench share (events.lua, trades.lua,
-- soak.lua). A script finds it beside itself:
--
--   package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" ..
--                  package.path
--   local wrkutil = require "wrkutil"

local _M = {}

-- A setup(thread) for wrk: gives each thread its index (the global "index" in its state,
-- from 1) and appends it to the list THREADS (for done()).
function _M.numbering(threads)
    return function(thread)
        threads[#threads + 1] = thread
        thread:set("index", #threads)
    end
end

-- The accounts of the file named by environment variable VAR: a list of {id = player id,
-- token = access token}, from its lines "<player id> <access token>"; at least MIN of them.
function _M.accounts(var, min)
    local file = os.getenv(var)
    assert(file, var .. " is not set")
    local list = {}
    for line in io.lines(file) do
        local id, token = line:match("^(%d+)%s+(%S+)%s*$")
        if id then
            list[#list + 1] = { id = id, token = token }
        end
    end
    assert(#list >= (min or 1), var .. " needs at least " .. (min or 1) .. " accounts")
    return list
end

-- In done(): the per-thread table NAME (key -> count) of every thread summed, written a line
-- a key in key order with FORMAT (string.format: the key, then the count).
function _M.write_sums(threads, name, format)
    local sum, keys = {}, {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get(name) or {}) do
            sum[k] = (sum[k] or 0) + v
        end
    end
    for k in pairs(sum) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
        io.write(string.format(format, k, sum[k]))
    end
end

return _M
