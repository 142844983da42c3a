/* replica.c -- a streaming replica's freshness, probed on the event loop (replica.h has the
 * rule and why it holds).
 *
 * Shape. A timer fires every period. If the last round is still in flight it only checks
 * whether fresh_until has passed (to log the change); otherwise it sends a round: one query to
 * the primary's pool and one to the replica's, at once, and counts the answers awaited in
 * `pending`. A query the pool refuses at once (no connection up) counts as answered with that
 * error. When both are in, the round is judged: a sample is kept, fresh_until and the lag are
 * set (or fresh_until cleared when a side failed), and a change of state is logged.
 *
 * Ownership: r owns its timer and its ring; the ops in flight belong to the pools until their
 * callbacks fire or replica_free cancels them (db_op_cancel: the callback never fires). */
#include "replica.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <event2/event.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PERIOD_MIN_MS 100
#define PERIOD_MAX_MS 1000

enum { ST_UNKNOWN = -1, ST_STALE = 0, ST_FRESH = 1 };
enum { SIDE_PRIMARY, SIDE_REPLICA };

/* One side of a round: its op in flight and what it answered. */
struct side {
    struct db_op *op; /* in flight; NULL once answered */
    int status;       /* 0, an ERR_*, or ERR_PROTOCOL: no LSN in the answer */
    int null;         /* that answer was NULL: the replica is not a standby */
    uint64_t lsn;
};

struct replica {
    struct db_pool *pool[2]; /* [SIDE_PRIMARY], [SIDE_REPLICA]; borrowed */
    char name[24];
    int max_lag_ms, period_ms, keep_every_ms;
    struct event *timer;
    struct side side[2];
    int pending;     /* answers awaited in the round in flight */
    int64_t sent_ms; /* when that round was sent */
    int64_t took_ms; /* how long the last round took */
    struct replica_sample ring[REPLICA_RING];
    int nring, head;         /* head: the newest sample's slot */
    int64_t fresh_until;     /* monotonic ms; INT64_MIN: not fresh */
    int64_t lag_bytes;       /* -1 before the first good round */
    uint64_t primary_lsn;    /* of the last good round, for the log */
    uint64_t replay_lsn;     /* same */
    int failed_side, failed; /* the last round's failure (failed: its status), or failed 0 */
    int state;               /* as last logged */
};

static const char *const SQL[2] = {"select pg_current_wal_insert_lsn()",
                                   "select pg_last_wal_replay_lsn()"};
static const char *const SIDE_NAME[2] = {"primary", "replica"};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t) t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- the rule (pure) ------------------------------------------------------------------- */

static int hex_part(const char *s, const char **end, uint32_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            break;
        v = v * 16 + (uint64_t) d;
        if (v > UINT32_MAX)
            return ERR_INVALID;
    }
    if (p == s)
        return ERR_INVALID;
    *end = p;
    *out = (uint32_t) v;
    return 0;
}

int replica_lsn_parse(const char *s, uint64_t *lsn)
{
    uint32_t hi, lo;
    const char *p;
    if (s == NULL || hex_part(s, &p, &hi) < 0 || *p != '/' || hex_part(p + 1, &p, &lo) < 0 ||
        *p != '\0')
        return ERR_INVALID;
    *lsn = (uint64_t) hi << 32 | lo;
    return 0;
}

int64_t replica_fresh_until(const struct replica_sample *s, int n, uint64_t replay, int max_lag_ms)
{
    int64_t until = INT64_MIN;
    for (int i = 0; i < n; i++)
        if (s[i].lsn <= replay && s[i].at_ms + max_lag_ms > until)
            until = s[i].at_ms + max_lag_ms;
    return until;
}

/* ---- probing --------------------------------------------------------------------------- */

static void lsn_text(uint64_t lsn, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRIX32 "/%" PRIX32, (uint32_t) (lsn >> 32), (uint32_t) lsn);
}

/* Log a change between fresh and stale, once. */
static void note(struct replica *r, int64_t now)
{
    int st = now < r->fresh_until ? ST_FRESH : ST_STALE;
    if (st == r->state)
        return;
    /* the first round, fresh when it was sent but answered after max_lag (the pools were
     * still connecting): not worth a warning; the next round decides */
    if (r->state == ST_UNKNOWN && st == ST_STALE && !r->failed && r->fresh_until > r->sent_ms)
        return;
    int was = r->state;
    r->state = st;
    char p[24], q[24];
    lsn_text(r->primary_lsn, p, sizeof p);
    lsn_text(r->replay_lsn, q, sizeof q);
    if (st == ST_FRESH) {
        log_info("replica",
                 "replica of %s is fresh%s: reads go to it (%" PRId64
                 " bytes behind: replayed %s, the primary at %s)",
                 r->name, was == ST_STALE ? " again" : "", r->lag_bytes, q, p);
    } else if (r->failed && r->side[SIDE_REPLICA].null) {
        log_warn("replica",
                 "replica of %s is stale: reads go to the primary (it is not a standby: "
                 "pg_last_wal_replay_lsn() is null)",
                 r->name);
    } else if (r->failed) {
        log_warn("replica",
                 "replica of %s is stale: reads go to the primary (the probe of the %s "
                 "failed: %s)",
                 r->name, SIDE_NAME[r->failed_side], err_str(r->failed));
    } else if (r->pending > 0) {
        log_warn("replica",
                 "replica of %s is stale: reads go to the primary (the probe sent %" PRId64
                 " ms ago has not answered)",
                 r->name, now - r->sent_ms);
    } else {
        log_warn("replica",
                 "replica of %s is stale: reads go to the primary (it has not replayed "
                 "what the primary had %d ms ago: replayed %s, the primary at %s, %" PRId64
                 " bytes behind; the probe took %" PRId64 " ms)",
                 r->name, r->max_lag_ms, q, p, r->lag_bytes, r->took_ms);
    }
}

