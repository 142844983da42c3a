/* conf.c -- read config.lua into struct conf.
 *
 * The one file of core/ besides the script host that includes lua.h: the configuration is a
 * Lua table, read once at start by a throw-away lua_State opened with no libraries at all,
 * so config.lua can compute values but cannot touch the file system or the environment.
 * Defaults, the file and the environment are applied in that order. */
#include "conf.h"
#include "luacap.h"
#include "mem.h"
#include "sentinel.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

enum { T_INT, T_STR };

struct key {
    const char *section;
    const char *name;
    int type;
    size_t offset;
    const char *def; /* default, as text */
    int min, max;    /* bounds for T_INT */
};

#define K_INT(sec, name, field, def, lo, hi)                                                       \
    {                                                                                              \
        sec, name, T_INT, offsetof(struct conf, field), def, lo, hi                                \
    }
#define K_STR(sec, name, field, def)                                                               \
    {                                                                                              \
        sec, name, T_STR, offsetof(struct conf, field), def, 0, 0                                  \
    }

/* Every key; config.lua documents each one. */
static const struct key KEYS[] = {
    K_STR("node", "id", node_id, "node-1"),
    K_STR("http", "host", http_host, "127.0.0.1"),
    K_INT("http", "port", http_port, "8080", 0, 65535),
    K_STR("http", "web_root", http_web_root, "web"),
    K_INT("http", "max_connections_per_ip", http_max_connections_per_ip, "1000", 0, 10000000),
    K_INT("http", "max_connections", http_max_connections, "16384", 1, 1000000),
    K_INT("http", "max_header_bytes", http_max_header_bytes, "16384", 1024, 1048576),
    K_INT("http", "max_body_bytes", http_max_body_bytes, "1048576", 0, 1073741824),
    K_INT("http", "header_timeout_ms", http_header_timeout_ms, "10000", 10, 3600000),
    K_INT("http", "body_timeout_ms", http_body_timeout_ms, "30000", 10, 3600000),
    K_INT("http", "idle_timeout_ms", http_idle_timeout_ms, "75000", 10, 86400000),
    K_INT("http", "write_timeout_ms", http_write_timeout_ms, "30000", 10, 3600000),
    K_INT("http", "backlog", http_backlog, "4096", 1, 65535),
    K_INT("http", "reuseport", http_reuseport, "0", 0, 1),
    K_INT("http", "admin_port", http_admin_port, "0", 0, 65535),
    K_STR("postgres", "conninfo", pg_conninfo, "postgresql://postgres@127.0.0.1:5432/mmo"),
    K_STR("postgres", "replica_conninfo", pg_replica_conninfo, ""),
    K_INT("postgres", "replica_max_lag_ms", pg_replica_max_lag_ms, "5000", 0, 3600000),
    K_INT("postgres", "pool_size", pg_pool_size, "8", 1, 256),
    K_INT("postgres", "connect_timeout_ms", pg_connect_timeout_ms, "3000", 10, 600000),
    K_INT("postgres", "query_timeout_ms", pg_query_timeout_ms, "5000", 10, 3600000),
    K_INT("postgres", "reconnect_max_ms", pg_reconnect_max_ms, "2000", 10, 600000),
    K_STR("redis", "host", redis_host, "127.0.0.1"),
    K_INT("redis", "port", redis_port, "6379", 1, 65535),
    K_INT("redis", "connect_timeout_ms", redis_connect_timeout_ms, "2000", 10, 600000),
    K_INT("redis", "timeout_ms", redis_timeout_ms, "2000", 10, 3600000),
    K_INT("redis", "reconnect_max_ms", redis_reconnect_max_ms, "2000", 10, 600000),
    K_STR("redis", "sentinels", redis_sentinels, ""),
    K_STR("redis", "master_name", redis_master_name, "mmo"),
    K_STR("redis", "name", redis_name, "main"),
    K_INT("redis", "wait_replicas", redis_wait_replicas, "0", 0, 16),
    K_INT("redis", "wait_timeout_ms", redis_wait_timeout_ms, "1000", 1, 60000),
    K_STR("scripts", "path", scripts_path, "scripts"),
    K_STR("scripts", "routes", scripts_routes, "routes"),
    K_INT("scripts", "watch", scripts_watch, "0", 0, 1),
    K_INT("scripts", "load_budget_ms", scripts_load_budget_ms, "5000", 100, 600000),
    K_INT("scripts", "memory_limit_mb", scripts_memory_limit_mb, "0", 0, 1048576),
    K_STR("control", "socket", control_socket, "var/run/mmo-{node}.sock"),
    K_STR("log", "level", log_level, "info"),
    K_INT("shutdown", "drain_ms", shutdown_drain_ms, "10000", 0, 600000),
    K_STR("backup", "dir", backup_dir, "var/backups"),
    K_INT("backup", "timeout_s", backup_timeout_s, "3600", 1, 604800),
    K_STR("auth", "jwt_secret", auth_jwt_secret, ""),
    K_STR("auth", "jwt_kid", auth_jwt_kid, "k1"),
    K_STR("auth", "jwt_old_keys", auth_jwt_old_keys, ""),
    K_INT("auth", "access_ttl_s", auth_access_ttl_s, "900", 30, 900),
    K_INT("auth", "refresh_ttl_s", auth_refresh_ttl_s, "2592000", 300, 31536000),
    K_INT("auth", "session_cache_ms", auth_session_cache_ms, "1000", 0, 60000),
    K_INT("auth", "token_cache_size", auth_token_cache_size, "4096", 16, 1048576),
    K_INT("auth", "hash_threads", auth_hash_threads, "2", 1, 64),
    K_INT("auth", "hash_queue", auth_hash_queue, "1024", 1, 1000000),
    K_STR("http", "rate_class", http_rate_class, "api"),
    K_INT("ws", "max_connections", ws_max_connections, "20000", 1, 1000000),
    K_INT("ws", "max_message_bytes", ws_max_message_bytes, "65536", 128, 16777216),
    K_INT("ws", "max_queued_bytes", ws_max_queued_bytes, "1048576", 4096, 1073741824),
    K_INT("ws", "idle_timeout_ms", ws_idle_timeout_ms, "60000", 100, 86400000),
    K_INT("ws", "ping_interval_ms", ws_ping_interval_ms, "20000", 100, 86400000),
    K_INT("ws", "msg_rate", ws_msg_rate, "30", 1, 100000),
    K_INT("ws", "msg_burst", ws_msg_burst, "60", 1, 1000000),
    K_INT("ws", "session_check_ms", ws_session_check_ms, "10000", 100, 3600000),
    K_INT("ws", "flush_interval_ms", ws_flush_interval_ms, "10", 0, 1000),
    K_INT("world", "view_radius", world_view_radius, "100", 1, 100000),
    K_INT("world", "lease_ms", world_lease_ms, "10000", 3000, 600000),
    K_INT("world", "grace_ms", world_grace_ms, "10000", 0, 600000),
    K_INT("pipeline", "worker", pipeline_worker, "1", 0, 1),
    K_STR("metrics", "allow", metrics_allow, ""),
    K_INT("metrics", "enabled", metrics_enabled, "1", 0, 1),
    K_INT("http", "slow_ms", http_slow_ms, "1000", 0, 600000),
    K_INT("postgres", "slow_ms", pg_slow_ms, "500", 0, 600000),
    K_INT("http", "rate_local_keys", rate_local_keys, "65536", 64, 16777216),
    K_INT("mods", "enabled", mods_enabled, "1", 0, 1),
    K_STR("mods", "dir", mods_dir, ""),
    K_INT("mods", "memory_mb", mods_memory_mb, "16", 1, 4096),
    K_INT("mods", "instructions", mods_instructions, "1000000", 1000, 2000000000),
    K_INT("mods", "time_ms", mods_time_ms, "100", 1, 60000),
    K_INT("mods", "strikes", mods_strikes, "3", 1, 1000),
};

