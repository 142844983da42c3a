/* test_replica.c -- core/replica.c: the freshness rule (pure), the rounds' bookkeeping (the
 * file is included, to judge made-up rounds), and the prober against real servers.
 *
 * The pure tests run anywhere. The prober's run with MMO_TEST_PG (a server that is not a
 * standby: never fresh) and, with MMO_TEST_PG_REPLICA too (tools/dev test's streaming replica
 * of it), fresh, stale while its replay is paused and fresh again once resumed. Without
 * those variables the live tests are skipped. Each live test frees its pools and event_base. */
#include "../../core/replica.c"
#include "test.h"
#include "test_loop.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdint.h>

/* ---- the rule ---------------------------------------------------------------------------- */

TEST(lsn_parse)
{
    uint64_t v = 1;
    ASSERT_OK(replica_lsn_parse("0/0", &v));
    ASSERT_EQ(v, 0);
    ASSERT_OK(replica_lsn_parse("16/B374D848", &v));
    ASSERT(v == 0x16B374D848ull);
    ASSERT_OK(replica_lsn_parse("0/3000060", &v));
    ASSERT(v == 0x3000060ull);
    ASSERT_OK(replica_lsn_parse("ffffffff/FFFFFFFF", &v));
    ASSERT(v == UINT64_MAX);
    /* 1/0 is above every 0/x: a 64-bit number, not two compared as text */
    uint64_t a, b;
    ASSERT_OK(replica_lsn_parse("1/0", &a));
    ASSERT_OK(replica_lsn_parse("0/FFFFFFFF", &b));
    ASSERT(a > b);
    static const char *const BAD[] = {"",     "1",           "1/",          "/1",   "1/2x", " 1/2",
                                      "1 /2", "100000000/0", "0/100000000", "-1/2", "g/1"};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        v = 7;
        ASSERT_EQ(replica_lsn_parse(BAD[i], &v), ERR_INVALID);
        ASSERT_EQ(v, 7);
    }
    ASSERT_EQ(replica_lsn_parse(NULL, &v), ERR_INVALID);
}

TEST(fresh_until_by_the_latest_covered_sample)
{
    ASSERT(replica_fresh_until(NULL, 0, 100, 5000) == INT64_MIN);        /* no sample yet */
    struct replica_sample s[] = {{1000, 100}, {3000, 300}, {2000, 200}}; /* any order */
    ASSERT(replica_fresh_until(s, 3, 99, 5000) == INT64_MIN);            /* covers none */
    ASSERT_EQ(replica_fresh_until(s, 3, 100, 5000), 6000);
    ASSERT_EQ(replica_fresh_until(s, 3, 250, 5000), 7000);
    ASSERT_EQ(replica_fresh_until(s, 3, 300, 5000), 8000);
    ASSERT_EQ(replica_fresh_until(s, 3, 1000, 1000), 4000); /* ahead of every sample */
    /* an idle primary: the same LSN in every sample, the replica has it: the newest counts */
    struct replica_sample idle[] = {{1000, 500}, {2000, 500}, {3000, 500}};
    ASSERT_EQ(replica_fresh_until(idle, 3, 500, 1000), 4000);
    ASSERT(replica_fresh_until(idle, 3, 499, 1000) == INT64_MIN);
}

/* The guarantee, checked by simulation: a primary commits at random times; a replica replays
 * with a small delay that varies, and is cut off (replays nothing) for 0.3-1.5 s at a random
 * moment of every 3 s, then catches up; probes every period keep samples as core/replica.c
 * does (the primary reads its LSN up to 2 ms after the probe is sent, the replica answers
 * 3 ms after). Whenever the rule says fresh at time t, the replica has replayed every commit
 * made before t - max_lag. And it is not too strict: away from the cuts the replica is fresh
 * nearly all the time, and during a cut it is not used from max_lag + a period on. (The same
 * run with fresh_until 60 ms later than the rule's fails the bound.) */
static uint64_t sim_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

