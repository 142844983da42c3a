/* test_conf.c -- core/conf.c: defaults, the file, the environment, refusals. */
#include "test.h"

#include "conf.h"

#include <stdlib.h>
#include <unistd.h>

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/mmo-conf-test-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    ssize_t w = write(fd, text, strlen(text));
    (void) w;
    close(fd);
    return path;
}

static void clear_env(void)
{
    unsetenv("MMO_PORT");
    unsetenv("MMO_HTTP_PORT");
    unsetenv("MMO_REDIS");
    unsetenv("MMO_PG");
    unsetenv("MMO_POSTGRES_POOL_SIZE");
    unsetenv("MMO_MODS_STRIKES");
    unsetenv("MMO_REDIS_INSTANCES");
    unsetenv("MMO_REDIS_NAME");
}

TEST(defaults)
{
    clear_env();
    struct conf c;
    char err[256];
    ASSERT_OK(conf_load(&c, NULL, err, sizeof err));
    ASSERT_EQ(c.http_port, 8080);
    ASSERT_EQ(c.http_max_body_bytes, 1048576);
    ASSERT_STR(c.scripts_routes, "routes");
    conf_free(&c);
}

TEST(file_then_environment)
{
    clear_env();
    char *path = write_tmp("return { http = { port = 9000, max_connections = 10 },\n"
                           "         postgres = { pool_size = 2 * 3 }, mods = { strikes = 5 } }\n");
    ASSERT(path);
    struct conf c;
    char err[256];
    ASSERT_OK(conf_load(&c, path, err, sizeof err));
    ASSERT_EQ(c.http_port, 9000);
    ASSERT_EQ(c.pg_pool_size, 6);
    ASSERT_EQ(c.mods_strikes, 5);
    conf_free(&c);
    setenv("MMO_PORT", "9100", 1);
    setenv("MMO_MODS_STRIKES", "1", 1);
    setenv("MMO_POSTGRES_POOL_SIZE", "3", 1);
    setenv("MMO_REDIS", "10.1.2.3:6390", 1);
    setenv("MMO_PG", "host=/tmp dbname=x", 1);
    ASSERT_OK(conf_load(&c, path, err, sizeof err));
    ASSERT_EQ(c.http_port, 9100);
    ASSERT_EQ(c.pg_pool_size, 3);
    ASSERT_EQ(c.http_max_connections, 10);
    ASSERT_STR(c.redis_host, "10.1.2.3");
    ASSERT_EQ(c.redis_port, 6390);
    ASSERT_STR(c.pg_conninfo, "host=/tmp dbname=x");
    ASSERT_EQ(c.mods_strikes, 1);
    conf_free(&c);
    clear_env();
    unlink(path);
}

TEST(refusals)
{
    clear_env();
    struct conf c;
    char err[256];
    const char *bad[] = {
        "return { http = { prot = 1 } }",                 /* unknown key */
        "return { htp = { port = 1 } }",                  /* unknown section */
        "return { http = { port = 'x' } }",               /* wrong type */
        "return { http = { port = 70000 } }",             /* out of range */
        "return { http = { port = 1.5 } }",               /* not an integer */
        "return { http = { port = 9e30 } }",              /* beyond long long (UB once) */
        "return { http = { port = 0/0 } }",               /* NaN */
        "return { http = { port = -1/0 } }",              /* -inf */
        "return 42",                                      /* not a table */
        "return { http = { port = 1 }",                   /* syntax */
        "return { log = { level = os.getenv('HOME') } }", /* no libraries */
        "return { mods = { strikes = 0 } }",              /* 1 to 1000 */
        "return { mods = { strikes = 1001 } }",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = write_tmp(bad[i]);
        int rc = conf_load(&c, path, err, sizeof err);
        conf_free(&c);
        unlink(path);
        if (rc != -1)
            FAIL_AT("accepted: %s", bad[i]);
        ASSERT(strlen(err) > 0);
    }
    setenv("MMO_PORT", "eighty", 1);
    ASSERT_EQ(conf_load(&c, NULL, err, sizeof err), -1);
    ASSERT(strstr(err, "MMO_PORT") != NULL);
    conf_free(&c);
    setenv("MMO_PORT", "80", 1);
    setenv("MMO_REDIS", "nocolon", 1);
    ASSERT_EQ(conf_load(&c, NULL, err, sizeof err), -1);
    ASSERT(strstr(err, "MMO_REDIS") != NULL);
    conf_free(&c);
    clear_env();
    ASSERT_EQ(conf_load(&c, "/nonexistent/config.lua", err, sizeof err), -1);
    conf_free(&c);
}