/* Rate classes built in; config.lua's section ratelimit changes or adds to them. */
static const struct {
    const char *name;
    int limit, period_ms, burst, batch, by_ip;
} RATE_DEFAULTS[] = {
    {"auth", 10, 60000, 10, 1, 1},    /* login, register, refresh: per IP, exact */
    {"api", 1200, 60000, 200, 20, 0}, /* everything else: per account (IP when public) */
};

static const char *RATE_FIELDS[] = {"limit", "period_ms", "burst", "batch", "by"};

int conf_rate_find(const struct conf *c, const char *name)
{
    for (int i = 0; i < c->nrate; i++)
        if (strcmp(c->rate[i].name, name) == 0)
            return i;
    return -1;
}

static struct conf_rate *rate_get(struct conf *c, const char *name)
{
    int i = conf_rate_find(c, name);
    if (i >= 0)
        return &c->rate[i];
    c->rate = xrealloc(c->rate, sizeof *c->rate * (size_t) (c->nrate + 1));
    struct conf_rate *r = &c->rate[c->nrate++];
    memset(r, 0, sizeof *r);
    r->name = xstrdup(name);
    r->limit = 60;
    r->period_ms = 60000;
    r->burst = 10;
    r->batch = 1;
    return r;
}

/* Set field of class r from text. */
static int rate_set(struct conf_rate *r, const char *field, const char *text, const char *origin,
                    char *err, size_t cap)
{
    if (strcmp(field, "by") == 0) {
        if (strcmp(text, "ip") != 0 && strcmp(text, "account") != 0) {
            snprintf(err, cap, "%s: ratelimit.%s.by must be \"ip\" or \"account\"", origin,
                     r->name);
            return -1;
        }
        r->by_ip = strcmp(text, "ip") == 0;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 1 || v > 100000000) {
        snprintf(err, cap, "%s: ratelimit.%s.%s must be a positive integer, got \"%s\"", origin,
                 r->name, field, text);
        return -1;
    }
    if (strcmp(field, "limit") == 0)
        r->limit = (int) v;
    else if (strcmp(field, "period_ms") == 0)
        r->period_ms = (int) v;
    else if (strcmp(field, "burst") == 0)
        r->burst = (int) v;
    else if (strcmp(field, "batch") == 0)
        r->batch = (int) v;
    else {
        snprintf(err, cap, "%s: unknown key ratelimit.%s.%s", origin, r->name, field);
        return -1;
    }
    return 0;
}

