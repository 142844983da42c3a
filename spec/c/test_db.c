/* test_db.c -- core/db.c against a real PostgreSQL (env MMO_TEST_PG, a libpq conninfo).
 *
 * Each test makes its own event_base and pool and frees both, so ASan/LSan see every object.
 * Optional: MMO_TEST_PG_STOP_CMD and MMO_TEST_PG_START_CMD (shell commands) enable the test
 * that stops the server under a running pool and checks that the pool recovers by itself. */
#include "test.h"
#include "test_loop.h"

#include "db.h"
#include "err.h"
#include "log.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* One call's outcome, filled by the callbacks below. */
struct call {
    int fired;
    int status;
    int order; /* completion order among the calls of a test */
    char value[128];
    char sqlstate[8];
    struct db_conn *conn;
    struct db_pool *free_pool; /* free this pool from inside the callback */
};

static int g_order;

static void on_result(struct pg_result *res, int status, void *ud)
{
    struct call *c = ud;
    c->fired++;
    c->status = status;
    c->order = ++g_order;
    if (status == 0 && PQntuples(res) > 0 && PQnfields(res) > 0)
        snprintf(c->value, sizeof c->value, "%s", PQgetvalue(res, 0, 0));
    if (status == ERR_QUERY) {
        const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(c->sqlstate, sizeof c->sqlstate, "%s", s ? s : "");
    }
    if (c->free_pool)
        db_pool_free(c->free_pool);
}

static void on_reserve(struct db_conn *conn, int status, void *ud)
{
    struct call *c = ud;
    c->fired++;
    c->status = status;
    c->order = ++g_order;
    c->conn = conn;
}

/* Run the loop until *flag != 0 or ms pass; returns *flag. */
static int run_until(struct event_base *base, const int *flag, int ms)
{
    return test_run_until(base, flag, ms, 10000);
}

static void run_for(struct event_base *base, int ms)
{
    int never = 0;
    run_until(base, &never, ms);
}

/* Run until the pool has n connections up. */
static int wait_up(struct event_base *base, struct db_pool *p, int n, int ms)
{
    double end = test_now_ms() + ms;
    while (db_pool_up(p) < n && test_now_ms() < end)
        run_for(base, 10);
    return db_pool_up(p) >= n;
}

static struct db_opts opts_for(const char *conninfo, int size)
{
    struct db_opts o = {conninfo, size, 2000, 2000, 500};
    return o;
}

static struct db_pool *pool_up(struct event_base *base, int size)
{
    struct db_opts o = opts_for(test_env("MMO_TEST_PG"), size);
    struct db_pool *p = db_pool_new(base, &o);
    if (!wait_up(base, p, size, 3000)) {
        db_pool_free(p);
        return NULL;
    }
    return p;
}

/* Run sql on p and wait for the result. */
static int query_sync(struct event_base *base, struct db_pool *p, const char *sql, int n,
                      const char *const *params, struct call *c)
{
    memset(c, 0, sizeof *c);
    int rc = db_query(p, sql, n, params, NULL, 0, on_result, c, NULL);
    if (rc < 0)
        return rc;
    run_until(base, &c->fired, 5000);
    return c->fired ? c->status : ERR_TIMEOUT;
}

static int conn_query_sync(struct event_base *base, struct db_conn *conn, const char *sql, int n,
                           const char *const *params, struct call *c)
{
    memset(c, 0, sizeof *c);
    int rc = db_conn_query(conn, sql, n, params, NULL, 0, on_result, c, NULL);
    if (rc < 0)
        return rc;
    run_until(base, &c->fired, 5000);
    return c->fired ? c->status : ERR_TIMEOUT;
}

TEST(query_with_params)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call c;
    const char *params[] = {"40", "2", NULL};
    ASSERT_OK(query_sync(base, p, "select $1::int + $2::int, $3::text is null", 3, params, &c));
    ASSERT_EQ(c.fired, 1);
    ASSERT_STR(c.value, "42");
    /* Lengths given: the copy stops at each length. */
    struct call d = {0};
    const char *p2[] = {"hello world"};
    const int len[] = {5};
    ASSERT_OK(db_query(p, "select $1::text", 1, p2, len, 0, on_result, &d, NULL));
    ASSERT_EQ(d.fired, 0); /* never from inside the call */
    run_until(base, &d.fired, 3000);
    ASSERT_STR(d.value, "hello");
    /* A NUL inside a text parameter is refused, not truncated. */
    const char *p3[] = {"a\0b"};
    const int len3[] = {3};
    ASSERT_EQ(db_query(p, "select $1::text", 1, p3, len3, 0, on_result, &d, NULL), ERR_INVALID);
    db_pool_free(p);
    event_base_free(base);
}

