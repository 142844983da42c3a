/* lcache.c -- the in-process cache layer (see lcache.h for the rules).
 *
 * Layout. Every entry, live or tombstone, is one allocation (the struct, then the key, then the
 * value) on a hash chain of `tab` (SipHash-1-3 keyed per cache; the table doubles when it holds
 * more entries than buckets, so chains stay short) and on exactly one list: `lru` for live
 * entries (head: most recently used) or `tombs` for tombstones (head: newest). Every tombstone
 * lives LCACHE_TOMBSTONE_MS from its last change and moves to the head when it changes, so the
 * tombs list is also in expiry order and expired ones are purged from its tail in O(1) each.
 *
 * Replacing an entry frees the old allocation and makes a new one: a value handed out by
 * lcache_get stays valid until the next call that can change the cache (lcache.h). */
#include "lcache.h"
#include "err.h"
#include "mem.h"

#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#define MIN_BUCKETS 64

struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* on c->lru (live) or c->tombs (tombstone) */
    uint64_t hash;
    int64_t version;
    int64_t expires; /* monotonic ms; INT64_MAX: never */
    size_t klen, vlen;
    int tomb;
    char data[]; /* key, then value */
};

struct list {
    struct entry *head, *tail;
};

struct lcache {
    struct entry **tab;
    size_t mask; /* buckets - 1 */
    size_t n;    /* entries in the table: nlive + ntombs */
    size_t nlive, ntombs, bytes;
    size_t max_entries, max_bytes, max_tombs;
    struct list lru, tombs;
    uint64_t sipkey[2];
    uint64_t epoch;
    lcache_clock_fn *clock;
    void *clock_ud;
    struct lcache_stats st; /* the counters; sizes are filled in by lcache_stats */
};

/* ---- time and hashing --------------------------------------------------------------------- */

static int64_t mono_ms(void *ud)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(const struct lcache *c)
{
    return c->clock(c->clock_ud);
}

static int64_t deadline(int64_t now, int64_t ms)
{
    return ms <= 0 ? INT64_MAX : now > INT64_MAX - ms ? INT64_MAX : now + ms;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                                  \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                                     \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                                     \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                                  \
    } while (0)

/* SipHash-1-3, as in ratelimit.c (and Redis's dicts): keys chosen by clients cannot make long
 * chains without the per-cache key. */
