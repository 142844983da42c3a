-- rules/movement.lua: may a player move from here to there? One rule for HTTP (PATCH
-- position) and WebSocket moves. Pure: the caller passes the clock and the regions.
--
--   movement.check(from, to, now, speed, regions) -> region_id | nil, reason
--     from = { x, y, region, at }   where the player is, and when it got there (seconds)
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
    local elapsed = min(_M.MAX_STEP_SECONDS, now - (from.at or now))
    if elapsed < 0 then
        elapsed = 0
    end
    if dist > speed * elapsed * _M.TOLERANCE + _M.SLACK then
        return nil, "too_fast"
    end
    return target.id
end


return _M
