-- config.lua: the node's configuration. Every key is listed here with its default.
--
-- This file is data: it runs in an empty environment (no io, no os, no require) and returns
-- one table. Unknown sections or keys are refused at start, so a typo fails loudly.
-- Every key can be overridden from the environment as MMO_<SECTION>_<KEY>
-- (MMO_HTTP_PORT=8081, MMO_POSTGRES_POOL_SIZE=4), and a few have short forms:
-- MMO_PORT, MMO_PG (postgres.conninfo), MMO_REDIS ("host:port"), MMO_NODE_ID,
-- MMO_LOG_LEVEL, MMO_SCRIPTS (scripts.path), MMO_ROUTES (scripts.routes); lists have their
-- own: MMO_SHARD_<n>_* (shards), MMO_REDIS_INSTANCES (redis.instances).
-- `build/mmo config` prints the values in effect.
return {
    node = {
        id = "node-1",                  -- printed on every log line; unique per node
    },
    http = {
        host = "127.0.0.1",             -- address to listen on
        port = 8080,                    -- 0 picks a free port (tests)
        max_connections = 16384,        -- beyond it, new connections get 503 and are closed
        max_connections_per_ip = 1000,  -- HTTP and WebSocket from one address (a flood); past
                                        -- it 503 and closed; 0: no cap (load tests, one host)
        max_header_bytes = 16384,       -- request line + headers; more is 431
        max_body_bytes = 1048576,       -- 1 MiB; more is 413, refused before it is read
        slow_ms = 1000,                 -- a response later than this is logged (0: never)
        header_timeout_ms = 10000,      -- a request's headers must arrive within this (408)
        body_timeout_ms = 30000,        -- its body within this after the headers (408)
        idle_timeout_ms = 75000,        -- keep-alive connections idle longer are closed
        write_timeout_ms = 30000,       -- a client that stops reading its answers is cut off
        backlog = 4096,                 -- listen(2) backlog
        reuseport = 0,                  -- 1: SO_REUSEPORT, so that several nodes share the port
                                        -- (the kernel spreads connections; tools/dev up --nodes)
        admin_port = 0,                 -- a second listener, this node's alone (the same routes;
                                        -- reach one node of several sharing the port); 0: none
        rate_class = "api",             -- rate-limit class of routes that name none
        web_root = "web",               -- the console (/admin/) and client (/play/): files under
                                        -- <web_root>/admin and /play, read once at start
        rate_local_keys = 65536,        -- clients tracked in memory by the rate limiter
    },
    postgres = {
        -- libpq connection string or URI; tools/dev sets MMO_PG for its private cluster
        conninfo = "postgresql://postgres@127.0.0.1:5432/mmo",
        -- a streaming replica of that database, for the reads that may be a little stale
        -- (db.read: GET /api/players); "": none, every read goes to conninfo. A read goes to
        -- the replica while its pool has a connection up and it is fresh (below), else (and
        -- when the replica does not answer in time) to the primary. Its pool has pool_size
        -- connections and the same timeouts. docs/operations.md, "A streaming replica for reads".
        replica_conninfo = "",
        -- the bound on a replica's staleness, for every replica (this one and shards[n]'s):
        -- db.read uses a replica only while it has replayed everything its primary had
        -- committed this long ago (measured by LSN, about every second: a quarter of this,
        -- between 0.1 and 1 s); else the primary answers. Set it well above the usual
        -- replication lag, or reads flap between the two. 0: no bound (a replica cut off
        -- from its primary keeps answering with old data).
        replica_max_lag_ms = 5000,
        pool_size = 8,                  -- connections per node
        connect_timeout_ms = 3000,      -- per connection attempt
        query_timeout_ms = 5000,        -- default per query (also set as statement_timeout)
        reconnect_max_ms = 2000,        -- backoff cap between reconnect attempts
        slow_ms = 500,                  -- a query answered later than this is logged (0: never)
    },
    redis = {
        host = "127.0.0.1",             -- tools/dev sets MMO_REDIS for its private server
        port = 6379,
        connect_timeout_ms = 2000,
        timeout_ms = 2000,              -- default per command
        reconnect_max_ms = 2000,
        -- Redis Sentinel (docs/operations.md, "Redis Sentinel"): a list such as
        -- { "10.0.0.5:26379", "10.0.0.6:26379", "10.0.0.7:26379" } (env: MMO_REDIS_SENTINELS
        -- = "h:p,h:p"). When set, every (re)connect asks them, in turn, where the primary
        -- master_name is (each bounded by connect_timeout_ms), and host/port above are
        -- ignored; a server that is no primary (ROLE, READONLY, LOADING) is left at once.
        -- Empty: host and port are the one Redis.
        sentinels = {},
        master_name = "mmo",            -- the name the sentinels monitor the primary by
        -- Durable game events (docs/operations.md, "Redis Sentinel"): 202 only once this many
        -- replicas have the batch (WAIT, at most wait_timeout_ms; else 503 and the client
        -- sends it again). 0: the primary's answer is enough (a failover may lose the last
        -- milliseconds of acknowledged events).
        wait_replicas = 0,
        wait_timeout_ms = 1000,
        name = "main",                  -- this (the home) instance's name, [A-Za-z0-9_-]{1,32}
        -- More Redis instances (docs/operations.md, "Several Redis instances"): regions' keys,
        -- streams and channels are spread over home and these by a stable hash of each
        -- instance's name; sessions, rate limits and the cache stay on home. Renaming,
        -- adding or removing an instance moves things: let the pipeline drain, stop every
        -- node, then change it. Every node must have the same list. Each entry: name
        -- (required, unique, home's included), host ("127.0.0.1"), port (6379), or sentinels
        -- and master_name as above; the timeouts are the ones above. At most 15 (16 with home).
        -- Env: MMO_REDIS_INSTANCES="b=10.0.0.6:6379,c=10.0.0.7:6379" replaces the list (no
        -- sentinels that way); MMO_REDIS_NAME sets name.
        -- instances = { { name = "b", host = "10.0.0.6", port = 6379 },
        --               { name = "c", sentinels = { "10.0.0.7:26379", "10.0.0.8:26379" },
        --                 master_name = "mmo-c" } },
        instances = {},
    },
    scripts = {
        path = "scripts",               -- directories searched for modules, ';'-separated
        routes = "routes",              -- module holding the route table
        watch = 0,                      -- 1: reload by itself when a script changes (dev)
        load_budget_ms = 5000,          -- a load running longer (a loop at load time) fails
        memory_limit_mb = 0,            -- Lua memory of the handlers' VM: a handler that
                                        -- allocates past it fails (500), the node goes on.
                                        -- 0: no limit, and LuaJIT's own allocator, much faster
                                        -- (docs/scripting.md); e.g. 1024 to turn it on
    },
    control = {
        -- the Unix socket `mmo reload`, `mmo rollback` and `mmo scripts` talk to (mode 0600);
        -- {node} is the node id; "" turns it off
        socket = "var/run/mmo-{node}.sock",
    },
    log = {
        level = "info",                 -- debug | info | warn | error | off
    },
    shutdown = {
        drain_ms = 10000,               -- SIGTERM: time given to requests in flight
    },
    backup = {
        dir = "var/backups",            -- `mmo backup` writes backup-<UTC time>/ here unless
                                        -- given a directory (docs/operators.md, "Backups")
        timeout_s = 3600,               -- bound on each pg_dump/pg_restore, query and
                                        -- Redis call of `mmo backup` and `mmo restore`
    },
    ws = {
        max_connections = 20000,        -- WebSocket connections; beyond, the upgrade gets 503
        max_message_bytes = 65536,      -- a bigger message closes the connection (1009)
        max_queued_bytes = 1048576,     -- a client that lets this much output pile up is
                                        -- dropped (1008)
        idle_timeout_ms = 60000,        -- nothing received (pongs count) this long: closed
        ping_interval_ms = 20000,       -- a quiet client is pinged this often
        msg_rate = 30,                  -- messages per second per connection...
        msg_burst = 60,                 -- ...and at once; beyond: rate_limited, then 1008
        session_check_ms = 10000,       -- a logout or ban elsewhere ends the connection within
        flush_interval_ms = 10,         -- writes to clients at least this far apart: output
                                        -- within it after a write is gathered into the next
                                        -- one (0: write at the end of every loop turn)
    },
    metrics = {
        allow = "",                     -- who may GET /metrics: addresses and CIDRs, comma
                                        -- separated ("10.0.0.0/8, 127.0.0.1"); "": anyone
        enabled = 1,                    -- 0: no request metrics and no /metrics (404)
    },
    pipeline = {
        worker = 1,                     -- 1: this node consumes game events and runs jobs;
                                        -- 0: it only takes them in (a front node)
    },
    world = {
        view_radius = 100,              -- players at most this far apart see each other
        lease_ms = 10000,               -- a region's owner lease in Redis lives this long unless
                                        -- renewed (every lease_ms / 5); a dead owner's regions
                                        -- are taken over by another node after it
        grace_ms = 10000,               -- a player whose connection was lost (or whose node
                                        -- stopped) stays in the world this long, seen by all,
                                        -- and comes back on any node without a vanish; a
                                        -- player who closes the connection leaves at once.
                                        -- Also how long a silent node's players stay (>= 3 s)
    },
    mods = {                            -- docs/modding.md
        enabled = 1,                    -- 0: no mods are loaded
        dir = "",                       -- one mod per directory NAME/, with manifest.lua and
                                        -- init.lua; "": the first mods/ of the scripts.path
                                        -- directories
        memory_mb = 16,                 -- each mod's Lua memory
        instructions = 1000000,         -- Lua instructions a mod may run per handler call of a
                                        -- game event (what it sets off in other mods included)
        time_ms = 100,                  -- and time
        strikes = 3,                    -- a handler that raises or spends one of the above is a
                                        -- strike; the Nth since the mod was loaded disables it
                                        -- (1 to 1000; 1: the first failure does)
    },
    auth = {
        -- HS256 signing key of access tokens, 32 bytes or more. Set it from the environment
        -- (MMO_AUTH_JWT_SECRET) on every node; unset, a random key is made at each start (and
        -- every token dies with the process). tools/dev keeps one in var/jwt-secret.
        jwt_secret = "",
        jwt_kid = "k1",                 -- key id written in each token's header
        -- keys still accepted while their tokens live, "kid:secret;kid:secret": to rotate,
        -- move the current key here under its kid and set a new jwt_secret and jwt_kid
        jwt_old_keys = "",
        access_ttl_s = 900,             -- access token lifetime (15 minutes at most)
        refresh_ttl_s = 2592000,        -- a session (refresh token) unused this long ends
        session_cache_ms = 1000,        -- how stale this node's view of another node's
                                        -- logout, ban or role change may be (see security.md)
        token_cache_size = 4096,        -- verified tokens kept (bounded, direct-mapped)
        hash_threads = 2,               -- threads that hash passwords (yescrypt)
        hash_queue = 1024,              -- hashes waiting; beyond it, logins get 503
    },
    -- Rate-limit classes (GCRA in Redis): `limit` requests per `period_ms`, `burst` at once,
    -- counted per client IP (by = "ip") or per account (by = "account"; IP when the route is
    -- public). `batch` requests are reserved from Redis at a time (1 = exact). A route names
    -- its class with rate = "name"; others use http.rate_class. Override one number with
    -- MMO_RATELIMIT_<CLASS>_<FIELD>, e.g. MMO_RATELIMIT_AUTH_LIMIT=20.
    ratelimit = {
        auth = { limit = 10, period_ms = 60000, burst = 10, batch = 1, by = "ip" },
        api = { limit = 1200, period_ms = 60000, burst = 200, batch = 20, by = "account" },
    },
    -- Player data sharded over PostgreSQL servers (docs/operations.md, "Shards on separate
    -- servers"): the players whose home region is listed live in shard n's database, every
    -- other region in postgres.conninfo (shard 0). A shard's database may be on its own
    -- server; replica_conninfo (optional) is a streaming replica of it for db.read. A
    -- player's shard is fixed when it is created: add regions to a shard, never move them.
    -- From the environment: MMO_SHARD_<n>_CONNINFO, MMO_SHARD_<n>_REGIONS ("r3,r4"),
    -- MMO_SHARD_<n>_REPLICA_CONNINFO (tools/dev sets shard 1 on its second server).
    -- shards = {
    --     [1] = { conninfo = "postgresql://postgres@10.0.0.12:5432/mmo", regions = { "r3", "r4" },
    --             replica_conninfo = "postgresql://postgres@10.0.0.13:5432/mmo" },
    -- },
}
