/* test_ratelimit.c -- core/ratelimit.c against a real Redis (MMO_TEST_REDIS = "host:port").
 *
 * Each test makes its own event_base, rds client(s) and limiter and frees them all (ASan/LSan
 * check the rest). Class names carry a per-run id, so every Redis key of a run is
 * "rl:t<run>...:" and is deleted at the end. An admin connection (blocking hiredis) reads keys,
 * flushes scripts and pauses Redis. The optional restart test runs MMO_TEST_REDIS_RESTART_CMD
 * (a shell command that stops Redis and starts it again). */
#include "test.h"
#include "test_loop.h"

#include "err.h"
#include "log.h"
#include "ratelimit.h"
#include "rds.h"

#include <stdarg.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

static char host[64];
static int port;
static char run[16]; /* per-run id in class names */

static void parse_env(void)
{
    test_redis_addr(host, sizeof host, &port);
    snprintf(run, sizeof run, "%x", (unsigned) (getpid() ^ time(NULL)) & 0xffffff);
}

/* ---- the admin connection (blocking; tests only) -------------------------------------------- */

static redisReply *admin(const char *fmt, ...)
{
    redisContext *c = redisConnect(host, port);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* Delete every key of this run. */
static void cleanup_keys(void)
{
    redisContext *c = redisConnect(host, port);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return;
    }
    char cursor[32] = "0", pattern[64];
    snprintf(pattern, sizeof pattern, "rl:t%s*", run);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            freeReplyObject(redisCommand(c, "DEL %b", r->element[1]->element[i]->str,
                                         r->element[1]->element[i]->len));
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
}

/* ---- running the loop ----------------------------------------------------------------------- */

/* Run the loop until *flag != 0 or ms pass; returns *flag. */
static int run_until(struct event_base *base, const int *flag, int ms)
{
    return test_run_until(base, flag, ms, 1000);
}

static void run_for(struct event_base *base, int ms)
{
    int never = 0;
    run_until(base, &never, ms);
}

static int wait_up(struct event_base *base, struct rds *r, int ms)
{
    double end = test_now_ms() + ms;
    while (!rds_up(r) && test_now_ms() < end)
        run_for(base, 5);
    return rds_up(r);
}

/* ---- a node: base, Redis client, limiter ---------------------------------------------------- */

struct node {
    struct event_base *base;
    int own_base;
    struct rds *r;
    struct rl *rl;
};

/* A class named t<run><suffix>. name must hold RL_NAME_MAX + 1 bytes. */
static struct rl_class cls_make(char *name, const char *suffix, int limit, int period_ms, int burst,
                                int batch)
{
    snprintf(name, RL_NAME_MAX + 1, "t%s%s", run, suffix);
    return (struct rl_class){name, limit, period_ms, burst, batch};
}

/* base NULL: a new one. rport 0: no Redis at all. */
static struct node node_new(struct event_base *base, int rport, int timeout_ms,
                            const struct rl_class *classes, int n, int max_keys)
{
    struct node nd = {base ? base : event_base_new(), base == NULL, NULL, NULL};
    if (rport) {
        struct rds_opts o = {host, rport, 200, timeout_ms, 200, NULL};
        nd.r = rds_new(nd.base, &o);
    }
    nd.rl = rl_new(nd.r, classes, n, max_keys);
    return nd;
}

static void node_free(struct node *nd)
{
    rl_free(nd->rl);
    rds_free(nd->r);
    if (nd->own_base)
        event_base_free(nd->base);
}

static struct rl_stats stats(struct rl *rl)
{
    struct rl_stats s;
    rl_stats(rl, &s);
    return s;
}

/* ---- one check's outcome -------------------------------------------------------------------- */

struct res {
    int fired;
    int status;
    int retry_ms;
    double at_ms;
    struct rl_op *cancel_in_cb; /* rl_op_cancel from inside the callback */
    struct rl *free_in_cb;      /* rl_free from inside the callback */
};

