-- lib/vitals.lua: the node's vital signs over the last minutes, for the console's charts
-- (GET /api/admin/metrics). Every EVERY seconds (routes.lua's timer) a sample is taken from
-- the node's own metrics (mmo.metrics.read: the same numbers /metrics shows) and kept in a
-- ring of KEEP samples, which survives a script reload (mmo.state).
--
-- A sample: {at (epoch s), players (in the world, this node), connections (WebSocket),
-- requests_per_s (HTTP, over the interval), p99_ms (HTTP latency over the interval: the upper
-- bound of the bucket that holds the 99th percentile; null without requests), lua_errors (in
-- the interval), queue_lag (stream entries not yet read by the workers: a request's batch of
-- game events is one), loop_lag_ms (the event loop's lag, 99th percentile over the interval)}.
local json = require "mmo.json"
local metrics = require "mmo.metrics"
local state = require "mmo.state"
local time = require "mmo.time"

local ipairs = ipairs

local _M = {}

_M.EVERY = 5   -- seconds between samples (the timer in routes.lua)
_M.KEEP = 120  -- samples kept: 10 minutes

local S = state.global("vitals", { version = 1, init = function()
    return { ring = {}, last = nil }
end })


-- the p-quantile of the observations between two readings of a histogram (per-bucket counts),
-- as the upper bound of its bucket; nil when nothing was observed; past the last bound: +inf
-- (reported as the last bound)
local function quantile(now, before, p)
    if not now then
        return nil
    end
    local total = now.count - (before and before.count or 0)
    if total <= 0 then
        return nil
    end
    local want, seen = total * p, 0
    for i, b in ipairs(now.buckets) do
        seen = seen + b[2] - (before and before.buckets[i] and before.buckets[i][2] or 0)
        if seen >= want then
            return b[1]
        end
    end
    return now.buckets[#now.buckets] and now.buckets[#now.buckets][1] or nil
end


local function read_all()
    return {
        t = time.monotonic(),
        requests = metrics.read("mmo_http_requests_total"),
        latency = metrics.read("mmo_http_request_duration_seconds"),
        errors = metrics.read("mmo_lua_errors_total"),
        lag = metrics.read("mmo_event_loop_lag_seconds"),
        players = metrics.read("mmo_players_online"),
        conns = metrics.read("mmo_ws_connections"),
        queue = metrics.read("mmo_queue", "what", "lag"),
    }
end


local function value(r)
    return r and r.value or 0
end


-- timer: one more sample
function _M.sample()
    local now, before = read_all(), S.last
    S.last = now
    if not before then
        return -- the first reading only sets the base of the next interval
    end
    local dt = now.t - before.t
    local p99 = quantile(now.latency, before.latency, 0.99)
    local lag = quantile(now.lag, before.lag, 0.99)
    local ring = S.ring
    ring[#ring + 1] = {
        at = time.now(),
        players = value(now.players),
        connections = value(now.conns),
        requests_per_s = dt > 0 and (value(now.requests) - value(before.requests)) / dt or 0,
        p99_ms = p99 and p99 * 1000 or json.null,
        lua_errors = value(now.errors) - value(before.errors),
        queue_lag = value(now.queue),
        loop_lag_ms = lag and lag * 1000 or json.null,
    }
    while #ring > _M.KEEP do
        table.remove(ring, 1)
    end
end


-- the samples, oldest first
function _M.recent()
    local out = json.array({})
    for i, s in ipairs(S.ring) do
        out[i] = s
    end
    return { every_s = _M.EVERY, samples = out }
end


return _M
