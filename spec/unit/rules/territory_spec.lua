-- rules/territory.lua over simulated time: an hour of game at 10 ticks a second runs in
-- milliseconds, nothing sleeps.
local territory = require "rules.territory"


-- Run the rule for `seconds` at `hz` with present(t) giving who stands there at game time t.
local function simulate(state, seconds, present, hz)
    hz = hz or 10
    local dt, t = 1 / hz, 0
    local captures = {}
    for _ = 1, math.floor(seconds * hz + 0.5) do
        state = territory.step(state, present(t), dt)
        t = t + dt
        if state.captured then
            captures[#captures + 1] = { t = t, guild = state.owner_guild }
        end
    end
    return state, captures
end


describe("rules.territory", function()
    local RATE, FULL = territory.RATE_PER_MEMBER_S, territory.FULL

    it("is captured by one guild alone, in FULL / (RATE * members) seconds", function()
        local s, caps = simulate({ progress = 0 }, 60, function() return { [7] = 2 } end)
        assert.equal(1, #caps)
        assert.equal(7, s.owner_guild)
        local want = FULL / (RATE * 2)
        assert.is_true(math.abs(caps[1].t - want) < 0.15, "captured at " .. caps[1].t)
        -- once owned, the owner standing there changes nothing more
        assert.equal(0, s.progress)
        assert.is_nil(s.capturing_guild)
    end)

    it("counts at most MAX_COUNTED members", function()
        local _, few = simulate({}, 120, function() return { [1] = territory.MAX_COUNTED } end)
        local _, many = simulate({}, 120, function() return { [1] = 50 } end)
        assert.is_true(math.abs(few[1].t - many[1].t) < 0.15)
    end)

    it("holds while two guilds contest it, and nobody's players count for nothing", function()
        local s = simulate({ progress = 40, capturing_guild = 1 }, 3600,
                           function() return { [1] = 5, [2] = 1, [0] = 30 } end)
        assert.equal(40, s.progress)
        assert.is_true(s.contested)
        assert.is_nil(s.owner_guild)
        s = simulate({ progress = 40, capturing_guild = 1 }, 1,
                     function() return { [0] = 30 } end)
        assert.is_false(s.contested)
        assert.is_true(s.progress < 40) -- guildless players do not capture: it decays
    end)

    it("decays when nobody is there, down to 0 and no further", function()
        local s = simulate({ progress = 50, capturing_guild = 3 }, 10, function() return {} end)
        assert.is_true(math.abs(s.progress - (50 - territory.DECAY_PER_S * 10)) < 1e-6)
        s = simulate(s, 3600, function() return {} end)
        assert.equal(0, s.progress)
        assert.is_nil(s.capturing_guild)
    end)

    it("makes a guild that takes over someone's capture start from 0", function()
        local s = simulate({}, 30, function() return { [1] = 1 } end)
        assert.equal(1, s.capturing_guild)
        assert.is_true(s.progress > 25)
        s = territory.step(s, { [2] = 1 }, 0.1)
        assert.equal(2, s.capturing_guild)
        assert.is_true(s.progress < 1)
    end)

    it("lets an owner defend: a challenger's progress decays while the owner stands alone", function()
        local s = { owner_guild = 9, capturing_guild = 4, progress = 60 }
        s = simulate(s, 10, function() return { [9] = 1 } end)
        assert.equal(9, s.owner_guild)
        assert.is_true(s.progress < 60)
    end)

    it("plays an hour of back and forth with the owner changing only when a guild is alone",
       function()
        -- guild 1 holds the first 20 minutes, guild 2 the next 20, then both stay
        local function who(t)
            if t < 1200 then return { [1] = 3 } end
            if t < 2400 then return { [2] = 4 } end
            return { [1] = 3, [2] = 4 }
        end
        local s, caps = simulate({}, 3600, who)
        assert.same({ 1, 2 }, { caps[1].guild, caps[2].guild })
        assert.equal(2, #caps)
        assert.is_true(caps[2].t > 1200 and caps[2].t < 2400)
        assert.equal(2, s.owner_guild)
        assert.is_true(s.contested)
    end)
end)
