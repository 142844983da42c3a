-- lib/territories.lua: the capture state of the territories of the regions this node owns.
--
-- The owner node reads a region's territories from PostgreSQL when it first ticks it, then
-- keeps their state in memory: each tick asks the live world who stands in them (one pass in
-- C, world.presence) and applies rules/territory.lua. A change of hands is written at once, in
-- one transaction with its audit entry, and broadcast to the region as {"t":"territory"}; so
-- are the start of a capture and a contest beginning or ending. Progress is written every
-- SAVE_EVERY seconds. A region the node stops owning is forgotten (its next owner reads it).
--
-- The tick itself does no I/O: loading, saving and recording a capture run in tasks of their
-- own (mmo.time.after), so a slow database never makes a tick late or long.
local audit = require "lib.audit"
local cache = require "mmo.cache"
local db = require "mmo.db"
local events = require "mmo.events"
local json = require "mmo.json"
local leases = require "lib.leases"
local log = require "mmo.log"
local rule = require "rules.territory"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"

local ipairs = ipairs
local pairs = pairs
local next = next
local tostring = tostring
local type = type


local _M = {}

_M.SAVE_EVERY = 5 -- seconds
_M.SHARE_EVERY = 0.5 -- seconds: the live state the other nodes answer GET with (and on change)
_M.SHARE_TTL_MS = 3000 -- a live state not shared again for this long is stale (owner gone)

local COLUMNS = "id, region, name, x0, y0, x1, y1, owner_guild, capturing_guild, progress"

-- region id -> { list = { territory rows with state }, rects = { {x0, y0, x1, y1} }, saved }
local CAPTURES = require("mmo.metrics").counter("mmo_territory_captures_total",
    "Territories that changed hands, by region", { "region" })

-- kept across reloads (mmo.state)
local S = state.global("territories", { version = 1, init = function()
    return {
        regions = {}, -- region id -> { list, rects, saved, dirty } (see above)
        loading = {}, -- region id -> true while its territories are being read
        captures = 0, -- changes of hands on this node since it started
    }
end })
local regions, loading = S.regions, S.loading


-- Changes of hands on this node since it started.
function _M.captures()
    return S.captures
end


-- The document of a territory (API.md): {id, region, name, bounds, owner_guild, capturing_guild,
-- contested, progress}.
function _M.document(t)
    return {
        id = t.id, region = t.region, name = t.name,
        bounds = { x0 = t.x0, y0 = t.y0, x1 = t.x1, y1 = t.y1 },
        owner_guild = t.owner_guild or json.null,
        capturing_guild = t.capturing_guild or json.null,
        contested = t.contested == true,
        progress = t.progress or 0,
    }
end


-- Load a region's territories (in a task of its own; logged when the database cannot answer).
local function load(region)
    local rows, err = db.query("select " .. COLUMNS .. " from territories where region = $1 " ..
                               "order by id", region)
    loading[region] = nil
    if not rows then
        log.warn("territories of " .. region .. " not read: " .. tostring(err))
        return
    end
    local r = { list = rows, rects = {}, saved = 0, dirty = {} }
    for i, t in ipairs(rows) do
        r.rects[i] = { t.x0, t.y0, t.x1, t.y1 }
        t.contested = false
    end
    regions[region] = r
end


-- The in-memory territories of a region this node ticks, or nil.
function _M.live(region)
    return regions[region]
end


-- Forget a region (this node no longer owns it).
function _M.forget(region)
    regions[region] = nil
end


-- Write the progress of what changed since the last save (in a task of its own).
local function save(r)
    local rows = json.array({})
    for _, t in pairs(r.dirty) do
        rows[#rows + 1] = { id = t.id, owner_guild = t.owner_guild,
                            capturing_guild = t.capturing_guild, progress = t.progress }
    end
    r.dirty = {}
    local ok, err = db.query(
        "update territories t set owner_guild = s.owner_guild, " ..
        "capturing_guild = s.capturing_guild, progress = s.progress " ..
        "from jsonb_to_recordset($1) as s(id text, owner_guild bigint, " ..
        "capturing_guild bigint, progress float8) where t.id = s.id", rows)
    r.saving = false
    if not ok then
        log.warn("territory progress not saved: " .. tostring(err))
    end
end


-- The live state of a region's territories, for the nodes that do not tick it (in a task of its
-- own): territories:live:<region> = [[id, owner, capturing, progress, contested], ...] (0: none).
local function share(region, r)
    local list = {}
    for i, t in ipairs(r.list) do
        list[i] = { t.id, t.owner_guild or 0, t.capturing_guild or 0, t.progress or 0,
                    t.contested and 1 or 0 }
    end
    local ok, err = cache.at(leases.at(region)).set("territories:live:" .. region,
                                                     json.encode(list), _M.SHARE_TTL_MS)
    r.sharing = false
    if not ok then
        log.debug("territory state not shared: " .. tostring(err))
    end
end


local function broadcast(t)
    world.send_region(t.region, { t = "territory", territory = _M.document(t) })
end


