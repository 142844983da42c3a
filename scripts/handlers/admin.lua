-- handlers/admin.lua: account administration and the audit log (API.md "Admin and
-- operations"). Every call here writes an audit entry.
local audit = require "lib.audit"
local regions = require "lib.regions"
local time = require "mmo.time"
local world = require "mmo.world"
local ws = require "mmo.ws"
local cache = require "mmo.cache"
local db = require "mmo.db"
local http = require "lib.http"
local json = require "mmo.json"
local log = require "mmo.log"
local scripts = require "mmo.scripts"
local session = require "lib.session"
local vitals = require "lib.vitals"
local validation = require "rules.validation"

local ipairs = ipairs
local math_floor = math.floor
local tonumber = tonumber
local tostring = tostring
local type = type


local _M = {}


local function account_id(req)
    local id = tonumber(req.params.id)
    if not id or id < 1 or id ~= math_floor(id) or id > 9007199254740991 then
        http.fail(404, "not_found", "no such account")
    end
    return id
end


local function has(list, role)
    for _, r in ipairs(list or {}) do
        if r == role then
            return true
        end
    end
    return false
end


-- POST /api/admin/accounts/:id/roles {roles}
function _M.set_roles(req)
    local id = account_id(req)
    local body = req.body
    local roles = type(body) == "table" and body.roles or nil
    local ok, msg = validation.roles(roles)
    if not ok then
        http.fail(422, "validation_failed", msg)
    end
    local acct
    http.check(db.tx(function(q)
        local rows = http.check(q("select id, username, array_to_json(roles) as roles " ..
                                  "from accounts where id = $1 for update", id))
        acct = rows[1]
        if not acct then
            http.fail(404, "not_found", "no such account")
        end
        http.check(q("update accounts set roles = $2::text[] where id = $1", id,
                     "{" .. table.concat(roles, ",") .. "}"))
        http.check(audit.write(req, "account.roles", "account:" .. id,
                               { from = acct.roles, to = roles }, nil, q))
        return true
    end))
    local sessions, err = session.set_roles(id, roles)
    if not sessions then
        http.fail(503, "unavailable",
                  "roles saved, but live sessions could not be updated (" .. tostring(err) ..
                  "); they get the new roles at their next refresh")
    end
    return 200, { id = id, username = acct.username, roles = roles, sessions = sessions }
end


-- POST /api/admin/accounts/:id/ban {reason, minutes}
function _M.ban(req)
    local id = account_id(req)
    local ok, msg = validation.ban(req.body)
    if not ok then
        http.fail(422, "validation_failed", msg)
    end
    local body = req.body
    local result
    http.check(db.tx(function(q)
        local rows = http.check(q("select id, array_to_json(roles) as roles from accounts " ..
                                  "where id = $1 for update", id))
        local acct = rows[1]
        if not acct then
            http.fail(404, "not_found", "no such account")
        end
        if has(acct.roles, "admin") and not has(req.account.roles, "admin") then
            http.fail(403, "forbidden", "only an admin can ban an admin")
        end
        rows = http.check(q(
            "update accounts set banned_until = now() + make_interval(mins => $2), " ..
            "ban_reason = $3 where id = $1 returning to_char(banned_until at time zone 'UTC', " ..
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as banned_until", id, body.minutes, body.reason))
        result = rows[1]
        http.check(audit.write(req, "account.ban", "account:" .. id,
                               { reason = body.reason, minutes = body.minutes }, nil, q))
        return true
    end))
    ws.close_account(id, 4003, "banned")
    local ended, err = session.finish_all(id)
    if not ended then
        http.fail(503, "unavailable",
                  "ban saved, but live sessions could not be ended (" .. tostring(err) ..
                  "); retry")
    end
    return 200, { id = id, banned_until = result.banned_until, reason = body.reason,
                  sessions_ended = ended }
end


-- POST /api/admin/accounts/:id/kick {reason}: the account's live sessions end on every node
-- (its tokens with them) and its connections here close with 4004; no ban: it may log in again
function _M.kick(req)
    local id = account_id(req)
    local ok, msg = validation.kick(req.body)
    if not ok then
        http.fail(422, "validation_failed", msg)
    end
    local reason = req.body and req.body.reason or json.null
    local rows = http.check(db.query("select array_to_json(roles) as roles from accounts " ..
                                     "where id = $1", id))
    if not rows[1] then
        http.fail(404, "not_found", "no such account")
    end
    if has(rows[1].roles, "admin") and not has(req.account.roles, "admin") then
        http.fail(403, "forbidden", "only an admin can kick an admin")
    end
    local closed = ws.close_account(id, 4004, "kicked")
    local ended, err = session.finish_all(id)
    if not ended then
        http.fail(503, "unavailable", "live sessions could not be ended (" .. tostring(err) ..
                  "); retry")
    end
    http.check(audit.write(req, "account.kick", "account:" .. id, { reason = reason }))
    return 200, { id = id, sessions_ended = ended, connections_closed = closed }
end


-- GET /api/admin/metrics (moderator): the node's vital signs over the last minutes, a sample
-- every few seconds (lib/vitals.lua): what the console charts
function _M.metrics()
    return 200, vitals.recent()
end


-- timer (routes.lua): one more sample of them
function _M.vitals()
    vitals.sample()
end


-- GET /api/admin/sessions (moderator): live WebSocket sessions of every node (presence in
-- Redis, written by handlers/realtime.lua), newest first; and this node's players per region
function _M.sessions(req)
    local now = math_floor(time.now())
    local keys = http.check(cache.cmd("ZREVRANGEBYSCORE", "ws:sessions", "+inf", now - 120,
                                      "LIMIT", 0, 1000))
    local cmds = {}
    for i, k in ipairs(keys) do
        cmds[i] = { "HGETALL", k }
    end
    local rows = #cmds > 0 and http.check(cache.pipeline(cmds)) or {}
    local sessions = json.array({})
    for _, r in ipairs(rows) do
        if type(r) == "table" and #r > 0 then
            local t = {}
            for i = 1, #r, 2 do
                t[r[i]] = tonumber(r[i + 1]) or r[i + 1]
            end
            sessions[#sessions + 1] = {
                account_id = t.account_id, player_id = t.player_id ~= 0 and t.player_id or nil,
                node = t.node, connected_at = t.connected_at, last_seen = t.last_seen,
                region = t.region ~= "" and t.region or nil, ip = t.ip,
            }
        end
    end
    cache.cmd("ZREMRANGEBYSCORE", "ws:sessions", "-inf", now - 120) -- nodes that died
    audit.write(req, "admin.sessions.read")
    local online = {}
    for _, r in ipairs(regions.all()) do
        online[r.id] = world.online(r.id)
    end
    return 200, { sessions = sessions, online = online }
end


-- GET /api/admin/cache: this node's cache layers, hits and misses per layer
function _M.cache(req)
    audit.write(req, "admin.cache.read")
    return 200, cache.layers()
end


-- GET /api/admin/log: this node's log level; PUT /api/admin/log {level}: change it, now, on
-- this node (config.lua log.level is what a restart goes back to)
function _M.log_level(req)
    if req.method == "PUT" then
        local level = type(req.body) == "table" and req.body.level
        if type(level) ~= "string" or not log.set_level(level) then
            http.fail(422, "validation_failed", "level: debug, info, warn, error or off")
        end
        audit.write(req, "admin.log_level", level)
    end
    return 200, { level = log.level() }
end


-- GET /api/admin/audit?limit=&after=&action=&actor=
function _M.audit(req)
    local q = req.query
    local limit = tonumber(q.limit or 50)
    if not limit or limit < 1 or limit > 200 or limit ~= math_floor(limit) then
        http.fail(422, "validation_failed", "limit: a whole number from 1 to 200")
    end
    local after = q.after and tonumber(q.after)
    if q.after and (not after or after < 1 or after ~= math_floor(after)) then
        http.fail(422, "validation_failed", "after: an entry id")
    end
    local actor = q.actor and tonumber(q.actor)
    if q.actor and not actor then
        http.fail(422, "validation_failed", "actor: an account id")
    end
    if q.action and #q.action > 64 then
        http.fail(422, "validation_failed", "action: too long")
    end
    local rows = http.check(db.query(
        "select id, to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') as at, " ..
        "actor, action, target, data, ip, request_id from audit_log " ..
        "where ($1::bigint is null or id < $1) and ($2::text is null or action = $2) " ..
        "and ($3::bigint is null or actor = $3) order by id desc limit $4",
        after, q.action, actor, limit))
    audit.write(req, "admin.audit.read", nil, { after = after, action = q.action, actor = actor })
    local entries = json.array({})
    for i, r in ipairs(rows) do
        entries[i] = r
    end
    return 200, { entries = entries, next = #rows == limit and rows[#rows].id or nil }
end


-- GET /api/admin/scripts: the script set in use (version, hash, modules), the state store
-- and the mods.
function _M.scripts()
    return 200, scripts.info()
end


-- POST /api/admin/scripts/reload and /rollback: the core loads the set between two events and
-- audits it; this handler, begun on the old code, finishes on it.
local function load(req, fn)
    local info, err = fn("account:" .. tostring(req.account.id))
    if not info then
        if err.no_previous then
            http.fail(409, "conflict", err.message)
        end
        http.fail(422, "script_error", err.message, { file = err.file, line = err.line })
    end
    return 200, { version = info.version, hash = info.hash, loaded_at = info.loaded_at }
end


function _M.scripts_reload(req)
    return load(req, scripts.reload)
end


function _M.scripts_rollback(req)
    return load(req, scripts.rollback)
end


return _M
