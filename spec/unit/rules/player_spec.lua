local script = require "helpers.script"


describe("rules.player", function()
    local player

    before_each(function()
        player = script.load("rules.player")
    end)

    describe("valid_name", function()
        it("accepts letters with one inner space, hyphen or apostrophe", function()
            for _, n in ipairs({ "Aria", "Mae-Lin", "O'Dell", "Ser Pounce" }) do
                assert.is_true(player.valid_name(n), n)
            end
        end)

        it("refuses the rest", function()
            for _, n in ipairs({ "Al", "A very long name xx", "R2D2", "a--b", " Aria", "Aria ",
                                 "Admin", "x' OR 1=1", 7 }) do
                assert.is_nil(player.valid_name(n), tostring(n))
            end
        end)
    end)

    describe("valid_class", function()
        it("knows the classes of data/classes.lua", function()
            assert.is_true(player.valid_class("mage"))
            local ok, msg = player.valid_class("bard")
            assert.is_nil(ok)
            assert.truthy(msg:find("cleric, mage, ranger, warrior", 1, true))
        end)
    end)

    describe("levels", function()
        it("needs 100 xp for level 2 and more for each next level", function()
            assert.equal(0, player.xp_for_level(1))
            assert.equal(100, player.xp_for_level(2))
            local last = 0
            for n = 2, player.MAX_LEVEL do
                local need = player.xp_for_level(n)
                assert.truthy(need > last)
                last = need
            end
        end)

        it("turns xp back into the level", function()
            assert.equal(1, player.level_for_xp(0))
            assert.equal(1, player.level_for_xp(99))
            assert.equal(2, player.level_for_xp(100))
            assert.equal(player.MAX_LEVEL, player.level_for_xp(1e12))
            for n = 1, player.MAX_LEVEL do
                assert.equal(n, player.level_for_xp(player.xp_for_level(n)))
            end
        end)
    end)

    describe("stats", function()
        it("grows with level", function()
            local l1 = player.stats("warrior", 1, nil, 0)
            local l10 = player.stats("warrior", 10, nil, 0)
            assert.equal(120, l1.max_hp)
            assert.equal(120 + 14 * 9, l10.max_hp)
            assert.truthy(l10.str > l1.str)
        end)

        it("adds running buffs and ignores ended ones", function()
            local buffs = { { stat = "speed", amount = 0.25, ["until"] = 100 } }
            assert.equal(6.25, player.stats("mage", 1, buffs, 50).speed)
            assert.equal(5, player.stats("mage", 1, buffs, 100).speed)
        end)
    end)

    describe("document", function()
        it("has the fields of API.md's player document", function()
            local doc = player.document({ id = 65, name = "Aria", class = "mage", level = 3,
                xp = 450, hp = 999, mp = 10, region = "r1", x = 1.5, y = 2, buffs = {},
                appearance = {}, created_at = "2026-11-28T10:00:00Z" }, 0)
            assert.equal(65, doc.id)
            assert.same({ region = "r1", x = 1.5, y = 2 }, doc.position)
            assert.equal(doc.stats.max_hp, doc.stats.hp) -- capped at the maximum
            assert.equal(10, doc.stats.mp)
            assert.equal(player.xp_for_level(4), doc.xp_next)
        end)
    end)

    describe("patch", function()
        it("lets the owner change appearance and position, a moderator the name", function()
            assert.same({ appearance = { hair = "long" } },
                        player.patch({ appearance = { hair = "long" } }, true, false))
            assert.same({ name = "Newname" }, player.patch({ name = "Newname" }, false, true))
        end)

        it("refuses what the caller may not change", function()
            local ok, msg, code = player.patch({ name = "Newname" }, true, false)
            assert.is_nil(ok)
            assert.equal("forbidden", code)
            assert.truthy(msg:find("name"))
            for _, body in ipairs({ { level = 60 }, { xp = 1e9 }, { class = "mage" }, { id = 1 },
                                    {}, { appearance = { wings = "big" } },
                                    { appearance = { hair = "neon" } }, { position = "here" } }) do
                assert.is_nil(player.patch(body, true, true))
            end
        end)
    end)
end)