TEST(the_shipped_config_loads)
{
    clear_env();
    struct conf c;
    char err[256];
    const char *root = getenv("MMO_ROOT");
    char path[512];
    snprintf(path, sizeof path, "%s/config.lua", root ? root : ".");
    if (conf_load(&c, path, err, sizeof err) != 0)
        FAIL_AT("%s", err);
    ASSERT_EQ(c.http_port, 8080);
    ASSERT_EQ(c.mods_enabled, 1);
    ASSERT_STR(c.mods_dir, ""); /* mods/ under the first scripts directory */
    ASSERT_EQ(c.mods_memory_mb, 16);
    ASSERT_EQ(c.mods_instructions, 1000000);
    ASSERT_EQ(c.mods_time_ms, 100);
    ASSERT_EQ(c.mods_strikes, 3);
    ASSERT_STR(c.redis_name, "main");
    ASSERT_EQ(c.nredis_instances, 0);
    conf_free(&c);
}

/* config.lua is data: a loop, a memory hog and bytecode end in an error naming the file, and a
 * config given as text (the fuzz target's way in) reads as the same file would. */
TEST(bounds)
{
    clear_env();
    struct conf c;
    char err[256];
    static const struct {
        const char *src, *want;
    } bad[] = {
        {"while true do end",
         "cfg.lua: instruction budget exceeded (10000000): config.lua is data"},
        {"local s = 'x' for i = 1, 40 do s = s .. s end return {}",
         "cfg.lua: memory cap exceeded (64 MiB): config.lua is data"},
        {"\033LJ\002", "cfg.lua: bytecode is not allowed, only Lua source"},
        {"return {", "cfg.lua:1: unexpected symbol near '<eof>'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = conf_load_text(&c, "cfg.lua", bad[i].src, strlen(bad[i].src), err, sizeof err);
        conf_free(&c);
        if (rc != -1)
            FAIL_AT("accepted: %s", bad[i].src);
        ASSERT_STR(err, bad[i].want);
    }
    const char *ok =
        "local p = 9000 + 100 return { http = { port = p }, log = { level = 'debug' } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", ok, strlen(ok), err, sizeof err));
    ASSERT_EQ(c.http_port, 9100);
    ASSERT_STR(c.log_level, "debug");
    conf_free(&c);
    char *path = write_tmp("while true do end");
    ASSERT_EQ(conf_load(&c, path, err, sizeof err), -1);
    ASSERT(strstr(err, path) == err);
    ASSERT(strstr(err, "instruction budget exceeded") != NULL);
    conf_free(&c);
    unlink(path);
}

/* `mmo config` lists rate classes by name, whatever order Lua's table walk gives them in */
TEST(redis_sentinels)
{
    clear_env();
    struct conf c;
    char err[256];
    const char *list = "return { redis = { sentinels = { \"10.0.0.5:26379\", \"[::1]:26380\" }, "
                       "master_name = \"game\" } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", list, strlen(list), err, sizeof err));
    ASSERT_STR(c.redis_sentinels, "10.0.0.5:26379,[::1]:26380");
    ASSERT_STR(c.redis_master_name, "game");
    conf_free(&c);
    const char *str = "return { redis = { sentinels = \"a:1, b:2\" } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", str, strlen(str), err, sizeof err));
    ASSERT_STR(c.redis_sentinels, "a:1, b:2");
    ASSERT_STR(c.redis_master_name, "mmo");
    conf_free(&c);
    static const char *const BAD[] = {
        "return { redis = { sentinels = { \"a:1\", 5 } } }",
        "return { redis = { sentinels = { \"a:1,b:2\" } } }",
        "return { redis = { sentinels = { \"a\" } } }",
        "return { redis = { sentinels = { \"a:0\" } } }",
        "return { redis = { sentinels = { \"a:1\" }, master_name = \"\" } }",
        "return { redis = { sentinels = 7 } }",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        err[0] = '\0';
        if (conf_load_text(&c, "cfg.lua", BAD[i], strlen(BAD[i]), err, sizeof err) == 0) {
            conf_free(&c);
            FAIL_AT("accepted: %s", BAD[i]);
        }
        conf_free(&c);
        ASSERT(strstr(err, "redis.") != NULL);
    }
}

