-- lib/session.lua: sessions in Redis, shared by the auth and admin handlers.
--
-- A session is the hash sess:<sid> = { acct, roles ("player,admin"), rt (SHA-256 of the
-- current refresh token), created }, expiring refresh_ttl_s after its last refresh. The
-- refresh tokens already used are kept in the set sess:<sid>:used (theft detection), and the
-- set acct:<id>:sess lists an account's sessions (for bans and role changes).
-- core/auth.c reads sess:<sid> (acct, roles) before every request of a signed-in client.
local auth = require "mmo.auth"
local cache = require "mmo.cache"
local crypto = require "mmo.crypto"
local time = require "mmo.time"

local concat = table.concat
local math_floor = math.floor
local ipairs = ipairs
local tostring = tostring
local type = type


local _M = {}

-- atomically: the presented token is current -> rotate; already used -> end the session
local ROTATE = [[
local cur = redis.call('HGET', KEYS[1], 'rt')
if not cur then return {'gone'} end
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'rt', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {'ok', redis.call('HGET', KEYS[1], 'acct')}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  local acct = redis.call('HGET', KEYS[1], 'acct')
  redis.call('DEL', KEYS[1], KEYS[2])
  if acct then redis.call('SREM', 'acct:' .. acct .. ':sess', ARGV[4]) end
  return {'reused', acct}
end
return {'bad'}
]]

-- every session of an account: end them all (ban)
local END_ALL = [[
local sids = redis.call('SMEMBERS', KEYS[1])
for _, sid in ipairs(sids) do
  redis.call('DEL', 'sess:' .. sid, 'sess:' .. sid .. ':used')
end
redis.call('DEL', KEYS[1])
return sids
]]

-- every live session of an account gets new roles (dead ones leave the set)
local SET_ROLES = [[
local sids = redis.call('SMEMBERS', KEYS[1])
local live = {}
for _, sid in ipairs(sids) do
  if redis.call('EXISTS', 'sess:' .. sid) == 1 then
    redis.call('HSET', 'sess:' .. sid, 'roles', ARGV[1])
    live[#live + 1] = sid
  else
    redis.call('SREM', KEYS[1], sid)
  end
end
return live
]]


local function ttl_ms()
    return auth.settings().refresh_ttl_s * 1000
end


-- A new session: returns sid, refresh_token | nil, err.
function _M.create(account_id, roles)
    local sid = crypto.random(24)
    local refresh = sid .. "." .. crypto.random(32)
    local key = "sess:" .. sid
    local ms = ttl_ms()
    local res, err = cache.pipeline({
        { "HSET", key, "acct", account_id, "roles", concat(roles, ","),
          "rt", crypto.sha256(refresh), "created", math_floor(time.now()) },
        { "PEXPIRE", key, ms },
        { "SADD", "acct:" .. account_id .. ":sess", sid },
        { "PEXPIRE", "acct:" .. account_id .. ":sess", ms },
    })
    if not res then
        return nil, err
    end
    for _, r in ipairs(res) do
        if type(r) == "table" and r.err then
            return nil, r.err
        end
    end
    return sid, refresh
end


-- Split "<sid>.<secret>"; nil when it cannot be one of ours.
function _M.parse_refresh(token)
    if type(token) ~= "string" or #token > 200 then
        return nil
    end
    local sid = token:match("^([%w_%-]+)%.[%w_%-]+$")
    if not sid or not auth.valid_sid(sid) then
        return nil
    end
    return sid
end


-- Rotate a refresh token. Returns "ok", account_id, sid, new_token | "reused", account_id |
-- "bad" | nil, err.
function _M.rotate(token)
    local sid = _M.parse_refresh(token)
    if not sid then
        return "bad"
    end
    local new = sid .. "." .. crypto.random(32)
    local key = "sess:" .. sid
    local res, err = cache.eval(ROTATE, { key, key .. ":used" },
                                { crypto.sha256(token), crypto.sha256(new), ttl_ms(), sid })
    if not res then
        return nil, err
    end
    local verdict, acct = res[1], tonumber(res[2])
    if verdict == "ok" then
        return "ok", acct, sid, new
    elseif verdict == "reused" then
        auth.forget(sid)
        return "reused", acct, sid
    end
    return "bad"
end


-- Make the session's roles those given (after a refresh re-read them).
function _M.set_session_roles(sid, roles)
    return cache.cmd("HSET", "sess:" .. sid, "roles", concat(roles, ","))
end


-- End one session (logout).
function _M.finish(account_id, sid)
    local res, err = cache.pipeline({
        { "DEL", "sess:" .. sid, "sess:" .. sid .. ":used" },
        { "SREM", "acct:" .. tostring(account_id) .. ":sess", sid },
    })
    auth.forget(sid)
    return res, err
end


-- End every session of an account (ban): returns how many | nil, err.
function _M.finish_all(account_id)
    local sids, err = cache.eval(END_ALL, { "acct:" .. tostring(account_id) .. ":sess" }, {})
    if not sids then
        return nil, err
    end
    for _, sid in ipairs(sids) do
        auth.forget(sid)
    end
    return #sids
end


-- New roles for every live session of an account: returns how many | nil, err.
function _M.set_roles(account_id, roles)
    local sids, err = cache.eval(SET_ROLES, { "acct:" .. tostring(account_id) .. ":sess" },
                                 { concat(roles, ",") })
    if not sids then
        return nil, err
    end
    for _, sid in ipairs(sids) do
        auth.forget(sid)
    end
    return #sids
end


return _M
