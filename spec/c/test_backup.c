/* test_backup.c -- core/backup.c: the manifest reader and the pg_dump command line. */
#include "../../core/backup.c"
#include "test.h"

static const char MANIFEST_TEXT[] =
    "{\n  \"format\": 1,\n  \"created_at\": \"2026-11-28T20:15:00Z\",\n"
    "  \"databases\": [\n"
    "    {\"shard\": 0, \"file\": \"shard0.pgdump\", \"size\": 31118, \"tables\": "
    "{\"public.accounts\": 3, \"\\\"odd\\\\name\\u00e9\\\".t\": 0}},\n"
    "    {\"shard\": 1, \"file\": \"shard1.pgdump\", \"size\": 9007199254740992, \"tables\": {}}\n"
    "  ],\n  \"redis\": {\"keys\": 42, \"ok\": true, \"none\": null}\n}\n";

TEST(reads_a_manifest)
{
    struct jv m;
    const char *end = json_value(MANIFEST_TEXT, &m, 0);
    ASSERT(end != NULL);
    ASSERT_STR("\n", end);
    const struct jv *dbs = jv_get(&m, "databases", J_ARR);
    ASSERT(dbs != NULL);
    ASSERT_EQ(2, dbs->n);
    ASSERT_STR("shard1.pgdump", jv_get(&dbs->items[1], "file", J_STR)->str);
    ASSERT_EQ(9007199254740992LL, (long long) jv_get(&dbs->items[1], "size", J_NUM)->num);
    const struct jv *t = jv_get(&dbs->items[0], "tables", J_OBJ);
    ASSERT_EQ(3, (long long) jv_get(t, "public.accounts", J_NUM)->num);
    ASSERT(jv_get(t, "\"odd\\name\xc3\xa9\".t", J_NUM) != NULL);
    ASSERT_EQ(42, (long long) jv_get(jv_get(&m, "redis", J_OBJ), "keys", J_NUM)->num);
    ASSERT(jv_get(&m, "format", J_STR) == NULL); /* a number, not a string */
    ASSERT(jv_get(&m, "missing", J_NUM) == NULL);
    jv_free(&m);
}

/* every prefix of a manifest, and broken ones: refused, nothing leaked (ASan) */
TEST(refuses_broken_json)
{
    size_t n = strlen(MANIFEST_TEXT);
    char *cut = malloc(n + 1);
    for (size_t i = 0; i < n - 2; i++) {
        memcpy(cut, MANIFEST_TEXT, i);
        cut[i] = '\0';
        struct jv v;
        const char *end = json_value(cut, &v, 0);
        jv_free(&v);
        if (end != NULL && i > 0 && cut[0] == '{')
            FAIL_AT("a manifest cut at %zu bytes was read", i);
    }
    free(cut);
    const char *bad[] = {"{\"a\" 1}",
                         "{\"a\": 1,}",
                         "[1 2]",
                         "\"\\x\"",
                         "\"a\nb\"",
                         "{1: 2}",
                         "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]",
                         "nul",
                         "{\"a\": \"\\u12\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct jv v;
        const char *end = json_value(bad[i], &v, 0);
        jv_free(&v);
        if (end != NULL && *skip_ws(end) == '\0')
            FAIL_AT("read %s", bad[i]);
    }
}

TEST(keeps_the_password_off_the_command_line)
{
    char *pw;
    char *arg = dbname_arg("host=db.example port=5433 dbname=mmo user=game password=s3cr'et", &pw);
    ASSERT_STR("s3cr'et", pw);
    ASSERT(strstr(arg, "s3cr") == NULL);
    ASSERT(strstr(arg, "host='db.example'") != NULL);
    ASSERT(strstr(arg, "port='5433'") != NULL);
    ASSERT(strstr(arg, "dbname='mmo'") != NULL);
    free(arg);
    free(pw);
    arg = dbname_arg("postgresql://u:p%40ss@h/d%27b", &pw);
    ASSERT_STR("p@ss", pw);
    ASSERT(strstr(arg, "dbname='d\\'b'") != NULL);
    free(arg);
    free(pw);
    arg = dbname_arg("host=h dbname=x", &pw);
    int ok = pw == NULL && strncmp(arg, "--dbname=", 9) == 0 && strstr(arg, "host='h'") &&
             strstr(arg, "dbname='x'") && !strstr(arg, "password");
    free(arg);
    ASSERT(ok);
}

