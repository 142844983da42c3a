-- helpers/jwt.lua: make JSON Web Tokens by hand, good and forged, for the security specs.
-- HMAC-SHA256 comes from libcrypto through LuaJIT's FFI.
local ffi = require "ffi"
local cjson = require "cjson"

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]]
local crypto = ffi.load("crypto")


local _M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


function _M.b64url(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local chars = 2 + (b and 1 or 0) + (c and 1 or 0)
        for k = 1, chars do
            local shift = 18 - 6 * (k - 1)
            local idx = math.floor(n / 2 ^ shift) % 64
            out[#out + 1] = B64:sub(idx + 1, idx + 1)
        end
    end
    return table.concat(out)
end


function _M.hmac_sha256(key, data)
    local md = ffi.new("unsigned char[32]")
    local len = ffi.new("unsigned int[1]")
    crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, md, len)
    return ffi.string(md, len[0])
end


-- A token: header and payload tables, signed with key by HMAC-SHA256 (whatever the header's
-- alg claims); key == nil leaves the signature empty.
function _M.make(header, payload, key)
    local signing = _M.b64url(cjson.encode(header)) .. "." .. _M.b64url(cjson.encode(payload))
    local sig = key and _M.b64url(_M.hmac_sha256(key, signing)) or ""
    return signing .. "." .. sig
end


-- The payload of a token, decoded (no verification).
function _M.payload(token)
    local p = token:match("^[^.]+%.([^.]+)%.")
    p = p:gsub("-", "+"):gsub("_", "/")
    p = p .. string.rep("=", (4 - #p % 4) % 4)
    local mime = require "mime"
    return cjson.decode((mime.unb64(p)))
end


return _M
