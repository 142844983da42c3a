-- The route table is data: every entry well formed, every handler a function.
local script = require "helpers.script"


local ROLES = { public = true, player = true, moderator = true, designer = true, admin = true }
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true, DELETE = true,
                  OPTIONS = true }


describe("routes", function()
    local routes = script.load("routes")

    it("lists HTTP routes", function()
        assert.is_table(routes.http)
        assert.truthy(#routes.http > 0)
    end)

    for i, r in ipairs(routes.http) do
        it("entry " .. i .. " (" .. tostring(r[1]) .. " " .. tostring(r[2]) .. ") is well formed",
           function()
            assert.truthy(METHODS[r[1]])
            assert.truthy(type(r[2]) == "string" and r[2]:sub(1, 1) == "/")
            assert.truthy(ROLES[r.role], "role " .. tostring(r.role))
            local mod, fn = r[3]:match("^(.+)%.([%w_]+)$")
            assert.truthy(mod, "handler must be module.function")
            local handlers = script.load("handlers." .. mod, {
                ["mmo.db"] = { shard_ids = function() return { 0 } end },
                ["mmo.world"] = { settings = function()
                    return { node = "n", view_radius = 100, lease_ms = 10000 }
                end },
                ["mmo.crypto"] = { random = function() return "r" end },
            })
            assert.is_function(handlers[fn])
        end)
    end

    it("has no duplicate method + path", function()
        local seen = {}
        for _, r in ipairs(routes.http) do
            local key = r[1] .. " " .. r[2]
            assert.is_nil(seen[key], key)
            seen[key] = true
        end
    end)
end)
