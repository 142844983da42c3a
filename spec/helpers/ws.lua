-- helpers/ws.lua: a small WebSocket client (RFC 6455) for the end-to-end specs, on luasocket.
--
--   local ws = require "helpers.ws"
--   local c = assert(ws.connect(node, token))       -- GET /ws?token=..., checks the 101
--   c:send({ t = "ping" })                          -- a masked text frame of JSON
--   local msg = c:receive(2)                        -- the next text message, decoded (or nil, err)
--   local m = c:expect("pong", 2)                   -- skip others until a message of that t
--   c:close()
--
-- Raw frames for hostile cases: c:send_frame(opcode, payload, { mask = false, fin = true }).
local bit = require "bit"
local cjson = require "cjson"
local mime = require "mime"
local socket = require "socket"

local band, bor, bxor, rshift = bit.band, bit.bor, bit.bxor, bit.rshift
local char, byte = string.char, string.byte


local _M = {}

local Client = {}
Client.__index = Client


local function key()
    local t = {}
    for i = 1, 16 do
        t[i] = char(math.random(0, 255))
    end
    return (mime.b64(table.concat(t)))
end


-- Connect and upgrade. opts: headers (extra), path (default /ws?token=...), ip (source).
-- Returns the client, or nil, status, response head (the refusal).
function _M.connect(node, token, opts)
    opts = opts or {}
    local c = node:connect(opts.timeout or 5, opts.ip)
    local k = key()
    local path = opts.path or ("/ws" .. (token and ("?token=" .. token) or ""))
    local lines = { "GET " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
                    "Connection: Upgrade", "Sec-WebSocket-Key: " .. k,
                    "Sec-WebSocket-Version: 13" }
    for name, v in pairs(opts.headers or {}) do
        lines[#lines + 1] = name .. ": " .. v
    end
    c:send(table.concat(lines, "\r\n") .. "\r\n\r\n")
    while not c.buf:find("\r\n\r\n", 1, true) do
        local ok, err = c:fill()
        if not ok then
            return nil, err
        end
    end
    local head_end = c.buf:find("\r\n\r\n", 1, true)
    local head = c.buf:sub(1, head_end - 1)
    local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
    if status ~= 101 then
        local res = c:read_response()
        c:close()
        return nil, status, res
    end
    c.buf = c.buf:sub(head_end + 4)
    return setmetatable({ conn = c, head = head, key = k }, Client)
end


-- A frame: opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong), masked unless opts.mask ==
-- false, final unless opts.fin == false. opts.length lies about the payload length.
function Client:send_frame(opcode, payload, opts)
    opts = opts or {}
    local fin = opts.fin == false and 0 or 0x80
    local masked = opts.mask ~= false
    local len = opts.length or #payload
    local head = { char(bor(fin, opcode)) }
    local mbit = masked and 0x80 or 0
    if len < 126 then
        head[2] = char(bor(mbit, len))
    elseif len < 65536 then
        head[2] = char(bor(mbit, 126)) .. char(rshift(len, 8), band(len, 255))
    else
        local b = {}
        local v = len
        for i = 8, 1, -1 do
            b[i] = char(v % 256)
            v = math.floor(v / 256)
        end
        head[2] = char(bor(mbit, 127)) .. table.concat(b)
    end
    if masked then
        local m = { math.random(0, 255), math.random(0, 255), math.random(0, 255),
                    math.random(0, 255) }
        head[3] = char(m[1], m[2], m[3], m[4])
        local out = {}
        for i = 1, #payload do
            out[i] = char(bxor(byte(payload, i), m[(i - 1) % 4 + 1]))
        end
        payload = table.concat(out)
    end
    return self.conn:send(table.concat(head) .. payload)
end


function Client:send(msg)
    return self:send_frame(1, type(msg) == "table" and cjson.encode(msg) or msg)
end


-- The next frame: opcode, payload | nil, err ("timeout", "closed").
function Client:frame(timeout)
    local c = self.conn
    local deadline = socket.gettime() + (timeout or 5)
    local function need(n)
        while #c.buf < n do
            local left = deadline - socket.gettime()
            if left <= 0 then
                return nil, "timeout"
            end
            local ok, err = c:fill(left)
            if not ok then
                return nil, err
            end
        end
        return true
    end
    local ok, err = need(2)
    if not ok then
        return nil, err
    end
    local b1, b2 = byte(c.buf, 1, 2)
    local opcode = band(b1, 0x0f)
    local len, off = band(b2, 0x7f), 2
    if len == 126 then
        ok, err = need(4)
        if not ok then
            return nil, err
        end
        len, off = byte(c.buf, 3) * 256 + byte(c.buf, 4), 4
    elseif len == 127 then
        ok, err = need(10)
        if not ok then
            return nil, err
        end
        len = 0
        for i = 3, 10 do
            len = len * 256 + byte(c.buf, i)
        end
        off = 10
    end
    ok, err = need(off + len)
    if not ok then
        return nil, err
    end
    local payload = c.buf:sub(off + 1, off + len)
    c.buf = c.buf:sub(off + len + 1)
    return opcode, payload
end


-- The next text message, decoded; pings answered. A close frame returns nil, "close", code.
function Client:receive(timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while true do
        local opcode, payload = self:frame(math.max(0.01, deadline - socket.gettime()))
        if not opcode then
            return nil, payload
        end
        if opcode == 1 then
            return cjson.decode(payload), payload
        elseif opcode == 8 then
            local code = #payload >= 2 and byte(payload, 1) * 256 + byte(payload, 2) or 1005
            self.closed = code
            return nil, "close", code, payload:sub(3)
        elseif opcode == 9 then
            self:send_frame(10, payload)
        end
    end
end


-- Skip messages until one of type t comes (returns it), or nil, err.
function Client:expect(t, timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while socket.gettime() < deadline do
        local msg, err, code = self:receive(deadline - socket.gettime())
        if not msg then
            return nil, err, code
        end
        if msg.t == t then
            return msg
        end
    end
    return nil, "timeout"
end


-- Every message that arrives within `seconds`.
function Client:drain(seconds)
    local out = {}
    local deadline = socket.gettime() + seconds
    while socket.gettime() < deadline do
        local msg, err = self:receive(deadline - socket.gettime())
        if msg then
            out[#out + 1] = msg
        elseif err ~= "timeout" then
            break
        end
    end
    return out
end


-- Wait for the server's close: returns its code, or nil.
function Client:wait_close(timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while socket.gettime() < deadline do
        local msg, err, code = self:receive(deadline - socket.gettime())
        if not msg and err == "close" then
            return code
        elseif not msg and err ~= "timeout" then
            return nil, err
        end
    end
    return nil, "timeout"
end


-- The connection lost, not closed: no close frame (the node sees 1006).
function Client:drop()
    self.closed = true
    self.conn:close()
end


function Client:close(code)
    if not self.closed then
        local c = code or 1000
        self:send_frame(8, char(rshift(c, 8), band(c, 255)))
    end
    self.conn:close()
end


return _M
