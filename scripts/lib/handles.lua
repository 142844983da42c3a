-- lib/handles.lua: safe handles to players, regions and world events.
--
-- A rule that keeps a player id past the player's stay may act on someone who left, or on a
-- later stay of the same player. A handle holds the id and the generation it was made for
-- (mmo.world's stay of a player, this node's ownership of a region, the event's run); using a
-- stale handle raises a Lua error ("stale handle: ..."), which fails that handler or hook
-- alone, never the node. Timers made through a handle (h:after, h:every) never run once it is
-- stale, and those of a player are cancelled when it leaves (handles.left, called by the
-- realtime handlers).
--
--   local h = handles.player(id)        -> handle | nil (not in the world)
--   h:valid()                           -> boolean
--   h:position()                        -> {x, y, region, at, name, guild}   (raises if stale)
--   h:after(s, fn) / h:every(s, fn)     -> timer; fn(h) runs only while h is valid
--   handles.region(id)                  -> handle while this node owns it; r:valid()
--   handles.event(runner, id)           -> handle while the event runs; e:data()
local leases = require "lib.leases"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"

local error = error
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring


local _M = {}

-- "player:<id>" -> { [timer] = true }; kept across reloads, so a player who leaves loses the
-- timers made by the code before the reload too
local timers = state.global("handles.timers")


local function stale(h)
    error("stale handle: " .. h.kind .. " " .. tostring(h.id) .. " " .. h.gone, 3)
end


local Handle = {}
Handle.__index = Handle

function Handle:check()
    if not self:valid() then
        stale(self)
    end
    return self
end


local function track(h, t)
    local key = h.kind .. ":" .. tostring(h.id)
    local set = timers[key]
    if not set then
        set = {}
        timers[key] = set
    end
    set[t] = true
    return t
end


function Handle:after(seconds, fn)
    self:check()
    local t
    t = time.after(seconds, function()
        local key = self.kind .. ":" .. tostring(self.id)
        if timers[key] then
            timers[key][t] = nil
        end
        if self:valid() then
            fn(self)
        end
    end)
    return track(self, t)
end


function Handle:every(seconds, fn)
    self:check()
    local t
    t = time.every(seconds, function()
        if self:valid() then
            fn(self)
        else
            t:cancel()
        end
    end)
    return track(self, t)
end


-- players ----------------------------------------------------------------------------------

local Player = setmetatable({}, { __index = Handle })
Player.__index = Player

function Player:valid()
    return world.generation(self.id) == self.gen
end

function Player:position()
    self:check()
    return world.position(self.id)
end


function _M.player(id)
    local gen = world.generation(id)
    if not gen then
        return nil, "not in the world"
    end
    return setmetatable({ kind = "player", id = id, gen = gen, gone = "left the world" }, Player)
end


-- A player left the world: its timers go with it.
function _M.left(player_id)
    local key = "player:" .. tostring(player_id)
    local set = timers[key]
    timers[key] = nil
    for t in pairs(set or {}) do
        t:cancel()
    end
end


-- regions ------------------------------------------------------------------------------------

local Region = setmetatable({}, { __index = Handle })
Region.__index = Region

function Region:valid()
    return leases.mine(self.id) and leases.generation(self.id) == self.gen
end


function _M.region(id)
    if not leases.mine(id) then
        return nil, "not owned by this node"
    end
    return setmetatable({ kind = "region", id = id, gen = leases.generation(id),
                          gone = "is owned by another node now" }, Region)
end


-- world events -------------------------------------------------------------------------------

local Event = setmetatable({}, { __index = Handle })
Event.__index = Event

function Event:valid()
    local ev = self.runner:get(self.id)
    return ev == self.ev and ev.state ~= "ended"
end

function Event:data()
    self:check()
    return self.ev.data
end


function _M.event(runner, id)
    local ev = runner:get(id)
    if not ev or ev.state == "ended" then
        return nil, "not running here"
    end
    return setmetatable({ kind = "event", id = id, ev = ev, runner = runner,
                          gone = "has ended or moved to another node" }, Event)
end


return _M
