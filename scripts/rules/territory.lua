-- rules/territory.lua: capturing territories. Pure functions over plain tables: no clock and
-- no I/O here; the region's tick calls step() with the seconds since the last tick.
--
-- A territory's state: { owner_guild = id | nil, capturing_guild = id | nil, progress = 0..100 }.
-- Who stands in it each tick: present = { [guild_id] = players } (guild 0: players without a
-- guild, who neither capture nor contest).
--   - nobody of a guild there: progress decays (DECAY_PER_S) toward 0
--   - members of two or more guilds: contested, progress holds
--   - one guild alone, the owner: a challenger's progress decays (defence)
--   - one guild alone, not the owner: it captures; RATE_PER_MEMBER_S per member, counted up to
--     MAX_COUNTED members, so a crowd is faster but not unboundedly; a guild that takes over a
--     capture begun by another starts from 0
--   - progress reaching 100: the capturing guild owns the territory, progress back to 0
local pairs = pairs


local _M = {}

_M.RATE_PER_MEMBER_S = 1.0   -- progress points per second per member present
_M.MAX_COUNTED = 5           -- members counted at most
_M.DECAY_PER_S = 2.0         -- progress points lost per second when nobody captures
_M.FULL = 100


-- The guilds present (guild ids > 0 with at least one player), as a count and the one guild
-- when there is exactly one.
function _M.guilds(present)
    local n, only, members = 0, nil, 0
    for g, count in pairs(present or {}) do
        if g ~= 0 and count > 0 then
            n = n + 1
            only, members = g, count
        end
    end
    return n, only, members
end


-- The state after dt seconds with `present` standing in the territory: a new table
-- { owner_guild, capturing_guild, progress, contested, captured = true when ownership changed }.
function _M.step(state, present, dt)
    local owner, capturing, progress = state.owner_guild, state.capturing_guild, state.progress or 0
    local n, only, members = _M.guilds(present)
    local out = { owner_guild = owner, capturing_guild = capturing, progress = progress,
                  contested = n >= 2 }
    if n >= 2 then
        return out
    end
    if n == 0 or only == owner then
        out.progress = progress - _M.DECAY_PER_S * dt
        if out.progress <= 0 then
            out.progress, out.capturing_guild = 0, nil
        end
        return out
    end
    if capturing ~= only then
        capturing, progress = only, 0
    end
    local counted = members < _M.MAX_COUNTED and members or _M.MAX_COUNTED
    progress = progress + _M.RATE_PER_MEMBER_S * counted * dt
    if progress >= _M.FULL then
        out.owner_guild, out.capturing_guild, out.progress, out.captured = only, nil, 0, true
        return out
    end
    out.capturing_guild, out.progress = capturing, progress
    return out
end


return _M
