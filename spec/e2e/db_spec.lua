-- End-to-end: PostgreSQL and Redis from Lua handlers, non-blocking, and their outages.
local server = require "helpers.server"


describe("storage", function()
    local node

    setup(function()
        node = server.start { env = { MMO_POSTGRES_QUERY_TIMEOUT_MS = "2000",
                                      MMO_REDIS_TIMEOUT_MS = "1000",
                                      MMO_POSTGRES_RECONNECT_MAX_MS = "300",
                                      MMO_REDIS_RECONNECT_MAX_MS = "300" } }
        assert.truthy(server.eventually(function()
            return node:request("GET", "/readyz").status == 200
        end, 10), "node never became ready")
    end)

    teardown(function()
        assert.equal(0, node:stop())
    end)

    describe("mmo.db", function()
        it("returns typed rows for a parameterised query", function()
            local res = node:request("GET", "/test/db/types")
            assert.equal(200, res.status)
            assert.same({ n = 7, t = "x", b = true, f = 1.5, j = { a = { 1, 2 } },
                          big = "9007199254740993" }, res.json.row)
            assert.equal(1, res.json.count)
        end)

        it("returns nil, \"query\" and the SQLSTATE for a rejected statement", function()
            local res = node:request("GET", "/test/db/error")
            assert.equal(200, res.status)
            assert.same({ err = "query", sqlstate = "42P01" }, res.json)
        end)

        it("commits a transaction, and rolls back one that raises", function()
            local name = "tx-" .. tostring(server.now())
            local res = node:request("POST", "/test/db/tx", { body = { name = name } })
            assert.equal(200, res.status)
            assert.is_true(res.json.ok)
            assert.equal("committed", res.json.result)
            assert.equal(1, node:request("GET", "/test/db/count?name=" .. name).json.n)

            local other = name .. "-fail"
            res = node:request("POST", "/test/db/tx", { body = { name = other, fail = true } })
            assert.is_false(res.json.ok)
            assert.truthy(res.json.err:find("fail inside the transaction", 1, true))
            assert.equal(0, node:request("GET", "/test/db/count?name=" .. other).json.n)
        end)

        it("does not block other requests while one waits on PostgreSQL then Redis", function()
            -- the first request sleeps 0.6 s in the database, then writes to Redis; the
            -- second is sent after it and must be answered first
            local slow = node:connect()
            slow:send(server.format_request("GET", "/test/db/sleep_then_cache?s=0.6"))
            server.sleep(0.05)
            local t0 = server.now()
            local fast = node:request("GET", "/test/db/ping")
            local fast_done = server.now()
            assert.equal(200, fast.status)
            assert.equal(1, fast.json.one)
            local res = slow:read_response()
            local slow_done = server.now()
            slow:close()
            assert.equal(200, res.status)
            assert.is_true(res.json.cache)
            assert.truthy(fast_done - t0 < 0.3, "the fast request waited " .. (fast_done - t0))
            assert.truthy(fast_done < slow_done)
        end)

        it("runs many slow queries at once on the pool, not one after the other", function()
            local conns = {}
            local t0 = server.now()
            for i = 1, 6 do
                conns[i] = node:connect()
                conns[i]:send(server.format_request("GET", "/test/db/sleep_then_cache?s=0.4"))
            end
            for i = 1, 6 do
                assert.equal(200, conns[i]:read_response().status)
                conns[i]:close()
            end
            local elapsed = server.now() - t0
            assert.truthy(elapsed < 1.5, "6 x 0.4 s took " .. elapsed)
        end)
    end)

    describe("mmo.cache", function()
        it("gets, sets, increments, evaluates, expires, deletes and pipelines", function()
            local res = node:request("GET", "/test/cache/roundtrip")
            assert.equal(200, res.status)
            assert.equal("v1", res.json.v)
            assert.equal(5, res.json.n)
            assert.is_true(res.json.missing)
            assert.equal("OK", res.json.pipeline[1])
            assert.equal("pv", res.json.pipeline[2])
            assert.truthy(res.json.pipeline[3].err:find("not an integer", 1, true))
            -- {replies = false}: true for what succeeded, the error still told
            assert.same({ true, true }, { res.json.quiet[1], res.json.quiet[2] })
            assert.truthy(res.json.quiet[3].err:find("not an integer", 1, true))
            assert.equal(7, res.json.evaled)
            assert.is_true(res.json.expired)
            assert.is_false(res.json.expired_missing)
            assert.equal(4, res.json.deleted)
        end)
    end)

    describe("mmo.time", function()
        it("runs a timer callback in a task of its own that can do I/O", function()
            local key = tostring(math.floor(server.now() * 1000))
            assert.equal(200, node:request("GET", "/test/timer?key=" .. key).status)
            -- the callback sets spec:timer:<key> in Redis; read it back through a handler
            local ok = server.eventually(function()
                local r = node:request("GET", "/test/cache/get?key=spec:timer:" .. key)
                return r.status == 200 and r.json.value == "fired"
            end, 3)
            assert.truthy(ok)
        end)
    end)

    describe("mmo.time.every", function()
        local function count(key)
            local r = node:request("GET", "/test/cache/get?key=spec:every:" .. key)
            return tonumber(r.json.value)
        end

        it("runs again and again until canceled", function()
            local key = "a" .. tostring(math.floor(server.now() * 1000))
            assert.equal(200, node:request("GET", "/test/every?key=" .. key).status)
            assert.truthy(server.eventually(function() return count(key) == 3 end, 3))
            server.sleep(0.3)
            assert.equal(3, count(key))
        end)

        it("logs a failing run and goes on", function()
            local key = "b" .. tostring(math.floor(server.now() * 1000))
            assert.equal(200, node:request("GET", "/test/every?fail=1&key=" .. key).status)
            assert.truthy(server.eventually(function() return count(key) == 3 end, 3))
            assert.truthy(node:logs():find("first run fails on purpose", 1, true))
        end)
    end)

    describe("outages", function()
        it("answers 503 while PostgreSQL is down, says so in /readyz, and recovers", function()
            server.service("pg", "stop")
            local ok, err = pcall(function()
                local t0 = server.now()
                local res = node:request("GET", "/test/db/ping")
                assert.equal(503, res.status)
                assert.equal("unavailable", res.json.error.code)
                assert.truthy(server.now() - t0 < 2.5, "503 took " .. (server.now() - t0))
                local ready = server.eventually(function()
                    local r = node:request("GET", "/readyz")
                    return r.status == 503 and r.json.checks.postgres.status == "down" and r
                end, 5)
                assert.is_table(ready)
                assert.is_string(ready.json.checks.postgres.error)
                assert.is_number(ready.json.checks.postgres.ms)
                assert.equal("ok", ready.json.checks.redis.status)
                -- other routes go on
                assert.equal(200, node:request("GET", "/test/cache/ping").status)
                assert.equal(200, node:request("GET", "/healthz").status)
            end)
            server.service("pg", "start")
            assert(ok, err)
            assert.truthy(server.eventually(function()
                return node:request("GET", "/test/db/ping").status == 200
            end, 10), "PostgreSQL queries did not recover")
            assert.truthy(server.eventually(function()
                return node:request("GET", "/readyz").status == 200
            end, 10))
        end)

        it("answers 503 while Redis is down, says so in /readyz, and recovers", function()
            server.service("redis", "stop")
            local ok, err = pcall(function()
                local t0 = server.now()
                local res = node:request("GET", "/test/cache/ping")
                assert.equal(503, res.status)
                assert.equal("unavailable", res.json.error.code)
                assert.truthy(server.now() - t0 < 1.5)
                local ready = server.eventually(function()
                    local r = node:request("GET", "/readyz")
                    return r.status == 503 and r.json.checks.redis.status == "down" and r
                end, 5)
                assert.is_table(ready)
                assert.equal("ok", ready.json.checks.postgres.status)
                assert.equal(200, node:request("GET", "/test/db/ping").status)
            end)
            server.service("redis", "start")
            assert(ok, err)
            assert.truthy(server.eventually(function()
                return node:request("GET", "/test/cache/ping").status == 200
            end, 10), "Redis commands did not recover")
            assert.truthy(server.eventually(function()
                return node:request("GET", "/readyz").status == 200
            end, 10))
        end)

        it("answers /readyz within its timeout while Redis is up but does not answer", function()
            local host, port = os.getenv("MMO_REDIS"):match("^(.-):(%d+)$")
            server.sleep(1.1) -- the last result of the Redis check may not be used again
            local p = io.popen("redis-cli -h " .. host .. " -p " .. port ..
                               " CLIENT PAUSE 2500 ALL 2>&1")
            local out = p:read("*a")
            p:close()
            assert.truthy(out:find("OK", 1, true), out)
            local t0 = server.now()
            local res = node:request("GET", "/readyz")
            local took = server.now() - t0
            assert.equal(503, res.status)
            assert.equal("unavailable", res.json.status)
            assert.equal("down", res.json.checks.redis.status)
            -- its own PING timed out, or a call of the node's timers sent just before it did
            -- first, and the connection was dropped under it (rds.c: what is queued behind a
            -- stuck call fails at once): both say the same of a Redis that does not answer
            local why = res.json.checks.redis.error
            assert.is_true(why == "timeout" or why == "unavailable", tostring(why))
            assert.is_true(res.json.checks.redis.ms >= 800, tostring(res.json.checks.redis.ms))
            assert.is_true(took < 2, "took " .. took)
            assert.equal("ok", res.json.checks.postgres.status)
            assert.truthy(server.eventually(function()
                return node:request("GET", "/readyz").status == 200
            end, 10))
        end)
    end)
end)
