/* test_rds_set.c -- core/rds_set.c: placement over instance names, and one pipeline split over
 * several instances (against a real Redis, MMO_TEST_REDIS: the "instances" are separate
 * connections to it, which is all a split can tell apart). */
#include "test.h"
#include "test_cmds.h"
#include "test_loop.h"

#include "err.h"
#include "log.h"
#include "rds.h"
#include "rds_set.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

static char host[64];
static int port;

/* ---- placement ------------------------------------------------------------------------------ */

static int place(const char *const *names, int n, const char *tag)
{
    struct rds_set s = {.n = n};
    for (int i = 0; i < n; i++)
        s.name[i] = names[i];
    return rds_set_place(&s, tag, strlen(tag));
}

TEST(one_instance_holds_everything)
{
    const char *one[] = {"main"};
    ASSERT_EQ(place(one, 1, "region:r1"), 0);
    ASSERT_EQ(place(one, 1, ""), 0);
    ASSERT_EQ(rds_set_place(NULL, "x", 1), 0);
}

TEST(placement_ignores_the_order_of_the_list)
{
    const char *abc[] = {"main", "b", "c"}, *cab[] = {"c", "main", "b"};
    char tag[32];
    for (int i = 0; i < 500; i++) {
        snprintf(tag, sizeof tag, "region:r%d", i);
        ASSERT_STR(abc[place(abc, 3, tag)], cab[place(cab, 3, tag)]);
    }
}

TEST(tags_spread_evenly)
{
    const char *names[] = {"main", "r1", "r2"};
    int count[3] = {0};
    char tag[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(tag, sizeof tag, "region:r%d", i);
        count[place(names, 3, tag)]++;
    }
    for (int k = 0; k < 3; k++)
        if (count[k] < 850 || count[k] > 1150)
            FAIL_AT("instance %s got %d of 3000 tags (about 1000 expected)", names[k], count[k]);
}

/* Adding an instance moves only the tags it takes (about a quarter with four); none moves
 * between the old ones. */
TEST(adding_an_instance_moves_only_what_it_takes)
{
    const char *three[] = {"main", "r1", "r2"}, *four[] = {"main", "r1", "r2", "r3"};
    int moved = 0;
    char tag[32];
    for (int i = 0; i < 4000; i++) {
        snprintf(tag, sizeof tag, "stream:s%d", i);
        int before = place(three, 3, tag), after = place(four, 4, tag);
        if (after != before) {
            ASSERT_EQ(after, 3);
            moved++;
        }
    }
    if (moved < 850 || moved > 1150)
        FAIL_AT("%d of 4000 tags moved (about 1000 expected)", moved);
}

TEST(the_layout_is_the_sorted_names)
{
    struct rds_set s = {.n = 3};
    s.name[0] = "main";
    s.name[1] = "s2";
    s.name[2] = "b";
    char buf[RDS_SET_LAYOUT_MAX];
    rds_set_layout(&s, buf, sizeof buf);
    ASSERT_STR(buf, "b,main,s2");
    s.n = 1;
    rds_set_layout(&s, buf, sizeof buf);
    ASSERT_STR(buf, "main");
}

TEST(scores_are_fixed_numbers)
{
    /* nodes of different builds must agree: the hash is ours, not the platform's */
    ASSERT(rds_place_score("main", "region:r1", 9) == rds_place_score("main", "region:r1", 9));
    ASSERT(rds_place_score("main", "region:r1", 9) != rds_place_score("main", "region:r2", 9));
    ASSERT(rds_place_score("a", "bc", 2) != rds_place_score("ab", "c", 1));
    /* pinned: a change here moves every region and stream of a running world */
    ASSERT(rds_place_score("main", "", 0) == 0x8b0cf2622482eaddULL);
    ASSERT(rds_place_score("main", "region:r1", 9) == 0xe48bf376b0a3b9d5ULL);
}

/* ---- split pipelines ------------------------------------------------------------------------ */

#define MAXR 8

struct res {
    int fired, status, n;
    char str[MAXR][64];
    struct rds_split *cancel_in_cb;
};

