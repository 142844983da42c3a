local script = require "helpers.script"


describe("handlers.demo", function()
    describe("player", function()
        it("builds the sample player document with the clock and the request id", function()
            local demo = script.load("handlers.demo", {
                ["mmo.time"] = { now = function() return 1234.5 end },
            })
            local status, body = demo.player({ id = "r-1" })
            assert.equal(200, status)
            assert.equal("Aria", body.name)
            assert.equal(1234.5, body.served_at)
            assert.equal("r-1", body.request_id)
        end)

        it("encodes to roughly 300 bytes of JSON (the benchmark's document)", function()
            local demo = script.load("handlers.demo", {
                ["mmo.time"] = { now = function() return 1795855020.4752 end },
            })
            local _, body = demo.player({ id = "r-9245b0-3" })
            local n = #require("cjson").encode(body)
            assert.truthy(n >= 250 and n <= 350, n)
        end)
    end)
end)
