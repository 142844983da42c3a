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

    -- a player who moves as it may, or as fast as it can send, through the rule: the clock the
    -- rule returns is the one the next move starts from
    local function run(speed, hz, seconds, step)
        local pos = { x = 100, y = 100, at = 0 }
        local moved, refused = 0, 0
        for i = 1, hz * seconds do
            local now = i / hz
            local to = { x = pos.x + step, y = pos.y }
            local region, at = m.check(pos, to, now, speed, REGIONS)
            if region then
                pos = { x = to.x, y = to.y, at = at }
                moved = moved + step
            else
                refused = refused + 1
            end
        end
        return moved, refused
    end

    it("gives the slack once, not on every message: 30 moves a second go no further than 10", function()
        -- speed 5: 10 s at full speed, with 10% tolerance, is 55 units
        local honest, refused = run(5, 10, 10, 0.5)
        assert.equal(50, honest)
        assert.equal(0, refused)
        -- 30 messages a second of 0.5 units each ask for 150 units in 10 s
        local greedy = run(5, 30, 10, 0.5)
        assert.truthy(greedy <= 5 * 1.1 * 10 + 0.5 + 1e-9, greedy)
        assert.truthy(greedy >= 50, greedy) -- and it still moves at its speed
    end)

    it("accepts moves that arrive bunched, on the time the player really had", function()
        -- three moves of 1.5 units, sent 0.3 s apart at speed 5, reach the node together at 0.9 s
        local pos = { x = 10, y = 10, at = 0 }
        for k = 1, 3 do
            local region, at = m.check(pos, { x = 10 + 1.5 * k, y = 10 }, 0.9, 5, REGIONS)
            assert.equal("r1", region, "move " .. k)
            assert.truthy(at <= 0.9 + m.SLACK / 5)
            pos = { x = 10 + 1.5 * k, y = 10, at = at }
        end
        -- a fourth at the same moment has no time left
        assert.same({ nil, "too_fast" }, { m.check(pos, { x = 16, y = 10 }, 0.9, 5, REGIONS) })
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
