/* test_rds.c -- core/rds.c against a real Redis (MMO_TEST_REDIS = "127.0.0.1:PORT").
 *
 * Each test makes its own event_base and client and frees both (ASan/LSan check the rest).
 * Keys live under "test_rds:" and are deleted at the end. The optional restart test runs
 * MMO_TEST_REDIS_RESTART_CMD (a shell command that stops Redis and starts it again) and checks
 * that the client and a subscriber come back by themselves.
 *
 * The subscriber (rds_sub) tests use channels "test_rds:<pid>:<name>" and find their own
 * connection in CLIENT LIST by its name ("mmo:sub:<channel>") to kill it. The two-node test is
 * the C half of the layered cache: two lcaches fed by two subscribers, one write published. */
#include "test.h"
#include "test_cmds.h"
#include "test_loop.h"

#include "err.h"
#include "lcache.h"
#include "log.h"
#include "rds.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#define PFX "test_rds:"

static char host[64];
static int port;

static void parse_env(void)
{
    test_redis_addr(host, sizeof host, &port);
}

/* ---- running the loop ----------------------------------------------------------------------- */

/* Run the loop until *flag != 0 or ms pass; returns *flag. */
static int run_until(struct event_base *base, const int *flag, int ms)
{
    return test_run_until(base, flag, ms, 2000);
}

static void run_for(struct event_base *base, int ms)
{
    int never = 0;
    run_until(base, &never, ms);
}

struct up_flag {
    struct rds *r;
    int up;
};

static void on_up_tick(evutil_socket_t fd, short what, void *arg)
{
    struct up_flag *u = arg;
    u->up = rds_up(u->r);
}

static int wait_up(struct event_base *base, struct rds *r, int ms)
{
    struct up_flag u = {r, rds_up(r)};
    struct event *ev = event_new(base, -1, EV_PERSIST, on_up_tick, &u);
    struct timeval tv = {0, 5000};
    event_add(ev, &tv);
    run_until(base, &u.up, ms);
    event_free(ev);
    return u.up;
}

/* ---- one batch's outcome, copied out of the callback ---------------------------------------- */

#define MAXR 8

struct res {
    int fired;
    int status;
    int n;
    int type[MAXR];
    long long integer[MAXR];
    char str[MAXR][128];
    double at_ms;
    struct rds *free_in_cb;      /* rds_free from inside the callback */
    struct rds_op *cancel_in_cb; /* rds_op_cancel from inside the callback */
};

static void on_batch(struct redisReply **replies, int n, int status, void *ud)
{
    struct res *res = ud;
    res->fired++;
    res->status = status;
    res->n = n;
    res->at_ms = test_now_ms();
    if (status == 0) {
        for (int i = 0; i < n && i < MAXR; i++) {
            res->type[i] = replies[i]->type;
            res->integer[i] = replies[i]->integer;
            if (replies[i]->str)
                snprintf(res->str[i], sizeof res->str[i], "%.*s", (int) replies[i]->len,
                         replies[i]->str);
        }
    }
    if (res->cancel_in_cb)
        rds_op_cancel(res->cancel_in_cb);
    if (res->free_in_cb)
        rds_free(res->free_in_cb);
}

/* Send up to 8 commands given as space-separated words (test_cmds.h). */
static int batch_send(struct rds *r, int timeout_ms, struct res *res, struct rds_op **op,
                      const char *const *cmds, int ncmds)
{
    static struct test_cmds t;
    test_cmds_split(&t, cmds, ncmds);
    return rds_batch(r, ncmds, t.argc, t.argv, t.argvlen, timeout_ms, on_batch, res, op);
}

#define SEND(r, ms, res, op, ...)                                                                  \
    batch_send((r), (ms), (res), (op), (const char *const[]){__VA_ARGS__},                         \
               (int) (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))

struct client {
    struct event_base *base;
    struct rds *r;
};

static struct client client_new(int p, int connect_ms, int timeout_ms, int retry_max_ms)
{
    struct client c;
    c.base = event_base_new();
    struct rds_opts o = {host, p, connect_ms, timeout_ms, retry_max_ms, NULL};
    c.r = rds_new(c.base, &o);
    return c;
}

static void client_free(struct client *c)
{
    rds_free(c->r);
    event_base_free(c->base);
}

/* Run the loop until pred(arg) holds (checked every millisecond) or ms pass. */
struct poll {
    int (*pred)(void *);
    void *arg;
    int done;
};

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct poll *p = arg;
    if (!p->done)
        p->done = p->pred(p->arg);
}

