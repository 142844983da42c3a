-- lib/players.lua: where players live (shards) and how their documents are read and cached.
--
-- A player id carries its shard: id % 64. The row lives in that shard's database
-- (db.shard(n)); the main database holds the directory of every player (unique names).
--
-- Reads go through the cache layers of mmo.cache: this node's memory, then Redis, then the
-- shard. Writes bump the row's version and store the new document in both layers (newer
-- versions win), and other nodes drop their older copy through Redis pub/sub.
local cache = require "mmo.cache"
local db = require "mmo.db"
local http = require "lib.http"
local json = require "mmo.json"
local metrics = require "mmo.metrics"
local player = require "rules.player"
local time = require "mmo.time"

local floor = math.floor
local ipairs = ipairs
local math_min = math.min
local pairs = pairs
local select = select
local tonumber = tonumber


local _M = {}

_M.SHARDS = 64
_M.CACHE_TTL_MS = 60000

-- A player row's columns as a query selects them; columns(alias) the same of table alias
-- (a query that joins players twice).
function _M.columns(alias)
    local a = alias and alias .. "." or ""
    return a .. table.concat({ "id", "account_id", "name", "class", "level", "xp", "hp", "mp",
                               "region", "x", "y", "moved_at", "home_region", "appearance",
                               "buffs", "guild_id", "version" }, ", " .. a) ..
           ", to_char(" .. a .. "created_at at time zone 'UTC', " ..
           "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as created_at"
end
_M.COLUMNS = _M.columns()


-- The shards of this node (fixed by config.lua at start): read once, when the module loads.
local SHARD_EXISTS = {}
for _, n in ipairs(db.shard_ids()) do
    SHARD_EXISTS[n] = true
end


-- A player id from a path parameter: a positive whole number whose shard exists, or a 404.
function _M.parse_id(text)
    local id = tonumber(text)
    if not id or id < 1 or id ~= floor(id) or id > 9007199254740991 or
       not text:match("^%d+$") then
        http.fail(404, "not_found", "no such player")
    end
    if not SHARD_EXISTS[id % _M.SHARDS] then
        http.fail(404, "not_found", "no such player")
    end
    return id
end


-- The database (mmo.db module table) holding player id.
function _M.db_of(id)
    return db.shard(id % _M.SHARDS)
end


-- The row of player id, or nil; q: a transaction's query function (then FOR UPDATE).
function _M.row(id, q)
    local rows
    if q then
        rows = http.check(q("select " .. _M.COLUMNS .. " from players where id = $1 for update",
                            id))
    else
        rows = http.check(_M.db_of(id).query("select " .. _M.COLUMNS ..
                                             " from players where id = $1", id))
    end
    return rows[1]
end


local function ttl_ms(row, now)
    local change = player.next_change(row, now)
    return change and math_min(_M.CACHE_TTL_MS, floor(change * 1000) + 1) or _M.CACHE_TTL_MS
end


-- The document of a row, encoded (a player without a guild has "guild": null).
function _M.encode(row, now)
    local doc = player.document(row, now)
    if doc.guild == nil then
        doc.guild = json.null
    end
    if #doc.buffs == 0 then
        doc.buffs = json.empty_array
    end
    return json.encode(doc)
end


-- The encoded document of player id, or nil when there is none. Served from the fastest
-- layer that has it; a cache that is down costs speed, never the answer.
function _M.document(id)
    local key = "player:" .. id
    local v = cache.fetch(key)
    if v then
        return v
    end
    local row = _M.row(id)
    if not row then
        return nil
    end
    local now = time.now()
    local doc = _M.encode(row, now)
    cache.fill(key, doc, row.version, ttl_ms(row, now))
    return doc, row
end


