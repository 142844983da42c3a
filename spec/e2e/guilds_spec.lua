-- End-to-end: guilds (API.md "World"): create, join, leave, show; one guild per player even
-- under concurrent joins; the player document and guild chat follow membership at once.
local json = require "cjson.safe"
local server = require "helpers.server"
local letters = server.letters
local ws = require "helpers.ws"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


describe("guilds", function()
    local node

    -- bots (accounts with one player each, signed in): { {token, player_id}, ... }
    local function members(n)
        local login = node:request("POST", "/api/auth/login",
                                   { body = { username = "admin", password = ADMIN_PASSWORD } })
        assert.equal(200, login.status, login.body)
        local res = node:request("POST", "/api/admin/bots", { token = login.json.access_token,
            body = { count = n, prefix = "g" .. letters(4), region = "r1", spread = 50 } })
        assert.equal(200, res.status, res.body)
        local out = {}
        for i, b in ipairs(res.json.bots) do
            out[i] = { token = b.token, player_id = b.player_id }
        end
        return out
    end

    local function create(m, name)
        return node:request("POST", "/api/guilds",
                            { token = m.token, body = { name = name, player_id = m.player_id } })
    end

    local function act(m, gid, what)
        return node:request("POST", "/api/guilds/" .. gid .. "/" .. what,
                            { token = m.token, body = { player_id = m.player_id } })
    end

    local function is_error(res, status, code)
        assert.equal(status, res.status, res.body)
        assert.equal(code, res.json.error.code, res.body)
        assert.is_string(res.json.error.request_id)
    end

    local function player_guild(m)
        local res = node:request("GET", "/api/players/" .. m.player_id, { token = m.token })
        assert.equal(200, res.status, res.body)
        if res.json.guild == json.null then
            return nil -- "guild": null
        end
        return res.json.guild
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        node = server.start()
    end)

    teardown(function()
        node:stop()
    end)

    it("creates, joins, shows and leaves; the player document follows", function()
        local m = members(3)
        local name = "Owls " .. letters(6)
        local res = create(m[1], name)
        assert.equal(201, res.status, res.body)
        local g = res.json
        assert.equal(name, g.name)
        assert.equal(m[1].player_id, g.leader_id)
        assert.equal(1, g.members)
        assert.equal(g.id, player_guild(m[1]))

        res = act(m[2], g.id, "join")
        assert.equal(200, res.status, res.body)
        assert.equal(2, res.json.members)
        assert.equal(200, act(m[3], g.id, "join").status)
        assert.equal(g.id, player_guild(m[2]))

        res = node:request("GET", "/api/guilds/" .. g.id, { token = m[3].token })
        assert.equal(200, res.status)
        assert.equal(3, res.json.members)
        assert.same({ m[1].player_id, m[2].player_id, m[3].player_id },
                    { res.json.roster[1].player_id, res.json.roster[2].player_id,
                      res.json.roster[3].player_id })

        -- the leader leaves: the member who joined first leads
        res = act(m[1], g.id, "leave")
        assert.equal(200, res.status, res.body)
        assert.equal(2, res.json.members)
        assert.equal(m[2].player_id, res.json.leader_id)
        assert.is_nil(player_guild(m[1]))

        -- the last one out disbands it
        assert.equal(200, act(m[2], g.id, "leave").status)
        res = act(m[3], g.id, "leave")
        assert.equal(200, res.status)
        assert.is_true(res.json.disbanded)
        is_error(node:request("GET", "/api/guilds/" .. g.id, { token = m[3].token }), 404,
                 "not_found")
        -- and its name is free again
        assert.equal(201, create(m[3], name).status)
    end)

    it("refuses bad names, taken names, strangers' players and a second guild", function()
        local m = members(3)
        for _, bad in ipairs({ "ab", "  spaced", "Owls!", string.rep("x", 25), 42 }) do
            is_error(create(m[1], bad), 422, "validation_failed")
        end
        is_error(node:request("POST", "/api/guilds", { token = m[1].token,
                 body = { name = "No Player" } }), 422, "validation_failed")
        is_error(node:request("POST", "/api/guilds", { token = m[1].token,
                 body = { name = "Huge Id", player_id = 1e300 } }), 422, "validation_failed")
        is_error(node:request("POST", "/api/guilds", { token = m[1].token,
                 body = "[1]" }), 422, "validation_failed")
        -- someone else's player
        is_error(node:request("POST", "/api/guilds", { token = m[1].token,
                 body = { name = "Thieves " .. letters(4), player_id = m[2].player_id } }),
                 403, "forbidden")
        local name = "Ravens " .. letters(6)
        local g = create(m[1], name).json
        is_error(create(m[2], name:upper()), 409, "name_taken")
        is_error(create(m[1], "Second " .. letters(6)), 409, "already_in_guild")
        is_error(act(m[1], g.id, "join"), 409, "already_in_guild")
        is_error(act(m[2], g.id, "leave"), 409, "not_in_guild")
        is_error(act(m[2], 999999999, "join"), 404, "not_found")
        is_error(act(m[2], "abc", "join"), 404, "not_found")
        -- a stranger cannot make someone else's player join or leave
        is_error(node:request("POST", "/api/guilds/" .. g.id .. "/leave",
                 { token = m[2].token, body = { player_id = m[1].player_id } }), 403, "forbidden")
        is_error(node:request("POST", "/api/guilds/" .. g.id .. "/join"), 401,
                 "unauthenticated")
        -- nothing of that changed the guild
        local res = node:request("GET", "/api/guilds/" .. g.id, { token = m[3].token })
        assert.equal(1, res.json.members)
        assert.equal(m[1].player_id, res.json.leader_id)
    end)

    it("holds 50 members and refuses the 51st", function()
        local m = members(51)
        local g = create(m[1], "Full " .. letters(6)).json
        for i = 2, 50 do
            assert.equal(200, act(m[i], g.id, "join").status)
        end
        is_error(act(m[51], g.id, "join"), 409, "guild_full")
        assert.is_nil(player_guild(m[51]))
    end)

    it("lets a player into one guild only, whatever joins race", function()
        local m = members(9)
        local gids = {}
        for i = 1, 8 do
            gids[i] = create(m[i], "Race " .. letters(8)).json.id
        end
        local racer = m[9]
        local statuses = {}
        server.concurrent(node, 8, 0, function(i)
            return { "POST", "/api/guilds/" .. gids[i] .. "/join",
                     { token = racer.token, body = { player_id = racer.player_id } } }
        end, function(_, res)
            statuses[#statuses + 1] = res.status
        end)
        table.sort(statuses)
        assert.same({ 200, 409, 409, 409, 409, 409, 409, 409 }, statuses)
        local in_guilds = 0
        for i = 1, 8 do
            local res = node:request("GET", "/api/guilds/" .. gids[i], { token = racer.token })
            in_guilds = in_guilds + (res.json.members == 2 and 1 or 0)
        end
        assert.equal(1, in_guilds)
        assert.is_number(player_guild(racer))
    end)

    it("sends guild chat to members only, and follows a join made while connected", function()
        local m = members(3)
        local clients = {}
        for i = 1, 3 do
            clients[i] = assert(ws.connect(node, m[i].token))
            clients[i]:send({ t = "join", player_id = m[i].player_id })
            assert.is_table(clients[i]:expect("welcome", 3))
        end
        local g = create(m[1], "Chatters " .. letters(5)).json
        assert.equal(200, act(m[2], g.id, "join").status)
        clients[1]:send({ t = "chat", channel = "guild", text = "hello guild" })
        local got = clients[2]:expect("chat", 3)
        assert.is_table(got, "a member got no guild chat")
        assert.equal("guild", got.channel)
        assert.equal("hello guild", got.text)
        -- the outsider hears nothing, and may not speak there
        clients[3]:send({ t = "chat", channel = "guild", text = "let me in" })
        local e = clients[3]:expect("error", 3)
        assert.equal("no_guild", e.code)
        for _, msg in ipairs(clients[3]:drain(0.3)) do
            assert.is_not.equal("chat", msg.t)
        end
        -- after leaving, m2 no longer hears it
        assert.equal(200, act(m[2], g.id, "leave").status)
        clients[1]:send({ t = "chat", channel = "guild", text = "still there?" })
        assert.is_table(clients[1]:expect("chat", 3)) -- the sender is a member
        for _, msg in ipairs(clients[2]:drain(0.3)) do
            assert.is_not.equal("chat", msg.t)
        end
        for i = 1, 3 do
            clients[i]:close()
        end
    end)

    it("takes a deleted player out of its guild", function()
        local m = members(2)
        local g = create(m[1], "Leavers " .. letters(5)).json
        assert.equal(200, act(m[2], g.id, "join").status)
        assert.equal(204, node:request("DELETE", "/api/players/" .. m[2].player_id,
                                       { token = m[2].token }).status)
        local res = node:request("GET", "/api/guilds/" .. g.id, { token = m[1].token })
        assert.equal(1, res.json.members)
        assert.equal(1, #res.json.roster)
    end)
end)
