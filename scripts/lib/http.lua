-- lib/http.lua: helpers for handlers to answer errors in the one error shape of API.md.
--
--   local http = require "lib.http"
--   http.fail(409, "name_taken", "that name is taken")       -- raises; the core answers it
--   local rows = http.check(db.query(...))                   -- nil, err -> 503 / 500
--
-- A raised error table {status, code, message, details} becomes that HTTP error; any other
-- error becomes a 500 with the request id, and its traceback goes to the log.
local error = error
local setmetatable = setmetatable
local tostring = tostring


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
local UNAVAILABLE = { unavailable = true, timeout = true, closed = true }


function _M.check(value, err, ...)
    if value ~= nil then
        return value, err, ...
    end
    if UNAVAILABLE[err] then
        error(_M.error(503, "unavailable", "a service this call needs is unavailable (" ..
                       tostring(err) .. ")"), 2)
    end
    error("unexpected failure: " .. tostring(err), 2)
end


return _M
