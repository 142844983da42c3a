-- lib/territories.lua: what a node reads of the live state a region's owner shares in Redis
-- (territories:live:<region>). Redis may hold anything: another writer's value, a torn or
-- hand-edited one; what is not the owner's shape is skipped, entry by entry.
local script = require "helpers.script"


describe("lib.territories read_shared", function()
    local territories

    setup(function()
        territories = script.load("lib.territories", {
            ["mmo.world"] = { settings = function()
                return { node = "n", view_radius = 100, lease_ms = 3000 }
            end },
            ["mmo.crypto"] = { random = function() return "run" end },
        })
    end)

    local function read(v)
        return territories.read_shared(v, {})
    end

    it("reads what the owner shares", function()
        local out = read('[["t1", 7, 0, 42.5, 0], ["t2", 0, 9, 3, 1]]')
        assert.same({ owner_guild = 7, progress = 42.5, contested = false }, out.t1)
        assert.same({ capturing_guild = 9, progress = 3, contested = true }, out.t2)
    end)

    it("skips what is not that shape, and keeps the good entries beside it", function()
        for _, v in ipairs({ "", "garbage", "[", "42", '"s"', "null", "{}", '{"t1": [1]}',
                             "[1, 2]", '[["t1"]]', '[[7, 1, 0, 0, 0]]' }) do
            assert.same({}, read(v), v)
        end
        assert.same({}, read(nil))
        assert.same({}, read(42))
        local bad = {
            '["t1", "7", 0, 0, 0]',     -- an owner that is no number
            '["t1", -1, 0, 0, 0]',      -- negative
            '["t1", 1.5, 0, 0, 0]',     -- fractional
            '["t1", 1e300, 0, 0, 0]',   -- past 2^53
            '["t1", 1, {}, 0, 0]',      -- a table for a guild
            '["t1", 1, 0, "50", 0]',    -- progress a string
            '["t1", 1, 0, -1, 0]',      -- progress out of 0..100
            '["t1", 1, 0, 101, 0]',
            '["t1", 1, 0, 5, 2]',       -- contested neither 0 nor 1
            '["t1", 1, 0, 5, true]',
            '["t1", 1, 0, 5]',          -- too short
        }
        for _, e in ipairs(bad) do
            local out = read("[" .. e .. ', ["t2", 3, 0, 1, 0]]')
            assert.is_nil(out.t1, e)
            assert.same({ owner_guild = 3, progress = 1, contested = false }, out.t2, e)
        end
    end)

    it("adds to what it is given (one call per region)", function()
        local out = {}
        territories.read_shared('[["a", 1, 0, 0, 0]]', out)
        territories.read_shared('[["b", 2, 0, 0, 0]]', out)
        assert.equal(1, out.a.owner_guild)
        assert.equal(2, out.b.owner_guild)
    end)
end)
