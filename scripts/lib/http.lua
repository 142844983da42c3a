-- lib/http.lua: helpers for handlers to answer errors in the one error shape of API.md.
--
--   local http = require "lib.http"
--   http.fail(409, "name_taken", "that name is taken")       -- raises; the core answers it
--   local rows = http.check(db.query(...))                   -- nil, err -> 503 / 500
--   local body = http.body(req, { "username", "password" })   -- an object with these strings
--
-- A raised error table {status, code, message, details} becomes that HTTP error; any other
-- error becomes a 500 with the request id, and its traceback goes to the log.
local error = error
local setmetatable = setmetatable
local ipairs = ipairs
local tostring = tostring
local type = type


local _M = {}


local typed_mt = {
    __tostring = function(e)
        return e.status .. " " .. e.code .. ": " .. tostring(e.message)
    end,
}


function _M.error(status, code, message, details)
    return setmetatable({ status = status, code = code, message = message,
                          details = details }, typed_mt)
end


function _M.fail(status, code, message, details)
    error(_M.error(status, code, message, details), 2)
end


-- Dependencies that are down or slow answer 503; anything else is a bug (500).
local UNAVAILABLE = { unavailable = true, timeout = true, closed = true, busy = true }


function _M.check(value, err, detail, ...)
    if value ~= nil then
        return value, err, detail, ...
    end
    if UNAVAILABLE[err] then
        error(_M.error(503, "unavailable", "a service this call needs is unavailable (" ..
                       tostring(err) .. ")"), 2)
    end
    -- the log gets what PostgreSQL said (the client only "internal error")
    local why = ""
    if type(detail) == "table" then
        why = (" (%s %s%s)"):format(tostring(detail.sqlstate), tostring(detail.message),
                                    detail.constraint and (", constraint " .. detail.constraint)
                                    or "")
    elseif detail ~= nil then
        why = " (" .. tostring(detail) .. ")"
    end
    error("unexpected failure: " .. tostring(err) .. why, 2)
end


-- The request's JSON body, which must be an object whose listed fields are strings of at most
-- max_len bytes (default 1024); anything else is a 422 that names the field.
function _M.body(req, fields, max_len)
    local body = req.body
    if type(body) ~= "table" then
        _M.fail(422, "validation_failed", "body: must be a JSON object")
    end
    max_len = max_len or 1024
    for _, f in ipairs(fields or {}) do
        local v = body[f]
        if type(v) ~= "string" then
            _M.fail(422, "validation_failed", f .. ": must be a string", { field = f })
        end
        if #v > max_len then
            _M.fail(422, "validation_failed", f .. ": too long", { field = f })
        end
    end
    return body
end


return _M