static void on_batch(struct redisReply **replies, int n, int status, void *ud)
{
    struct res *res = ud;
    res->fired++;
    res->status = status;
    res->n = n;
    for (int i = 0; status == 0 && i < n && i < MAXR; i++)
        snprintf(res->str[i], sizeof res->str[i], "%.*s", (int) replies[i]->len,
                 replies[i]->str ? replies[i]->str : "");
}

struct two {
    struct event_base *base;
    struct rds_set set;
};

/* Two instances: home on the test Redis, the second there too or on a closed port. */
static int two_new(struct two *t, int second_port)
{
    t->base = event_base_new();
    struct rds_opts o = {host, port, 1000, 1000, 500, NULL};
    struct rds_opts o2 = o;
    o2.port = second_port;
    t->set.n = 2;
    t->set.name[0] = "main";
    t->set.name[1] = "b";
    t->set.r[0] = rds_new(t->base, &o);
    t->set.r[1] = rds_new(t->base, &o2);
    int up = 0;
    double end = test_now_ms() + 2000;
    while (test_now_ms() < end && !(up = rds_up(t->set.r[0]) && rds_up(t->set.r[1]))) {
        int never = 0;
        test_run_until(t->base, &never, 5, 1000);
    }
    return up;
}

static void two_free(struct two *t)
{
    rds_free(t->set.r[0]);
    rds_free(t->set.r[1]);
    event_base_free(t->base);
}

/* commands as words (test_cmds.h), each on inst[i] */
static int split(struct two *t, const int *inst, int n, const char *const *cmds, int timeout_ms,
                 struct res *res, struct rds_split **sp)
{
    static struct test_cmds c;
    test_cmds_split(&c, cmds, n);
    return rds_split_batch(&t->set, inst, n, c.argc, c.argv, c.argvlen, timeout_ms, on_batch, res,
                           sp);
}

TEST(replies_come_back_in_the_callers_order)
{
    struct two t;
    ASSERT(two_new(&t, port));
    const char *cmds[] = {"ECHO a", "ECHO b", "ECHO c", "ECHO d", "ECHO e"};
    int inst[] = {1, 0, 1, 1, 0};
    struct res res = {0};
    struct rds_split *sp = NULL;
    ASSERT_OK(split(&t, inst, 5, cmds, 0, &res, &sp));
    ASSERT(sp != NULL);
    ASSERT_EQ(res.fired, 0); /* never from inside the call */
    ASSERT(test_run_until(t.base, &res.fired, 1000, 1000));
    ASSERT_OK(res.status);
    ASSERT_EQ(res.n, 5);
    ASSERT_STR(res.str[0], "a");
    ASSERT_STR(res.str[1], "b");
    ASSERT_STR(res.str[2], "c");
    ASSERT_STR(res.str[3], "d");
    ASSERT_STR(res.str[4], "e");
    int never = 0;
    test_run_until(t.base, &never, 30, 1000);
    ASSERT_EQ(res.fired, 1);
    two_free(&t);
}

TEST(a_transaction_cannot_span_instances)
{
    struct two t;
    ASSERT(two_new(&t, port));
    struct res res = {0};
    const char *cmds[] = {"MULTI", "ECHO a", "EXEC"};
    int spans[] = {0, 1, 0}, bad[] = {0, 0, 2}, one[] = {1, 1, 1};
    ASSERT_EQ(split(&t, spans, 3, cmds, 0, &res, NULL), ERR_INVALID);
    int beyond[] = {2};
    ASSERT_EQ(split(&t, bad, 3, cmds, 0, &res, NULL), ERR_INVALID);
    ASSERT_EQ(split(&t, beyond, 1, cmds + 1, 0, &res, NULL), ERR_INVALID);
    const char *blocking[] = {"ECHO a", "BLPOP x 1"};
    int both[] = {0, 1};
    ASSERT_EQ(split(&t, both, 2, blocking, 0, &res, NULL), ERR_INVALID);
    /* on one instance, the transaction runs */
    ASSERT_OK(split(&t, one, 3, cmds, 0, &res, NULL));
    ASSERT(test_run_until(t.base, &res.fired, 1000, 1000));
    ASSERT_OK(res.status);
    two_free(&t);
}

/* The second instance is down: nothing is owed, the part sent to home is canceled (ASan: no
 * leak), and the caller's callback never fires. */
