-- rules/validation.lua: what the game accepts as input. Pure: no mmo.*, no clock, no I/O.
--
-- Each check returns true, or nil and a message for the client ("username: ...").
local ipairs = ipairs
local pairs = pairs
local tostring = tostring
local type = type
local string_lower = string.lower
local string_find = string.find


local _M = {}

_M.USERNAME_MIN = 3
_M.USERNAME_MAX = 24
_M.PASSWORD_MIN = 10
_M.PASSWORD_MAX = 128

_M.ROLES = { "player", "moderator", "designer", "admin" }

-- The commonest passwords of public breach lists that fit the length rule. A real deployment
-- may load a longer list from scripts/data/; this one stops the obvious.
local DENY = {}
for _, p in ipairs({
    "1234567890", "12345678910", "0123456789", "1111111111", "0000000000", "9876543210",
    "qwertyuiop", "1q2w3e4r5t", "1qaz2wsx3edc", "qwerty1234", "qwerty12345", "password1",
    "password12", "password123", "password1234", "passw0rd123", "iloveyou12", "letmein123",
    "welcome123", "monkey1234", "dragon1234", "football12", "baseball12", "sunshine12",
    "princess12", "abc1234567", "abcdefghij", "aaaaaaaaaa", "zxcvbnm123", "asdfghjkl1",
    "changeme123", "administrator", "admin12345", "trustno1234", "starwars12", "superman12",
}) do
    DENY[p] = true
end


function _M.username(name)
    if type(name) ~= "string" then
        return nil, "username: must be a string"
    end
    if #name < _M.USERNAME_MIN or #name > _M.USERNAME_MAX then
        return nil, "username: must be " .. _M.USERNAME_MIN .. "-" .. _M.USERNAME_MAX ..
                    " characters"
    end
    if not name:match("^[A-Za-z][A-Za-z0-9_%-%.]*$") then
        return nil, "username: letters, digits, '_', '-' and '.', starting with a letter"
    end
    return true
end


function _M.password(password, username)
    if type(password) ~= "string" then
        return nil, "password: must be a string"
    end
    if #password < _M.PASSWORD_MIN or #password > _M.PASSWORD_MAX then
        return nil, "password: must be " .. _M.PASSWORD_MIN .. "-" .. _M.PASSWORD_MAX ..
                    " characters"
    end
    if string_find(password, "%z") then
        return nil, "password: must not contain NUL bytes"
    end
    local lower = string_lower(password)
    if type(username) == "string" and
       (lower == string_lower(username) or string_find(lower, string_lower(username), 1, true)) then
        return nil, "password: must not contain the username"
    end
    if DENY[lower] then
        return nil, "password: too common"
    end
    return true
end


-- A list of role names: known, no duplicates, "player" always included.
function _M.roles(roles)
    if type(roles) ~= "table" or #roles == 0 or #roles > #_M.ROLES then
        return nil, "roles: must be a list of role names"
    end
    local known, seen, has_player = {}, {}, false
    for _, r in ipairs(_M.ROLES) do
        known[r] = true
    end
    for i = 1, #roles do
        local r = roles[i]
        if type(r) ~= "string" or not known[r] then
            return nil, "roles: unknown role " .. tostring(r)
        end
        if seen[r] then
            return nil, "roles: " .. r .. " given twice"
        end
        seen[r] = true
        has_player = has_player or r == "player"
    end
    if not has_player then
        return nil, "roles: every account keeps the player role"
    end
    return true
end


-- A ban: a reason and a duration in minutes (1 minute to 10 years).
function _M.ban(body)
    if type(body) ~= "table" then
        return nil, "body: must be an object"
    end
    if type(body.reason) ~= "string" or #body.reason < 1 or #body.reason > 500 then
        return nil, "reason: must be 1-500 characters"
    end
    local m = body.minutes
    if type(m) ~= "number" or m ~= m or m < 1 or m > 5256000 or m % 1 ~= 0 then
        return nil, "minutes: must be a whole number from 1 to 5256000"
    end
    return true
end