static int valid_class_name(const char *s)
{
    if (*s == '\0' || strlen(s) > 32)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

static struct conf_shard *shard_get(struct conf *c, int id)
{
    for (int i = 0; i < c->nshards; i++)
        if (c->shards[i].id == id)
            return &c->shards[i];
    c->shards = xrealloc(c->shards, sizeof *c->shards * (size_t) (c->nshards + 1));
    struct conf_shard *sh = &c->shards[c->nshards++];
    sh->id = id;
    sh->conninfo = xstrdup("");
    sh->replica_conninfo = xstrdup("");
    sh->regions = xstrdup("");
    return sh;
}

int conf_shard_of_region(const struct conf *c, const char *region, size_t len)
{
    for (int i = 0; i < c->nshards; i++) {
        const char *p = c->shards[i].regions;
        while (*p) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t) (end - p) : strlen(p);
            if (n == len && memcmp(p, region, len) == 0)
                return c->shards[i].id;
            p += n;
            if (*p == ',')
                p++;
        }
    }
    return 0;
}

/* Every shard has a conninfo, and no region is in two shards. */
static int check_shards(const struct conf *c, char *err, size_t cap)
{
    for (int i = 0; i < c->nshards; i++) {
        const struct conf_shard *sh = &c->shards[i];
        if (sh->conninfo[0] == '\0') {
            snprintf(err, cap, "shards[%d]: conninfo is missing", sh->id);
            return -1;
        }
        const char *p = sh->regions;
        while (*p) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t) (end - p) : strlen(p);
            int owner = conf_shard_of_region(c, p, n);
            if (n == 0 || owner != sh->id) {
                snprintf(err, cap, "shards: region \"%.*s\" is listed twice (or empty)", (int) n,
                         p);
                return -1;
            }
            p += n;
            if (*p == ',')
                p++;
        }
    }
    return 0;
}

/* [.., t(shards section)] -> same.
 * shards = { [1] = { conninfo = "...", regions = {...}, replica_conninfo = "..." (optional) } } */
static int read_shards(lua_State *L, struct conf *c, const char *path, char *err, size_t cap)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_Number idn = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : -1;
        if (idn < 1 || idn >= CONF_MAX_SHARDS || idn != (int) idn || !lua_istable(L, -1)) {
            snprintf(err, cap,
                     "%s: shards entries must be [1..%d] = { conninfo = ..., "
                     "regions = { ... } }",
                     path, CONF_MAX_SHARDS - 1);
            return -1;
        }
        struct conf_shard *sh = shard_get(c, (int) idn);
        lua_getfield(L, -1, "conninfo");
        if (lua_type(L, -1) != LUA_TSTRING) {
            snprintf(err, cap, "%s: shards[%d].conninfo must be a string", path, sh->id);
            return -1;
        }
        free(sh->conninfo);
        sh->conninfo = xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_getfield(L, -1, "replica_conninfo");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) {
            snprintf(err, cap, "%s: shards[%d].replica_conninfo must be a string", path, sh->id);
            return -1;
        }
        if (lua_type(L, -1) == LUA_TSTRING) {
            free(sh->replica_conninfo);
            sh->replica_conninfo = xstrdup(lua_tostring(L, -1));
        }
        lua_pop(L, 1);
        lua_pushnil(L); /* nothing but these three keys */
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (k == NULL || (strcmp(k, "conninfo") != 0 && strcmp(k, "regions") != 0 &&
                              strcmp(k, "replica_conninfo") != 0)) {
                snprintf(err, cap,
                         "%s: shards[%d]: unknown key (conninfo, regions and "
                         "replica_conninfo are known)",
                         path, sh->id);
                return -1;
            }
            lua_pop(L, 1);
        }
        lua_getfield(L, -1, "regions");
        if (!lua_istable(L, -1)) {
            snprintf(err, cap, "%s: shards[%d].regions must be a list of region ids", path, sh->id);
            return -1;
        }
        char buf[1024];
        size_t o = 0;
        for (int i = 1; i <= (int) lua_objlen(L, -1); i++) {
            lua_rawgeti(L, -1, i);
            const char *r = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            if (r == NULL || strchr(r, ',') || *r == '\0' || o + strlen(r) + 2 > sizeof buf) {
                snprintf(err, cap, "%s: shards[%d].regions: bad region id", path, sh->id);
                return -1;
            }
            o += (size_t) snprintf(buf + o, sizeof buf - o, "%s%s", o ? "," : "", r);
            lua_pop(L, 1);
        }
        buf[o] = '\0';
        free(sh->regions);
        sh->regions = xstrdup(buf);
        lua_pop(L, 2);
    }
    return 0;
}

/* [.., t(ratelimit section)] -> same */
static int read_rates(lua_State *L, struct conf *c, const char *path, char *err, size_t cap)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1) ||
            !valid_class_name(lua_tostring(L, -2))) {
            snprintf(err, cap,
                     "%s: ratelimit entries must be name = { limit = ..., ... } with "
                     "names of [a-z0-9_]",
                     path);
            return -1;
        }
        struct conf_rate *r = rate_get(c, lua_tostring(L, -2));
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING ||
                (lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TSTRING)) {
                snprintf(err, cap, "%s: ratelimit.%s: bad entry", path, r->name);
                return -1;
            }
            char buf[64];
            const char *text;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                snprintf(buf, sizeof buf, "%.17g", lua_tonumber(L, -1));
                text = buf;
            } else {
                text = lua_tostring(L, -1);
            }
            if (rate_set(r, lua_tostring(L, -2), text, path, err, cap) < 0)
                return -1;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static int set_value(struct conf *c, const struct key *k, const char *text, const char *origin,
                     char *err, size_t cap)
{
    char *field = (char *) c + k->offset;
    if (k->type == T_STR) {
        char **s = (char **) (void *) field;
        free(*s);
        *s = xstrdup(text);
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < k->min || v > k->max) {
        snprintf(err, cap, "%s: %s.%s must be an integer in [%d, %d], got \"%s\"", origin,
                 k->section, k->name, k->min, k->max, text);
        return -1;
    }
    *(int *) (void *) field = (int) v;
    return 0;
}

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].name, name) == 0)
            return &KEYS[i];
    return NULL;
}

