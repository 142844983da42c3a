-- lib/leases.lua against a fake Redis that runs its scripts' logic (leases, the live list),
-- with a fake clock shared by Redis and the nodes.
local script = require "helpers.script"


describe("lib.leases", function()
    local store, live, clock, leases

    local function expired(key)
        local cur = store[key]
        if cur and cur.until_ <= clock.t then
            store[key] = nil
        end
        return store[key]
    end

    -- a Redis of one process: keys with an expiry, the sorted set of live nodes, and the
    -- scripts the module sends
    -- down[name]: that Redis instance does not answer; a region's instance is place[tag]
    -- (default "main")
    local down, placed = {}, {}
    -- the instances the loaded node has (cache.instances), and the layout in the fake Redis
    local instances, layout = { "main" }, nil

    local function fake_cache()
        return {
            place = function(tag) return placed[tag] or "main" end,
            instances = function() return instances end,
            layout = function()
                local sorted = { unpack(instances) }
                table.sort(sorted)
                return table.concat(sorted, ",")
            end,
            pipeline = function(cmds)
                for _, c in ipairs(cmds) do
                    if down[placed[c.at] or "main"] then
                        return nil, "unavailable"
                    end
                end
                local out = {}
                for i, c in ipairs(cmds) do
                    if c[1] == "GET" then
                        local cur = expired(c[2])
                        out[i] = cur and cur.v or false
                    elseif c[2] == leases.LEAVE then
                        live[c[6]] = nil
                        if next(live) == nil and layout and layout.v == c[7] then
                            layout = nil
                        end
                        out[i] = 1
                    elseif c[2] == leases.HEARTBEAT then
                        if layout and layout.until_ <= clock.t then
                            layout = nil
                        end
                        if layout and layout.v ~= c[8] then
                            out[i] = { err = "redis: LAYOUT " .. layout.v }
                        else
                            layout = { v = c[8], until_ = clock.t + c[9] / 1000 }
                            live[c[6]] = clock.t
                            local list = {}
                            for h, t in pairs(live) do
                                if t < clock.t - c[7] / 1000 then
                                    live[h] = nil
                                else
                                    list[#list + 1] = h
                                end
                            end
                            table.sort(list)
                            out[i] = list
                        end
                    elseif c[2] == leases.TAKE_OR_RENEW then
                        local key, holder, px = c[4], c[5], c[6]
                        local cur = expired(key)
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
                        assert(c[2] == leases.RELEASE)
                        local key, holder = c[4], c[5]
                        local cur = expired(key)
                        if cur and cur.v == holder then
                            store[key] = nil
                            out[i] = 1
                        else
                            out[i] = 0
                        end
                    end
                end
                return out
            end,
        }
    end

    local function load(node)
        local m = script.load("lib.leases", {
            ["mmo.cache"] = fake_cache(),
            ["mmo.time"] = { monotonic = function() return clock.t end },
            ["mmo.world"] = { settings = function()
                return { node = node, view_radius = 100, lease_ms = 3000 }
            end },
            ["mmo.crypto"] = { random = function() return node .. "-run" end },
        })
        leases = leases or m -- the scripts' text, for the fake Redis
        return m
    end

    local R = { { id = "r1" }, { id = "r2" } }
    local R4 = { { id = "r1" }, { id = "r2" }, { id = "r3" }, { id = "r4" } }

    local function held_by(node)
        local n = 0
        for _, v in pairs(store) do
            if v.v:match("^(.*)/") == node and v.until_ > clock.t then
                n = n + 1
            end
        end
        return n
    end

    before_each(function()
        store, live, clock, leases = {}, {}, { t = 100 }, nil
        down, placed = {}, {}
        instances, layout = { "main" }, nil
    end)

    it("takes free regions, renews its own, and says who holds what", function()
        local a = load("a")
        assert.same({ "r1", "r2" }, a.tick(R))
        assert.truthy(live["a/a-run"])
        assert.is_true(a.mine("r1"))
        assert.equal("a", a.node_of(a.holder("r2")))
        clock.t = clock.t + 2
        assert.same({}, a.tick(R)) -- renewed, not taken again
        clock.t = clock.t + 2.5    -- 4.5 s after taking: alive only because renewed
        assert.truthy(expired("region:owner:r1"))
    end)

    it("spreads the regions over the live nodes: a node that joins gets its share handed over",
       function()
        local a, b = load("a"), load("b")
        a.tick(R4)
        assert.equal(4, held_by("a"))
        assert.same({}, b.tick(R4)) -- its share is still a's
        clock.t = clock.t + 0.6
        local taken, released = a.tick(R4)
        assert.same({}, taken)
        assert.equal(2, #released)
        taken = b.tick(R4)
        assert.equal(2, #taken)
        assert.equal(2, held_by("a"))
        assert.equal(2, held_by("b"))
        -- and it stays so
        for _ = 1, 5 do
            clock.t = clock.t + 0.6
            a.tick(R4)
            b.tick(R4)
        end
        assert.equal(2, held_by("a"))
        assert.equal(2, held_by("b"))
    end)

    local function two_nodes()
        local a, b = load("a"), load("b")
        for _ = 1, 2 do
            a.tick(R4)
            b.tick(R4)
            clock.t = clock.t + 0.6
        end
        assert.equal(2, held_by("a"))
        assert.equal(2, held_by("b"))
        return a, b
    end

    it("takes a dead node's regions once its lease and its place in the list have lapsed",
       function()
        local a = two_nodes() -- b's last tick was 0.6 s ago
        clock.t = clock.t + 1.7
        a.tick(R4)
        assert.equal(2, held_by("a")) -- b's leases still run
        clock.t = clock.t + 0.8       -- past b's lease and its heartbeat (3 s)
        a.tick(R4)
        assert.equal(4, held_by("a"))
    end)

    it("gives its leases back and leaves the list when it stops", function()
        local a, b = two_nodes()
        b.release_all(R4)
        assert.is_nil(live["b/b-run"])
        assert.equal(0, held_by("b"))
        a.tick(R4)
        assert.equal(4, held_by("a"))
    end)

    it("takes a region whose node does not take it after a lease, and keeps it a while",
       function()
        local a, b = load("a"), load("b")
        a.tick(R4)
        b.tick(R4)
        clock.t = clock.t + 0.6
        a.tick(R4) -- hands b's share back; b never takes it (its heartbeat goes on)
        assert.equal(2, held_by("a"))
        local function step()
            clock.t = clock.t + 0.6
            live["b/b-run"] = clock.t
            a.tick(R4)
        end
        for _ = 1, 4 do
            step()
        end
        assert.equal(2, held_by("a"))
        step()
        step() -- free for more than a lease: taken
        assert.equal(4, held_by("a"))
        for _ = 1, 10 do
            step()
        end
        assert.equal(4, held_by("a")) -- kept, not handed back and forth
    end)

    it("assigns every region, the same share to each (give or take one), whatever the order",
       function()
        local a = load("a")
        local ids = { "r4", "r1", "r3", "r2", "r5" }
        local one = a.assign(ids, { "x/1", "y/1", "z/1" })
        local two = a.assign(ids, { "z/1", "x/1", "y/1" })
        assert.same(one, two)
        local count = {}
        for _, id in ipairs(ids) do
            assert.truthy(one[id])
            count[one[id]] = (count[one[id]] or 0) + 1
        end
        for _, h in ipairs({ "x/1", "y/1", "z/1" }) do
            assert.is_true(count[h] == 1 or count[h] == 2) -- 5 over 3: one or two each
        end
        -- fewer regions than nodes: one each at most
        local few = a.assign({ "r1", "r2" }, { "x/1", "y/1", "z/1" })
        assert.are_not.equal(few.r1, few.r2)
        -- a node started again (a new instance) is preferred for the same regions
        local again = a.assign(ids, { "x/2", "y/1", "z/1" })
        for _, id in ipairs(ids) do
            assert.equal(one[id]:match("^(.*)/"), again[id]:match("^(.*)/"))
        end
        assert.same({}, a.assign(ids, {}))
    end)

    it("forgets what it saw once that is older than the lease", function()
        local a = load("a")
        a.tick(R)
        clock.t = clock.t + 3.5
        assert.is_nil(a.holder("r1"))
        assert.is_false(a.mine("r1"))
    end)

    it("releases only its own leases", function()
        local a = load("a")
        a.tick(R)
        store["region:owner:r2"].v = "b/b-run" -- r2 went to b meanwhile
        a.release_all(R)
        assert.is_nil(expired("region:owner:r1"))
        assert.equal("b/b-run", store["region:owner:r2"].v)
    end)

    it("keeps the regions of the Redis instances that answer when one does not", function()
        placed["region:r2"], placed["region:r4"] = "s2", "s2"
        down.s2 = true
        local a = load("a")
        assert.same({ "r1", "r3" }, a.tick(R4)) -- r2 and r4: no answer, not taken
        assert.is_true(a.mine("r1"))
        assert.is_false(a.mine("r2"))
        clock.t = clock.t + 2
        assert.same({}, a.tick(R4)) -- r1 and r3 renewed all the same
        clock.t = clock.t + 2
        assert.equal(2, held_by("a")) -- alive 4 s after taking: renewed
        down.s2 = nil
        assert.same({ "r2", "r4" }, a.tick(R4))
        -- home down: the node cannot say it is alive, the tick fails as a whole
        down.main = true
        assert.is_nil(a.tick(R4))
    end)

    it("takes nothing while its Redis instances differ from the running nodes'", function()
        local a = load("a")
        assert.same({ "r1", "r2" }, a.tick(R))
        instances = { "s2", "main" } -- b has a second instance; a has not
        local b = load("b")
        local taken, err = b.tick(R)
        assert.is_nil(taken)
        assert.truthy(err:find("theirs: main; this node's: main,s2", 1, true), err)
        assert.is_nil(live["b/b-run"]) -- b did not join: a's assignment is unchanged
        assert.equal(2, held_by("a"))
        -- a stops, the last node: the layout goes with it, and b's list may start
        instances = { "main" }
        a.release_all(R)
        instances = { "main", "s2" }
        assert.same({ "r1", "r2" }, b.tick(R))
        -- a dead node's layout lapses after LAYOUT_LEASES leases
        instances = { "main" }
        local c = load("c")
        assert.is_nil(c.tick(R))
        live = {} -- b is killed: nobody renews the layout
        clock.t = clock.t + 3 * 3 + 0.1
        assert.same({ "r1", "r2" }, c.tick(R))
    end)

    it("tells node ids from holders, whatever the node id holds", function()
        local a = load("a")
        assert.equal("node/with/slashes", a.node_of("node/with/slashes/x1"))
        assert.is_nil(a.node_of(nil))
    end)
end)
