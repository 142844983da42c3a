-- lib/handles.lua with a fake world, clock and leases: a stale handle raises a Lua error, and
-- its timers never run.
local script = require "helpers.script"


describe("lib.handles", function()
    local gens, timers, handles, owned, leases_gen

    local function fake_time()
        return {
            after = function(_, fn)
                local t = { fn = fn, cancelled = false }
                function t.cancel() t.cancelled = true end
                timers[#timers + 1] = t
                return t
            end,
            every = function(_, fn)
                local t = { fn = fn, cancelled = false, every = true }
                function t.cancel() t.cancelled = true end
                timers[#timers + 1] = t
                return t
            end,
            monotonic = function() return 0 end,
        }
    end

    -- fire every timer that is not cancelled (an `every` one, as if its period passed)
    local function fire()
        for _, t in ipairs(timers) do
            if not t.cancelled then
                t.fn()
            end
        end
    end

    before_each(function()
        gens, timers, owned, leases_gen = {}, {}, {}, {}
        local world = {
            generation = function(id) return gens[id] end,
            position = function(id) return { x = 1, y = 2, region = "r1", id = id } end,
            settings = function() return { node = "n", view_radius = 100, lease_ms = 10000 } end,
        }
        handles = script.load("lib.handles", {
            ["mmo.world"] = world,
            ["mmo.time"] = fake_time(),
            ["mmo.crypto"] = { random = function() return "x" end },
            ["lib.leases"] = {
                mine = function(id) return owned[id] == true end,
                generation = function(id) return leases_gen[id] or 0 end,
            },
        })
    end)

    it("reads a player through a handle while its stay lasts, and raises after", function()
        gens[7] = 1
        local h = assert(handles.player(7))
        assert.is_true(h:valid())
        assert.equal(7, h:position().id)
        gens[7] = nil -- left
        assert.is_false(h:valid())
        local ok, err = pcall(h.position, h)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("stale handle: player 7 left the world", 1, true), err)
        gens[7] = 2 -- back, a new stay: the old handle stays stale
        assert.is_false(h:valid())
        assert.is_true(handles.player(7):valid())
        assert.is_nil(handles.player(8))
    end)

    it("runs a player's timers only while it is there, and cancels them when it leaves", function()
        gens[5] = 1
        local h = handles.player(5)
        local runs = 0
        h:after(10, function() runs = runs + 1 end)
        h:every(1, function() runs = runs + 1 end)
        fire()
        assert.equal(2, runs)
        gens[5] = nil
        handles.left(5)
        assert.is_true(timers[2].cancelled) -- the every; the after had run already
        fire()
        assert.equal(2, runs)
        -- a timer that fires anyway (it was already due) does nothing for a stale handle
        gens[6] = 1
        local h6 = handles.player(6)
        h6:after(1, function() runs = runs + 100 end)
        gens[6] = 3
        timers[#timers].fn()
        assert.equal(2, runs)
        local ok = pcall(h6.after, h6, 1, function() end)
        assert.is_false(ok)
    end)

    it("holds a region while this node owns it, for this ownership only", function()
        owned.r1, leases_gen.r1 = true, 1
        local r = assert(handles.region("r1"))
        assert.is_true(r:valid())
        owned.r1 = false
        assert.is_false(r:valid())
        owned.r1, leases_gen.r1 = true, 2 -- taken again later: a new ownership
        assert.is_false(r:valid())
        assert.is_nil(handles.region("r2"))
    end)

    it("holds a world event while it runs", function()
        local ev = { id = 3, state = "active", data = { hp = 10 } }
        local runner = { get = function(_, id) return id == 3 and ev or nil end }
        local e = assert(handles.event(runner, 3))
        assert.equal(10, e:data().hp)
        ev.state = "ended"
        local ok, err = pcall(e.data, e)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("stale handle: event 3", 1, true))
        assert.is_nil(handles.event(runner, 4))
    end)
end)