static int run_until_pred(struct event_base *base, int (*pred)(void *), void *arg, int ms)
{
    struct poll p = {pred, arg, pred(arg)};
    struct event *ev = event_new(base, -1, EV_PERSIST, on_poll, &p);
    struct timeval tv = {0, 1000};
    event_add(ev, &tv);
    run_until(base, &p.done, ms);
    event_free(ev);
    return p.done;
}

/* Delete the test's keys with a fresh client. */
static void cleanup_keys(void)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    if (wait_up(c.base, c.r, 2000)) {
        struct res res = {0};
        if (SEND(c.r, 1000, &res, NULL, "DEL " PFX "a " PFX "n " PFX "ctr " PFX "r") == 0)
            run_until(c.base, &res.fired, 1000);
    }
    client_free(&c);
}

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(set_then_get_in_one_batch)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res res = {0};
    ASSERT_OK(SEND(c.r, 0, &res, NULL, "SET " PFX "a hello", "GET " PFX "a"));
    ASSERT_EQ(res.fired, 0); /* never from inside the call */
    ASSERT(run_until(c.base, &res.fired, 1000));
    ASSERT_OK(res.status);
    ASSERT_EQ(res.n, 2);
    ASSERT_EQ(res.type[0], REDIS_REPLY_STATUS);
    ASSERT_STR(res.str[0], "OK");
    ASSERT_EQ(res.type[1], REDIS_REPLY_STRING);
    ASSERT_STR(res.str[1], "hello");
    run_for(c.base, 20);
    ASSERT_EQ(res.fired, 1); /* exactly once */
    client_free(&c);
}

/* rds_batch_wait: the writes, then WAIT; its count is the last reply. The test Redis has no
 * replica: WAIT 0 answers at once, WAIT 1 after its wait, with 0, and the call succeeds (the
 * caller judges the count). A WAIT among the caller's commands is refused as always. */
TEST(batch_wait_appends_a_wait)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    const char *w[] = {"SET", PFX "w", "1"};
    size_t wl[] = {3, strlen(PFX "w"), 1};
    const char *const *argv[] = {w};
    const size_t *argvlen[] = {wl};
    int argc[] = {3};
    struct res none = {0}, one = {0};
    ASSERT_OK(rds_batch_wait(c.r, 1, argc, argv, argvlen, 0, 0, 0, on_batch, &none, NULL));
    ASSERT(run_until(c.base, &none.fired, 1000));
    ASSERT_OK(none.status);
    ASSERT_EQ(none.n, 2);
    ASSERT_STR(none.str[0], "OK");
    ASSERT_EQ(none.type[1], REDIS_REPLY_INTEGER);
    ASSERT_EQ(none.integer[1], 0);
    double t0 = test_now_ms();
    ASSERT_OK(rds_batch_wait(c.r, 1, argc, argv, argvlen, 1, 150, 0, on_batch, &one, NULL));
    ASSERT(run_until(c.base, &one.fired, 2000));
    ASSERT_OK(one.status);
    ASSERT_EQ(one.integer[1], 0);
    double took = one.at_ms - t0;
    if (took < 140 || took > 1000)
        FAIL_AT("WAIT 1 150 answered after %.0f ms", took);
    const char *bad[] = {"WAIT", "0", "0"};
    size_t bl[] = {4, 1, 1};
    const char *const *bargv[] = {bad};
    const size_t *blen[] = {bl};
    ASSERT_EQ(rds_batch_wait(c.r, 1, argc, bargv, blen, 0, 0, 0, on_batch, &one, NULL),
              ERR_INVALID);
    client_free(&c);
}

TEST(one_failing_command_does_not_fail_the_batch)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res res = {0};
    ASSERT_OK(SEND(c.r, 0, &res, NULL, "SET " PFX "n abc", "INCR " PFX "n", "GET " PFX "n",
                   "GET " PFX "absent"));
    ASSERT(run_until(c.base, &res.fired, 1000));
    ASSERT_OK(res.status);
    ASSERT_EQ(res.n, 4);
    ASSERT_STR(res.str[0], "OK");
    ASSERT_EQ(res.type[1], REDIS_REPLY_ERROR);
    ASSERT(strstr(res.str[1], "not an integer") != NULL);
    ASSERT_EQ(res.type[2], REDIS_REPLY_STRING);
    ASSERT_STR(res.str[2], "abc");
    ASSERT_EQ(res.type[3], REDIS_REPLY_NIL);
    client_free(&c);
}