TEST(statement_timeout_set_at_connect)
{
    const char *pg = test_env("MMO_TEST_PG");
    if (strncmp(pg, "postgres", 8) == 0) /* a URI: cannot append a keyword */
        return;
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "%s options='-c search_path=dbtest_x'", pg);
    struct event_base *base = event_base_new();
    struct db_opts o = opts_for(conninfo, 1);
    o.query_timeout_ms = 2500;
    struct db_pool *p = db_pool_new(base, &o);
    ASSERT(wait_up(base, p, 1, 3000));
    struct call c;
    ASSERT_OK(query_sync(base, p, "select current_setting('statement_timeout')", 0, NULL, &c));
    ASSERT_STR(c.value, "3500ms");
    ASSERT_OK(query_sync(base, p, "select current_setting('search_path')", 0, NULL, &c));
    ASSERT_STR(c.value, "dbtest_x"); /* the user's options are kept */
    db_pool_free(p);
    event_base_free(base);
}

TEST(parallel_queries_do_not_block)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 2);
    ASSERT(p != NULL);
    struct call slow = {0}, fast = {0};
    double t0 = test_now_ms();
    ASSERT_OK(db_query(p, "select pg_sleep(0.3)", 0, NULL, NULL, 0, on_result, &slow, NULL));
    ASSERT_OK(db_query(p, "select 7", 0, NULL, NULL, 0, on_result, &fast, NULL));
    run_until(base, &fast.fired, 3000);
    double t_fast = test_now_ms() - t0;
    ASSERT_EQ(fast.status, 0);
    ASSERT_EQ(slow.fired, 0);
    ASSERT(t_fast < 250);
    run_until(base, &slow.fired, 3000);
    ASSERT_EQ(slow.status, 0);
    ASSERT(fast.order < slow.order);
    ASSERT(test_now_ms() - t0 >= 290);
    db_pool_free(p);
    event_base_free(base);
}

TEST(queue_is_fifo)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call c[4];
    memset(c, 0, sizeof c);
    g_order = 0;
    ASSERT_OK(db_query(p, "select pg_sleep(0.05)", 0, NULL, NULL, 0, on_result, &c[0], NULL));
    for (int i = 1; i < 4; i++)
        ASSERT_OK(db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &c[i], NULL));
    ASSERT_EQ(db_pool_waiting(p), 3);
    run_until(base, &c[3].fired, 3000);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(c[i].status, 0);
        ASSERT_EQ(c[i].order, i + 1);
    }
    ASSERT_EQ(db_pool_waiting(p), 0);
    db_pool_free(p);
    event_base_free(base);
}

TEST(timeout_then_pool_still_works)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call slow = {0}, queued = {0};
    double t0 = test_now_ms();
    ASSERT_OK(db_query(p, "select pg_sleep(3)", 0, NULL, NULL, 200, on_result, &slow, NULL));
    /* Waits behind the slow one, and times out in the queue. */
    ASSERT_OK(db_query(p, "select 1", 0, NULL, NULL, 100, on_result, &queued, NULL));
    run_until(base, &queued.fired, 2000);
    ASSERT_EQ(queued.status, ERR_TIMEOUT);
    ASSERT_EQ(slow.fired, 0);
    run_until(base, &slow.fired, 2000);
    double dt = test_now_ms() - t0;
    ASSERT_EQ(slow.status, ERR_TIMEOUT);
    ASSERT(dt >= 190 && dt < 600);
    /* The connection was closed and is made again; the next query succeeds. */
    struct call c;
    ASSERT_OK(query_sync(base, p, "select 'after'", 0, NULL, &c));
    ASSERT_STR(c.value, "after");
    ASSERT_EQ(db_pool_up(p), 1);
    db_pool_free(p);
    event_base_free(base);
}