static int known_section(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].section, section) == 0)
            return 1;
    return 0;
}

/* [.., t(list of strings)] -> same: the strings joined with ',' into buf; -1 when an entry is
 * not a string, holds a ',' or does not fit. */
static int join_list(lua_State *L, char *buf, size_t cap)
{
    size_t o = 0;
    int n = (int) lua_objlen(L, -1);
    buf[0] = '\0';
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        size_t len;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (s == NULL || memchr(s, ',', len) || strlen(s) != len || o + len + 2 > cap) {
            lua_pop(L, 1);
            return -1;
        }
        o += (size_t) snprintf(buf + o, cap - o, "%s%s", o ? "," : "", s);
        lua_pop(L, 1);
    }
    return 0;
}

/* ---- redis.instances ------------------------------------------------------------------------ */

/* [A-Za-z0-9_-]{1,32}, len bytes (a Lua string may hold a NUL) */
static int valid_instance_name(const char *s, size_t len)
{
    if (len < 1 || len > 32)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static void redis_instances_clear(struct conf *c)
{
    for (int i = 0; i < c->nredis_instances; i++) {
        struct conf_redis_instance *ri = &c->redis_instances[i];
        free(ri->name);
        free(ri->host);
        free(ri->sentinels);
        free(ri->master_name);
    }
    free(c->redis_instances);
    c->redis_instances = NULL;
    c->nredis_instances = 0;
}

/* A new instance at the end of the list, with the defaults; NULL when the list is full. */
static struct conf_redis_instance *redis_instance_add(struct conf *c)
{
    if (c->nredis_instances >= CONF_MAX_REDIS - 1)
        return NULL;
    if (c->redis_instances == NULL)
        c->redis_instances = xcalloc(CONF_MAX_REDIS - 1, sizeof *c->redis_instances);
    struct conf_redis_instance *ri = &c->redis_instances[c->nredis_instances++];
    ri->name = xstrdup("");
    ri->host = xstrdup("127.0.0.1");
    ri->port = 6379;
    ri->sentinels = xstrdup("");
    ri->master_name = xstrdup("");
    return ri;
}

/* [.., t(instance)] -> same: field `key` of instance i (1-based) into *out when it is a string
 * (a copy); absent leaves *out as it is. -1 with a message when it is another type. */
static int instance_string(lua_State *L, const char *key, int i, char **out, const char *path,
                           char *err, size_t cap)
{
    lua_getfield(L, -1, key);
    int t = lua_type(L, -1);
    if (t != LUA_TNIL && t != LUA_TSTRING) {
        snprintf(err, cap, "%s: redis.instances[%d].%s must be a string", path, i, key);
        return -1;
    }
    if (t == LUA_TSTRING) {
        size_t len;
        const char *v = lua_tolstring(L, -1, &len);
        if (strlen(v) != len) {
            snprintf(err, cap, "%s: redis.instances[%d].%s holds a NUL byte", path, i, key);
            return -1;
        }
        free(*out);
        *out = xstrdup(v);
    }
    lua_pop(L, 1);
    return 0;
}

/* [.., t(instance)] -> same: instance i (1-based) of the file into ri */
static int read_redis_instance(lua_State *L, struct conf_redis_instance *ri, int i,
                               const char *path, char *err, size_t cap)
{
    lua_pushnil(L); /* nothing but these five keys */
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (k == NULL ||
            (strcmp(k, "name") != 0 && strcmp(k, "host") != 0 && strcmp(k, "port") != 0 &&
             strcmp(k, "sentinels") != 0 && strcmp(k, "master_name") != 0)) {
            snprintf(err, cap,
                     "%s: redis.instances[%d]: unknown key %s (name, host, port, sentinels and "
                     "master_name are known)",
                     path, i, k ? k : "(not a name)");
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "name");
    if (lua_isnil(L, -1)) {
        snprintf(err, cap, "%s: redis.instances[%d].name is missing", path, i);
        return -1;
    }
    lua_pop(L, 1);
    if (instance_string(L, "name", i, &ri->name, path, err, cap) < 0 ||
        instance_string(L, "host", i, &ri->host, path, err, cap) < 0 ||
        instance_string(L, "master_name", i, &ri->master_name, path, err, cap) < 0)
        return -1;
    if (!valid_instance_name(ri->name, strlen(ri->name))) {
        snprintf(err, cap, "%s: redis.instances[%d].name \"%s\" must be 1 to 32 of [A-Za-z0-9_-]",
                 path, i, ri->name);
        return -1;
    }
    if (ri->host[0] == '\0') {
        snprintf(err, cap, "%s: redis.instances[%d].host is empty", path, i);
        return -1;
    }
    lua_getfield(L, -1, "port");
    if (!lua_isnil(L, -1)) {
        lua_Number n = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (!(n >= 1 && n <= 65535) || n != (int) n) {
            snprintf(err, cap, "%s: redis.instances[%d].port must be an integer in [1, 65535]",
                     path, i);
            return -1;
        }
        ri->port = (int) n;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "sentinels"); /* a list of "host:port", or one "h:p,h:p" string */
    char buf[SENTINEL_MAX * (SENTINEL_HOST_MAX + 8)];
    const char *text = NULL;
    if (lua_istable(L, -1)) {
        if (join_list(L, buf, sizeof buf) == 0)
            text = buf;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        text = lua_tolstring(L, -1, &len);
        if (strlen(text) != len)
            text = NULL;
    } else if (lua_isnil(L, -1)) {
        text = "";
    }
    if (text == NULL) {
        snprintf(err, cap,
                 "%s: redis.instances[%d].sentinels must be a list of \"host:port\" strings", path,
                 i);
        return -1;
    }
    free(ri->sentinels);
    ri->sentinels = xstrdup(text);
    lua_pop(L, 1);
    struct sentinel_addr sa[SENTINEL_MAX];
    char why[256];
    if (sentinel_parse_addrs(ri->sentinels, sa, SENTINEL_MAX, why, sizeof why) < 0) {
        /* its message starts with "redis.sentinels: " */
        const char *m = strncmp(why, "redis.sentinels: ", 17) == 0 ? why + 17 : why;
        snprintf(err, cap, "%s: redis.instances[%d].sentinels: %s", path, i, m);
        return -1;
    }
    if (ri->sentinels[0] && ri->master_name[0] == '\0') {
        snprintf(err, cap, "%s: redis.instances[%d].master_name must be set when its sentinels are",
                 path, i);
        return -1;
    }
    return 0;
}

/* [.., t(redis.instances)] -> same.
 * instances = { { name = "b", host = "...", port = 6379 }, { name = "c", sentinels = {...},
 *               master_name = "..." } } */
static int read_redis_instances(lua_State *L, struct conf *c, const char *path, char *err,
                                size_t cap)
{
    if (!lua_istable(L, -1)) {
        snprintf(err, cap,
                 "%s: redis.instances must be a list of { name = ..., host = ..., port = ... }",
                 path);
        return -1;
    }
    redis_instances_clear(c);
    int n = (int) lua_objlen(L, -1);
    lua_pushnil(L); /* a list: keys 1..n and no others */
    while (lua_next(L, -2)) {
        lua_Number k = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : 0;
        if (!(k >= 1 && k <= n) || k != (int) k) {
            snprintf(err, cap,
                     "%s: redis.instances must be a list [1..n] of { name = ..., ... } tables",
                     path);
            return -1;
        }
        lua_pop(L, 1);
    }
    if (n > CONF_MAX_REDIS - 1) {
        snprintf(err, cap, "%s: redis.instances: %d instances, at most %d (%d with home)", path, n,
                 CONF_MAX_REDIS - 1, CONF_MAX_REDIS);
        return -1;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1)) {
            snprintf(err, cap, "%s: redis.instances[%d] must be a table { name = ..., ... }", path,
                     i);
            return -1;
        }
        if (read_redis_instance(L, redis_instance_add(c), i, path, err, cap) < 0)
            return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* MMO_REDIS_INSTANCES="b=10.0.0.6:6379,c=10.0.0.7:6379" (spaces around entries allowed; a v6
 * host as [addr]:port) replaces redis.instances; sentinels only come from the file. */
static int env_redis_instances(struct conf *c, const char *v, char *err, size_t cap)
{
    static const char *const VAR = "MMO_REDIS_INSTANCES";
    redis_instances_clear(c);
    const char *p = v;
    for (int i = 1;; i++) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        const char *eq = memchr(p, '=', len);
        const char *colon = NULL;
        for (size_t j = 0; j < len; j++)
            if (p[j] == ':')
                colon = p + j; /* the last one */
        char *endp = NULL;
        long port = 0;
        if (colon && isdigit((unsigned char) colon[1])) {
            errno = 0;
            port = strtol(colon + 1, &endp, 10);
            if (errno || endp != p + len)
                port = 0;
        }
        if (eq == NULL || colon == NULL || colon < eq || colon == eq + 1 || port < 1 ||
            port > 65535) {
            snprintf(err, cap, "%s: entry %d \"%.*s\" is not name=host:port (port 1..65535)", VAR,
                     i, (int) len, p);
            return -1;
        }
        if (!valid_instance_name(p, (size_t) (eq - p))) {
            snprintf(err, cap, "%s: entry %d: name \"%.*s\" must be 1 to 32 of [A-Za-z0-9_-]", VAR,
                     i, (int) (eq - p), p);
            return -1;
        }
        struct conf_redis_instance *ri = redis_instance_add(c);
        if (ri == NULL) {
            snprintf(err, cap, "%s: more than %d instances (%d with home)", VAR, CONF_MAX_REDIS - 1,
                     CONF_MAX_REDIS);
            return -1;
        }
        const char *host = eq + 1;
        size_t hlen = (size_t) (colon - host);
        if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']') { /* [v6 address] */
            host++;
            hlen -= 2;
        }
        free(ri->name);
        ri->name = xstrndup(p, (size_t) (eq - p));
        free(ri->host);
        ri->host = xstrndup(host, hlen);
        ri->port = (int) port;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

/* The names: valid, and no two alike (home's included). origin names where the list came
 * from (the file, or MMO_REDIS_INSTANCES). */
static int check_redis_instances(const struct conf *c, const char *origin, char *err, size_t cap)
{
    if (!valid_instance_name(c->redis_name, strlen(c->redis_name))) {
        const char *e = getenv("MMO_REDIS_NAME");
        snprintf(err, cap, "%s: redis.name \"%s\" must be 1 to 32 of [A-Za-z0-9_-]",
                 e && *e ? "MMO_REDIS_NAME" : origin, c->redis_name);
        return -1;
    }
    for (int i = 0; i < c->nredis_instances; i++) {
        const char *name = c->redis_instances[i].name;
        if (strcmp(name, c->redis_name) == 0) {
            snprintf(err, cap,
                     "%s: redis.instances[%d].name \"%s\" is the home instance's (redis.name)",
                     origin, i + 1, name);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(name, c->redis_instances[j].name) == 0) {
                snprintf(err, cap,
                         "%s: redis.instances[%d].name \"%s\" is also redis.instances[%d]'s",
                         origin, i + 1, name, j + 1);
                return -1;
            }
    }
    return 0;
}

/* [.., t(section)] -> [.., t(section)] */
static int read_section(lua_State *L, struct conf *c, const char *section, const char *path,
                        char *err, size_t cap)
{
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(err, cap, "%s: keys of section %s must be names", path, section);
            return -1;
        }
        const char *name = lua_tostring(L, -2);
        if (strcmp(section, "redis") == 0 && strcmp(name, "instances") == 0) {
            if (read_redis_instances(L, c, path, err, cap) < 0)
                return -1;
            lua_pop(L, 1);
            continue;
        }
        const struct key *k = find_key(section, name);
        if (k == NULL) {
            snprintf(err, cap, "%s: unknown key %s.%s", path, section, name);
            return -1;
        }
        char buf[SENTINEL_MAX * (SENTINEL_HOST_MAX + 8)];
        const char *text;
        if (k->type == T_INT) {
            if (lua_type(L, -1) != LUA_TNUMBER) {
                snprintf(err, cap, "%s: %s.%s must be a number", path, section, name);
                return -1;
            }
            lua_Number n = lua_tonumber(L, -1);
            /* the range first: converting a double beyond long long is undefined (and NaN
             * fails both comparisons) */
            if (!(n > -1e18 && n < 1e18) || n != (lua_Number) (long long) n) {
                snprintf(err, cap, "%s: %s.%s must be an integer", path, section, name);
                return -1;
            }
            snprintf(buf, sizeof buf, "%lld", (long long) n);
            text = buf;
        } else if (k->offset == offsetof(struct conf, redis_sentinels) && lua_istable(L, -1)) {
            if (join_list(L, buf, sizeof buf) < 0) {
                snprintf(err, cap, "%s: redis.sentinels must be a list of \"host:port\" strings",
                         path);
                return -1;
            }
            text = buf;
        } else {
            if (lua_type(L, -1) != LUA_TSTRING) {
                snprintf(err, cap, "%s: %s.%s must be a string", path, section, name);
                return -1;
            }
            text = lua_tostring(L, -1);
        }
        if (set_value(c, k, text, path, err, cap) < 0)
            return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* config.lua is data: these bound what running it may take */
#define CONF_MAX_FILE     (1u << 20)  /* bytes of source */
#define CONF_MEMORY       (64u << 20) /* its VM's memory cap */
#define CONF_INSTRUCTIONS 10000000    /* its instruction budget */

/* Run config.lua's text (path names it in messages) and read the table it returns into c. */
static int read_text(struct conf *c, const char *path, const char *text, size_t len, char *err,
                     size_t cap)
{
    struct luacap vm;
    char chunkname[600];
    int rc = -1;
    if (len > 0 && text[0] == LUA_SIGNATURE[0]) {
        snprintf(err, cap, "%s: bytecode is not allowed, only Lua source", path);
        return -1;
    }
    lua_State *L = luacap_open(&vm, CONF_MEMORY, CONF_INSTRUCTIONS, "config.lua is data");
    if (L == NULL) {
        snprintf(err, cap, "%s: cannot create a Lua state", path);
        return -1;
    }
    snprintf(chunkname, sizeof chunkname, "@%s", path);
    if (luaL_loadbuffer(L, text, len, chunkname) != 0) {
        snprintf(err, cap, "%s", lua_tostring(L, -1));
        goto done;
    }
    /* an empty environment: no globals at all */
    lua_newtable(L);
    lua_setfenv(L, -2);
    if (lua_pcall(L, 0, 1, 0) != 0) {
        if (vm.refused)
            snprintf(err, cap, "%s: memory cap exceeded (%u MiB): config.lua is data", path,
                     CONF_MEMORY >> 20);
        else if (vm.steps > vm.budget)
            snprintf(err, cap, "%s: %s", path, lua_tostring(L, -1));
        else
            snprintf(err, cap, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error)");
        goto done;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, cap, "%s: must return a table", path);
        goto done;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1)) {
            snprintf(err, cap, "%s: top-level entries must be sections (name = { ... })", path);
            goto done;
        }
        const char *section = lua_tostring(L, -2);
        if (strcmp(section, "ratelimit") == 0 || strcmp(section, "shards") == 0) {
            if ((section[0] == 'r' ? read_rates(L, c, path, err, cap)
                                   : read_shards(L, c, path, err, cap)) < 0)
                goto done;
            lua_pop(L, 1);
            continue;
        }
        if (!known_section(section)) {
            snprintf(err, cap, "%s: unknown section %s", path, section);
            goto done;
        }
        if (read_section(L, c, section, path, err, cap) < 0)
            goto done;
        lua_pop(L, 1);
    }
    rc = 0;
