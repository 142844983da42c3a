-- lib/leases.lua: which node owns each region. A lease is a Redis key per region,
-- "region:owner:<id>" = "<node id>/<instance>", set with PX lease_ms (config.lua world.lease_ms)
-- when nobody holds it, renewed by its holder every lease_ms / 5, deleted by its holder when
-- the node stops. A node that dies stops renewing: its leases lapse after lease_ms and the
-- next node to try takes them. Take-or-renew and release are one script each, so that a node
-- never extends or deletes a lease another node took meanwhile.
--
-- Regions are spread over the live nodes: every node says it is alive at each tick (a sorted
-- set, LIVE, scored by Redis' clock; a node not heard of for lease_ms is dropped), and all
-- compute the same assignment from the same list (assign: each region to the node that
-- prefers it most, by a hash of region and node id, floor or ceil of regions / nodes each). A
-- node takes and renews the regions assigned to it and hands back those it holds that are
-- now another's (a node that joined); it takes a region assigned elsewhere only when that
-- region has stayed free for a whole lease (its node does not take it), and then keeps it for
-- FALLBACK_LEASES leases before it lets that node try again. A node that stops
-- leaves the list and gives its leases back at once; one that dies is out of the list and its
-- leases lapse after lease_ms, and the others take its regions at their next tick.
--
-- The instance (random, per start of the scripts) tells two runs of the same node id apart:
-- a restarted node waits for its old leases to lapse like any other node.
local cache = require "mmo.cache"
local crypto = require "mmo.crypto"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"

local bit = require "bit"

local floor = math.floor
local ipairs = ipairs
local sort = table.sort
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

-- this node alive now (Redis' clock, in ms); those not heard of for ARGV[2] ms dropped; the
-- live holders returned. First the layout (KEYS[2]): the Redis instances the running nodes
-- place regions over (ARGV[3]); a node with another list is refused (LAYOUT <theirs>) and
-- does not join, so it takes and renews nothing; the running nodes keep the layout alive
-- (ARGV[4] ms), and it lapses once none is left.
_M.HEARTBEAT = [[
local cur = redis.call('GET', KEYS[2])
if cur and cur ~= ARGV[3] then
  return redis.error_reply('LAYOUT ' .. cur)
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
]]

-- leave the live list; the last live node to leave (those not heard of for ARGV[3] ms are
-- gone) takes its layout with it, so a new list may start at once
_M.LEAVE = [[
redis.call('ZREM', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1
]]

_M.LIVE = "nodes:live"
_M.LAYOUT = "nodes:layout"
_M.LAYOUT_LEASES = 3 -- the layout outlives the last heartbeat by this many leases
_M.FALLBACK_LEASES = 10 -- a region taken for a node that did not take it is kept this many leases

local settings = world.settings()

-- kept across reloads (mmo.state): the holder name this node run uses must not change while
-- it holds leases
local S = state.global("leases", { version = 1, init = function()
    return {
        self = settings.node .. "/" .. crypto.random(6),
        known = {},      -- region id -> { holder = "<node>/<instance>" | nil, checked = time }
        generation = {}, -- region id -> how many times this node took its lease (safe handles)
        free_since = {}, -- region id -> when this node first saw it free (monotonic)
        fallback = {},   -- region id -> until when this node keeps it for its absent node
    }
end })
S.free_since = S.free_since or {} -- (a state from before these: kept across a reload)
S.fallback = S.fallback or {}
local SELF = S.self


function _M.key(region)
    return "region:owner:" .. region
end


-- The Redis instances regions are placed over, as every node must have them: their names,
-- sorted (placement does not depend on their order), home's included (core/rds_set.c; /readyz
-- compares the same string).
function _M.layout()
    return cache.layout()
end


-- The placement tag of a region's keys (its lease, the territories' shared live state): with
-- several Redis instances they live on the one cache.place(_M.at(region)) names.
function _M.at(region)
    return "region:" .. region
end


function _M.self()
    return SELF
end


-- The node id part of a holder ("node-1/Xy3..." -> "node-1").
function _M.node_of(holder)
    return holder and holder:match("^(.*)/[^/]*$") or nil
end


-- A region's preference for a node: FNV-1a over "<region>\0<node id>" (the node id, not the
-- holder, so that a node started again is preferred for the same regions).
local function score(region, node)
    local h = 2166136261
    local str = region .. "\0" .. node
    for i = 1, #str do
        h = bit.tobit(bit.bxor(h, str:byte(i)) * 16777619)
    end
    return h
end