TEST(dump_lists_rate_classes_by_name)
{
    clear_env();
    struct conf c;
    char err[256];
    const char *src = "return { ratelimit = { zeta = { limit = 1 }, alpha = { limit = 2 }, "
                      "mid = { limit = 3 }, chat = { limit = 4 }, pi = { limit = 5 } } }";
    for (int run = 0; run < 20; run++) {
        ASSERT_OK(conf_load_text(&c, "cfg.lua", src, strlen(src), err, sizeof err));
        FILE *f = tmpfile();
        ASSERT(f != NULL);
        conf_dump(&c, fileno(f));
        conf_free(&c);
        rewind(f);
        char line[512], names[256] = "";
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "ratelimit.", 10) == 0) {
                strncat(names, line + 10, strcspn(line + 10, " "));
                strcat(names, ",");
            }
        fclose(f);
        ASSERT_STR(names, "alpha,api,auth,chat,mid,pi,zeta,");
    }
}

/* replicas: postgres.replica_conninfo and shards[n].replica_conninfo, from the file and the
 * environment; a shard with a replica and no conninfo, a bad type or an unknown key is refused;
 * postgres.replica_max_lag_ms: 5000 by default, 0 allowed (no bound), negative refused */
TEST(replicas)
{
    clear_env();
    unsetenv("MMO_SHARD_1_CONNINFO");
    unsetenv("MMO_SHARD_1_REGIONS");
    unsetenv("MMO_SHARD_2_REPLICA_CONNINFO");
    unsetenv("MMO_POSTGRES_REPLICA_CONNINFO");
    unsetenv("MMO_POSTGRES_REPLICA_MAX_LAG_MS");
    struct conf c;
    char err[256];
    ASSERT_OK(conf_load(&c, NULL, err, sizeof err));
    ASSERT_STR(c.pg_replica_conninfo, "");
    ASSERT_EQ(c.pg_replica_max_lag_ms, 5000);
    conf_free(&c);
    const char *lag = "return { postgres = { replica_max_lag_ms = 250 } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", lag, strlen(lag), err, sizeof err));
    ASSERT_EQ(c.pg_replica_max_lag_ms, 250);
    conf_free(&c);
    setenv("MMO_POSTGRES_REPLICA_MAX_LAG_MS", "0", 1);
    ASSERT_OK(conf_load_text(&c, "cfg.lua", lag, strlen(lag), err, sizeof err));
    ASSERT_EQ(c.pg_replica_max_lag_ms, 0);
    conf_free(&c);
    setenv("MMO_POSTGRES_REPLICA_MAX_LAG_MS", "-1", 1);
    ASSERT_EQ(conf_load_text(&c, "cfg.lua", lag, strlen(lag), err, sizeof err), -1);
    ASSERT(strstr(err, "postgres.replica_max_lag_ms must be an integer in [0, 3600000]") != NULL);
    conf_free(&c);
    unsetenv("MMO_POSTGRES_REPLICA_MAX_LAG_MS");
    const char *src = "return { postgres = { replica_conninfo = 'host=r0' }, shards = {\n"
                      "  [1] = { conninfo = 'host=p1', regions = { 'r3' }, "
                      "replica_conninfo = 'host=r1' },\n"
                      "  [2] = { conninfo = 'host=p2', regions = { 'r4' } } } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", src, strlen(src), err, sizeof err));
    ASSERT_STR(c.pg_replica_conninfo, "host=r0");
    ASSERT_EQ(c.nshards, 2);
    for (int i = 0; i < c.nshards; i++)
        ASSERT_STR(c.shards[i].replica_conninfo, c.shards[i].id == 1 ? "host=r1" : "");
    FILE *f = tmpfile();
    ASSERT(f != NULL);
    conf_dump(&c, fileno(f));
    conf_free(&c);
    rewind(f);
    char line[512];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "shards[1] = ") == line)
            seen += strstr(line, "replica_conninfo = (set)") != NULL;
        if (strstr(line, "shards[2] = ") == line)
            seen += strstr(line, "replica_conninfo = (not set)") != NULL;
        if (strstr(line, "postgres.replica_conninfo = ") == line)
            seen += strstr(line, "host=r0") != NULL;
    }
    fclose(f);
    ASSERT_EQ(seen, 3);

    setenv("MMO_POSTGRES_REPLICA_CONNINFO", "host=e0", 1);
    setenv("MMO_SHARD_2_REPLICA_CONNINFO", "host=e2", 1);
    ASSERT_OK(conf_load_text(&c, "cfg.lua", src, strlen(src), err, sizeof err));
    ASSERT_STR(c.pg_replica_conninfo, "host=e0");
    for (int i = 0; i < c.nshards; i++)
        ASSERT_STR(c.shards[i].replica_conninfo, c.shards[i].id == 1 ? "host=r1" : "host=e2");
    conf_free(&c);
    /* a replica for a shard that has no primary */
    setenv("MMO_SHARD_3_REPLICA_CONNINFO", "host=e3", 1);
    ASSERT_EQ(conf_load_text(&c, "cfg.lua", src, strlen(src), err, sizeof err), -1);
    ASSERT_STR(err, "shards[3]: conninfo is missing");
    conf_free(&c);
    unsetenv("MMO_SHARD_3_REPLICA_CONNINFO");
    unsetenv("MMO_SHARD_2_REPLICA_CONNINFO");
    unsetenv("MMO_POSTGRES_REPLICA_CONNINFO");

    static const struct {
        const char *src, *want;
    } bad[] = {
        {"return { shards = { [1] = { conninfo = 'x', regions = {}, replica_conninfo = 5 } } }",
         "cfg.lua: shards[1].replica_conninfo must be a string"},
        {"return { shards = { [1] = { conninfo = 'x', regions = {}, replica = 'y' } } }",
         "cfg.lua: shards[1]: unknown key (conninfo, regions and replica_conninfo are known)"},
        {"return { postgres = { replica_conninfo = 1 } }",
         "cfg.lua: postgres.replica_conninfo must be a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = conf_load_text(&c, "cfg.lua", bad[i].src, strlen(bad[i].src), err, sizeof err);
        conf_free(&c);
        if (rc != -1)
            FAIL_AT("accepted: %s", bad[i].src);
        ASSERT_STR(err, bad[i].want);
    }
}

