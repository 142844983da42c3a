-- End-to-end: the example mod (scripts/mods/bounty) in a real node. Player kills are game events
-- (pvp_kill); the pipeline commits them and tells the mods (player.killed); three kills in a
-- row put a bounty on the killer (a message to them); whoever kills them collects it: the mod
-- emits bounty.paid, the game checks it and grants the gold through a queued job, once.
local server = require "helpers.server"
local ws = require "helpers.ws"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")
local psql = server.psql

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


describe("the bounty mod", function()
    local node, admin

    local function gold(pid)
        return tonumber(psql("select coalesce(sum(qty), 0) from inventory where player_id = " ..
                             pid .. " and item = 'gold'"))
    end

    local function kill(by, victim)
        return node:request("POST", "/api/events", { token = by.token, body = { events = {
            { id = "pvp-" .. server.letters(10), type = "pvp_kill", player_id = by.player_id,
              ts = os.time(), data = { victim = victim.player_id } } } } })
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        node = server.start()
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = "admin", password = ADMIN_PASSWORD } })
        assert.equal(200, res.status, res.body)
        admin = res.json.access_token
    end)

    teardown(function()
        node:stop()
    end)

    it("puts a price on a killer's head and pays whoever collects it, once", function()
        local res = node:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 4, prefix = "b" .. server.letters(5), region = "r2" } })
        assert.equal(200, res.status, res.body)
        local killer, v1, v2, hunter = unpack(res.json.bots)
        local c = {}
        for i, b in ipairs({ killer, hunter }) do
            c[i] = assert(ws.connect(node, b.token))
            c[i]:send({ t = "join", player_id = b.player_id })
            assert.is_table(c[i]:expect("welcome", 5))
        end
        -- refused before anything happens: not a player id
        res = node:request("POST", "/api/events", { token = killer.token, body = { events = {
            { id = "bad-" .. server.letters(6), type = "pvp_kill", player_id = killer.player_id,
              ts = os.time(), data = { victim = "everyone" } } } } })
        assert.equal(202, res.status, res.body)
        assert.equal(0, res.json.accepted, res.body)
        -- three kills: the bounty is placed, the killer is told
        for _, v in ipairs({ v1, v2, v1 }) do
            local r = kill(killer, v)
            assert.equal(202, r.status, r.body)
            assert.equal(1, r.json.accepted, r.body)
        end
        local placed = c[1]:expect("mod", 15)
        assert.is_table(placed, "the killer was not told of the bounty")
        assert.equal("bounty", placed.mod)
        assert.equal(100, placed.data.reward)
        -- the hunter kills the killer: the bounty is paid in gold, through the grant job
        local before = gold(hunter.player_id)
        assert.equal(202, kill(hunter, killer).status)
        local paid = c[2]:expect("mod", 15)
        assert.is_table(paid, "the hunter was not told")
        assert.equal(100, paid.data.qty)
        assert.is_true(server.eventually(function()
            return gold(hunter.player_id) == before + 100
        end, 15), "the gold never came")
        -- killing the killer again pays nothing: the bounty is gone
        assert.equal(202, kill(hunter, killer).status)
        server.sleep(2)
        assert.equal(before + 100, gold(hunter.player_id))
        for _, x in ipairs(c) do
            x:close()
        end
    end)
end)
