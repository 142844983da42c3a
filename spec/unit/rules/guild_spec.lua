local guild = require "rules.guild"


describe("rules.guild", function()
    describe("valid_name", function()
        it("takes letters and digits with single spaces between words", function()
            for _, n in ipairs({ "Owl", "Night Owls", "The 7 Seas", string.rep("a", 24) }) do
                assert.is_true(guild.valid_name(n), n)
            end
        end)

        it("refuses what is not a name, with the field in the message", function()
            for _, n in ipairs({ "ab", string.rep("a", 25), " Owls", "Owls ", "Night  Owls",
                                 "Owls!", "Ow\0ls", "Öwls", "<script>" }) do
                local ok, msg = guild.valid_name(n)
                assert.is_nil(ok, n)
                assert.truthy(msg:match("^name: "), n)
            end
            assert.is_nil(guild.valid_name(42))
            assert.is_nil(guild.valid_name(nil))
        end)
    end)

    it("has room for MAX_MEMBERS and no more", function()
        assert.is_true(guild.has_room(0))
        assert.is_true(guild.has_room(guild.MAX_MEMBERS - 1))
        assert.is_false(guild.has_room(guild.MAX_MEMBERS))
    end)

    it("hands leadership to the member who joined first, or to nobody", function()
        assert.equal(7, guild.next_leader({ { player_id = 7 }, { player_id = 3 } }))
        assert.is_nil(guild.next_leader({}))
    end)
end)
