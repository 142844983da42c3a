-- bindings/state.lua: mmo.state, the store that keeps game state across script reloads. The
-- core calls ctl.begin before a set loads, ctl.commit when it is swapped in, ctl.abort when it
-- is refused; these specs play both sides.
local function fresh()
    return dofile("bindings/state.lua")
end


describe("mmo.state", function()
    it("gives every set that declares the same version the same table", function()
        local state, ctl = fresh()
        local a = state.global("leases", { init = function() return { known = {} } end })
        a.known.r1 = "node-1"
        ctl.begin()
        local b = state.global("leases", { version = 1 })
        ctl.commit()
        assert.equal(a, b)
        assert.equal("node-1", b.known.r1)
    end)

    it("migrates a new version from a copy, and keeps the old data until the commit", function()
        local state, ctl = fresh()
        local old = state.global("counter", { init = function() return { n = 3 } end })
        ctl.begin()
        local seen
        local new = state.global("counter", { version = 2, migrate = function(v, data)
            seen = v
            data.n = data.n * 10 -- changing the copy must not change the running set's table
            return { total = data.n }
        end })
        assert.equal(1, seen)
        assert.same({ total = 30 }, new)
        assert.same({ n = 3 }, old)
        -- refused: the store still has version 1, the same table
        ctl.abort()
        assert.equal(old, state.global("counter"))
        -- accepted: version 2 from now on
        ctl.begin()
        new = state.global("counter", { version = 2, migrate = function(_, d) return { total = d.n } end })
        ctl.commit()
        assert.equal(new, state.global("counter", { version = 2 }))
        assert.same({ { name = "counter", kind = "global", version = 2 } }, ctl.list())
    end)

    it("refuses a new version without migrate, a migrate that returns no table, bad specs", function()
        local state, ctl = fresh()
        state.global("x", { init = function() return { a = 1 } end })
        ctl.begin()
        assert.has_error(function() state.global("x", { version = 2 }) end,
                         "mmo.state: x is version 1 here; the module declares 2 and has no " ..
                         "migrate(old_version, state)")
        assert.has_error(function()
            state.global("x", { version = 3, migrate = function() return 5 end })
        end, "mmo.state: x: migrate from version 1 must return a table")
        ctl.abort()
        for _, bad in ipairs({
            function() state.global("", {}) end,
            function() state.global(12) end,
            function() state.global("y", "spec") end,
            function() state.global("y", { version = 0 }) end,
            function() state.global("y", { version = 1.5 }) end,
            function() state.global("y", { init = function() return 7 end }) end,
            function() state.regional("x") end, -- x is global state
        }) do
            assert.has_error(bad)
        end
    end)

    it("refuses one name declared twice differently in one set", function()
        local state, ctl = fresh()
        ctl.begin()
        state.global("z", { version = 1 })
        assert.has_error(function() state.global("z", { version = 2 }) end,
                         "mmo.state: z is declared twice, differently")
        ctl.abort()
    end)

    it("keeps regional state per region, migrates each region, drops a region", function()
        local state, ctl = fresh()
        local T = state.regional("territories", { init = function(region)
            return { region = region, list = {} }
        end })
        T:get("r1").list[1] = "keep"
        T:get("r2").list[1] = "fort"
        assert.is_nil(T:peek("r3"))
        local n = 0
        for _ in T:each() do
            n = n + 1
        end
        assert.equal(2, n)
        ctl.begin()
        local T2 = state.regional("territories", { version = 2, migrate = function(v, old, region)
            assert.equal(1, v)
            return { region = region, names = old.list }
        end })
        ctl.commit()
        assert.same({ region = "r1", names = { "keep" } }, T2:get("r1"))
        state.drop_region("r2")
        assert.is_nil(T2:peek("r2"))
        assert.same({ { name = "territories", kind = "regional", version = 2, regions = 1 } },
                    ctl.list())
        T2:drop("r1")
        assert.is_nil(T2:peek("r1"))
    end)
end)
