/* test_sentinel.c -- core/sentinel.c: the parsers with good and bad input, and the ask against
 * fake sentinels (a listening socket of the test that answers a canned reply, or nothing), a
 * closed port and a plain Redis (MMO_TEST_REDIS, which has no SENTINEL command); then an rds
 * command connection and a subscriber that find MMO_TEST_REDIS through a fake sentinel.
 *
 * Each test makes its own event_base and frees everything it made (ASan/LSan check). */
#include "test.h"
#include "test_loop.h"

#include "err.h"
#include "log.h"
#include "rds.h"
#include "sentinel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

static char rhost[64];
static int rport;

static void parse_env(void)
{
    test_redis_addr(rhost, sizeof rhost, &rport);
}

/* ---- the parsers ---------------------------------------------------------------------------- */

TEST(addrs_good)
{
    struct sentinel_addr a[SENTINEL_MAX];
    char err[256];
    ASSERT_EQ(sentinel_parse_addrs("", a, SENTINEL_MAX, err, sizeof err), 0);
    ASSERT_EQ(sentinel_parse_addrs("127.0.0.1:26379", a, SENTINEL_MAX, err, sizeof err), 1);
    ASSERT_STR(a[0].host, "127.0.0.1");
    ASSERT_EQ(a[0].port, 26379);
    ASSERT_EQ(sentinel_parse_addrs(" s1.example:1 , s2:65535,[::1]:26380 ", a, SENTINEL_MAX, err,
                                   sizeof err),
              3);
    ASSERT_STR(a[0].host, "s1.example");
    ASSERT_EQ(a[0].port, 1);
    ASSERT_STR(a[1].host, "s2");
    ASSERT_EQ(a[1].port, 65535);
    ASSERT_STR(a[2].host, "::1");
    ASSERT_EQ(a[2].port, 26380);
}

TEST(addrs_bad)
{
    static const char *const BAD[] = {"a",          "a:",    "a:0",    "a:65536", "a:1,,b:2",
                                      ":1",         "a:1x",  "a b:1",  "a:1,",    ",a:1",
                                      "[::1]26379", "a:1:2", "[::1]:", "a:-1",    "[]:1",
                                      "a:999999",   " , ",   "a:1/2",  "a\x01:1", "[a:1",
                                      "a:1 2",      "a:+1",  "a:1,b",  "a::1",    "a:00000000001"};
    struct sentinel_addr a[SENTINEL_MAX];
    char err[256];
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        err[0] = '\0';
        if (sentinel_parse_addrs(BAD[i], a, SENTINEL_MAX, err, sizeof err) != -1)
            FAIL_AT("accepted \"%s\"", BAD[i]);
        ASSERT(strstr(err, "redis.sentinels") != NULL);
    }
    /* more than max */
    ASSERT_EQ(sentinel_parse_addrs("a:1,a:2,a:3", a, 2, err, sizeof err), -1);
    ASSERT(strstr(err, "more than 2") != NULL);
    /* a host of 255 bytes fits (SENTINEL_HOST_MAX with its NUL), 256 does not */
    char big[300];
    memset(big, 'h', 256);
    snprintf(big + 256, sizeof big - 256, ":1");
    ASSERT_EQ(sentinel_parse_addrs(big, a, 1, err, sizeof err), -1);
    memset(big, 'h', 255);
    snprintf(big + 255, sizeof big - 255, ":1");
    ASSERT_EQ(sentinel_parse_addrs(big, a, 1, err, sizeof err), 1);
    ASSERT_EQ(strlen(a[0].host), 255);
}

static redisReply str_reply(const char *s)
{
    redisReply r = {.type = REDIS_REPLY_STRING, .len = strlen(s), .str = (char *) s};
    return r;
}

