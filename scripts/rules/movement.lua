-- rules/movement.lua: may a player move from here to there? One rule for HTTP (PATCH
-- position) and WebSocket moves. Pure: the caller passes the clock and the regions.
--
--   movement.check(from, to, now, speed, regions) -> region_id, at | nil, reason
--     from = { x, y, region, at }   where the player is, and its travel clock (seconds): when
--                                   it got there, as the last check's `at` said
--     to = { x, y }                 where it wants to be
--     speed                         world units per second (rules.player stats, with buffs)
--     regions = { {id, x0, y0, x1, y1}, ... }   the world: the target must be in one
local abs = math.abs
local min = math.min
local sqrt = math.sqrt
local ipairs = ipairs
local type = type


local _M = {}

-- A move covers at most this many seconds of travel, however long the player stood still:
-- standing for an hour does not buy a teleport.
_M.MAX_STEP_SECONDS = 2
-- Slack for clocks and rounding: 10% over the speed, plus half a unit.
_M.TOLERANCE = 1.10
_M.SLACK = 0.5
-- The travel clock: an accepted move sets the player's clock (the `at` it returns) to when the
-- move would have ended at full speed, counted from the clock before it, not to now. Moves
-- that arrive bunched together (a network or a node that queued them) are still accepted on
-- the time the player really had, and the slack is a single allowance that travel time pays
-- back, not half a unit more on every message: a client that sends 30 moves a second goes no
-- further than one that sends 10. (The clock may run ahead of now by at most SLACK / speed.)


local function finite(v)
    return type(v) == "number" and v == v and abs(v) < 1e12
end


-- The region that contains (x, y): [x0, x1) x [y0, y1).
function _M.region_at(regions, x, y)
    for _, r in ipairs(regions) do
        if x >= r.x0 and x < r.x1 and y >= r.y0 and y < r.y1 then
            return r
        end
    end
    return nil
end


function _M.check(from, to, now, speed, regions)
    if type(to) ~= "table" or not finite(to.x) or not finite(to.y) then
        return nil, "bad_position"
    end
    local target = _M.region_at(regions, to.x, to.y)
    if not target then
        return nil, "out_of_bounds"
    end
    local dx, dy = to.x - from.x, to.y - from.y
    local dist = sqrt(dx * dx + dy * dy)
    -- the time the player had: since its clock, at most MAX_STEP_SECONDS; negative while the
    -- clock is ahead of now (slack used and not yet paid back)
    local elapsed = min(_M.MAX_STEP_SECONDS, now - (from.at or now))
    local rate = (type(speed) == "number" and speed > 0) and speed * _M.TOLERANCE or 0
    if dist > rate * elapsed + _M.SLACK then
        return nil, "too_fast"
    end
    local at = now
    if rate > 0 then
        at = (now - elapsed) + dist / rate
    end
    return target.id, at
end


return _M
