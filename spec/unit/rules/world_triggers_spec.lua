local triggers = require "rules.world_triggers"


describe("rules.world_triggers", function()
    local function state(online, now, active, last)
        return { region = "r1", online = online, now = now, active = active or {},
                 last = last or {} }
    end

    it("starts an invasion when a crowd gathers, stronger with the crowd", function()
        assert.same({}, triggers.check(state(triggers.CROWD - 1, 1e9)))
        local out = triggers.check(state(triggers.CROWD, 1e9))
        assert.equal(1, #out)
        assert.equal("invasion", out[1].type)
        assert.equal(100 * triggers.CROWD, out[1].params.hp)
        assert.is_true(triggers.check(state(400, 1e9))[1].params.hp >
                       out[1].params.hp)
    end)

    it("not while one runs, nor within the cooldown of the last", function()
        assert.same({}, triggers.check(state(500, 1e9, { invasion = true })))
        assert.same({}, triggers.check(state(500, 1e9, {}, { invasion = 1e9 - 60 })))
        assert.equal(1, #triggers.check(state(500, 1e9, {},
                                              { invasion = 1e9 - triggers.COOLDOWN })))
    end)

    it("over a simulated day: crowds come and go, invasions at most every cooldown", function()
        local starts, active_until, last = {}, -1, nil
        for t = 0, 86400, triggers.CHECK_EVERY do
            local online = (t % 7200 < 3600) and 80 or 10 -- a crowd every other hour
            local out = triggers.check(state(online, t, { invasion = t < active_until },
                                             { invasion = last }))
            for _, e in ipairs(out) do
                starts[#starts + 1] = t
                active_until, last = t + e.params.duration_s, t
            end
        end
        assert.is_true(#starts >= 10 and #starts <= 13, #starts .. " invasions")
        for i = 2, #starts do
            assert.is_true(starts[i] - starts[i - 1] >= triggers.COOLDOWN)
        end
    end)
end)