-- The assignment of regions (ids) to holders: { [region id] = holder }. Each region, in order
-- of id, goes to the holder whose node prefers it most (score) among those below their share:
-- floor(#ids / #holders) each, and one more for as many of them as the division leaves over.
-- The same lists give the same assignment on every node.
function _M.assign(ids, holders)
    local out = {}
    if #holders == 0 then
        return out
    end
    local sorted = {}
    for i, id in ipairs(ids) do
        sorted[i] = id
    end
    sort(sorted)
    local share, extra = floor(#sorted / #holders), #sorted % #holders
    local load, full = {}, 0 -- full: holders at share + 1
    for _, id in ipairs(sorted) do
        local best, best_score
        for _, h in ipairs(holders) do
            local l = load[h] or 0
            if l < share or (l == share and full < extra) then
                local sc = score(id, _M.node_of(h) or h)
                if not best or sc > best_score or (sc == best_score and h < best) then
                    best, best_score = h, sc
                end
            end
        end
        out[id] = best
        load[best] = (load[best] or 0) + 1
        if load[best] == share + 1 then
            full = full + 1
        end
    end
    return out
end


-- cmds, each with its at (or none: home), sent as one pipeline per Redis instance
-- (cache.place): an instance that does not answer costs only the regions placed on it (their
-- results stay nil), not every region's renewal. The results in order, or nil, err when no
-- instance answered.
local function per_instance(cmds)
    local groups, order = {}, {}
    for i, c in ipairs(cmds) do
        local name = c.at and cache.place(c.at) or cache.instances()[1] -- no at: home
        if not groups[name] then
            groups[name] = {}
            order[#order + 1] = name
        end
        local g = groups[name]
        g[#g + 1] = i
    end
    local res, answered, err = {}, #cmds == 0, nil
    for _, name in ipairs(order) do
        local idx, sub = groups[name], {}
        for j, i in ipairs(idx) do
            sub[j] = cmds[i]
        end
        local r, e = cache.pipeline(sub)
        if r then
            answered = true
            for j, i in ipairs(idx) do
                res[i] = r[j]
            end
        else
            err = e
        end
    end
    if not answered then
        return nil, err
    end
    return res
end


-- Say this node is alive (one round trip: the live nodes come back), then take, renew, hand
-- back or look at the lease of every region as the assignment over the live nodes says (a
-- second one per Redis instance the regions are placed on); what Redis answered is
-- remembered. Returns the regions taken by this call and those handed back (for the log), or
-- nil, err when Redis did not answer.
function _M.tick(regions)
    local beat, err = cache.pipeline({ { "EVAL", _M.HEARTBEAT, 2, _M.LIVE, _M.LAYOUT, SELF,
                                         settings.lease_ms, _M.layout(),
                                         _M.LAYOUT_LEASES * settings.lease_ms } })
    if not beat then
        return nil, err
    end
    if type(beat[1]) ~= "table" or beat[1].err then
        local theirs = beat[1] and tostring(beat[1].err):match("LAYOUT (.*)$")
        if theirs then
            return nil, "redis.instances differ from the running nodes' (theirs: " .. theirs ..
                        "; this node's: " .. _M.layout() .. "): it takes no region until they " ..
                        "agree (docs/operations.md, \"Several Redis instances\")"
        end
        return nil, beat[1] and beat[1].err or "no answer"
    end
    local now = time.monotonic()
    local ids = {}
    for i, r in ipairs(regions) do
        ids[i] = r.id
    end
    local mine = _M.assign(ids, beat[1]) -- over the live holders, as Redis just said
    local cmds, what = {}, {}
    for i, r in ipairs(regions) do
        local k = S.known[r.id]
        local fs, fb = S.free_since[r.id], S.fallback[r.id]
        local held = k and k.holder == SELF
        if mine[r.id] == SELF or (held and fb and now < fb) or
           (fs and now - fs >= settings.lease_ms / 1000) then
            -- ours; or another's that stayed free for a whole lease (its node does not take
            -- it), then kept for FALLBACK_LEASES leases before its node gets another chance
            what[i] = "take"
            cmds[i] = { "EVAL", _M.TAKE_OR_RENEW, 1, _M.key(r.id), SELF, settings.lease_ms,
                        at = _M.at(r.id) }
        elseif held then
            what[i] = "release" -- now another node's: handed back
            cmds[i] = { "EVAL", _M.RELEASE, 1, _M.key(r.id), SELF, at = _M.at(r.id) }
        else
            what[i] = "look"
            cmds[i] = { "GET", _M.key(r.id), at = _M.at(r.id) }
        end
    end
    local res
    res, err = per_instance(cmds)
    if not res then
        return nil, err
    end
    local taken, released = {}, {}
    for i, r in ipairs(regions) do
        local a = res[i]
        local holder
        if what[i] == "take" then
            if type(a) == "table" and a[2] then
                holder = a[2]
                if a[1] == 2 then
                    taken[#taken + 1] = r.id
                    S.generation[r.id] = (S.generation[r.id] or 0) + 1
                    if mine[r.id] ~= SELF then
                        S.fallback[r.id] = now + _M.FALLBACK_LEASES * settings.lease_ms / 1000
                    end
                end
            end
            if mine[r.id] == SELF then
                S.fallback[r.id] = nil
            end
        elseif what[i] == "release" then
            S.fallback[r.id] = nil
            if a == 1 then
                released[#released + 1] = r.id
            end
        else
            holder = type(a) == "string" and a or nil
        end
        if a ~= nil and not (type(a) == "table" and a.err) then
            S.known[r.id] = { holder = holder, checked = now }
            if holder == nil then
                S.free_since[r.id] = S.free_since[r.id] or now
            else
                S.free_since[r.id] = nil
            end
        end
    end
    return taken, released
end


-- Give back every lease this node holds, and leave the live list (when it stops).
function _M.release_all(regions)
    local cmds = { { "EVAL", _M.LEAVE, 2, _M.LIVE, _M.LAYOUT, SELF, _M.layout(),
                     settings.lease_ms } }
    for _, r in ipairs(regions) do
        cmds[#cmds + 1] = { "EVAL", _M.RELEASE, 1, _M.key(r.id), SELF, at = _M.at(r.id) }
    end
    S.known = {}
    return per_instance(cmds) -- an instance down keeps none of the others' leases
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