static void on_check(int status, int retry_after_ms, void *ud)
{
    struct res *res = ud;
    res->fired++;
    res->status = status;
    res->retry_ms = retry_after_ms;
    res->at_ms = test_now_ms();
    if (res->cancel_in_cb)
        rl_op_cancel(res->cancel_in_cb);
    if (res->free_in_cb)
        rl_free(res->free_in_cb);
}

static int check(struct rl *rl, int cls, const char *key, struct res *res, struct rl_op **op,
                 int *retry)
{
    return rl_check(rl, cls, key, strlen(key), on_check, res, op, retry);
}

/* One check, waiting for the answer: RL_ALLOW or RL_DENY (*retry set), or -1 on no answer. */
static int decide(struct node *nd, int cls, const char *key, int *retry, int *was_pending)
{
    struct res res = {0};
    int r = 0;
    int rc = check(nd->rl, cls, key, &res, NULL, &r);
    if (was_pending)
        *was_pending = rc == RL_PENDING;
    if (rc == RL_PENDING) {
        if (res.fired != 0)
            return -2; /* fired from inside rl_check */
        if (!run_until(nd->base, &res.fired, 3000))
            return -1;
        rc = res.status == 0 ? RL_ALLOW : res.status == ERR_BUSY ? RL_DENY : -3;
        r = res.retry_ms;
    }
    if (retry)
        *retry = r;
    return rc;
}

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(classes_and_arguments_are_checked)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class ok = cls_make(n1, "a", 5, 1000, 5, 1);
    const char *why = NULL;
    ASSERT_OK(rl_class_check(&ok, &why));
    struct rl_class bad = ok;
    bad.name = "has:colon";
    ASSERT_EQ(rl_class_check(&bad, &why), ERR_INVALID);
    ASSERT(why != NULL);
    bad = ok, bad.limit = 0;
    ASSERT_EQ(rl_class_check(&bad, NULL), ERR_INVALID);
    bad = ok, bad.burst = 0;
    ASSERT_EQ(rl_class_check(&bad, NULL), ERR_INVALID);
    bad = ok, bad.batch = 0;
    ASSERT_EQ(rl_class_check(&bad, NULL), ERR_INVALID);
    bad = ok, bad.period_ms = 0;
    ASSERT_EQ(rl_class_check(&bad, NULL), ERR_INVALID);
    bad = ok, bad.name = "a-name-that-is-longer-than-32-chars";
    ASSERT_EQ(rl_class_check(&bad, NULL), ERR_INVALID);
    struct rl_class two[2] = {ok, bad};
    ASSERT(rl_new(NULL, two, 2, 10) == NULL);

    struct rl *rl = rl_new(NULL, &ok, 1, 10);
    ASSERT(rl != NULL);
    ASSERT_EQ(rl_class_find(rl, n1), 0);
    ASSERT_EQ(rl_class_find(rl, "nope"), ERR_NOTFOUND);
    struct res res = {0};
    struct rl_op *op = (struct rl_op *) &res;
    char big[RL_KEY_MAX + 2];
    memset(big, 'k', sizeof big);
    ASSERT_EQ(rl_check(rl, 0, "k", 0, on_check, &res, &op, NULL), ERR_INVALID);
    ASSERT(op == NULL);
    ASSERT_EQ(rl_check(rl, 0, big, RL_KEY_MAX + 1, on_check, &res, NULL, NULL), ERR_INVALID);
    ASSERT_EQ(rl_check(rl, 0, big, RL_KEY_MAX, on_check, &res, NULL, NULL), RL_ALLOW);
    ASSERT_EQ(rl_check(rl, 1, "k", 1, on_check, &res, NULL, NULL), ERR_INVALID);
    ASSERT_EQ(rl_check(rl, -1, "k", 1, on_check, &res, NULL, NULL), ERR_INVALID);
    ASSERT_EQ(rl_check(rl, 0, "k", 1, NULL, &res, NULL, NULL), ERR_INVALID);
    ASSERT_EQ(res.fired, 0);
    rl_free(rl);
    rl_free(NULL);
}

