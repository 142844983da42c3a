-- rules/player.lua: player names, classes, levels, derived stats and who may change what.
-- Pure: no mmo.*, no clock (callers pass `now`), no I/O. Specced in spec/unit/rules.
local classes = require "data.classes"

local floor = math.floor
local min = math.min
local max = math.max
local pairs = pairs
local tostring = tostring
local type = type


local _M = {}

_M.CLASSES = classes
_M.NAME_MIN = 3
_M.NAME_MAX = 16
_M.MAX_LEVEL = 60
_M.MAX_PLAYERS_PER_ACCOUNT = 10

-- Names players cannot take (checked without regard to case).
local RESERVED = { admin = true, moderator = true, system = true, gm = true, server = true }


-- A name: 3-16 letters, one inner space, hyphen or apostrophe allowed ("Mae-Lin", "O'Dell").
function _M.valid_name(name)
    if type(name) ~= "string" then
        return nil, "name: must be a string"
    end
    if #name < _M.NAME_MIN or #name > _M.NAME_MAX then
        return nil, "name: must be " .. _M.NAME_MIN .. "-" .. _M.NAME_MAX .. " letters"
    end
    if not name:match("^%a[%a]*[ '%-]?%a+$") then
        return nil, "name: letters, with at most one space, hyphen or apostrophe inside"
    end
    if RESERVED[name:lower()] then
        return nil, "name: reserved"
    end
    return true
end


function _M.valid_class(class)
    if type(class) ~= "string" or not classes[class] then
        local names = {}
        for k in pairs(classes) do
            names[#names + 1] = k
        end
        table.sort(names)
        return nil, "class: one of " .. table.concat(names, ", ")
    end
    return true
end


-- XP needed to reach level n from level 1 (a smooth curve; level 2 at 100 xp).
function _M.xp_for_level(n)
    if n <= 1 then
        return 0
    end
    return floor(100 * (n - 1) ^ 1.6 + 0.5)
end


-- The level that xp earns.
function _M.level_for_xp(xp)
    local lo, hi = 1, _M.MAX_LEVEL
    while lo < hi do
        local mid = floor((lo + hi + 1) / 2)
        if _M.xp_for_level(mid) <= xp then
            lo = mid
        else
            hi = mid - 1
        end
    end
    return lo
end


-- Stats of a class at a level, with buffs that are still running at `now`:
-- buffs = { {stat = "speed", amount = 0.25, until_ = 1700000000}, ... } (amount: a fraction).
function _M.stats(class, level, buffs, now)
    local c = classes[class]
    local s = {}
    for stat, v in pairs(c.base) do
        local g = c.growth[stat] or 0
        s[stat] = v + g * (level - 1)
    end
    for _, b in pairs(buffs or {}) do
        if type(b) == "table" and s[b.stat] and (b["until"] or 0) > now then
            s[b.stat] = s[b.stat] * (1 + b.amount)
        end
    end
    local out = {}
    for stat, v in pairs(s) do
        out[stat] = stat == "speed" and floor(v * 100 + 0.5) / 100 or floor(v + 0.5)
    end
    out.max_hp, out.max_mp = out.hp, out.mp
    return out
end


-- A new player: what the database row gets.
function _M.new(name, class, region)
    local s = _M.stats(class, 1, nil, 0)
    return { name = name, class = class, level = 1, xp = 0, hp = s.max_hp, mp = s.max_mp,
             region = region.id, x = (region.x0 + region.x1) / 2,
             y = (region.y0 + region.y1) / 2 }
end


-- The document clients see (API.md "Player document") from a database row.
function _M.document(row, now)
    local s = _M.stats(row.class, row.level, row.buffs, now)
    s.hp = min(row.hp, s.max_hp)
    s.mp = min(row.mp, s.max_mp)
    local buffs = {}
    for _, b in pairs(row.buffs or {}) do
        if type(b) == "table" and (b["until"] or 0) > now then
            buffs[#buffs + 1] = b
        end
    end
    return {
        id = row.id,
        name = row.name,
        class = row.class,
        level = row.level,
        xp = row.xp,
        xp_next = row.level < _M.MAX_LEVEL and _M.xp_for_level(row.level + 1) or nil,
        stats = s,
        position = { region = row.region, x = row.x, y = row.y },
        guild = row.guild_id,
        appearance = row.appearance or {},
        buffs = buffs,
        created_at = row.created_at,
    }
end


-- Seconds until the next buff of row runs out (nil: none), so a cached document can expire
-- when its stats change.
function _M.next_change(row, now)
    local soonest
    for _, b in pairs(row.buffs or {}) do
        local u = type(b) == "table" and b["until"]
        if u and u > now and (not soonest or u < soonest) then
            soonest = u
        end
    end
    return soonest and max(0, soonest - now) or nil
end


-- Who may set which field with PATCH. "owner" is the account that owns the player.
_M.FIELDS = {
    appearance = { owner = true, moderator = true },
    name = { moderator = true },
    position = { owner = true },
}

_M.APPEARANCE = {
    hair = { "short", "long", "braided", "shaved", "curly" },
    color = { "red", "blue", "green", "black", "white", "gold", "purple" },
    title = true, -- free text, 0-24 characters
}


-- Check a PATCH body against who is asking: returns the fields to apply, or nil, message.
-- is_owner / is_moderator: booleans. A field nobody may set (level, xp, class, id...) is
-- refused with 422: silently ignoring it would hide a client bug or an attempt.
function _M.patch(body, is_owner, is_moderator)
    if type(body) ~= "table" then
        return nil, "body: must be an object"
    end
    local out, n = {}, 0
    for field, value in pairs(body) do
        local who = _M.FIELDS[field]
        if not who then
            return nil, field .. ": cannot be changed"
        end
        if not ((is_owner and who.owner) or (is_moderator and who.moderator)) then
            return nil, field .. ": you may not change it", "forbidden"
        end
        out[field] = value
        n = n + 1
    end
    if n == 0 then
        return nil, "body: nothing to change"
    end
    if out.name then
        local ok, msg = _M.valid_name(out.name)
        if not ok then
            return nil, msg
        end
    end
    if out.appearance ~= nil then
        if type(out.appearance) ~= "table" then
            return nil, "appearance: must be an object"
        end
        for k, v in pairs(out.appearance) do
            local allowed = _M.APPEARANCE[k]
            if allowed == nil then
                return nil, "appearance." .. tostring(k) .. ": unknown"
            elseif allowed == true then
                if type(v) ~= "string" or #v > 24 then
                    return nil, "appearance." .. k .. ": text of at most 24 characters"
                end
            else
                local ok = false
                for _, a in pairs(allowed) do
                    ok = ok or a == v
                end
                if not ok then
                    return nil, "appearance." .. k .. ": one of " .. table.concat(allowed, ", ")
                end
            end
        end
    end
    if out.position ~= nil and (type(out.position) ~= "table" or
       type(out.position.x) ~= "number" or type(out.position.y) ~= "number") then
        return nil, "position: {x, y} numbers"
    end
    return out
end


return _M