TEST(master_reply)
{
    char host[SENTINEL_HOST_MAX];
    int port = 0;
    redisReply h = str_reply("10.0.0.7"), p = str_reply("6380");
    redisReply *el[2] = {&h, &p};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
    ASSERT_OK(sentinel_parse_master(&arr, host, sizeof host, &port));
    ASSERT_STR(host, "10.0.0.7");
    ASSERT_EQ(port, 6380);

    redisReply nil = {.type = REDIS_REPLY_NIL};
    ASSERT_EQ(sentinel_parse_master(&nil, host, sizeof host, &port), ERR_NOTFOUND);
    redisReply e = {.type = REDIS_REPLY_ERROR, .len = 3, .str = (char *) "ERR"};
    ASSERT_EQ(sentinel_parse_master(&e, host, sizeof host, &port), ERR_PROTOCOL);
    ASSERT_EQ(sentinel_parse_master(NULL, host, sizeof host, &port), ERR_PROTOCOL);
    arr.elements = 1;
    ASSERT_EQ(sentinel_parse_master(&arr, host, sizeof host, &port), ERR_PROTOCOL);
    arr.elements = 2;
    static const char *const BAD_PORTS[] = {"0", "abc", "70000", "", "-1", "6380 ", "1e3"};
    for (size_t i = 0; i < sizeof BAD_PORTS / sizeof BAD_PORTS[0]; i++) {
        p = str_reply(BAD_PORTS[i]);
        if (sentinel_parse_master(&arr, host, sizeof host, &port) != ERR_PROTOCOL)
            FAIL_AT("port \"%s\" accepted", BAD_PORTS[i]);
    }
    p = str_reply("6380");
    h = str_reply("");
    ASSERT_EQ(sentinel_parse_master(&arr, host, sizeof host, &port), ERR_PROTOCOL);
    h.str = (char *) "a\0b";
    h.len = 3; /* a NUL inside */
    ASSERT_EQ(sentinel_parse_master(&arr, host, sizeof host, &port), ERR_PROTOCOL);
    h = str_reply("a-host-longer-than-the-buffer");
    ASSERT_EQ(sentinel_parse_master(&arr, host, 8, &port), ERR_PROTOCOL);
    redisReply i = {.type = REDIS_REPLY_INTEGER, .integer = 6380};
    h = str_reply("10.0.0.7");
    el[1] = &i;
    ASSERT_EQ(sentinel_parse_master(&arr, host, sizeof host, &port), ERR_PROTOCOL);
}

TEST(role_reply)
{
    redisReply m = str_reply("master"), s = str_reply("slave"), st = str_reply("sentinel"),
               x = str_reply("leader");
    redisReply *el[1] = {&m};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 1, .element = el};
    ASSERT_EQ(sentinel_parse_role(&arr), SENTINEL_ROLE_MASTER);
    el[0] = &s;
    ASSERT_EQ(sentinel_parse_role(&arr), SENTINEL_ROLE_REPLICA);
    el[0] = &st;
    ASSERT_EQ(sentinel_parse_role(&arr), SENTINEL_ROLE_SENTINEL);
    el[0] = &x;
    ASSERT_EQ(sentinel_parse_role(&arr), ERR_PROTOCOL);
    arr.elements = 0;
    ASSERT_EQ(sentinel_parse_role(&arr), ERR_PROTOCOL);
    redisReply e = {.type = REDIS_REPLY_ERROR, .len = 6, .str = (char *) "NOAUTH"};
    ASSERT_EQ(sentinel_parse_role(&e), ERR_PROTOCOL);
    ASSERT_EQ(sentinel_parse_role(&m), ERR_PROTOCOL); /* a string, not an array */
    ASSERT_EQ(sentinel_parse_role(NULL), ERR_PROTOCOL);
}

TEST(stale_replies)
{
    static const char *const YES[] = {"READONLY You can't write against a read only replica.",
                                      "LOADING Redis is loading the dataset in memory",
                                      "MASTERDOWN Link with MASTER is down", "READONLY"};
    static const char *const NO[] = {"READONLYX", "ERR unknown command", "", "LOAD",
                                     "NOAUTH Authentication required."};
    for (size_t i = 0; i < sizeof YES / sizeof YES[0]; i++) {
        redisReply e = {.type = REDIS_REPLY_ERROR, .len = strlen(YES[i]), .str = (char *) YES[i]};
        if (!sentinel_reply_stale(&e))
            FAIL_AT("\"%s\" not stale", YES[i]);
    }
    for (size_t i = 0; i < sizeof NO / sizeof NO[0]; i++) {
        redisReply e = {.type = REDIS_REPLY_ERROR, .len = strlen(NO[i]), .str = (char *) NO[i]};
        if (sentinel_reply_stale(&e))
            FAIL_AT("\"%s\" stale", NO[i]);
    }
    redisReply st = {.type = REDIS_REPLY_STATUS, .len = 8, .str = (char *) "READONLY"};
    ASSERT(!sentinel_reply_stale(&st));
    ASSERT(!sentinel_reply_stale(NULL));
}

/* ---- fake sentinels ------------------------------------------------------------------------- */

/* Accepts connections; answers each with reply (NULL: never answers). */
struct fake {
    int fd, port;
    const char *reply;
    struct event *ev;
    int conns[16];
    int nconns;
};

