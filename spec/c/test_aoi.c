/* test_aoi.c -- core/aoi.c against a brute-force model: after every enter, move and leave,
 * what each entity was told it sees equals who is really within the radius. */
#include "test.h"

#include "aoi.h"
#include "err.h"

#include <math.h>

#define N 200
#define R 50.0

static unsigned char seen[N][N]; /* seen[a][b]: a was told it sees b */
static struct aoi_ent *ents[N];
static int bad_moved, events;

static void on_event(int kind, struct aoi_ent *rcv, struct aoi_ent *subj, void *ud)
{
    int a = (int) aoi_ent_id(rcv), b = (int) aoi_ent_id(subj);
    events++;
    if (kind == AOI_APPEAR) {
        if (seen[a][b])
            bad_moved++; /* appeared twice */
        seen[a][b] = 1;
    } else if (kind == AOI_VANISH) {
        if (!seen[a][b])
            bad_moved++; /* vanished without appearing */
        seen[a][b] = 0;
    } else if (kind == AOI_MOVED) {
        if (!seen[a][b])
            bad_moved++; /* moved while not seen */
    }
    (void) ud;
}

static int truth(struct aoi *a, int i, int j)
{
    if (!ents[i] || !ents[j] || i == j)
        return 0;
    if (aoi_ent_region(ents[i]) != aoi_ent_region(ents[j]))
        return 0;
    double dx = aoi_ent_x(ents[i]) - aoi_ent_x(ents[j]);
    double dy = aoi_ent_y(ents[i]) - aoi_ent_y(ents[j]);
    (void) a;
    return dx * dx + dy * dy <= R * R;
}

static double rnd(double lo, double hi)
{
    return lo + (hi - lo) * ((double) rand() / ((double) RAND_MAX + 1.0));
}

TEST(visibility_matches_a_brute_force_model)
{
    srand(7);
    memset(seen, 0, sizeof seen);
    memset(ents, 0, sizeof ents);
    bad_moved = 0;
    struct aoi *a = aoi_new(R, on_event, NULL);
    ASSERT(aoi_region_add(a, "r1", 0, 0, 400, 400) == 0);
    ASSERT(aoi_region_add(a, "r2", 400, 0, 800, 400) == 1);
    for (int step = 0; step < 20000; step++) {
        int i = rand() % N;
        int op = rand() % 10;
        if (!ents[i]) {
            double x = rnd(0, 800), y = rnd(0, 400);
            ents[i] = aoi_enter(a, i, aoi_region_at(a, x, y), x, y, NULL);
            ASSERT(ents[i] != NULL);
        } else if (op == 0) {
            aoi_leave(a, ents[i]);
            ents[i] = NULL;
            memset(seen[i], 0, sizeof seen[i]); /* what it saw goes with its connection */
        } else {
            /* mostly small steps, sometimes a jump (teleport, region change) */
            double x = op == 1 ? rnd(0, 800) : aoi_ent_x(ents[i]) + rnd(-30, 30);
            double y = op == 1 ? rnd(0, 400) : aoi_ent_y(ents[i]) + rnd(-30, 30);
            int r = aoi_region_at(a, x, y);
            if (r < 0) {
                ASSERT_EQ(aoi_move(a, ents[i], aoi_ent_region(ents[i]), x, y), ERR_INVALID);
                continue;
            }
            ASSERT_OK(aoi_move(a, ents[i], r, x, y));
        }
        if (step % 97 == 0 || step > 19900) {
            for (int p = 0; p < N; p++)
                for (int q = 0; q < N; q++)
                    if (seen[p][q] != truth(a, p, q))
                        FAIL_AT("step %d: %d sees %d: told %d, truth %d", step, p, q, seen[p][q],
                                truth(a, p, q));
        }
    }
    ASSERT_EQ(bad_moved, 0);
    int total = 0;
    for (int r = 0; r < aoi_regions(a); r++)
        total += aoi_region_count(a, r);
    int alive = 0;
    for (int i = 0; i < N; i++)
        alive += ents[i] != NULL;
    ASSERT_EQ(total, alive);
    aoi_free(a);
}

static int counted;
static void count(struct aoi_ent *e, void *arg)
{
    (void) e;
    (void) arg;
    counted++;
}

TEST(a_move_tells_only_those_in_view)
{
    events = 0;
    memset(seen, 0, sizeof seen);
    struct aoi *a = aoi_new(10, on_event, NULL);
    aoi_region_add(a, "r1", 0, 0, 1000, 1000);
    struct aoi_ent *e0 = aoi_enter(a, 0, 0, 100, 100, NULL);
    struct aoi_ent *e1 = aoi_enter(a, 1, 0, 105, 100, NULL);
    struct aoi_ent *e2 = aoi_enter(a, 2, 0, 500, 500, NULL);
    ASSERT(seen[0][1] && seen[1][0] && !seen[0][2]);
    events = 0;
    ASSERT_OK(aoi_move(a, e1, 0, 107, 100));
    ASSERT_EQ(events, 1); /* one moved, to e0; e2 is far away */
    counted = 0;
    aoi_each_visible(a, e0, count, NULL);
    ASSERT_EQ(counted, 1);
    counted = 0;
    aoi_each_in_region(a, 0, count, NULL);
    ASSERT_EQ(counted, 3);
    ASSERT(aoi_enter(a, 9, 0, 2000, 0, NULL) == NULL); /* outside the region */
    ASSERT_EQ(aoi_region_add(a, "bad", 5, 5, 1, 1), ERR_INVALID);
    ASSERT_EQ(aoi_region_add(a, "r1", 0, 0, 1, 1), ERR_INVALID);
    aoi_leave(a, e2);
    aoi_leave(a, e1);
    ASSERT(!seen[0][1]);
    aoi_leave(a, e0);
    aoi_free(a);
}

TEST(a_crowd_in_one_cell)
{
    /* N entities all in view of each other: every ordered pair told exactly once */
    events = 0;
    struct aoi *a = aoi_new(1000, on_event, NULL);
    aoi_region_add(a, "r1", 0, 0, 100, 100);
    for (int i = 0; i < N; i++)
        ents[i] = NULL;
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++)
        ents[i] = aoi_enter(a, i, 0, rnd(0, 100), rnd(0, 100), NULL);
    ASSERT_EQ(events, N * (N - 1));
    for (int i = 0; i < N; i++)
        aoi_leave(a, ents[i]);
    aoi_free(a);
}

int main(void)
{
    RUN(visibility_matches_a_brute_force_model);
    RUN(a_move_tells_only_those_in_view);
    RUN(a_crowd_in_one_cell);
    return test_summary();
}
