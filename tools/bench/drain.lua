-- tools/bench/drain.lua -- the drain poller of tools/bench/pipeline's processing runs
-- (docs/performance.md, "Game events (pipeline)").
--
--   luajit tools/bench/drain.lua HOST PORT "Bearer <admin token>" POLL_MS TIMEOUT_S
--
-- GET /api/admin/queues every POLL_MS over one keep-alive connection (LuaSocket), until the
-- consumer group shows lag 0 and pending 0; then prints "drained <epoch seconds> <polls>" and
-- exits 0. After TIMEOUT_S: "timeout <epoch seconds> <polls> <lag> <pending>", exit 1. One
-- process for the whole wait, a few system calls per poll: a curl per poll cost this 2-vCPU
-- machine a noticeable share of a vCPU while the node was being measured.
local socket = require "socket"

local host, port, auth = arg[1], tonumber(arg[2]), arg[3]
local poll_s = (tonumber(arg[4]) or 50) / 1000
local timeout_s = tonumber(arg[5]) or 180
assert(host and port and auth, "usage: drain.lua HOST PORT AUTHORIZATION POLL_MS TIMEOUT_S")

local request = "GET /api/admin/queues HTTP/1.1\r\nHost: " .. host .. "\r\nAuthorization: " ..
                auth .. "\r\n\r\n"
local conn

local function drop()
    if conn then
        conn:close()
        conn = nil
    end
end

-- one GET: status line, body (nil when the connection failed; it is opened again next time)
local function get()
    if not conn then
        conn = socket.tcp()
        conn:settimeout(5)
        if not conn:connect(host, port) then
            drop()
            return nil
        end
        conn:setoption("tcp-nodelay", true)
    end
    if not conn:send(request) then
        drop()
        return nil
    end
    local status = conn:receive("*l")
    if not status then
        drop()
        return nil
    end
    local len = 0
    while true do
        local line = conn:receive("*l")
        if not line then
            drop()
            return nil
        end
        if line == "" then
            break
        end
        local n = line:lower():match("^content%-length:%s*(%d+)")
        if n then
            len = tonumber(n)
        end
    end
    local body = len > 0 and conn:receive(len) or ""
    if not body then
        drop()
        return nil
    end
    return status, body
end

local deadline = socket.gettime() + timeout_s
local polls, lag, pending = 0, "?", "?"
while socket.gettime() < deadline do
    local status, body = get()
    local now = socket.gettime()
    polls = polls + 1
    if status and status:match("^HTTP/1%.1 200") then
        lag = body:match('"lag":(%d+)') or body:match('"lag":(null)') or "?"
        pending = body:match('"pending":(%d+)') or "?"
        if lag == "0" and pending == "0" then
            io.write(string.format("drained %.6f %d\n", now, polls))
            os.exit(0)
        end
    end
    socket.sleep(poll_s)
end
io.write(string.format("timeout %.6f %d %s %s\n", socket.gettime(), polls, lag, pending))
os.exit(1)