TEST(hundred_batches_in_flight)
{
    enum { N = 100 };
    struct client c = client_new(port, 1000, 2000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res del = {0};
    ASSERT_OK(SEND(c.r, 0, &del, NULL, "DEL " PFX "ctr"));
    static struct res res[N];
    memset(res, 0, sizeof res);
    for (int i = 0; i < N; i++)
        ASSERT_OK(SEND(c.r, 0, &res[i], NULL, "INCR " PFX "ctr", "PING"));
    int seen[N + 1] = {0};
    double end = test_now_ms() + 2000;
    int all = 0;
    while (!all && test_now_ms() < end) {
        run_for(c.base, 5);
        all = 1;
        for (int i = 0; i < N; i++)
            all &= res[i].fired == 1;
    }
    ASSERT(all);
    for (int i = 0; i < N; i++) {
        ASSERT_OK(res[i].status);
        ASSERT_EQ(res[i].type[0], REDIS_REPLY_INTEGER);
        ASSERT(res[i].integer[0] >= 1 && res[i].integer[0] <= N);
        seen[res[i].integer[0]]++;
        ASSERT_STR(res[i].str[1], "PONG");
    }
    for (int v = 1; v <= N; v++)
        ASSERT_EQ(seen[v], 1);
    client_free(&c);
}

TEST(timeout_then_recovers)
{
    struct client c = client_new(port, 2000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res pause = {0}, slow = {0}, behind = {0};
    ASSERT_OK(SEND(c.r, 0, &pause, NULL, "CLIENT PAUSE 500 ALL"));
    ASSERT(run_until(c.base, &pause.fired, 1000));
    ASSERT_OK(pause.status);
    ASSERT_STR(pause.str[0], "OK");

    double t0 = test_now_ms();
    ASSERT_OK(SEND(c.r, 100, &slow, NULL, "PING"));
    ASSERT_OK(SEND(c.r, 5000, &behind, NULL, "PING"));
    ASSERT(run_until(c.base, &slow.fired, 1000));
    ASSERT_EQ(slow.status, ERR_TIMEOUT);
    double took = slow.at_ms - t0;
    if (took < 90 || took > 300)
        FAIL_AT("timeout fired after %.0f ms, expected ~100", took);
    /* The stuck connection is dropped: the call queued behind fails now, not in 5 s. */
    ASSERT(run_until(c.base, &behind.fired, 200));
    ASSERT_EQ(behind.status, ERR_UNAVAILABLE);
    ASSERT_EQ(rds_up(c.r), 0);
    struct res refused = {0};
    ASSERT_EQ(SEND(c.r, 0, &refused, NULL, "PING"), ERR_UNAVAILABLE);

    /* It reconnects by itself once Redis answers again (the pause ends at ~500 ms). */
    ASSERT(wait_up(c.base, c.r, 3000));
    struct res after = {0};
    ASSERT_OK(SEND(c.r, 0, &after, NULL, "SET " PFX "a back", "GET " PFX "a"));
    ASSERT(run_until(c.base, &after.fired, 1000));
    ASSERT_OK(after.status);
    ASSERT_STR(after.str[1], "back");
    run_for(c.base, 20);
    ASSERT_EQ(slow.fired + behind.fired + refused.fired, 2); /* late replies ignored */
    client_free(&c);
}

TEST(cancel_prevents_the_callback)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res a = {0}, b = {0}, d = {0}, e = {0};
    struct rds_op *op_a = NULL, *op_d = NULL;
    ASSERT_OK(SEND(c.r, 0, &a, &op_a, "PING"));
    ASSERT(op_a != NULL);
    rds_op_cancel(op_a); /* in flight: its reply comes back later and is dropped */

    /* Cancel from inside another call's callback, when both answers are in. */
    ASSERT_OK(SEND(c.r, 0, &b, NULL, "PING"));
    ASSERT_OK(SEND(c.r, 0, &d, &op_d, "PING"));
    b.cancel_in_cb = op_d;
    ASSERT_OK(SEND(c.r, 0, &e, NULL, "PING"));
    ASSERT(run_until(c.base, &e.fired, 1000));
    run_for(c.base, 50);
    ASSERT_EQ(a.fired, 0);
    ASSERT_EQ(b.fired, 1);
    ASSERT_EQ(d.fired, 0);
    ASSERT_EQ(e.fired, 1);
    rds_op_cancel(NULL); /* harmless */
    client_free(&c);
}

TEST(free_fires_closed_for_pending_calls)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res res[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ASSERT_OK(SEND(c.r, 0, &res[i], NULL, "PING", "PING"));
    rds_free(c.r);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(res[i].fired, 1); /* before rds_free returned */
        ASSERT_EQ(res[i].status, ERR_CLOSED);
    }
    event_base_free(c.base);
}

