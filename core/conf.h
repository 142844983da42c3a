/* conf.h -- the node's configuration: config.lua read once at start into a plain struct.
 *
 * conf_load() runs config.lua in an empty environment (it can only return a table), checks
 * every key against the table of known keys (an unknown key is an error, so typos fail
 * loudly), then applies environment overrides: MMO_<SECTION>_<KEY> for every key, plus the
 * short aliases MMO_PORT, MMO_PG, MMO_REDIS ("host:port"), MMO_NODE_ID, MMO_LOG_LEVEL,
 * MMO_SCRIPTS and MMO_ROUTES; MMO_SHARD_<n>_* for shards and MMO_REDIS_INSTANCES
 * ("name=host:port,...") for redis.instances. Every key is documented in config.lua itself. */
#ifndef CORE_CONF_H
#define CORE_CONF_H

#include <stddef.h>

/* A rate-limit class (section ratelimit of config.lua): GCRA, `limit` requests per
 * `period_ms` with `burst` at once; `batch` requests reserved from Redis per round trip;
 * counted per client IP (by_ip) or per account. */
struct conf_rate {
    char *name;
    int limit;
    int period_ms;
    int burst;
    int batch;
    int by_ip;
};

/* A PostgreSQL shard (section shards of config.lua): players whose home region is listed
 * live in this database. Shard 0 is postgres.conninfo and holds every other region. */
#define CONF_MAX_SHARDS 64
struct conf_shard {
    int id; /* 1..CONF_MAX_SHARDS-1 */
    char *conninfo;
    char *replica_conninfo; /* a streaming replica for db.read ("": none) */
    char *regions;          /* "r3,r4" */
};

/* A Redis instance besides the home one (redis.instances of config.lua). Regions' keys, streams
 * and channels are placed over home and these by a hash of the instance's name; everything
 * else stays on home. Timeouts are the home instance's (redis.*_ms). */
#define CONF_MAX_REDIS 16 /* instances, home included */
struct conf_redis_instance {
    char *name; /* unique, [A-Za-z0-9_-]{1,32}: what placement hashes (rename = move) */
    char *host;
    int port;
    char *sentinels;   /* "host:port,host:port" like redis_sentinels; "": none */
    char *master_name; /* required when sentinels is set */
};

struct conf {
    /* node */
    char *node_id;
    /* http */
    char *http_host;
    int http_port;
    int http_max_connections;
    int http_max_header_bytes;
    int http_max_body_bytes;
    int http_header_timeout_ms;
    int http_body_timeout_ms;
    int http_idle_timeout_ms;
    int http_write_timeout_ms;
    int http_backlog;
    int http_reuseport;  /* SO_REUSEPORT: several nodes on one port (tools/dev up --nodes) */
    int http_admin_port; /* a second listener of this node's own (0: none) */
    /* postgres */
    char *pg_conninfo;
    char *pg_replica_conninfo; /* a streaming replica of the main database for db.read ("") */
    int pg_replica_max_lag_ms; /* db.read leaves a replica that may lack older commits (0: never) */
    int pg_pool_size;
    int pg_connect_timeout_ms;
    int pg_query_timeout_ms;
    int pg_reconnect_max_ms;
    /* redis */
    char *redis_host;
    int redis_port;
    int redis_connect_timeout_ms;
    int redis_timeout_ms;
    int redis_reconnect_max_ms;
    char *redis_sentinels;     /* "host:port,host:port" (config.lua: a list); "": none */
    char *redis_master_name;   /* the name the sentinels monitor the primary by */
    int redis_wait_replicas;   /* durable writes wait for this many replicas (WAIT); 0: none */
    int redis_wait_timeout_ms; /* ... at most this long, then fail */
    char *redis_name;          /* the home instance's name, default "main" */
    struct conf_redis_instance *redis_instances; /* the others (home not in it), owned */
    int nredis_instances;
    /* scripts */
    char *scripts_path;         /* ';'-separated directories searched in order */
    char *scripts_routes;       /* module name of the route table */
    int scripts_watch;          /* 1: reload when a file under the scripts path changes (inotify) */
    int scripts_load_budget_ms; /* a load (start, reload) that runs longer is refused */
    int scripts_memory_limit_mb; /* the handlers' Lua VM: an allocation past it fails (0: none) */
    char *control_socket;        /* Unix socket of `mmo reload` ("{node}": the node id; "": none) */
    /* log */
    char *log_level;
    /* shutdown */
    int shutdown_drain_ms;
    /* backup (core/backup.h) */
    char *backup_dir;     /* where `mmo backup` writes when given no directory */
    int backup_timeout_s; /* bound on each external command, query and Redis call */
    /* auth */
    char *auth_jwt_secret; /* "" -> a random one per start (logged as a warning) */
    char *auth_jwt_kid;
    char *auth_jwt_old_keys; /* "kid:secret;kid:secret" */
    int auth_access_ttl_s;
    int auth_refresh_ttl_s;
    int auth_session_cache_ms;
    int auth_token_cache_size;
    int auth_hash_threads;
    int auth_hash_queue;
    /* rate limits */
    char *http_rate_class; /* class of routes that name none */
    char *http_web_root;   /* the console's and client's files: <root>/admin, <root>/play */
    int http_max_connections_per_ip; /* HTTP + WebSocket connections from one address; 0: any */
    struct conf_rate *rate;
    int nrate;
    int rate_local_keys;
    /* ws */
    int ws_max_connections;
    int ws_max_message_bytes;
    int ws_max_queued_bytes;
    int ws_idle_timeout_ms;
    int ws_ping_interval_ms;
    int ws_msg_rate;
    int ws_msg_burst;
    int ws_session_check_ms;
    int ws_flush_interval_ms;
    int world_view_radius;
    int world_lease_ms;
    int world_grace_ms;
    int pipeline_worker; /* 1: this node consumes the game event stream */
    char *metrics_allow; /* GET /metrics allow-list ("" : anyone) */
    int metrics_enabled; /* 0: no request metrics, no /metrics (a benchmark's baseline) */
    int http_slow_ms;    /* a response later than this is logged (0: never) */
    int pg_slow_ms;      /* a query answered later than this is logged (0: never) */
    /* mods (core/mods.h, docs/modding.md) */
    int mods_enabled;      /* 0: no mods are loaded */
    char *mods_dir;        /* scripts/mods: NAME/manifest.lua and NAME/init.lua each */
    int mods_memory_mb;    /* per mod */
    int mods_instructions; /* per budget (a handler call of a game event) */
    int mods_time_ms;      /* per budget */
    int mods_strikes;      /* handler failures that disable a mod: the Nth since it loaded */
    /* shards */
    struct conf_shard *shards;
    int nshards;
};

/* Shard of a region: the id of the shard listing it, else 0. */
int conf_shard_of_region(const struct conf *c, const char *region, size_t len);

/* Index of the rate class called name, or -1. */
int conf_rate_find(const struct conf *c, const char *name);

/* Fill c with defaults, then config file `path` (NULL: no file), then the environment.
 * Returns 0, or -1 with a one-line message in err (cap bytes). Call conf_free() either way. */
int conf_load(struct conf *c, const char *path, char *err, size_t cap);
/* As conf_load, with config.lua's text given (len bytes; name stands for its path in
 * messages). config.lua runs with no libraries, at most 64 MiB and 10 million instructions. */
int conf_load_text(struct conf *c, const char *name, const char *text, size_t len, char *err,
                   size_t cap);
void conf_free(struct conf *c);
/* Print every key with its current value, as `section.key = value` lines (for `mmo config`). */
void conf_dump(const struct conf *c, int fd);

#endif