/* redis.name and redis.instances: the list read in order with its defaults, shown by conf_dump,
 * replaced by MMO_REDIS_INSTANCES; each refusal names the file (or variable) and the entry */
TEST(redis_instances)
{
    clear_env();
    struct conf c;
    char err[256];
    ASSERT_OK(conf_load(&c, NULL, err, sizeof err));
    ASSERT_STR(c.redis_name, "main");
    ASSERT_EQ(c.nredis_instances, 0);
    ASSERT(c.redis_instances == NULL);
    conf_free(&c);

    const char *two = "return { redis = { name = 'home', instances = {\n"
                      "  { name = 'b', host = '10.0.0.6', port = 6380 },\n"
                      "  { name = 'c-2_X', sentinels = { '10.0.0.7:26379', '10.0.0.8:26379' },\n"
                      "    master_name = 'mmo-c' } } } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", two, strlen(two), err, sizeof err));
    ASSERT_STR(c.redis_name, "home");
    ASSERT_EQ(c.nredis_instances, 2);
    ASSERT_STR(c.redis_instances[0].name, "b");
    ASSERT_STR(c.redis_instances[0].host, "10.0.0.6");
    ASSERT_EQ(c.redis_instances[0].port, 6380);
    ASSERT_STR(c.redis_instances[0].sentinels, "");
    ASSERT_STR(c.redis_instances[0].master_name, "");
    ASSERT_STR(c.redis_instances[1].name, "c-2_X");
    ASSERT_STR(c.redis_instances[1].host, "127.0.0.1"); /* defaults */
    ASSERT_EQ(c.redis_instances[1].port, 6379);
    ASSERT_STR(c.redis_instances[1].sentinels, "10.0.0.7:26379,10.0.0.8:26379");
    ASSERT_STR(c.redis_instances[1].master_name, "mmo-c");
    FILE *f = tmpfile();
    ASSERT(f != NULL);
    conf_dump(&c, fileno(f));
    conf_free(&c);
    rewind(f);
    char line[512];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        seen += strcmp(line, "redis.name = \"home\"\n") == 0;
        seen += strcmp(line, "redis.instances[1] = { name = \"b\", host = \"10.0.0.6\", port = "
                             "6380, sentinels = \"\", master_name = \"\" }\n") == 0;
        seen += strcmp(line, "redis.instances[2] = { name = \"c-2_X\", host = \"127.0.0.1\", "
                             "port = 6379, sentinels = \"10.0.0.7:26379,10.0.0.8:26379\", "
                             "master_name = \"mmo-c\" }\n") == 0;
    }
    fclose(f);
    ASSERT_EQ(seen, 3);

    /* a name only: every default; 15 others is the most */
    const char *one = "return { redis = { instances = { { name = 'x' } } } }";
    ASSERT_OK(conf_load_text(&c, "cfg.lua", one, strlen(one), err, sizeof err));
    ASSERT_EQ(c.nredis_instances, 1);
    ASSERT_STR(c.redis_instances[0].host, "127.0.0.1");
    ASSERT_EQ(c.redis_instances[0].port, 6379);
    conf_free(&c);
    char many[2048] = "return { redis = { instances = {";
    for (int i = 1; i < CONF_MAX_REDIS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), " { name = 'i%d' },", i);
    strcat(many, " } } }");
    ASSERT_OK(conf_load_text(&c, "cfg.lua", many, strlen(many), err, sizeof err));
    ASSERT_EQ(c.nredis_instances, CONF_MAX_REDIS - 1);
    conf_free(&c);
    strcpy(strstr(many, " } } }"), " { name = 'i16' }, } } }");
    ASSERT_EQ(conf_load_text(&c, "cfg.lua", many, strlen(many), err, sizeof err), -1);
    ASSERT_STR(err, "cfg.lua: redis.instances: 16 instances, at most 15 (16 with home)");
    conf_free(&c);

    static const struct {
        const char *src, *want;
    } bad[] = {
        {"return { redis = { instances = { { host = 'h' } } } }",
         "cfg.lua: redis.instances[1].name is missing"},
        {"return { redis = { instances = { { name = 'a b' } } } }",
         "cfg.lua: redis.instances[1].name \"a b\" must be 1 to 32 of [A-Za-z0-9_-]"},
        {"return { redis = { instances = { { name = '' } } } }",
         "cfg.lua: redis.instances[1].name \"\" must be 1 to 32 of [A-Za-z0-9_-]"},
        {"return { redis = { instances = { { name = 'abcdefghijklmnopqrstuvwxyz0123456' } } } }",
         "cfg.lua: redis.instances[1].name \"abcdefghijklmnopqrstuvwxyz0123456\" must be 1 to 32 "
         "of [A-Za-z0-9_-]"},
        {"return { redis = { instances = { { name = 'b' }, { name = 'c' }, { name = 'b' } } } }",
         "cfg.lua: redis.instances[3].name \"b\" is also redis.instances[1]'s"},
        {"return { redis = { instances = { { name = 'main' } } } }",
         "cfg.lua: redis.instances[1].name \"main\" is the home instance's (redis.name)"},
        {"return { redis = { instances = { { name = 'h' } }, name = 'h' } }",
         "cfg.lua: redis.instances[1].name \"h\" is the home instance's (redis.name)"},
        {"return { redis = { name = 'no/slash' } }",
         "cfg.lua: redis.name \"no/slash\" must be 1 to 32 of [A-Za-z0-9_-]"},
        {"return { redis = { instances = { { name = 'b', port = 0 } } } }",
         "cfg.lua: redis.instances[1].port must be an integer in [1, 65535]"},
        {"return { redis = { instances = { { name = 'b', port = 65536 } } } }",
         "cfg.lua: redis.instances[1].port must be an integer in [1, 65535]"},
        {"return { redis = { instances = { { name = 'b', port = 63.5 } } } }",
         "cfg.lua: redis.instances[1].port must be an integer in [1, 65535]"},
        {"return { redis = { instances = { { name = 'b', port = '6379' } } } }",
         "cfg.lua: redis.instances[1].port must be an integer in [1, 65535]"},
        {"return { redis = { instances = { { name = 'b' }, { name = 'c', hots = 'h' } } } }",
         "cfg.lua: redis.instances[2]: unknown key hots (name, host, port, sentinels and "
         "master_name are known)"},
        {"return { redis = { instances = { { name = 'b', [1] = 2 } } } }",
         "cfg.lua: redis.instances[1]: unknown key (not a name) (name, host, port, sentinels and "
         "master_name are known)"},
        {"return { redis = { instances = 5 } }",
         "cfg.lua: redis.instances must be a list of { name = ..., host = ..., port = ... }"},
        {"return { redis = { instances = { b = { name = 'b' } } } }",
         "cfg.lua: redis.instances must be a list [1..n] of { name = ..., ... } tables"},
        {"return { redis = { instances = { 'b' } } }",
         "cfg.lua: redis.instances[1] must be a table { name = ..., ... }"},
        {"return { redis = { instances = { { name = 7 } } } }",
         "cfg.lua: redis.instances[1].name must be a string"},
        {"return { redis = { instances = { { name = 'b', host = 7 } } } }",
         "cfg.lua: redis.instances[1].host must be a string"},
        {"return { redis = { instances = { { name = 'b', host = '' } } } }",
         "cfg.lua: redis.instances[1].host is empty"},
        {"return { redis = { instances = { { name = 'b', master_name = {} } } } }",
         "cfg.lua: redis.instances[1].master_name must be a string"},
        {"return { redis = { instances = { { name = 'b', sentinels = 7 } } } }",
         "cfg.lua: redis.instances[1].sentinels must be a list of \"host:port\" strings"},
        {"return { redis = { instances = { { name = 'b', sentinels = { 'a:1', 2 } } } } }",
         "cfg.lua: redis.instances[1].sentinels must be a list of \"host:port\" strings"},
        {"return { redis = { instances = { { name = 'b', sentinels = { 'a:0' }, "
         "master_name = 'm' } } } }",
         "cfg.lua: redis.instances[1].sentinels: \"a:0\" is not host:port (port 1..65535)"},
        {"return { redis = { instances = { { name = 'b', sentinels = { 'a:1' } } } } }",
         "cfg.lua: redis.instances[1].master_name must be set when its sentinels are"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = conf_load_text(&c, "cfg.lua", bad[i].src, strlen(bad[i].src), err, sizeof err);
        conf_free(&c);
        if (rc != -1)
            FAIL_AT("accepted: %s", bad[i].src);
        ASSERT_STR(err, bad[i].want);
    }

    /* the environment replaces the file's list and names home */
    setenv("MMO_REDIS_INSTANCES", "x=10.1.0.1:7000, y=[::1]:7001 ,z=redis-z.local:7002", 1);
    setenv("MMO_REDIS_NAME", "b", 1); /* the file's "b" is gone: no clash */
    ASSERT_OK(conf_load_text(&c, "cfg.lua", two, strlen(two), err, sizeof err));
    ASSERT_STR(c.redis_name, "b");
    ASSERT_EQ(c.nredis_instances, 3);
    ASSERT_STR(c.redis_instances[0].name, "x");
    ASSERT_STR(c.redis_instances[0].host, "10.1.0.1");
    ASSERT_EQ(c.redis_instances[0].port, 7000);
    ASSERT_STR(c.redis_instances[1].name, "y");
    ASSERT_STR(c.redis_instances[1].host, "::1");
    ASSERT_EQ(c.redis_instances[1].port, 7001);
    ASSERT_STR(c.redis_instances[1].sentinels, "");
    ASSERT_STR(c.redis_instances[2].host, "redis-z.local");
    conf_free(&c);
    unsetenv("MMO_REDIS_NAME");

    static const struct {
        const char *v, *want;
    } bad_env[] = {
        {"b", "MMO_REDIS_INSTANCES: entry 1 \"b\" is not name=host:port (port 1..65535)"},
        {"b=h", "MMO_REDIS_INSTANCES: entry 1 \"b=h\" is not name=host:port (port 1..65535)"},
        {"b=h:0", "MMO_REDIS_INSTANCES: entry 1 \"b=h:0\" is not name=host:port (port 1..65535)"},
        {"b=h:1,c=h:65536",
         "MMO_REDIS_INSTANCES: entry 2 \"c=h:65536\" is not name=host:port (port 1..65535)"},
        {"b=h:x", "MMO_REDIS_INSTANCES: entry 1 \"b=h:x\" is not name=host:port (port 1..65535)"},
        {"b=h:-1", "MMO_REDIS_INSTANCES: entry 1 \"b=h:-1\" is not name=host:port (port 1..65535)"},
        {"b=:1", "MMO_REDIS_INSTANCES: entry 1 \"b=:1\" is not name=host:port (port 1..65535)"},
        {"b=h:1,", "MMO_REDIS_INSTANCES: entry 2 \"\" is not name=host:port (port 1..65535)"},
        {"=h:1", "MMO_REDIS_INSTANCES: entry 1: name \"\" must be 1 to 32 of [A-Za-z0-9_-]"},
        {"b.c=h:1", "MMO_REDIS_INSTANCES: entry 1: name \"b.c\" must be 1 to 32 of [A-Za-z0-9_-]"},
        {"b=h:1,b=g:2", "MMO_REDIS_INSTANCES: redis.instances[2].name \"b\" is also "
                        "redis.instances[1]'s"},
        {"main=h:1", "MMO_REDIS_INSTANCES: redis.instances[1].name \"main\" is the home instance's "
                     "(redis.name)"},
    };
    for (size_t i = 0; i < sizeof bad_env / sizeof bad_env[0]; i++) {
        setenv("MMO_REDIS_INSTANCES", bad_env[i].v, 1);
        err[0] = '\0';
        int rc = conf_load(&c, NULL, err, sizeof err);
        conf_free(&c);
        if (rc != -1)
            FAIL_AT("accepted: MMO_REDIS_INSTANCES=%s", bad_env[i].v);
        ASSERT_STR(err, bad_env[i].want);
    }
    char env[1024] = "";
    for (int i = 1; i <= CONF_MAX_REDIS; i++)
        snprintf(env + strlen(env), sizeof env - strlen(env), "%si%d=h:%d", i > 1 ? "," : "", i,
                 6000 + i);
    setenv("MMO_REDIS_INSTANCES", env, 1);
    ASSERT_EQ(conf_load(&c, NULL, err, sizeof err), -1);
    ASSERT_STR(err, "MMO_REDIS_INSTANCES: more than 15 instances (16 with home)");
    conf_free(&c);
    unsetenv("MMO_REDIS_INSTANCES");
    setenv("MMO_REDIS_NAME", "a b", 1);
    ASSERT_EQ(conf_load(&c, NULL, err, sizeof err), -1);
    ASSERT_STR(err, "MMO_REDIS_NAME: redis.name \"a b\" must be 1 to 32 of [A-Za-z0-9_-]");
    conf_free(&c);
    clear_env();
}

int main(void)
{
    RUN(defaults);
    RUN(file_then_environment);
    RUN(refusals);
    RUN(the_shipped_config_loads);
    RUN(bounds);
    RUN(redis_sentinels);
    RUN(dump_lists_rate_classes_by_name);
    RUN(replicas);
    RUN(redis_instances);
    return test_summary();
}