TEST(an_instance_down_fails_the_call_at_once)
{
    struct two t;
    ASSERT_EQ(two_new(&t, test_closed_port()), 0);
    ASSERT(rds_up(t.set.r[0]));
    const char *cmds[] = {"ECHO a", "ECHO b"};
    int inst[] = {0, 1};
    struct res res = {0};
    struct rds_split *sp = (struct rds_split *) &res;
    ASSERT_EQ(split(&t, inst, 2, cmds, 0, &res, &sp), ERR_UNAVAILABLE);
    ASSERT(sp == NULL);
    int never = 0;
    test_run_until(t.base, &never, 50, 1000);
    ASSERT_EQ(res.fired, 0);
    two_free(&t);
}

/* Both parts stall (the server is paused): the first timeout fails the call once; the other
 * part is canceled and its late answer changes nothing. */
TEST(a_part_that_times_out_fails_the_call_once)
{
    struct two t;
    ASSERT(two_new(&t, port));
    const char *pause[] = {"CLIENT PAUSE 300 ALL"};
    int home[] = {0};
    struct res p = {0};
    ASSERT_OK(split(&t, home, 1, pause, 0, &p, NULL));
    ASSERT(test_run_until(t.base, &p.fired, 1000, 1000));
    const char *cmds[] = {"ECHO a", "ECHO b", "ECHO c"};
    int inst[] = {1, 0, 1};
    struct res res = {0};
    ASSERT_OK(split(&t, inst, 3, cmds, 100, &res, NULL));
    ASSERT(test_run_until(t.base, &res.fired, 1000, 1000));
    ASSERT_EQ(res.status, ERR_TIMEOUT);
    int never = 0;
    test_run_until(t.base, &never, 400, 1000);
    ASSERT_EQ(res.fired, 1);
    two_free(&t);
}

TEST(cancel_prevents_the_callback)
{
    struct two t;
    ASSERT(two_new(&t, port));
    const char *cmds[] = {"ECHO a", "ECHO b"};
    int inst[] = {0, 1};
    struct res res = {0}, after = {0};
    struct rds_split *sp = NULL;
    ASSERT_OK(split(&t, inst, 2, cmds, 0, &res, &sp));
    rds_split_cancel(sp);
    rds_split_cancel(NULL); /* harmless */
    ASSERT_OK(split(&t, inst, 2, cmds, 0, &after, NULL));
    ASSERT(test_run_until(t.base, &after.fired, 1000, 1000));
    int never = 0;
    test_run_until(t.base, &never, 30, 1000);
    ASSERT_EQ(res.fired, 0);
    ASSERT_OK(after.status);
    ASSERT_STR(after.str[1], "b");
    two_free(&t);
}

/* rds_free with a split in flight: the part on the freed instance fails with ERR_CLOSED, the
 * call fails once, the other part is canceled. */
TEST(freeing_an_instance_fails_the_split_once)
{
    struct two t;
    ASSERT(two_new(&t, port));
    const char *cmds[] = {"ECHO a", "ECHO b"};
    int inst[] = {0, 1};
    struct res res = {0};
    ASSERT_OK(split(&t, inst, 2, cmds, 0, &res, NULL));
    rds_free(t.set.r[1]);
    ASSERT_EQ(res.fired, 1);
    ASSERT_EQ(res.status, ERR_CLOSED);
    rds_free(t.set.r[0]);
    int never = 0;
    test_run_until(t.base, &never, 30, 1000);
    ASSERT_EQ(res.fired, 1);
    event_base_free(t.base);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    test_redis_addr(host, sizeof host, &port);
    RUN(one_instance_holds_everything);
    RUN(placement_ignores_the_order_of_the_list);
    RUN(tags_spread_evenly);
    RUN(adding_an_instance_moves_only_what_it_takes);
    RUN(the_layout_is_the_sorted_names);
    RUN(scores_are_fixed_numbers);
    RUN(replies_come_back_in_the_callers_order);
    RUN(a_transaction_cannot_span_instances);
    RUN(an_instance_down_fails_the_call_at_once);
    RUN(a_part_that_times_out_fails_the_call_once);
    RUN(cancel_prevents_the_callback);
    RUN(freeing_an_instance_fails_the_split_once);
    return test_summary();
}
