local script = require "helpers.script"


describe("rules.inventory", function()
    local inv
    local CAT = {
        potion = { stack = 20, kind = "consumable", effects = { heal = 50 } },
        elixir = { stack = 20, kind = "consumable", effects = { mana = 100 } },
        haste = { stack = 10, kind = "scroll",
                  effects = { buff = { stat = "speed", amount = 0.25, seconds = 60 } } },
        home = { stack = 10, kind = "scroll", effects = { teleport = { region = "r1", x = 5, y = 6 } } },
        sword = { stack = 1, kind = "weapon", effects = { atk = 12 } },
        ore = { stack = 99, kind = "material", effects = {} },
    }

    before_each(function()
        inv = script.load("rules.inventory")
    end)

    it("counts slots by stack size", function()
        assert.equal(0, inv.slots_used({}, CAT))
        assert.equal(1, inv.slots_used({ potion = 20 }, CAT))
        assert.equal(2, inv.slots_used({ potion = 21 }, CAT))
        assert.equal(3, inv.slots_used({ sword = 2, ore = 5 }, CAT))
    end)

    describe("parse_lines", function()
        it("accepts a short list of whole quantities", function()
            assert.same({ { item = "potion", qty = 2 } },
                        inv.parse_lines({ { item = "potion", qty = 2 } }, "give"))
            assert.same({}, inv.parse_lines(nil, "give"))
        end)

        it("refuses bad quantities, long lists, duplicates and objects", function()
            local bad = {
                { { item = "potion", qty = 0 } }, { { item = "potion", qty = -1 } },
                { { item = "potion", qty = 1.5 } }, { { item = "potion", qty = 1e9 } },
                { { item = "potion", qty = 0 / 0 } }, { { item = 5, qty = 1 } },
                { { item = "potion", qty = 1 }, { item = "potion", qty = 1 } },
                { item = "potion", qty = 1 }, "potion",
            }
            for i, l in ipairs(bad) do
                assert.is_nil(inv.parse_lines(l, "give"), "case " .. i)
            end
            local long = {}
            for i = 1, 1000 do
                long[i] = { item = "potion" .. i, qty = 1 }
            end
            local ok, msg = inv.parse_lines(long, "give")
            assert.is_nil(ok)
            assert.equal("give: at most 20 items", msg)
        end)
    end)

    describe("trade", function()
        it("moves both ways and keeps totals", function()
            local a, b = inv.trade({ potion = 5, ore = 1 }, { sword = 1 },
                                   { { item = "potion", qty = 2 } }, { { item = "sword", qty = 1 } }, CAT)
            assert.same({ potion = 3, ore = 1, sword = 1 }, a)
            assert.same({ potion = 2 }, b)
        end)

        it("refuses what a side does not have, naming it", function()
            local a, why, d = inv.trade({ potion = 1 }, {}, { { item = "potion", qty = 2 } }, {}, CAT)
            assert.is_nil(a)
            assert.equal("not_enough", why)
            assert.same({ item = "potion", have = 1, want = 2, side = "from" }, d)
            a, why = inv.trade({}, {}, { { item = "dragon", qty = 1 } }, {}, CAT)
            assert.is_nil(a)
            assert.equal("unknown_item", why)
        end)

        it("refuses a trade that overfills an inventory", function()
            local full = {}
            for i = 1, 40 do
                CAT["junk" .. i] = { stack = 1, kind = "material", effects = {} }
                full["junk" .. i] = 1
            end
            local a, why, d = inv.trade({ sword = 1 }, full, { { item = "sword", qty = 1 } }, {}, CAT)
            assert.is_nil(a)
            assert.equal("inventory_full", why)
            assert.equal("to", d.side)
        end)
    end)

    describe("use", function()
        local ctx = { stats = { max_hp = 100, max_mp = 80 }, now = 1000 }

        it("heals up to the maximum", function()
            local p = inv.use({ hp = 30, mp = 0 }, CAT.potion, 1, 5, ctx)
            assert.equal(80, p.hp)
            p = inv.use({ hp = 30, mp = 0 }, CAT.potion, 3, 5, ctx)
            assert.equal(100, p.hp)
        end)

        it("adds a buff for its time, replacing the same stat's", function()
            local p = inv.use({ hp = 1, mp = 1, buffs = { { stat = "speed", amount = 0.1,
                                                             ["until"] = 2000 } } },
                              CAT.haste, 2, 2, ctx)
            assert.same({ { stat = "speed", amount = 0.25, ["until"] = 1120 } }, p.buffs)
        end)

        it("teleports, one scroll at a time", function()
            local p = inv.use({ hp = 1, mp = 1, region = "r4", x = 1, y = 1 }, CAT.home, 1, 1, ctx)
            assert.same({ "r1", 5, 6 }, { p.region, p.x, p.y })
            assert.is_nil(inv.use({ hp = 1, mp = 1 }, CAT.home, 2, 2, ctx))
        end)

        it("refuses equipment, materials, unknown items and more than held", function()
            assert.same({ nil, "not_usable" }, { inv.use({}, CAT.sword, 1, 1, ctx) })
            assert.same({ nil, "not_usable" }, { inv.use({}, CAT.ore, 1, 1, ctx) })
            assert.same({ nil, "unknown_item" }, { inv.use({}, nil, 1, 1, ctx) })
            assert.same({ nil, "not_enough" }, { inv.use({ hp = 1 }, CAT.potion, 3, 2, ctx) })
        end)
    end)
end)
