-- End-to-end: accounts, tokens, sessions, roles, rate limits and the audit log, including
-- every hostile case of the issue. Each refusal has the error shape and changes nothing.
local jwt = require "helpers.jwt"
local server = require "helpers.server"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")


local function is_error(res, status, code)
    assert.equal(status, res.status, res.body)
    assert.is_table(res.json and res.json.error, res.body)
    if code then
        assert.equal(code, res.json.error.code)
    end
    assert.equal(res.headers["x-request-id"], res.json.error.request_id)
end


local function unique(prefix)
    return prefix .. tostring(math.floor(server.now() * 1000) % 100000000) ..
           tostring(math.random(1000, 9999))
end


describe("accounts", function()
    local node

    local function register(name, password, ip)
        return node:request("POST", "/api/auth/register", { ip = ip,
            body = { username = name, password = password or "correct horse battery staple" } })
    end

    local function login(name, password, ip)
        return node:request("POST", "/api/auth/login", { ip = ip,
            body = { username = name, password = password or "correct horse battery staple" } })
    end

    -- a fresh account, signed in: { id, name, token, refresh }
    local function user()
        local name = unique("u")
        assert.equal(201, register(name).status)
        local res = login(name)
        assert.equal(200, res.status, res.body)
        return { id = res.json.account_id, name = name, token = res.json.access_token,
                 refresh = res.json.refresh_token }
    end

    local function admin()
        local res = login("admin", ADMIN_PASSWORD)
        assert.equal(200, res.status, "admin login (MMO_ADMIN_PASSWORD seeded?): " .. res.body)
        return { id = res.json.account_id, token = res.json.access_token }
    end

    local function me(token)
        return node:request("GET", "/api/me", { token = token })
    end

    local function audit(admin_token, query)
        local res = node:request("GET", "/api/admin/audit?" .. (query or "limit=200"),
                                 { token = admin_token })
        assert.equal(200, res.status, res.body)
        return res.json.entries
    end

    -- rows in PostgreSQL, counted with psql (not through the API under test)
    local function sql_count(where)
        local p = io.popen("psql '" .. os.getenv("MMO_PG") .. "' -qtAc " ..
                           "\"select count(*) from accounts where " .. where .. "\" 2>&1")
        local out = p:read("*a")
        p:close()
        return tonumber(out:match("%d+")), out
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        node = server.start()
    end)

    teardown(function()
        assert.equal(0, node:stop())
    end)

    describe("register, login, me, logout", function()
        it("registers an account and signs in with it", function()
            local name = unique("aria")
            local res = register(name)
            assert.equal(201, res.status, res.body)
            assert.equal(name, res.json.username)
            assert.same({ "player" }, res.json.roles)
            assert.is_number(res.json.id)

            res = login(name)
            assert.equal(200, res.status)
            assert.equal("Bearer", res.json.token_type)
            assert.truthy(res.json.expires_in > 0 and res.json.expires_in <= 900)
            assert.is_string(res.json.refresh_token)
            local claims = jwt.payload(res.json.access_token)
            assert.equal(tostring(res.json.account_id), claims.sub)
            assert.is_string(claims.sid)
            assert.same({ "player" }, claims.roles)
            assert.truthy(claims.exp - claims.iat <= 900)

            local m = me(res.json.access_token)
            assert.equal(200, m.status)
            assert.same({ id = res.json.account_id, username = name, roles = { "player" },
                          players = {} }, m.json)
            assert.truthy(m.body:find('"players":[]', 1, true))
        end)

        it("refuses a taken username, whatever its case", function()
            local name = unique("Taken")
            assert.equal(201, register(name).status)
            is_error(register(name:upper()), 409, "username_taken")
        end)

        it("refuses bad usernames and passwords with 422 (validation rules)", function()
            is_error(register("ab"), 422, "validation_failed")
            is_error(register("has space"), 422, "validation_failed")
            is_error(register(unique("p"), "short"), 422, "validation_failed")
            is_error(register(unique("p"), "password123"), 422, "validation_failed")
            local name = unique("same")
            is_error(register(name, name .. "12345678"), 422, "validation_failed")
        end)

        it("answers a wrong password and an unknown user the same way, in the same time", function()
            local u = user()
            local t0 = server.now()
            local a = login(u.name, "wrong password 123")
            local t1 = server.now()
            local b = login(unique("nobody"), "wrong password 123")
            local t2 = server.now()
            is_error(a, 401, "invalid_credentials")
            is_error(b, 401, "invalid_credentials")
            assert.equal(a.json.error.message, b.json.error.message)
            -- both hash once: neither answers much faster than the other
            local da, db = t1 - t0, t2 - t1
            assert.truthy(math.abs(da - db) < math.max(da, db) * 0.8 + 0.01,
                          ("wrong password %.4f s, unknown user %.4f s"):format(da, db))
        end)

        it("logs out: the access token stops working at once", function()
            local u = user()
            assert.equal(200, me(u.token).status)
            assert.equal(204, node:request("POST", "/api/auth/logout", { token = u.token }).status)
            is_error(me(u.token), 401, "session_revoked")
            -- and its refresh token too
            is_error(node:request("POST", "/api/auth/refresh",
                                  { body = { refresh_token = u.refresh } }), 401)
        end)
    end)

    describe("what a handler sees", function()
        it("gets req.account, and not the bearer token among the headers", function()
            local u = user()
            local res = node:request("GET", "/test/player_only",
                                     { token = u.token, headers = { ["X-Trace"] = "t-1" } })
            assert.equal(200, res.status, res.body)
            assert.equal("t-1", res.json.headers["x-trace"])
            assert.is_nil(res.json.headers["authorization"])
            assert.falsy(res.body:find(u.token, 1, true))
            -- a public route keeps the header: no gate used it
            res = node:request("GET", "/test/echo", { headers = { Authorization = "Basic eA==" } })
            assert.equal("Basic eA==", res.json.headers["authorization"])
        end)
    end)

    describe("refresh", function()
        it("rotates the refresh token: the new pair works, the old token is spent", function()
            local u = user()
            local res = node:request("POST", "/api/auth/refresh",
                                     { body = { refresh_token = u.refresh } })
            assert.equal(200, res.status, res.body)
            assert.not_equal(u.refresh, res.json.refresh_token)
            assert.equal(200, me(res.json.access_token).status)
            assert.equal(jwt.payload(u.token).sid, jwt.payload(res.json.access_token).sid)
        end)

        it("ends the whole session when a used refresh token comes back (theft)", function()
            local u = user()
            local first = node:request("POST", "/api/auth/refresh",
                                       { body = { refresh_token = u.refresh } })
            assert.equal(200, first.status)
            local again = node:request("POST", "/api/auth/refresh",
                                       { body = { refresh_token = u.refresh } })
            is_error(again, 401, "refresh_token_reused")
            -- the thief's and the owner's tokens are all dead now
            is_error(me(first.json.access_token), 401, "session_revoked")
            is_error(node:request("POST", "/api/auth/refresh",
                                  { body = { refresh_token = first.json.refresh_token } }), 401)
        end)

        it("refuses made-up refresh tokens", function()
            for _, bad in ipairs({ "x", "abc.def", string.rep("a", 20) .. "." .. string.rep("b", 40),
                                   string.rep("z", 300), "'; DROP TABLE accounts; --" }) do
                is_error(node:request("POST", "/api/auth/refresh",
                                      { body = { refresh_token = bad } }), bad:len() > 256 and 422 or 401)
            end
            is_error(node:request("POST", "/api/auth/refresh", { body = { refresh_token = 42 } }),
                     422, "validation_failed")
        end)
    end)

    describe("hostile tokens", function()
        local u

        setup(function()
            u = user()
        end)

        local function claims(over)
            local now = os.time()
            local c = { sub = tostring(u.id), sid = jwt.payload(u.token).sid, roles = { "player" },
                        iat = now, nbf = now, exp = now + 600 }
            for k, v in pairs(over or {}) do
                c[k] = v
            end
            return c
        end

        local HS = { alg = "HS256", typ = "JWT", kid = "k1" }

        it("accepts a well-made token (the forging helper is right)", function()
            assert.equal(200, me(jwt.make(HS, claims(), server.JWT_SECRET)).status)
        end)

        it("refuses alg none, with or without a signature", function()
            local none = { alg = "none", typ = "JWT", kid = "k1" }
            is_error(me(jwt.make(none, claims(), nil)), 401, "invalid_token")
            is_error(me(jwt.make(none, claims(), server.JWT_SECRET)), 401, "invalid_token")
            is_error(me(jwt.make({ alg = "None", typ = "JWT" }, claims(), nil)), 401)
        end)

        it("refuses a token signed with another key", function()
            is_error(me(jwt.make(HS, claims(), "another-secret-0123456789-abcdefghij")), 401,
                     "invalid_token")
        end)

        it("refuses an HMAC token whose header claims RS256, HS384 or HS512", function()
            for _, alg in ipairs({ "RS256", "HS384", "HS512", "ES256" }) do
                is_error(me(jwt.make({ alg = alg, typ = "JWT", kid = "k1" }, claims(),
                                     server.JWT_SECRET)), 401, "invalid_token")
            end
        end)

        it("refuses expired and not-yet-valid tokens", function()
            local now = os.time()
            is_error(me(jwt.make(HS, claims({ exp = now - 10, iat = now - 700 }), server.JWT_SECRET)),
                     401, "token_expired")
            is_error(me(jwt.make(HS, claims({ nbf = now + 120 }), server.JWT_SECRET)), 401)
        end)

        it("refuses a token without exp, or one that lives longer than we sign", function()
            local c = claims()
            c.exp = nil
            is_error(me(jwt.make(HS, c, server.JWT_SECRET)), 401, "invalid_token")
            is_error(me(jwt.make(HS, claims({ exp = os.time() + 86400 }), server.JWT_SECRET)),
                     401, "invalid_token")
        end)

        it("refuses a tampered token (another sub, or other roles)", function()
            local h, p, s = u.token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
            local c = jwt.payload(u.token)
            c.roles = { "player", "admin" }
            local forged = h .. "." .. jwt.b64url(require("cjson").encode(c)) .. "." .. s
            is_error(me(forged), 401, "invalid_token")
            is_error(node:request("GET", "/api/admin/audit", { token = forged }), 401)
            is_error(me(h .. "." .. p .. "." .. s:sub(1, -3) .. "AA"), 401, "invalid_token")
        end)

        it("refuses an unknown kid and a kid that does not match the key", function()
            is_error(me(jwt.make({ alg = "HS256", typ = "JWT", kid = "k9" }, claims(),
                                 server.JWT_SECRET)), 401, "invalid_token")
            local c = claims()
            is_error(me(jwt.make({ alg = "HS256", typ = "JWT" }, c, server.JWT_SECRET)), 401)
        end)

        it("refuses a token for a session that does not exist", function()
            is_error(me(jwt.make(HS, claims({ sid = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }),
                                 server.JWT_SECRET)), 401, "session_revoked")
        end)

        it("refuses garbage in the Authorization header", function()
            for _, v in ipairs({ "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer a.b",
                                 "Bearer " .. string.rep("x", 5000), "Bearer ..." }) do
                local res = node:request("GET", "/api/me", { headers = { Authorization = v } })
                assert.equal(401, res.status, v:sub(1, 40))
            end
        end)
    end)

    describe("hostile credentials", function()
        it("treats SQL metacharacters as data", function()
            local name = "o'brien--"
            is_error(register(name), 422, "validation_failed")
            is_error(login("admin' OR '1'='1", "x' OR '1'='1"), 401, "invalid_credentials")
            is_error(login("admin'; DROP TABLE accounts; --", "whatever password"), 401)
            -- accounts still there
            assert.equal(200, login("admin", ADMIN_PASSWORD).status)
        end)

        it("refuses 10 kB usernames and passwords without creating anything", function()
            local big = string.rep("a", 10240)
            is_error(register(big), 422, "validation_failed")
            is_error(register(unique("big"), big), 422, "validation_failed")
            is_error(login(big, "x"), 422, "validation_failed")
            is_error(login("admin", big), 422, "validation_failed")
            assert.equal(0, sql_count("length(username) > 100"))
            assert.equal(0, sql_count("username like 'o''brien%'"))
        end)

        it("refuses bodies that are not JSON objects of strings", function()
            is_error(node:request("POST", "/api/auth/login", { body = "[1,2]" }), 422)
            is_error(node:request("POST", "/api/auth/login",
                                  { body = { username = 1, password = true } }), 422)
            is_error(node:request("POST", "/api/auth/login", { body = "{" }), 400, "bad_json")
            is_error(node:request("POST", "/api/auth/login", { body = "username=a&password=b",
                headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }),
                415, "unsupported_media_type")
        end)
    end)

    describe("roles and bans", function()
        it("checks the route's role before any Lua runs (403)", function()
            local u = user()
            is_error(node:request("GET", "/api/admin/audit", { token = u.token }), 403, "forbidden")
            is_error(node:request("POST", "/api/admin/accounts/1/ban", { token = u.token,
                body = { reason = "x", minutes = 1 } }), 403, "forbidden")
        end)

        it("applies a role change to the session's very next request", function()
            local u = user()
            local a = admin()
            local probe = { token = u.token, body = { reason = "probe", minutes = 1 } }
            is_error(node:request("POST", "/api/admin/accounts/999999999/ban", probe), 403)
            local res = node:request("POST", "/api/admin/accounts/" .. u.id .. "/roles",
                { token = a.token, body = { roles = { "player", "moderator" } } })
            assert.equal(200, res.status, res.body)
            assert.same({ "player", "moderator" }, res.json.roles)
            -- same token, next request: the moderator route is open (404: no such account)
            is_error(node:request("POST", "/api/admin/accounts/999999999/ban", probe), 404)
            res = node:request("POST", "/api/admin/accounts/" .. u.id .. "/roles",
                { token = a.token, body = { roles = { "player" } } })
            assert.equal(200, res.status)
            is_error(node:request("POST", "/api/admin/accounts/999999999/ban", probe), 403)
        end)

        it("refuses bad role lists and unknown accounts", function()
            local a = admin()
            local function roles(id, body)
                return node:request("POST", "/api/admin/accounts/" .. id .. "/roles",
                                    { token = a.token, body = body })
            end
            local u = user()
            is_error(roles(u.id, { roles = { "player", "god" } }), 422, "validation_failed")
            is_error(roles(u.id, { roles = { "admin" } }), 422, "validation_failed")
            is_error(roles(u.id, {}), 422)
            is_error(roles(999999999, { roles = { "player" } }), 404, "not_found")
            is_error(roles("abc", { roles = { "player" } }), 404, "not_found")
            assert.same({ "player" }, me(u.token).json.roles)
        end)

        it("bans: live sessions end at once and login is refused", function()
            local u = user()
            local a = admin()
            local res = node:request("POST", "/api/admin/accounts/" .. u.id .. "/ban",
                { token = a.token, body = { reason = "botting", minutes = 60 } })
            assert.equal(200, res.status, res.body)
            assert.equal(1, res.json.sessions_ended)
            assert.truthy(res.json.banned_until:match("^%d%d%d%d%-%d%d%-%d%dT"))
            is_error(me(u.token), 401, "session_revoked")
            local l = login(u.name)
            is_error(l, 403, "account_banned")
            assert.equal(res.json.banned_until, l.json.error.details.banned_until)
            -- a wrong password does not reveal the ban
            is_error(login(u.name, "wrong password 123"), 401, "invalid_credentials")
        end)

        it("lets only an admin ban an admin", function()
            local a = admin()
            local m = user()
            assert.equal(200, node:request("POST", "/api/admin/accounts/" .. m.id .. "/roles",
                { token = a.token, body = { roles = { "player", "moderator" } } }).status)
            is_error(node:request("POST", "/api/admin/accounts/" .. a.id .. "/ban",
                { token = m.token, body = { reason = "coup", minutes = 5 } }), 403, "forbidden")
            assert.equal(200, me(a.token).status)
        end)
    end)

    describe("audit log", function()
        it("records logins, failures, logouts, reuse, role changes and bans with ip and request id",
           function()
            local u = user()
            login(u.name, "wrong password 123")
            local r = node:request("POST", "/api/auth/refresh", { body = { refresh_token = u.refresh } })
            node:request("POST", "/api/auth/refresh", { body = { refresh_token = u.refresh } })
            local v = user()
            node:request("POST", "/api/auth/logout", { token = v.token })
            local a = admin()
            node:request("POST", "/api/admin/accounts/" .. v.id .. "/roles",
                         { token = a.token, body = { roles = { "player", "designer" } } })
            node:request("POST", "/api/admin/accounts/" .. v.id .. "/ban",
                         { token = a.token, body = { reason = "test", minutes = 1 } })
            assert.equal(200, r.status)
            local seen = {}
            for _, e in ipairs(audit(a.token)) do
                seen[e.action] = seen[e.action] or e
            end
            for _, action in ipairs({ "login.success", "login.failure", "refresh.reuse", "logout",
                                      "account.roles", "account.ban", "account.register" }) do
                assert.is_table(seen[action], action .. " missing")
                assert.equal("127.0.0.1", seen[action].ip)
                assert.is_string(seen[action].request_id)
            end
            assert.same({ "player", "designer" }, seen["account.roles"].data.to)
            assert.equal(a.id, seen["account.ban"].actor)
            assert.equal("account:" .. v.id, seen["account.ban"].target)
        end)

        it("pages with limit and after, newest first", function()
            local a = admin()
            local page1 = node:request("GET", "/api/admin/audit?limit=3", { token = a.token }).json
            assert.equal(3, #page1.entries)
            assert.truthy(page1.entries[1].id > page1.entries[3].id)
            local page2 = node:request("GET", "/api/admin/audit?limit=3&after=" .. page1.next,
                                       { token = a.token }).json
            assert.truthy(page2.entries[1].id < page1.entries[3].id)
            is_error(node:request("GET", "/api/admin/audit?limit=0", { token = a.token }), 422)
            is_error(node:request("GET", "/api/admin/audit?limit=abc", { token = a.token }), 422)
        end)

        it("cannot be changed, even by the database owner", function()
            local out = io.popen("psql '" .. os.getenv("MMO_PG") .. "' -qtAc " ..
                                 "\"update audit_log set action = 'x'\" 2>&1"):read("*a")
            assert.truthy(out:find("append-only", 1, true), out)
        end)

        it("also goes to the JSON log", function()
            local u = user()
            local line = server.eventually(function()
                for _, e in ipairs(node:log_entries()) do
                    if e.msg == "audit" and e.audit_action == "login.success" and
                       e.actor == u.id then
                        return e
                    end
                end
            end, 5)
            assert.is_table(line)
            assert.is_string(line.request_id)
        end)
    end)
end)


