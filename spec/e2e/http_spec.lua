-- End-to-end: the HTTP layer of a real node (limits, bad input, keep-alive, errors).
local server = require "helpers.server"


local function is_error_shape(res, status, code)
    assert.equal(status, res.status)
    assert.is_table(res.json, "body is not JSON: " .. tostring(res.body))
    assert.is_table(res.json.error)
    assert.equal(code, res.json.error.code)
    assert.is_string(res.json.error.message)
    assert.is_table(res.json.error.details)
    assert.equal(res.headers["x-request-id"], res.json.error.request_id)
    assert.truthy(#res.json.error.request_id > 0)
end


describe("http", function()
    local node

    setup(function()
        node = server.start { env = { MMO_HTTP_HEADER_TIMEOUT_MS = "1000",
                                      MMO_HTTP_BODY_TIMEOUT_MS = "1000" } }
    end)

    teardown(function()
        assert.equal(0, node:stop())
    end)

    describe("health", function()
        it("answers /healthz with 200 and a request id", function()
            local res = node:request("GET", "/healthz")
            assert.equal(200, res.status)
            assert.equal("ok", res.json.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.truthy(res.headers["x-request-id"]:match("^r%-"))
        end)

        it("says in /healthz how long a turn of the event loop took", function()
            -- each /healthz measures the next turn; it tells of the last one measured
            local loop = server.eventually(function()
                local res = node:request("GET", "/healthz")
                assert.equal(200, res.status)
                return res.json.checks.loop.status ~= "unknown" and res.json.checks.loop
            end, 2)
            assert.equal("ok", loop.status)
            assert.is_number(loop.ms)
            assert.is_true(loop.ms >= 0 and loop.ms < 100, tostring(loop.ms))
            assert.is_true(loop.age_ms >= 0 and loop.age_ms < 2000, tostring(loop.age_ms))
        end)

        it("asks PostgreSQL and Redis for /readyz, says how long each took, and asks them " ..
           "at most once a second however often it is asked", function()
            local res = node:request("GET", "/readyz")
            assert.equal(200, res.status)
            local checks = res.json.checks
            for _, name in ipairs({ "postgres", "redis", "scripts" }) do
                assert.equal("ok", checks[name].status, name)
                assert.is_number(checks[name].ms, name)
            end
            assert.is_true(checks.postgres.ms > 0) -- a round trip, not a look at a flag
            assert.is_true(checks.redis.ms > 0)
            assert.is_true(checks.postgres.connections >= 1)
            assert.is_true(checks.scripts.routes > 0)
            -- 50 connections asking as fast as they can: every answer is 200 and tells of
            -- one of at most a probe a second (the same probe has the same ms)
            local pg, rd = {}, {}
            local t0 = server.now()
            local n = server.concurrent(node, 50, 1.5, function() return { "GET", "/readyz" } end,
                function(_, r)
                    assert.equal(200, r.status)
                    pg[r.json.checks.postgres.ms] = true
                    rd[r.json.checks.redis.ms] = true
                end)
            local seconds = server.now() - t0
            local function count(set)
                local k = 0
                for _ in pairs(set) do
                    k = k + 1
                end
                return k
            end
            assert.is_true(n >= 100, tostring(n))
            assert.is_true(count(pg) <= math.ceil(seconds) + 1, count(pg) .. " probes")
            assert.is_true(count(rd) <= math.ceil(seconds) + 1, count(rd) .. " probes")
        end)

        it("gives every response its own request id", function()
            local a = node:request("GET", "/healthz").headers["x-request-id"]
            local b = node:request("GET", "/healthz").headers["x-request-id"]
            assert.not_equal(a, b)
        end)

        it("keeps a sane X-Request-Id from the client and replaces a hostile one", function()
            local res = node:request("GET", "/test/echo", { headers = { ["X-Request-Id"] = "abc-123" } })
            assert.equal("abc-123", res.headers["x-request-id"])
            assert.equal("abc-123", res.json.id)
            res = node:request("GET", "/test/echo", { headers = { ["X-Request-Id"] = "a\"b<c>" } })
            assert.truthy(res.headers["x-request-id"]:match("^r%-"))
        end)
    end)

    describe("routing", function()
        it("answers an unknown route with 404 in the error shape", function()
            is_error_shape(node:request("GET", "/no/such/route"), 404, "not_found")
        end)

        it("answers a known path with the wrong method with 405 and Allow", function()
            local res = node:request("DELETE", "/test/echo")
            is_error_shape(res, 405, "method_not_allowed")
            assert.equal("GET, HEAD, POST", res.headers["allow"])
        end)

        it("passes decoded path parameters and query to the handler", function()
            local res = node:request("GET", "/test/items/a%20b?x=1&y=two+words&z=%C3%A9&flag")
            assert.equal(200, res.status)
            assert.same({ id = "a b" }, res.json.params)
            assert.same({ x = "1", y = "two words", z = "é", flag = "" }, res.json.query)
        end)

        it("prefers a literal segment over a parameter", function()
            assert.same({ special = true }, node:request("GET", "/test/items/special").json)
            local res = node:request("PUT", "/test/items/7/tags/red")
            assert.same({ id = "7", tag = "red" }, res.json.params)
        end)

        it("refuses a bad percent-escape with 400", function()
            is_error_shape(node:request("GET", "/test/items/%zz"), 400, "bad_request")
        end)

        it("answers HEAD like GET without a body", function()
            local c = node:connect()
            c:send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            local head = c:read_response(true)
            assert.equal(200, head.status)
            assert.truthy(tonumber(head.headers["content-length"]) > 0)
            local get = c:read_response()   -- the next response starts right after the headers
            assert.equal(200, get.status)
            assert.equal("ok", get.json.status)
            c:close()
        end)

        it("refuses a role-protected route without a token (401)", function()
            is_error_shape(node:request("GET", "/test/player_only"), 401, "unauthenticated")
        end)
    end)

    describe("request bodies", function()
        it("decodes a JSON body", function()
            local res = node:request("POST", "/test/echo", { body = { a = 1, b = { "x" } } })
            assert.equal(200, res.status)
            assert.same({ a = 1, b = { "x" } }, res.json.body)
        end)

        it("answers invalid JSON with 400 bad_json and runs no handler", function()
            local res = node:request("POST", "/test/echo", { body = "{\"a\": 1,,}" })
            is_error_shape(res, 400, "bad_json")
            res = node:request("POST", "/test/echo", { body = "[NaN]" })
            is_error_shape(res, 400, "bad_json")
        end)

        it("refuses a body that is not sent as JSON with 415", function()
            for _, ctype in ipairs({ "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=x", "application/jsonx" }) do
                local res = node:request("POST", "/test/echo",
                                         { body = "{\"a\":1}", headers = { ["Content-Type"] = ctype } })
                is_error_shape(res, 415, "unsupported_media_type")
            end
            local c = node:connect()
            c:send("POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            is_error_shape(c:read_response(), 415, "unsupported_media_type")
            c:close()
            local res = node:request("POST", "/test/echo", { body = "{\"a\":1}",
                headers = { ["Content-Type"] = "application/json; charset=utf-8" } })
            assert.equal(200, res.status)
        end)

        it("accepts a chunked body", function()
            local c = node:connect()
            c:send("POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" ..
                   "Content-Type: application/json\r\n\r\n5\r\n{\"k\":\r\n4\r\n\"v\"}\r\n0\r\n\r\n")
            local res = c:read_response()
            assert.equal(200, res.status)
            assert.same({ k = "v" }, res.json.body)
            c:close()
        end)

        it("refuses a body over the limit with 413 before reading it", function()
            local c = node:connect()
            c:send("POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
                   "Content-Length: 2000000\r\n\r\n")
            local res = c:read_response()   -- no byte of the body was sent
            is_error_shape(res, 413, "body_too_large")
            assert.equal("close", res.headers["connection"])
            assert.is_true(c:closed_by_peer(3))
            c:close()
        end)

        it("refuses a chunked body that grows over the limit with 413", function()
            local c = node:connect()
            c:send("POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            local chunk = string.format("%x\r\n", 65536) .. string.rep("a", 65536) .. "\r\n"
            local res
            for _ = 1, 20 do
                if not c:send(chunk) then
                    break
                end
            end
            res = c:read_response()
            is_error_shape(res, 413, "body_too_large")
            c:close()
        end)

        it("answers Expect: 100-continue", function()
            local c = node:connect()
            c:send("POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n" ..
                   "Content-Type: application/json\r\nExpect: 100-continue\r\n\r\n")
            assert.is_true(c:fill())
            assert.truthy(c.buf:match("^HTTP/1.1 100 Continue\r\n\r\n"))
            c:send("{\"a\":1}")
            local res = c:read_response()
            assert.equal(200, res.status)
            assert.same({ a = 1 }, res.json.body)
            c:close()
        end)
    end)

    describe("bad input", function()
        it("answers a malformed request line with 400 and closes", function()
            local c = node:connect()
            c:send("GARBAGE\r\n\r\n")
            local res = c:read_response()
            is_error_shape(res, 400, "bad_request")
            assert.is_true(c:closed_by_peer(3))
            c:close()
        end)

        it("answers a malformed header with 400 and closes", function()
            local c = node:connect()
            c:send("GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n")
            is_error_shape(c:read_response(), 400, "bad_request")
            assert.is_true(c:closed_by_peer(3))
            c:close()
        end)

        -- request smuggling: a front proxy and this node must never disagree on where a
        -- request ends, so every ambiguous framing is refused, and what follows it is not read
        it("refuses ambiguous framing (smuggling) with 400, closes, and runs nothing after it", function()
            local J = "Content-Type: application/json\r\n"
            local smuggled = "GET /test/boom HTTP/1.1\r\nHost: x\r\n\r\n"
            local cases = {
                { "Content-Length and Transfer-Encoding", "POST /test/echo HTTP/1.1\r\nHost: x\r\n" .. J ..
                  "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" .. smuggled },
                { "two lengths", "POST /test/echo HTTP/1.1\r\nHost: x\r\n" .. J ..
                  "Content-Length: 2\r\nContent-Length: 41\r\n\r\n{}" .. smuggled },
                { "chunked, then identity", "POST /test/echo HTTP/1.1\r\nHost: x\r\n" .. J ..
                  "Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n" .. smuggled },
                { "an unknown coding", "POST /test/echo HTTP/1.1\r\nHost: x\r\n" .. J ..
                  "Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" .. smuggled },
                { "white space before the colon", "POST /test/echo HTTP/1.1\r\nHost: x\r\n" .. J ..
                  "Transfer-Encoding : chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" .. smuggled },
                { "a signed length", "POST /test/echo HTTP/1.1\r\nHost: x\r\n" .. J ..
                  "Content-Length: +2\r\n\r\n{}" .. smuggled },
            }
            local before = node:request("GET", "/metrics").body
            for _, case in ipairs(cases) do
                local c = node:connect()
                c:send(case[2])
                local res = c:read_response()
                assert.equal(400, res and res.status, case[1])
                is_error_shape(res, 400, "bad_request")
                assert.is_true(c:closed_by_peer(3), case[1])
                assert.equal("", c.buf, case[1] .. ": something was answered after the 400")
                c:close()
            end
            -- the smuggled request never ran: /test/boom would have counted a Lua error
            local function boom(text)
                return text:match('mmo_lua_errors_total{module="handlers.test",hook="http"} (%d+)')
            end
            assert.equal(boom(before), boom(node:request("GET", "/metrics").body))
        end)

        it("answers headers over the limit with 431", function()
            local c = node:connect()
            c:send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 20000) ..
                   "\r\n\r\n")
            is_error_shape(c:read_response(), 431, "headers_too_large")
            c:close()
        end)

        it("answers too many headers with 431", function()
            local lines = {}
            for i = 1, 150 do
                lines[i] = "X-H" .. i .. ": v"
            end
            local c = node:connect()
            c:send("GET /healthz HTTP/1.1\r\n" .. table.concat(lines, "\r\n") .. "\r\n\r\n")
            is_error_shape(c:read_response(), 431, "headers_too_large")
            c:close()
        end)

        it("cuts off a client that sends a byte a second at the header timeout", function()
            local c = node:connect()
            local req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            local t0 = server.now()
            local sent_all = true
            for i = 1, #req do
                if not c:send(req:sub(i, i)) then
                    sent_all = false
                    break
                end
                server.sleep(0.25)
                if server.now() - t0 > 3 then
                    break
                end
            end
            local res = c:read_response()
            assert.is_false(sent_all and res ~= nil and res.status == 200)
            if res then
                assert.equal(408, res.status)
            end
            assert.is_true(c:closed_by_peer(2))
            local elapsed = server.now() - t0
            assert.truthy(elapsed < 3.5, "took " .. elapsed)
            c:close()
            -- and the node still serves others
            assert.equal(200, node:request("GET", "/healthz").status)
        end)

        it("closes a connection that sends nothing at all", function()
            local c = node:connect()
            local t0 = server.now()
            assert.is_true(c:closed_by_peer(4))
            assert.truthy(server.now() - t0 < 3)
            c:close()
        end)
    end)

    describe("keep-alive and pipelining", function()
        it("serves several requests on one connection", function()
            local c = node:connect()
            for _ = 1, 5 do
                c:send(server.format_request("GET", "/healthz"))
                assert.equal(200, c:read_response().status)
            end
            c:close()
        end)

        it("answers pipelined requests in order", function()
            local c = node:connect()
            c:send(server.format_request("GET", "/test/sleep?s=0.2") ..
                   server.format_request("GET", "/test/items/1") ..
                   server.format_request("GET", "/no/route") ..
                   server.format_request("GET", "/test/items/2"))
            local a, b, d, e = c:read_response(), c:read_response(), c:read_response(),
                               c:read_response()
            assert.equal(200, a.status)
            assert.truthy(a.json.slept >= 0.19)
            assert.same({ id = "1" }, b.json.params)
            assert.equal(404, d.status)
            assert.same({ id = "2" }, e.json.params)
            c:close()
        end)

        it("answers 300 pipelined requests sent in one write, in order", function()
            local c = node:connect()
            local parts = {}
            for i = 1, 300 do
                parts[i] = server.format_request("GET", "/test/items/" .. i)
            end
            -- and a last one whose headers arrive in pieces
            c:send(table.concat(parts) .. "GET /test/items/last HTTP/1.1\r\nHo")
            for i = 1, 300 do
                local res = c:read_response()
                assert.equal(200, res.status, res.body)
                assert.equal(tostring(i), res.json and res.json.params and res.json.params.id, res.body)
            end
            server.sleep(0.05)
            c:send("st: x\r\nX-A: ")
            server.sleep(0.05)
            c:send("b\r\n\r\n")
            local res = c:read_response()
            assert.equal("last", res.json and res.json.params and res.json.params.id, res.body)
            assert.equal("b", res.json.headers["x-a"])
            c:close()
        end)

        it("reads on after a request that waited on I/O, when the next one is half sent", function()
            local c = node:connect()
            c:send(server.format_request("GET", "/test/sleep?s=0.2") .. "GET /healthz HTTP/1.1\r\nHo")
            assert.equal(200, c:read_response().status)
            server.sleep(0.05)
            c:send("st: x\r\n\r\n")
            local res = c:read_response()
            assert.is_table(res)
            assert.equal(200, res.status)
            c:close()
        end)

        it("reads a large body that spans many reads", function()
            local big = {}
            for i = 1, 30000 do
                big[i] = i
            end
            local res = node:request("POST", "/test/echo", { body = { list = big } })
            assert.equal(200, res.status)
            assert.equal(30000, #res.json.body.list)
            assert.equal(30000, res.json.body.list[30000])
        end)

        it("closes after the response when the client asks", function()
            local c = node:connect()
            c:send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            local res = c:read_response()
            assert.equal(200, res.status)
            assert.equal("close", res.headers["connection"])
            assert.is_true(c:closed_by_peer(2))
            c:close()
        end)

        it("answers requests sent before the client shut its side, then closes", function()
            local c = node:connect()
            c:send(server.format_request("GET", "/test/sleep?s=0.1") ..
                   server.format_request("GET", "/test/items/2"))
            c.sock:shutdown("send")
            assert.equal(200, c:read_response().status)
            assert.same({ id = "2" }, c:read_response().json.params)
            assert.is_true(c:closed_by_peer(2))
            c:close()
        end)

        it("closes at once when the requests and the FIN come in one segment", function()
            -- one edge for data and FIN: the close must not wait for the idle timeout
            for _ = 1, 20 do
                local c = node:connect()
                c:send(server.format_request("GET", "/healthz") ..
                       server.format_request("GET", "/test/items/3"))
                c.sock:shutdown("send")
                assert.equal(200, c:read_response().status)
                assert.same({ id = "3" }, c:read_response().json.params)
                assert.is_true(c:closed_by_peer(1))
                c:close()
            end
        end)

        it("speaks HTTP/1.0 and closes after it", function()
            local c = node:connect()
            c:send("GET /healthz HTTP/1.0\r\n\r\n")
            assert.equal(200, c:read_response().status)
            assert.is_true(c:closed_by_peer(2))
            c:close()
        end)
    end)

    describe("handler errors", function()
        it("answers a raising handler with 500 and the request id, and logs the traceback", function()
            local c = node:connect()
            c:send(server.format_request("GET", "/test/boom"))
            local res = c:read_response()
            is_error_shape(res, 500, "internal_error")
            assert.not_truthy(res.body:find("nil value", 1, true)) -- no internals leak out
            -- the next request on the same connection works
            c:send(server.format_request("GET", "/healthz"))
            assert.equal(200, c:read_response().status)
            c:close()
            local found = server.eventually(function()
                for _, e in ipairs(node:log_entries()) do
                    if e.level == "error" and e.request_id == res.json.error.request_id then
                        return e
                    end
                end
            end, 5)
            assert.is_table(found)
            assert.truthy(found.msg:find("attempt to index", 1, true))
            assert.truthy(found.msg:find("stack traceback", 1, true))
            assert.truthy(found.msg:find("handlers/test.lua:%d+"))
            assert.equal("GET /test/boom", found.route)
        end)

        it("answers a typed error with its status, code and details", function()
            local res = node:request("GET", "/test/typed")
            is_error_shape(res, 409, "thing_taken")
            assert.same({ thing = "x" }, res.json.error.details)
        end)

        it("answers 500 when a handler returns no status", function()
            is_error_shape(node:request("GET", "/test/bad_status"), 500, "internal_error")
        end)

        it("answers 500 when a handler yields by itself, and goes on serving", function()
            is_error_shape(node:request("GET", "/test/yield"), 500, "internal_error")
            assert.equal(200, node:request("GET", "/healthz").status)
        end)

        it("refuses writes to undeclared globals", function()
            is_error_shape(node:request("GET", "/test/global"), 500, "internal_error")
            local found = server.eventually(function()
                return node:logs():find("assignment to undeclared global", 1, true)
            end, 5)
            assert.truthy(found)
        end)

        it("lets a handler set headers and a content type, and drops invalid ones", function()
            local res = node:request("GET", "/test/headers")
            assert.equal(201, res.status)
            assert.equal("plain text", res.body)
            assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
            assert.equal("yes", res.headers["x-thing"])
            assert.is_nil(res.headers["x-bad"])
        end)
    end)

    describe("concurrency", function()
        it("serves other requests while a handler sleeps", function()
            local slow = node:connect()
            slow:send(server.format_request("GET", "/test/sleep?s=0.5"))
            local t0 = server.now()
            local res = node:request("GET", "/healthz")
            assert.equal(200, res.status)
            assert.truthy(server.now() - t0 < 0.4)
            assert.equal(200, slow:read_response().status)
            slow:close()
        end)
    end)

    describe("logs", function()
        it("writes JSON lines with ts, level, node, msg and the request's fields", function()
            local res = node:request("GET", "/test/log", { headers = { ["X-Request-Id"] = "log-spec-1" } })
            assert.equal(200, res.status)
            local line = server.eventually(function()
                for _, e in ipairs(node:log_entries()) do
                    if e.msg == "hello from lua" then
                        return e
                    end
                end
            end, 5)
            assert.is_table(line)
            assert.equal("info", line.level)
            assert.equal("spec-node", line.node)
            assert.equal("log-spec-1", line.request_id)
            assert.equal(42, line.player)
            assert.equal("r1", line.region)
            assert.truthy(line.ts:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"))
        end)
    end)
end)


describe("http limits", function()
    it("refuses connections over max_connections with 503", function()
        local node = server.start { env = { MMO_HTTP_MAX_CONNECTIONS = "3" } }
        local held = {}
        for i = 1, 3 do
            held[i] = node:connect()
        end
        local extra = node:connect()
        local res = extra:read_response()
        assert.equal(503, res.status)
        extra:close()
        held[1]:send(server.format_request("GET", "/healthz"))
        assert.equal(200, held[1]:read_response().status)
        for _, c in ipairs(held) do
            c:close()
        end
        -- a slot frees up once a connection is gone
        assert.truthy(server.eventually(function()
            local ok, r = pcall(node.request, node, "GET", "/healthz")
            return ok and r.status == 200
        end, 5))
        assert.equal(0, node:stop())
    end)

    -- a flood from one address: HTTP and WebSocket connections count together, places come
    -- back when connections close, and other addresses are not held up
    it("caps connections per address (max_connections_per_ip), WebSocket ones included", function()
        local ws = require "helpers.ws"
        local node = server.start { env = { MMO_HTTP_MAX_CONNECTIONS_PER_IP = "4" } }
        -- the token over a connection that stays held (no other connection may be pending)
        local held = { node:connect(), node:connect() }
        held[1]:send(server.format_request("POST", "/api/auth/login", { body = {
            username = "admin", password = os.getenv("MMO_ADMIN_PASSWORD") } }))
        local admin = assert(held[1]:read_response()).json.access_token
        held[2]:send(server.format_request("GET", "/healthz"))
        assert.equal(200, held[2]:read_response().status)
        local w1, w2 = assert(ws.connect(node, admin)), assert(ws.connect(node, admin))
        -- four from 127.0.0.1 now: the fifth is refused, with the error shape
        local extra = node:connect()
        local res = extra:read_response()
        assert.equal(503, res.status)
        assert.equal("overloaded", res.json.error.code)
        assert.truthy(res.json.error.message:find("this address", 1, true))
        extra:close()
        local c5, status = ws.connect(node, admin)
        assert.is_nil(c5)
        assert.equal(503, status)
        -- another address (127.0.0.2 is this machine too) is not held up
        local other = node:connect(nil, "127.0.0.2")
        other:send(server.format_request("GET", "/healthz"))
        assert.equal(200, other:read_response().status)
        other:close()
        -- the ones held still work; a WebSocket that closes gives its place back
        w1:send({ t = "ping" })
        assert.is_table(w1:expect("pong", 2))
        w2:close()
        assert.truthy(server.eventually(function()
            local c = ws.connect(node, admin)
            if c then
                c:close()
                return true
            end
            return false
        end, 5))
        for _, c in ipairs(held) do
            c:close()
        end
        w1:close()
        assert.equal(0, node:stop())
    end)

    it("closes idle keep-alive connections after idle_timeout_ms", function()
        local node = server.start { env = { MMO_HTTP_IDLE_TIMEOUT_MS = "300" } }
        local c = node:connect()
        c:send(server.format_request("GET", "/healthz"))
        assert.equal(200, c:read_response().status)
        local t0 = server.now()
        assert.is_true(c:closed_by_peer(3))
        assert.truthy(server.now() - t0 < 2)
        c:close()
        assert.equal(0, node:stop())
    end)
end)
