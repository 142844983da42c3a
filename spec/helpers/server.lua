-- helpers/server.lua: start the real node binary for end-to-end specs and talk HTTP to it.
--
--   local server = require "helpers.server"
--   local node = server.start { env = { MMO_HTTP_HEADER_TIMEOUT_MS = "1000" } }
--   local res = node:request("GET", "/healthz")      -- { status, headers, body, json }
--   local c = node:connect(); c:send(raw); local r = c:read_response(); c:close()
--   node:stop()                                       -- SIGTERM, waits, returns exit code
--
-- The binary is $MMO_BIN (tools/dev test points it at the sanitizer build), else build/mmo.
-- PostgreSQL and Redis come from $MMO_PG and $MMO_REDIS, which tools/dev test exports.
-- Each node listens on a free port (MMO_PORT=0; the port is read from its first log line)
-- and logs to a file of its own, so specs can read what it logged.
local socket = require "socket"
local json = require "cjson.safe"


local _M = {}

local ROOT = os.getenv("MMO_ROOT") or "."
local BIN = os.getenv("MMO_BIN") or (ROOT .. "/build/mmo")

local Node = {}
Node.__index = Node

-- this busted process: the nodes it starts do not outlive it
local SELF_PID = (function()
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("*l"):match("^(%d+)")
    f:close()
    return pid
end)()

_M.JWT_SECRET = "spec-secret-0123456789-abcdefghijklmnop"

local Conn = {}
Conn.__index = Conn


local function sh_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return ""
    end
    local s = f:read("*a")
    f:close()
    return s
end


-- A file's text; "" when it is not there (yet).
_M.read_file = read_file


function _M.sleep(seconds)
    socket.sleep(seconds)
end


function _M.now()
    return socket.gettime()
end