TEST(syntax_error_is_query_error)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call c;
    ASSERT_EQ(query_sync(base, p, "selec 1", 0, NULL, &c), ERR_QUERY);
    ASSERT_STR(c.sqlstate, "42601");
    const char *bad[] = {"x"};
    ASSERT_EQ(query_sync(base, p, "select $1::int", 1, bad, &c), ERR_QUERY);
    ASSERT_STR(c.sqlstate, "22P02");
    /* Same connection, still in the pool. */
    ASSERT_EQ(db_pool_up(p), 1);
    ASSERT_OK(query_sync(base, p, "select 5", 0, NULL, &c));
    ASSERT_STR(c.value, "5");
    db_pool_free(p);
    event_base_free(base);
}

TEST(cancel_prevents_callback)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call running = {0}, queued = {0}, kept = {0};
    struct db_op *op1, *op2;
    ASSERT_OK(db_query(p, "select pg_sleep(0.2)", 0, NULL, NULL, 0, on_result, &running, &op1));
    ASSERT_OK(db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &queued, &op2));
    ASSERT_OK(db_query(p, "select 2", 0, NULL, NULL, 0, on_result, &kept, NULL));
    db_op_cancel(op1);
    db_op_cancel(op2);
    run_until(base, &kept.fired, 3000);
    ASSERT_STR(kept.value, "2");
    run_for(base, 100);
    ASSERT_EQ(running.fired, 0);
    ASSERT_EQ(queued.fired, 0);
    /* A reservation canceled before it is handed over gives its connection back. */
    struct call r = {0};
    struct db_op *op3;
    ASSERT_OK(db_reserve(p, 0, on_reserve, &r, &op3));
    db_op_cancel(op3);
    run_for(base, 50);
    ASSERT_EQ(r.fired, 0);
    struct call c;
    ASSERT_OK(query_sync(base, p, "select 3", 0, NULL, &c));
    db_pool_free(p);
    event_base_free(base);
}

TEST(pool_free_fires_closed)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call running = {0}, queued = {0}, reserve = {0};
    ASSERT_OK(db_query(p, "select pg_sleep(1)", 0, NULL, NULL, 0, on_result, &running, NULL));
    ASSERT_OK(db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &queued, NULL));
    ASSERT_OK(db_reserve(p, 0, on_reserve, &reserve, NULL));
    run_for(base, 20);
    db_pool_free(p);
    ASSERT_EQ(running.fired, 1);
    ASSERT_EQ(running.status, ERR_CLOSED);
    ASSERT_EQ(queued.fired, 1);
    ASSERT_EQ(queued.status, ERR_CLOSED);
    ASSERT_EQ(reserve.fired, 1);
    ASSERT_EQ(reserve.status, ERR_CLOSED);
    ASSERT(reserve.conn == NULL);
    event_base_free(base);
}

TEST(pool_free_from_inside_callback)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 2);
    ASSERT(p != NULL);
    struct call first = {0}, other = {0};
    first.free_pool = p;
    ASSERT_OK(db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &first, NULL));
    ASSERT_OK(db_query(p, "select pg_sleep(1)", 0, NULL, NULL, 0, on_result, &other, NULL));
    run_until(base, &first.fired, 3000);
    ASSERT_EQ(first.status, 0);
    ASSERT_EQ(other.fired, 1);
    ASSERT_EQ(other.status, ERR_CLOSED);
    run_for(base, 20);
    event_base_free(base);
}

