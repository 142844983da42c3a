/* test_lcache.c -- core/lcache.c: the in-process cache layer (no Redis, no loop).
 *
 * Time is a fake clock (lcache__set_clock), so expiry is exact and the tests do not sleep. */
#include "test.h"

#include "err.h"
#include "lcache.h"

#include <inttypes.h>
#include <stdint.h>

static int64_t fake_now = 1000000;

static int64_t fake_clock(void *ud)
{
    return fake_now;
}

static struct lcache *new_cache(size_t max_entries, size_t max_bytes)
{
    struct lcache *c = lcache_new(max_entries, max_bytes);
    lcache__set_clock(c, fake_clock, NULL);
    return c;
}

/* Short forms over NUL-terminated keys and values. */
static int fill(struct lcache *c, const char *k, const char *v, int64_t ver, int ttl)
{
    return lcache_fill(c, k, strlen(k), v, strlen(v), ver, ttl);
}

static int set(struct lcache *c, const char *k, const char *v, int64_t ver, int ttl)
{
    return lcache_set(c, k, strlen(k), v, strlen(v), ver, ttl);
}

static int drop(struct lcache *c, const char *k, int64_t ver)
{
    return lcache_drop(c, k, strlen(k), ver);
}

static void inval(struct lcache *c, const char *msg)
{
    lcache_on_inval(c, msg, strlen(msg));
}

/* The value of k as a string ("" on a miss), and its version (-1 on a miss). */
static char got[256];
static int64_t got_ver;

static int get(struct lcache *c, const char *k)
{
    const char *v;
    size_t len;
    got[0] = '\0';
    got_ver = -1;
    if (!lcache_get(c, k, strlen(k), &v, &len, &got_ver))
        return 0;
    snprintf(got, sizeof got, "%.*s", (int) len, v);
    return 1;
}

static struct lcache_stats stats(const struct lcache *c)
{
    struct lcache_stats st;
    lcache_stats(c, &st);
    return st;
}

#define ASSERT_CONSISTENT(c)                                                                       \
    do {                                                                                           \
        const char *why_ = NULL;                                                                   \
        if (lcache__check((c), &why_) < 0)                                                         \
            FAIL_AT("inconsistent cache: %s", why_);                                               \
    } while (0)

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(fill_then_get)
{
    struct lcache *c = new_cache(10, 1 << 20);
    ASSERT_EQ(get(c, "a"), 0);
    ASSERT_EQ(fill(c, "a", "alpha", 7, 0), 1);
    ASSERT_EQ(get(c, "a"), 1);
    ASSERT_STR(got, "alpha");
    ASSERT_EQ(got_ver, 7);
    /* Keys and values are bytes: NULs included. */
    ASSERT_EQ(lcache_fill(c, "b\0c", 3, "x\0y", 3, 1, 0), 1);
    const char *v;
    size_t len;
    ASSERT_EQ(lcache_get(c, "b\0c", 3, &v, &len, NULL), 1);
    ASSERT_EQ(len, 3);
    ASSERT(memcmp(v, "x\0y", 3) == 0);
    ASSERT_EQ(lcache_get(c, "b", 1, NULL, NULL, NULL), 0);
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.hits, 2);
    ASSERT_EQ(st.misses, 2);
    ASSERT_EQ(st.fills, 2);
    ASSERT_EQ(st.entries, 2);
    ASSERT_EQ(st.bytes, lcache_entry_bytes(1, 5) + lcache_entry_bytes(3, 3));
    ASSERT_CONSISTENT(c);
    lcache_free(c);
    lcache_free(NULL);
}

TEST(lru_eviction_by_count)
{
    struct lcache *c = new_cache(3, 1 << 20);
    fill(c, "a", "1", 1, 0);
    fill(c, "b", "2", 1, 0);
    fill(c, "c", "3", 1, 0);
    ASSERT(get(c, "a")); /* a is now the most recently used: b is the oldest */
    fill(c, "d", "4", 1, 0);
    ASSERT_EQ(get(c, "b"), 0);
    ASSERT(get(c, "c"));
    ASSERT(get(c, "a"));
    ASSERT(get(c, "d"));
    fill(c, "e", "5", 1, 0); /* c is the oldest now */
    ASSERT_EQ(get(c, "c"), 0);
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.evictions, 2);
    ASSERT_EQ(st.entries, 3);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

