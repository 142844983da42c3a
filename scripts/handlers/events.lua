-- handlers/events.lua: game events over HTTP (API.md "Game events (pipeline)") and the
-- pipeline's state (lib/pipeline.lua).
local audit = require "lib.audit"
local http = require "lib.http"
local json = require "mmo.json"
local pipeline = require "lib.pipeline"
local validation = require "rules.validation"

local next = next
local tonumber = tonumber
local type = type


local _M = {}


-- POST /api/events {events: [{id, type, player_id, ts, data}, ...]} -> 202 {accepted, rejected}
function _M.ingest(req)
    local body = req.body
    if type(body) ~= "table" or type(body.events) ~= "table" then
        http.fail(422, "validation_failed", "events: a list of events")
    end
    local events = body.events
    local n = #events
    if n == 0 or next(events, n > 0 and n or nil) ~= nil then
        http.fail(422, "validation_failed", "events: a non-empty list of events")
    end
    if n > validation.EVENTS_MAX then
        http.fail(413, "too_many_events", "at most " .. validation.EVENTS_MAX ..
                  " events in one call")
    end
    local accepted, rejected = pipeline.ingest(req.account.id, req.account.sid, events)
    if not accepted then
        http.fail(503, "unavailable", "the event stream is unavailable; nothing was accepted, " ..
                  "send the batch again")
    end
    return 202, { accepted = accepted, rejected = rejected or json.array({}) }
end


-- timer (routes.lua): the stream's new events to their effects, on nodes with the worker role
-- (config.lua pipeline.worker, on by default)
local worker = require("mmo.world").settings().worker
function _M.consume()
    if worker then
        pipeline.consume()
    end
end


-- GET /api/admin/queues: the stream, the consumer group, dead letters, this node's counters
function _M.queues()
    return 200, http.check(pipeline.status())
end


-- A dead letter's id from the path (a stream id), or 404.
local function letter_id(text)
    if not text:match("^%d+%-%d+$") or #text > 40 then
        http.fail(404, "not_found", "no such dead letter")
    end
    return text
end


-- GET /api/admin/queues/dead?limit=&after=: the oldest dead letters
function _M.dead(req)
    local limit = tonumber(req.query.limit or 50)
    if not limit or limit < 1 or limit > 1000 or limit ~= math.floor(limit) then
        http.fail(422, "validation_failed", "limit: a whole number from 1 to 1000")
    end
    local after = req.query.after
    if after and not after:match("^%d+%-%d+$") then
        http.fail(422, "validation_failed", "after: a dead letter's id")
    end
    return 200, { dead = http.check(pipeline.dead(limit, after)) }
end


-- POST /api/admin/queues/dead/:id/requeue
function _M.requeue(req)
    local id = letter_id(req.params.id)
    local new, err = pipeline.requeue(id)
    if new == false then
        http.fail(404, "not_found", "no such dead letter")
    end
    if not new then
        http.check(nil, err)
    end
    audit.write(req, "queue.requeue", id, { entry = new })
    return 200, { requeued = id, entry = new }
end


-- DELETE /api/admin/queues/dead/:id
function _M.drop(req)
    local id = letter_id(req.params.id)
    local ok = http.check(pipeline.drop(id))
    if not ok then
        http.fail(404, "not_found", "no such dead letter")
    end
    audit.write(req, "queue.drop", id)
    return 204
end


return _M