TEST(reserve_transaction_rollback)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 2);
    ASSERT(p != NULL);
    char table[64], sql[256];
    snprintf(table, sizeof table, "dbtest.t_%d", (int) getpid());
    struct call c;
    ASSERT_OK(query_sync(base, p, "create schema if not exists dbtest", 0, NULL, &c));
    snprintf(sql, sizeof sql, "create table %s (x int)", table);
    ASSERT_OK(query_sync(base, p, sql, 0, NULL, &c));

    struct call r = {0};
    ASSERT_OK(db_reserve(p, 0, on_reserve, &r, NULL));
    ASSERT_EQ(r.fired, 0); /* handed over on a later loop turn */
    run_until(base, &r.fired, 3000);
    ASSERT_OK(r.status);
    ASSERT(r.conn != NULL);
    ASSERT_OK(conn_query_sync(base, r.conn, "begin", 0, NULL, &c));
    snprintf(sql, sizeof sql, "insert into %s values ($1)", table);
    const char *one[] = {"1"};
    ASSERT_OK(conn_query_sync(base, r.conn, sql, 1, one, &c));
    snprintf(sql, sizeof sql, "select count(*) from %s", table);
    ASSERT_OK(conn_query_sync(base, r.conn, sql, 0, NULL, &c));
    ASSERT_STR(c.value, "1");
    /* One query at a time on a reserved connection. */
    struct call busy1 = {0}, busy2 = {0};
    ASSERT_OK(db_conn_query(r.conn, "select 1", 0, NULL, NULL, 0, on_result, &busy1, NULL));
    ASSERT_EQ(db_conn_query(r.conn, "select 1", 0, NULL, NULL, 0, on_result, &busy2, NULL),
              ERR_BUSY);
    run_until(base, &busy1.fired, 3000);
    ASSERT_OK(conn_query_sync(base, r.conn, "rollback", 0, NULL, &c));
    db_release(r.conn, 0);
    ASSERT_OK(query_sync(base, p, sql, 0, NULL, &c));
    ASSERT_STR(c.value, "0");

    /* Released with the transaction left open: the connection is closed, nothing commits. */
    struct db_pool *one_conn = pool_up(base, 1);
    ASSERT(one_conn != NULL);
    memset(&r, 0, sizeof r);
    ASSERT_OK(db_reserve(one_conn, 0, on_reserve, &r, NULL));
    run_until(base, &r.fired, 3000);
    ASSERT_OK(conn_query_sync(base, r.conn, "begin", 0, NULL, &c));
    snprintf(sql, sizeof sql, "insert into %s values (2)", table);
    ASSERT_OK(conn_query_sync(base, r.conn, sql, 0, NULL, &c));
    db_release(r.conn, 0);
    snprintf(sql, sizeof sql, "select count(*) from %s", table);
    ASSERT_OK(query_sync(base, one_conn, sql, 0, NULL, &c));
    ASSERT_STR(c.value, "0");
    db_pool_free(one_conn);

    snprintf(sql, sizeof sql, "drop table %s", table);
    ASSERT_OK(query_sync(base, p, sql, 0, NULL, &c));
    db_pool_free(p);
    event_base_free(base);
}

TEST(reserved_conn_outlives_pool)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    ASSERT(p != NULL);
    struct call r = {0}, waiting = {0}, c;
    ASSERT_OK(db_reserve(p, 0, on_reserve, &r, NULL));
    run_until(base, &r.fired, 3000);
    ASSERT(r.conn != NULL);
    /* The only connection is reserved: a query waits, then times out in the queue. */
    ASSERT_OK(db_query(p, "select 1", 0, NULL, NULL, 100, on_result, &waiting, NULL));
    run_until(base, &waiting.fired, 2000);
    ASSERT_EQ(waiting.status, ERR_TIMEOUT);
    db_pool_free(p);
    /* The holder's handle stays valid (closed) until released. */
    ASSERT_EQ(db_conn_query(r.conn, "select 1", 0, NULL, NULL, 0, on_result, &c, NULL), ERR_CLOSED);
    db_release(r.conn, 0);
    event_base_free(base);
}

TEST(unavailable_fails_fast)
{
    struct event_base *base = event_base_new();
    struct db_opts o = opts_for("host=127.0.0.1 port=1 user=nobody dbname=none", 2);
    struct db_pool *p = db_pool_new(base, &o);
    /* Calls made while the first attempts run wait for them, then fail. */
    struct call early = {0};
    int rc = db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &early, NULL);
    if (rc == 0) {
        run_until(base, &early.fired, 2000);
        ASSERT_EQ(early.status, ERR_UNAVAILABLE);
    } else {
        ASSERT_EQ(rc, ERR_UNAVAILABLE);
    }
    run_for(base, 50);
    ASSERT_EQ(db_pool_up(p), 0);
    struct call c = {0};
    double t0 = test_now_ms();
    ASSERT_EQ(db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &c, NULL), ERR_UNAVAILABLE);
    ASSERT_EQ(db_reserve(p, 0, on_reserve, &c, NULL), ERR_UNAVAILABLE);
    ASSERT(test_now_ms() - t0 < 50);
    run_for(base, 300); /* a few backoff attempts */
    ASSERT_EQ(c.fired, 0);
    ASSERT_EQ(db_pool_up(p), 0);
    db_pool_free(p);
    event_base_free(base);
}

