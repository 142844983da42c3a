-- handlers/events.lua: game events over HTTP (API.md "Game events (pipeline)") and the
-- pipeline's state (lib/pipeline.lua).
local http = require "lib.http"
local json = require "mmo.json"
local pipeline = require "lib.pipeline"
local validation = require "rules.validation"

local next = next
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


-- timer (routes.lua): the stream's new events to their effects
_M.consume = pipeline.consume


-- GET /api/admin/queues: the stream, the consumer group, dead letters, this node's counters
function _M.queues()
    return 200, http.check(pipeline.status())
end


return _M
