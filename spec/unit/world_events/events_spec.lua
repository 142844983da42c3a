-- World events over a simulated clock: lib/event_runner.lua with the three shipped kinds. A day
-- of game time runs in milliseconds; nothing sleeps and nothing touches a database.
local runner_mod = require "lib.event_runner"

local KINDS = {
    invasion = require "world_events.invasion",
    treasure_rush = require "world_events.treasure_rush",
    double_xp = require "world_events.double_xp",
}


-- A runner on a fake clock that records what it broadcast and saved.
local function world(kinds)
    local w = { t = 1e9, sent = {}, saved = {}, logged = {} }
    local seed = 1
    w.runner = runner_mod.new {
        kinds = kinds or KINDS,
        now = function() return w.t end,
        broadcast = function(region, msg) w.sent[#w.sent + 1] = { region = region, msg = msg } end,
        save = function(ev)
            -- what a database would keep: a deep copy through JSON-like values
            w.saved[ev.id] = require("cjson").decode(require("cjson").encode({
                id = ev.id, type = ev.type, region = ev.region, params = ev.params,
                state = ev.state, starts_at = ev.starts_at, ends_at = ev.ends_at, data = ev.data,
            }))
        end,
        log = function(msg, fields) w.logged[#w.logged + 1] = { msg = msg, fields = fields } end,
        random = function(m, n) seed = (seed * 16807) % 2147483647; return m + seed % (n - m + 1) end,
    }
    function w.run(seconds, hz)
        hz = hz or 10
        for _ = 1, math.floor(seconds * hz + 0.5) do
            w.t = w.t + 1 / hz
            w.runner:tick(1 / hz)
        end
    end
    function w.event(id, type, params, starts_in)
        local kind = (kinds or KINDS)[type]
        local starts = w.t + (starts_in or 0)
        local ev = { id = id, type = type, region = "r1", params = params or {},
                     state = "scheduled", starts_at = starts,
                     ends_at = starts + runner_mod.duration(kind, params or {}) }
        w.runner:add(ev)
        return ev
    end
    function w.states()
        local out = {}
        for _, s in ipairs(w.sent) do
            out[#out + 1] = s.msg.event.state
        end
        return out
    end
    return w
end


describe("world events", function()
    it("go scheduled -> active -> ended on time, told to the region at each step", function()
        local w = world()
        local ev = w.event(1, "double_xp", { multiplier = 3 }, 60)
        w.run(59)
        assert.equal("scheduled", ev.state)
        assert.same({}, w.sent)
        w.run(2)
        assert.equal("active", ev.state)
        assert.equal(3, ev.data.multiplier)
        assert.equal("world_event", w.sent[1].msg.t)
        assert.equal("r1", w.sent[1].region)
        w.run(3600)
        assert.equal("ended", ev.state)
        assert.equal("time", ev.end_reason)
        assert.same({ "active", "ended" }, w.states())
        assert.is_nil(w.runner:get(1))
    end)

    it("an invasion is won when the players' strikes bring it down, and ranks them", function()
        local w = world()
        local ev = w.event(2, "invasion", { hp = 300, duration_s = 900 })
        w.run(1)
        assert.equal(300, ev.data.hp)
        -- three players strike for ten minutes of game time, one blow a second each
        for s = 1, 600 do
            w.t = w.t + 1
            w.runner:tick(1)
            if ev.state ~= "active" then break end
            w.runner:action("r1", 101, { kind = "strike", damage = 1 })
            w.runner:action("r1", 102, { kind = "strike", damage = 2 })
            if s % 2 == 0 then
                w.runner:action("r1", 103, { kind = "strike", damage = 500 }) -- capped at 100
            end
        end
        assert.equal("ended", ev.state)
        assert.equal("finished", ev.end_reason)
        assert.equal("victory", ev.result.outcome)
        assert.equal("103", ev.result.top[1].player)
        assert.equal(0, w.saved[2].data.hp)
    end)

    it("an invasion the players ignore ends in defeat at its time", function()
        local w = world()
        local ev = w.event(3, "invasion", { hp = 1000, duration_s = 900 })
        w.run(901)
        assert.equal("ended", ev.state)
        assert.equal("defeat", ev.result.outcome)
        assert.equal(1000, ev.result.hp_left)
    end)

    it("a treasure rush ends when every chest is found, only by players who reach them", function()
        local w = world()
        local ev = w.event(4, "treasure_rush", { chests = 3 })
        w.run(1)
        local c = ev.data.chests
        assert.equal(3, #c)
        -- too far, no such chest, garbage: nothing
        w.runner:action("r1", 7, { kind = "pick", chest = 1, x = c[1].x + 50, y = c[1].y })
        w.runner:action("r1", 7, { kind = "pick", chest = 9, x = 0, y = 0 })
        w.runner:action("r1", 7, { kind = "pick", chest = "1" })
        w.runner:action("r1", 7, "pick")
        assert.equal(3, ev.data.left)
        for i = 1, 3 do
            w.runner:action("r1", 7 + i, { kind = "pick", chest = i, x = c[i].x + 1, y = c[i].y })
        end
        -- a chest cannot be taken twice
        w.runner:action("r1", 99, { kind = "pick", chest = 1, x = c[1].x, y = c[1].y })
        assert.equal("ended", ev.state)
        assert.equal("all_found", ev.result.outcome)
        assert.equal(8, ev.data.chests[1].taken_by)
    end)

    it("resumes an active event where it was, from what was saved", function()
        local w = world()
        w.event(5, "invasion", { hp = 500, duration_s = 900 })
        w.run(1)
        w.runner:action("r1", 1, { kind = "strike", damage = 100 })
        w.run(5)
        -- the node restarts: a new runner gets the saved row back
        local saved = w.saved[5]
        saved.data.hp = 400 -- as saved after the strike (saves happen on transitions here)
        local w2 = world()
        w2.t = w.t
        local ev = saved
        w2.runner:add(ev)
        w2.run(1)
        assert.equal("active", ev.state)
        assert.equal(400, ev.data.hp) -- not started again
        assert.same({}, w2.sent)
        w2.runner:action("r1", 2, { kind = "strike", damage = 100 })
        assert.equal(300, ev.data.hp)
    end)

    it("ends a broken event and goes on with the others", function()
        local kinds = { broken = { on_start = function() end,
                                   on_tick = function() error("boom") end },
                        double_xp = KINDS.double_xp }
        local w = world(kinds)
        local bad = w.event(6, "broken", { duration_s = 100 })
        local good = w.event(7, "double_xp", {})
        w.run(2)
        assert.equal("ended", bad.state)
        assert.equal("error", bad.end_reason)
        assert.equal("active", good.state)
        assert.truthy(w.logged[1].fields.error:find("boom", 1, true))
    end)

    it("is cancelled on demand, with on_end told why", function()
        local seen
        local kinds = { k = { on_start = function() end,
                              on_end = function(_, _, reason) seen = reason end } }
        local w = world(kinds)
        local ev = w.event(8, "k", { duration_s = 100 })
        w.run(1)
        assert.is_true(w.runner:cancel(8))
        assert.equal("cancelled", seen)
        assert.equal("ended", ev.state)
        assert.is_false(w.runner:cancel(8))
    end)

    it("validates each kind's params", function()
        assert.is_nil(KINDS.invasion.validate({ hp = 5 }))
        assert.is_nil(KINDS.invasion.validate({ hp = "a lot" }))
        assert.is_true(KINDS.invasion.validate({}))
        assert.is_nil(KINDS.treasure_rush.validate({ chests = 0 }))
        assert.is_nil(KINDS.treasure_rush.validate({ chests = 1.5 }))
        assert.is_nil(KINDS.double_xp.validate({ multiplier = 11 }))
        assert.is_true(KINDS.double_xp.validate({ multiplier = 2 }))
    end)

    it("runs a day of game time at 10 Hz in well under a second", function()
        local w = world()
        for i = 1, 20 do
            w.event(100 + i, i % 2 == 0 and "double_xp" or "invasion", { duration_s = 3600 },
                    i * 1800)
        end
        local t0 = os.clock()
        w.run(86400)
        assert.is_true(os.clock() - t0 < 5)
        assert.same({}, w.runner:list())
        assert.equal(40, #w.sent) -- each started and ended once
    end)
end)


describe("world event schedules", function()
    local next_start = runner_mod.next_start

    it("start daily at offset_s past midnight UTC, the next one after now", function()
        local day = 86400
        local midnight = 20000 * day
        local e = { every_s = day, offset_s = 20 * 3600 }
        assert.equal(midnight + 20 * 3600, next_start(e, midnight))
        assert.equal(midnight + 20 * 3600, next_start(e, midnight + 20 * 3600 - 1))
        assert.equal(midnight + day + 20 * 3600, next_start(e, midnight + 20 * 3600))
        assert.equal(midnight + 20 * 3600, next_start(e, midnight - 4 * 3600))
    end)

    it("ship entries that name real kinds and regions, each once", function()
        local entries = require "data.world_schedule"
        local names = {}
        for _, e in ipairs(entries) do
            assert.is_nil(names[e.name], e.name)
            names[e.name] = true
            assert.is_table(KINDS[e.type], e.type)
            assert.truthy(({ r1 = 1, r2 = 1, r3 = 1, r4 = 1 })[e.region])
            assert.is_true(e.every_s >= 60)
            assert.is_true(KINDS[e.type].validate(e.params or {}))
        end
    end)
end)
