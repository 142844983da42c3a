/* test_bus.c -- two nodes' worlds joined by the bus's messages (core/bus.c bus_apply), without
 * Redis: what one node's players do is seen by the other's, a player moving to another node
 * takes its place there without a vanish, a lost connection's player stays for the grace, and
 * messages that are not the bus's change nothing. */
#include "test.h"

#include "bus.h"
#include "err.h"
#include "world.h"

#include <stdint.h>

struct fake_frame {
    char text[256];
    int refs;
};

static char last[16][256]; /* the last text each connection (1..15) got */
static int got[16], taken[16];

static void *f_new(const char *text, size_t len, void *ud)
{
    struct fake_frame *f = calloc(1, sizeof *f);
    memcpy(f->text, text, len < 255 ? len : 255);
    f->refs = 1;
    (void) ud;
    return f;
}

static void f_unref(void *frame, void *ud)
{
    struct fake_frame *f = frame;
    if (--f->refs == 0)
        free(f);
    (void) ud;
}

static void f_send(void *conn, void *frame, void *ud)
{
    int c = (int) (intptr_t) conn;
    snprintf(last[c], sizeof last[c], "%s", ((struct fake_frame *) frame)->text);
    got[c]++;
    (void) ud;
}

static void f_taken(void *conn, void *ud)
{
    taken[(int) (intptr_t) conn]++;
    (void) ud;
}

static const struct world_sink SINK = {f_new, f_send, f_unref, f_taken, NULL};

/* A node: its world and what it would publish (one message). */
struct node {
    const char *name;
    struct world *w;
    char out[8192];
    size_t len;
};

static void put(struct node *n, const char *line)
{
    if (n->len == 0)
        n->len = (size_t) snprintf(n->out, sizeof n->out, "%s\n", n->name);
    n->len += (size_t) snprintf(n->out + n->len, sizeof n->out - n->len, "%s\n", line);
}

static void b_joined(int64_t id, const char *name, int64_t guild, int64_t since, double x, double y,
                     void *ud)
{
    char l[200];
    snprintf(l, sizeof l, "j %lld %lld %lld %.17g %.17g %s", (long long) id, (long long) guild,
             (long long) since, x, y, name);
    put(ud, l);
}

static void b_moved(int64_t id, double x, double y, void *ud)
{
    char l[100];
    snprintf(l, sizeof l, "m %lld %.17g %.17g", (long long) id, x, y);
    put(ud, l);
}

static void b_left(int64_t id, void *ud)
{
    char l[40];
    snprintf(l, sizeof l, "l %lld", (long long) id);
    put(ud, l);
}

static void node_init(struct node *n, const char *name)
{
    memset(n, 0, sizeof *n);
    n->name = name;
    n->w = world_new(100, &SINK);
    world_region_add(n->w, "r1", 0, 0, 1000, 1000);
    world_region_add(n->w, "r2", 1000, 0, 2000, 1000);
    struct world_bus b = {b_joined, b_moved, b_left, n};
    world_set_bus(n->w, &b);
}

/* what from published reaches to: the lines applied */
static int deliver(struct node *from, struct node *to, double mono)
{
    int sync = 0;
    int n = from->len ? bus_apply(to->w, to->name, from->out, from->len, mono, &sync) : 0;
    return n;
}

static void sent(struct node *n)
{
    n->len = 0;
}

static void reset(void)
{
    memset(got, 0, sizeof got);
    memset(taken, 0, sizeof taken);
    memset(last, 0, sizeof last);
}

static void two_nodes(struct node *a, struct node *b)
{
    reset();
    node_init(a, "node-a/1");
    node_init(b, "node-b/2");
}

