-- handlers/world.lua: the world's regions and who owns them (API.md "World").
--
--   GET /api/world/regions   every region with its bounds, its owner node and players online
--   timer world.leases       take and renew region leases (lib/leases.lua)
--   on_stop world.stop       give the leases back when the node stops
local leases = require "lib.leases"
local log = require "mmo.log"
local regions = require "lib.regions"
local time = require "mmo.time"
local world = require "mmo.world"

local json = require "mmo.json"

local ipairs = ipairs
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
