-- handlers/test.lua: handlers that exist only for the end-to-end specs.
local cache = require "mmo.cache"
local db = require "mmo.db"
local http = require "lib.http"
local log = require "mmo.log"
local queue = require "mmo.queue"
local time = require "mmo.time"


local _M = {}


-- POST /test/jobs {name, payload, delay, attempts, key}: mmo.queue.push, its answer as JSON
function _M.push_job(req)
    local b = req.body
    local ok, r, why = pcall(queue.push, b.name, b.payload,
                             { delay = b.delay, attempts = b.attempts, key = b.key })
    if not ok then
        return 422, { error = { code = "bad_job", message = tostring(r), details = {},
                                request_id = req.id } }
    end
    return 200, { result = r == nil and "nil" or r, why = why }
end


function _M.echo(req)
    return 200, {
        method = req.method, path = req.path, params = req.params, query = req.query,
        headers = req.headers, body = req.body, id = req.id, ip = req.ip,
    }
end


function _M.special()
    return 200, { special = true }
end


function _M.boom()
    local t = nil
    return 200, { value = t.field }    -- raises: attempt to index a nil value
end


function _M.typed()
    http.fail(409, "thing_taken", "that thing is taken", { thing = "x" })
end


function _M.bad_status()
    return "not a status"
end


function _M.bare_yield()
    coroutine.yield()
    return 200, {}
end


function _M.global()
    -- luacheck: ignore 111
    undeclared_global_for_spec = 1
    return 200, {}
end


function _M.headers()
    return 201, "plain text", { ["Content-Type"] = "text/plain; charset=utf-8",
                                ["X-Thing"] = "yes", ["Bad\nName"] = "x", ["X-Bad"] = "a\r\nb" }
end


function _M.sleep(req)
    local s = tonumber(req.query.s) or 0.1
    local t0 = time.monotonic()
    assert(time.sleep(s))
    return 200, { slept = time.monotonic() - t0 }
end


function _M.log()
    log.info("hello from lua", { player = 42, region = "r1" })
    return 200, {}
end


-- mmo.time.after: the timer's task writes a Redis key when it runs
function _M.timer(req)
    local key = "spec:timer:" .. req.query.key
    time.after(0.05, function()
        cache.set(key, "fired")
    end)
    return 200, {}
end


-- mmo.time.every: counts its runs in Redis and cancels itself after the third; with fail=1
-- the first run raises (logged) and the timer goes on; name= names it (metrics)
function _M.every(req)
    local key = "spec:every:" .. req.query.key
    local runs = 0
    local timer
    timer = time.every(0.05, function()
        runs = runs + 1
        cache.incr(key)
        if runs == 1 and req.query.fail then
            error("first run fails on purpose")
        end
        if runs == 3 then
            timer:cancel()
        end
    end, req.query.name)
    return 200, {}
end


-- a full garbage collection cycle of the VM
function _M.gc()
    collectgarbage()
    return 200, {}
end


-- reads PostgreSQL (slowly) then Redis, in sequence; other requests must go on meanwhile
function _M.db_sleep_then_cache(req)
    local s = tonumber(req.query.s) or 0.5
    http.check(db.query("select pg_sleep($1)", s))
    local v = http.check(cache.set("spec:after_sleep", "1"))
    return 200, { done = time.now(), cache = v }
end