TEST(players_of_two_nodes_see_each_other)
{
    struct node a, b;
    two_nodes(&a, &b);
    void *rep;
    ASSERT_OK(world_join(a.w, (void *) 1, 10, "Aria", 0, "r1", 100, 100, 1.0, &rep));
    ASSERT_EQ(deliver(&a, &b, 1), 1);
    sent(&a);
    ASSERT_OK(world_join(b.w, (void *) 4, 20, "Bo", 7, "r1", 150, 100, 1.0, &rep));
    /* Bo sees Aria at once (B's mirror), Aria once A hears of Bo */
    ASSERT_STR(last[4], "{\"t\":\"appear\",\"id\":10,\"name\":\"Aria\",\"x\":100,\"y\":100}");
    ASSERT_EQ(got[1], 0);
    ASSERT_EQ(deliver(&b, &a, 1), 1);
    sent(&b);
    ASSERT_STR(last[1], "{\"t\":\"appear\",\"id\":20,\"name\":\"Bo\",\"x\":150,\"y\":100}");
    ASSERT_EQ(world_online(a.w, "r1"), 2); /* the region as every node sees it */
    /* a move on B reaches A's player; one on A reaches B's */
    ASSERT_OK(world_move(b.w, 20, 160.25, 100, 2.0));
    ASSERT_EQ(deliver(&b, &a, 2), 1);
    sent(&b);
    ASSERT_STR(last[1], "{\"t\":\"moved\",\"id\":20,\"x\":160.25,\"y\":100}");
    ASSERT_OK(world_move(a.w, 10, 0.1 + 0.2, 100, 2.0)); /* a number needing 17 digits */
    ASSERT_EQ(deliver(&a, &b, 2), 1);
    sent(&a);
    double x, y, at;
    const char *region;
    ASSERT_OK(world_position(b.w, 10, &x, &y, &region, &at));
    ASSERT(x == 0.1 + 0.2);
    /* the owner's view of the region counts both: territories, world events */
    ASSERT_EQ(world_online(b.w, "r1"), 2);
    /* another node's player is not this node's to move or to checkpoint */
    ASSERT_EQ(world_move(a.w, 20, 170, 100, 3.0), ERR_NOTFOUND);
    /* B's player leaves: A's sees it vanish */
    ASSERT_OK(world_leave(b.w, 20, (void *) 4));
    ASSERT_EQ(deliver(&b, &a, 3), 1);
    sent(&b);
    ASSERT_STR(last[1], "{\"t\":\"vanish\",\"id\":20}");
    ASSERT_EQ(world_online(a.w, "r1"), 1);
    world_free(a.w);
    world_free(b.w);
}

TEST(a_player_who_joins_on_another_node_moves_there_without_a_vanish)
{
    struct node a, b;
    two_nodes(&a, &b);
    void *rep;
    world_join(a.w, (void *) 1, 10, "Aria", 0, "r1", 100, 100, 1.0, &rep);
    world_join(a.w, (void *) 2, 11, "Cy", 0, "r1", 120, 100, 1.0, &rep);
    deliver(&a, &b, 1);
    sent(&a);
    /* Aria's connection is lost: she stays (Cy sees nothing) */
    ASSERT_OK(world_detach(a.w, 10, (void *) 1, 2.0));
    ASSERT(world_conn(a.w, 10) == NULL);
    ASSERT_EQ(world_online(a.w, "r1"), 2);
    /* and joins again on B, where B held her from A: same place, a later stay */
    reset();
    ASSERT_OK(world_join(b.w, (void *) 5, 10, "Aria", 0, "r1", 999, 999, 3.0, &rep));
    double x, y, at;
    const char *region;
    ASSERT_OK(world_position(b.w, 10, &x, &y, &region, &at));
    ASSERT(x == 100 && y == 100);
    ASSERT_EQ(deliver(&b, &a, 3), 1);
    sent(&b);
    ASSERT_EQ(got[2], 0);   /* Cy saw no vanish and no appear */
    ASSERT_EQ(taken[1], 0); /* the lost connection is not told again */
    /* A holds her as B's now: her moves come from B, A's stale ones are refused */
    ASSERT_EQ(world_move(a.w, 10, 101, 100, 4.0), ERR_NOTFOUND);
    ASSERT_OK(world_move(b.w, 10, 105, 100, 4.0));
    deliver(&b, &a, 4);
    sent(&b);
    ASSERT_STR(last[2], "{\"t\":\"moved\",\"id\":10,\"x\":105,\"y\":100}");
    /* A's grace ends: her record there is B's, so nothing leaves */
    ASSERT_EQ(world_expire(a.w, 4.5, 3, 1), 0);
    /* Cy joins on B while still connected to A: A's connection is told (taken) */
    ASSERT_OK(world_join(b.w, (void *) 6, 11, "Cy", 0, "r1", 120, 100, 5.0, &rep));
    deliver(&b, &a, 5);
    sent(&b);
    ASSERT_EQ(taken[2], 1);
    ASSERT(world_conn(a.w, 11) == NULL);
    /* a roster of A sent before it knew (an older stay) changes nothing at B */
    ASSERT_EQ(bus_apply(b.w, "node-b/2", "node-a/1\nj 11 0 1000 130 100 Cy\n", 33, 5, &(int){0}),
              0);
    ASSERT(world_conn(b.w, 11) == (void *) 6);
    world_free(a.w);
    world_free(b.w);
}