TEST(dropped_backend_recovers)
{
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 1);
    struct db_pool *admin = pool_up(base, 1);
    ASSERT(p != NULL && admin != NULL);
    struct call pid = {0}, c, inflight = {0}, after = {0};
    /* In flight: the query on a killed backend completes with ERR_UNAVAILABLE. */
    ASSERT_OK(query_sync(base, p, "select pg_backend_pid()", 0, NULL, &pid));
    ASSERT_OK(db_query(p, "select pg_sleep(2)", 0, NULL, NULL, 0, on_result, &inflight, NULL));
    run_for(base, 50);
    const char *params[] = {pid.value};
    ASSERT_OK(query_sync(base, admin, "select pg_terminate_backend($1::int)", 1, params, &c));
    run_until(base, &inflight.fired, 2000);
    ASSERT_EQ(inflight.status, ERR_UNAVAILABLE);
    /* Reconnecting at once: calls wait for it instead of failing. */
    ASSERT_OK(db_query(p, "select pg_backend_pid()", 0, NULL, NULL, 0, on_result, &after, NULL));
    run_until(base, &after.fired, 3000);
    ASSERT_OK(after.status);
    ASSERT(strcmp(after.value, pid.value) != 0);
    /* Idle: the loss is noticed without a query, and the pool comes back by itself. */
    params[0] = after.value;
    ASSERT_OK(query_sync(base, admin, "select pg_terminate_backend($1::int)", 1, params, &c));
    run_for(base, 100);
    ASSERT(wait_up(base, p, 1, 3000));
    ASSERT_OK(query_sync(base, p, "select pg_backend_pid()", 0, NULL, &c));
    ASSERT(strcmp(c.value, after.value) != 0);
    db_pool_free(admin);
    db_pool_free(p);
    event_base_free(base);
}

TEST(server_restart_recovers)
{
    const char *stop = getenv("MMO_TEST_PG_STOP_CMD");
    const char *start = getenv("MMO_TEST_PG_START_CMD");
    if (stop == NULL || start == NULL || !*stop || !*start) {
        printf("# skipped: MMO_TEST_PG_STOP_CMD / MMO_TEST_PG_START_CMD not set\n");
        return;
    }
    struct event_base *base = event_base_new();
    struct db_pool *p = pool_up(base, 2);
    ASSERT(p != NULL);
    struct call inflight = {0}, c;
    ASSERT_OK(db_query(p, "select pg_sleep(2)", 0, NULL, NULL, 5000, on_result, &inflight, NULL));
    run_for(base, 50);
    ASSERT_OK(system(stop));
    run_until(base, &inflight.fired, 2000);
    ASSERT_EQ(inflight.status, ERR_UNAVAILABLE);
    run_for(base, 200);
    ASSERT_EQ(db_pool_up(p), 0);
    ASSERT_EQ(db_query(p, "select 1", 0, NULL, NULL, 0, on_result, &c, NULL), ERR_UNAVAILABLE);
    ASSERT_OK(system(start));
    ASSERT(wait_up(base, p, 2, 5000)); /* nothing from outside: backoff retries find it */
    ASSERT_OK(query_sync(base, p, "select 'back'", 0, NULL, &c));
    ASSERT_STR(c.value, "back");
    db_pool_free(p);
    event_base_free(base);
}

int main(void)
{
    log_init("test", getenv("MMO_TEST_LOG") ? LOG_DEBUG : LOG_OFF);
    test_env("MMO_TEST_PG");
    RUN(query_with_params);
    RUN(statement_timeout_set_at_connect);
    RUN(parallel_queries_do_not_block);
    RUN(queue_is_fifo);
    RUN(timeout_then_pool_still_works);
    RUN(syntax_error_is_query_error);
    RUN(cancel_prevents_callback);
    RUN(pool_free_fires_closed);
    RUN(pool_free_from_inside_callback);
    RUN(reserve_transaction_rollback);
    RUN(reserved_conn_outlives_pool);
    RUN(unavailable_fails_fast);
    RUN(dropped_backend_recovers);
    RUN(server_restart_recovers);
    log_deinit();
    return test_summary();
}
