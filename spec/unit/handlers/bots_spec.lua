local script = require "helpers.script"


describe("handlers.bots", function()
    describe("bot_name", function()
        local bots = script.load("handlers.bots", {})

        it("gives every (prefix, number) pair its own name, whatever the prefixes", function()
            local seen = {}
            for _, prefix in ipairs({ "lb", "lbb", "lbz", "lbzb", "bot", "botz", "ab", "abab" }) do
                for i = 1, 2000 do
                    local n = bots.bot_name(prefix, i):lower()
                    assert.is_nil(seen[n], n .. " twice")
                    seen[n] = prefix .. "/" .. i
                end
            end
        end)

        it("is letters only, starts upper-case and fits a player name for 20,000 bots", function()
            local n = bots.bot_name("abcdef", 20000)
            assert.truthy(n:match("^%u%l+$"), n)
            assert.is_true(#n <= 16, n)
        end)
    end)
end)
