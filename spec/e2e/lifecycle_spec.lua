-- End-to-end: starting, refusing to start, draining on SIGTERM, the command line.
local server = require "helpers.server"


describe("lifecycle", function()
    describe("SIGTERM", function()
        it("lets a request in flight finish, refuses new connections, then exits 0", function()
            local node = server.start()
            local idle = node:connect()            -- an idle keep-alive connection
            idle:send(server.format_request("GET", "/healthz"))
            assert.equal(200, idle:read_response().status)
            local c = node:connect()
            c:send(server.format_request("GET", "/test/sleep?s=0.8"))
            server.sleep(0.1)
            node:signal("TERM")
            assert.is_true(idle:closed_by_peer(2)) -- idle connections are closed at once
            local res = c:read_response()
            assert.equal(200, res.status)
            assert.equal("close", res.headers["connection"])
            c:close()
            idle:close()
            assert.equal(0, node:wait(10))
            local ok = pcall(node.connect, node, 1)
            assert.is_false(ok)
            assert.truthy(node:logs():find("draining", 1, true))
        end)

        it("answers 503 to a request that outlasts the drain time, and still exits 0", function()
            local node = server.start { env = { MMO_SHUTDOWN_DRAIN_MS = "300" } }
            local c = node:connect()
            c:send(server.format_request("GET", "/test/sleep?s=10"))
            server.sleep(0.1)
            local t0 = server.now()
            node:signal("TERM")
            local res = c:read_response()
            c:close()
            assert.equal(503, res.status)
            assert.equal("shutting_down", res.json.error.code)
            assert.equal(0, node:wait(10))
            assert.truthy(server.now() - t0 < 2)
        end)

        it("says it is draining in /readyz while requests finish", function()
            local node = server.start()
            local c = node:connect()
            c:send(server.format_request("GET", "/test/sleep?s=0.6"))
            local probe = node:connect()           -- a request begun before the signal...
            probe:send("GET /readyz HTTP/1.1\r\n")
            server.sleep(0.1)
            node:signal("TERM")
            server.sleep(0.1)
            probe:send("Host: x\r\n\r\n")          -- ...and finished during the drain
            local ready = probe:read_response()
            assert.equal(503, ready.status)
            assert.equal("draining", ready.json.status)
            assert.equal(200, c:read_response().status)
            c:close()
            probe:close()
            assert.equal(0, node:wait(10))
        end)
    end)

    describe("start", function()
        local dir

        before_each(function()
            dir = server.tmpdir()
        end)

        after_each(function()
            server.rm_rf(dir)
        end)

        it("refuses to start when a script does not compile, naming file and line", function()
            server.write(dir .. "/broken_routes.lua", "return {\n  http = {\n    { \"GET\" \"/x\" },\n}}\n")
            local rc, out = server.start { scripts = dir .. ";" .. server.ROOT .. "/scripts",
                                           routes = "broken_routes", expect_fail = true }
            assert.equal(1, rc)
            assert.truthy(out:find("broken_routes.lua:3:", 1, true), out)
        end)

        it("refuses a route whose handler does not exist", function()
            server.write(dir .. "/r.lua", "return { http = { { 'GET', '/x', 'demo.nope', role = 'public' } } }\n")
            local rc, out = server.start { scripts = dir .. ";" .. server.ROOT .. "/scripts",
                                           routes = "r", expect_fail = true }
            assert.equal(1, rc)
            assert.truthy(out:find("module handlers.demo has no function nope", 1, true), out)
        end)

        it("refuses a route without a role, or with a misspelt field", function()
            server.write(dir .. "/r1.lua", "return { http = { { 'GET', '/x', 'demo.player' } } }\n")
            local rc, out = server.start { scripts = dir .. ";" .. server.ROOT .. "/scripts",
                                           routes = "r1", expect_fail = true }
            assert.equal(1, rc)
            assert.truthy(out:find("role must be one of", 1, true), out)
            server.write(dir .. "/r2.lua",
                         "return { http = { { 'GET', '/x', 'demo.player', role = 'public', rol = 1 } } }\n")
            rc, out = server.start { scripts = dir .. ";" .. server.ROOT .. "/scripts",
                                     routes = "r2", expect_fail = true }
            assert.equal(1, rc)
            assert.truthy(out:find("unknown field rol", 1, true), out)
        end)

        it("refuses an unknown configuration key", function()
            server.write(dir .. "/config.lua", "return { http = { prot = 8080 } }\n")
            local rc, out = server.run("serve", { MMO_CONFIG = dir .. "/config.lua" })
            assert.equal(1, rc)
            assert.truthy(out:find("unknown key http.prot", 1, true), out)
        end)

        it("refuses a config.lua that tries to reach the system", function()
            server.write(dir .. "/config.lua", "os.execute('true')\nreturn {}\n")
            local rc, out = server.run("serve", { MMO_CONFIG = dir .. "/config.lua" })
            assert.equal(1, rc)
            assert.truthy(out:find("config.lua:1:", 1, true), out)
        end)

        it("refuses a port already in use with one clear line", function()
            local node = server.start()
            local rc, out = server.run("serve", { MMO_PORT = tostring(node.port),
                                                   MMO_LOG_LEVEL = "off" })
            node:stop()
            assert.equal(1, rc)
            assert.truthy(out:find("cannot listen", 1, true), out)
        end)
    end)

    describe("command line", function()
        it("prints help and the version", function()
            local rc, out = server.run("--help")
            assert.equal(0, rc)
            assert.truthy(out:find("usage: mmo", 1, true))
            rc, out = server.run("version")
            assert.equal(0, rc)
            assert.truthy(out:match("^mmo %d+%.%d+%.%d+"))
        end)

        it("refuses an unknown command or option", function()
            local rc, out = server.run("fly")
            assert.equal(2, rc)
            assert.truthy(out:find("unknown command fly", 1, true))
            rc = server.run("serve --bogus")
            assert.equal(2, rc)
        end)

        it("shows the configuration in effect, environment included", function()
            local rc, out = server.run("config", { MMO_PORT = "9999", MMO_REDIS = "10.0.0.1:7000" })
            assert.equal(0, rc)
            assert.truthy(out:find("http.port = 9999", 1, true))
            assert.truthy(out:find("redis.host = \"10.0.0.1\"", 1, true))
            assert.truthy(out:find("redis.port = 7000", 1, true))
        end)

        it("checks the real scripts, and reports a broken one with file:line", function()
            local rc, out = server.run("check")
            assert.equal(0, rc, out)
            local dir = server.tmpdir()
            server.write(dir .. "/handlers/bad.lua", "local x = = 1\n")
            rc, out = server.run("check", { MMO_SCRIPTS = dir .. ";" .. server.ROOT .. "/scripts" })
            server.rm_rf(dir)
            assert.equal(1, rc)
            assert.truthy(out:find("handlers/bad.lua:1:", 1, true), out)
        end)
    end)
end)