/* batch = 1: every request counted in Redis. 5 per second, 5 at once. */
TEST(exact_limit_with_batch_1)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "exact", 5, 1000, 5, 1);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    int pending = 0, retry = 0;
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(decide(&nd, 0, "ip:10.0.0.1", &retry, &pending), RL_ALLOW);
        ASSERT(pending); /* asked Redis, each time */
    }
    double t6 = test_now_ms();
    ASSERT_EQ(decide(&nd, 0, "ip:10.0.0.1", &retry, &pending), RL_DENY);
    ASSERT(!pending); /* Redis said when the next one is due with the 5th: cached */
    if (retry < 1 || retry > 200)
        FAIL_AT("retry_after %d ms, expected just under 200", retry);
    struct rl_stats s = stats(nd.rl);
    ASSERT_EQ(s.redis_calls - s.script_loads, 5); /* the first may have loaded the script */
    ASSERT_EQ(s.allowed, 5);
    ASSERT_EQ(s.denied, 1);
    ASSERT_EQ(s.cached_denied, 1);

    /* Another key is not affected. */
    ASSERT_EQ(decide(&nd, 0, "ip:10.0.0.2", NULL, NULL), RL_ALLOW);

    /* The key in Redis: the TAT in microseconds, expiring when the burst is back. */
    char rkey[128];
    snprintf(rkey, sizeof rkey, "rl:%s:ip:10.0.0.1", n1);
    redisReply *r = admin("PTTL %s", rkey);
    ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER);
    ASSERT(r->integer > 800 && r->integer <= 1001);
    freeReplyObject(r);
    r = admin("GET %s", rkey);
    ASSERT(r != NULL && r->type == REDIS_REPLY_STRING);
    char *colon = NULL;
    long long tat = strtoll(r->str, &colon, 10);
    ASSERT(tat > 1600000000000000LL && *colon == ':'); /* microseconds of Redis's clock */
    ASSERT_STR(colon, ":0");                           /* nothing given back */
    freeReplyObject(r);

    /* Allowed again once retry_after has passed, and only one. */
    run_for(nd.base, (int) (t6 + retry - test_now_ms()) + 1);
    ASSERT_EQ(decide(&nd, 0, "ip:10.0.0.1", &retry, NULL), RL_ALLOW);
    ASSERT_EQ(decide(&nd, 0, "ip:10.0.0.1", &retry, NULL), RL_DENY);
    if (retry < 100 || retry > 200)
        FAIL_AT("retry_after %d ms, expected ~200", retry);
    node_free(&nd);
}

/* batch = 10: one Redis call per ten requests; concurrent checks share a call. */
TEST(batch_reduces_redis_calls)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "batch", 100, 1000, 100, 10);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(decide(&nd, 0, "acct:1", NULL, NULL), RL_ALLOW);
    struct rl_stats s = stats(nd.rl);
    printf("# 100 checks one after another, batch 10: %llu Redis calls\n", s.redis_calls);
    ASSERT(s.redis_calls <= 11);
    ASSERT(s.local_allowed >= 89);

    /* 100 at once on a fresh key: one call for the first, one for the 99 that queued. */
    static struct res res[100];
    memset(res, 0, sizeof res);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(check(nd.rl, 0, "acct:2", &res[i], NULL, NULL), RL_PENDING);
    double end = test_now_ms() + 2000;
    int all = 0;
    while (!all && test_now_ms() < end) {
        run_for(nd.base, 2);
        all = 1;
        for (int i = 0; i < 100; i++)
            all &= res[i].fired == 1;
    }
    ASSERT(all);
    int allowed = 0;
    for (int i = 0; i < 100; i++)
        allowed += res[i].status == 0;
    ASSERT_EQ(allowed, 100);
    struct rl_stats s2 = stats(nd.rl);
    printf("# 100 checks at once: %llu Redis calls\n", s2.redis_calls - s.redis_calls);
    ASSERT(s2.redis_calls - s.redis_calls <= 3);
    /* The burst is spent: the next is denied. */
    ASSERT_EQ(decide(&nd, 0, "acct:2", NULL, NULL), RL_DENY);
    node_free(&nd);
}

/* Hammer one key for 1.2 s with batch 5: in every window the count stays within the exact GCRA
 * bound (burst + W / T) plus batch - 1. */