TEST(free_from_inside_a_callback)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res first = {0}, second = {0};
    first.free_in_cb = c.r;
    ASSERT_OK(SEND(c.r, 0, &first, NULL, "PING"));
    ASSERT_OK(SEND(c.r, 2000, &second, NULL, "PING", "SET " PFX "r x"));
    ASSERT(run_until(c.base, &second.fired, 1000));
    ASSERT_EQ(first.fired, 1);
    ASSERT_OK(first.status);
    ASSERT_EQ(second.status, ERR_CLOSED);
    run_for(c.base, 20);
    event_base_free(c.base);
}

TEST(closed_port_is_unavailable_at_once)
{
    struct client c = client_new(test_closed_port(), 200, 200, 400);
    ASSERT_EQ(rds_up(c.r), 0);
    struct res res = {0};
    struct rds_op *op = (struct rds_op *) &res;
    ASSERT_EQ(SEND(c.r, 0, &res, &op, "PING"), ERR_UNAVAILABLE);
    ASSERT(op == NULL);
    run_for(c.base, 500); /* a few retries with backoff */
    ASSERT_EQ(rds_up(c.r), 0);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "PING"), ERR_UNAVAILABLE);
    ASSERT_EQ(res.fired, 0);
    client_free(&c);
}

/* A server that accepts and never answers: the PING handshake hits the connect deadline. */
TEST(silent_server_is_not_up)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ASSERT_OK(bind(lfd, (struct sockaddr *) &a, sizeof a));
    ASSERT_OK(listen(lfd, 16));
    getsockname(lfd, (struct sockaddr *) &a, &len);
    struct client c = client_new(ntohs(a.sin_port), 100, 100, 200);
    run_for(c.base, 400);
    ASSERT_EQ(rds_up(c.r), 0);
    struct res res = {0};
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "PING"), ERR_UNAVAILABLE);
    client_free(&c);
    close(lfd);
}

/* A server that answers the handshake with an error (as Redis does while loading). */
struct loading_srv {
    int fds[64];
    int n;
};

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct loading_srv *s = arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return;
    static const char msg[] = "-LOADING Redis is loading the dataset in memory\r\n";
    ssize_t n = write(fd, msg, sizeof msg - 1); /* a short write only fails the handshake */
    (void) n;
    if (s->n < 64)
        s->fds[s->n++] = fd;
    else
        close(fd);
}

TEST(handshake_error_is_not_up)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ASSERT_OK(bind(lfd, (struct sockaddr *) &a, sizeof a));
    ASSERT_OK(listen(lfd, 16));
    getsockname(lfd, (struct sockaddr *) &a, &len);
    struct client c = client_new(ntohs(a.sin_port), 1000, 100, 200);
    struct loading_srv srv = {.n = 0};
    struct event *ev = event_new(c.base, lfd, EV_READ | EV_PERSIST, on_accept, &srv);
    event_add(ev, NULL);
    run_for(c.base, 500);
    ASSERT(srv.n >= 2); /* refused, dropped, retried */
    ASSERT_EQ(rds_up(c.r), 0);
    event_free(ev);
    client_free(&c);
    for (int i = 0; i < srv.n; i++)
        close(srv.fds[i]);
    close(lfd);
}

TEST(commands_that_break_a_shared_connection_are_refused)
{
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct res res = {0};
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "subscribe ch"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "PING", "BLPOP " PFX "q 0"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "CLIENT REPLY OFF"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "XREAD COUNT 1 BLOCK 0 STREAMS s $"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "SELECT 1"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "WATCH " PFX "a"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "MULTI", "INCR " PFX "ctr"), ERR_INVALID);
    ASSERT_EQ(SEND(c.r, 0, &res, NULL, "EXEC"), ERR_INVALID);
    ASSERT_EQ(res.fired, 0);

    /* The reason and the command, for the bindings' error message. */
    const char *argv0[] = {"PING"}, *argv1[] = {"BRPOP", "q", "0"};
    size_t len0[] = {4}, len1[] = {5, 1, 1};
    int argc[] = {1, 3};
    const char *const *argv[] = {argv0, argv1};
    const size_t *const argvlen[] = {len0, len1};
    int bad = -1;
    const char *why = NULL;
    ASSERT_EQ(rds_check_batch(2, argc, argv, argvlen, &bad, &why), ERR_INVALID);
    ASSERT_EQ(bad, 1);
    ASSERT_STR(why, "it would block the shared connection");

    /* Not BLOCK: a stream key of that name. A transaction closed in the same batch. */
    ASSERT_OK(SEND(c.r, 0, &res, NULL, "XREAD COUNT 1 STREAMS BLOCK 0", "MULTI", "INCR " PFX "ctr",
                   "EXEC"));
    ASSERT(run_until(c.base, &res.fired, 1000));
    ASSERT_OK(res.status);
    ASSERT_EQ(res.type[0], REDIS_REPLY_NIL);
    ASSERT_STR(res.str[1], "OK");
    ASSERT_STR(res.str[2], "QUEUED");
    ASSERT_EQ(res.type[3], REDIS_REPLY_ARRAY);
    client_free(&c);
}