static void on_fake_accept(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        return;
    if (f->nconns == 16) {
        close(c);
        return;
    }
    f->conns[f->nconns++] = c;
    if (f->reply)
        (void) !write(c, f->reply, strlen(f->reply));
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *) &a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *) &a, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void fake_start(struct fake *f, struct event_base *base, const char *reply)
{
    memset(f, 0, sizeof *f);
    f->fd = listen_any(&f->port);
    fcntl(f->fd, F_SETFL, O_NONBLOCK);
    f->reply = reply;
    f->ev = event_new(base, f->fd, EV_READ | EV_PERSIST, on_fake_accept, f);
    event_add(f->ev, NULL);
}

static void fake_stop(struct fake *f)
{
    event_free(f->ev);
    close(f->fd);
    for (int i = 0; i < f->nconns; i++)
        close(f->conns[i]);
}

/* A port nothing listens on (bound, then closed). */
static int dead_port(void)
{
    int port = 0, fd = listen_any(&port);
    close(fd);
    return port;
}

struct answer {
    int fired;
    int status;
    char host[SENTINEL_HOST_MAX];
    int port;
    char why[400];
    double at_ms;
};

static void on_answer(int status, const char *host, int port, const char *why, void *ud)
{
    struct answer *a = ud;
    a->fired++;
    a->status = status;
    a->at_ms = test_now_ms();
    snprintf(a->host, sizeof a->host, "%s", host ? host : "");
    a->port = port;
    snprintf(a->why, sizeof a->why, "%s", why ? why : "");
}

/* Run the loop until *flag != 0 or ms pass; returns *flag. */
static int run_until(struct event_base *base, const int *flag, int ms)
{
    return test_run_until(base, flag, ms, 2000);
}

static void addr(struct sentinel_addr *a, const char *host, int port)
{
    snprintf(a->host, sizeof a->host, "%s", host);
    a->port = port;
}

#define ANSWER_OK  "*2\r\n$8\r\n10.9.8.7\r\n$4\r\n6390\r\n"
#define ANSWER_NIL "*-1\r\n"

TEST(ask_tries_each_in_turn_then_asks_the_one_that_answered_first)
{
    struct event_base *base = event_base_new();
    struct fake silent, good;
    fake_start(&silent, base, NULL);
    fake_start(&good, base, ANSWER_OK);
    struct sentinel_addr a[4];
    addr(&a[0], "127.0.0.1", dead_port());
    addr(&a[1], "127.0.0.1", silent.port);
    addr(&a[2], rhost, rport); /* a plain Redis: ERR unknown command 'SENTINEL' */
    addr(&a[3], "127.0.0.1", good.port);
    struct sentinel *s = sentinel_new(base, a, 4, "mmo", 300);
    struct answer ans = {0};
    double t0 = test_now_ms();
    sentinel_ask(s, on_answer, &ans);
    ASSERT_EQ(ans.fired, 0); /* never from inside the call */
    ASSERT(run_until(base, &ans.fired, 3000));
    ASSERT_OK(ans.status);
    ASSERT_STR(ans.host, "10.9.8.7");
    ASSERT_EQ(ans.port, 6390);
    /* the silent one cost its 300 ms, the others little */
    ASSERT(ans.at_ms - t0 >= 250 && ans.at_ms - t0 < 1500);
    char buf[300];
    sentinel_primary(s, buf, sizeof buf);
    ASSERT_STR(buf, "10.9.8.7:6390");
    ASSERT_EQ(sentinel_switches(s), 0);
    /* next time the good one is asked first: at once */
    memset(&ans, 0, sizeof ans);
    t0 = test_now_ms();
    sentinel_ask(s, on_answer, &ans);
    ASSERT(run_until(base, &ans.fired, 3000));
    ASSERT_OK(ans.status);
    ASSERT(ans.at_ms - t0 < 200);
    ASSERT_EQ(ans.fired, 1);
    sentinel_free(s);
    fake_stop(&silent);
    fake_stop(&good);
    event_base_free(base);
}

TEST(ask_fails_when_none_answers_with_the_reason)
{
    struct event_base *base = event_base_new();
    struct fake unknown;
    fake_start(&unknown, base, ANSWER_NIL);
    struct sentinel_addr a[3];
    addr(&a[0], "127.0.0.1", dead_port());
    addr(&a[1], rhost, rport);
    addr(&a[2], "127.0.0.1", unknown.port);
    struct sentinel *s = sentinel_new(base, a, 3, "mmo", 500);
    struct answer ans = {0};
    double t0 = test_now_ms();
    sentinel_ask(s, on_answer, &ans);
    ASSERT(run_until(base, &ans.fired, 3000));
    ASSERT_EQ(ans.status, ERR_UNAVAILABLE);
    ASSERT(ans.at_ms - t0 < 1000);
    ASSERT(strstr(ans.why, "no sentinel answered") != NULL);
    ASSERT(strstr(ans.why, "does not know master \"mmo\"") != NULL);
    char buf[300];
    sentinel_primary(s, buf, sizeof buf);
    ASSERT_STR(buf, "");
    sentinel_free(s);
    fake_stop(&unknown);
    event_base_free(base);
}