done:
    lua_close(L);
    return rc;
}

static int apply_env(struct conf *c, char *err, size_t cap)
{
    char name[96];
    for (size_t i = 0; i < NKEYS; i++) {
        snprintf(name, sizeof name, "MMO_%s_%s", KEYS[i].section, KEYS[i].name);
        for (char *p = name; *p; p++)
            *p = (char) toupper((unsigned char) *p);
        const char *v = getenv(name);
        if (v && *v && set_value(c, &KEYS[i], v, name, err, cap) < 0)
            return -1;
    }
    static const struct {
        const char *env, *section, *name;
    } ALIASES[] = {
        {"MMO_NODE_ID", "node", "id"},       {"MMO_HOST", "http", "host"},
        {"MMO_PORT", "http", "port"},        {"MMO_PG", "postgres", "conninfo"},
        {"MMO_LOG_LEVEL", "log", "level"},   {"MMO_SCRIPTS", "scripts", "path"},
        {"MMO_ROUTES", "scripts", "routes"},
    };
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++) {
        const char *v = getenv(ALIASES[i].env);
        if (v && *v &&
            set_value(c, find_key(ALIASES[i].section, ALIASES[i].name), v, ALIASES[i].env, err,
                      cap) < 0)
            return -1;
    }
    /* MMO_RATELIMIT_<CLASS>_<FIELD> for every class */
    for (int i = 0; i < c->nrate; i++) {
        for (size_t f = 0; f < sizeof RATE_FIELDS / sizeof RATE_FIELDS[0]; f++) {
            snprintf(name, sizeof name, "MMO_RATELIMIT_%s_%s", c->rate[i].name, RATE_FIELDS[f]);
            for (char *p = name; *p; p++)
                *p = (char) toupper((unsigned char) *p);
            const char *v = getenv(name);
            if (v && *v && rate_set(&c->rate[i], RATE_FIELDS[f], v, name, err, cap) < 0)
                return -1;
        }
    }
    /* MMO_SHARD_<n>_CONNINFO, MMO_SHARD_<n>_REGIONS ("r3,r4"): may add a shard;
     * MMO_SHARD_<n>_REPLICA_CONNINFO: its replica */
    for (int id = 1; id < CONF_MAX_SHARDS; id++) {
        char cn[48], rn[48], pn[56];
        snprintf(cn, sizeof cn, "MMO_SHARD_%d_CONNINFO", id);
        snprintf(rn, sizeof rn, "MMO_SHARD_%d_REGIONS", id);
        snprintf(pn, sizeof pn, "MMO_SHARD_%d_REPLICA_CONNINFO", id);
        const char *cv = getenv(cn), *rv = getenv(rn), *pv = getenv(pn);
        if ((cv && *cv) || (rv && *rv) || (pv && *pv)) {
            struct conf_shard *sh = shard_get(c, id);
            if (cv && *cv) {
                free(sh->conninfo);
                sh->conninfo = xstrdup(cv);
            }
            if (rv && *rv) {
                free(sh->regions);
                sh->regions = xstrdup(rv);
            }
            if (pv && *pv) {
                free(sh->replica_conninfo);
                sh->replica_conninfo = xstrdup(pv);
            }
        }
    }
    const char *r = getenv("MMO_REDIS"); /* host:port */
    if (r && *r) {
        const char *colon = strrchr(r, ':');
        if (colon == NULL || colon == r) {
            snprintf(err, cap, "MMO_REDIS must be host:port, got \"%s\"", r);
            return -1;
        }
        char *host = xstrndup(r, (size_t) (colon - r));
        int rc = set_value(c, find_key("redis", "host"), host, "MMO_REDIS", err, cap);
        free(host);
        if (rc < 0 || set_value(c, find_key("redis", "port"), colon + 1, "MMO_REDIS", err, cap) < 0)
            return -1;
    }
    const char *ri = getenv("MMO_REDIS_INSTANCES"); /* name=host:port,... */
    if (ri && *ri && env_redis_instances(c, ri, err, cap) < 0)
        return -1;
    return 0;
}

