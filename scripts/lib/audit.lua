-- lib/audit.lua: the audit log (an append-only PostgreSQL table) and its JSON log line.
--
--   audit.write(req, "login.failure", "account:42", { username = "aria" })
--   audit.write(req, "account.roles", target, data, actor, q)   -- q: inside db.tx
--
-- actor defaults to the signed-in account of req (nil: anonymous). Every entry also goes to
-- the JSON log (tag lua, msg "audit") with the request id, so a log pipeline sees it even
-- when PostgreSQL is down. Returns true or nil, err.
local db = require "mmo.db"
local log = require "mmo.log"

local tostring = tostring


local _M = {}

local INSERT = "insert into audit_log (actor, action, target, data, ip, request_id) " ..
               "values ($1, $2, $3, $4, $5, $6)"


function _M.write(req, action, target, data, actor, q)
    if actor == nil and req.account then
        actor = req.account.id
    end
    target = target ~= nil and tostring(target) or nil
    log.info("audit", { audit_action = action, actor = actor, target = target, ip = req.ip,
                        data = data })
    local rows, err = (q or db.query)(INSERT, actor, action, target, data or {}, req.ip, req.id)
    if not rows then
        log.error("audit entry not stored: " .. tostring(err), { audit_action = action })
        return nil, err
    end
    return true
end


return _M
