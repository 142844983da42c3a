local script = require "helpers.script"


describe("lib.http", function()
    local http

    before_each(function()
        http = script.load("lib.http")
    end)

    describe("fail", function()
        it("raises a typed error the core answers as that status", function()
            local ok, e = pcall(http.fail, 409, "name_taken", "that name is taken", { name = "x" })
            assert.is_false(ok)
            assert.same({ status = 409, code = "name_taken", message = "that name is taken",
                          details = { name = "x" } }, setmetatable(e, nil))
        end)

        it("prints readably", function()
            local _, e = pcall(http.fail, 422, "bad", "nope")
            assert.equal("422 bad: nope", tostring(e))
        end)
    end)

    describe("check", function()
        it("passes values through", function()
            assert.same({ 1, 2 }, { http.check(1, 2) })
        end)

        it("turns an unavailable dependency into a 503", function()
            for _, err in ipairs({ "unavailable", "timeout", "closed" }) do
                local ok, e = pcall(http.check, nil, err)
                assert.is_false(ok)
                assert.equal(503, e.status)
                assert.equal("unavailable", e.code)
            end
        end)

        it("raises a plain error (a 500) for anything else", function()
            local ok, e = pcall(http.check, nil, "query")
            assert.is_false(ok)
            assert.is_string(e)
            assert.truthy(e:find("unexpected failure: query", 1, true))
        end)
    end)
end)
