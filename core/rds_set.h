/* rds_set.h -- several Redis instances: where a tag lives, and one pipeline over several.
 *
 * Instance 0 is home (redis.host/port, or its sentinels): whatever is not placed lives there
 * (sessions, rate limits, the cache). Regions' keys, streams and channels are placed by a tag
 * ("region:r1", "stream:events", "channel:mmo:bus"): rds_set_place gives the instance whose
 * name scores highest for the tag (rendezvous hashing over a 64-bit hash of name and tag). Every
 * node with the same names computes the same answer whatever their order, and adding or
 * removing an instance moves only the tags that go to it or came from it.
 *
 * rds_split_batch sends one pipeline whose commands go to several instances: one batch per
 * instance, all at once; the callback fires once, with every reply in the caller's order, or
 * with the first failure (the other batches are canceled; their commands may have run, as after
 * a timeout). Its contract is rds_batch's (core/rds.h): never from inside the call, exactly
 * once unless the call failed or was canceled. */
#ifndef CORE_RDS_SET_H
#define CORE_RDS_SET_H

#include <stddef.h>
#include <stdint.h>

#include "rds.h"

#define RDS_SET_MAX 16

struct rds_set {
    int n;                         /* instances, home first */
    struct rds *r[RDS_SET_MAX];    /* borrowed */
    const char *name[RDS_SET_MAX]; /* borrowed: what placement hashes */
    /* [k]: a second connection to instance k for writes followed by WAIT (redis.wait_replicas;
     * a WAIT holds every command behind it); NULL: none. Borrowed. */
    struct rds *durable[RDS_SET_MAX];
};

/* The score of instance name for tag: the tag goes to the highest. Exposed for tests. */
uint64_t rds_place_score(const char *name, const char *tag, size_t len);
/* The names, sorted, comma-separated, into buf: the layout every node of a world must share
 * (placement depends on the names, not on their order; lib/leases.lua, core/ops.c). */
#define RDS_SET_LAYOUT_MAX (RDS_SET_MAX * 34)
void rds_set_layout(const struct rds_set *s, char *buf, size_t cap);
/* The instance tag lives on: 0 when there is one instance. */
int rds_set_place(const struct rds_set *s, const char *tag, size_t len);

struct rds_split;

/* inst[i]: command i's instance (0 .. s->n - 1). A MULTI, the commands after it and its EXEC or
 * DISCARD must share one instance. Returns 0, ERR_INVALID (rds_check_batch, a bad instance, a
 * transaction over two) or what rds_batch returned for the first instance that refused (nothing
 * fires then; batches already sent are canceled). *out (may be NULL): the handle for
 * rds_split_cancel, valid until the callback fires. */
int rds_split_batch(const struct rds_set *s, const int *inst, int ncmds, const int *argc,
                    const char *const *const *argv, const size_t *const *argvlen, int timeout_ms,
                    rds_batch_cb *cb, void *ud, struct rds_split **out);
/* Forget a pending split: its callback never fires. */
void rds_split_cancel(struct rds_split *sp);

#endif