TEST(batch_stays_within_limit_plus_batch)
{
    enum { LIMIT = 20, PERIOD = 500, BURST = 20, BATCH = 5, RUN_MS = 1200, MAXA = 1000 };
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "window", LIMIT, PERIOD, BURST, BATCH);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    static double at[MAXA];
    int n = 0;
    double start = test_now_ms();
    while (test_now_ms() - start < RUN_MS && n < MAXA) {
        int rc = decide(&nd, 0, "acct:hammer", NULL, NULL);
        ASSERT(rc == RL_ALLOW || rc == RL_DENY);
        if (rc == RL_ALLOW)
            at[n++] = test_now_ms();
        else
            run_for(nd.base, 1);
    }
    double t_ms = (double) PERIOD / LIMIT;
    int worst = 0;
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (i + k < n && at[i + k] < at[i] + PERIOD)
            k++;
        if (k > worst)
            worst = k;
    }
    int exact = BURST + (int) (PERIOD / t_ms);
    double ideal = BURST + (test_now_ms() - start) / t_ms;
    struct rl_stats s = stats(nd.rl);
    printf("# %d allowed in %d ms (ideal %.0f); worst %d ms window %d (exact bound %d, +%d); "
           "%llu Redis calls\n",
           n, RUN_MS, ideal, PERIOD, worst, exact, BATCH - 1, s.redis_calls);
    ASSERT(worst <= exact + BATCH - 1);
    ASSERT(n <= ideal + BATCH);
    ASSERT(n >= ideal * 0.6); /* not much stricter than asked, either (slack for slow CI) */
    node_free(&nd);
}

/* Two nodes on one Redis share one limit, exact with batch 1 and within the burst with batch 4. */
TEST(two_nodes_share_the_limit)
{
    char n1[RL_NAME_MAX + 1], n2[RL_NAME_MAX + 1];
    struct rl_class cs[2] = {cls_make(n1, "share1", 10, 10000, 10, 1),
                             cls_make(n2, "share4", 10, 10000, 10, 4)};
    struct event_base *base = event_base_new();
    struct node a = node_new(base, port, 1000, cs, 2, 100);
    struct node b = node_new(base, port, 1000, cs, 2, 100);
    ASSERT(wait_up(base, a.r, 2000) && wait_up(base, b.r, 2000));
    for (int cls = 0; cls < 2; cls++) {
        int allowed_a = 0, allowed_b = 0;
        for (int i = 0; i < 15; i++) {
            allowed_a += decide(&a, cls, "ip:192.0.2.7", NULL, NULL) == RL_ALLOW;
            allowed_b += decide(&b, cls, "ip:192.0.2.7", NULL, NULL) == RL_ALLOW;
        }
        printf("# class batch %d: node a %d, node b %d allowed\n", cls ? 4 : 1, allowed_a,
               allowed_b);
        ASSERT_EQ(allowed_a + allowed_b, 10);
        ASSERT(allowed_a >= 4 && allowed_b >= 4);
    }
    node_free(&a);
    node_free(&b);
    event_base_free(base);
}

/* A node's unused reservation lapses and is given back with its next call. */
TEST(unused_reservation_lapses_and_is_given_back)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "lapse", 10, 1000, 20, 10);
    struct event_base *base = event_base_new();
    struct node a = node_new(base, port, 1000, &c, 1, 100);
    struct node b = node_new(base, port, 1000, &c, 1, 100);
    ASSERT(wait_up(base, a.r, 2000) && wait_up(base, b.r, 2000));
    /* Node b first uses the key for a while: some debt in Redis. */
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(decide(&b, 0, "acct:9", NULL, NULL), RL_ALLOW);
    /* Node a reserves 10, spends 1: 9 held for 900 ms, which b sees as spent. */
    ASSERT_EQ(decide(&a, 0, "acct:9", NULL, NULL), RL_ALLOW);
    int retry = 0;
    ASSERT_EQ(decide(&b, 0, "acct:9", &retry, NULL), RL_DENY);
    ASSERT(retry > 0 && retry <= 100);
    /* After 900 ms a's reservation has lapsed. Its next call gives the 9 unused back (900 ms
     * of TAT) before taking 10 again: Redis then owes 11 (t0) + 10 (now) = 2100 ms from t0,
     * 950 ms ago, so ~1150 ms; without the refund it would grant 9 and owe ~1950 ms. */
    run_for(base, 950);
    ASSERT_EQ(decide(&a, 0, "acct:9", NULL, NULL), RL_ALLOW);
    char rkey[128];
    snprintf(rkey, sizeof rkey, "rl:%s:acct:9", n1);
    redisReply *r = admin("PTTL %s", rkey);
    ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER);
    printf("# TAT - now after the refund: %lld ms (without it: ~1950)\n", r->integer);
    ASSERT(r->integer > 700 && r->integer <= 1151);
    freeReplyObject(r);
    node_free(&a);
    node_free(&b);
    event_base_free(base);
}