-- POST /api/admin/accounts/:id/kick {reason}: the reason is optional
function _M.kick(body)
    if body ~= nil and type(body) ~= "table" then
        return nil, "body: must be an object"
    end
    local r = body and body.reason
    if r ~= nil and (type(r) ~= "string" or #r < 1 or #r > 500) then
        return nil, "reason: must be 1-500 characters"
    end
    return true
end


-- ---- game events (the pipeline: POST /api/events and the WebSocket event message) ----------
--
-- An event type is data: its `data` fields, each {type, ...limits}. A designer adds a type here
-- and its handler in scripts/jobs/<type>.lua (docs/designers.md). Field kinds:
--   { "string", max = n }                a string of 1..n bytes
--   { "int", min = a, max = b }          a whole number in [a, b]
--   { "item" }                           an item id (the catalogue is checked when processed)
_M.EVENT_TYPES = {
    kill = { data = { monster = { "string", max = 40 }, level = { "int", min = 1, max = 60 } } },
    loot = { data = { item = { "string", max = 40 }, qty = { "int", min = 1, max = 10 } } },
    quest_step = { data = { quest = { "string", max = 40 },
                            step = { "int", min = 1, max = 100 } } },
    -- a player killed another (the sender is the killer): no xp; the mods hear player.killed
    pvp_kill = { data = { victim = { "int", min = 1, max = 9007199254740991 } } },
}

_M.EVENTS_MAX = 1000         -- events in one call
_M.EVENT_ID_MAX = 64         -- bytes of a client's event id
_M.EVENT_DATA_MAX = 1024     -- bytes of an event's data, encoded
_M.EVENT_FUTURE_S = 300      -- a ts at most this far ahead of the server's clock
_M.EVENT_PAST_S = 86400      -- ...and at most this far behind it


local function check_field(v, spec)
    local kind = spec[1]
    if kind == "string" then
        return type(v) == "string" and #v >= 1 and #v <= (spec.max or 256)
    elseif kind == "int" then
        return type(v) == "number" and v == math.floor(v) and v >= (spec.min or -2 ^ 53) and
               v <= (spec.max or 2 ^ 53)
    end
    return false
end


-- One event of a batch, checked and made the server's: the cleaned event
-- {id, type, player_id, ts, data} or nil, code, message. `now` is the server's clock (epoch
-- seconds); `data_size` the encoded size of e.data (the caller encodes).
function _M.event(e, now, data_size)
    if type(e) ~= "table" then
        return nil, "invalid_event", "an event is an object"
    end
    if type(e.id) ~= "string" or #e.id < 1 or #e.id > _M.EVENT_ID_MAX or
       e.id:find("[%z\1-\31]") then
        return nil, "invalid_event", "id: a string of 1-" .. _M.EVENT_ID_MAX .. " bytes"
    end
    local t = type(e.type) == "string" and _M.EVENT_TYPES[e.type]
    if not t then
        return nil, "unknown_type", "type: not an event type of this game"
    end
    local pid = e.player_id
    if type(pid) ~= "number" or pid < 1 or pid ~= math.floor(pid) or pid > 2 ^ 53 then
        return nil, "invalid_event", "player_id: a player id"
    end
    local ts = e.ts
    if type(ts) ~= "number" or ts ~= ts then
        return nil, "invalid_event", "ts: epoch seconds"
    end
    if ts > now + _M.EVENT_FUTURE_S or ts < now - _M.EVENT_PAST_S then
        return nil, "bad_timestamp", "ts: too far from the server's clock"
    end
    if type(e.data) ~= "table" then
        return nil, "invalid_event", "data: an object"
    end
    if (data_size or 0) > _M.EVENT_DATA_MAX then
        return nil, "too_large", "data: at most " .. _M.EVENT_DATA_MAX .. " bytes"
    end
    local data = {}
    for name, spec in pairs(t.data) do
        if not check_field(e.data[name], spec) then
            return nil, "invalid_event", "data." .. name .. ": " .. spec[1] ..
                   (spec.max and (" up to " .. spec.max) or "")
        end
        data[name] = e.data[name]
    end
    for name in pairs(e.data) do
        if not t.data[name] then
            return nil, "invalid_event", "data." .. tostring(name) .. ": not a field of " .. e.type
        end
    end
    return { id = e.id, type = e.type, player_id = pid, ts = ts, data = data }
end


return _M
