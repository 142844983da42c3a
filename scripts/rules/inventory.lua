-- rules/inventory.lua: what an inventory holds, what using an item does, what a trade moves.
-- Pure: inventories and the catalogue are plain tables passed in; nothing here touches the
-- database. handlers/inventory.lua and handlers/trades.lua do the I/O around these.
--
--   inventory: { [item_id] = qty }            catalogue: { [item_id] = {stack, kind, effects} }
local ceil = math.ceil
local floor = math.floor
local min = math.min
local pairs = pairs
local ipairs = ipairs
local type = type


local _M = {}

_M.MAX_SLOTS = 40      -- a slot holds up to `stack` of one item
_M.MAX_QTY = 100000    -- the most of one item in one request
_M.MAX_LINES = 20      -- the most items in one give or take list


-- Slots an inventory fills.
function _M.slots_used(inv, catalogue)
    local n = 0
    for item, qty in pairs(inv) do
        local def = catalogue[item]
        n = n + ceil(qty / (def and def.stack or 1))
    end
    return n
end


-- A list of {item, qty} from a request, checked: returns { {item, qty}, ... } or nil, message.
function _M.parse_lines(list, field)
    if list == nil then
        return {}
    end
    if type(list) ~= "table" then
        return nil, field .. ": must be a list of {item, qty}"
    end
    for k in pairs(list) do
        if type(k) ~= "number" then
            return nil, field .. ": must be a list of {item, qty}"
        end
    end
    if #list > _M.MAX_LINES then
        return nil, field .. ": at most " .. _M.MAX_LINES .. " items"
    end
    local out, seen = {}, {}
    for i = 1, #list do
        local line = list[i]
        if type(line) ~= "table" or type(line.item) ~= "string" or #line.item > 64 then
            return nil, field .. "[" .. i .. "].item: an item id"
        end
        local q = line.qty
        if type(q) ~= "number" or q ~= floor(q) or q < 1 or q > _M.MAX_QTY then
            return nil, field .. "[" .. i .. "].qty: a whole number from 1 to " .. _M.MAX_QTY
        end
        if seen[line.item] then
            return nil, field .. ": " .. line.item .. " is listed twice"
        end
        seen[line.item] = true
        out[#out + 1] = { item = line.item, qty = q }
    end
    return out
end


local function copy(inv)
    local t = {}
    for k, v in pairs(inv) do
        t[k] = v
    end
    return t
end


local function move(src, dst, lines, catalogue)
    for _, l in ipairs(lines) do
        if not catalogue[l.item] then
            return "unknown_item", { item = l.item }
        end
        local have = src[l.item] or 0
        if have < l.qty then
            return "not_enough", { item = l.item, have = have, want = l.qty }
        end
        src[l.item] = have - l.qty > 0 and have - l.qty or nil
        dst[l.item] = (dst[l.item] or 0) + l.qty
    end
end


-- A trade: from gives `give` to `to` and receives `take` from it. Returns the two new
-- inventories, or nil, reason, details (reason: unknown_item, not_enough, inventory_full).
function _M.trade(inv_from, inv_to, give, take, catalogue)
    local a, b = copy(inv_from), copy(inv_to)
    local why, details = move(a, b, give, catalogue)
    if why then
        details.side = "from"
        return nil, why, details
    end
    why, details = move(b, a, take, catalogue)
    if why then
        details.side = "to"
        return nil, why, details
    end
    if _M.slots_used(a, catalogue) > _M.MAX_SLOTS then
        return nil, "inventory_full", { side = "from" }
    end
    if _M.slots_used(b, catalogue) > _M.MAX_SLOTS then
        return nil, "inventory_full", { side = "to" }
    end
    return a, b
end


-- An admin grant: the new inventory, or nil, reason.
function _M.grant(inv, item, qty, catalogue)
    if not catalogue[item] then
        return nil, "unknown_item"
    end
    local n = copy(inv)
    n[item] = (n[item] or 0) + qty
    if _M.slots_used(n, catalogue) > _M.MAX_SLOTS then
        return nil, "inventory_full"
    end
    return n
end


-- What each effect key of an item does when used, qty times. Each gets the effect's value,
-- the player's state (a copy: change it) and the context {stats, now, regions}.
_M.EFFECTS = {
    heal = function(v, p, qty, ctx)
        p.hp = min(ctx.stats.max_hp, p.hp + v * qty)
    end,
    mana = function(v, p, qty, ctx)
        p.mp = min(ctx.stats.max_mp, p.mp + v * qty)
    end,
    buff = function(v, p, qty, ctx)
        local buffs = {}
        for _, b in ipairs(p.buffs or {}) do
            if b.stat ~= v.stat and (b["until"] or 0) > ctx.now then
                buffs[#buffs + 1] = b
            end
        end
        buffs[#buffs + 1] = { stat = v.stat, amount = v.amount,
                              ["until"] = ctx.now + v.seconds * qty }
        p.buffs = buffs
    end,
    teleport = function(v, p)
        p.region, p.x, p.y = v.region, v.x, v.y
    end,
}

-- Kinds that can be used (the others are equipment and materials).
_M.USABLE = { consumable = true, scroll = true }


-- Use qty of an item: the player's new state, or nil, reason.
-- player = {hp, mp, buffs, region, x, y}; def = catalogue entry; ctx = {stats, now}
function _M.use(player, def, qty, have, ctx)
    if not def then
        return nil, "unknown_item"
    end
    if not _M.USABLE[def.kind] then
        return nil, "not_usable"
    end
    if (have or 0) < qty then
        return nil, "not_enough"
    end
    if def.effects.teleport and qty ~= 1 then
        return nil, "one_at_a_time"
    end
    local p = copy(player)
    for key, value in pairs(def.effects) do
        local fn = _M.EFFECTS[key]
        if fn then
            fn(value, p, qty, ctx)
        end
    end
    return p
end


return _M
