-- End-to-end: GET /metrics. The text passes promtool; a counter the spec drives (logins) moves
-- as driven; a real Prometheus server scrapes the node and a PromQL query returns that count;
-- 10,000 distinct ids on one route keep one label set; the allow-list refuses other addresses.
local server = require "helpers.server"
local socket = require "socket"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")


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