function _M.db_types()
    local rows = http.check(db.query(
        "select $1::int as n, $2::text as t, true as b, 1.5::float8 as f, " ..
        "'{\"a\":[1,2]}'::jsonb as j, null::int as z, 9007199254740993::int8 as big", 7, "x"))
    return 200, { row = rows[1], count = #rows }
end


function _M.db_error()
    local rows, err, detail = db.query("select * from no_such_table_for_spec")
    return 200, { rows = rows, err = err, sqlstate = detail and detail.sqlstate }
end


-- body: { name, fail }: inserts name in a transaction; fail=true raises after the insert
function _M.db_tx(req)
    http.check(db.query("create table if not exists spec_tx (name text primary key)"))
    local body = req.body or {}
    local ok, res = pcall(db.tx, function(q)
        http.check(q("insert into spec_tx(name) values ($1)", body.name))
        if body.fail then
            error("fail inside the transaction")
        end
        return "committed"
    end)
    if ok then
        return 200, { ok = true, result = res }
    end
    return 200, { ok = false, err = tostring(res) }
end


-- one row, committed durably (synchronous_commit on, whatever the test cluster's default):
-- 201 only once PostgreSQL has it; 503 when it is away (faults_spec)
function _M.db_put(req)
    local name = req.body and req.body.name
    http.check(db.tx(function(q)
        http.check(q("set local synchronous_commit = on"))
        http.check(q("insert into spec_tx(name) values ($1)", name))
    end))
    return 201, { name = name }
end


-- allocates as a runaway handler would, until the Lua memory limit stops it (or 256 MiB, so
-- that a node without the limit answers 200 rather than take the machine's memory)
function _M.hog()
    local t = {}
    local i = 0
    while i < 4096 do
        i = i + 1
        t[i] = string.rep("x", 65536) .. i
    end
    return 200, { n = #t }
end


function _M.db_count(req)
    local rows = http.check(db.query("select count(*)::int as n from spec_tx where name = $1",
                                     req.query.name))
    return 200, { n = rows[1].n }
end


function _M.db_ping()
    local rows = http.check(db.query("select 1 as one"))
    return 200, { one = rows[1].one }
end


-- db.read (spec/e2e/replica_spec.lua): where a read ran (a replica is in recovery), on the
-- main database and on shard 1, and what db.read refuses (the messages it raises)
function _M.db_read()
    local rows, err = db.read("-- where am I?\n/* a server in recovery is a replica */ " ..
                              "select pg_is_in_recovery() as replica")
    local s1 = db.shard_ids()[2] and db.shard(db.shard_ids()[2]).read(
        "select pg_is_in_recovery() as replica")
    local refused = {}
    for i, sql in ipairs({ "insert into spec_tx(name) values ('x')", "  delete from players",
                           "-- select\nupdate players set xp = 0", 42 }) do
        local ok, msg = pcall(db.read, sql)
        refused[i] = not ok and tostring(msg) or "accepted"
    end
    return 200, { replica = rows and rows[1].replica, err = err,
                  shard1_replica = s1 and s1[1].replica, refused = refused }
end


function _M.cache_roundtrip(req)
    local k = "spec:rt:" .. req.id
    assert(cache.set(k, "v1", 5000))
    local v = cache.get(k)
    local n = cache.incr(k .. ":n", 5)
    local missing = cache.get(k .. ":missing")
    local results = http.check(cache.pipeline({ { "SET", k .. ":p", "pv" }, { "GET", k .. ":p" },
                                                { "INCR", k } }))
    -- without the replies: true for each command done, the error for one that failed
    local quiet = http.check(cache.pipeline({ { "SET", k .. ":q", "qv" }, { "GET", k .. ":q" },
                                              { "INCR", k .. ":q" } }, { replies = false }))
    local evaled = http.check(cache.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])",
                                         { k .. ":n" }, { 2 }))
    local expired = cache.expire(k .. ":n", 60000)
    local expired_missing = cache.expire(k .. ":none", 60000)
    local deleted = cache.del(k, k .. ":n", k .. ":p", k .. ":q")
    return 200, { v = v, n = n, missing = missing == nil, pipeline = results, quiet = quiet,
                  evaled = evaled,
                  expired = expired, expired_missing = expired_missing, deleted = deleted }
end


-- Several Redis instances: where each of the query's tags (comma-separated) is placed, a
-- pipeline whose commands go to those instances (a key under each tag, set then read back in
-- one call), the same through cache.at, and what a transaction spread over two instances and a
-- bad at raise.
function _M.cache_placed(req)
    local places, cmds, keys = {}, {}, {}
    for tag in (req.query.tags or ""):gmatch("[^,]+") do
        places[#places + 1] = cache.place(tag)
        local k = "spec:placed:" .. req.id .. ":" .. #places
        keys[#keys + 1] = k
        cmds[#cmds + 1] = { "SET", k, tag, "PX", 60000, at = tag }
        cmds[#cmds + 1] = { "GET", k, at = tag }
    end
    local results = http.check(cache.pipeline(cmds))
    local first = req.query.tags:match("^[^,]+")
    local bound = cache.at(first)
    local via_at = http.check(bound.get(keys[1]))
    local multi = { pcall(cache.pipeline, { { "MULTI", at = first }, { "GET", keys[1] },
                                            { "GET", keys[2], at = req.query.tags:match(",([^,]+)") },
                                            { "EXEC" } }) }
    local bad = { pcall(cache.pipeline, { { "GET", keys[1], at = 7 } }) }
    return 200, { places = places, results = results, keys = keys, at_name = bound.name,
                  via_at = via_at, multi = tostring(multi[2]), bad = tostring(bad[2]) }
end


function _M.cache_get(req)
    local v, err = cache.get(req.query.key)
    http.check(v ~= nil or err == nil, err)
    return 200, { value = v }
end


function _M.cache_ping()
    local v = http.check(cache.cmd("PING"))
    return 200, { pong = v }
end


return _M
