local script = require "helpers.script"


describe("rules.validation", function()
    local v

    before_each(function()
        v = script.load("rules.validation")
    end)

    describe("username", function()
        it("accepts letters, digits and _-. starting with a letter", function()
            assert.is_true(v.username("Aria"))
            assert.is_true(v.username("a_b-c.9"))
        end)

        it("refuses wrong lengths, characters and types", function()
            for _, bad in ipairs({ "ab", string.rep("a", 25), "9lives", "a b", "a'; drop table",
                                   "é-name", "", 42, nil, {} }) do
                local ok, msg = v.username(bad)
                assert.is_nil(ok, tostring(bad))
                assert.truthy(msg:match("^username: "))
            end
        end)
    end)

    describe("password", function()
        it("accepts a long enough, uncommon password", function()
            assert.is_true(v.password("correct horse battery", "aria"))
        end)

        it("refuses short, long, common ones and the username inside", function()
            assert.is_nil(v.password("short", "aria"))
            assert.is_nil(v.password(string.rep("x", 129), "aria"))
            assert.is_nil(v.password("Password123", "aria"))
            assert.is_nil(v.password("ariaaria-secret", "Aria"))
            assert.is_nil(v.password("has\0nul-byte", "aria"))
            assert.is_nil(v.password(12345678901, "aria"))
            local _, msg = v.password("1234567890", "aria")
            assert.equal("password: too common", msg)
        end)
    end)

    describe("roles", function()
        it("accepts known roles with player", function()
            assert.is_true(v.roles({ "player", "admin" }))
        end)

        it("refuses unknown, duplicated, empty lists and lists without player", function()
            assert.is_nil(v.roles({ "player", "god" }))
            assert.is_nil(v.roles({ "player", "player" }))
            assert.is_nil(v.roles({}))
            assert.is_nil(v.roles({ "admin" }))
            assert.is_nil(v.roles("player"))
        end)
    end)

    describe("ban", function()
        it("needs a reason and whole minutes in range", function()
            assert.is_true(v.ban({ reason = "spam", minutes = 60 }))
            assert.is_nil(v.ban({ reason = "", minutes = 60 }))
            assert.is_nil(v.ban({ reason = "spam", minutes = 0 }))
            assert.is_nil(v.ban({ reason = "spam", minutes = 1.5 }))
            assert.is_nil(v.ban({ reason = "spam", minutes = 0 / 0 }))
            assert.is_nil(v.ban({ reason = "spam" }))
            assert.is_nil(v.ban(nil))
        end)
    end)
end)
