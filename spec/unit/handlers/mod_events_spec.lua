-- handlers/mod_events.lua: the game's side of the events mods emit. A mod asks; the game checks
-- and grants (a queued job, once per kill) or refuses and logs.
local script = require "helpers.script"


describe("handlers.mod_events", function()
    local m, events, pushed, log

    before_each(function()
        pushed = {}
        events = script.events()
        log = script.log()
        m = script.load("handlers.mod_events", {
            ["mmo.events"] = events,
            ["mmo.log"] = log,
            ["mmo.queue"] = { push = function(name, payload, opts)
                pushed[#pushed + 1] = { name = name, payload = payload, key = opts.key }
                return "1-0"
            end },
        })
    end)

    it("listens to bounty.paid", function()
        assert.same({ m.bounty_paid }, events.handlers["bounty.paid"])
    end)

    it("grants the bounty's gold once per kill (the job's key)", function()
        m.bounty_paid({ player_id = 7, victim_id = 9, item = "gold", qty = 100, kill = "3:k1" },
                      "bounty")
        assert.same({ { name = "grant", payload = { player_id = 7, item = "gold", qty = 100 },
                        key = "bounty:3:k1" } }, pushed)
    end)

    it("refuses what a mod may not ask for, and logs it", function()
        local good = { player_id = 7, victim_id = 9, item = "gold", qty = 100, kill = "3:k1" }
        local function with(k, v)
            local p = {}
            for key, val in pairs(good) do
                p[key] = val
            end
            p[k] = v
            return p
        end
        for _, case in ipairs({
            { good, "welcome" },                    -- another mod
            { with("item", "sword_iron"), "bounty" },
            { with("qty", 5000), "bounty" },        -- past BOUNTY_MAX
            { with("qty", 0), "bounty" },
            { with("qty", 1.5), "bounty" },
            { with("qty", "100"), "bounty" },
            { with("player_id", "7"), "bounty" },
            { with("kill", nil), "bounty" },
        }) do
            m.bounty_paid(case[1], case[2])
        end
        assert.same({}, pushed)
        assert.equal(8, #log.lines)
        assert.equal("warn", log.lines[1].level)
    end)
end)
