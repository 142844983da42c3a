/* test_rds.c -- core/rds.c against a real Redis (MMO_TEST_REDIS = "127.0.0.1:PORT").
 *
 * Each test makes its own event_base and client and frees both (ASan/LSan check the rest).
 * Keys live under "test_rds:" and are deleted at the end. The optional restart test runs
 * MMO_TEST_REDIS_RESTART_CMD (a shell command that stops Redis and starts it again) and checks
 * that the client comes back by itself. */
#include "test.h"

#include "err.h"
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

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void parse_env(void)
{
    const char *v = test_env("MMO_TEST_REDIS");
    const char *colon = strrchr(v, ':');
    if (colon == NULL || (size_t) (colon - v) >= sizeof host) {
        fprintf(stderr, "MMO_TEST_REDIS must be host:port, got %s\n", v);
        exit(2);
    }
    memcpy(host, v, (size_t) (colon - v));
    host[colon - v] = '\0';
    port = atoi(colon + 1);
}

/* ---- running the loop ----------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until *flag != 0 or ms pass; returns *flag. */
static int run_until(struct event_base *base, const int *flag, int ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 2000};
    event_add(tick, &tv);
    double end = now_ms() + ms;
    while (!*flag && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *flag;
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
    res->at_ms = now_ms();
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

/* Send up to 4 commands given as space-separated words (no spaces inside arguments). */
static int batch_send(struct rds *r, int timeout_ms, struct res *res, struct rds_op **op,
                      const char *const *cmds, int ncmds)
{
    static char buf[4][256];
    const char *words[4][16];
    size_t lens[4][16];
    int argc[4];
    const char *const *argv[4];
    const size_t *argvlen[4];
    for (int i = 0; i < ncmds; i++) {
        snprintf(buf[i], sizeof buf[i], "%s", cmds[i]);
        argc[i] = 0;
        for (char *save, *w = strtok_r(buf[i], " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            words[i][argc[i]] = w;
            lens[i][argc[i]++] = strlen(w);
        }
        argv[i] = words[i];
        argvlen[i] = lens[i];
    }
    return rds_batch(r, ncmds, argc, argv, argvlen, timeout_ms, on_batch, res, op);
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
    struct rds_opts o = {host, p, connect_ms, timeout_ms, retry_max_ms};
    c.r = rds_new(c.base, &o);
    return c;
}

static void client_free(struct client *c)
{
    rds_free(c->r);
    event_base_free(c->base);
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
    double end = now_ms() + 2000;
    int all = 0;
    while (!all && now_ms() < end) {
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

    double t0 = now_ms();
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

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *) &a, sizeof a);
    getsockname(fd, (struct sockaddr *) &a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

TEST(closed_port_is_unavailable_at_once)
{
    struct client c = client_new(closed_port(), 200, 200, 400);
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

TEST(recovers_after_redis_restarts)
{
    const char *cmd = getenv("MMO_TEST_REDIS_RESTART_CMD");
    if (cmd == NULL || *cmd == '\0') {
        printf("# skip: MMO_TEST_REDIS_RESTART_CMD is not set\n");
        return;
    }
    struct client c = client_new(port, 1000, 1000, 500);
    ASSERT(wait_up(c.base, c.r, 2000));
    ASSERT_OK(system(cmd));
    run_for(c.base, 50); /* notice the drop */
    ASSERT(wait_up(c.base, c.r, 10000));
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
    cleanup_keys();
    log_deinit();
    return test_summary();
}
