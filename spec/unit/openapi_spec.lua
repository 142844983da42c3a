-- docs/openapi.json and scripts/routes.lua must list the same HTTP routes, with the same roles.
local cjson = require "cjson"
local script = require "helpers.script"


local CORE = { ["GET /healthz"] = true, ["GET /readyz"] = true }


local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end


describe("docs/openapi.json", function()
    local doc = cjson.decode(read("docs/openapi.json"))
    local routes = script.load("routes")

    local documented = {}
    for path, ops in pairs(doc.paths) do
        for method, op in pairs(ops) do
            documented[method:upper() .. " " .. path] = op
        end
    end

    it("documents every route of routes.lua with its role", function()
        for _, r in ipairs(routes.http) do
            local key = r[1] .. " " .. r[2]:gsub(":([%w_]+)", "{%1}")
            local op = documented[key]
            assert.is_table(op, key .. " is not in docs/openapi.json")
            assert.equal(r.role, op["x-role"], key)
        end
    end)

    it("documents no route that does not exist", function()
        local exists = {}
        for _, r in ipairs(routes.http) do
            exists[r[1] .. " " .. r[2]:gsub(":([%w_]+)", "{%1}")] = true
        end
        for key in pairs(documented) do
            assert.truthy(exists[key] or CORE[key], key .. " is documented but not routed")
        end
    end)

    it("defines the one error shape", function()
        local e = doc.components.schemas.Error.properties.error
        assert.same({ "code", "message", "details", "request_id" }, e.required)
    end)
end)
