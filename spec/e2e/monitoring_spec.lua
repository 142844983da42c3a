-- End-to-end: tools/monitoring. prometheus.yml and alerts.yml pass promtool, and the alerts'
-- unit tests (alerts_test.yml) pass; the Grafana dashboard is JSON Grafana can import (a
-- Prometheus datasource variable, every panel on it); every PromQL expression of the dashboard
-- parses (promtool, through a generated rules file); and the dashboard and the alerts name
-- only metrics that a node which served a little traffic (HTTP, a login, a WebSocket message)
-- exposes on /metrics.
local cjson = require "cjson"
local server = require "helpers.server"
local ws = require "helpers.ws"

local DIR = server.ROOT .. "/tools/monitoring"

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


local function sh(cmd)
    local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    return tonumber(out:match("rc=(%d+)%s*$")), out
end


local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end


-- Grafana's variables, replaced by values PromQL accepts: $__rate_interval (and the other
-- intervals) by a duration, the dashboard's own ($job, $instance) by a plain label value
local function expand(expr)
    expr = expr:gsub("%$%{?__[%w_]*interval%}?", "1m")
    return (expr:gsub("%$%{?([%w_]+)%}?", "x"))
end


local NOT_METRICS = { ["and"] = true, ["or"] = true, unless = true, bool = true,
                      offset = true, inf = true, nan = true }

