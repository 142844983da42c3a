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
 * environment; a shard with a replica and no conninfo, a bad type or an unknown key is refused */
TEST(replicas)
{
    clear_env();
    unsetenv("MMO_SHARD_1_CONNINFO");
    unsetenv("MMO_SHARD_1_REGIONS");
    unsetenv("MMO_SHARD_2_REPLICA_CONNINFO");
    unsetenv("MMO_POSTGRES_REPLICA_CONNINFO");
    struct conf c;
    char err[256];
    ASSERT_OK(conf_load(&c, NULL, err, sizeof err));
    ASSERT_STR(c.pg_replica_conninfo, "");
    conf_free(&c);
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
    return test_summary();
}