/* Redis unreachable from the start: the node limits by itself with the same numbers. */
TEST(redis_unreachable_falls_back_to_local_limits)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "down", 5, 1000, 5, 3);
    struct node nd = node_new(NULL, test_closed_port(), 200, &c, 1, 100);
    struct node none = node_new(NULL, 0, 0, &c, 1, 100);
    struct node *nodes[2] = {&nd, &none};
    for (int k = 0; k < 2; k++) {
        struct node *x = nodes[k];
        struct res res = {0};
        int retry = 0;
        for (int i = 0; i < 5; i++)
            ASSERT_EQ(check(x->rl, 0, "ip:10.9.9.9", &res, NULL, &retry), RL_ALLOW);
        double t6 = test_now_ms();
        ASSERT_EQ(check(x->rl, 0, "ip:10.9.9.9", &res, NULL, &retry), RL_DENY);
        if (retry < 150 || retry > 200)
            FAIL_AT("retry_after %d ms, expected ~200", retry);
        run_for(x->base, (int) (t6 + retry - test_now_ms()) + 1);
        ASSERT_EQ(check(x->rl, 0, "ip:10.9.9.9", &res, NULL, &retry), RL_ALLOW);
        ASSERT_EQ(check(x->rl, 0, "ip:10.9.9.9", &res, NULL, &retry), RL_DENY);
        ASSERT_EQ(res.fired, 0);
        struct rl_stats s = stats(x->rl);
        ASSERT_EQ(s.degraded, 1);
        ASSERT_EQ(s.redis_calls, 0);
        ASSERT_EQ(s.fallback_checks, 8);
    }
    node_free(&nd);
    node_free(&none);
}

/* Redis stops answering (CLIENT PAUSE) with a check in flight: it times out, the fallback
 * decides (starting from the debt Redis last reported), then Redis takes over again. */
