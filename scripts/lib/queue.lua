-- lib/queue.lua: jobs for Lua (require "mmo.queue", which is this module).
--
--   queue.push(name, payload [, {delay = s, attempts = n, key = k}])
--       -> stream entry id (or "delayed") | false, "duplicate" | nil, err
--
-- A job runs scripts/jobs/<name>.lua's run(payload, ctx) in a node's consumer, on the same
-- stream, with the same retries (exponential backoff) and dead letters as game events
-- (lib/pipeline.lua): the pipeline and the jobs are one mechanism. `delay`: seconds before it
-- may run (kept in a sorted set, moved to the stream when due). `attempts`: tries before the
-- dead letters (default the pipeline's). `key`: an idempotency key: a second push with the
-- same key within KEY_TTL is refused ("duplicate"), so a retried caller makes one job. A job
-- runs at least once; one that must not repeat its effect keys it (as events do).
local json = require "mmo.json"
local time = require "mmo.time"

local floor = math.floor
local type = type


local _M = {}

_M.STREAM = "mmo:events"
_M.DELAYED = "mmo:jobs:delayed"
_M.KEYS = "mmo:jobs:key:"
-- The placement tag of the stream and every key that goes with it (the delayed jobs, the job
-- keys, the group, lib/pipeline.lua's dead letters): with several Redis instances they all live
-- on the one this tag is placed on, so a script may span them.
_M.AT = "stream:" .. _M.STREAM
local cache = require("mmo.cache").at(_M.AT)
_M.KEY_TTL = 86400
_M.MAX_PAYLOAD = 16384
_M.MAX_DELAY = 30 * 86400

-- one round trip: the key is claimed and the job queued together, or neither
local PUSH = [[
if ARGV[4] ~= '' and not redis.call('SET', KEYS[3] .. ARGV[4], '1', 'NX', 'EX', ARGV[5]) then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return 'delayed'
end
return redis.call('XADD', KEYS[1], '*', 'j', ARGV[1])
]]

-- due jobs from the delayed set to the stream, at most ARGV[2] of them: how many moved
local MOVE_DUE = [[
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, j in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'j', j)
  redis.call('ZREM', KEYS[2], j)
end
return #due
]]


function _M.push(name, payload, opts)
    opts = opts or {}
    if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_]*$") or #name > 40 then
        error("mmo.queue.push: name must be a job of scripts/jobs/ (a-z, 0-9, _)", 2)
    end
    local delay = opts.delay or 0
    if type(delay) ~= "number" or delay < 0 or delay > _M.MAX_DELAY or delay ~= delay then
        error("mmo.queue.push: delay must be 0 to " .. _M.MAX_DELAY .. " seconds", 2)
    end
    local attempts = opts.attempts
    if attempts ~= nil and (type(attempts) ~= "number" or attempts < 1 or attempts > 100 or
                            attempts ~= floor(attempts)) then
        error("mmo.queue.push: attempts must be a whole number from 1 to 100", 2)
    end
    local key = opts.key or ""
    if type(key) ~= "string" or #key > 200 then
        error("mmo.queue.push: key must be a string of at most 200 bytes", 2)
    end
    local body = json.encode({ name = name, payload = payload, attempts = attempts, key = key,
                               pushed = time.now(),
                               -- a unique member for the delayed set, also for equal jobs
                               n = delay > 0 and (time.now() .. ":" .. math.random()) or nil })
    if #body > _M.MAX_PAYLOAD then
        return nil, "too large"
    end
    local due = delay > 0 and floor((time.now() + delay) * 1000) or 0
    local r, err = cache.eval(PUSH, { _M.STREAM, _M.DELAYED, _M.KEYS },
                              { body, due, 1000000, key, _M.KEY_TTL })
    if r == nil then
        return nil, err
    end
    if r == 0 then
        return false, "duplicate"
    end
    return r
end


-- Move the delayed jobs that are due to the stream (lib/pipeline.lua calls it). Returns how
-- many moved, or nil, err.
function _M.move_due(max)
    return cache.eval(MOVE_DUE, { _M.STREAM, _M.DELAYED },
                      { floor(time.now() * 1000), max or 500, 1000000 })
end


return _M