-- Start a node. opts.env: extra environment; opts.scripts: scripts path (default: the test
-- scripts first, then the real ones); opts.routes: route module (default test_routes);
-- opts.args: extra arguments; opts.expect_fail: return the exit code and log instead of
-- waiting for the listening line; opts.nofile: the node's limit of open files (ulimit -n);
-- opts.stdout: where its stdout (the log) goes instead of the log file (stderr stays there),
-- e.g. "/dev/full": then opts.env.MMO_PORT must name the port (see free_port).
function _M.start(opts)
    opts = opts or {}
    -- MMO_E2E_NODES=n: the spec's node is n nodes sharing its port (one world, core/bus.c);
    -- the kernel spreads the spec's connections over them, and stop/kill reach every one
    local many = tonumber(os.getenv("MMO_E2E_NODES") or "") or 1
    if many > 1 and not (opts.expect_fail or opts.stdout or opts.alone or
                         (opts.env and opts.env.MMO_PORT)) then
        local port, env = _M.free_port(), {}
        for k, v in pairs(opts.env or {}) do
            env[k] = v
        end
        env.MMO_PORT, env.MMO_HTTP_REUSEPORT = tostring(port), "1"
        local o = setmetatable({ env = env, alone = true }, { __index = opts })
        local others = {}
        for i = 2, many do
            env.MMO_NODE_ID = "spec-node-" .. i
            others[#others + 1] = _M.start(o)
        end
        env.MMO_NODE_ID = "spec-node"
        local first = _M.start(o)
        first.others = others
        return first
    end
    local log = os.tmpname()
    local env = {
        MMO_PORT = "0",
        MMO_NODE_ID = "spec-node",
        MMO_SCRIPTS = ROOT .. "/spec/e2e/scripts;" .. ROOT .. "/scripts",
        MMO_ROUTES = "test_routes",
        MMO_LOG_LEVEL = "info",
        MMO_CONFIG = ROOT .. "/config.lua",
        -- one key for every spec node, so specs can make tokens of their own (helpers/jwt)
        MMO_AUTH_JWT_SECRET = _M.JWT_SECRET,
        MMO_AUTH_JWT_KID = "k1",
        -- limits out of the way, but for the specs that set their own
        MMO_RATELIMIT_AUTH_LIMIT = "1000000",
        MMO_RATELIMIT_AUTH_BURST = "1000000",
        MMO_RATELIMIT_API_LIMIT = "1000000",
        MMO_RATELIMIT_API_BURST = "1000000",
    }
    if opts.scripts then
        env.MMO_SCRIPTS = opts.scripts
    end
    if opts.routes then
        env.MMO_ROUTES = opts.routes
    end
    for k, v in pairs(opts.env or {}) do
        env[k] = v
    end
    local parts = {}
    for k, v in pairs(env) do
        parts[#parts + 1] = k .. "=" .. sh_quote(v)
    end
    -- a launcher records the node's pid (exec keeps it) and, from the outer shell, its exit
    -- code, so specs can signal the node itself and read how it ended. A watchdog stops the
    -- node when this busted process is gone, so a spec that fails before node:stop() leaves
    -- nothing running past the run.
    local launcher = log .. ".sh"
    local f = assert(io.open(launcher, "w"))
    f:write("echo $$ > ", log, ".pid\n",
            "( while kill -0 ", SELF_PID, " 2>/dev/null; do sleep 1; kill -0 $$ 2>/dev/null ",
            "|| exit 0; done; kill -TERM $$ 2>/dev/null ) </dev/null >/dev/null 2>&1 &\n",
            "cd ", sh_quote(ROOT), " || exit 99\n",
            opts.nofile and ("ulimit -n " .. tonumber(opts.nofile) .. " || exit 98\n") or "",
            "exec env ", table.concat(parts, " "), " ", sh_quote(BIN), " serve ",
            table.concat(opts.args or {}, " "),
            opts.stdout and (" >" .. sh_quote(opts.stdout)) or "", "\n")
    f:close()
    os.execute("( sh " .. launcher .. " >" .. log .. " 2>&1; echo $? >" .. log .. ".rc ) " ..
               ">/dev/null 2>&1 &")
    local node = setmetatable({ log = log, host = "127.0.0.1" }, Node)
    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline and not node.pid do
        node.pid = tonumber(read_file(log .. ".pid"):match("%d+"))
        if not node.pid then
            socket.sleep(0.02)
        end
    end
    assert(node.pid, "the launcher did not start")
    if opts.expect_fail then
        node:wait(20)
        return node.rc, node:logs()
    end
    while socket.gettime() < deadline do
        local text = read_file(log)
        local port = text:match("listening on http://[%d%.]+:(%d+)")
        if opts.stdout then -- the listening line went elsewhere
            port = env.MMO_PORT ~= "0" and env.MMO_PORT
        end
        if port then
            node.port = tonumber(port)
            -- listening comes before PostgreSQL and Redis are connected: wait for /readyz, so
            -- that a spec's first request does not meet a node still connecting
            while opts.ready ~= false and socket.gettime() < deadline do
                local ok, res = pcall(node.request, node, "GET", "/readyz")
                if ok and res.status == 200 then
                    return node
                end
                if not node:alive() then
                    error("node exited at start:\n" .. read_file(log))
                end
                socket.sleep(0.02)
            end
            if opts.ready == false then
                return node
            end
            break
        end
        if not node:alive() then
            error("node exited at start:\n" .. text)
        end
        socket.sleep(0.05)
    end
    node:kill()
    error("node was not ready in 20 s:\n" .. read_file(log))
end


function Node:alive()
    if self.rc then
        return false
    end
    local rc = tonumber(read_file(self.log .. ".rc"):match("%d+"))
    if rc then
        self.rc = rc
        return false
    end
    return true
end


function Node:signal(sig)
    if self.pid and self:alive() then
        os.execute("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null")
    end
end


-- Wait for the process to exit; returns its exit code, or nil on timeout.
function Node:wait(timeout)
    local deadline = socket.gettime() + (timeout or 20)
    while socket.gettime() < deadline do
        if not self:alive() then
            return self.rc
        end
        socket.sleep(0.02)
    end
    return nil
end


-- Sanitizer reports (ASan, LSan, UBSan) the node wrote to its log, or nil.
function Node:sanitizer_report()
    local text = self:logs()
    local at = text:find("ERROR: AddressSanitizer", 1, true) or
               text:find("ERROR: LeakSanitizer", 1, true) or
               text:find("runtime error:", 1, true)
    return at and text:sub(math.max(1, at - 200), at + 3000) or nil
end


-- SIGTERM and wait; returns the exit code (nil if it had to be killed). The log stays.
-- Raises if the node wrote a sanitizer report: a leak or a memory error fails the spec.
function Node:stop(timeout)
    for _, o in ipairs(self.others or {}) do
        local orc = o:stop(timeout)
        if orc ~= 0 then
            error("another node of the spec's ended with " .. tostring(orc), 2)
        end
    end
    local rc = self.rc
    if self:alive() then
        self:signal("TERM")
        rc = self:wait(timeout or 20)
        if rc == nil then
            self:kill()
        end
    end
    local report = self:sanitizer_report()
    if report then
        error("sanitizer report in the node's log:\n" .. report, 2)
    end
    return rc
end


function Node:kill()
    for _, o in ipairs(self.others or {}) do
        o:kill()
    end
    if self:alive() then
        self:signal("KILL")
        self:wait(5)
    end
end


function Node:logs()
    return read_file(self.log)
end


-- Log lines decoded as JSON objects (lines that are not JSON are skipped).
function Node:log_entries()
    local out = {}
    for line in self:logs():gmatch("[^\n]+") do
        local v = json.decode(line)
        if type(v) == "table" then
            out[#out + 1] = v
        end
    end
    return out
end


-- A connection; from source address bind_ip when given (any 127.x.y.z works on loopback:
-- specs use them as distinct client IPs).
function Node:connect(timeout, bind_ip)
    local c = assert(socket.tcp())
    c:settimeout(timeout or 10)
    if bind_ip then
        assert(c:bind(bind_ip, 0))
    end
    assert(c:connect(self.host, self.port))
    return setmetatable({ sock = c, buf = "", timeout = timeout or 10 }, Conn)
end


-- One request on a new connection. opts: headers (table), body (string or table -> JSON),
-- timeout, ip (source address), token (sent as a bearer token). Returns { status, headers
-- (lower-case), body, json }.
function Node:request(method, path, opts)
    local c = self:connect(opts and opts.timeout, opts and opts.ip)
    c:send(_M.format_request(method, path, opts))
    local res, err = c:read_response(method == "HEAD")
    c:close()
    assert(res, err)
    return res
end


function _M.format_request(method, path, opts)
    opts = opts or {}
    local body = opts.body
    if type(body) == "table" then
        body = json.encode(body)
    end
    local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1" }
    local headers = opts.headers or {}
    if opts.token then
        lines[#lines + 1] = "Authorization: Bearer " .. opts.token
    end
    for k, v in pairs(headers) do
        lines[#lines + 1] = k .. ": " .. v
    end
    if body then
        if not headers["Content-Type"] then
            lines[#lines + 1] = "Content-Type: application/json"
        end
        lines[#lines + 1] = "Content-Length: " .. #body
    end
    return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end


function Conn:send(data)
    local i = 1
    while i <= #data do
        local n, err = self.sock:send(data, i)
        if not n then
            return nil, err
        end
        i = n + 1
    end
    return true
end


-- Read what has arrived (waiting up to the connection's timeout for the first byte).
-- luasocket's receive(n) waits for all n bytes, so wait with select, then read without
-- blocking.
function Conn:fill(timeout)
    local r = socket.select({ self.sock }, nil, timeout or self.timeout)
    if not r or #r == 0 then
        return nil, "timeout"
    end
    self.sock:settimeout(0)
    local data, err, partial = self.sock:receive(65536)
    self.sock:settimeout(self.timeout)
    data = data or partial
    if data and #data > 0 then
        self.buf = self.buf .. data
        return true
    end
    return nil, err
end


-- Read one response; nil, err ("closed", "timeout") when none came.
function Conn:read_response(head_only)
    while not self.buf:find("\r\n\r\n", 1, true) do
        local ok, err = self:fill()
        if not ok then
            return nil, err
        end
    end
    local head_end = self.buf:find("\r\n\r\n", 1, true)
    local head = self.buf:sub(1, head_end - 1)
    self.buf = self.buf:sub(head_end + 4)
    local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
    local headers = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
        headers[k:lower()] = v
    end
    if status == 100 then
        return self:read_response(head_only)
    end
    local len = tonumber(headers["content-length"] or "0")
    if head_only then
        len = 0
    end
    while #self.buf < len do
        local ok, err = self:fill()
        if not ok then
            return nil, err
        end
    end
    local body = self.buf:sub(1, len)
    self.buf = self.buf:sub(len + 1)
    return { status = status, headers = headers, body = body, json = json.decode(body) }
end


-- true when the server closed the connection (EOF or reset) within timeout seconds;
-- whatever it sent before is kept in the buffer.
function Conn:closed_by_peer(timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while socket.gettime() < deadline do
        local ok, err = self:fill(math.max(0.01, deadline - socket.gettime()))
        if not ok and err ~= "timeout" then
            return true
        end
    end
    return false
end


function Conn:close()
    self.sock:close()
end


-- Run `mmo ARGS` to completion with extra environment; returns exit code, stdout+stderr.
function _M.run(args, env)
    local parts = {}
    for k, v in pairs(env or {}) do
        parts[#parts + 1] = k .. "=" .. sh_quote(v)
    end
    local out = os.tmpname()
    local cmd = "cd " .. sh_quote(ROOT) .. " && env " .. table.concat(parts, " ") .. " " ..
                sh_quote(BIN) .. " " .. args .. " >" .. out .. " 2>&1; echo $? >>" .. out
    os.execute(cmd)
    local text = read_file(out)
    os.remove(out)
    local rc = tonumber(text:match("(%d+)%s*$"))
    return rc, text:gsub("%d+%s*$", "")
end


-- A port free on 127.0.0.1 now (for a node whose log cannot be read for it)
function _M.free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end


-- n nodes sharing one port (http.reuseport), as tools/dev up --nodes runs them: a list of
-- nodes, node i named <prefix>-i and reached at its own port (http.admin_port), so a spec
-- chooses which node a client talks to; .shared is the port they share, where the kernel
-- chooses. opts as for start (opts.env: every node's).
function _M.start_nodes(n, opts)
    opts = opts or {}
    local shared, nodes = _M.free_port(), {}
    for i = 1, n do
        local env = { MMO_PORT = tostring(shared), MMO_HTTP_REUSEPORT = "1",
                      MMO_NODE_ID = (opts.prefix or "spec-node") .. "-" .. i,
                      MMO_HTTP_ADMIN_PORT = tostring(_M.free_port()) }
        for k, v in pairs(opts.env or {}) do
            env[k] = v
        end
        local node = _M.start { env = env, scripts = opts.scripts }
        node.shared, node.id, node.port = shared, env.MMO_NODE_ID, tonumber(env.MMO_HTTP_ADMIN_PORT)
        nodes[i] = node
    end
    return nodes
end


-- Kill the nodes given (nodes, lists of nodes, nils) that still run. For a test's finally, so a
-- failed assertion leaves no node behind to hold region leases and consume game events in the
-- specs after it: finally(function() server.kill_all(a, b) end) (busted's finally is the
-- spec's to call).
function _M.kill_all(...)
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        if type(v) == "table" and getmetatable(v) == Node then
            v:kill()
        elseif type(v) == "table" then
            _M.kill_all(unpack(v))
        end
    end
end


-- A fresh temporary directory (removed by the caller with rm_rf).
function _M.tmpdir()
    local p = io.popen("mktemp -d")
    local dir = p:read("*l")
    p:close()
    return dir
end


function _M.write(path, text)
    os.execute("mkdir -p " .. sh_quote(path:match("^(.*)/[^/]*$")))
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end


function _M.rm_rf(dir)
    if dir and dir:match("^/tmp/") then
        os.execute("rm -rf " .. sh_quote(dir))
    end
end


-- n random lower-case letters (unique names for what a spec makes)
function _M.letters(n)
    local s = {}
    for i = 1, n do
        s[i] = string.char(math.random(97, 122))
    end
    return table.concat(s)
end


-- A shell command's output (stdout and stderr), trailing space trimmed.
-- The Redis instances nodes started by a spec use (tools/dev test exports them): home
-- ($MMO_REDIS, named $MMO_REDIS_NAME or "main") then $MMO_REDIS_INSTANCES ("name=host:port,...").
-- A list of { name, host, port }.
function _M.redis_instances()
    local host, port = (os.getenv("MMO_REDIS") or "127.0.0.1:6379"):match("^(.-):(%d+)$")
    local list = { { name = os.getenv("MMO_REDIS_NAME") or "main", host = host, port = port } }
    for name, h, p in (os.getenv("MMO_REDIS_INSTANCES") or ""):gmatch("([^,=]+)=([^,:]+):(%d+)") do
        list[#list + 1] = { name = name, host = h, port = p }
    end
    return list
end


-- core/rds_set.c's rendezvous score, written again here so that a spec checks the node's
-- placement against its own: FNV-1a over name, a zero byte and tag, then splitmix64's finalizer.
local function place_score(name, tag)
    local bit = require "bit"
    local P = 0x100000001b3ULL
    local h = 0xcbf29ce484222325ULL
    for i = 1, #name do
        h = bit.bxor(h, name:byte(i)) * P
    end
    h = h * P
    for i = 1, #tag do
        h = bit.bxor(h, tag:byte(i)) * P
    end
    h = bit.bxor(h, bit.rshift(h, 30)) * 0xbf58476d1ce4e5b9ULL
    h = bit.bxor(h, bit.rshift(h, 27)) * 0x94d049bb133111ebULL
    return bit.bxor(h, bit.rshift(h, 31))
end


-- The instance (an entry of redis_instances(), or of instances when given: a list of
-- { name, ... } of a spec's own world) tag is placed on: "region:<id>", "stream:mmo:events",
-- "channel:mmo:bus" (scripts/lib/leases.lua, queue.lua, core/main.c).
function _M.redis_at(tag, instances)
    local best, top
    for _, inst in ipairs(instances or _M.redis_instances()) do
        local sc = place_score(inst.name, tag)
        if not best or sc > top or (sc == top and inst.name < best.name) then
            best, top = inst, sc
        end
    end
    return best
end


-- redis-cli on the instance tag is placed on (args as a shell string); its output, trimmed.
function _M.rcli_at(tag, args)
    local inst = _M.redis_at(tag)
    return _M.sh("redis-cli -h " .. inst.host .. " -p " .. inst.port .. " " .. args)
end


function _M.sh(cmd)
    local p = io.popen(cmd .. " 2>&1")
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end


-- One SQL statement run with psql against conninfo (default $MMO_PG); its output, trimmed.
function _M.psql(sql, conninfo)
    return _M.sh("psql '" .. (conninfo or os.getenv("MMO_PG")) .. "' -qtAc \"" .. sql .. "\"")
end


_M.ROOT = ROOT
_M.BIN = BIN


-- Many clients at once, for `seconds`: n keep-alive connections, each sending the request
-- next_request(i) returns ({method, path, opts}) and handing each answer to on_response(i,
-- res, request) before sending the next. One process, non-blocking sockets and select(): the
-- node sees n requests in flight at all times. Returns the number of requests answered.
function _M.concurrent(node, n, seconds, next_request, on_response)
    local conns, by_sock, pending = {}, {}, {}
    local socks = {}
    local function send(i)
        local r = next_request(i)
        pending[i] = r
        assert(conns[i]:send(_M.format_request(r[1], r[2], r[3])))
    end
    for i = 1, n do
        conns[i] = node:connect()
        by_sock[conns[i].sock] = i
        socks[i] = conns[i].sock
        send(i)
    end
    local done, deadline = 0, socket.gettime() + seconds
    local active = n
    while active > 0 do
        local readable = socket.select(socks, nil, 1)
        for _, sk in ipairs(readable) do
            local i = by_sock[sk]
            local c = conns[i]
            if c and pending[i] then
                c.sock:settimeout(0)
                local data, err, partial = c.sock:receive(65536)
                c.sock:settimeout(c.timeout)
                data = data or partial
                if data and #data > 0 then
                    c.buf = c.buf .. data
                elseif err == "closed" then
                    error("connection " .. i .. " closed by the node")
                end
                -- whole answers in the buffer
                while pending[i] and c.buf:find("\r\n\r\n", 1, true) do
                    local head_end = c.buf:find("\r\n\r\n", 1, true)
                    local len = tonumber(c.buf:sub(1, head_end):match("[Cc]ontent%-[Ll]ength: (%d+)"))
                    if not len or #c.buf < head_end + 3 + len then
                        break
                    end
                    local res = c:read_response()
                    local req = pending[i]
                    pending[i] = nil
                    done = done + 1
                    on_response(i, res, req)
                    if socket.gettime() < deadline then
                        send(i)
                    else
                        active = active - 1
                    end
                end
            end
        end
        if socket.gettime() > deadline + 30 then
            error("answers still missing 30 s after the end")
        end
    end
    for i = 1, n do
        conns[i]:close()
    end
    return done
end


-- Poll fn() every 50 ms until it returns a truthy value or timeout seconds pass.
-- An access token of the admin account (MMO_ADMIN_PASSWORD, as tools/dev test seeds it).
function _M.admin_token(node)
    local res = node:request("POST", "/api/auth/login", { body = { username = "admin",
                             password = os.getenv("MMO_ADMIN_PASSWORD") } })
    assert(res.status == 200, res.body)
    return res.json.access_token
end


function _M.eventually(fn, timeout)
    local deadline = socket.gettime() + (timeout or 10)
    local last
    repeat
        last = fn()
        if last then
            return last
        end
        socket.sleep(0.05)
    until socket.gettime() > deadline
    return last
end


-- Run a tools/dev service command against the test instances (pg|redis, stop|start);
-- MMO_SVC_CMD replaces `tools/dev svc` (for running specs against other services).
function _M.service(name, action)
    local cmd = os.getenv("MMO_SVC_CMD") or (sh_quote(ROOT .. "/tools/dev") .. " svc")
    local ok = os.execute(cmd .. " " .. name .. " " .. action ..
                          " >/dev/null 2>&1")
    assert(ok == 0 or ok == true, "tools/dev svc " .. name .. " " .. action .. " failed")
end


return _M