TEST(lru_eviction_by_bytes)
{
    size_t one = lcache_entry_bytes(1, 10);
    struct lcache *c = new_cache(100, 3 * one);
    fill(c, "a", "0123456789", 1, 0);
    fill(c, "b", "0123456789", 1, 0);
    fill(c, "c", "0123456789", 1, 0);
    ASSERT_EQ(stats(c).bytes, 3 * one);
    ASSERT_EQ(stats(c).evictions, 0);
    /* A value as big as two of them: the two oldest go. */
    char big[256];
    memset(big, 'x', sizeof big);
    size_t blen = one * 2 - lcache_entry_bytes(1, 0);
    ASSERT(blen < sizeof big);
    ASSERT_EQ(lcache_fill(c, "d", 1, big, blen, 1, 0), 1);
    ASSERT_EQ(get(c, "a"), 0);
    ASSERT_EQ(get(c, "b"), 0);
    ASSERT(get(c, "c"));
    ASSERT_EQ(stats(c).evictions, 2);
    ASSERT(stats(c).bytes <= 3 * one);
    ASSERT_CONSISTENT(c);

    /* An entry over max_bytes on its own is not stored, and an older copy goes. */
    char huge[200];
    memset(huge, 'y', sizeof huge);
    ASSERT_EQ(lcache_fill(c, "c", 1, huge, sizeof huge, 2, 0), ERR_TOOLARGE);
    ASSERT_EQ(get(c, "c"), 0);
    ASSERT_EQ(fill(c, "c", "old", 1, 0), 0); /* the older version stays out */
    ASSERT_EQ(lcache_set(c, "z", 1, huge, sizeof huge, 1, 0), ERR_TOOLARGE);
    ASSERT_EQ(get(c, "z"), 0);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

TEST(ttl_expiry)
{
    struct lcache *c = new_cache(10, 1 << 20);
    fill(c, "a", "1", 1, 100);
    fill(c, "forever", "2", 1, 0);
    fake_now += 99;
    ASSERT(get(c, "a"));
    fake_now += 1;
    ASSERT_EQ(get(c, "a"), 0);
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.expired, 1);
    ASSERT_EQ(st.entries, 1);
    /* An expired entry does not refuse a fill, even of an older version. */
    fill(c, "b", "new", 5, 10);
    fake_now += 10;
    ASSERT_EQ(fill(c, "b", "older", 4, 10), 1);
    ASSERT_EQ(stats(c).expired, 2);
    fake_now += 86400000;
    ASSERT(get(c, "forever"));
    /* Expired entries at the LRU tail are counted as expired, not evicted. */
    struct lcache *d = new_cache(2, 1 << 20);
    fill(d, "x", "1", 1, 5);
    fill(d, "y", "1", 1, 0);
    fake_now += 5;
    fill(d, "z", "1", 1, 0);
    ASSERT_EQ(stats(d).expired, 1);
    ASSERT_EQ(stats(d).evictions, 0);
    ASSERT_CONSISTENT(c);
    ASSERT_CONSISTENT(d);
    lcache_free(c);
    lcache_free(d);
}

TEST(newer_wins)
{
    struct lcache *c = new_cache(10, 1 << 20);
    ASSERT_EQ(fill(c, "p", "v5", 5, 0), 1);
    ASSERT_EQ(fill(c, "p", "v4", 4, 0), 0); /* an older read never overwrites */
    ASSERT_EQ(stats(c).stale_refused, 1);
    ASSERT_EQ(fill(c, "p", "v5 again", 5, 0), 0); /* the same version: nothing to do */
    ASSERT_EQ(stats(c).stale_refused, 1);
    ASSERT(get(c, "p"));
    ASSERT_STR(got, "v5");
    ASSERT_EQ(fill(c, "p", "v6", 6, 0), 1);
    ASSERT_EQ(set(c, "p", "v6 written", 6, 0), 1); /* write-through replaces its version */
    ASSERT(get(c, "p"));
    ASSERT_STR(got, "v6 written");
    ASSERT_EQ(set(c, "p", "v5", 5, 0), 0);
    ASSERT_EQ(stats(c).stale_refused, 2);
    ASSERT_EQ(set(c, "q", "v1", 1, 0), 1);
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.fills, 2);
    ASSERT_EQ(st.sets, 2);
    ASSERT(get(c, "p"));
    ASSERT_EQ(got_ver, 6);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

