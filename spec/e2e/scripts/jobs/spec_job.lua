-- jobs/spec_job.lua (end-to-end specs only): counts its runs in Redis under payload.counter,
-- with the time of the last; raises while payload.fail is true.
local cache = require "mmo.cache"
local time = require "mmo.time"

local _M = {}


function _M.run(payload)
    if payload.fail then
        error("spec_job told to fail", 0)
    end
    cache.incr(payload.counter)
    cache.set(payload.counter .. ":at", tostring(time.now()), 600000)
end


return _M