/* ---- pub/sub --------------------------------------------------------------------------------- */

#define MAXM 8

/* What a subscriber delivered, copied out of the callbacks. */
struct subrec {
    struct rds_sub *s;
    int msgs;
    char msg[MAXM][128];
    size_t len[MAXM];
    int gaps;
    int up_in_gap;               /* rds_sub_up as seen from inside on_gap */
    struct rds_sub *free_in_msg; /* rds_sub_free from inside on_msg */
    struct rds_sub *free_in_gap; /* rds_sub_free from inside on_gap */
};

static void rec_msg(const char *msg, size_t len, void *ud)
{
    struct subrec *r = ud;
    if (r->msgs < MAXM) {
        r->len[r->msgs] = len;
        memcpy(r->msg[r->msgs], msg, len < 128 ? len : 128);
    }
    r->msgs++;
    if (r->free_in_msg)
        rds_sub_free(r->free_in_msg);
}

static void rec_gap(void *ud)
{
    struct subrec *r = ud;
    r->gaps++;
    r->up_in_gap = rds_sub_up(r->s);
    if (r->free_in_gap)
        rds_sub_free(r->free_in_gap);
}

/* A channel of this test run: "test_rds:<pid>:<name>". */
static const char *channel(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, PFX "%d:%s", (int) getpid(), name);
    return buf;
}

static struct rds_sub *sub_new(struct client *c, int p, int timeout_ms, const char *ch,
                               rds_msg_cb *on_msg, rds_gap_cb *on_gap, void *ud)
{
    struct rds_opts o = {host, p, 500, timeout_ms, 400, NULL};
    return rds_sub_new(c->base, &o, ch, on_msg, on_gap, ud);
}

static int sub_is_up(void *arg)
{
    return rds_sub_up(arg);
}

static int sub_is_down(void *arg)
{
    return !rds_sub_up(arg);
}

/* PUBLISH ch msg (binary-safe) on the command connection; the reply is res->integer[0]. */
static int publish(struct client *c, const char *ch, const char *msg, size_t len, struct res *res)
{
    const char *argv0[] = {"PUBLISH", ch, msg};
    size_t len0[] = {7, strlen(ch), len};
    int argc[] = {3};
    const char *const *argv[] = {argv0};
    const size_t *const argvlen[] = {len0};
    return rds_batch(c->r, 1, argc, argv, argvlen, 0, on_batch, res, NULL);
}

struct text {
    int fired;
    int status;
    char buf[16384];
};

static void on_text(struct redisReply **replies, int n, int status, void *ud)
{
    struct text *t = ud;
    t->fired = 1;
    t->status = status;
    if (status == 0 && replies[0]->str)
        snprintf(t->buf, sizeof t->buf, "%.*s", (int) replies[0]->len, replies[0]->str);
}