TEST(rule_keeps_the_bound)
{
    enum { T = 600000, BLOCK = 3000, MAX_LAG = 1000, PERIOD = 250, RING = REPLICA_RING };
    static uint64_t primary[T]; /* LSN at the end of ms t: every commit made up to t */
    static uint64_t replay[T];  /* the replica's replay LSN at t */
    static int cut_start[T / BLOCK], cut_end[T / BLOCK];
    uint64_t x = 88172645463325252ull, lsn = 0;
    for (int t = 0; t < T; t++) {
        if (sim_rand(&x) % 3 == 0)
            lsn += 1 + sim_rand(&x) % 500; /* a commit at t */
        primary[t] = lsn;
    }
    for (int b = 0; b < T / BLOCK; b++) {
        cut_start[b] = b * BLOCK + (int) (sim_rand(&x) % 1000);
        cut_end[b] = cut_start[b] + 300 + (int) (sim_rand(&x) % 1201);
    }
    for (int t = 0; t < T; t++) {
        int b = t / BLOCK, cut = t >= cut_start[b] && t < cut_end[b];
        int d = (int) (sim_rand(&x) % 31);
        replay[t] = cut ? replay[t - 1] : primary[t - d >= 0 ? t - d : 0];
        if (t > 0 && replay[t] < replay[t - 1])
            replay[t] = replay[t - 1];
    }
    struct replica_sample ring[RING];
    int n = 0, head = 0, fresh_ms = 0, healthy_ms = 0, healthy_fresh_ms = 0, cut_fresh_ms = 0;
    int64_t until = INT64_MIN;
    for (int t = 0; t < T; t++) {
        if (t % PERIOD == 0) {
            int read = t + (int) (sim_rand(&x) % 3);
            head = (head + 1) % RING;
            ring[head].at_ms = t;
            ring[head].lsn = primary[read < T ? read : T - 1];
            if (n < RING)
                n++;
        }
        if (t % PERIOD == 3)
            until = replica_fresh_until(ring, n, replay[t], MAX_LAG);
        int fresh = t < until, b = t / BLOCK;
        fresh_ms += fresh;
        if (fresh && t > MAX_LAG && replay[t] < primary[t - MAX_LAG - 1])
            FAIL_AT("fresh at %d ms but missing a commit older than max_lag", t);
        if (t >= cut_start[b] + MAX_LAG + PERIOD && t < cut_end[b])
            cut_fresh_ms += fresh;
        if (t > 2000 && !(t >= cut_start[b] && t < cut_end[b] + PERIOD + 3)) {
            healthy_ms++;
            healthy_fresh_ms += fresh;
        }
    }
    ASSERT(fresh_ms > 0);
    ASSERT(healthy_fresh_ms >= healthy_ms * 99 / 100);
    ASSERT_EQ(cut_fresh_ms, 0);
}

/* ---- rounds, judged ------------------------------------------------------------------------ */

/* A round sent at sent_ms that both sides answered: the primary at plsn, the replica at rlsn. */
static void fake_round(struct replica *r, int64_t sent_ms, uint64_t plsn, uint64_t rlsn)
{
    r->sent_ms = sent_ms;
    r->side[SIDE_PRIMARY].status = r->side[SIDE_REPLICA].status = 0;
    r->side[SIDE_PRIMARY].lsn = plsn;
    r->side[SIDE_REPLICA].lsn = rlsn;
    r->pending = 0;
    judge(r);
}

/* Every sample counts, the newest included, before and after the ring wraps; samples closer
 * than max_lag/32 are thinned; a failed round ends freshness until the next good one. */
TEST(rounds_keep_their_samples)
{
    struct event_base *base = event_base_new();
    struct replica *r = replica_new(base, NULL, NULL, "t", 1000); /* its loop never runs */
    int64_t t0 = now_ms();
    ASSERT(!replica_fresh(r));
    ASSERT_EQ(replica_lag_bytes(r), -1);
    fake_round(r, t0, 100, 100); /* the first sample decides */
    ASSERT_EQ(r->fresh_until, t0 + 1000);
    ASSERT(replica_fresh(r));
    ASSERT_EQ(replica_lag_bytes(r), 0);
    for (int i = 1; i <= 3 * REPLICA_RING; i++) {
        /* the replica three rounds behind: the round before last-but-one is what it proves */
        fake_round(r, t0 + i * 50, 100 + (uint64_t) i, 100 + (uint64_t) (i >= 3 ? i - 3 : 0));
        ASSERT_EQ(r->fresh_until, t0 + (i >= 3 ? i - 3 : 0) * 50 + 1000);
        ASSERT_EQ(replica_lag_bytes(r), i >= 3 ? 3 : i);
    }
    ASSERT_EQ(r->nring, REPLICA_RING);
    /* caught up with the newest */
    int64_t last = t0 + 3 * REPLICA_RING * 50;
    fake_round(r, last + 50, 500, 500);
    ASSERT_EQ(r->fresh_until, last + 50 + 1000);
    /* a failed round: not fresh, the lag as last measured */
    r->sent_ms = last + 100;
    r->side[SIDE_PRIMARY].status = 0;
    r->side[SIDE_REPLICA].status = ERR_TIMEOUT;
    r->pending = 0;
    judge(r);
    ASSERT(!replica_fresh(r));
    ASSERT_EQ(r->failed, ERR_TIMEOUT);
    ASSERT_EQ(replica_lag_bytes(r), 0);
    fake_round(r, last + 150, 500, 500);
    ASSERT(replica_fresh(r));
    /* rounds 10 ms apart (max_lag/32 = 31 ms): one in four kept */
    int n = r->nring, head = r->head;
    for (int i = 1; i <= 8; i++)
        fake_round(r, last + 150 + i * 10, 500, 500);
    ASSERT_EQ(r->nring, n);
    ASSERT_EQ(r->head, (head + 2) % REPLICA_RING);
    replica_free(r);
    event_base_free(base);
}

