/* test_world.c -- core/world.c with a fake sink: messages are right, a broadcast is encoded
 * once, every frame made is released. */
#include "test.h"

#include "err.h"
#include "world.h"

struct fake_frame {
    char text[256];
    int refs;
};

static int frames_made, frames_live, sends;
static char last[8][256]; /* last text each connection (1..7) got */
static int got[8];

static void *f_new(const char *text, size_t len, void *ud)
{
    struct fake_frame *f = calloc(1, sizeof *f);
    memcpy(f->text, text, len < 255 ? len : 255);
    f->refs = 1;
    frames_made++;
    frames_live++;
    (void) ud;
    return f;
}

static void f_unref(void *frame, void *ud)
{
    struct fake_frame *f = frame;
    if (--f->refs == 0) {
        free(f);
        frames_live--;
    }
    (void) ud;
}

static void f_send(void *conn, void *frame, void *ud)
{
    struct fake_frame *f = frame;
    int c = (int) (intptr_t) conn;
    snprintf(last[c], sizeof last[c], "%s", f->text);
    got[c]++;
    sends++;
    f->refs++;
    f_unref(f, ud); /* the fake "writes" it at once */
}

static const struct world_sink SINK = {f_new, f_send, f_unref, NULL, NULL};

#define CONN(i) ((void *) (intptr_t) (i))

static void reset(void)
{
    frames_made = sends = 0;
    memset(got, 0, sizeof got);
    memset(last, 0, sizeof last);
}

TEST(join_move_leave_messages)
{
    reset();
    struct world *w = world_new(100, &SINK);
    ASSERT_OK(world_region_add(w, "r1", 0, 0, 1000, 1000));
    ASSERT_OK(world_region_add(w, "r2", 1000, 0, 2000, 1000));
    void *rep;
    ASSERT_OK(world_join(w, CONN(1), 10, "Aria", 0, "r1", 100, 100, 1.0, &rep));
    ASSERT_OK(world_join(w, CONN(2), 20, "Bo", 0, "r1", 150, 100, 1.0, &rep));
    ASSERT_STR(last[1], "{\"t\":\"appear\",\"id\":20,\"name\":\"Bo\",\"x\":150,\"y\":100}");
    ASSERT_STR(last[2], "{\"t\":\"appear\",\"id\":10,\"name\":\"Aria\",\"x\":100,\"y\":100}");
    ASSERT_OK(world_move(w, 20, 160.5, 100, 2.0));
    ASSERT_STR(last[1], "{\"t\":\"moved\",\"id\":20,\"x\":160.5,\"y\":100}");
    ASSERT_OK(world_move(w, 20, 900, 900, 3.0)); /* out of view */
    ASSERT_STR(last[1], "{\"t\":\"vanish\",\"id\":20}");
    ASSERT_STR(last[2], "{\"t\":\"vanish\",\"id\":10}");
    ASSERT_OK(world_move(w, 20, 1100, 100, 4.0)); /* into r2 */
    double x, y, at;
    const char *region;
    ASSERT_OK(world_position(w, 20, &x, &y, &region, &at));
    ASSERT_STR(region, "r2");
    ASSERT_EQ(world_online(w, "r1"), 1);
    ASSERT_EQ(world_online(w, "r2"), 1);
    ASSERT_EQ(world_move(w, 20, -5, 0, 5.0), ERR_INVALID);
    ASSERT_EQ(world_move(w, 99, 1, 1, 5.0), ERR_NOTFOUND);
    ASSERT_EQ(world_join(w, CONN(3), 30, "Cy", 0, "r1", 1500, 10, 1.0, &rep), ERR_INVALID);
    ASSERT_OK(world_leave(w, 20, CONN(2)));
    ASSERT_EQ(world_leave(w, 20, CONN(2)), ERR_NOTFOUND);
    ASSERT_OK(world_leave(w, 10, CONN(1)));
    ASSERT_EQ(world_online(w, NULL), 0);
    ASSERT_EQ(frames_live, 0);
    world_free(w);
}

TEST(a_move_is_encoded_once_for_all_watchers)
{
    reset();
    struct world *w = world_new(100, &SINK);
    world_region_add(w, "r1", 0, 0, 1000, 1000);
    void *rep;
    for (int i = 1; i <= 7; i++)
        world_join(w, CONN(i), i, "P", 0, "r1", 500 + i, 500, 0, &rep);
    reset();
    ASSERT_OK(world_move(w, 1, 503, 503, 1));
    ASSERT_EQ(frames_made, 1); /* one "moved" frame */
    ASSERT_EQ(sends, 6);       /* to the six others */
    ASSERT_EQ(got[1], 0);
    ASSERT_EQ(frames_live, 0);
    /* chat to the region: one frame, seven receivers */
    reset();
    ASSERT_EQ(world_send_region(w, "r1", "{\"t\":\"chat\"}", 12), 7);
    ASSERT_EQ(frames_made, 1);
    ASSERT_EQ(world_send_all(w, "{}", 2), 7);
    ASSERT_EQ(frames_live, 0);
    world_free(w);
}

TEST(a_second_join_replaces_the_connection)
{
    reset();
    struct world *w = world_new(100, &SINK);
    world_region_add(w, "r1", 0, 0, 1000, 1000);
    void *rep = NULL;
    ASSERT_OK(world_join(w, CONN(1), 7, "Aria", 0, "r1", 10, 10, 0, &rep));
    ASSERT(rep == NULL);
    ASSERT_OK(world_join(w, CONN(2), 7, "Aria", 0, "r1", 10, 10, 0, &rep));
    ASSERT(rep == CONN(1));
    ASSERT(world_conn(w, 7) == CONN(2));
    ASSERT_EQ(world_leave(w, 7, CONN(1)), ERR_NOTFOUND); /* the replaced one leaving: no-op */
    ASSERT_EQ(world_online(w, NULL), 1);
    world_free(w);
}

