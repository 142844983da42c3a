-- End-to-end: players, inventories, trades, the cache layers and the shards.
-- tools/dev test runs every node with two shards on two PostgreSQL servers: shard 1 (the
-- second server) holds home regions r3 and r4.
local server = require "helpers.server"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")


local function unique(prefix)
    local letters = "abcdefghijklmnopqrstuvwxyz"
    local s = {}
    local n = math.floor(server.now() * 1000) + math.random(0, 1e6)
    for i = 1, 8 do
        local k = n % 26
        s[i] = letters:sub(k + 1, k + 1)
        n = math.floor(n / 26) + math.random(0, 25)
    end
    return prefix .. table.concat(s)
end


local function is_error(res, status, code)
    assert.equal(status, res.status, res.body)
    assert.is_table(res.json and res.json.error, res.body)
    if code then
        assert.equal(code, res.json.error.code, res.body)
    end
end


-- rows of a query on a database of the test cluster (psql, not the API under test)
local function sql(conninfo, query)
    local p = io.popen("psql '" .. conninfo .. "' -qtAc \"" .. query .. "\" 2>&1")
    local out = p:read("*a")
    p:close()
    return out
end


describe("players", function()
    local node, me, other, admin

    local function account()
        local name = "acct" .. unique("")
        node:request("POST", "/api/auth/register",
                     { body = { username = name, password = "correct horse battery staple" } })
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = name, password = "correct horse battery staple" } })
        assert.equal(200, res.status, res.body)
        return { id = res.json.account_id, token = res.json.access_token }
    end

    local function create(who, body)
        return node:request("POST", "/api/players", { token = who.token, body = body })
    end

    local function new_player(who, region, class)
        local res = create(who, { name = unique("P"), class = class or "mage", region = region })
        assert.equal(201, res.status, res.body)
        return res.json
    end

    local function grant(id, item, qty)
        local res = node:request("POST", "/api/admin/players/" .. id .. "/items",
                                 { token = admin.token, body = { item = item, qty = qty } })
        assert.equal(200, res.status, res.body)
        return res.json
    end

    local function inventory(who, id)
        local res = node:request("GET", "/api/players/" .. id .. "/inventory", { token = who.token })
        assert.equal(200, res.status, res.body)
        local inv = {}
        for _, l in ipairs(res.json.items) do
            inv[l.item] = l.qty
        end
        return inv
    end

    local function trade(who, body)
        return node:request("POST", "/api/trades", { token = who.token, body = body })
    end

    setup(function()
        node = server.start()
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = "admin", password = ADMIN_PASSWORD } })
        admin = { token = res.json.access_token }
    end)

    -- fresh accounts for every test: an account has at most 10 players
    before_each(function()
        me = account()
        other = account()
    end)

    teardown(function()
        assert.equal(0, node:stop())
    end)

    describe("CRUD", function()
        it("creates a player with the document of API.md", function()
            local name = unique("Aria")
            local res = create(me, { name = name, class = "mage" })
            assert.equal(201, res.status, res.body)
            local p = res.json
            assert.equal(name, p.name)
            assert.equal("mage", p.class)
            assert.equal(1, p.level)
            assert.equal(0, p.xp)
            assert.equal(70, p.stats.max_hp)
            assert.same({ region = "r1", x = 500, y = 500 }, p.position)
            assert.equal(require("cjson").null, p.guild)
            assert.truthy(p.created_at:match("^%d+%-%d+%-%d+T"))
            local got = node:request("GET", "/api/players/" .. p.id, { token = other.token })
            assert.equal(200, got.status)
            assert.same(p, got.json)
            local m = node:request("GET", "/api/me", { token = me.token })
            assert.equal(200, m.status)
            local listed
            for _, q in ipairs(m.json.players) do
                if q.id == p.id then
                    listed = q
                end
            end
            assert.same(p, listed) -- the account's players, as their documents
            -- only the account's own: other has none yet
            assert.same({}, node:request("GET", "/api/me", { token = other.token }).json.players)
        end)

        it("refuses a taken name (409), in any case and across shards", function()
            local name = unique("Dup")
            assert.equal(201, create(me, { name = name, class = "mage" }).status)
            is_error(create(other, { name = name:upper(), class = "mage", region = "r3" }), 409,
                     "name_taken")
        end)

        it("refuses bad names, classes and regions with 422", function()
            is_error(create(me, { name = "X", class = "mage" }), 422)
            is_error(create(me, { name = unique("Ok"), class = "bard" }), 422)
            is_error(create(me, { name = unique("Ok"), class = "mage", region = "r9" }), 422)
            is_error(create(me, { name = "Robert'); DROP TABLE players;--", class = "mage" }), 422)
            is_error(create(me, "[]"), 422)
        end)

        it("answers ids that are not numbers, negative or huge with 404", function()
            for _, id in ipairs({ "abc", "-1", "0", "1.5", "99999999999999999999", "1e3",
                                  "%27%20or%201%3D1" }) do
                is_error(node:request("GET", "/api/players/" .. id, { token = me.token }), 404)
            end
        end)

        it("lets the owner change appearance, not level, xp or name", function()
            local p = new_player(me)
            local url = "/api/players/" .. p.id
            local res = node:request("PATCH", url, { token = me.token,
                body = { appearance = { hair = "braided", title = "the Bold" } } })
            assert.equal(200, res.status, res.body)
            assert.same({ hair = "braided", title = "the Bold" }, res.json.appearance)
            -- a read after the write is never stale (it goes through the cache)
            assert.same(res.json, node:request("GET", url, { token = me.token }).json)
            is_error(node:request("PATCH", url, { token = me.token, body = { level = 60 } }), 422)
            is_error(node:request("PATCH", url, { token = me.token, body = { xp = 1e9 } }), 422)
            is_error(node:request("PATCH", url, { token = me.token, body = { name = "Other" } }),
                     403)
            is_error(node:request("PATCH", url, { token = other.token,
                                                  body = { appearance = { hair = "long" } } }), 403)
            assert.equal(1, node:request("GET", url, { token = me.token }).json.level)
        end)

        it("moves a player only through the movement rules", function()
            local p = new_player(me)
            local url = "/api/players/" .. p.id
            server.sleep(1.1)
            local res = node:request("PATCH", url, { token = me.token,
                                                     body = { position = { x = 503, y = 500 } } })
            assert.equal(200, res.status, res.body)
            assert.same({ region = "r1", x = 503, y = 500 }, res.json.position)
            res = node:request("PATCH", url, { token = me.token,
                                              body = { position = { x = 900, y = 900 } } })
            is_error(res, 422, "move_rejected")
            assert.equal("too_fast", res.json.error.details.reason)
            is_error(node:request("PATCH", url, { token = me.token,
                                                  body = { position = { x = -5, y = 1 } } }), 422)
        end)

        it("deletes: owner yes, another account no", function()
            local p = new_player(me)
            local url = "/api/players/" .. p.id
            is_error(node:request("DELETE", url, { token = other.token }), 403)
            assert.equal(204, node:request("DELETE", url, { token = me.token }).status)
            is_error(node:request("GET", url, { token = me.token }), 404)
        end)

        it("lists players for moderators, paged", function()
            local mod = account()
            node:request("POST", "/api/admin/accounts/" .. mod.id .. "/roles",
                         { token = admin.token, body = { roles = { "player", "moderator" } } })
            new_player(me, "r2")
            new_player(me, "r2")
            local res = node:request("GET", "/api/players?region=r2&limit=1", { token = mod.token })
            assert.equal(200, res.status, res.body)
            assert.equal(1, #res.json.players)
            local page2 = node:request("GET", "/api/players?region=r2&limit=1&after=" ..
                                       res.json.next, { token = mod.token })
            assert.truthy(page2.json.players[1].id > res.json.players[1].id)
            is_error(node:request("GET", "/api/players", { token = me.token }), 403)
        end)

        it("finds players by the start of their name, whatever the case (the console's search)", function()
            local a = new_player(me, "r1")
            local b = new_player(me, "r3") -- on shard 1
            local prefix = a.name:sub(1, 3)
            local function search(q, token)
                return node:request("GET", "/api/players?name=" .. q, { token = token or admin.token })
            end
            local res = search(a.name:lower())
            assert.equal(200, res.status, res.body)
            assert.equal(1, #res.json.players)
            assert.equal(a.id, res.json.players[1].id)
            assert.equal(a.name, res.json.players[1].name)
            res = search(b.name:upper())
            assert.equal(b.id, res.json.players[1].id)
            assert.equal("r3", res.json.players[1].position.region)
            -- a prefix finds many, by name
            res = search(prefix .. "&limit=200")
            local names = {}
            for _, p in ipairs(res.json.players) do
                assert.equal(prefix:lower(), p.name:sub(1, 3):lower())
                names[#names + 1] = p.name:lower()
            end
            local sorted = {}
            for i, n in ipairs(names) do
                sorted[i] = n
            end
            table.sort(sorted)
            assert.same(sorted, names)
            -- LIKE's wildcards are letters here: nothing is named with them
            assert.equal(0, #search("%25").json.players)
            assert.equal(0, #search("_").json.players)
            is_error(search(string.rep("x", 33)), 422)
            is_error(search(a.name, me.token), 403)
        end)
    end)

    describe("shards", function()
        it("puts players of home regions r3 and r4 on shard 1's server, and reads them from there",
           function()
            local s1 = os.getenv("MMO_SHARD_1_CONNINFO")
            assert.truthy(s1, "tools/dev test sets MMO_SHARD_1_CONNINFO")
            -- two servers, not two databases of one: each cluster has its own identifier
            local ident = "select system_identifier from pg_control_system()"
            local id0, id1 = sql(os.getenv("MMO_PG"), ident), sql(s1, ident)
            assert.truthy(id0:match("^%d+") and id1:match("^%d+"), id0 .. id1)
            assert.are_not.equal(id0, id1)
            for _, region in ipairs({ "r4", "r3" }) do
                local p = new_player(me, region)
                assert.equal(1, p.id % 64)
                assert.equal("1", sql(s1, "select count(*) from players where id = " .. p.id):match("%d+"))
                assert.equal("0", sql(os.getenv("MMO_PG"),
                                      "select count(*) from players where id = " .. p.id):match("%d+"))
            end
            local p = new_player(me, "r3")
            local q = new_player(me, "r1")
            assert.equal(0, q.id % 64)
            assert.equal("1", sql(os.getenv("MMO_PG"),
                                  "select count(*) from players where id = " .. q.id):match("%d+"))
            assert.equal(200, node:request("GET", "/api/players/" .. p.id, { token = me.token }).status)
        end)

        it("answers 503 for shard 1's players while its server is down, and serves shard 0's",
           function()
            local before = new_player(me, "r4")
            server.service("pg1", "stop")
            local ok, name = pcall(function()
                local q = unique("Q")
                local t0 = server.now()
                local res = create(me, { name = q, class = "mage", region = "r3" })
                is_error(res, 503, "unavailable")
                assert.is_string(res.json.error.request_id)
                assert.truthy(server.now() - t0 < 6, "took " .. (server.now() - t0) .. " s")
                is_error(node:request("POST", "/api/players/" .. before.id .. "/inventory/use",
                                      { token = me.token, body = { item = "potion_small" } }), 503)
                assert.equal(0, new_player(me, "r1").id % 64) -- shard 0 goes on
                return q
            end)
            server.service("pg1", "start")
            assert(ok, name)
            -- the refused player left nothing behind: its name is free
            assert.truthy(server.eventually(function()
                return create(me, { name = name, class = "mage", region = "r3" }).status == 201
            end, 10))
        end)

        it("refuses a trade across shards with a clear error", function()
            local a = new_player(me, "r1")
            local b = new_player(me, "r4")
            grant(a.id, "ore_iron", 3)
            local res = trade(me, { from = a.id, to = b.id, give = { { item = "ore_iron", qty = 1 } } })
            is_error(res, 409, "cross_shard")
            assert.same({ ore_iron = 3 }, inventory(me, a.id))
        end)
    end)

    describe("inventory", function()
        it("grants (admin), uses a buff and a teleport scroll, and refuses what cannot be used",
           function()
            local p = new_player(me, "r2")
            grant(p.id, "scroll_haste", 2)
            grant(p.id, "scroll_teleport", 1)
            grant(p.id, "sword_iron", 1)
            local url = "/api/players/" .. p.id
            local res = node:request("POST", url .. "/inventory/use",
                                     { token = me.token, body = { item = "scroll_haste", qty = 1 } })
            assert.equal(200, res.status, res.body)
            local doc = node:request("GET", url, { token = me.token }).json
            assert.equal(6.25, doc.stats.speed)
            assert.equal("speed", doc.buffs[1].stat)
            res = node:request("POST", url .. "/inventory/use",
                               { token = me.token, body = { item = "scroll_teleport" } })
            assert.equal(200, res.status, res.body)
            assert.same({ region = "r1", x = 500, y = 500 },
                        node:request("GET", url, { token = me.token }).json.position)
            assert.same({ scroll_haste = 1, sword_iron = 1 }, inventory(me, p.id))
            is_error(node:request("POST", url .. "/inventory/use",
                                  { token = me.token, body = { item = "sword_iron" } }), 422)
            is_error(node:request("POST", url .. "/inventory/use",
                                  { token = me.token, body = { item = "scroll_haste", qty = 5 } }), 409)
            is_error(node:request("POST", url .. "/inventory/use",
                                  { token = other.token, body = { item = "scroll_haste" } }), 403)
            is_error(node:request("GET", url .. "/inventory", { token = other.token }), 403)
        end)

        it("refuses grants from non-admins, of unknown items, of bad quantities", function()
            local p = new_player(me)
            local url = "/api/admin/players/" .. p.id .. "/items"
            is_error(node:request("POST", url, { token = me.token, body = { item = "ore_iron", qty = 1 } }),
                     403)
            for _, body in ipairs({ { item = "dragon_egg", qty = 1 }, { item = "ore_iron", qty = -1 },
                                    { item = "ore_iron", qty = 1e12 }, { item = "ore_iron", qty = 0.5 },
                                    { qty = 1 } }) do
                is_error(node:request("POST", url, { token = admin.token, body = body }), 422)
            end
            assert.same({}, inventory(me, p.id))
        end)

        it("lists the catalogue", function()
            local res = node:request("GET", "/api/items", { token = me.token })
            assert.equal(200, res.status)
            local ids = {}
            for _, i in ipairs(res.json.items) do
                ids[i.id] = i
            end
            assert.equal(20, ids.potion_small.stack)
            assert.same({ heal = 50 }, ids.potion_small.effects)
        end)
    end)

    describe("trades", function()
        local a, b

        before_each(function()
            a = new_player(me)
            b = new_player(me)
            grant(a.id, "potion_small", 5)
            grant(b.id, "ore_iron", 10)
        end)

        it("moves items both ways at once", function()
            local res = trade(me, { from = a.id, to = b.id, give = { { item = "potion_small", qty = 2 } },
                                    take = { { item = "ore_iron", qty = 4 } } })
            assert.equal(200, res.status, res.body)
            assert.same({ potion_small = 3, ore_iron = 4 }, inventory(me, a.id))
            assert.same({ potion_small = 2, ore_iron = 6 }, inventory(me, b.id))
        end)

        it("moves nothing when a side lacks an item (409 with the reason)", function()
            local res = trade(me, { from = a.id, to = b.id, give = { { item = "potion_small", qty = 2 } },
                                    take = { { item = "ore_iron", qty = 11 } } })
            is_error(res, 409, "not_enough")
            assert.same({ item = "ore_iron", have = 10, want = 11, side = "to" }, res.json.error.details)
            assert.same({ potion_small = 5 }, inventory(me, a.id))
            assert.same({ ore_iron = 10 }, inventory(me, b.id))
        end)

        it("refuses hostile trades with 422 and moves nothing", function()
            local long = {}
            for i = 1, 1000 do
                long[i] = { item = "potion_small", qty = 1 }
            end
            local bad = {
                { from = a.id, to = a.id, give = { { item = "potion_small", qty = 1 } } },
                { from = a.id, to = b.id, give = long },
                { from = a.id, to = b.id, give = { { item = "potion_small", qty = -3 } } },
                { from = a.id, to = b.id, give = { { item = "potion_small", qty = 1e15 } } },
                { from = a.id, to = b.id, give = { { item = "potion_small", qty = 1.5 } } },
                { from = a.id, to = b.id },
                { from = a.id, to = b.id, give = { { item = "dragon_egg", qty = 1 } } },
                { from = a.id, to = b.id, give = { item = "potion_small", qty = 1 } },
            }
            for i, body in ipairs(bad) do
                local res = trade(me, body)
                assert.equal(422, res.status, "case " .. i .. ": " .. res.body)
            end
            is_error(trade(me, { from = "x", to = b.id, give = { { item = "potion_small", qty = 1 } } }), 404)
            assert.same({ potion_small = 5 }, inventory(me, a.id))
        end)

        it("refuses trading from someone else's player (403)", function()
            is_error(trade(other, { from = a.id, to = b.id, give = { { item = "potion_small", qty = 1 } } }),
                     403, "forbidden")
        end)

        it("needs the other owner's mirror trade to take from another account's player", function()
            local theirs = new_player(other)
            grant(theirs.id, "herb_moonleaf", 3)
            local body = { from = a.id, to = theirs.id, give = { { item = "potion_small", qty = 1 } },
                           take = { { item = "herb_moonleaf", qty = 2 } } }
            local res = trade(me, body)
            assert.equal(202, res.status, res.body)
            assert.equal("offered", res.json.state)
            assert.same({ herb_moonleaf = 3 }, inventory(other, theirs.id))
            res = trade(other, { from = theirs.id, to = a.id, give = body.take, take = body.give })
            assert.equal(200, res.status, res.body)
            assert.same({ herb_moonleaf = 1, potion_small = 1 }, inventory(other, theirs.id))
            assert.same({ potion_small = 4, herb_moonleaf = 2 }, inventory(me, a.id))
        end)
    end)

    describe("cache layers", function()
        it("serves a second read from this node's memory, and counts hits and misses", function()
            local p = new_player(me)
            local before = node:request("GET", "/api/admin/cache", { token = admin.token }).json
            node:request("GET", "/api/players/" .. p.id, { token = me.token })
            node:request("GET", "/api/players/" .. p.id, { token = me.token })
            local after = node:request("GET", "/api/admin/cache", { token = admin.token }).json
            assert.truthy(after.local_hits >= before.local_hits + 2, require("cjson").encode(after))
        end)
    end)

    describe("concurrency", function()
        it("keeps every item's total through 50 concurrent trade loops for 10 s", function()
            local ids = {}
            local items = { "potion_small", "ore_iron", "herb_moonleaf", "elixir_mana" }
            for i = 1, 10 do
                ids[i] = new_player(me).id
                for _, item in ipairs(items) do
                    grant(ids[i], item, 15)
                end
            end
            local statuses, five_hundreds = {}, {}
            local n = server.concurrent(node, 50, 10, function()
                local from = ids[math.random(#ids)]
                local to = ids[math.random(#ids)]
                while to == from do
                    to = ids[math.random(#ids)]
                end
                local give = { { item = items[math.random(#items)], qty = math.random(1, 6) } }
                local take = math.random() < 0.6 and
                             { { item = items[math.random(#items)], qty = math.random(1, 6) } } or nil
                if take and take[1].item == give[1].item then
                    take = nil
                end
                return { "POST", "/api/trades", { token = me.token,
                         body = { from = from, to = to, give = give, take = take } } }
            end, function(_, res)
                statuses[res.status] = (statuses[res.status] or 0) + 1
                if res.status >= 500 then
                    five_hundreds[#five_hundreds + 1] = res.body
                end
            end)
            assert.same({}, five_hundreds)
            local seen = {}
            for status, count in pairs(statuses) do
                seen[#seen + 1] = status .. ": " .. count
            end
            assert.truthy((statuses[200] or 0) > 100, table.concat(seen, ", "))
            for status in pairs(statuses) do
                assert.truthy(status == 200 or status == 409, "status " .. status)
            end
            local totals = {}
            for _, id in ipairs(ids) do
                for item, qty in pairs(inventory(me, id)) do
                    assert.truthy(qty > 0)
                    totals[item] = (totals[item] or 0) + qty
                end
            end
            for _, item in ipairs(items) do
                assert.equal(150, totals[item], item)
            end
            assert.truthy(n > 500, n .. " trades")
        end)
    end)
end)
