-- lib/leases.lua: which node owns each region. A lease is a Redis key per region,
-- "region:owner:<id>" = "<node id>/<instance>", set with PX lease_ms (config.lua world.lease_ms)
-- when nobody holds it, renewed by its holder every lease_ms / 5, deleted by its holder when
-- the node stops. A node that dies stops renewing: its leases lapse after lease_ms and the
-- next node to try takes them. Take-or-renew and release are one script each, so that a node
-- never extends or deletes a lease another node took meanwhile.
--
-- The instance (random, per start of the scripts) tells two runs of the same node id apart:
-- a restarted node waits for its old leases to lapse like any other node.
local cache = require "mmo.cache"
local crypto = require "mmo.crypto"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"

local ipairs = ipairs
local type = type


local _M = {}

-- take when free, renew when ours: {1, holder} renewed, {2, holder} taken, {0, holder} not ours
_M.TAKE_OR_RENEW = [[
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, v}
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {2, ARGV[1]}
end
return {0, v}
]]

_M.RELEASE = [[
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
]]

local settings = world.settings()

-- kept across reloads (mmo.state): the holder name this node run uses must not change while
-- it holds leases
local S = state.global("leases", { version = 1, init = function()
    return {
        self = settings.node .. "/" .. crypto.random(6),
        known = {},      -- region id -> { holder = "<node>/<instance>" | nil, checked = time }
        generation = {}, -- region id -> how many times this node took its lease (safe handles)
    }
end })
local SELF = S.self


function _M.key(region)
    return "region:owner:" .. region
end


function _M.self()
    return SELF
end


-- The node id part of a holder ("node-1/Xy3..." -> "node-1").
function _M.node_of(holder)
    return holder and holder:match("^(.*)/[^/]*$") or nil
end


-- Take or renew the lease of every region; what Redis answered is remembered. Returns the
-- regions taken by this call (for the log), or nil, err when Redis did not answer.
function _M.tick(regions)
    local cmds = {}
    for i, r in ipairs(regions) do
        cmds[i] = { "EVAL", _M.TAKE_OR_RENEW, 1, _M.key(r.id), SELF, settings.lease_ms }
    end
    local res, err = cache.pipeline(cmds)
    if not res then
        return nil, err
    end
    local now, taken = time.monotonic(), {}
    for i, r in ipairs(regions) do
        local a = res[i]
        if type(a) == "table" and a[2] then
            S.known[r.id] = { holder = a[2], checked = now }
            if a[1] == 2 then
                taken[#taken + 1] = r.id
                S.generation[r.id] = (S.generation[r.id] or 0) + 1
            end
        end
    end
    return taken
end


-- Give back every lease this node holds (when it stops).
function _M.release_all(regions)
    local cmds = {}
    for _, r in ipairs(regions) do
        cmds[#cmds + 1] = { "EVAL", _M.RELEASE, 1, _M.key(r.id), SELF }
    end
    S.known = {}
    if #cmds > 0 then
        return cache.pipeline(cmds)
    end
    return true
end


-- The holder of region's lease as last seen, if that answer is younger than the lease (an
-- older one proves nothing: the lease may have lapsed since).
function _M.holder(region)
    local k = S.known[region]
    if k and time.monotonic() - k.checked < settings.lease_ms / 1000 then
        return k.holder
    end
    return nil
end


-- How many times this node took region's lease: a handle made before the last take is stale.
function _M.generation(region)
    return S.generation[region] or 0
end


-- Does this node own region now?
function _M.mine(region)
    return _M.holder(region) == SELF
end


return _M