-- Before a write of player id commits, inside its transaction (version: the row's version,
-- read FOR UPDATE there): its cached document becomes a miss that no read can fill again with
-- the version before the write (a tombstone at version + 1, both layers, every node). The write
-- then sets version + WRITE_STEP, which published() stores over the tombstone. A node killed
-- between the commit and published() thus leaves a miss, read from the database, instead of
-- the old document served until its ttl (found by tools/crash: docs/reliability.md, "Crash
-- safety"). A cache that is down changes nothing here: the write goes on.
_M.WRITE_STEP = 2

function _M.writing(id, version)
    cache.drop("player:" .. id, version + 1)
end


-- After a write committed: the new document into both layers, and other nodes told.
function _M.published(row)
    local now = time.now()
    local doc = _M.encode(row, now)
    cache.store("player:" .. row.id, doc, row.version, ttl_ms(row, now))
    return doc
end


-- The same for many rows (a batch of game events' effects): one Redis round trip for all.
function _M.published_many(rows)
    if #rows == 0 then
        return true
    end
    local now, list = time.now(), {}
    for i, row in ipairs(rows) do
        list[i] = { "player:" .. row.id, _M.encode(row, now), row.version, ttl_ms(row, now) }
        if i % 500 == 0 then
            time.sleep(0) -- thousands of documents: the event loop gets a turn between
        end
    end
    return cache.store_many(list)
end


-- After a delete: the document out of both layers, here and on other nodes.
function _M.dropped(id, version)
    cache.drop("player:" .. id, version)
end


-- The world's regions (from the main database): { {id, name, x0, y0, x1, y1}, ... }.
function _M.regions()
    local rows = http.check(db.query("select id, name, x0, y0, x1, y1 from regions order by id"))
    return rows
end


-- The item catalogue as rules/inventory.lua wants it, from the database q talks to: the items
-- named in ids, and every item held in the inventories given after it (slots count them all).
function _M.catalogue(q, ids, ...)
    local seen, all = {}, {}
    for _, id in ipairs(ids) do
        if not seen[id] then
            seen[id] = true
            all[#all + 1] = id
        end
    end
    for i = 1, select("#", ...) do
        for id in pairs((select(i, ...))) do
            if not seen[id] then
                seen[id] = true
                all[#all + 1] = id
            end
        end
    end
    ids = all
    local rows = http.check(q("select id, kind, stack, effects from items " ..
                              "where id in (select jsonb_array_elements_text($1))",
                              json.array(ids)))
    local cat = {}
    for _, r in ipairs(rows) do
        cat[r.id] = { kind = r.kind, stack = r.stack, effects = r.effects }
    end
    return cat
end


-- An inventory: { [item] = qty } (q: inside a transaction, rows locked).
function _M.inventory(id, q)
    local sql = "select item, qty from inventory where player_id = $1 order by item"
    local rows = http.check(q and q(sql .. " for update", id) or _M.db_of(id).query(sql, id))
    local inv = {}
    for _, r in ipairs(rows) do
        inv[r.item] = r.qty
    end
    return inv
end


-- The API's inventory answer: { items = [{item, qty}, ...] } sorted by item.
function _M.inventory_body(inv)
    local items = json.array({})
    for item, qty in pairs(inv) do
        items[#items + 1] = { item = item, qty = qty }
    end
    table.sort(items, function(a, b) return a.item < b.item end)
    return { items = items }
end


-- Items that come into the world or leave it (quantities, by reason), counted by the code that
-- does it once its transaction committed. A trade moves items: neither. The reasons known now
-- start at 0 (a rate over a series that appears late misses its first increase).
local ITEMS_CREATED = metrics.counter("mmo_items_created_total",
    "Items that came into the world (quantities), by reason: the game event whose effect gave " ..
    "them (loot...), grant (the grant job), admin_grant (POST /api/admin/players/:id/items)",
    { "reason" })
local ITEMS_DESTROYED = metrics.counter("mmo_items_destroyed_total",
    "Items that left the world (quantities), by reason: use (used up), player_deleted " ..
    "(the inventory of a deleted player)", { "reason" })
for _, r in ipairs({ "loot", "grant", "admin_grant" }) do
    ITEMS_CREATED:inc(0, r)
end
for _, r in ipairs({ "use", "player_deleted" }) do
    ITEMS_DESTROYED:inc(0, r)
end

function _M.items_created(reason, qty)
    if qty > 0 then
        ITEMS_CREATED:inc(qty, reason)
    end
end

function _M.items_destroyed(reason, qty)
    if qty > 0 then
        ITEMS_DESTROYED:inc(qty, reason)
    end
end


-- Write the changes between inventories old and new of player id (inside a transaction).
function _M.write_inventory(q, id, old, new)
    local gone, set = {}, {}
    for item in pairs(old) do
        if not new[item] then
            gone[#gone + 1] = item
        end
    end
    for item, qty in pairs(new) do
        if old[item] ~= qty then
            set[#set + 1] = { item = item, qty = qty }
        end
    end
    if #gone > 0 then
        http.check(q("delete from inventory where player_id = $1 " ..
                     "and item in (select jsonb_array_elements_text($2))", id, gone))
    end
    if #set > 0 then
        http.check(q("insert into inventory (player_id, item, qty) " ..
                     "select $1, item, qty from jsonb_to_recordset($2) as t(item text, qty int) " ..
                     "on conflict (player_id, item) do update set qty = excluded.qty",
                     id, set))
    end
end


-- Does account a own player row? (owner checks of the API)
function _M.owns(account, row)
    return account ~= nil and row ~= nil and row.account_id == account.id
end


function _M.has_role(account, role)
    for _, r in ipairs(account and account.roles or {}) do
        if r == role or r == "admin" then
            return true
        end
    end
    return false
end


return _M