TEST(redis_stops_answering_then_comes_back)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "pause", 5, 5000, 5, 1);
    struct node nd = node_new(NULL, port, 100, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    ASSERT_EQ(decide(&nd, 0, "acct:5", NULL, NULL), RL_ALLOW);
    ASSERT_EQ(decide(&nd, 0, "acct:5", NULL, NULL), RL_ALLOW);
    redisReply *r = admin("CLIENT PAUSE 700 ALL");
    ASSERT(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    double t0 = test_now_ms();

    struct res res = {0};
    ASSERT_EQ(check(nd.rl, 0, "acct:5", &res, NULL, NULL), RL_PENDING);
    ASSERT(run_until(nd.base, &res.fired, 1000));
    double took = res.at_ms - t0;
    if (took < 90 || took > 800)
        FAIL_AT("the fallback answered after %.0f ms, expected ~100 (the call's timeout)", took);
    ASSERT_OK(res.status); /* the 3rd of 5 */
    ASSERT_EQ(stats(nd.rl).degraded, 1);
    /* 2 spent through Redis + 1 now: the fallback allows 2 more, not a fresh burst of 5. */
    int allowed = 0, retry = 0;
    for (int i = 0; i < 5; i++)
        allowed += decide(&nd, 0, "acct:5", &retry, NULL) == RL_ALLOW;
    ASSERT_EQ(allowed, 2);
    ASSERT(retry > 0 && retry <= 1000);

    /* The pause ends; the client reconnects by itself; Redis decides again. */
    ASSERT(wait_up(nd.base, nd.r, 3000));
    unsigned long long calls = stats(nd.rl).redis_calls;
    ASSERT_EQ(decide(&nd, 0, "acct:new", NULL, NULL), RL_ALLOW);
    ASSERT_EQ(stats(nd.rl).redis_calls, calls + 1);
    ASSERT_EQ(stats(nd.rl).degraded, 0);
    node_free(&nd);
}

/* Redis restarts (MMO_TEST_REDIS_RESTART_CMD): fallback while down, then Redis again, its
 * script cache empty (NOSCRIPT, then EVAL). */
TEST(redis_restart_fallback_then_back)
{
    const char *cmd = getenv("MMO_TEST_REDIS_RESTART_CMD");
    if (cmd == NULL || *cmd == '\0') {
        printf("# skip: MMO_TEST_REDIS_RESTART_CMD is not set\n");
        return;
    }
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "restart", 1000, 1000, 1000, 1);
    struct node nd = node_new(NULL, port, 500, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    ASSERT_EQ(decide(&nd, 0, "acct:r", NULL, NULL), RL_ALLOW);
    ASSERT_OK(system(cmd));
    run_for(nd.base, 50); /* notice the drop */
    int pending = 1;
    double end = test_now_ms() + 10000;
    int seen_fallback = 0;
    while (test_now_ms() < end) {
        ASSERT_EQ(decide(&nd, 0, "acct:r", NULL, &pending), RL_ALLOW);
        if (stats(nd.rl).degraded)
            seen_fallback = 1;
        if (pending && !stats(nd.rl).degraded && rds_up(nd.r))
            break; /* Redis answered again */
        run_for(nd.base, 20);
    }
    struct rl_stats s = stats(nd.rl);
    ASSERT(seen_fallback || s.fallback_checks > 0 || s.redis_failures > 0);
    ASSERT_EQ(s.degraded, 0);
    ASSERT(s.script_loads >= 1);
    node_free(&nd);
}

/* The script cache is flushed: the next call gets NOSCRIPT and sends the script itself. */
TEST(noscript_sends_the_script_again)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "noscript", 100, 1000, 100, 1);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    ASSERT_EQ(decide(&nd, 0, "acct:1", NULL, NULL), RL_ALLOW);
    redisReply *r = admin("SCRIPT FLUSH");
    ASSERT(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    unsigned long long loads = stats(nd.rl).script_loads;
    ASSERT_EQ(decide(&nd, 0, "acct:1", NULL, NULL), RL_ALLOW);
    ASSERT_EQ(decide(&nd, 0, "acct:2", NULL, NULL), RL_ALLOW);
    struct rl_stats s = stats(nd.rl);
    ASSERT_EQ(s.script_loads, loads + 1);
    ASSERT_EQ(s.redis_failures, 0);
    ASSERT_EQ(s.degraded, 0);
    node_free(&nd);
}

/* 100,000 distinct keys through a table of 1000: it never holds more. */
TEST(table_stays_bounded)
{
    enum { KEYS = 100000, MAX = 1000, CHUNK = 250 };
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "many", 5, 60000, 5, 4);
    struct node nd = node_new(NULL, port, 2000, &c, 1, MAX);
    struct node none = node_new(NULL, 0, 0, &c, 1, MAX);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    static struct res res[CHUNK];
    char key[32];
    double t0 = test_now_ms();
    for (int base = 0; base < KEYS; base += CHUNK) {
        memset(res, 0, sizeof res);
        int pend = 0;
        for (int i = 0; i < CHUNK; i++) {
            snprintf(key, sizeof key, "ip:%d", base + i);
            int rc = check(nd.rl, 0, key, &res[i], NULL, NULL);
            ASSERT(rc == RL_PENDING);
            pend++;
            ASSERT_EQ(check(none.rl, 0, key, &res[i], NULL, NULL), RL_ALLOW);
        }
        double end = test_now_ms() + 3000;
        int done = 0;
        while (done < pend && test_now_ms() < end) {
            event_base_loop(nd.base, EVLOOP_ONCE);
            done = 0;
            for (int i = 0; i < CHUNK; i++)
                done += res[i].fired;
        }
        ASSERT_EQ(done, pend);
        ASSERT(stats(nd.rl).keys <= MAX);
    }
    struct rl_stats s = stats(nd.rl), s0 = stats(none.rl);
    printf("# %d keys through Redis in %.0f ms: %d entries, peak %d, %llu evictions\n", KEYS,
           test_now_ms() - t0, s.keys, s.keys_peak, s.evictions);
    ASSERT(s.keys_peak <= MAX);
    ASSERT_EQ(s.keys, MAX);
    ASSERT_EQ(s.allowed, KEYS);
    ASSERT(s.evictions >= KEYS - MAX);
    ASSERT(s0.keys_peak <= MAX);
    ASSERT_EQ(s0.keys, MAX);
    node_free(&nd);
    node_free(&none);
}

