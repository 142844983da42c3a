-- End-to-end: live notifications across nodes (core/live.h). Two nodes on the same Redis and
-- PostgreSQL; a player on each. Region, guild and global chat reach the player of the other
-- node once, and the sender's node delivers its own players once, not twice.
local server = require "helpers.server"
local letters = server.letters
local ws = require "helpers.ws"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


describe("live notifications across nodes", function()
    local a, b

    setup(function()
        a = server.start { env = { MMO_NODE_ID = "live-a" } }
        b = server.start { env = { MMO_NODE_ID = "live-b" } }
    end)

    teardown(function()
        a:stop()
        b:stop()
    end)

    it("carry region, guild and global chat to the other node's players, once", function()
        local login = a:request("POST", "/api/auth/login",
                                { body = { username = "admin", password = ADMIN_PASSWORD } })
        local res = a:request("POST", "/api/admin/bots", { token = login.json.access_token,
            body = { count = 3, prefix = "l" .. letters(4), region = "r2", spread = 20 } })
        assert.equal(200, res.status, res.body)
        local bot = res.json.bots
        -- bot 1 and bot 2 in one guild
        local g = a:request("POST", "/api/guilds", { token = bot[1].token,
                            body = { name = "Live " .. letters(6), player_id = bot[1].player_id } })
        assert.equal(201, g.status, g.body)
        assert.equal(200, a:request("POST", "/api/guilds/" .. g.json.id .. "/join",
                     { token = bot[2].token, body = { player_id = bot[2].player_id } }).status)
        -- bot 1 on node a; bots 2 and 3 on node b
        local c = {}
        for i, node in ipairs({ a, b, b }) do
            c[i] = assert(ws.connect(node, bot[i].token))
            c[i]:send({ t = "join", player_id = bot[i].player_id })
            assert.is_table(c[i]:expect("welcome", 3))
        end
        server.sleep(0.3) -- both nodes' subscriptions are up well before this (started earlier)

        local function heard(client, text)
            local n = 0
            for _, m in ipairs(client:drain(0.8)) do
                if m.t == "chat" and m.text == text then
                    n = n + 1
                end
            end
            return n
        end

        local text = "region " .. letters(6)
        c[1]:send({ t = "chat", channel = "region", text = text })
        assert.equal(1, heard(c[1], text))
        assert.equal(1, heard(c[2], text))
        assert.equal(1, heard(c[3], text))

        text = "guild " .. letters(6)
        c[2]:send({ t = "chat", channel = "guild", text = text })
        assert.equal(1, heard(c[1], text)) -- the guild's member on the other node
        assert.equal(1, heard(c[2], text))
        assert.equal(0, heard(c[3], text)) -- not a member

        text = "global " .. letters(6)
        c[3]:send({ t = "chat", channel = "global", text = text })
        assert.equal(1, heard(c[1], text))
        assert.equal(1, heard(c[2], text))
        for i = 1, 3 do
            c[i]:close()
        end
    end)
end)