/* plan_redis on the manifest text m against a configuration: home named home, others the
 * names of list (NULL-terminated). The count, or -1. ri points into the manifest, kept until
 * the next call (and freed by a call with m NULL). */
static int plan(const char *m, const char *home, const char *const *list, int force,
                struct rinst *ri)
{
    struct conf_redis_instance inst[CONF_MAX_REDIS];
    struct conf c;
    memset(&c, 0, sizeof c);
    memset(inst, 0, sizeof inst);
    c.redis_name = (char *) home;
    c.redis_instances = inst;
    while (list && list[c.nredis_instances])
        inst[c.nredis_instances].name = (char *) list[c.nredis_instances], c.nredis_instances++;
    static struct jv v;
    jv_free(&v);
    memset(&v, 0, sizeof v);
    if (m == NULL)
        return 0;
    const char *end = json_value(m, &v, 0);
    return end ? plan_redis(&c, &v, ri, force) : -2;
}

/* which configured instance each dump of a backup goes to, and when restore refuses */
TEST(matches_redis_instances_by_name)
{
    static const char two[] =
        "{\"redis\": {\"instance\": \"main\", \"file\": \"redis.dump\"}, \"redis_instances\": "
        "[{\"instance\": \"s2\", \"file\": \"redis-s2.dump\"}]}";
    static const char old[] = "{\"redis\": {\"file\": \"redis.dump\", \"keys\": 3}}";
    static const char twice[] =
        "{\"redis\": {\"instance\": \"main\", \"file\": \"redis.dump\"}, \"redis_instances\": "
        "[{\"instance\": \"s2\", \"file\": \"a\"}, {\"instance\": \"s2\", \"file\": \"b\"}]}";
    const char *s2[] = {"s2", NULL}, *s3[] = {"s3", NULL}, *s2s3[] = {"s3", "s2", NULL};
    struct rinst ri[CONF_MAX_REDIS];
    ASSERT_EQ(2, plan(two, "main", s2, 0, ri));
    ASSERT(ri[0].home && !ri[1].home);
    ASSERT_STR("redis-s2.dump", ri[1].file);
    ASSERT_STR("s2", ri[1].name);
    /* an instance of the backup not configured, or home's name not home's: force or not */
    for (int force = 0; force < 2; force++) {
        ASSERT_EQ(-1, plan(two, "main", NULL, force, ri));
        ASSERT_EQ(-1, plan(two, "main", s3, force, ri));
        ASSERT_EQ(-1, plan(two, "s2", s2, force, ri));
        ASSERT_EQ(-1, plan(two, "other", s2, force, ri));
        ASSERT_EQ(-1, plan(twice, "main", s2, force, ri));
    }
    /* one more configured than the backup has: placement differs, only with force */
    ASSERT_EQ(-1, plan(two, "main", s2s3, 0, ri));
    ASSERT_EQ(2, plan(two, "main", s2s3, 1, ri));
    /* a backup that names no instance (before there could be several) is home's */
    ASSERT_EQ(1, plan(old, "eu", NULL, 0, ri));
    ASSERT_STR("eu", ri[0].name);
    ASSERT_EQ(-1, plan(old, "main", s2, 0, ri));
    ASSERT_EQ(1, plan(old, "main", s2, 1, ri));
    plan(NULL, "main", NULL, 0, ri);
}

int main(void)
{
    RUN(reads_a_manifest);
    RUN(refuses_broken_json);
    RUN(keeps_the_password_off_the_command_line);
    RUN(matches_redis_instances_by_name);
    return test_summary();
}
