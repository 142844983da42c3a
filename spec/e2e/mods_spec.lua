-- End-to-end: mods in a real node. The node runs a copy of scripts/ with the example mod
-- (welcome), a mod that loops forever when a player joins, one that grows a table without end
-- on a level-up, one that does not compile and one whose manifest asks for an API this node
-- does not have. The broken ones are reported and the others load; the runaway ones are
-- disabled by their budgets (mods.strikes = 1: at their first strike) while the game and the
-- good mod go on; the good one's message reaches the player who levelled up; a reload brings
-- the mods back.
local server = require "helpers.server"
local ws = require "helpers.ws"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))

local LOOPER = [[
events.on("player.joined", function(e)
    local n = 0
    while true do n = n + 1 end
end)
]]

local HOG = [[
local hoard = {}
events.on("player.level_up", function(e)
    while true do hoard[#hoard + 1] = ("x"):rep(4096) .. #hoard end -- the cap long before a budget
end)
]]

local BROKEN = "events.on('player.joined', function(e)\n  return e.\nend)\n"


-- a mod's directory: its manifest (fields beyond name and version as Lua text) and init.lua
local function write_mod(dir, name, fields, init)
    server.write(dir .. "/mods/" .. name .. "/manifest.lua",
                 ("return { name = %q, version = \"0.1.0\", %s }\n"):format(name, fields))
    server.write(dir .. "/mods/" .. name .. "/init.lua", init)
end


describe("mods", function()
    local node, dir, admin

    local function scripts_info()
        local res = node:request("GET", "/api/admin/scripts", { token = admin })
        assert.equal(200, res.status, res.body)
        local by = {}
        for _, m in ipairs(res.json.mods) do
            by[m.name] = m
        end
        return by, res.json
    end

    local function metric(name)
        local body = node:request("GET", "/metrics").body
        local v = body:match(name:gsub("[%[%]%(%)%.%-%+%*%?%^%$]", "%%%0") .. " ([%d%.e%+]+)")
        return tonumber(v)
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        dir = server.tmpdir()
        assert(os.execute("cp -r " .. server.ROOT .. "/scripts/. " .. dir .. "/"))
        write_mod(dir, "looper", "api = 1, handles = { 'player.joined' }, emits = {}", LOOPER)
        write_mod(dir, "hog", "api = 1, handles = { 'player.level_up' }, emits = {}", HOG)
        write_mod(dir, "broken", "api = 1, handles = { 'player.joined' }, emits = {}", BROKEN)
        write_mod(dir, "future", "api = 2, handles = {}, emits = {}", "")
        node = server.start { env = { MMO_SCRIPTS = dir, MMO_ROUTES = "routes", MMO_CONTROL_SOCKET = "",
                                      MMO_MODS_MEMORY_MB = "8", MMO_MODS_STRIKES = "1",
                                      -- time enough for the hog to reach its memory cap on a
                                      -- slow (sanitizer) build; the looper hits the count first
                                      MMO_MODS_TIME_MS = "5000" } }
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = "admin", password = ADMIN_PASSWORD } })
        assert.equal(200, res.status, res.body)
        admin = res.json.access_token
    end)

    teardown(function()
        if node then
            node:stop()
        end
        server.rm_rf(dir)
    end)

    it("loads with the game's scripts; a mod that does not compile is reported with file:line", function()
        local by = scripts_info()
        assert.equal("running", by.welcome.state)
        assert.equal("1.0.0", by.welcome.version)
        assert.equal(0, by.welcome.strikes)
        assert.equal("running", by.looper.state)
        assert.equal("0.1.0", by.looper.version)
        assert.equal("running", by.hog.state)
        assert.equal("failed", by.broken.state)
        assert.matches("broken/init%.lua:3:", by.broken.error)
        assert.equal("failed", by.future.state)
        assert.equal(dir .. "/mods/future/manifest.lua: api 2 is not supported (this node: 1)",
                     by.future.error)
        assert.is_nil(by.future.version)
        assert.equal(2, metric('mmo_mods{state="failed"}'))
    end)

    it("disables a runaway mod and not the game: joins, level-ups and the good mod go on", function()
        local res = node:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 1, prefix = "m" .. server.letters(5), region = "r1" } })
        assert.equal(200, res.status, res.body)
        local bot = res.json.bots[1]
        local c = assert(ws.connect(node, bot.token))
        c:send({ t = "join", player_id = bot.player_id })
        -- the join is answered although the looper ran out of its budget on player.joined
        assert.is_table(c:expect("welcome", 10), "no welcome")
        local by = scripts_info()
        assert.equal("disabled", by.looper.state)
        assert.matches("budget", by.looper.error)
        assert.matches("player.joined", by.looper.error, 1, true)
        assert.equal(1, by.looper.strikes)
        assert.equal(by.looper.error, by.looper.last_strike)
        -- a kill of level 10 gives 100 xp: level 2; the hog blows its memory cap on it, the
        -- welcome mod sends its message to the player
        res = node:request("POST", "/api/events", { token = bot.token, body = { events = {
            { id = "mod-" .. server.letters(8), type = "kill", player_id = bot.player_id,
              ts = os.time(), data = { monster = "wolf", level = 10 } } } } })
        assert.equal(202, res.status, res.body)
        local msg = c:expect("mod", 15)
        assert.is_table(msg, "the welcome mod's message never came")
        assert.equal("welcome", msg.mod)
        assert.equal(2, msg.data.level)
        assert.matches("Level 2!", msg.data.text, 1, true)
        by = scripts_info()
        assert.equal("disabled", by.hog.state)
        assert.matches("memory", by.hog.error)
        assert.equal("running", by.welcome.state)
        -- the player's xp is there: the game did its part whatever the mods did
        res = node:request("GET", "/api/players/" .. bot.player_id, { token = bot.token })
        assert.equal(200, res.status, res.body)
        assert.equal(2, res.json.level)
        -- and the node still moves its players
        c:send({ t = "ping" })
        assert.is_table(c:expect("pong", 5))
        c:close()
        assert.equal(2, metric('mmo_mods{state="disabled"}'))
        assert.is_true(metric('mmo_mod_calls_total{mod="welcome",event="player.level_up",' ..
                              'result="ok"}') >= 1)
        assert.equal(1, metric('mmo_mod_calls_total{mod="looper",event="player.joined",' ..
                               'result="error"}'))
    end)

    it("brings disabled mods back with a reload of the scripts", function()
        server.rm_rf(dir .. "/mods/broken")
        server.rm_rf(dir .. "/mods/future")
        local res = node:request("POST", "/api/admin/scripts/reload", { token = admin })
        assert.equal(200, res.status, res.body)
        local by = scripts_info()
        assert.equal("running", by.looper.state)
        assert.equal("running", by.hog.state)
        assert.equal(0, by.looper.strikes)
        assert.is_nil(by.broken)
        assert.is_nil(by.future)
        assert.equal(0, metric('mmo_mods{state="disabled"}'))
    end)
end)