TEST(the_grace_and_a_silent_node)
{
    struct node a, b;
    two_nodes(&a, &b);
    void *rep;
    world_join(a.w, (void *) 1, 10, "Aria", 0, "r1", 100, 100, 1.0, &rep);
    world_join(b.w, (void *) 4, 20, "Bo", 0, "r1", 110, 100, 1.0, &rep);
    deliver(&a, &b, 10);
    deliver(&b, &a, 10);
    sent(&a);
    sent(&b);
    ASSERT_OK(world_detach(a.w, 10, (void *) 1, 10));
    ASSERT_EQ(world_expire(a.w, 15, 30, 10), 0); /* within the grace */
    ASSERT_EQ(world_expire(a.w, 20.5, 30, 10), 1);
    ASSERT_EQ(deliver(&a, &b, 21), 1); /* "l 10" */
    ASSERT_STR(last[4], "{\"t\":\"vanish\",\"id\":10}");
    /* A goes silent: B drops its players after ttl (A's Bo copy too from B's view: none left) */
    world_join(a.w, (void *) 2, 12, "Dee", 0, "r1", 120, 100, 21, &rep);
    deliver(&a, &b, 21);
    sent(&a);
    ASSERT_EQ(world_expire(b.w, 23, 3, 10), 0);
    ASSERT_EQ(world_expire(b.w, 24.5, 3, 10), 1);
    ASSERT_STR(last[4], "{\"t\":\"vanish\",\"id\":12}");
    world_free(a.w);
    world_free(b.w);
}

TEST(what_is_not_a_bus_message_changes_nothing)
{
    reset();
    struct node b;
    node_init(&b, "node-b/2");
    int sync = 0;
    static const char *const bad[] = {
        "",                                                 /* no header */
        "\nj 1 0 1 10 10 X\n",                              /* empty sender */
        "node-a/1",                                         /* header only, no newline */
        "node-a/1\nj 1 0 1 nan 10 X\n",                     /* not a number */
        "node-a/1\nj 1 0 1 inf 10 X\n",                     /* infinite */
        "node-a/1\nj 1 0 1 5000 10 X\n",                    /* outside every region */
        "node-a/1\nj 1 0 1 10 10 \"},{\"t\":\"x\n",         /* a name breaking the JSON */
        "node-a/1\nj 1 0 1 10 10 \n",                       /* no name */
        "node-a/1\nj -4 0 1 10 10 X\n",                     /* not an id */
        "node-a/1\nj 1 0 1 10 10X\n",                       /* glued */
        "node-a/1\nm 1 10\n",                               /* short */
        "node-a/1\nm 99 10 10\n",                           /* nobody */
        "node-a/1\nl 99\n",                                 /* nobody */
        "node-a/1\nq 1 2 3\n",                              /* no such line */
        "node-a/1\nj 99999999999999999999999 0 1 10 10 X\n" /* too large */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ASSERT(bus_apply(b.w, "node-b/2", bad[i], strlen(bad[i]), 1, &sync) <= 0);
    ASSERT_EQ(world_online(b.w, NULL), 0);
    ASSERT_EQ(sync, 0);
    /* a good line among bad ones is applied alone; a NUL inside a line spoils only it */
    static const char mixed[] = "node-a/1\nx\nj 1 0 1 10 10 Ok\nm 1 1\0 2\nm 1 11 10\ns\n";
    ASSERT_EQ(bus_apply(b.w, "node-b/2", mixed, sizeof mixed - 1, 1, &sync), 3);
    ASSERT_EQ(sync, 1);
    double x, y, at;
    const char *region;
    ASSERT_OK(world_position(b.w, 1, &x, &y, &region, &at));
    ASSERT(x == 11);
    /* a move of that player from a node that is not its home is ignored */
    ASSERT_EQ(bus_apply(b.w, "node-b/2", "node-c/3\nm 1 50 50\n", 19, 1, &sync), 0);
    world_position(b.w, 1, &x, &y, &region, &at);
    ASSERT(x == 11);
    /* our own messages come back from Redis: skipped */
    ASSERT_EQ(bus_apply(b.w, "node-b/2", "node-b/2\nj 2 0 1 10 10 Me\n", 26, 1, &sync), 0);
    ASSERT_EQ(world_online(b.w, NULL), 1);
    world_free(b.w);
}

int main(void)
{
    RUN(players_of_two_nodes_see_each_other);
    RUN(a_player_who_joins_on_another_node_moves_there_without_a_vanish);
    RUN(the_grace_and_a_silent_node);
    RUN(what_is_not_a_bus_message_changes_nothing);
    return test_summary();
}
