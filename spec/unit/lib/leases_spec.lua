-- lib/leases.lua against a fake Redis that runs the two scripts' logic, with a fake clock.
local script = require "helpers.script"


describe("lib.leases", function()
    local store, clock, leases

    -- a Redis of one process: keys with an expiry, and the two scripts the module sends
    local function fake_cache(self_checks)
        return {
            pipeline = function(cmds)
                local out = {}
                for i, c in ipairs(cmds) do
                    local _, body, _, key, holder, px = unpack(c)
                    local cur = store[key]
                    if cur and cur.until_ <= clock.t then
                        cur, store[key] = nil, nil
                    end
                    if body == leases.TAKE_OR_RENEW then
                        if cur and cur.v == holder then
                            cur.until_ = clock.t + px / 1000
                            out[i] = { 1, holder }
                        elseif not cur then
                            store[key] = { v = holder, until_ = clock.t + px / 1000 }
                            out[i] = { 2, holder }
                        else
                            out[i] = { 0, cur.v }
                        end
                    else
                        assert(body == leases.RELEASE)
                        if cur and cur.v == holder then
                            store[key] = nil
                            out[i] = 1
                        else
                            out[i] = 0
                        end
                    end
                end
                if self_checks then
                    self_checks(cmds)
                end
                return out
            end,
        }
    end

    local function load(node)
        return script.load("lib.leases", {
            ["mmo.cache"] = fake_cache(),
            ["mmo.time"] = { monotonic = function() return clock.t end },
            ["mmo.world"] = { settings = function()
                return { node = node, view_radius = 100, lease_ms = 3000 }
            end },
            ["mmo.crypto"] = { random = function() return node .. "-run" end },
        })
    end

    local R = { { id = "r1" }, { id = "r2" } }

    before_each(function()
        store, clock = {}, { t = 100 }
    end)

    it("takes free regions, renews its own, and says who holds what", function()
        leases = load("a")
        assert.same({ "r1", "r2" }, leases.tick(R))
        assert.is_true(leases.mine("r1"))
        assert.equal("a", leases.node_of(leases.holder("r2")))
        clock.t = clock.t + 2
        assert.same({}, leases.tick(R)) -- renewed, not taken again
        clock.t = clock.t + 2.5         -- 4.5 s after taking: alive only because renewed
        assert.truthy(store["region:owner:r1"])
    end)

    it("leaves another node's regions alone until its lease lapses", function()
        local a = load("a")
        leases = a
        a.tick(R)
        local b = load("b")
        leases = b
        assert.same({}, b.tick(R))
        assert.is_false(b.mine("r1"))
        assert.equal("a", b.node_of(b.holder("r1")))
        clock.t = clock.t + 3.1 -- a stopped renewing
        assert.same({ "r1", "r2" }, b.tick(R))
        assert.equal("b", b.node_of(b.holder("r1")))
    end)

    it("forgets what it saw once that is older than the lease", function()
        leases = load("a")
        leases.tick(R)
        clock.t = clock.t + 3.5
        assert.is_nil(leases.holder("r1"))
        assert.is_false(leases.mine("r1"))
    end)

    it("releases only its own leases", function()
        local a = load("a")
        leases = a
        a.tick({ R[1] })
        local b = load("b")
        leases = b
        b.tick(R) -- takes r2 only
        leases = a
        a.release_all(R)
        assert.is_nil(store["region:owner:r1"])
        assert.equal("b/b-run", store["region:owner:r2"].v)
    end)

    it("tells node ids from holders, whatever the node id holds", function()
        leases = load("a")
        assert.equal("node/with/slashes", leases.node_of("node/with/slashes/x1"))
        assert.is_nil(leases.node_of(nil))
    end)
end)