TEST(tombstone_refuses_a_racing_fill)
{
    struct lcache *c = new_cache(100, 1 << 20);
    fill(c, "p", "v1", 1, 0);
    /* A delete (version 2) lands while another task's read of version 1 is in flight. */
    ASSERT_EQ(drop(c, "p", 2), 1);
    ASSERT_EQ(get(c, "p"), 0);
    ASSERT_EQ(fill(c, "p", "v1", 1, 0), 0); /* the racing fill: refused */
    ASSERT_EQ(get(c, "p"), 0);
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.entries, 0);
    ASSERT_EQ(st.tombstones, 1);
    ASSERT_EQ(st.stale_refused, 1);
    ASSERT_EQ(st.drops, 1);
    /* A drop with no entry leaves a tombstone too; an older drop changes nothing. */
    ASSERT_EQ(drop(c, "q", 9), 0);
    ASSERT_EQ(fill(c, "q", "v8", 8, 0), 0);
    fill(c, "r", "v5", 5, 0);
    ASSERT_EQ(drop(c, "r", 5), 0); /* not older than the entry */
    ASSERT_EQ(drop(c, "r", 3), 0);
    ASSERT(get(c, "r"));
    /* The tombstone's own version is a write seen elsewhere: taken. */
    ASSERT_EQ(fill(c, "q", "v9", 9, 0), 1);
    ASSERT(get(c, "q"));
    ASSERT_STR(got, "v9");
    /* Tombstones last LCACHE_TOMBSTONE_MS; a later drop moves the deadline. */
    drop(c, "s", 2);
    fake_now += LCACHE_TOMBSTONE_MS - 1;
    drop(c, "p", 3);
    ASSERT_EQ(fill(c, "s", "v1", 1, 0), 0);
    fake_now += 1;
    ASSERT_EQ(fill(c, "s", "v1", 1, 0), 1);
    ASSERT_EQ(fill(c, "p", "v2", 2, 0), 0);
    fake_now += LCACHE_TOMBSTONE_MS;
    ASSERT_EQ(fill(c, "p", "v2", 2, 0), 1);
    ASSERT_EQ(stats(c).tombstones, 0);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

TEST(tombstones_are_bounded)
{
    struct lcache *c = new_cache(8, 1 << 20); /* at most 2 tombstones */
    fill(c, "live1", "x", 1, 0);
    fill(c, "live2", "x", 1, 0);
    char k[16];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "t%d", i);
        drop(c, k, 5);
        ASSERT(stats(c).tombstones <= 2);
        ASSERT_CONSISTENT(c);
    }
    ASSERT(get(c, "live1")); /* tombstones push out tombstones, not live entries */
    ASSERT(get(c, "live2"));
    ASSERT_EQ(fill(c, "t49", "old", 4, 0), 0); /* the newest tombstones remain */
    ASSERT_EQ(fill(c, "t0", "old", 4, 0), 1);  /* the oldest went */
    lcache_free(c);
}

