-- handlers/world.lua: the world's regions and who owns them (API.md "World").
--
--   GET /api/world/regions      every region with its bounds, its owner node and players online
--   GET /api/world/territories  every territory: owner guild, capture progress, contested
--   GET /api/admin/world/ticks  how long the world's ticks take (moderator)
--   GET /api/world/events       world events: coming, running, and ended within the hour
--   POST /api/admin/world/events {type, region, params, starts_at}  (designer)
--   timer world.leases          take and renew region leases (lib/leases.lua)
--   timer world.tick            the tick of every region this node owns (territories)
--   on_stop world.stop          give the leases back when the node stops
local audit = require "lib.audit"
local http = require "lib.http"
local leases = require "lib.leases"
local log = require "mmo.log"
local regions = require "lib.regions"
local territories = require "lib.territories"
local world_events = require "lib.world_events"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"

local json = require "mmo.json"

local floor = math.floor
local ipairs = ipairs
local next = next
local tonumber = tonumber
local type = type
local min = math.min
local sort = table.sort
local tostring = tostring


local _M = {}

-- what survives a reload of the scripts (docs/scripting.md "State that survives a reload")
local S = state.global("world.timers", { version = 1, init = function()
    return {
        last_renew = -math.huge,   -- when the leases were last renewed (monotonic)
        last_tick_at = nil,        -- when the last tick began
        gauges_at = -math.huge,
        took_us = {}, took_no = {}, took_next = 1, ticks = 0, -- the last 1,000 ticks, a ring
        slow_logged_at = -math.huge,
    }
end })
local renew_every = world.settings().lease_ms / 5000 -- seconds


-- timer (routes.lua, every 0.5 s): renew when a fifth of the lease has passed
function _M.leases()
    local now = time.monotonic()
    if now - S.last_renew < renew_every then
        return
    end
    S.last_renew = now
    local taken, released = leases.tick(regions.all())
    if not taken then
        log.warn("region leases not renewed: " .. tostring(released))
        return
    end
    if #taken > 0 then
        log.info("region leases taken", { regions = json.array(taken), holder = leases.self() })
    end
    if #released > 0 then
        log.info("region leases handed over to the nodes they are now assigned to",
                 { regions = json.array(released), holder = leases.self() })
    end
end


_M.SLOW_TICK_MS = 20 -- a tick longer than this is logged (at most once a minute)
_M.MAX_DT = 1        -- seconds: after a stall, a tick counts at most this much game time

local ONLINE = require("mmo.metrics").gauge("mmo_players_online",
    "Players in the world on this node, by region", { "region" })
local EVENTS_ACTIVE = require("mmo.metrics").gauge("mmo_world_events_active",
    "World events running on this node (the regions it owns), by region", { "region" })



-- timer (routes.lua: its period is the tick rate): every region this node owns
function _M.tick()
    local all = regions.all() -- read from the database once, before the first tick is timed
    local now = time.monotonic()
    local dt = S.last_tick_at and min(now - S.last_tick_at, _M.MAX_DT) or 0
    S.last_tick_at = now
    local owned = {}
    for _, r in ipairs(all) do
        if leases.mine(r.id) then
            owned[r.id] = true
            local _, err = territories.tick(r.id, dt, now)
            if err then
                log.warn("territories of " .. r.id .. " not ticked: " .. tostring(err))
            end
        elseif territories.live(r.id) then
            territories.forget(r.id) -- another node owns it now
        end
    end
    world_events.tick(owned, dt, now)
    if now - S.gauges_at >= 1 then
        S.gauges_at = now
        local active = {}
        for _, ev in ipairs(world_events.runner:list()) do
            if ev.state == "active" then
                active[ev.region] = (active[ev.region] or 0) + 1
            end
        end
        for _, r in ipairs(all) do
            ONLINE:set(world.online(r.id), r.id)
            EVENTS_ACTIVE:set(active[r.id] or 0, r.id)
        end
    end
    local us = (time.monotonic() - now) * 1e6
    local n = S.ticks + 1
    S.ticks = n
    S.took_us[S.took_next], S.took_no[S.took_next], S.took_next = us, n, S.took_next % 1000 + 1
    if us > _M.SLOW_TICK_MS * 1000 and now - S.slow_logged_at > 60 then
        S.slow_logged_at = now
        log.warn("slow world tick", { ms = floor(us / 100) / 10 })
    end