static uint64_t siphash(const uint64_t k[2], const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k[0], v1 = 0x646f72616e646f6dULL ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ k[0], v3 = 0x7465646279746573ULL ^ k[1];
    uint64_t b = (uint64_t) len << 56, m;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&m, in + i, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (int s = 0; i < len; i++, s += 8)
        b |= (uint64_t) in[i] << s;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t key_hash(const struct lcache *c, const char *key, size_t klen)
{
    return siphash(c->sipkey, (const unsigned char *) key, klen);
}

/* ---- lists and the table ------------------------------------------------------------------ */

static void push_head(struct list *l, struct entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
}

static void unlink_entry(struct list *l, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static struct entry *lookup(const struct lcache *c, uint64_t h, const char *key, size_t klen)
{
    for (struct entry *e = c->tab[h & c->mask]; e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return e;
    return NULL;
}

static void grow(struct lcache *c)
{
    size_t nb = (c->mask + 1) * 2;
    struct entry **tab = xcalloc(nb, sizeof *tab);
    for (size_t i = 0; i <= c->mask; i++) {
        struct entry *e = c->tab[i];
        while (e) {
            struct entry *next = e->hnext;
            e->hnext = tab[e->hash & (nb - 1)];
            tab[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(c->tab);
    c->tab = tab;
    c->mask = nb - 1;
}

size_t lcache_entry_bytes(size_t klen, size_t vlen)
{
    return sizeof(struct entry) + klen + vlen;
}

/* Take e out of the table and its list and free it. */
static void entry_free(struct lcache *c, struct entry *e)
{
    struct entry **pp = &c->tab[e->hash & c->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->tomb) {
        unlink_entry(&c->tombs, e);
        c->ntombs--;
    } else {
        unlink_entry(&c->lru, e);
        c->nlive--;
    }
    c->n--;
    c->bytes -= lcache_entry_bytes(e->klen, e->vlen);
    free(e);
}

static int is_expired(const struct entry *e, int64_t now)
{
    return e->expires <= now;
}

/* Free every tombstone past its expiry (the oldest are at the tail). */
static void purge_tombs(struct lcache *c, int64_t now)
{
    while (c->tombs.tail && is_expired(c->tombs.tail, now))
        entry_free(c, c->tombs.tail);
}

/* Evict until one more entry of `bytes` (a tombstone if tomb) fits. */
static void make_room(struct lcache *c, size_t bytes, int tomb, int64_t now)
{
    purge_tombs(c, now);
    while (c->n > 0 && (c->n + 1 > c->max_entries || c->bytes + bytes > c->max_bytes ||
                        (tomb && c->ntombs + 1 > c->max_tombs))) {
        struct entry *victim;
        if (tomb && c->ntombs + 1 > c->max_tombs)
            victim = c->tombs.tail;
        else
            victim = c->lru.tail ? c->lru.tail : c->tombs.tail;
        if (!victim->tomb && is_expired(victim, now))
            c->st.expired++;
        else
            c->st.evictions++;
        entry_free(c, victim);
    }
}

/* A new entry, in the table and at the head of its list. The caller checked that it fits in
 * max_bytes on its own and removed any entry of the same key. */
static struct entry *insert(struct lcache *c, uint64_t h, const char *key, size_t klen,
                            const char *value, size_t vlen, int64_t version, int64_t expires,
                            int tomb, int64_t now)
{
    size_t bytes = lcache_entry_bytes(klen, vlen);
    make_room(c, bytes, tomb, now);
    struct entry *e = xmalloc(bytes);
    e->hash = h;
    e->version = version;
    e->expires = expires;
    e->klen = klen;
    e->vlen = vlen;
    e->tomb = tomb;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, value, vlen);
    if (c->n + 1 > c->mask + 1)
        grow(c);
    e->hnext = c->tab[h & c->mask];
    c->tab[h & c->mask] = e;
    c->n++;
    c->bytes += bytes;
    if (tomb) {
        push_head(&c->tombs, e);
        c->ntombs++;
    } else {
        push_head(&c->lru, e);
        c->nlive++;
    }
    return e;
}

/* The entry of key, or NULL; an expired one is freed (and counted if it was live). */
static struct entry *find(struct lcache *c, uint64_t h, const char *key, size_t klen, int64_t now)
{
    struct entry *e = lookup(c, h, key, klen);
    if (e && is_expired(e, now)) {
        if (!e->tomb)
            c->st.expired++;
        entry_free(c, e);
        e = NULL;
    }
    return e;
}

/* ---- the operations ----------------------------------------------------------------------- */

/* An entry older than version becomes a tombstone of version; none: a new tombstone. Returns 1 if
 * a live entry was removed. */
static int drop(struct lcache *c, const char *key, size_t klen, int64_t version)
{
    int64_t now = now_ms(c);
    uint64_t h = key_hash(c, key, klen);
    struct entry *e = find(c, h, key, klen, now);
    if (e && e->version >= version)
        return 0;
    int64_t expires = deadline(now, LCACHE_TOMBSTONE_MS);
    if (e && e->tomb) {
        e->version = version;
        e->expires = expires;
        unlink_entry(&c->tombs, e);
        push_head(&c->tombs, e);
        return 0;
    }
    int was_live = e != NULL;
    if (e)
        entry_free(c, e);
    if (lcache_entry_bytes(klen, 0) <= c->max_bytes)
        insert(c, h, key, klen, NULL, 0, version, expires, 1, now);
    return was_live;
}

static int store(struct lcache *c, const char *key, size_t klen, const char *value, size_t vlen,
                 int64_t version, int ttl_ms, int is_set)
{
    int64_t now = now_ms(c);
    uint64_t h = key_hash(c, key, klen);
    struct entry *e = find(c, h, key, klen, now);
    if (e) {
        int refuse = (e->tomb || is_set) ? e->version > version : e->version >= version;
        if (refuse) {
            if (e->tomb || e->version > version)
                c->st.stale_refused++;
            return 0;
        }
    }
    if (lcache_entry_bytes(klen, vlen) > c->max_bytes) {
        if (e)
            drop(c, key, klen, version);
        return ERR_TOOLARGE;
    }
    if (e)
        entry_free(c, e);
    insert(c, h, key, klen, value, vlen, version, deadline(now, ttl_ms), 0, now);
    if (is_set)
        c->st.sets++;
    else
        c->st.fills++;
    return 1;
}

/* ---- API ---------------------------------------------------------------------------------- */

struct lcache *lcache_new(size_t max_entries, size_t max_bytes)
{
    struct lcache *c = xcalloc(1, sizeof *c);
    c->max_entries = max_entries > 0 ? max_entries : 1;
    c->max_bytes = max_bytes > 0 ? max_bytes : 1;
    c->max_tombs = c->max_entries / 4 > 0 ? c->max_entries / 4 : 1;
    c->tab = xcalloc(MIN_BUCKETS, sizeof *c->tab);
    c->mask = MIN_BUCKETS - 1;
    c->clock = mono_ms;
    if (getrandom(c->sipkey, sizeof c->sipkey, GRND_NONBLOCK) != (ssize_t) sizeof c->sipkey) {
        c->sipkey[0] = (uint64_t) mono_ms(NULL) ^ (uint64_t) (uintptr_t) c;
        c->sipkey[1] = (uint64_t) getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t) time(NULL);
    }
    return c;
}

static void free_all(struct lcache *c)
{
    for (size_t i = 0; i <= c->mask; i++) {
        struct entry *e = c->tab[i];
        while (e) {
            struct entry *next = e->hnext;
            free(e);
            e = next;
        }
    }
    free(c->tab);
    c->tab = NULL;
    c->n = c->nlive = c->ntombs = c->bytes = 0;
    c->lru.head = c->lru.tail = c->tombs.head = c->tombs.tail = NULL;
}

void lcache_free(struct lcache *c)
{
    if (c == NULL)
        return;
    free_all(c);
    free(c);
}

int lcache_get(struct lcache *c, const char *key, size_t klen, const char **value, size_t *vlen,
               int64_t *version)
{
    int64_t now = now_ms(c);
    struct entry *e = find(c, key_hash(c, key, klen), key, klen, now);
    if (e == NULL || e->tomb) {
        c->st.misses++;
        return 0;
    }
    c->st.hits++;
    if (c->lru.head != e) {
        unlink_entry(&c->lru, e);
        push_head(&c->lru, e);
    }
    if (value)
        *value = e->data + e->klen;
    if (vlen)
        *vlen = e->vlen;
    if (version)
        *version = e->version;
    return 1;
}

int lcache_fill(struct lcache *c, const char *key, size_t klen, const char *value, size_t vlen,
                int64_t version, int ttl_ms)
{
    return store(c, key, klen, value, vlen, version, ttl_ms, 0);
}

int lcache_set(struct lcache *c, const char *key, size_t klen, const char *value, size_t vlen,
               int64_t version, int ttl_ms)
{
    return store(c, key, klen, value, vlen, version, ttl_ms, 1);
}

int lcache_drop(struct lcache *c, const char *key, size_t klen, int64_t version)
{
    c->st.drops++;
    return drop(c, key, klen, version);
}

void lcache_clear(struct lcache *c)
{
    free_all(c);
    c->tab = xcalloc(MIN_BUCKETS, sizeof *c->tab);
    c->mask = MIN_BUCKETS - 1;
    c->epoch++;
    c->st.clears++;
}

uint64_t lcache_epoch(const struct lcache *c)
{
    return c->epoch;
}

/* "<version> <key>": an optional '-', 1 to 19 digits that fit an int64, one space, the key. */
static int parse_inval(const char *msg, size_t len, int64_t *version, const char **key,
                       size_t *klen)
{
    size_t i = 0;
    int neg = len > 0 && msg[0] == '-';
    i += (size_t) neg;
    uint64_t v = 0;
    size_t start = i;
    while (i < len && msg[i] >= '0' && msg[i] <= '9') {
        if (i - start >= 19)
            return -1;
        v = v * 10 + (uint64_t) (msg[i] - '0');
        i++;
    }
    if (i == start || i >= len || msg[i] != ' ' || v > (uint64_t) INT64_MAX)
        return -1;
    *version = neg ? -(int64_t) v : (int64_t) v;
    *key = msg + i + 1;
    *klen = len - i - 1;
    return 0;
}

void lcache_on_inval(struct lcache *c, const char *msg, size_t len)
{
    int64_t version;
    const char *key;
    size_t klen;
    if (parse_inval(msg, len, &version, &key, &klen) < 0) {
        c->st.bad_messages++;
        return;
    }
    c->st.invalidations++;
    c->st.inval_dropped += (uint64_t) drop(c, key, klen, version);
}

void lcache_on_message(const char *msg, size_t len, void *ud)
{
    lcache_on_inval(ud, msg, len);
}

void lcache_on_gap(void *ud)
{
    lcache_clear(ud);
}

void lcache_stats(const struct lcache *c, struct lcache_stats *out)
{
    *out = c->st;
    out->entries = c->nlive;
    out->tombstones = c->ntombs;
    out->bytes = c->bytes;
}

void lcache__set_clock(struct lcache *c, lcache_clock_fn *fn, void *ud)
{
    c->clock = fn ? fn : mono_ms;
    c->clock_ud = fn ? ud : NULL;
}

/* Walk a list: every entry has the list's kind, the links agree, the count matches. */
static const char *check_list(const struct list *l, int tomb, size_t count)
{
    size_t k = 0;
    const struct entry *prev = NULL;
    for (const struct entry *e = l->head; e; prev = e, e = e->next) {
        if (e->tomb != tomb)
            return "an entry on the wrong list";
        if (e->prev != prev)
            return "a broken prev link";
        if (tomb && prev && prev->expires < e->expires)
            return "tombstones out of expiry order";
        if (++k > count)
            return "a list longer than its count";
    }
    if (k != count)
        return "a list shorter than its count";
    if (l->tail != prev)
        return "a wrong list tail";
    return NULL;
}

int lcache__check(const struct lcache *c, const char **why)
{
    const char *bad = NULL;
    size_t n = 0, live = 0, bytes = 0;
    for (size_t i = 0; bad == NULL && i <= c->mask; i++) {
        for (const struct entry *e = c->tab[i]; e && bad == NULL; e = e->hnext) {
            n++;
            live += !e->tomb;
            bytes += lcache_entry_bytes(e->klen, e->vlen);
            if (e->hash != key_hash(c, e->data, e->klen) || (e->hash & c->mask) != i)
                bad = "an entry in the wrong bucket";
            else if (lookup(c, e->hash, e->data, e->klen) != e)
                bad = "a key in the table twice";
            else if (e->tomb && e->vlen != 0)
                bad = "a tombstone with a value";
        }
    }
    if (bad == NULL && (n != c->n || live != c->nlive || n - live != c->ntombs))
        bad = "entry counts do not match the table";
    if (bad == NULL && bytes != c->bytes)
        bad = "byte count does not match the entries";
    if (bad == NULL)
        bad = check_list(&c->lru, 0, c->nlive);
    if (bad == NULL)
        bad = check_list(&c->tombs, 1, c->ntombs);
    if (bad == NULL && (c->n > c->max_entries || c->bytes > c->max_bytes))
        bad = "over max_entries or max_bytes";
    if (bad == NULL && c->ntombs > c->max_tombs)
        bad = "too many tombstones";
    if (bad == NULL && c->n > c->mask + 1)
        bad = "the table is over its load factor";
    if (bad && why)
        *why = bad;
    return bad ? -1 : 0;
}