-- the metric names an expression reads: identifiers that are not functions (followed by "("),
-- keywords, label names (inside {}, by (...), without (...), on (...), ...) or strings
local function metric_names(expr, into)
    local e = expr:gsub('"[^"]*"', " ")
    e = e:gsub("%b{}", " "):gsub("%b[]", " ")
    for _, kw in ipairs { "by", "without", "on", "ignoring", "group_left", "group_right" } do
        e = e:gsub("%f[%w_]" .. kw .. "%s*%b()", " ")
    end
    e = e:gsub("%f[%w_.]%d[%w_.]*", " ") -- numbers and durations
    for pos, name in e:gmatch("()([%a_:][%w_:]*)") do
        local after = e:match("^%s*(.)", pos + #name)
        if after ~= "(" and not NOT_METRICS[name:lower()] then
            into[name] = true
        end
    end
    return into
end


-- every (title, refId, expr) of the dashboard, rows' nested panels included
local function targets(dash)
    local out = {}
    local function walk(panels)
        for _, p in ipairs(panels or {}) do
            for _, t in ipairs(p.targets or {}) do
                out[#out + 1] = { panel = p, title = p.title, ref = t.refId, expr = t.expr }
            end
            walk(p.panels)
        end
    end
    walk(dash.panels)
    return out
end


-- the expr of each rule of alerts.yml (an expr: on one line, or a folded block under it)
local function alert_exprs(text)
    local out, cur, indent = {}, nil, nil
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        local ind, rest = line:match("^(%s*)expr:%s*(.-)%s*$")
        if ind then
            cur = { (rest:gsub("^>%-?", "")) }
            indent = #ind
            out[#out + 1] = cur
        elseif cur and (line:match("^%s*$") or #line:match("^(%s*)") > indent) then
            cur[#cur + 1] = line
        else
            cur = nil
        end
    end
    for i, parts in ipairs(out) do
        out[i] = table.concat(parts, " ")
    end
    return out
end


describe("tools/monitoring", function()
    local dash

    setup(function()
        dash = cjson.decode(read(DIR .. "/grafana-dashboard.json"))
    end)

    it("has a scrape config and alert rules that promtool accepts, and alerts that fire",
       function()
        local rc, out = sh("promtool check config " .. DIR .. "/prometheus.yml")
        assert.equal(0, rc, out)
        assert.truthy(out:find("1 rule files found", 1, true), out)
        rc, out = sh("promtool check rules " .. DIR .. "/alerts.yml")
        assert.equal(0, rc, out)
        assert.truthy(out:find("SUCCESS: 10 rules found", 1, true), out)
        -- each alert fires on made-up series past its threshold, and only there
        rc, out = sh("cd " .. DIR .. " && promtool test rules alerts_test.yml")
        assert.equal(0, rc, out)
        local text = read(DIR .. "/alerts.yml")
        for _, name in ipairs { "MmoNodeDown", "MmoHttpLatencyP99High", "MmoHttpErrorRateHigh",
                                "MmoQueueLagHigh", "MmoDeadLettersGrowing",
                                "MmoEventLoopLagHigh", "MmoPostgresDown", "MmoRedisDown",
                                "MmoRedisInstanceDown", "MmoReplicaStale" } do
            assert.truthy(text:find("alert: " .. name .. "\n", 1, true), name)
        end
        assert.equal(10, #alert_exprs(text))
    end)

    it("has a dashboard Grafana imports, every expression of which parses", function()
        assert.is_number(dash.schemaVersion)
        assert.is_true(dash.schemaVersion >= 36, "schemaVersion " .. dash.schemaVersion)
        assert.is_string(dash.title)
        -- the datasource is a variable, and every panel and target uses it
        local var
        for _, v in ipairs(dash.templating.list) do
            if v.type == "datasource" then
                var = v
            end
        end
        assert.is_table(var, "no datasource variable")
        assert.equal("prometheus", var.query)
        local ds = "${" .. var.name .. "}"
        local ts = targets(dash)
        assert.is_true(#ts >= 15, #ts .. " targets")
        local ids = {}
        for _, t in ipairs(ts) do
            assert.equal(ds, t.panel.datasource.uid, t.title)
            assert.is_nil(ids[t.panel.id .. t.ref], "two targets " .. t.ref .. " in " .. t.title)
            ids[t.panel.id .. t.ref] = true
        end
        -- one recording rule per expression, checked by promtool
        local lines = { "groups:", "  - name: dashboard", "    rules:" }
        for i, t in ipairs(ts) do
            lines[#lines + 1] = ("      # %s, %s"):format(t.title:gsub("[\r\n]", " "), t.ref)
            lines[#lines + 1] = "      - record: dashboard:target_" .. i
            lines[#lines + 1] = "        expr: '" .. expand(t.expr):gsub("'", "''") .. "'"
        end
        local dir = server.tmpdir()
        server.write(dir .. "/dashboard-rules.yml", table.concat(lines, "\n") .. "\n")
        local rc, out = sh("promtool check rules " .. dir .. "/dashboard-rules.yml")
        server.rm_rf(dir)
        assert.equal(0, rc, out)
        assert.truthy(out:find("SUCCESS: " .. #ts .. " rules found", 1, true), out)
        -- and what the issue asks for is on it
        local names = {}
        for _, t in ipairs(ts) do
            metric_names(t.expr, names)
        end
        for _, want in ipairs { "mmo_players_online", "mmo_http_requests_total",
                                "mmo_http_request_duration_seconds_bucket",
                                "mmo_ws_messages_total", "mmo_queue",
                                "mmo_event_loop_lag_seconds_bucket", "mmo_postgres_up",
                                "mmo_redis_up", "mmo_ws_connections",
                                "process_cpu_seconds_total", "process_resident_memory_bytes",
                                "mmo_db_connections_up", "mmo_db_waiting",
                                "mmo_db_query_duration_seconds_bucket",
                                "mmo_redis_call_duration_seconds_bucket",
                                "mmo_connections_accepted_total", "mmo_received_bytes_total",
                                "mmo_sent_bytes_total", "mmo_job_runs_total",
                                "mmo_timer_runs_total", "mmo_items_created_total",
                                "mmo_items_destroyed_total", "mmo_lua_gc_cycles_total" } do
            assert.is_true(names[want], want .. " is on no panel")
        end
    end)

    it("names only metrics that a node exposes", function()
        local node = server.start()
        local ok, err = pcall(function()
            -- a little traffic: HTTP, an account and its login, a WebSocket message
            assert.equal(200, node:request("GET", "/healthz").status)
            local u = "mon" .. math.random(1e8, 9e8)
            local cred = { username = u, password = "correct horse battery staple" }
            assert.equal(201, node:request("POST", "/api/auth/register", { body = cred }).status)
            local login = node:request("POST", "/api/auth/login", { body = cred })
            assert.equal(200, login.status, login.body)
            local c = assert(ws.connect(node, login.json.access_token))
            c:send({ t = "ping" })
            assert.is_table(c:expect("pong", 3), "no pong")
            c:close()
            local res = node:request("GET", "/metrics")
            assert.equal(200, res.status)
            -- what the node exposes: every family it declares, with a histogram's series
            local exposed = { up = true }
            for name, kind in res.body:gmatch("# TYPE ([%w_:]+) (%a+)") do
                exposed[name] = true
                if kind == "histogram" then
                    for _, s in ipairs { "_bucket", "_sum", "_count" } do
                        exposed[name .. s] = true
                    end
                end
            end
            for name in res.body:gmatch("\n([%a_:][%w_:]*)[{ ]") do
                exposed[name] = true
            end
            assert.is_true(exposed.mmo_ws_messages_total, "no WebSocket message was counted")
            local wanted = {}
            for _, t in ipairs(targets(dash)) do
                for name in pairs(metric_names(t.expr, {})) do
                    wanted[name] = wanted[name] or ("dashboard: " .. t.title)
                end
            end
            for _, v in ipairs(dash.templating.list) do
                local q = type(v.query) == "table" and v.query.query or v.query
                local name = v.type == "query" and q:match("label_values%(%s*([%a_:][%w_:]*)")
                if name then
                    wanted[name] = wanted[name] or ("dashboard variable " .. v.name)
                end
            end
            for _, expr in ipairs(alert_exprs(read(DIR .. "/alerts.yml"))) do
                for name in pairs(metric_names(expr, {})) do
                    wanted[name] = wanted[name] or ("alerts.yml: " .. expr)
                end
            end
            assert.is_true(wanted.mmo_players_online ~= nil and wanted.mmo_redis_up ~= nil)
            local missing = {}
            for name, where in pairs(wanted) do
                if not exposed[name] then
                    missing[#missing + 1] = name .. " (" .. where .. ")"
                end
            end
            table.sort(missing)
            assert.same({}, missing)
        end)
        node:stop()
        assert(ok, err)
    end)
end)