/* More keys in flight at once than the table holds: the extra checks still go to Redis, the
 * table stays at its size, and nothing is left behind. */
TEST(table_full_of_calls_in_flight)
{
    enum { MAX = 10, N = 50 };
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "full", 5, 1000, 5, 4);
    struct node nd = node_new(NULL, port, 1000, &c, 1, MAX);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    struct res res[N];
    memset(res, 0, sizeof res);
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "ip:f%d", i);
        ASSERT_EQ(check(nd.rl, 0, key, &res[i], NULL, NULL), RL_PENDING);
    }
    struct rl_stats s = stats(nd.rl);
    ASSERT_EQ(s.keys, MAX);
    ASSERT_EQ(s.unlisted, N - MAX);
    double end = test_now_ms() + 2000;
    int done = 0;
    while (done < N && test_now_ms() < end) {
        run_for(nd.base, 2);
        done = 0;
        for (int i = 0; i < N; i++)
            done += res[i].fired == 1 && res[i].status == 0;
    }
    ASSERT_EQ(done, N);
    s = stats(nd.rl);
    ASSERT_EQ(s.keys, MAX);
    ASSERT_EQ(s.unlisted, 0);
    ASSERT_EQ(s.redis_calls, N);
    node_free(&nd);
}

TEST(cancel_prevents_the_callback)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "cancel", 100, 1000, 100, 3);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    struct res a = {0}, b = {0}, d = {0}, e = {0}, f = {0};
    struct rl_op *op_a = NULL, *op_b = NULL, *op_d = NULL, *op_f = NULL;
    ASSERT_EQ(check(nd.rl, 0, "k1", &a, &op_a, NULL), RL_PENDING); /* the call: 3 wanted */
    ASSERT_EQ(check(nd.rl, 0, "k1", &b, &op_b, NULL), RL_PENDING); /* waiting for it */
    ASSERT_EQ(check(nd.rl, 0, "k1", &d, &op_d, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k1", &e, NULL, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k2", &f, &op_f, NULL), RL_PENDING); /* its own call */
    ASSERT(op_a && op_b && op_d && op_f);
    rl_op_cancel(op_b);
    rl_op_cancel(op_f);
    a.cancel_in_cb = op_d; /* allowed by the same answer as a; canceled before it fires */
    ASSERT(run_until(nd.base, &e.fired, 1000));
    run_for(nd.base, 30);
    ASSERT_EQ(a.fired, 1);
    ASSERT_OK(a.status);
    ASSERT_EQ(b.fired, 0);
    ASSERT_EQ(d.fired, 0);
    ASSERT_EQ(e.fired, 1);
    ASSERT_OK(e.status);
    ASSERT_EQ(f.fired, 0);
    rl_op_cancel(NULL);
    /* The canceled k2 call still came back: the key works as usual. */
    ASSERT_EQ(decide(&nd, 0, "k2", NULL, NULL), RL_ALLOW);
    node_free(&nd);
}