static int dirty_seen;
static void on_dirty(int64_t id, const char *region, double x, double y, double at, void *arg)
{
    (void) id, (void) region, (void) x, (void) y, (void) at, (void) arg;
    dirty_seen++;
}

TEST(dirty_positions_are_taken_once)
{
    reset();
    struct world *w = world_new(100, &SINK);
    world_region_add(w, "r1", 0, 0, 1000, 1000);
    void *rep;
    for (int i = 1; i <= 5; i++)
        world_join(w, CONN(i), i, "P", 0, "r1", 10 * i, 10, 0, &rep);
    for (int k = 0; k < 10; k++)
        world_move(w, 1 + k % 3, 100 + k, 100, k);
    dirty_seen = 0;
    ASSERT_EQ(world_take_dirty(w, on_dirty, NULL), 3);
    ASSERT_EQ(dirty_seen, 3);
    ASSERT_EQ(world_take_dirty(w, on_dirty, NULL), 0);
    world_move(w, 2, 50, 50, 11);
    world_leave(w, 2, CONN(2)); /* a player that leaves is no longer dirty */
    ASSERT_EQ(world_take_dirty(w, on_dirty, NULL), 0);
    world_free(w);
}

static int in_rect[4][3]; /* [rect][guild] */

static void on_in_rect(int rect, int64_t guild, void *arg)
{
    in_rect[rect][guild]++;
    (void) arg;
}

TEST(presence_counts_guilds_in_rectangles_against_a_brute_force_count)
{
    reset();
    struct world *w = world_new(50, &SINK);
    world_region_add(w, "r1", 0, 0, 1000, 1000);
    world_region_add(w, "r2", 1000, 0, 2000, 1000);
    /* the first rectangle wins where two overlap; edges are half-open like regions */
    const double rects[] = {0, 0, 100, 100, 50, 50, 200, 200, 500, 500, 600, 600, 900, 0, 1000, 1};
    double px[300], py[300];
    int64_t pg[300];
    unsigned seed = 7;
    void *rep;
    for (int i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        px[i] = (double) (seed % 100000) / 100.0;
        seed = seed * 1103515245u + 12345u;
        py[i] = (double) (seed % 100000) / 100.0;
        if (i < 20) /* some on the rectangles' edges */
            px[i] = (i % 2) ? 100 : 50, py[i] = (i % 3) ? 100 : 50;
        pg[i] = i % 3;
        world_join(w, CONN(1), 1000 + i, "P", pg[i], "r1", px[i], py[i], 0, &rep);
    }
    world_join(w, CONN(2), 5000, "Q", 1, "r2", 1050, 50, 0, &rep); /* another region */
    memset(in_rect, 0, sizeof in_rect);
    ASSERT_EQ(world_each_in_rects(w, "r1", rects, 4, on_in_rect, NULL), 300);
    int want[4][3] = {{0}};
    for (int i = 0; i < 300; i++)
        for (int r = 0; r < 4; r++) {
            const double *q = rects + 4 * r;
            if (px[i] >= q[0] && py[i] >= q[1] && px[i] < q[2] && py[i] < q[3]) {
                want[r][pg[i]]++;
                break;
            }
        }
    for (int r = 0; r < 4; r++)
        for (int g = 0; g < 3; g++)
            ASSERT_EQ(in_rect[r][g], want[r][g]);
    ASSERT(want[0][0] + want[0][1] + want[0][2] > 0);
    /* a guild change counts at once */
    world_set_guild(w, 1000, 2);
    memset(in_rect, 0, sizeof in_rect);
    world_each_in_rects(w, "r1", rects, 4, on_in_rect, NULL);
    ASSERT_EQ(in_rect[0][0], want[0][0] - 1); /* player 1000 stands at (50, 50), guild 0 */
    ASSERT_EQ(in_rect[0][2], want[0][2] + 1);
    ASSERT_EQ(world_set_guild(w, 424242, 1), ERR_NOTFOUND);
    ASSERT_EQ(world_each_in_rects(w, "nowhere", rects, 4, on_in_rect, NULL), ERR_NOTFOUND);
    world_free(w);
}

TEST(each_stay_in_the_world_has_its_own_generation)
{
    reset();
    struct world *w = world_new(100, &SINK);
    world_region_add(w, "r1", 0, 0, 1000, 1000);
    void *rep;
    ASSERT_EQ(world_generation(w, 1), 0);
    world_join(w, CONN(1), 1, "P", 0, "r1", 10, 10, 0, &rep);
    world_join(w, CONN(2), 2, "Q", 0, "r1", 20, 10, 0, &rep);
    uint64_t g1 = world_generation(w, 1);
    ASSERT(g1 > 0 && g1 != world_generation(w, 2));
    world_join(w, CONN(3), 1, "P", 0, "r1", 10, 10, 0, &rep); /* a new connection: same stay */
    ASSERT(world_generation(w, 1) == g1);
    world_leave(w, 1, CONN(3));
    ASSERT_EQ(world_generation(w, 1), 0);
    world_join(w, CONN(1), 1, "P", 0, "r1", 10, 10, 0, &rep);
    ASSERT(world_generation(w, 1) > g1);
    world_free(w);
}

int main(void)
{
    RUN(join_move_leave_messages);
    RUN(a_move_is_encoded_once_for_all_watchers);
    RUN(a_second_join_replaces_the_connection);
    RUN(dirty_positions_are_taken_once);
    RUN(each_stay_in_the_world_has_its_own_generation);
    RUN(presence_counts_guilds_in_rectangles_against_a_brute_force_count);
    return test_summary();
}
