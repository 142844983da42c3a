local script = require "helpers.script"


describe("rules.movement", function()
    local m
    local REGIONS = {
        { id = "r1", x0 = 0, y0 = 0, x1 = 1000, y1 = 1000 },
        { id = "r2", x0 = 1000, y0 = 0, x1 = 2000, y1 = 1000 },
    }

    before_each(function()
        m = script.load("rules.movement")
    end)

    it("accepts a move within speed and bounds, naming the region", function()
        assert.equal("r1", m.check({ x = 10, y = 10, at = 100 }, { x = 14, y = 10 }, 101, 5, REGIONS))
        assert.equal("r2", m.check({ x = 998, y = 10, at = 100 }, { x = 1002, y = 10 }, 101, 5, REGIONS))
    end)

    it("refuses a move faster than the speed", function()
        assert.same({ nil, "too_fast" },
                    { m.check({ x = 10, y = 10, at = 100 }, { x = 30, y = 10 }, 101, 5, REGIONS) })
    end)

    it("does not let standing still buy a teleport", function()
        assert.same({ nil, "too_fast" },
                    { m.check({ x = 10, y = 10, at = 0 }, { x = 500, y = 10 }, 1e6, 5, REGIONS) })
    end)

    it("refuses out of bounds and non-numbers", function()
        assert.same({ nil, "out_of_bounds" },
                    { m.check({ x = 1, y = 1, at = 0 }, { x = -1, y = 1 }, 1, 5, REGIONS) })
        assert.same({ nil, "out_of_bounds" },
                    { m.check({ x = 1, y = 1, at = 0 }, { x = 1, y = 1000 }, 1, 5, REGIONS) })
        for _, bad in ipairs({ { x = 0 / 0, y = 1 }, { x = 1 / 0, y = 1 }, { x = "1", y = 1 }, "x" }) do
            assert.same({ nil, "bad_position" }, { m.check({ x = 1, y = 1, at = 0 }, bad, 1, 5, REGIONS) })
        end
    end)
end)
