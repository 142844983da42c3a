/* lcache.h -- the in-process layer of the cache: key -> value + version, bounded, LRU.
 *
 * Keys and values are bytes. Each entry has a version (an int64 that grows with every write of
 * the key: e.g. the row's version column) and an expiry on the monotonic clock. Newer wins: a
 * fill or set is refused while the cache holds the key at a version at least as new, so a read
 * that raced a write never puts the older value back.
 *
 * A drop (a delete, or another node's write announced on LCACHE_CHANNEL) leaves a tombstone: the
 * key with the new version and no value, for LCACHE_TOMBSTONE_MS. It is a miss for lcache_get,
 * and it refuses fills of older versions (a read of the old row that lands after the delete).
 * A fill of the tombstone's own version is taken (another node's write of that version).
 *
 * Bounds (from the caller): at most max_entries entries (tombstones included; tombstones alone at
 * most a quarter of them) and max_bytes bytes, counted as lcache_entry_bytes(key, value) per
 * entry. Past either, the least recently used entry goes (live ones first, then the oldest
 * tombstone). get, fill, set and drop are O(1): a hash table (SipHash-1-3, a random key per
 * cache) and a doubly linked LRU list. Expired entries are freed when met (get, eviction).
 *
 * One thread: the cache is owned by the node's loop. Nothing here blocks or does I/O. */
#ifndef CORE_LCACHE_H
#define CORE_LCACHE_H

#include <stddef.h>
#include <stdint.h>

/* The Redis pub/sub channel of invalidations: messages "<version> <key>" (lcache_on_inval). */
#define LCACHE_CHANNEL "mmo:inval"
/* How long a tombstone refuses older fills: longer than a read of the source can take. */
#define LCACHE_TOMBSTONE_MS 10000

struct lcache;

struct lcache_stats {
    uint64_t hits;          /* lcache_get found a live entry */
    uint64_t misses;        /* lcache_get found none (absent, expired or a tombstone) */
    uint64_t fills;         /* lcache_fill stored */
    uint64_t sets;          /* lcache_set stored */
    uint64_t drops;         /* lcache_drop calls */
    uint64_t stale_refused; /* fill/set refused: the cache held a newer version */
    uint64_t evictions;     /* entries dropped for room (max_entries, max_bytes) */
    uint64_t expired;       /* live entries found past their expiry and freed */
    uint64_t invalidations; /* messages given to lcache_on_inval */
    uint64_t inval_dropped; /* live entries those messages removed */
    uint64_t bad_messages;  /* messages that were not "<version> <key>" */
    uint64_t clears;        /* lcache_clear calls */
    size_t entries;         /* live entries */
    size_t tombstones;
    size_t bytes; /* lcache_entry_bytes of every entry, tombstones included */
};

/* max_entries, max_bytes: the bounds (0: 1). */
struct lcache *lcache_new(size_t max_entries, size_t max_bytes);
void lcache_free(struct lcache *c);

/* What an entry of this key and value counts for max_bytes (a tombstone: vlen 0). */
size_t lcache_entry_bytes(size_t klen, size_t vlen);

/* 1 and *value, *vlen, *version (each may be NULL) for a live entry; it becomes the most recently
 * used. 0 on a miss: absent, a tombstone, or expired (freed now). *value is borrowed: valid until
 * the next call on the cache other than lcache_stats and lcache_epoch. */
int lcache_get(struct lcache *c, const char *key, size_t klen, const char **value, size_t *vlen,
               int64_t *version);

/* Store after a read of the source (key and value copied). Refused when the cache holds the key
 * live at a version >= version, or as a tombstone of a version > version. ttl_ms <= 0: no expiry
 * (only eviction). Returns 1 stored, 0 refused, ERR_TOOLARGE when the entry alone is over
 * max_bytes (nothing stored, and an older entry of the key becomes a tombstone of version). */
int lcache_fill(struct lcache *c, const char *key, size_t klen, const char *value, size_t vlen,
                int64_t version, int ttl_ms);
/* Store after a write (write-through): as lcache_fill, except that it replaces a live entry of
 * the same version (refreshing value and expiry). */
int lcache_set(struct lcache *c, const char *key, size_t klen, const char *value, size_t vlen,
               int64_t version, int ttl_ms);
/* After a delete of version `version` (the delete's own version, newer than the row's last):
 * an entry older than version becomes a tombstone of version; with no entry, a tombstone is
 * made. An entry at version or newer stays. Returns 1 if a live entry was removed, else 0. */
int lcache_drop(struct lcache *c, const char *key, size_t klen, int64_t version);

/* Forget every entry and tombstone: used when invalidations may have been missed (the channel
 * was down). Counters stay. Bumps lcache_epoch. */
void lcache_clear(struct lcache *c);
/* Changes on every lcache_clear: a caller that read a lower layer before a clear and fills after
 * it compares epochs and drops the fill (the read may predate a write whose message was lost). */
uint64_t lcache_epoch(const struct lcache *c);

/* An invalidation message "<version> <key>" (decimal int64, one space, the key's bytes to the
 * end; borrowed): as lcache_drop(key, version), counted as an invalidation. A node receives its
 * own messages too: they find the entry at that version already and change nothing. */
void lcache_on_inval(struct lcache *c, const char *msg, size_t len);

/* The same two as rds_sub callbacks (core/rds.h): ud is the struct lcache. */
void lcache_on_message(const char *msg, size_t len, void *ud); /* lcache_on_inval */
void lcache_on_gap(void *ud);                                  /* lcache_clear */

void lcache_stats(const struct lcache *c, struct lcache_stats *out);

/* Tests: the clock (monotonic ms) used for expiry; NULL restores CLOCK_MONOTONIC. */
typedef int64_t lcache_clock_fn(void *ud);
void lcache__set_clock(struct lcache *c, lcache_clock_fn *fn, void *ud);
/* Tests: walk everything and check the invariants (table, lists, counts, bounds). 0, or -1 with
 * *why (may be NULL) a static reason. O(n). */
int lcache__check(const struct lcache *c, const char **why);

#endif
