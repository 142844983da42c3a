-- rules/validation.lua's game events, and the jobs' effects: pure, no stream, no database.
local validation = require "rules.validation"
local kill = require "jobs.kill"
local loot = require "jobs.loot"


describe("game event rules", function()
    local NOW = 1.8e9

    local function ev(over)
        local e = { id = "e-1", type = "kill", player_id = 64, ts = NOW,
                    data = { monster = "wolf", level = 3 } }
        for k, v in pairs(over or {}) do
            e[k] = v
        end
        return e
    end

    it("keeps a good event's fields, and only those of its type", function()
        local e = assert(validation.event(ev(), NOW, 20))
        assert.same({ id = "e-1", type = "kill", player_id = 64, ts = NOW,
                      data = { monster = "wolf", level = 3 } }, e)
    end)

    it("refuses each bad part with its code", function()
        local cases = {
            { ev({ id = "" }), "invalid_event" },
            { ev({ id = string.rep("x", 65) }), "invalid_event" },
            { ev({ id = "a\nb" }), "invalid_event" },
            { ev({ type = "dance" }), "unknown_type" },
            { ev({ type = 7 }), "unknown_type" },
            { ev({ player_id = 0 }), "invalid_event" },
            { ev({ player_id = 1.5 }), "invalid_event" },
            { ev({ ts = "now" }), "invalid_event" },
            { ev({ ts = 0 / 0 }), "invalid_event" },
            { ev({ ts = NOW + validation.EVENT_FUTURE_S + 1 }), "bad_timestamp" },
            { ev({ ts = NOW - validation.EVENT_PAST_S - 1 }), "bad_timestamp" },
            { ev({ data = "wolf" }), "invalid_event" },
            { ev({ data = { monster = "wolf" } }), "invalid_event" },
            { ev({ data = { monster = "wolf", level = 61 } }), "invalid_event" },
            { ev({ data = { monster = "wolf", level = 2.5 } }), "invalid_event" },
            { ev({ data = { monster = "", level = 2 } }), "invalid_event" },
            { ev({ data = { monster = "wolf", level = 2, xp = 1e9 } }), "invalid_event" },
            { "kill", "invalid_event" },
        }
        for i, c in ipairs(cases) do
            local ok, code, msg = validation.event(c[1], NOW, 20)
            assert.is_nil(ok, "case " .. i)
            assert.equal(c[2], code, "case " .. i)
            assert.is_string(msg)
        end
        local _, code = validation.event(ev(), NOW, validation.EVENT_DATA_MAX + 1)
        assert.equal("too_large", code)
    end)

    it("turns kills into experience and loot into items, and refuses unknown items", function()
        assert.same({ xp = 10 * 7 }, kill.effect({ data = { monster = "wolf", level = 7 } }))
        assert.same({ items = { potion_small = 2 } },
                    loot.effect({ data = { item = "potion_small", qty = 2 } },
                                { catalogue = { potion_small = true } }))
        assert.has_error(function()
            loot.effect({ data = { item = "gold_bar", qty = 1 } }, { catalogue = {} })
        end)
    end)

    it("advances a quest to the step reached", function()
        local qs = require "jobs.quest_step"
        assert.same({ quests = { main = 4 } }, qs.effect({ data = { quest = "main", step = 4 } }))
        assert.truthy(validation.event({ id = "q", type = "quest_step", player_id = 64, ts = NOW,
                                         data = { quest = "main", step = 4 } }, NOW, 20))
        local _, code = validation.event({ id = "q", type = "quest_step", player_id = 64,
                                           ts = NOW, data = { quest = "main", step = 0 } }, NOW, 20)
        assert.equal("invalid_event", code)
    end)

    it("has a job for every event type", function()
        for t in pairs(validation.EVENT_TYPES) do
            local ok, job = pcall(require, "jobs." .. t)
            assert.is_true(ok, t)
            assert.is_function(job.effect, t)
        end
    end)
end)
