-- End-to-end: jobs from Lua (mmo.queue.push), on the pipeline's stream: they run, later when
-- delayed, once per idempotency key, and a job that keeps failing ends in the dead letters
-- after its attempts. spec/e2e/scripts/jobs/spec_job.lua counts its runs in Redis.
local server = require "helpers.server"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


local function redis(...)
    local host, port = os.getenv("MMO_REDIS"):match("^(.-):(%d+)$")
    local p = io.popen("redis-cli -h " .. host .. " -p " .. port .. " " .. table.concat({ ... }, " "))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end


describe("jobs", function()
    local node, dir, admin

    setup(function()
        -- retries claimed after 0.3 s (then 0.6, 1.2, ...) instead of 30 s
        dir = server.tmpdir()
        local f = assert(io.open(server.ROOT .. "/scripts/lib/pipeline.lua"))
        local text = f:read("*a")
        f:close()
        text = text:gsub("_M%.CLAIM_IDLE_MS = %d+", "_M.CLAIM_IDLE_MS = 300")
                   :gsub("_M%.CLAIM_EVERY = %d+", "_M.CLAIM_EVERY = 0.3")
        server.write(dir .. "/lib/pipeline.lua", text)
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts" }
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = "admin", password = ADMIN_PASSWORD } })
        admin = res.json.access_token
    end)

    teardown(function()
        node:stop()
        server.rm_rf(dir)
    end)

    local function push(body)
        local res = node:request("POST", "/test/jobs", { body = body })
        return res.status, res.json
    end

    local function counter()
        return "spec:job:" .. math.random(1e8, 9e8)
    end

    it("runs a job pushed from Lua", function()
        local c = counter()
        local status, r = push({ name = "spec_job", payload = { counter = c } })
        assert.equal(200, status)
        assert.truthy(r.result:match("^%d+%-%d+$"), r.result)
        assert.truthy(server.eventually(function() return redis("GET", c) == "1" end, 5))
    end)

    it("runs a delayed job no sooner than its delay", function()
        local c = counter()
        local t0 = server.now() -- wall clock, as the node's time.now()
        local _, r = push({ name = "spec_job", payload = { counter = c }, delay = 2 })
        assert.equal("delayed", r.result)
        server.sleep(1)
        assert.equal("", redis("GET", c))
        assert.truthy(server.eventually(function() return redis("GET", c) == "1" end, 6))
        assert.is_true(tonumber(redis("GET", c .. ":at")) >= t0 + 1.9)
    end)

    it("makes one job of pushes with the same key", function()
        local c = counter()
        local key = "once:" .. c
        local _, r1 = push({ name = "spec_job", payload = { counter = c }, key = key })
        local _, r2 = push({ name = "spec_job", payload = { counter = c }, key = key })
        assert.truthy(r1.result:match("^%d+%-%d+$"))
        assert.equal(false, r2.result)
        assert.equal("duplicate", r2.why)
        server.sleep(1)
        assert.equal("1", redis("GET", c))
    end)

    it("refuses bad names and options in the caller", function()
        assert.equal(422, (push({ name = "../x", payload = {} })))
        assert.equal(422, (push({ name = "spec_job", payload = {}, delay = -1 })))
        assert.equal(422, (push({ name = "spec_job", payload = {}, attempts = 0 })))
    end)

    it("sends a job that keeps failing to the dead letters after its attempts", function()
        local c = counter()
        local _, r = push({ name = "spec_job", payload = { counter = c, fail = true },
                            attempts = 2 })
        local entry = r.result
        local letter
        assert.truthy(server.eventually(function()
            local res = node:request("GET", "/api/admin/queues/dead?limit=1000",
                                     { token = admin })
            for _, l in ipairs(res.json.dead) do
                if l.entry == entry then
                    letter = l
                end
            end
            return letter
        end, 15), "the failing job is not among the dead letters")
        assert.equal(2, letter.tries)
        assert.equal("spec_job", letter.job.name)
        assert.truthy(letter.error:find("told to fail", 1, true))
        assert.equal("", redis("GET", c))
        -- and a job of an unknown name fails the same way, without stopping the others
        local _, r2 = push({ name = "no_such_job", payload = {}, attempts = 1 })
        local c2 = counter()
        push({ name = "spec_job", payload = { counter = c2 } })
        assert.truthy(server.eventually(function() return redis("GET", c2) == "1" end, 5))
        assert.truthy(server.eventually(function()
            local res = node:request("GET", "/api/admin/queues/dead?limit=1000",
                                     { token = admin })
            for _, l in ipairs(res.json.dead) do
                if l.entry == r2.result then
                    return true
                end
            end
        end, 10))
    end)

    it("goes on to new jobs when it starts again with a failing job of its own pending",
       function()
        local c = counter()
        local _, r = push({ name = "spec_job", payload = { counter = c, fail = true },
                            attempts = 4 })
        local entry = r.result
        local function errors()
            local text = node:request("GET", "/metrics").body
            return tonumber(text:match('mmo_job_runs_total{handler="spec_job",result="error"} (%d+)'))
                   or 0
        end
        assert.truthy(server.eventually(function() return errors() >= 1 end, 5))
        node:stop() -- the job failed once: pending for this consumer (spec-node)
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts" }
        -- it reads that job again, once, then new jobs (it read it again for ever, never
        -- getting to them)
        local c2 = counter()
        push({ name = "spec_job", payload = { counter = c2 } })
        assert.truthy(server.eventually(function() return redis("GET", c2) == "1" end, 5),
                      "a new job did not run")
        assert.is_true(errors() <= 4, errors() .. " tries")
        -- and the failing one goes on to the dead letters with its backoff
        assert.truthy(server.eventually(function()
            local res = node:request("GET", "/api/admin/queues/dead?limit=1000",
                                     { token = admin })
            for _, l in ipairs(res.json.dead) do
                if l.entry == entry then
                    return true
                end
            end
        end, 15), "the failing job is not among the dead letters")
    end)
end)