/* conf_load and conf_load_text: the file at path, or text when it is not NULL */
static int load(struct conf *c, const char *path, const char *text, size_t len, char *err,
                size_t cap)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++)
        if (set_value(c, &KEYS[i], KEYS[i].def, "default", err, cap) < 0)
            return -1;
    for (size_t i = 0; i < sizeof RATE_DEFAULTS / sizeof RATE_DEFAULTS[0]; i++) {
        struct conf_rate *r = rate_get(c, RATE_DEFAULTS[i].name);
        r->limit = RATE_DEFAULTS[i].limit;
        r->period_ms = RATE_DEFAULTS[i].period_ms;
        r->burst = RATE_DEFAULTS[i].burst;
        r->batch = RATE_DEFAULTS[i].batch;
        r->by_ip = RATE_DEFAULTS[i].by_ip;
    }
    if (text) {
        if (read_text(c, path, text, len, err, cap) < 0)
            return -1;
    } else if (path) {
        if (access(path, R_OK) != 0) {
            snprintf(err, cap, "%s: %s", path, strerror(errno));
            return -1;
        }
        size_t n;
        char *src = luacap_read_file(path, CONF_MAX_FILE, &n, err, cap);
        if (src == NULL)
            return -1;
        int rc = read_text(c, path, src, n, err, cap);
        free(src);
        if (rc < 0)
            return -1;
    }
    if (apply_env(c, err, cap) < 0)
        return -1;
    if (check_shards(c, err, cap) < 0)
        return -1;
    const char *ri = getenv("MMO_REDIS_INSTANCES");
    if (check_redis_instances(c,
                              ri && *ri ? "MMO_REDIS_INSTANCES"
                              : path    ? path
                                        : "default",
                              err, cap) < 0)
        return -1;
    struct sentinel_addr sa[SENTINEL_MAX];
    if (sentinel_parse_addrs(c->redis_sentinels, sa, SENTINEL_MAX, err, cap) < 0)
        return -1;
    if (c->redis_sentinels[0] && c->redis_master_name[0] == '\0') {
        snprintf(err, cap, "redis.master_name must be set when redis.sentinels is");
        return -1;
    }
    if (conf_rate_find(c, c->http_rate_class) < 0) {
        snprintf(err, cap, "http.rate_class \"%s\" is not a class of section ratelimit",
                 c->http_rate_class);
        return -1;
    }
    return 0;
}

