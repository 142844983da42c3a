-- handlers/auth.lua: register, login, refresh, logout, me (API.md "Accounts and sessions").
local audit = require "lib.audit"
local auth = require "mmo.auth"
local crypto = require "mmo.crypto"
local db = require "mmo.db"
local http = require "lib.http"
local json = require "mmo.json"
local players = require "lib.players"
local session = require "lib.session"
local validation = require "rules.validation"
local ws = require "mmo.ws"

local ipairs = ipairs
local tostring = tostring


local LOGINS = require("mmo.metrics").counter("mmo_logins_total",
    "Sign-ins, by result (success, failure, banned)", { "result" })

local _M = {}

local ACCOUNT_BY_NAME = "select id, username, password_hash, array_to_json(roles) as roles, " ..
                        "coalesce(banned_until > now(), false) as banned, " ..
                        "to_char(banned_until at time zone 'UTC', " ..
                        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as banned_until " ..
                        "from accounts where lower(username) = lower($1)"

local ACCOUNT_BY_ID = "select id, username, array_to_json(roles) as roles, " ..
                      "coalesce(banned_until > now(), false) as banned " ..
                      "from accounts where id = $1"


local function invalid(msg)
    http.fail(422, "validation_failed", msg)
end


local function tokens(account_id, sid, refresh, roles)
    local token, ttl = http.check(auth.sign(account_id, sid, roles))
    return {
        access_token = token,
        token_type = "Bearer",
        expires_in = ttl,
        refresh_token = refresh,
        account_id = account_id,
        roles = roles,
    }
end


function _M.register(req)
    local body = http.body(req, { "username", "password" }, 1024)
    local ok, msg = validation.username(body.username)
    if not ok then
        invalid(msg)
    end
    ok, msg = validation.password(body.password, body.username)
    if not ok then
        invalid(msg)
    end
    local hash = http.check(crypto.hash_password(body.password))
    local rows, err, detail = db.query(
        "insert into accounts (username, password_hash) values ($1, $2) " ..
        "returning id, username, array_to_json(roles) as roles", body.username, hash)
    if not rows then
        if detail and detail.sqlstate == "23505" then
            http.fail(409, "username_taken", "that username is taken")
        end
        http.check(nil, err)
    end
    local acct = rows[1]
    audit.write(req, "account.register", "account:" .. acct.id, { username = acct.username },
                acct.id)
    return 201, { id = acct.id, username = acct.username, roles = acct.roles }
end


function _M.login(req)
    local body = http.body(req, { "username", "password" }, 1024)
    -- longer than any account could have: refused before any work (a 10 kB name, say)
    if #body.username > 64 or #body.password > validation.PASSWORD_MAX then
        invalid("username or password too long")
    end
    local rows = http.check(db.query(ACCOUNT_BY_NAME, body.username))
    local acct = rows[1]
    -- always hash: an unknown user costs the same time as a wrong password
    local good = http.check(crypto.verify_password(body.password, acct and acct.password_hash))
    if not acct or good ~= true then
        audit.write(req, "login.failure", "username:" .. body.username:sub(1, 64),
                    { username = body.username:sub(1, 64), known = acct ~= nil })
        LOGINS:inc(1, "failure")
        http.fail(401, "invalid_credentials", "wrong username or password")
    end
    if acct.banned then
        audit.write(req, "login.banned", "account:" .. acct.id,
                    { banned_until = acct.banned_until }, acct.id)
        LOGINS:inc(1, "banned")
        http.fail(403, "account_banned", "this account is banned",
                  { banned_until = acct.banned_until })
    end
    local sid, refresh = http.check(session.create(acct.id, acct.roles))
    audit.write(req, "login.success", "account:" .. acct.id, { sid = sid }, acct.id)
    LOGINS:inc(1, "success")
    return 200, tokens(acct.id, sid, refresh, acct.roles)
end


function _M.refresh(req)
    local body = http.body(req, { "refresh_token" }, 256)
    local verdict, acct_id, sid, new = session.rotate(body.refresh_token)
    http.check(verdict, acct_id)
    if verdict == "reused" then
        audit.write(req, "refresh.reuse", "account:" .. tostring(acct_id), { sid = sid }, acct_id)
        http.fail(401, "refresh_token_reused",
                  "this refresh token was already used: the session is ended; sign in again")
    end
    if verdict ~= "ok" then
        http.fail(401, "invalid_refresh_token", "the refresh token is not valid")
    end
    -- roles and bans come from the database again at every refresh
    local acct = http.check(db.query(ACCOUNT_BY_ID, acct_id))[1]
    if not acct or acct.banned then
        session.finish(acct_id, sid)
        http.fail(401, "invalid_refresh_token", "the refresh token is not valid")
    end
    http.check(session.set_session_roles(sid, acct.roles))
    auth.forget(sid)
    return 200, tokens(acct.id, sid, new, acct.roles)
end


function _M.logout(req)
    local a = req.account
    http.check(session.finish(a.id, a.sid))
    ws.close_session(a.sid, 4001, "logged out")
    audit.write(req, "logout", "account:" .. a.id, { sid = a.sid })
    return 204
end


-- The account's players (API.md: GET /api/me), oldest first, as their documents: ids from
-- the directory (main database), documents from the cache layers or the shards.
local function my_players(account_id)
    local rows = http.check(db.query(
        "select id from player_directory where account_id = $1 order by id", account_id))
    local list = {}
    for _, r in ipairs(rows) do
        local doc = players.document(r.id) -- nil: deleted meanwhile
        doc = doc and json.decode(doc)
        if doc then
            doc.buffs = json.array(doc.buffs or {}) -- decoded [] would encode as {}
            list[#list + 1] = doc
        end
    end
    return #list > 0 and list or json.empty_array
end


function _M.me(req)
    local acct = http.check(db.query(ACCOUNT_BY_ID, req.account.id))[1]
    if not acct then
        http.fail(404, "not_found", "no such account")
    end
    return 200, { id = acct.id, username = acct.username, roles = acct.roles,
                  players = my_players(req.account.id) }
end


return _M