/* ---- the prober, live -------------------------------------------------------------------- */

static void run_for(struct event_base *base, int ms)
{
    int never = 0;
    test_run_until(base, &never, ms, 10000);
}

static struct db_pool *pool(struct event_base *base, const char *conninfo)
{
    struct db_opts o = {conninfo, 2, 2000, 2000, 500};
    return db_pool_new(base, &o);
}

/* Run until replica_fresh(r) == want, at most ms; returns whether it got there. */
static int wait_fresh(struct event_base *base, struct replica *r, int want, int ms)
{
    double end = test_now_ms() + ms;
    while (replica_fresh(r) != want && test_now_ms() < end)
        run_for(base, 20);
    return replica_fresh(r) == want;
}

/* Run sql on conninfo, blocking (test setup only). 0 or -1. */
static int exec_sync(const char *conninfo, const char *sql)
{
    PGconn *pg = PQconnectdb(conninfo);
    int ok = PQstatus(pg) == CONNECTION_OK;
    if (ok) {
        PGresult *res = PQexec(pg, sql);
        ok = PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
    }
    PQfinish(pg);
    return ok ? 0 : -1;
}

/* A "replica" that is the primary itself is not in recovery: never fresh. Freed with a probe
 * round in flight: its callbacks never fire (ASan would see a use after free). */
TEST(not_a_standby_is_never_fresh)
{
    const char *pg = getenv("MMO_TEST_PG");
    struct event_base *base = event_base_new();
    struct db_pool *p = pool(base, pg), *q = pool(base, pg);
    struct replica *r = replica_new(base, p, q, "main", 300);
    run_for(base, 800);
    ASSERT(!replica_fresh(r));
    ASSERT_EQ(replica_lag_bytes(r), -1);
    replica_free(r);
    r = replica_new(base, p, q, "main", 300);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK); /* the first round goes out */
    replica_free(r);
    db_pool_free(q);
    db_pool_free(p);
    event_base_free(base);
}

/* A replica that cannot be reached: not fresh, and the pools' errors end the rounds. */
TEST(unreachable_replica_is_never_fresh)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool(base, getenv("MMO_TEST_PG"));
    struct db_pool *q = pool(base, "host=127.0.0.1 port=1 dbname=x user=postgres");
    struct replica *r = replica_new(base, p, q, "main", 300);
    run_for(base, 800);
    ASSERT(!replica_fresh(r));
    replica_free(r);
    db_pool_free(q);
    db_pool_free(p);
    event_base_free(base);
}

/* The real streaming replica: fresh; replay paused and a commit on the primary: stale after
 * max_lag; replay resumed: fresh again. */
TEST(paused_replay_turns_stale_then_fresh)
{
    const char *pg = getenv("MMO_TEST_PG"), *rep = getenv("MMO_TEST_PG_REPLICA");
    struct event_base *base = event_base_new();
    struct db_pool *p = pool(base, pg), *q = pool(base, rep);
    struct replica *r = replica_new(base, p, q, "main", 400);
    int fresh = wait_fresh(base, r, 1, 5000);
    int64_t lag = replica_lag_bytes(r);
    int paused = exec_sync(rep, "select pg_wal_replay_pause()") == 0;
    /* a commit that writes WAL (an xid is assigned) */
    int wrote = paused && exec_sync(pg, "select txid_current()") == 0;
    int stale = wrote && wait_fresh(base, r, 0, 5000);
    int64_t lag_paused = replica_lag_bytes(r);
    if (paused)
        exec_sync(rep, "select pg_wal_replay_resume()");
    int again = wait_fresh(base, r, 1, 5000);
    replica_free(r);
    db_pool_free(q);
    db_pool_free(p);
    event_base_free(base);
    ASSERT(fresh);
    ASSERT(lag >= 0);
    ASSERT(paused && wrote);
    ASSERT(stale);
    ASSERT(lag_paused > 0);
    ASSERT(again);
}

int main(void)
{
    log_init("test", getenv("MMO_TEST_LOG") ? LOG_DEBUG : LOG_OFF);
    RUN(lsn_parse);
    RUN(fresh_until_by_the_latest_covered_sample);
    RUN(rule_keeps_the_bound);
    RUN(rounds_keep_their_samples);
    if (getenv("MMO_TEST_PG") && *getenv("MMO_TEST_PG")) {
        RUN(not_a_standby_is_never_fresh);
        RUN(unreachable_replica_is_never_fresh);
    } else {
        printf("ok # skip the prober against a server: MMO_TEST_PG is not set\n");
    }
    if (getenv("MMO_TEST_PG") && getenv("MMO_TEST_PG_REPLICA") && *getenv("MMO_TEST_PG_REPLICA"))
        RUN(paused_replay_turns_stale_then_fresh);
    else
        printf("ok # skip the prober against a replica: MMO_TEST_PG_REPLICA is not set\n");
    log_deinit();
    return test_summary();
}
