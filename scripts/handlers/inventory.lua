-- handlers/inventory.lua: the item catalogue, inventories, using items, admin grants.
-- The effects of items are rules (rules/inventory.lua); this file does the I/O around them.
local audit = require "lib.audit"
local db = require "mmo.db"
local http = require "lib.http"
local inventory = require "rules.inventory"
local json = require "mmo.json"
local player = require "rules.player"
local players = require "lib.players"
local time = require "mmo.time"

local floor = math.floor
local ipairs = ipairs
local type = type


local _M = {}


local function qty_of(body)
    local q = body.qty == nil and 1 or body.qty
    if type(q) ~= "number" or q ~= floor(q) or q < 1 or q > inventory.MAX_QTY then
        http.fail(422, "validation_failed", "qty: a whole number from 1 to " .. inventory.MAX_QTY)
    end
    return q
end


local function item_of(body)
    if type(body) ~= "table" or type(body.item) ~= "string" or #body.item > 64 then
        http.fail(422, "validation_failed", "item: an item id")
    end
    return body.item
end


-- GET /api/items
function _M.catalogue()
    local rows = http.check(db.query(
        "select id, name, kind, stack, effects from items order by id"))
    local items = json.array({})
    for i, r in ipairs(rows) do
        items[i] = r
    end
    return 200, { items = items }
end


-- GET /api/players/:id/inventory (owner, moderator)
function _M.show(req)
    local id = players.parse_id(req.params.id)
    local row = players.row(id)
    if not row then
        http.fail(404, "not_found", "no such player")
    end
    if not players.owns(req.account, row) and not players.has_role(req.account, "moderator") then
        http.fail(403, "forbidden", "not your player")
    end
    return 200, players.inventory_body(players.inventory(id))
end


local USE_ERRORS = {
    unknown_item = { 422, "no such item" },
    not_usable = { 422, "this item cannot be used" },
    one_at_a_time = { 422, "use one at a time" },
    not_enough = { 409, "you do not have that many" },
}


-- POST /api/players/:id/inventory/use {item, qty} (owner)
function _M.use(req)
    local id = players.parse_id(req.params.id)
    local item = item_of(req.body)
    local qty = qty_of(req.body)
    local inv, updated
    http.check(players.db_of(id).tx(function(q)
        local row = players.row(id, q)
        if not row then
            http.fail(404, "not_found", "no such player")
        end
        if not players.owns(req.account, row) then
            http.fail(403, "forbidden", "not your player")
        end
        local old = players.inventory(id, q)
        local def = players.catalogue(q, { item }, old)[item]
        local now = time.now()
        local ctx = { stats = player.stats(row.class, row.level, row.buffs, now), now = now }
        local state = { hp = row.hp, mp = row.mp, buffs = row.buffs, region = row.region,
                        x = row.x, y = row.y }
        local after, why = inventory.use(state, def, qty, old[item], ctx)
        if not after then
            local e = USE_ERRORS[why] or { 422, why }
            http.fail(e[1], why, e[2], { item = item })
        end
        inv = {}
        for k, v in pairs(old) do
            inv[k] = v
        end
        inv[item] = old[item] - qty > 0 and old[item] - qty or nil
        players.write_inventory(q, id, old, inv)
        local buffs = after.buffs or json.empty_array
        if #buffs == 0 then
            buffs = json.empty_array
        end
        players.writing(id, row.version)
        updated = http.check(q(
            "update players set hp = $2, mp = $3, buffs = $4, region = $5, x = $6, y = $7, " ..
            "moved_at = case when region <> $5 or x <> $6 or y <> $7 then $8 else moved_at end, " ..
            "version = version + " .. players.WRITE_STEP .. " where id = $1 returning " ..
            players.COLUMNS,
            id, after.hp, after.mp, buffs, after.region, after.x, after.y, now))[1]
        return true
    end, { retries = 3 }))
    players.items_destroyed("use", qty)
    players.published(updated)
    return 200, players.inventory_body(inv)
end


-- POST /api/admin/players/:id/items {item, qty} (admin)
function _M.grant(req)
    local id = players.parse_id(req.params.id)
    local item = item_of(req.body)
    local qty = qty_of(req.body)
    local inv
    http.check(players.db_of(id).tx(function(q)
        local row = players.row(id, q)
        if not row then
            http.fail(404, "not_found", "no such player")
        end
        local old = players.inventory(id, q)
        local why
        inv, why = inventory.grant(old, item, qty, players.catalogue(q, { item }, old))
        if not inv then
            if why == "unknown_item" then
                http.fail(422, why, "no such item", { item = item })
            end
            http.fail(409, why, "the inventory has no room for that", { item = item })
        end
        players.write_inventory(q, id, old, inv)
        return true
    end, { retries = 3 }))
    players.items_created("admin_grant", qty)
    audit.write(req, "items.grant", "player:" .. id, { item = item, qty = qty })
    return 200, players.inventory_body(inv)
end


return _M