end


-- GET /api/admin/world/ticks?since=N: the durations of the last 1,000 ticks (of those after
-- tick number N: a benchmark reads `ticks` when it begins measuring)
function _M.ticks(req)
    local since = tonumber(req.query.since or 0)
    if not since or since < 0 then
        http.fail(422, "validation_failed", "since: a tick number")
    end
    local sorted = {}
    local took_no = S.took_no
    for i, v in ipairs(S.took_us) do
        if took_no[i] > since then
            sorted[#sorted + 1] = v
        end
    end
    sort(sorted)
    local function q(p)
        return #sorted > 0 and floor(sorted[math.max(1, math.ceil(#sorted * p))]) or 0
    end
    return 200, { ticks = S.ticks, window = #sorted, p50_us = q(0.5), p99_us = q(0.99),
                  max_us = q(1), captures = territories.captures() }
end


-- GET /api/world/territories
function _M.territories()
    local list, err = territories.all()
    if not list then
        http.check(nil, err)
    end
    return 200, { territories = list }
end


-- GET /api/world/events?limit=
function _M.events(req)
    local limit = tonumber(req.query.limit or 100)
    if not limit or limit < 1 or limit > 500 or limit ~= floor(limit) then
        http.fail(422, "validation_failed", "limit: a whole number from 1 to 500")
    end
    local rows = http.check(world_events.recent(limit))
    local out = json.array({})
    for i, ev in ipairs(rows) do
        out[i] = world_events.document(ev)
    end
    return 200, { events = out }
end


-- POST /api/admin/world/events {type, region, params, starts_at}
function _M.create_event(req)
    local body = req.body
    if type(body) ~= "table" then
        http.fail(422, "validation_failed", "body: must be an object")
    end
    if type(body.type) ~= "string" or not world_events.kind(body.type) then
        http.fail(422, "validation_failed", "type: a kind of scripts/world_events/")
    end
    local region = type(body.region) == "string" and regions.get(body.region)
    if not region then
        http.fail(422, "validation_failed", "region: not a region of the world")
    end
    local params = body.params == nil and {} or body.params
    if type(params) ~= "table" or (next(params) ~= nil and params[1] ~= nil) then
        http.fail(422, "validation_failed", "params: must be an object")
    end
    local d = params.duration_s
    if d ~= nil and (type(d) ~= "number" or d < 1 or d > 7 * 86400) then
        http.fail(422, "validation_failed", "params.duration_s: 1 to 604800 seconds")
    end
    local kind = world_events.kind(body.type)
    if kind.validate then
        local ok, msg = kind.validate(params)
        if not ok then
            http.fail(422, "validation_failed", msg)
        end
    end
    local now = time.now()
    local starts_at = body.starts_at == nil and now or body.starts_at
    if type(starts_at) ~= "number" or starts_at ~= starts_at or starts_at < now - 60 or
       starts_at > now + 30 * 86400 then
        http.fail(422, "validation_failed", "starts_at: epoch seconds, from now to 30 days ahead")
    end
    local ev = http.check(world_events.create(body.type, region.id, params, starts_at,
                                              req.account.id, leases.mine(region.id)))
    audit.write(req, "world_event.create", ev.id, { type = ev.type, region = ev.region })
    return 201, world_events.document(ev)
end


-- on_stop (routes.lua): the leases go back at once, so another node need not wait them out
function _M.stop()
    local ok, err = leases.release_all(regions.all())
    if not ok then
        log.warn("region leases not released: " .. tostring(err))
    end
end


-- GET /api/world/regions
function _M.regions()
    local out = json.array({})
    for i, r in ipairs(regions.all()) do
        out[i] = {
            id = r.id, name = r.name,
            bounds = { x0 = r.x0, y0 = r.y0, x1 = r.x1, y1 = r.y1 },
            owner_node = leases.node_of(leases.holder(r.id)) or json.null,
            online = world.online(r.id),
        }
    end
    return 200, { regions = out }
end


return _M