static void keep_sample(struct replica *r, int64_t at, uint64_t lsn)
{
    if (r->nring > 0 && at - r->ring[r->head].at_ms < r->keep_every_ms)
        return;
    r->head = (r->head + 1) % REPLICA_RING;
    r->ring[r->head].at_ms = at;
    r->ring[r->head].lsn = lsn;
    if (r->nring < REPLICA_RING)
        r->nring++;
}

/* Both answers are in: judge the round. */
static void judge(struct replica *r)
{
    struct side *p = &r->side[SIDE_PRIMARY], *q = &r->side[SIDE_REPLICA];
    int64_t now = now_ms();
    r->took_ms = now - r->sent_ms;
    if (p->status == 0)
        keep_sample(r, r->sent_ms, p->lsn);
    r->failed = 0;
    if (p->status != 0 || q->status != 0) {
        r->failed_side = p->status != 0 ? SIDE_PRIMARY : SIDE_REPLICA;
        r->failed = r->side[r->failed_side].status;
        r->fresh_until = INT64_MIN;
    } else {
        /* the ring is in slot order, not time order: the rule does not care */
        r->fresh_until = replica_fresh_until(r->ring, r->nring, q->lsn, r->max_lag_ms);
        r->lag_bytes = p->lsn > q->lsn ? (int64_t) (p->lsn - q->lsn) : 0;
        r->primary_lsn = p->lsn;
        r->replay_lsn = q->lsn;
    }
    note(r, now);
}

static void on_answer(struct replica *r, int which, struct pg_result *res, int status)
{
    struct side *s = &r->side[which];
    s->op = NULL;
    s->status = status;
    if (status == 0) {
        /* NULL: pg_last_wal_replay_lsn() on a server that is not a standby */
        s->null = PQntuples(res) == 1 && PQgetisnull(res, 0, 0);
        if (PQntuples(res) != 1 || s->null || replica_lsn_parse(PQgetvalue(res, 0, 0), &s->lsn) < 0)
            s->status = ERR_PROTOCOL;
    }
    if (--r->pending == 0)
        judge(r);
}

static void on_primary(struct pg_result *res, int status, void *ud)
{
    on_answer(ud, SIDE_PRIMARY, res, status);
}

static void on_replica(struct pg_result *res, int status, void *ud)
{
    on_answer(ud, SIDE_REPLICA, res, status);
}

static void send_round(struct replica *r)
{
    static db_result_cb *const CB[2] = {on_primary, on_replica};
    r->sent_ms = now_ms();
    r->pending = 2;
    int refused = 0;
    for (int i = 0; i < 2; i++) {
        struct side *s = &r->side[i];
        s->status = s->null = 0;
        int rc = db_query(r->pool[i], SQL[i], 0, NULL, NULL, 0, CB[i], r, &s->op);
        if (rc < 0) {
            s->op = NULL;
            s->status = rc;
            refused++;
        }
    }
    /* answers refused at once count now; the callbacks of the others come later */
    r->pending -= refused;
    if (r->pending == 0)
        judge(r);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    if (r->state != ST_UNKNOWN)
        note(r, now_ms()); /* fresh_until may have passed since the last round */
    if (r->pending == 0)
        send_round(r); /* else a round is still out: it is not sent again */
    struct timeval tv = {r->period_ms / 1000, (r->period_ms % 1000) * 1000};
    evtimer_add(r->timer, &tv);
}

struct replica *replica_new(struct event_base *base, struct db_pool *primary,
                            struct db_pool *replica, const char *name, int max_lag_ms)
{
    struct replica *r = xcalloc(1, sizeof *r);
    r->pool[SIDE_PRIMARY] = primary;
    r->pool[SIDE_REPLICA] = replica;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->max_lag_ms = max_lag_ms > 0 ? max_lag_ms : 1;
    r->period_ms = r->max_lag_ms / 4;
    if (r->period_ms < PERIOD_MIN_MS)
        r->period_ms = PERIOD_MIN_MS;
    if (r->period_ms > PERIOD_MAX_MS)
        r->period_ms = PERIOD_MAX_MS;
    r->keep_every_ms = r->max_lag_ms / 32;
    r->head = REPLICA_RING - 1; /* the first sample goes to slot 0: slots 0..nring-1 are used */
    r->fresh_until = INT64_MIN;
    r->lag_bytes = -1;
    r->state = ST_UNKNOWN;
    r->timer = evtimer_new(base, on_tick, r);
    struct timeval zero = {0, 0};
    evtimer_add(r->timer, &zero);
    return r;
}

void replica_free(struct replica *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < 2; i++)
        db_op_cancel(r->side[i].op);
    event_free(r->timer);
    free(r);
}

int replica_fresh(const struct replica *r)
{
    return now_ms() < r->fresh_until;
}

int64_t replica_lag_bytes(const struct replica *r)
{
    return r->lag_bytes;
}
