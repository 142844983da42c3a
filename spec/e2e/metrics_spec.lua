-- End-to-end: GET /metrics. The text passes promtool; a counter the spec drives (logins) moves
-- as driven; a real Prometheus server scrapes the node and a PromQL query returns that count;
-- 10,000 distinct ids on one route keep one label set; the allow-list refuses other addresses.
local server = require "helpers.server"
local socket = require "socket"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

-- ids and names of this run's own (the database outlives a run)
math.randomseed(os.time() + math.floor(os.clock() * 1e6))


local function sh(cmd)
    local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    return tonumber(out:match("rc=(%d+)%s*$")), out
end


-- the value of one series in the exposition text, or nil
local function value(text, series)
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, #series + 1) == series .. " " then
            return tonumber(line:sub(#series + 2))
        end
    end
end


describe("metrics", function()
    local node

    setup(function()
        node = server.start()
    end)

    teardown(function()
        node:stop()
    end)

    local function scrape()
        local res = node:request("GET", "/metrics")
        assert.equal(200, res.status)
        assert.truthy(res.headers["content-type"]:find("text/plain", 1, true))
        return res.body
    end

    local function login(ok)
        return node:request("POST", "/api/auth/login", { body = { username = "admin",
                            password = ok and ADMIN_PASSWORD or "not the password" } })
    end

    it("counts what happened, in a text promtool accepts", function()
        local before = value(scrape(), 'mmo_logins_total{result="success"}') or 0
        local failed = value(scrape(), 'mmo_logins_total{result="failure"}') or 0
        for _ = 1, 5 do
            assert.equal(200, login(true).status)
        end
        assert.equal(401, login(false).status)
        local text = scrape()
        assert.equal(before + 5, value(text, 'mmo_logins_total{result="success"}'))
        assert.equal(failed + 1, value(text, 'mmo_logins_total{result="failure"}'))
        assert.is_true(value(text, 'mmo_http_requests_total{route="POST /api/auth/login",' ..
                                   'status="200"}') >= 5)
        assert.is_true(value(text, "process_resident_memory_bytes") > 1e6)
        assert.equal(1, value(text, "mmo_postgres_up"))
        assert.is_true(value(text, 'mmo_db_queries_total{db="main",result="ok"}') >= 6)
        assert.is_true(value(text, 'mmo_db_connections_up{db="main"}') >= 1)
        assert.is_true(value(text, 'mmo_db_query_duration_seconds_count{db="main"}') >= 6)
        assert.is_true(value(text, 'mmo_redis_calls_total{result="ok"}') >= 5) -- sessions
        assert.is_true(value(text, "mmo_redis_call_duration_seconds_count") >= 5)
        assert.equal(0, value(text, "mmo_redis_reconnects_total"))
        assert.truthy(text:find('mmo_build_info{version="', 1, true))
        assert.truthy(text:find("mmo_event_loop_lag_seconds_bucket", 1, true))
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write(text)
        f:close()
        local rc, out = sh("promtool check metrics < " .. path)
        os.remove(path)
        assert.equal(0, rc, out)
    end)

    it("keeps one label set per route template, whatever the ids", function()
        local n, done = 0, 0
        while done < 10000 do
            local batch = server.concurrent(node, 50, 1, function()
                n = n + 1
                return { "GET", "/test/items/" .. n }
            end, function() end)
            done = done + batch
        end
        for i = 1, 50 do
            node:request("GET", "/no/such/route/" .. i)
        end
        local text = scrape()
        local items, unmatched = 0, 0
        for line in text:gmatch("[^\n]+") do
            if line:find('^mmo_http_requests_total{route="GET /test/items/:id"') then
                items = items + 1
            elseif line:find('^mmo_http_requests_total{route="unmatched"') then
                unmatched = unmatched + 1
            end
            assert.is_nil(line:find("/test/items/%d"), line)
        end
        assert.equal(1, items)
        assert.equal(1, unmatched)
    end)

    it("is scraped by a real Prometheus, and PromQL sees the logins", function()
        local dir = server.tmpdir()
        local port = 20000 + math.random(0, 3999)
        local cfg = dir .. "/prometheus.yml"
        server.write(cfg, ("global:\n  scrape_interval: 1s\nscrape_configs:\n" ..
                           "  - job_name: mmo\n    static_configs:\n" ..
                           "      - targets: ['127.0.0.1:%d']\n"):format(node.port))
        local p = io.popen("prometheus --config.file=" .. cfg .. " --storage.tsdb.path=" .. dir ..
                           "/data --web.listen-address=127.0.0.1:" .. port ..
                           " >" .. dir .. "/log 2>&1 & echo $!")
        local pid = tonumber(p:read("*l"))
        p:close()
        local ok, err = pcall(function()
            local want = (value(scrape(), 'mmo_logins_total{result="success"}') or 0) + 5
            for _ = 1, 5 do
                assert.equal(200, login(true).status)
            end
            local got
            local deadline = socket.gettime() + 30
            while socket.gettime() < deadline do
                local rc, out = sh("curl -s -m 2 'http://127.0.0.1:" .. port .. "/api/v1/query" ..
                                   "?query=mmo_logins_total%7Bresult%3D%22success%22%7D'")
                if rc == 0 then
                    got = tonumber(out:match('"value":%[[%d%.]+,"([%d%.]+)"%]'))
                    if got == want then
                        break
                    end
                end
                socket.sleep(0.5)
            end
            assert.equal(want, got)
        end)
        os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.5; kill -9 " .. pid ..
                   " 2>/dev/null")
        server.rm_rf(dir)
        assert(ok, err)
    end)

    it("refuses addresses outside metrics.allow, and a bad allow-list at start", function()
        local other = server.start { env = { MMO_METRICS_ALLOW = "10.0.0.0/8, ::1" } }
        local res = other:request("GET", "/metrics")
        other:stop()
        assert.equal(403, res.status)
        assert.equal("forbidden", res.json.error.code)
        local rc, out = server.start { env = { MMO_METRICS_ALLOW = "10.0.0.0/40" },
                                       expect_fail = true }
        assert.equal(1, rc)
        assert.truthy(out:find("metrics.allow", 1, true), out)
    end)

    it("changes the log level at runtime (admin), and logs slow requests", function()
        local other = server.start { env = { MMO_HTTP_SLOW_MS = "50", MMO_LOG_LEVEL = "info",
                                             MMO_POSTGRES_SLOW_MS = "100" } }
        local ok, err = pcall(function()
            local admin = other:request("POST", "/api/auth/login", { body = { username = "admin",
                                        password = ADMIN_PASSWORD } }).json.access_token
            assert.equal("info", other:request("GET", "/api/admin/log", { token = admin })
                                     .json.level)
            local res = other:request("PUT", "/api/admin/log",
                                      { token = admin, body = { level = "loud" } })
            assert.equal(422, res.status)
            res = other:request("PUT", "/api/admin/log", { token = admin,
                                body = { level = "debug" } })
            assert.equal(200, res.status, res.body)
            assert.equal("debug", res.json.level)
            other:request("GET", "/test/echo?marker=dbg")
            assert.truthy(server.eventually(function()
                for _, e in ipairs(other:log_entries()) do
                    if e.level == "debug" then
                        return true
                    end
                end
            end, 3), "no debug line after the change")
            -- slow: a handler that sleeps 0.2 s, past slow_ms (50)
            assert.equal(200, other:request("GET", "/test/sleep?s=0.2").status)
            assert.truthy(server.eventually(function()
                for _, e in ipairs(other:log_entries()) do
                    if e.level == "warn" and tostring(e.msg):find("slow request: GET /test/sleep",
                                                                 1, true) then
                        return true
                    end
                end
            end, 3), "the slow request was not logged")
            assert.equal(200, other:request("GET", "/test/db/sleep_then_cache?s=0.2").status)
            assert.truthy(server.eventually(function()
                for _, e in ipairs(other:log_entries()) do
                    if e.level == "warn" and tostring(e.msg):find("slow query on main", 1, true)
                       and tostring(e.msg):find("pg_sleep", 1, true) then
                        return true
                    end
                end
            end, 3), "the slow query was not logged")
        end)
        other:stop()
        assert(ok, err)
    end)
end)



-- The series of the node's own traffic, its Lua VM and its hooks, each driven here and read
-- back from /metrics. A node of its own: the exact counts need a node nobody else talks to;
-- failed game events are tried again after 0.2 s (then 0.4, 0.8...) instead of 30 s.
describe("metrics of traffic, the Lua VM, hooks and items", function()
    local node, admin, dir
    local ws = require "helpers.ws"
    local letters = server.letters

    setup(function()
        dir = server.tmpdir()
        local f = assert(io.open(server.ROOT .. "/scripts/lib/pipeline.lua"))
        local text = f:read("*a")
        f:close()
        text = text:gsub("_M%.CLAIM_IDLE_MS = %d+", "_M.CLAIM_IDLE_MS = 200")
                   :gsub("_M%.CLAIM_EVERY = %d+", "_M.CLAIM_EVERY = 0.2")
        server.write(dir .. "/lib/pipeline.lua", text)
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts" }
        admin = node:request("POST", "/api/auth/login", { body = { username = "admin",
                             password = ADMIN_PASSWORD } }).json.access_token
    end)

    teardown(function()
        node:stop()
        server.rm_rf(dir)
    end)

    local function scrape()
        local res = node:request("GET", "/metrics")
        assert.equal(200, res.status)
        return res.body
    end

    local function bot()
        local res = node:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 1, prefix = "m" .. letters(5), region = "r1", spread = 10 } })
        assert.equal(200, res.status, res.body)
        return res.json.bots[1]
    end

    -- the value of a series, once fn(value) is true (or the last value after 10 s)
    local function soon(series, fn)
        local v
        server.eventually(function()
            v = value(scrape(), series)
            return fn(v)
        end, 10)
        return v
    end

    local function drained()
        return server.eventually(function()
            local q = node:request("GET", "/api/admin/queues", { token = admin }).json
            return q.group.lag == 0 and q.group.pending == 0
        end, 15)
    end

    it("counts HTTP connections accepted and the bytes read and written, to the byte", function()
        local a = scrape()
        local acc0 = value(a, 'mmo_connections_accepted_total{kind="http"}')
        local in0 = value(a, 'mmo_received_bytes_total{kind="http"}')
        local out0 = value(a, 'mmo_sent_bytes_total{kind="http"}')
        local sent, got = 0, #a
        for i = 1, 5 do
            local opts = { body = { pad = string.rep("y", 1000 * i) } }
            sent = sent + #server.format_request("POST", "/test/echo", opts)
            local res = node:request("POST", "/test/echo", opts)
            assert.equal(200, res.status)
            got = got + #res.body
        end
        sent = sent + #server.format_request("GET", "/metrics")
        local b = scrape()
        -- 5 requests and this scrape, each on a connection of its own
        assert.equal(acc0 + 6, value(b, 'mmo_connections_accepted_total{kind="http"}'))
        assert.equal(in0 + sent, value(b, 'mmo_received_bytes_total{kind="http"}'))
        -- the bodies written since the first scrape (its own too), and their heads
        local out = value(b, 'mmo_sent_bytes_total{kind="http"}') - out0
        assert.is_true(out >= got and out < got + 6 * 400, out .. " for " .. got)
        assert.equal(0, value(b, 'mmo_connections_refused_total{kind="http"}'))
    end)

    it("counts WebSocket connections accepted and their bytes apart", function()
        local me = bot()
        local a = scrape()
        local c = assert(ws.connect(node, me.token))
        c:send({ t = "join", player_id = me.player_id })
        assert.is_table(c:expect("welcome", 3))
        c:send({ t = "ping", pad = string.rep("z", 10000) })
        c:receive(3) -- pong, or an error: an answer either way
        c:close()
        local function delta(series)
            return soon(series, function(v) return v and v > (value(a, series) or 0) end) -
                   (value(a, series) or 0)
        end
        assert.equal(1, delta('mmo_connections_accepted_total{kind="ws"}'))
        local got_in = delta('mmo_received_bytes_total{kind="ws"}')
        assert.is_true(got_in >= 10000 and got_in < 11000, tostring(got_in))
        assert.is_true(delta('mmo_sent_bytes_total{kind="ws"}') >= 129) -- the 101 answer alone
    end)

    it("counts Lua errors by the module that raised them", function()
        local series = 'mmo_lua_errors_total{module="handlers.test",hook="http"}'
        local before = value(scrape(), series) or 0
        for _ = 1, 3 do
            assert.equal(500, node:request("GET", "/test/boom").status)
        end
        assert.equal(before + 3, value(scrape(), series))
        -- a typed error (a 4xx the handler meant) is not a Lua error
        local typed = node:request("GET", "/test/typed")
        assert.is_true(typed.status >= 400 and typed.status < 500, typed.body)
        assert.equal(before + 3, value(scrape(), series))
    end)

    -- GET /api/admin/metrics: what the console charts, a sample every 5 s (lib/vitals.lua)
    it("samples the node's vitals for the console: requests, p99, Lua errors", function()
        assert.equal(401, node:request("GET", "/api/admin/metrics").status)
        -- the first sample is a base: what follows it is counted in the next one
        assert.is_true(server.eventually(function()
            return #node:request("GET", "/api/admin/metrics", { token = admin }).json.samples > 0
        end, 15))
        local t0 = server.now()
        for _ = 1, 3 do
            assert.equal(500, node:request("GET", "/test/boom").status)
        end
        local got
        assert.is_true(server.eventually(function()
            local res = node:request("GET", "/api/admin/metrics", { token = admin })
            assert.equal(200, res.status, res.body)
            assert.equal(5, res.json.every_s)
            local errors, busy = 0, nil
            for _, s in ipairs(res.json.samples) do
                if s.at > t0 then
                    errors = errors + s.lua_errors
                    if s.requests_per_s > 0 and type(s.p99_ms) == "number" then
                        busy = s
                    end
                end
            end
            got = { errors = errors, busy = busy }
            return errors >= 3 and busy ~= nil
        end, 15), "samples after the errors: " .. tostring(got and got.errors))
        assert.equal(3, got.errors)
        assert.truthy(got.busy.p99_ms > 0 and got.busy.p99_ms <= 10000)
        assert.is_number(got.busy.loop_lag_ms)
        assert.is_number(got.busy.players)
        assert.is_number(got.busy.queue_lag)
    end)

    it("counts the full GC cycles of the Lua VM", function()
        local before = value(scrape(), "mmo_lua_gc_cycles_total")
        assert.is_number(before)
        for _ = 1, 3 do
            assert.equal(200, node:request("GET", "/test/gc").status)
        end
        assert.is_true(value(scrape(), "mmo_lua_gc_cycles_total") >= before + 3)
    end)

    it("counts the runs of every timer, their errors and their time, by name", function()
        local key = letters(10)
        assert.equal(200, node:request("GET", "/test/every?fail=1&name=spec_every&key=" ..
                                       key).status)
        assert.equal(2, soon('mmo_timer_runs_total{timer="spec_every",result="ok"}',
                             function(v) return v == 2 end))
        local text = scrape()
        assert.equal(1, value(text, 'mmo_timer_runs_total{timer="spec_every",result="error"}'))
        assert.equal(3, value(text, 'mmo_timer_run_duration_seconds_count{timer="spec_every"}'))
        -- a timer without a name: where its function was defined
        assert.equal(200, node:request("GET", "/test/every?key=" .. letters(10)).status)
        local where = 'mmo_timer_runs_total{timer="handlers/test%.lua:%d+",result="ok"} (%d+)'
        assert.truthy(server.eventually(function()
            return tonumber(scrape():match(where)) == 3
        end, 10), "no runs of the unnamed timer")
        -- routes.lua's timers: named by their handler
        text = scrape()
        for _, name in ipairs({ "events.consume", "world.tick", "world.leases" }) do
            assert.truthy(text:find('mmo_timer_runs_total{timer="' .. name .. '",result="ok"}', 1,
                                    true), "routes.lua's timer " .. name .. " is not counted")
        end
    end)

    it("counts the calls of job handlers, their errors and their time, by job", function()
        local runs = 'mmo_job_runs_total{handler="%s",result="%s"}'
        local function now(job, result)
            return value(scrape(), runs:format(job, result)) or 0
        end
        local ok0, err0 = now("spec_job", "ok"), now("spec_job", "error")
        local secs0 = value(scrape(), 'mmo_job_run_duration_seconds_count{handler="spec_job"}') or 0
        local c = "spec:job:" .. letters(10)
        assert.equal(200, node:request("POST", "/test/jobs", { body = { name = "spec_job",
                     payload = { counter = c } } }).status)
        assert.equal(200, node:request("POST", "/test/jobs", { body = { name = "spec_job",
                     payload = { counter = c, fail = true }, attempts = 1 } }).status)
        assert.equal(ok0 + 1, soon(runs:format("spec_job", "ok"),
                                   function(v) return v == ok0 + 1 end))
        assert.equal(err0 + 1, soon(runs:format("spec_job", "error"),
                                    function(v) return v == err0 + 1 end))
        assert.equal(secs0 + 2, value(scrape(),
                                      'mmo_job_run_duration_seconds_count{handler="spec_job"}'))
        -- game events: the effect of each, by its type; an unknown item fails the loot
        local me = bot()
        local kill0, loot_err0 = now("kill", "ok"), now("loot", "error")
        local id = "mk-" .. letters(8)
        local res = node:request("POST", "/api/events", { token = me.token, body = { events = {
            { id = id .. "-1", type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = "wolf", level = 2 } },
            { id = id .. "-2", type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = "wolf", level = 3 } },
            { id = id .. "-3", type = "loot", player_id = me.player_id, ts = os.time(),
              data = { item = "no_such_item_" .. letters(4), qty = 1 } },
        } } })
        assert.equal(3, res.json.accepted, res.body)
        assert.equal(kill0 + 2, soon(runs:format("kill", "ok"),
                                     function(v) return v == kill0 + 2 end))
        -- the loot fails each of its 5 tries, then goes to the dead letters: 5 errors
        assert.truthy(drained(), "the failed loot did not reach the dead letters")
        assert.equal(loot_err0 + 5, now("loot", "error"))
        assert.is_true(value(scrape(), 'mmo_job_run_duration_seconds_count{handler="kill"}') >= 2)
    end)

    it("counts items created and destroyed, by reason, once each", function()
        local function created(reason)
            return 'mmo_items_created_total{reason="' .. reason .. '"}'
        end
        local function destroyed(reason)
            return 'mmo_items_destroyed_total{reason="' .. reason .. '"}'
        end
        local a = scrape()
        for _, s in ipairs({ created("loot"), created("grant"), created("admin_grant"),
                             destroyed("use"), destroyed("player_deleted") }) do
            assert.is_number(value(a, s), s) -- there from the start
        end
        local me = bot()
        local pid = me.player_id
        -- an admin grant: 5
        local res = node:request("POST", "/api/admin/players/" .. pid .. "/items",
                                 { token = admin, body = { item = "potion_small", qty = 5 } })
        assert.equal(200, res.status, res.body)
        -- an admin grant refused (no such item) creates nothing
        res = node:request("POST", "/api/admin/players/" .. pid .. "/items",
                           { token = admin, body = { item = "no_such_item", qty = 5 } })
        assert.equal(422, res.status)
        assert.equal(value(a, created("admin_grant")) + 5,
                     value(scrape(), created("admin_grant")))
        -- used: 2, and a use refused (more than it has) destroys nothing
        res = node:request("POST", "/api/players/" .. pid .. "/inventory/use",
                           { token = me.token, body = { item = "potion_small", qty = 2 } })
        assert.equal(200, res.status, res.body)
        res = node:request("POST", "/api/players/" .. pid .. "/inventory/use",
                           { token = me.token, body = { item = "potion_small", qty = 50 } })
        assert.equal(409, res.status, res.body)
        assert.equal(value(a, destroyed("use")) + 2, value(scrape(), destroyed("use")))
        -- looted: 3, the event sent three times (one effect)
        local loot = { id = "ml-" .. letters(8), type = "loot", player_id = pid, ts = os.time(),
                       data = { item = "potion_small", qty = 3 } }
        for _ = 1, 3 do
            res = node:request("POST", "/api/events", { token = me.token,
                               body = { events = { loot } } })
            assert.equal(202, res.status, res.body)
        end
        -- the grant job: 4
        assert.equal(200, node:request("POST", "/test/jobs", { body = { name = "grant",
                     payload = { player_id = pid, item = "potion_small", qty = 4 } } }).status)
        local grant = value(a, created("grant")) + 4
        assert.equal(grant, soon(created("grant"), function(v) return v == grant end))
        assert.truthy(drained())
        assert.equal(value(a, created("loot")) + 3, value(scrape(), created("loot")))
        assert.equal("10", server.psql("select sum(qty) from inventory where player_id = " .. pid))
        -- the player deleted: its 10 items with it
        res = node:request("DELETE", "/api/players/" .. pid, { token = me.token })
        assert.equal(204, res.status, res.body)
        local b = scrape()
        assert.equal(value(a, destroyed("player_deleted")) + 10,
                     value(b, destroyed("player_deleted")))
        -- nothing else moved
        assert.equal(value(a, created("admin_grant")) + 5, value(b, created("admin_grant")))
        assert.equal(value(a, destroyed("use")) + 2, value(b, destroyed("use")))
    end)
end)