describe("key rotation", function()
    it("keeps old tokens valid after a new key is set, and signs with the new one", function()
        local node = server.start()
        local name = unique("rot")
        node:request("POST", "/api/auth/register",
                     { body = { username = name, password = "correct horse battery" } })
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = name, password = "correct horse battery" } })
        local old = res.json.access_token
        assert.equal(0, node:stop())

        node = server.start { env = { MMO_AUTH_JWT_SECRET = "the-new-key-0123456789-abcdefghijklmn",
                                      MMO_AUTH_JWT_KID = "k2",
                                      MMO_AUTH_JWT_OLD_KEYS = "k1:" .. server.JWT_SECRET } }
        assert.equal(200, node:request("GET", "/api/me", { token = old }).status)
        res = node:request("POST", "/api/auth/refresh",
                           { body = { refresh_token = res.json.refresh_token } })
        assert.equal(200, res.status)
        local h = res.json.access_token:match("^([^.]+)")
        assert.truthy(jwt.b64url('{"alg":"HS256","typ":"JWT","kid":"k2"}') == h or
                      require("mime").unb64((h:gsub("-", "+"):gsub("_", "/")) ..
                          string.rep("=", (4 - #h % 4) % 4)):find('"kid":"k2"', 1, true))
        assert.equal(0, node:stop())

        -- without the old key, the old token is refused
        node = server.start { env = { MMO_AUTH_JWT_SECRET = "the-new-key-0123456789-abcdefghijklmn",
                                      MMO_AUTH_JWT_KID = "k2" } }
        assert.equal(401, node:request("GET", "/api/me", { token = old }).status)
        assert.equal(0, node:stop())
    end)

    it("refuses to start with a short key", function()
        local rc, out = server.start { env = { MMO_AUTH_JWT_SECRET = "short" }, expect_fail = true }
        assert.equal(1, rc)
        assert.truthy(out:find("shorter than 32 bytes", 1, true), out)
    end)
end)


describe("rate limits", function()
    it("stops 1,000 login attempts from one IP; the owner still signs in from another", function()
        local node = server.start { env = { MMO_RATELIMIT_AUTH_LIMIT = "10",
                                            MMO_RATELIMIT_AUTH_BURST = "10",
                                            MMO_RATELIMIT_AUTH_PERIOD_MS = "60000" } }
        local name = unique("victim")
        local password = "correct horse battery staple"
        -- a fresh source address per run: limits live in Redis and outlive the node
        local attacker = "127.0." .. math.random(2, 250) .. "." .. math.random(2, 250)
        local owner = "127.0." .. math.random(2, 250) .. "." .. math.random(2, 250)
        assert.equal(201, node:request("POST", "/api/auth/register", { ip = owner,
            body = { username = name, password = password } }).status)

        local counts, retry_after = {}, nil
        local c = node:connect(10, attacker)
        for i = 1, 1000 do
            c:send(server.format_request("POST", "/api/auth/login",
                { body = { username = name, password = "guess number " .. i } }))
            local res = c:read_response()
            counts[res.status] = (counts[res.status] or 0) + 1
            if res.status == 429 then
                retry_after = tonumber(res.headers["retry-after"])
                assert.equal("rate_limited", res.json.error.code)
            end
        end
        c:close()
        assert.truthy((counts[401] or 0) <= 10, "401s: " .. tostring(counts[401]))
        assert.truthy((counts[429] or 0) >= 990, "429s: " .. tostring(counts[429]))
        assert.truthy(retry_after and retry_after >= 1 and retry_after <= 60)

        -- the audit log shows the attempts that reached the password check
        local admin = node:request("POST", "/api/auth/login", { ip = owner,
            body = { username = "admin", password = ADMIN_PASSWORD } })
        assert.equal(200, admin.status)
        local entries = node:request("GET", "/api/admin/audit?limit=200&action=login.failure",
                                     { token = admin.json.access_token }).json.entries
        local from_attacker = 0
        for _, e in ipairs(entries) do
            if e.ip == attacker and e.data.username == name then
                from_attacker = from_attacker + 1
            end
        end
        assert.equal(counts[401], from_attacker)

        -- the owner, from another address, is not locked out
        local res = node:request("POST", "/api/auth/login", { ip = owner,
            body = { username = name, password = password } })
        assert.equal(200, res.status, res.body)
        assert.equal(0, node:stop())
    end)

    it("limits an account's API calls, whatever its address, with 429 and Retry-After", function()
        local node = server.start { env = { MMO_RATELIMIT_API_LIMIT = "5",
                                            MMO_RATELIMIT_API_BURST = "5",
                                            MMO_RATELIMIT_API_BATCH = "1",
                                            MMO_RATELIMIT_API_PERIOD_MS = "60000" } }
        local name = unique("busy")
        node:request("POST", "/api/auth/register",
                     { body = { username = name, password = "correct horse battery" } })
        local token = node:request("POST", "/api/auth/login",
            { body = { username = name, password = "correct horse battery" } }).json.access_token
        local statuses = {}
        for i = 1, 8 do
            local ip = "127.0.9." .. (10 + i)
            statuses[i] = node:request("GET", "/api/me", { token = token, ip = ip })
        end
        for i = 1, 5 do
            assert.equal(200, statuses[i].status)
        end
        for i = 6, 8 do
            assert.equal(429, statuses[i].status)
            assert.truthy(tonumber(statuses[i].headers["retry-after"]) >= 1)
        end
        assert.equal(0, node:stop())
    end)

    it("goes on limiting, per node, while Redis is down", function()
        local node = server.start { env = { MMO_RATELIMIT_AUTH_LIMIT = "3",
                                            MMO_RATELIMIT_AUTH_BURST = "3",
                                            MMO_REDIS_RECONNECT_MAX_MS = "300" } }
        server.service("redis", "stop")
        local ok, err = pcall(function()
            local ip = "127.0." .. math.random(2, 250) .. "." .. math.random(2, 250)
            local limited = 0
            for _ = 1, 10 do
                local res = node:request("POST", "/api/auth/refresh", { ip = ip,
                    body = { refresh_token = "x" } })
                if res.status == 429 then
                    limited = limited + 1
                end
            end
            assert.truthy(limited >= 7, "limited " .. limited .. " of 10 without Redis")
        end)
        server.service("redis", "start")
        assert(ok, err)
        assert.equal(0, node:stop())
    end)
end)


describe("password hashing", function()
    it("keeps /healthz well under 10 ms while 50 logins hash at once", function()
        local node = server.start()
        -- stopped even when an assertion below fails: a node left running holds region
        -- leases and consumes game events in the specs that follow
        local stopped
        finally(function()
            if not stopped then
                node:stop()
            end
        end)
        local name = unique("hash")
        node:request("POST", "/api/auth/register",
                     { body = { username = name, password = "correct horse battery" } })
        local conns = {}
        for i = 1, 50 do
            conns[i] = node:connect()
            conns[i]:send(server.format_request("POST", "/api/auth/login",
                { body = { username = name, password = "correct horse battery" } }))
        end
        local probe = node:connect()
        local worst, samples = 0, {}
        local t_end = server.now() + 0.6
        while server.now() < t_end do
            local t0 = server.now()
            probe:send(server.format_request("GET", "/healthz"))
            assert.equal(200, probe:read_response().status)
            local dt = server.now() - t0
            samples[#samples + 1] = dt
            worst = math.max(worst, dt)
        end
        for i = 1, 50 do
            assert.equal(200, conns[i]:read_response().status)
            conns[i]:close()
        end
        probe:close()
        table.sort(samples)
        local median = samples[math.ceil(#samples / 2)]
        -- the median tells the loop's own latency; the worst also holds scheduling noise of
        -- a shared 2-vCPU machine, so it gets the 10 ms bound only
        local p99 = samples[math.ceil(#samples * 0.99)]
        local msg = ("/healthz during 50 logins: median %.2f ms, p99 %.2f ms, worst %.2f ms, " ..
                     "%d probes"):format(median * 1000, p99 * 1000, worst * 1000, #samples)
        -- percentiles, not the single worst probe: this probing client shares 2 vCPUs with the
        -- two hashing threads and the node, and one unlucky time slice is the OS's, not ours
        assert.truthy(#samples >= 200, msg)
        assert.truthy(median < 0.002, msg)
        assert.truthy(p99 < 0.010, msg)
        stopped = true
        assert.equal(0, node:stop())
    end)
end)