TEST(free_fires_closed_for_pending_checks)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "free", 100, 1000, 100, 1);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    struct res res[4] = {{0}};
    ASSERT_EQ(check(nd.rl, 0, "k1", &res[0], NULL, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k1", &res[1], NULL, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k2", &res[2], NULL, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k3", &res[3], NULL, NULL), RL_PENDING);
    rl_free(nd.rl);
    nd.rl = NULL;
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(res[i].fired, 1); /* before rl_free returned */
        ASSERT_EQ(res[i].status, ERR_CLOSED);
    }
    run_for(nd.base, 50); /* the replies come back to nobody */
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(res[i].fired, 1);
    node_free(&nd);
}

TEST(free_from_inside_a_callback)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "freecb", 100, 1000, 100, 2);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    struct res first = {0}, second = {0}, other = {0};
    first.free_in_cb = nd.rl;
    ASSERT_EQ(check(nd.rl, 0, "k1", &first, NULL, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k1", &second, NULL, NULL), RL_PENDING);
    ASSERT_EQ(check(nd.rl, 0, "k2", &other, NULL, NULL), RL_PENDING);
    ASSERT(run_until(nd.base, &first.fired, 1000));
    nd.rl = NULL;
    ASSERT_OK(first.status);
    ASSERT_EQ(second.fired, 1); /* allowed by the same answer, not fired yet: closed */
    ASSERT_EQ(second.status, ERR_CLOSED);
    ASSERT_EQ(other.fired, 1); /* its call was in flight (or answered just before) */
    ASSERT(other.status == ERR_CLOSED || other.status == 0);
    run_for(nd.base, 30);
    ASSERT_EQ(second.fired + other.fired, 2);
    node_free(&nd);
}

/* Keys are bytes: a NUL, spaces, '%' and non-ASCII make distinct, readable Redis keys. */
TEST(keys_are_any_bytes)
{
    char n1[RL_NAME_MAX + 1];
    struct rl_class c = cls_make(n1, "bytes", 1, 60000, 1, 1);
    struct node nd = node_new(NULL, port, 1000, &c, 1, 100);
    ASSERT(wait_up(nd.base, nd.r, 2000));
    static const char k1[] = {'a', '\0', ' ', '%', ':', (char) 0xff};
    static const char k2[] = {'a', '\1', ' ', '%', ':', (char) 0xff};
    struct res res = {0};
    ASSERT_EQ(rl_check(nd.rl, 0, k1, sizeof k1, on_check, &res, NULL, NULL), RL_PENDING);
    ASSERT(run_until(nd.base, &res.fired, 1000));
    ASSERT_OK(res.status);
    memset(&res, 0, sizeof res);
    ASSERT_EQ(rl_check(nd.rl, 0, k2, sizeof k2, on_check, &res, NULL, NULL), RL_PENDING);
    ASSERT(run_until(nd.base, &res.fired, 1000));
    ASSERT_OK(res.status);
    int retry = 0;
    ASSERT_EQ(rl_check(nd.rl, 0, k1, sizeof k1, on_check, &res, NULL, &retry), RL_DENY);
    char rkey[128];
    snprintf(rkey, sizeof rkey, "rl:%s:a%%00%%20%%25:%%FF", n1);
    redisReply *r = admin("EXISTS %s", rkey);
    ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER);
    ASSERT_EQ(r->integer, 1);
    freeReplyObject(r);
    node_free(&nd);
}

int main(void)
{
    parse_env();
    log_init("test", LOG_INFO);
    log_set_fd(2);
    RUN(classes_and_arguments_are_checked);
    RUN(exact_limit_with_batch_1);
    RUN(batch_reduces_redis_calls);
    RUN(batch_stays_within_limit_plus_batch);
    RUN(two_nodes_share_the_limit);
    RUN(unused_reservation_lapses_and_is_given_back);
    RUN(redis_unreachable_falls_back_to_local_limits);
    RUN(redis_stops_answering_then_comes_back);
    RUN(redis_restart_fallback_then_back);
    RUN(noscript_sends_the_script_again);
    RUN(table_stays_bounded);
    RUN(table_full_of_calls_in_flight);
    RUN(cancel_prevents_the_callback);
    RUN(free_fires_closed_for_pending_checks);
    RUN(free_from_inside_a_callback);
    RUN(keys_are_any_bytes);
    cleanup_keys();
    log_deinit();
    return test_summary();
}