TEST(ask_canceled_never_calls_back)
{
    struct event_base *base = event_base_new();
    struct fake good;
    fake_start(&good, base, ANSWER_OK);
    struct sentinel_addr a[1];
    addr(&a[0], "127.0.0.1", good.port);
    struct sentinel *s = sentinel_new(base, a, 1, "mmo", 500);
    struct answer ans = {0};
    sentinel_ask_cancel(sentinel_ask(s, on_answer, &ans)); /* its connection in progress */
    int never = 0;
    run_until(base, &never, 300);
    ASSERT_EQ(ans.fired, 0);
    sentinel_free(s);
    fake_stop(&good);
    event_base_free(base);
}

/* ---- rds and rds_sub through a sentinel ----------------------------------------------------- */

struct up_flag {
    struct rds *r;
    struct rds_sub *sub;
    int up;
};

static void on_up_tick(evutil_socket_t fd, short what, void *arg)
{
    struct up_flag *u = arg;
    u->up = u->r ? rds_up(u->r) : rds_sub_up(u->sub);
}

static int wait_up(struct event_base *base, struct up_flag *u, int ms)
{
    struct event *ev = event_new(base, -1, EV_PERSIST, on_up_tick, u);
    struct timeval tv = {0, 5000};
    event_add(ev, &tv);
    run_until(base, &u->up, ms);
    event_free(ev);
    return u->up;
}

static void on_msg(const char *msg, size_t len, void *ud)
{
}

TEST(rds_and_sub_follow_the_sentinels_answer)
{
    struct event_base *base = event_base_new();
    char reply[256];
    snprintf(reply, sizeof reply, "*2\r\n$%zu\r\n%s\r\n$%d\r\n%d\r\n", strlen(rhost), rhost,
             snprintf(NULL, 0, "%d", rport), rport);
    struct fake good;
    fake_start(&good, base, reply);
    struct sentinel_addr a[2];
    addr(&a[0], "127.0.0.1", dead_port());
    addr(&a[1], "127.0.0.1", good.port);
    struct sentinel *s = sentinel_new(base, a, 2, "mmo", 500);
    /* host and port are a wrong first guess: the sentinel's answer wins */
    struct rds_opts o = {"127.0.0.1", dead_port(), 500, 500, 200, s};
    struct rds *r = rds_new(base, &o);
    struct rds_sub *sub = rds_sub_new(base, &o, "test_sentinel:chan", on_msg, NULL, NULL);
    struct up_flag u = {r, NULL, 0}, us = {NULL, sub, 0};
    ASSERT(wait_up(base, &u, 3000));
    ASSERT(wait_up(base, &us, 3000));
    char buf[300], want[300];
    rds_addr(r, buf, sizeof buf);
    snprintf(want, sizeof want, "%s:%d", rhost, rport);
    ASSERT_STR(buf, want);
    ASSERT_STR(rds_down_reason(r), "");
    rds_sub_free(sub);
    rds_free(r);
    sentinel_free(s);
    fake_stop(&good);
    event_base_free(base);
}

TEST(rds_is_down_with_the_reason_when_no_sentinel_answers)
{
    struct event_base *base = event_base_new();
    struct sentinel_addr a[1];
    addr(&a[0], "127.0.0.1", dead_port());
    struct sentinel *s = sentinel_new(base, a, 1, "mmo", 500);
    struct rds_opts o = {rhost, rport, 500, 500, 200, s}; /* a good guess, not used */
    struct rds *r = rds_new(base, &o);
    int never = 0;
    run_until(base, &never, 500);
    ASSERT(!rds_up(r));
    ASSERT(strstr(rds_down_reason(r), "no sentinel answered") != NULL);
    rds_free(r);
    sentinel_free(s);
    event_base_free(base);
}

int main(void)
{
    parse_env();
    log_init("test", LOG_WARN);
    log_set_fd(2);
    RUN(addrs_good);
    RUN(addrs_bad);
    RUN(master_reply);
    RUN(role_reply);
    RUN(stale_replies);
    RUN(ask_tries_each_in_turn_then_asks_the_one_that_answered_first);
    RUN(ask_fails_when_none_answers_with_the_reason);
    RUN(ask_canceled_never_calls_back);
    RUN(rds_and_sub_follow_the_sentinels_answer);
    RUN(rds_is_down_with_the_reason_when_no_sentinel_answers);
    log_deinit();
    return test_summary();
}
