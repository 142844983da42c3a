local script = require "helpers.script"


describe("rules.chat", function()
    local chat

    before_each(function()
        chat = script.load("rules.chat")
    end)

    it("passes ordinary text", function()
        assert.equal("hello there", chat.clean("hello there"))
    end)

    it("masks filtered words, whole and in any case", function()
        assert.equal("what a ****! trade", chat.clean("what a SCAM! trade"))
        assert.equal("scammer", chat.clean("scammer"))
    end)

    it("folds spaces and control characters, trims the ends", function()
        assert.equal("a b c", chat.clean("  a\n\tb \1 c  "))
    end)

    it("refuses empty, too long and non-text messages", function()
        assert.is_nil(chat.clean("   "))
        assert.is_nil(chat.clean(string.rep("x", chat.MAX_LEN + 1)))
        assert.is_nil(chat.clean(42))
        assert.equal(chat.MAX_LEN, #chat.clean(string.rep("x", chat.MAX_LEN)))
    end)

    it("knows its channels", function()
        assert.equal("guild", chat.channel("guild"))
        assert.is_nil(chat.channel("whisper"))
    end)
end)