-- A territory changed hands: the row and the audit entry in one transaction; false when the
-- database refused (the change is then kept in memory and written with the next save).
local function record_capture(t, owner, from)
    local ok = db.tx(function(q)
        local res = q("update territories set owner_guild = $2, capturing_guild = null, " ..
                      "progress = 0, changed_at = now() where id = $1", t.id, owner)
        if not res then
            return nil
        end
        return audit.write({ id = "tick:" .. t.region }, "territory.captured", t.id,
                           { region = t.region, guild = owner, from = from or json.null },
                           nil, q)
    end)
    if ok ~= nil then
        events.emit("territory.captured", { territory = t.id, name = t.name, region = t.region,
                                            guild = owner, from = from })
    end
    return ok ~= nil
end


-- One tick of region's territories, dt seconds after the last. `now` (monotonic seconds)
-- decides when progress is saved. Returns the number of territories ticked (0 while they are
-- being read).
function _M.tick(region, dt, now)
    local r = regions[region]
    if not r then
        if not loading[region] then
            loading[region] = true
            time.after(0, function() load(region) end)
        end
        return 0
    end
    if #r.list == 0 then
        return 0
    end
    local present = world.presence(region, r.rects) or {}
    local changed = false
    for i, t in ipairs(r.list) do
        local s = rule.step(t, present[i], dt)
        local was_contested, was_capturing, was_owner = t.contested, t.capturing_guild,
                                                      t.owner_guild
        t.owner_guild, t.capturing_guild, t.progress, t.contested =
            s.owner_guild, s.capturing_guild, s.progress, s.contested
        if s.progress ~= 0 or was_capturing then
            r.dirty[t.id] = t
        end
        if s.captured then
            S.captures = S.captures + 1
            CAPTURES:inc(1, region)
            r.dirty[t.id] = nil
            local owner = t.owner_guild
            time.after(0, function()
                if not record_capture(t, owner, was_owner) then
                    r.dirty[t.id] = t -- written with the next save, without its audit entry
                    log.warn("territory capture not recorded", { territory = t.id })
                end
            end)
            log.info("territory captured", { territory = t.id, region = region,
                                             guild = t.owner_guild,
                                             from = was_owner or json.null })
            broadcast(t)
            changed = true
        elseif s.contested ~= was_contested or s.capturing_guild ~= was_capturing then
            broadcast(t)
            changed = true
        end
    end
    if (changed or now - (r.shared or 0) >= _M.SHARE_EVERY) and not r.sharing then
        r.shared, r.sharing = now, true
        time.after(0, function() share(region, r) end)
    end
    if now - r.saved >= _M.SAVE_EVERY and not r.saving and next(r.dirty) then
        r.saved, r.saving = now, true
        time.after(0, function() save(r) end)
    end
    return #r.list
end


-- The live state other nodes shared for the regions this node does not tick: territory id ->
-- {owner_guild, capturing_guild, progress, contested}; empty when Redis cannot say.
local function shared(rows)
    local cmds, seen = {}, {}
    for _, row in ipairs(rows) do
        if not regions[row.region] and not seen[row.region] then
            seen[row.region] = true
            cmds[#cmds + 1] = { "GET", "territories:live:" .. row.region,
                                at = leases.at(row.region) }
        end
    end
    local out = {}
    local vals = #cmds > 0 and cache.pipeline(cmds)
    for _, v in ipairs(vals or {}) do
        _M.read_shared(v, out)
    end
    return out
end


local function id_or_none(v)
    return type(v) == "number" and v >= 0 and v % 1 == 0 and v < 2 ^ 53
end


-- One region's shared live state as Redis holds it (a JSON string, see share) into out:
-- territory id -> {owner_guild, capturing_guild, progress, contested}. What is not that shape
-- (another writer's value, a torn one) is skipped, entry by entry: the caller then answers
-- from PostgreSQL for those territories.
function _M.read_shared(v, out)
    local list = type(v) == "string" and json.decode(v)
    for _, e in ipairs(type(list) == "table" and list or {}) do
        if type(e) == "table" and type(e[1]) == "string" and id_or_none(e[2]) and
           id_or_none(e[3]) and type(e[4]) == "number" and e[4] >= 0 and e[4] <= 100 and
           (e[5] == 0 or e[5] == 1) then
            out[e[1]] = { owner_guild = e[2] ~= 0 and e[2] or nil,
                          capturing_guild = e[3] ~= 0 and e[3] or nil,
                          progress = e[4], contested = e[5] == 1 }
        end
    end
    return out
end


-- Every territory, as documents: the live state where this node ticks the region, else the
-- one its owner shared (SHARE_EVERY), else the last state written.
function _M.all()
    local rows, err = db.query("select " .. COLUMNS .. " from territories order by region, id")
    if not rows then
        return nil, err
    end
    local others = shared(rows)
    local out = json.array({})
    for i, row in ipairs(rows) do
        local live = regions[row.region]
        local t = row
        local s = others[row.id]
        if s then
            row.owner_guild, row.capturing_guild, row.progress, row.contested =
                s.owner_guild, s.capturing_guild, s.progress, s.contested
        elseif live then
            for _, l in ipairs(live.list) do
                if l.id == row.id then
                    t = l
                    break
                end
            end
        end
        out[i] = _M.document(t)
    end
    return out
end


return _M
