-- The console's and the browser client's static files (core/web.c): served from memory at
-- /admin/ and /play/ with their types, an ETag, the Content-Security-Policy, and nothing
-- outside the two trees, whatever the path says.
local server = require "spec.helpers.server"

local INDEX = "<!doctype html><title>console</title><script type=module src=app.js></script>\n"
local APP = "export const answer = 42;\n"
local CSS = "body { color: #123; }\n"

describe("static files", function()
    local node, dir

    setup(function()
        dir = server.tmpdir()
        server.write(dir .. "/web/admin/index.html", INDEX)
        server.write(dir .. "/web/admin/app.js", APP)
        server.write(dir .. "/web/admin/sub/x.css", CSS)
        server.write(dir .. "/web/admin/.secret", "a dot file")
        server.write(dir .. "/web/play/index.html", "<!doctype html><title>play</title>\n")
        server.write(dir .. "/web/config.lua", "-- next to the trees: never served\n")
        assert(os.execute("ln -s /etc/passwd " .. dir .. "/web/admin/link.txt"))
        node = server.start { env = { MMO_HTTP_WEB_ROOT = dir .. "/web" } }
    end)

    teardown(function()
        if node then
            node:stop()
        end
        server.rm_rf(dir)
    end)

    it("serves the console's files with their type, an ETag and the security headers", function()
        local res = node:request("GET", "/admin/")
        assert.equal(200, res.status)
        assert.equal(INDEX, res.body)
        assert.equal("text/html; charset=utf-8", res.headers["content-type"])
        local csp = res.headers["content-security-policy"]
        assert.truthy(csp:find("script-src 'self'", 1, true))
        assert.falsy(csp:find("unsafe-inline", 1, true))
        assert.truthy(csp:find("frame-ancestors 'none'", 1, true))
        assert.equal("nosniff", res.headers["x-content-type-options"])
        assert.equal("no-cache", res.headers["cache-control"])
        assert.truthy(res.headers["etag"]:match('^"%x+"$'))

        res = node:request("GET", "/admin/app.js")
        assert.equal(200, res.status)
        assert.equal(APP, res.body)
        assert.equal("text/javascript; charset=utf-8", res.headers["content-type"])
        res = node:request("GET", "/admin/sub/x.css")
        assert.equal("text/css; charset=utf-8", res.headers["content-type"])
        assert.equal(CSS, res.body)
        res = node:request("GET", "/play/")
        assert.equal(200, res.status)
        assert.truthy(res.body:find("<title>play</title>", 1, true))
    end)

    it("answers 304 to the ETag it gave, and keeps the connection's framing", function()
        local etag = node:request("GET", "/admin/app.js").headers["etag"]
        local c = node:connect()
        c:send(server.format_request("GET", "/admin/app.js",
                                     { headers = { ["If-None-Match"] = etag } }))
        local res = assert(c:read_response(true))
        assert.equal(304, res.status)
        assert.equal(etag, res.headers["etag"])
        -- no body followed: the next response on the connection is read whole and right
        c:send(server.format_request("GET", "/admin/app.js",
                                     { headers = { ["If-None-Match"] = '"0000000000000000"' } }))
        res = assert(c:read_response())
        assert.equal(200, res.status)
        assert.equal(APP, res.body)
        c:close()
    end)

    it("answers HEAD with the length and no body, redirects the bare tree name", function()
        local res = node:request("HEAD", "/admin/app.js")
        assert.equal(200, res.status)
        assert.equal(tostring(#APP), res.headers["content-length"])
        res = node:request("GET", "/admin")
        assert.equal(301, res.status)
        assert.equal("/admin/", res.headers["location"])
        res = node:request("GET", "/play")
        assert.equal("/play/", res.headers["location"])
    end)

    it("refuses other methods with 405 and the error shape", function()
        local res = node:request("POST", "/admin/", { body = {} })
        assert.equal(405, res.status)
        assert.equal("GET, HEAD", res.headers["allow"])
        assert.equal("method_not_allowed", res.json.error.code)
    end)

    it("serves nothing outside the trees, no dot file and no symbolic link", function()
        for _, path in ipairs({ "/admin/../config.lua", "/admin/%2e%2e/config.lua",
                                "/admin/..%2fconfig.lua", "/admin//index.html",
                                "/admin/sub/../app.js", "/admin/.secret", "/admin/link.txt",
                                "/admin/nothing.js", "/play/../admin/app.js",
                                "/admin/app.js%00.png" }) do
            local res = node:request("GET", path)
            assert.equal(404, res.status, path)
            assert.equal("not_found", res.json.error.code, path)
            assert.falsy(res.body:find("root:", 1, true), path)
        end
        -- a path that only starts like a tree is the API's (its 404, not a file)
        local res = node:request("GET", "/administrator")
        assert.equal(404, res.status)
        assert.equal("not_found", res.json.error.code)
        -- and the API still answers beside the files
        assert.equal(200, node:request("GET", "/healthz").status)
    end)
end)
