-- rules/guild.lua: what a guild may be called and how many it holds. Pure functions.
local type = type


local _M = {}

_M.NAME_MIN = 3
_M.NAME_MAX = 24
_M.MAX_MEMBERS = 50


-- A guild name: 3-24 characters, letters and digits with single inner spaces ("Night Owls").
function _M.valid_name(name)
    if type(name) ~= "string" then
        return nil, "name: must be a string"
    end
    if #name < _M.NAME_MIN or #name > _M.NAME_MAX then
        return nil, "name: must be " .. _M.NAME_MIN .. "-" .. _M.NAME_MAX .. " characters"
    end
    if not name:match("^[%w][%w ]*[%w]$") or name:find("  ", 1, true) then
        return nil, "name: letters and digits, single spaces between words"
    end
    return true
end


-- May a guild of `members` take one more?
function _M.has_room(members)
    return members < _M.MAX_MEMBERS
end


-- Who leads after the leader left: the member who joined first ({player_id, joined_at} rows,
-- in the order they joined), or nil when nobody is left.
function _M.next_leader(rest)
    local first = rest[1]
    return first and first.player_id or nil
end


return _M