TEST(invalidation_messages)
{
    struct lcache *c = new_cache(100, 1 << 20);
    fill(c, "player:1", "v3", 3, 0);
    fill(c, "player:2", "v7", 7, 0);
    fill(c, "a key with spaces", "v1", 1, 0);
    inval(c, "3 player:1"); /* this node's own message for its write: harmless */
    ASSERT(get(c, "player:1"));
    inval(c, "4 player:1"); /* another node wrote version 4 */
    ASSERT_EQ(get(c, "player:1"), 0);
    ASSERT_EQ(fill(c, "player:1", "v3", 3, 0), 0); /* a late fill of the old row */
    ASSERT_EQ(fill(c, "player:1", "v4", 4, 0), 1); /* the new row */
    inval(c, "6 player:2"); /* older than the entry (messages can arrive late) */
    ASSERT(get(c, "player:2"));
    ASSERT_EQ(got_ver, 7);
    inval(c, "2 a key with spaces");
    ASSERT_EQ(get(c, "a key with spaces"), 0);
    inval(c, "-1 neg"); /* parsed; creates a tombstone */
    const char *bad[] = {
        "", "12", "12x key", " key", "x key", "99999999999999999999 key", "-9223372036854775808 k"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        inval(c, bad[i]);
    lcache_on_message("8 player:2", 10, c); /* the rds_sub adapter */
    ASSERT_EQ(get(c, "player:2"), 0);
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.invalidations, 6);
    ASSERT_EQ(st.inval_dropped, 3);
    ASSERT_EQ(st.bad_messages, sizeof bad / sizeof bad[0]);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

TEST(clear_forgets_everything_and_bumps_the_epoch)
{
    struct lcache *c = new_cache(100, 1 << 20);
    fill(c, "a", "1", 1, 0);
    drop(c, "b", 5);
    get(c, "a");
    uint64_t e0 = lcache_epoch(c);
    lcache_clear(c);
    ASSERT(lcache_epoch(c) != e0);
    ASSERT_EQ(get(c, "a"), 0);
    ASSERT_EQ(fill(c, "b", "old", 4, 0), 1); /* tombstones go too */
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.entries, 1);
    ASSERT_EQ(st.tombstones, 0);
    ASSERT_EQ(st.bytes, lcache_entry_bytes(1, 3));
    ASSERT_EQ(st.hits, 1); /* counters stay */
    ASSERT_EQ(st.clears, 1);
    lcache_on_gap(c); /* the rds_sub adapter */
    ASSERT_EQ(stats(c).entries, 0);
    ASSERT_EQ(stats(c).clears, 2);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

/* ---- a million random operations --------------------------------------------------------------
 */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* "k<n>:v<version>:" then filler: a hit can be checked against its key and version. */
static size_t make_value(char *out, int key, int64_t ver, size_t pad)
{
    int n = snprintf(out, 64, "k%d:v%" PRId64 ":", key, ver);
    memset(out + n, 'f', pad);
    return (size_t) n + pad;
}

/* Tight bounds, random TTLs, a clock that moves: bounded, consistent, no mixed-up values. */
TEST(million_random_ops_stay_bounded_and_consistent)
{
    enum { KEYS = 600, MAXE = 200, OPS = 1000000 };
    size_t max_bytes = (size_t) MAXE * lcache_entry_bytes(8, 40) / 2; /* bytes bind before count */
    struct lcache *c = new_cache(MAXE, max_bytes);
    char key[16], val[160];
    uint64_t hits = 0;
    for (int i = 0; i < OPS; i++) {
        int k = (int) (rnd() % KEYS);
        size_t klen = (size_t) snprintf(key, sizeof key, "key%d", k);
        int64_t ver = (int64_t) (rnd() % 64);
        int ttl = rnd() % 4 == 0 ? 0 : (int) (rnd() % 2000) + 1;
        int op = (int) (rnd() % 100);
        fake_now += (int64_t) (rnd() % 4);
        if (op < 40) {
            const char *v;
            size_t vlen;
            int64_t gv;
            if (lcache_get(c, key, klen, &v, &vlen, &gv)) {
                hits++;
                char want[64];
                int n = snprintf(want, sizeof want, "k%d:v%" PRId64 ":", k, gv);
                if (vlen < (size_t) n || memcmp(v, want, (size_t) n) != 0)
                    FAIL_AT("op %d: key%d v%" PRId64 " holds %.*s", i, k, gv, (int) vlen, v);
            }
        } else if (op < 65) {
            size_t vlen = make_value(val, k, ver, rnd() % 80);
            lcache_fill(c, key, klen, val, vlen, ver, ttl);
        } else if (op < 80) {
            size_t vlen = make_value(val, k, ver, rnd() % 80);
            lcache_set(c, key, klen, val, vlen, ver, ttl);
        } else if (op < 90) {
            lcache_drop(c, key, klen, ver);
        } else if (op < 99 || rnd() % 1000 != 0) {
            char msg[32];
            int n = snprintf(msg, sizeof msg, "%" PRId64 " key%d", ver, k);
            lcache_on_inval(c, msg, (size_t) n);
        } else {
            lcache_clear(c);
        }
        struct lcache_stats st;
        lcache_stats(c, &st);
        if (st.entries + st.tombstones > MAXE || st.bytes > max_bytes)
            FAIL_AT("op %d: %zu entries, %zu tombstones, %zu bytes", i, st.entries, st.tombstones,
                    st.bytes);
        if (i % 10000 == 0)
            ASSERT_CONSISTENT(c);
    }
    ASSERT_CONSISTENT(c);
    struct lcache_stats st = stats(c);
    ASSERT(hits > 1000); /* the mix does hit */
    ASSERT(st.evictions > 1000);
    ASSERT(st.expired > 100);
    ASSERT(st.stale_refused > 1000);
    lcache_free(c);
}

/* Room for everything and a clock that stands still: every answer is exactly the model's. */
TEST(random_ops_match_a_model)
{
    enum { KEYS = 100, OPS = 300000 };
    enum { NONE, LIVE, TOMB };
    struct {
        int state;
        int64_t ver;
        char val[160];
        size_t vlen;
    } m[KEYS];
    memset(m, 0, sizeof m);
    struct lcache *c = new_cache(1000, 1 << 24);
    char key[16], val[160];
    for (int i = 0; i < OPS; i++) {
        int k = (int) (rnd() % KEYS);
        size_t klen = (size_t) snprintf(key, sizeof key, "key%d", k);
        int64_t ver = (int64_t) (rnd() % 32);
        int op = (int) (rnd() % 100);
        if (op < 35) {
            const char *v;
            size_t vlen;
            int64_t gv;
            int hit = lcache_get(c, key, klen, &v, &vlen, &gv);
            if (hit != (m[k].state == LIVE))
                FAIL_AT("op %d: get key%d: hit %d, model state %d", i, k, hit, m[k].state);
            if (hit && (gv != m[k].ver || vlen != m[k].vlen || memcmp(v, m[k].val, vlen) != 0))
                FAIL_AT("op %d: get key%d: v%" PRId64 " != v%" PRId64, i, k, gv, m[k].ver);
        } else if (op < 75) {
            int is_set = op >= 60;
            size_t vlen = make_value(val, k, ver, rnd() % 80);
            int take = m[k].state == NONE ||
                       (m[k].state == LIVE && (is_set ? ver >= m[k].ver : ver > m[k].ver)) ||
                       (m[k].state == TOMB && ver >= m[k].ver);
            int rc = is_set ? lcache_set(c, key, klen, val, vlen, ver, 0)
                            : lcache_fill(c, key, klen, val, vlen, ver, 0);
            if (rc != take)
                FAIL_AT("op %d: %s key%d v%" PRId64 ": %d, model %d", i, is_set ? "set" : "fill", k,
                        ver, rc, take);
            if (take) {
                m[k].state = LIVE;
                m[k].ver = ver;
                memcpy(m[k].val, val, vlen);
                m[k].vlen = vlen;
            }
        } else {
            int removed = m[k].state == LIVE && m[k].ver < ver;
            int rc;
            if (op < 90) {
                rc = lcache_drop(c, key, klen, ver);
            } else {
                char msg[32];
                int n = snprintf(msg, sizeof msg, "%" PRId64 " key%d", ver, k);
                struct lcache_stats before = stats(c);
                lcache_on_inval(c, msg, (size_t) n);
                rc = (int) (stats(c).inval_dropped - before.inval_dropped);
            }
            if (rc != removed)
                FAIL_AT("op %d: drop key%d v%" PRId64 ": %d, model %d", i, k, ver, rc, removed);
            if (m[k].state == NONE || m[k].ver < ver) {
                m[k].state = TOMB;
                m[k].ver = ver;
            }
        }
    }
    size_t live = 0, tombs = 0;
    for (int k = 0; k < KEYS; k++) {
        live += m[k].state == LIVE;
        tombs += m[k].state == TOMB;
    }
    struct lcache_stats st = stats(c);
    ASSERT_EQ(st.entries, live);
    ASSERT_EQ(st.tombstones, tombs);
    ASSERT_EQ(st.evictions, 0);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

TEST(real_clock_by_default)
{
    struct lcache *c = lcache_new(0, 0); /* bounds of 0 mean 1 */
    lcache__set_clock(c, fake_clock, NULL);
    lcache__set_clock(c, NULL, NULL);
    ASSERT_EQ(fill(c, "a", "", 1, 60000), ERR_TOOLARGE); /* nothing fits in 1 byte */
    ASSERT_CONSISTENT(c);
    lcache_free(c);
    c = lcache_new(1, 1 << 10);
    ASSERT_EQ(fill(c, "a", "x", 1, 60000), 1);
    ASSERT(get(c, "a"));
    ASSERT_EQ(fill(c, "b", "y", 1, 60000), 1);
    ASSERT_EQ(get(c, "a"), 0);
    ASSERT_CONSISTENT(c);
    lcache_free(c);
}

int main(void)
{
    RUN(fill_then_get);
    RUN(lru_eviction_by_count);
    RUN(lru_eviction_by_bytes);
    RUN(ttl_expiry);
    RUN(newer_wins);
    RUN(tombstone_refuses_a_racing_fill);
    RUN(tombstones_are_bounded);
    RUN(invalidation_messages);
    RUN(clear_forgets_everything_and_bumps_the_epoch);
    RUN(million_random_ops_stay_bounded_and_consistent);
    RUN(random_ops_match_a_model);
    RUN(real_clock_by_default);
    return test_summary();
}