int conf_load(struct conf *c, const char *path, char *err, size_t cap)
{
    return load(c, path, NULL, 0, err, cap);
}

int conf_load_text(struct conf *c, const char *name, const char *text, size_t len, char *err,
                   size_t cap)
{
    return load(c, name, text, len, err, cap);
}

void conf_free(struct conf *c)
{
    for (int i = 0; i < c->nshards; i++) {
        free(c->shards[i].conninfo);
        free(c->shards[i].replica_conninfo);
        free(c->shards[i].regions);
    }
    free(c->shards);
    c->shards = NULL;
    c->nshards = 0;
    redis_instances_clear(c);
    for (int i = 0; i < c->nrate; i++)
        free(c->rate[i].name);
    free(c->rate);
    c->rate = NULL;
    c->nrate = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        if (KEYS[i].type == T_STR) {
            char **s = (char **) (void *) ((char *) c + KEYS[i].offset);
            free(*s);
            *s = NULL;
        }
    }
}

static int rate_cmp(const void *a, const void *b)
{
    return strcmp((*(const struct conf_rate *const *) a)->name,
                  (*(const struct conf_rate *const *) b)->name);
}

void conf_dump(const struct conf *c, int fd)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const char *field = (const char *) c + KEYS[i].offset;
        if (KEYS[i].type == T_STR && strcmp(KEYS[i].section, "auth") == 0 &&
            strncmp(KEYS[i].name, "jwt_", 4) == 0 && strcmp(KEYS[i].name, "jwt_kid") != 0)
            dprintf(fd, "%s.%s = %s\n", KEYS[i].section, KEYS[i].name,
                    **(char *const *) (const void *) field ? "(secret, set)" : "(not set)");
        else if (KEYS[i].type == T_STR)
            dprintf(fd, "%s.%s = \"%s\"\n", KEYS[i].section, KEYS[i].name,
                    *(char *const *) (const void *) field);
        else
            dprintf(fd, "%s.%s = %d\n", KEYS[i].section, KEYS[i].name,
                    *(const int *) (const void *) field);
    }
    for (int i = 0; i < c->nredis_instances; i++) {
        const struct conf_redis_instance *ri = &c->redis_instances[i];
        dprintf(fd,
                "redis.instances[%d] = { name = \"%s\", host = \"%s\", port = %d, sentinels = "
                "\"%s\", master_name = \"%s\" }\n",
                i + 1, ri->name, ri->host, ri->port, ri->sentinels, ri->master_name);
    }
    for (int i = 0; i < c->nshards; i++)
        dprintf(fd, "shards[%d] = { regions = \"%s\", conninfo = (set), replica_conninfo = %s }\n",
                c->shards[i].id, c->shards[i].regions,
                c->shards[i].replica_conninfo[0] ? "(set)" : "(not set)");
    /* by name: config.lua's classes come in the order Lua's table walk gives, which differs
     * from one run to the next (found by fuzz_config) */
    const struct conf_rate **by_name = xcalloc((size_t) c->nrate + 1, sizeof *by_name);
    for (int i = 0; i < c->nrate; i++)
        by_name[i] = &c->rate[i];
    qsort(by_name, (size_t) c->nrate, sizeof *by_name, rate_cmp);
    for (int i = 0; i < c->nrate; i++) {
        const struct conf_rate *r = by_name[i];
        dprintf(fd,
                "ratelimit.%s = { limit = %d, period_ms = %d, burst = %d, batch = %d, by = "
                "\"%s\" }\n",
                r->name, r->limit, r->period_ms, r->burst, r->batch, r->by_ip ? "ip" : "account");
    }
    free(by_name);
}
