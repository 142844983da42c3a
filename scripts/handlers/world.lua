-- handlers/world.lua: the world's regions and who owns them (API.md "World").
--
--   GET /api/world/regions      every region with its bounds, its owner node and players online
--   GET /api/world/territories  every territory: owner guild, capture progress, contested
--   GET /api/admin/world/ticks  how long the world's ticks take (moderator)
--   timer world.leases          take and renew region leases (lib/leases.lua)
--   timer world.tick            the tick of every region this node owns (territories)
--   on_stop world.stop          give the leases back when the node stops
local http = require "lib.http"
local leases = require "lib.leases"
local log = require "mmo.log"
local regions = require "lib.regions"
local territories = require "lib.territories"
local time = require "mmo.time"
local world = require "mmo.world"

local json = require "mmo.json"

local floor = math.floor
local ipairs = ipairs
local min = math.min
local sort = table.sort
local tostring = tostring


local _M = {}

local last_tick = -math.huge
local renew_every = world.settings().lease_ms / 5000 -- seconds


-- timer (routes.lua, every 0.5 s): renew when a fifth of the lease has passed
function _M.leases()
    local now = time.monotonic()
    if now - last_tick < renew_every then
        return
    end
    last_tick = now
    local taken, err = leases.tick(regions.all())
    if not taken then
        log.warn("region leases not renewed: " .. tostring(err))
        return
    end
    if #taken > 0 then
        log.info("region leases taken", { regions = json.array(taken), holder = leases.self() })
    end
end


_M.SLOW_TICK_MS = 20 -- a tick longer than this is logged (at most once a minute)
_M.MAX_DT = 1        -- seconds: after a stall, a tick counts at most this much game time

local last_tick_at
local took_us, took_next, ticks = {}, 1, 0 -- the last 1,000 tick durations, a ring
local slow_logged_at = -math.huge


-- timer (routes.lua: its period is the tick rate): every region this node owns
function _M.tick()
    local all = regions.all() -- read from the database once, before the first tick is timed
    local now = time.monotonic()
    local dt = last_tick_at and min(now - last_tick_at, _M.MAX_DT) or 0
    last_tick_at = now
    for _, r in ipairs(all) do
        if leases.mine(r.id) then
            local _, err = territories.tick(r.id, dt, now)
            if err then
                log.warn("territories of " .. r.id .. " not ticked: " .. tostring(err))
            end
        elseif territories.live(r.id) then
            territories.forget(r.id) -- another node owns it now
        end
    end
    local us = (time.monotonic() - now) * 1e6
    took_us[took_next], took_next, ticks = us, took_next % 1000 + 1, ticks + 1
    if us > _M.SLOW_TICK_MS * 1000 and now - slow_logged_at > 60 then
        slow_logged_at = now
        log.warn("slow world tick", { ms = floor(us / 100) / 10 })
    end
end


-- GET /api/admin/world/ticks: the last 1,000 ticks' durations
function _M.ticks()
    local sorted = {}
    for i, v in ipairs(took_us) do
        sorted[i] = v
    end
    sort(sorted)
    local function q(p)
        return #sorted > 0 and floor(sorted[math.max(1, math.ceil(#sorted * p))]) or 0
    end
    return 200, { ticks = ticks, window = #sorted, p50_us = q(0.5), p99_us = q(0.99),
                  max_us = q(1), captures = territories.captures }
end


-- GET /api/world/territories
function _M.territories()
    local list, err = territories.all()
    if not list then
        http.check(nil, err)
    end
    return 200, { territories = list }
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