/* Kill the subscriber connections named "mmo:sub:<ch>" (CLIENT KILL ID): how many. */
static int kill_subscribers(struct client *c, const char *ch)
{
    struct text t = {0};
    const char *argv0[] = {"CLIENT", "LIST", "TYPE", "pubsub"};
    size_t len0[] = {6, 4, 4, 6};
    int argc[] = {4};
    const char *const *argv[] = {argv0};
    const size_t *const argvlen[] = {len0};
    if (rds_batch(c->r, 1, argc, argv, argvlen, 0, on_text, &t, NULL) < 0 ||
        !run_until(c->base, &t.fired, 1000) || t.status != 0)
        return -1;
    char needle[160];
    snprintf(needle, sizeof needle, " name=mmo:sub:%s ", ch);
    int killed = 0;
    for (char *save, *line = strtok_r(t.buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        long long id;
        if (strstr(line, needle) == NULL || sscanf(line, "id=%lld", &id) != 1)
            continue;
        char cmd[64];
        snprintf(cmd, sizeof cmd, "CLIENT KILL ID %lld", id);
        struct res res = {0};
        if (SEND(c->r, 0, &res, NULL, cmd) == 0 && run_until(c->base, &res.fired, 1000) &&
            res.status == 0 && res.integer[0] == 1)
            killed++;
    }
    return killed;
}

TEST(sub_delivers_messages_in_order)
{
    char ch[96];
    channel(ch, sizeof ch, "order");
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct subrec rec = {0};
    rec.s = sub_new(&c, port, 1000, ch, rec_msg, rec_gap, &rec);
    ASSERT_EQ(rec.gaps, 0); /* never from inside the call */
    ASSERT_EQ(rds_sub_up(rec.s), 0);
    ASSERT(run_until_pred(c.base, sub_is_up, rec.s, 2000));
    ASSERT_EQ(rec.gaps, 1); /* the first subscription is a gap too */
    ASSERT_EQ(rec.up_in_gap, 1);

    struct res res[4] = {{0}};
    ASSERT_OK(publish(&c, ch, "one", 3, &res[0]));
    ASSERT_OK(publish(&c, ch, "two words", 9, &res[1]));
    ASSERT_OK(publish(&c, ch, "n\0l", 3, &res[2]));
    ASSERT_OK(publish(&c, ch, "", 0, &res[3]));
    ASSERT(run_until(c.base, &res[3].fired, 1000));
    ASSERT_EQ(res[0].integer[0], 1); /* one subscriber got it */
    double end = test_now_ms() + 1000;
    while (rec.msgs < 4 && test_now_ms() < end)
        run_for(c.base, 2);
    ASSERT_EQ(rec.msgs, 4);
    ASSERT_STR(rec.msg[0], "one");
    ASSERT_STR(rec.msg[1], "two words");
    ASSERT_EQ(rec.len[2], 3);
    ASSERT(memcmp(rec.msg[2], "n\0l", 3) == 0);
    ASSERT_EQ(rec.len[3], 0);
    /* The liveness pings (a SUBSCRIBE again every second) neither drop it nor make gaps. */
    run_for(c.base, 2300);
    ASSERT_EQ(rds_sub_up(rec.s), 1);
    ASSERT_EQ(rec.gaps, 1);
    ASSERT_EQ(rec.msgs, 4);
    rds_sub_free(rec.s);
    ASSERT_EQ(rec.msgs, 4); /* nothing fires from inside the free either */
    client_free(&c);
    ASSERT_EQ(rds_sub_up(NULL), 0);
    rds_sub_free(NULL);
}

TEST(sub_reports_a_gap_and_resubscribes_after_a_kill)
{
    char ch[96];
    channel(ch, sizeof ch, "kill");
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct lcache *lc = lcache_new(100, 1 << 20);
    struct rds_sub *s = sub_new(&c, port, 1000, ch, lcache_on_message, lcache_on_gap, lc);
    ASSERT(run_until_pred(c.base, sub_is_up, s, 2000));
    ASSERT_OK(lcache_fill(lc, "k", 1, "v", 1, 1, 0) - 1);
    struct lcache_stats st;
    lcache_stats(lc, &st);
    ASSERT_EQ(st.clears, 1);

    ASSERT_EQ(kill_subscribers(&c, ch), 1);
    ASSERT(run_until_pred(c.base, sub_is_down, s, 1000));
    ASSERT(run_until_pred(c.base, sub_is_up, s, 3000)); /* back by itself */
    lcache_stats(lc, &st);
    ASSERT_EQ(st.clears, 2); /* the gap cleared the cache: messages may have been missed */
    ASSERT_EQ(lcache_get(lc, "k", 1, NULL, NULL, NULL), 0);

    struct res res = {0};
    ASSERT_OK(publish(&c, ch, "5 k", 3, &res));
    ASSERT(run_until(c.base, &res.fired, 1000));
    ASSERT_EQ(res.integer[0], 1);
    run_for(c.base, 20);
    lcache_stats(lc, &st);
    ASSERT_EQ(st.invalidations, 1);
    rds_sub_free(s);
    lcache_free(lc);
    client_free(&c);
}

/* CLIENT PAUSE holds the pings: the subscriber drops the connection and comes back after. */
TEST(sub_notices_a_redis_that_stops_answering)
{
    char ch[96];
    channel(ch, sizeof ch, "pause");
    struct client c = client_new(port, 1000, 3000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    struct subrec rec = {0};
    rec.s = sub_new(&c, port, 200, ch, rec_msg, rec_gap, &rec);
    ASSERT(run_until_pred(c.base, sub_is_up, rec.s, 2000));
    struct res pause = {0};
    ASSERT_OK(SEND(c.r, 0, &pause, NULL, "CLIENT PAUSE 1800 ALL"));
    ASSERT(run_until(c.base, &pause.fired, 1000));
    ASSERT_OK(pause.status);
    double t0 = test_now_ms();
    ASSERT(run_until_pred(c.base, sub_is_down, rec.s, 2000));
    double took = test_now_ms() - t0;
    if (took > 1500)
        FAIL_AT("noticed after %.0f ms, expected within ping (1000) + timeout (200)", took);
    ASSERT(run_until_pred(c.base, sub_is_up, rec.s, 5000));
    ASSERT_EQ(rec.gaps, 2);
    rds_sub_free(rec.s);
    client_free(&c);
}

TEST(sub_free_with_pending_state_is_clean)
{
    char ch[96];
    channel(ch, sizeof ch, "free");
    struct client c = client_new(port, 1000, 1000, 1000);
    ASSERT(wait_up(c.base, c.r, 2000));
    /* Freed after 0, 1, 2... turns of the loop: connecting, subscribing, a gap queued, up. */
    for (int turns = 0; turns < 12; turns++) {
        struct subrec rec = {0};
        rec.s = sub_new(&c, port, 1000, ch, rec_msg, rec_gap, &rec);
        for (int i = 0; i < turns; i++)
            event_base_loop(c.base, EVLOOP_NONBLOCK);
        int gaps = rec.gaps;
        rds_sub_free(rec.s);
        ASSERT_EQ(rec.gaps, gaps);
        run_for(c.base, 5);
        ASSERT_EQ(rec.gaps, gaps);
    }

    /* From inside on_msg, with more messages queued behind it: none of them is delivered. */
    struct subrec rec = {0};
    rec.s = sub_new(&c, port, 1000, ch, rec_msg, rec_gap, &rec);
    ASSERT(run_until_pred(c.base, sub_is_up, rec.s, 2000));
    rec.free_in_msg = rec.s;
    struct res res[3] = {{0}};
    for (int i = 0; i < 3; i++)
        ASSERT_OK(publish(&c, ch, "m", 1, &res[i]));
    ASSERT(run_until(c.base, &res[2].fired, 1000));
    run_for(c.base, 50);
    ASSERT_EQ(rec.msgs, 1);

    /* From inside on_gap. */
    struct subrec rec2 = {0};
    rec2.s = sub_new(&c, port, 1000, ch, rec_msg, rec_gap, &rec2);
    rec2.free_in_gap = rec2.s;
    ASSERT(run_until(c.base, &rec2.gaps, 2000));
    run_for(c.base, 50);
    ASSERT_EQ(rec2.gaps, 1);

    /* Never connected. */
    struct subrec rec3 = {0};
    rec3.s = sub_new(&c, test_closed_port(), 1000, ch, rec_msg, rec_gap, &rec3);
    run_for(c.base, 300); /* a few retries */
    ASSERT_EQ(rds_sub_up(rec3.s), 0);
    ASSERT_EQ(rec3.gaps, 0);
    rds_sub_free(rec3.s);
    client_free(&c);
}

/* Two nodes: each an lcache and a subscriber. A's write reaches B's cache through Redis. */
struct node2 {
    struct lcache *lc;
    struct rds_sub *sub;
    double msg_at; /* when the last message was applied */
};

/* lcache_on_message, as main.c wires it, plus the time it ran. */
static void node_on_message(const char *msg, size_t len, void *ud)
{
    struct node2 *n = ud;
    lcache_on_message(msg, len, n->lc);
    n->msg_at = test_now_ms();
}

static void node_on_gap(void *ud)
{
    struct node2 *n = ud;
    lcache_on_gap(n->lc);
}

static int node_dropped(void *arg)
{
    struct lcache_stats st;
    lcache_stats(arg, &st);
    return st.inval_dropped > 0;
}

static int node_saw_message(void *arg)
{
    struct lcache_stats st;
    lcache_stats(arg, &st);
    return st.invalidations > 0;
}

TEST(two_nodes_invalidate_each_other_within_milliseconds)
{
    char ch[96];
    channel(ch, sizeof ch, "two");
    struct client c = client_new(port, 1000, 1000, 1000); /* A's command connection */
    ASSERT(wait_up(c.base, c.r, 2000));
    struct node2 a = {0}, b = {0};
    a.lc = lcache_new(1000, 1 << 20);
    b.lc = lcache_new(1000, 1 << 20);
    a.sub = sub_new(&c, port, 1000, ch, node_on_message, node_on_gap, &a);
    b.sub = sub_new(&c, port, 1000, ch, node_on_message, node_on_gap, &b);
    ASSERT(run_until_pred(c.base, sub_is_up, a.sub, 2000));
    ASSERT(run_until_pred(c.base, sub_is_up, b.sub, 2000));
    const char *k = "player:1";
    size_t kl = strlen(k);
    ASSERT_EQ(lcache_fill(a.lc, k, kl, "v1", 2, 1, 0), 1);
    ASSERT_EQ(lcache_fill(b.lc, k, kl, "v1", 2, 1, 0), 1);

    /* A writes version 2: write-through locally, then the message, as cache.store does. */
    ASSERT_EQ(lcache_set(a.lc, k, kl, "v2", 2, 2, 0), 1);
    struct res res = {0};
    double t0 = test_now_ms();
    ASSERT_OK(publish(&c, ch, "2 player:1", 10, &res));
    ASSERT(run_until_pred(c.base, node_dropped, b.lc, 1000));
    double took = b.msg_at - t0;
    if (took > 50)
        FAIL_AT("B dropped its copy after %.1f ms, expected within 50", took);
    ASSERT_EQ(lcache_get(b.lc, k, kl, NULL, NULL, NULL), 0);
    /* A read on B that raced the write cannot put version 1 back; version 2 goes in. */
    ASSERT_EQ(lcache_fill(b.lc, k, kl, "v1", 2, 1, 0), 0);
    ASSERT_EQ(lcache_fill(b.lc, k, kl, "v2", 2, 2, 0), 1);
    /* A got its own message: harmless. */
    ASSERT(run_until_pred(c.base, node_saw_message, a.lc, 1000));
    const char *v;
    size_t vlen;
    int64_t ver;
    ASSERT_EQ(lcache_get(a.lc, k, kl, &v, &vlen, &ver), 1);
    ASSERT_EQ(ver, 2);
    ASSERT(vlen == 2 && memcmp(v, "v2", 2) == 0);
    ASSERT_EQ(res.integer[0], 2); /* both nodes subscribed */
    printf("# B dropped its copy %.2f ms after A published\n", took);

    rds_sub_free(a.sub);
    rds_sub_free(b.sub);
    lcache_free(a.lc);
    lcache_free(b.lc);
    client_free(&c);
}

TEST(recovers_after_redis_restarts)
{
    const char *cmd = getenv("MMO_TEST_REDIS_RESTART_CMD");
    if (cmd == NULL || *cmd == '\0') {
        printf("# skip: MMO_TEST_REDIS_RESTART_CMD is not set\n");
        return;
    }
    struct client c = client_new(port, 1000, 1000, 500);
    ASSERT(wait_up(c.base, c.r, 2000));
    char ch[96];
    struct subrec rec = {0};
    rec.s = sub_new(&c, port, 1000, channel(ch, sizeof ch, "restart"), rec_msg, rec_gap, &rec);
    ASSERT(run_until_pred(c.base, sub_is_up, rec.s, 2000));
    ASSERT_OK(system(cmd));
    run_for(c.base, 50); /* notice the drop */
    ASSERT(wait_up(c.base, c.r, 10000));
    ASSERT(run_until_pred(c.base, sub_is_up, rec.s, 10000)); /* the subscriber too */
    ASSERT_EQ(rec.gaps, 2);
    rds_sub_free(rec.s);
    struct res res = {0};
    ASSERT_OK(SEND(c.r, 0, &res, NULL, "SET " PFX "a again", "GET " PFX "a"));
    ASSERT(run_until(c.base, &res.fired, 1000));
    ASSERT_OK(res.status);
    ASSERT_STR(res.str[1], "again");
    client_free(&c);
}

int main(void)
{
    parse_env();
    log_init("test", LOG_INFO);
    log_set_fd(2);
    RUN(set_then_get_in_one_batch);
    RUN(batch_wait_appends_a_wait);
    RUN(one_failing_command_does_not_fail_the_batch);
    RUN(hundred_batches_in_flight);
    RUN(timeout_then_recovers);
    RUN(cancel_prevents_the_callback);
    RUN(free_fires_closed_for_pending_calls);
    RUN(free_from_inside_a_callback);
    RUN(closed_port_is_unavailable_at_once);
    RUN(silent_server_is_not_up);
    RUN(handshake_error_is_not_up);
    RUN(commands_that_break_a_shared_connection_are_refused);
    RUN(recovers_after_redis_restarts);
    RUN(sub_delivers_messages_in_order);
    RUN(sub_reports_a_gap_and_resubscribes_after_a_kill);
    RUN(sub_notices_a_redis_that_stops_answering);
    RUN(sub_free_with_pending_state_is_clean);
    RUN(two_nodes_invalidate_each_other_within_milliseconds);
    cleanup_keys();
    log_deinit();
    return test_summary();
}
