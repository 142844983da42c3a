/* ratelimit.c -- GCRA in Redis with batched reservations and a per-node fallback.
 *
 * The table. One entry per (class, key) seen lately: a hash table (SipHash-1-3 with a random
 * key per process, so a client choosing keys cannot make long chains) of at most max_keys
 * entries. An entry is either idle, on the LRU list, or busy (a Redis call in flight), on the
 * busy list; only idle entries are evicted. A check that finds no entry and no idle entry to
 * evict (the table full of calls in flight) gets an unlisted entry: not in the table, freed
 * when its call returns, and its fallback shares the class's single overflow bucket. Entries
 * are owned by the limiter; a busy entry is also the ud of its rds call, so it is never freed
 * while the call is in flight (rl_free cancels the call first).
 *
 * What an entry holds:
 *   avail, avail_until   requests reserved from Redis and not spent yet, usable until then
 *                        (the call's send time + avail x T)
 *   refund, refund_*     requests that lapsed unspent, given back with the next call, and the
 *                        tat/given of the grant they came from (see SCRIPT)
 *   deny_until           a denial Redis gave, repeated without asking until then
 *   tat                  the local GCRA (node's monotonic clock): used when Redis fails, set
 *                        from Redis's own debt on each answer so the fallback starts where
 *                        Redis was
 *   wait                 checks waiting for the call in flight (FIFO)
 *
 * A call asks for (checks waiting + batch - 1) requests: the waiting checks spend theirs at
 * once, at most batch - 1 are kept. If Redis grants all and more checks came meanwhile, it asks
 * again for them; if it grants fewer, the rest are denied with Redis's retry time.
 *
 * Ownership. An rl_op belongs to the caller until its callback fires or it is canceled; the
 * limiter holds it on exactly one list (an entry's wait list, or `firing`, decided and about to
 * fire). Callbacks run only from `fire`, reached from rds callbacks and rl_free, never from
 * rl_check; an op leaves every list before its callback runs, and rl_free from inside a
 * callback is deferred by `depth` (as in rds.c). */
#include "ratelimit.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "rds.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#define DEFAULT_MAX_KEYS 65536
#define MAX_CAP_US       10000000000000LL /* burst x T: 10^13 us, about 115 days */
#define ERROR_BACKOFF_US 1000000          /* after an error reply, decide locally for 1 s */
#define RKEY_MAX         (3 + RL_NAME_MAX + 1 + 3 * RL_KEY_MAX)

/* The GCRA, run atomically by Redis. The value is "<tat>:<given>": the TAT in microseconds of
 * Redis's clock, and the microseconds given back by refunds since the key was made.
 *
 * KEYS[1] the key. ARGV: T (us per request), burst, want (requests), refund (requests that
 * lapsed unspent), and of the grant they came from: its tat and given. A refund takes back at
 * most what those requests can still weigh: their place in the queue ends at that grant's tat,
 * minus whatever was given back since (which may have moved them down), and time has paid off
 * everything before now. So it never gives back more than was reserved and not spent.
 *
 * Returns {granted (0..want), retry_ms (until one more is allowed after this grant; 0: now),
 * debt_us (TAT - now), tat, given}. Redis's clock (TIME), so nodes with skewed clocks agree;
 * scripts are replicated by their effects (the default since Redis 5, the only mode in 7), so
 * TIME before a write is allowed. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000000 + t[2]\n"
    "local T = tonumber(ARGV[1])\n"
    "local cap = T * tonumber(ARGV[2])\n"
    "local want = tonumber(ARGV[3])\n"
    "local v = redis.pcall('GET', KEYS[1])\n"
    "local tat, given = 0, 0\n"
    "if type(v) == 'string' then\n"
    "  local a, b = string.match(v, '^(%d+):(%d+)$')\n"
    "  tat, given = tonumber(a) or 0, tonumber(b) or 0\n"
    "end\n"
    "local old = tat\n"
    "local moved = math.max(0, given - tonumber(ARGV[6]))\n"
    "local back = math.min(tonumber(ARGV[4]) * T, tonumber(ARGV[5]) - moved - now)\n"
    "if back > 0 then\n"
    "  tat = tat - back\n"
    "  given = given + back\n"
    "end\n"
    "if tat < now then tat = now end\n"
    "if tat > now + cap then tat = now + cap end\n" /* Redis's clock went back */
    "local n = math.floor((now + cap - tat) / T)\n"
    "if n > want then n = want end\n"
    "if n < 0 then n = 0 end\n"
    "tat = tat + n * T\n"
    "if tat ~= old then\n"
    "  redis.call('SET', KEYS[1], string.format('%d:%d', tat, given), 'PX',\n"
    "             string.format('%d', math.ceil((tat - now) / 1000) + 1))\n"
    "end\n"
    "local retry = tat + T - cap - now\n"
    "if retry < 0 then retry = 0 end\n"
    "return {n, math.ceil(retry / 1000), tat - now, tat, given}\n";

struct oplist {
    struct rl_op *head, *tail;
    int n;
};

struct rl_op {
    struct oplist *list; /* the list holding it */
    struct rl_op *prev, *next;
    rl_cb *cb;
    void *ud;
    int status; /* once decided: 0, ERR_BUSY or ERR_CLOSED */
    int retry_ms;
};

struct cls {
    char name[RL_NAME_MAX + 1];
    int64_t t_us;   /* emission interval */
    int64_t cap_us; /* burst x t_us */
    int burst;
    int batch;
    int64_t overflow_tat; /* fallback bucket of unlisted entries (local clock) */
};

struct entry {
    struct rl *rl;
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* LRU (idle) or busy list */
    uint64_t hash;
    struct oplist wait;
    struct rds_op *call; /* in flight, or NULL */
    int64_t sent_us;     /* when the call in flight was sent (local clock) */
    int64_t tat;         /* local GCRA */
    int64_t avail_until;
    int64_t deny_until;
    int64_t grant_tat; /* Redis's tat and given after the grant avail came from */
    int64_t grant_given;
    int64_t refund_tat; /* the same, for the refund */
    int64_t refund_given;
    int avail;
    int refund;
    int want; /* asked by the call in flight */
    int cls;
    int unlisted;
    int eval; /* the call in flight is an EVAL (the script was missing) */
    size_t keylen;
    char key[];
};

struct elist {
    struct entry *head, *tail;
};

struct rl {
    struct rds *rds; /* borrowed */
    struct cls *cls;
    int ncls;
    char sha[41]; /* "" if SHA-1 is not available: always EVAL */
    uint64_t sipkey[2];

    struct entry **tab;
    size_t mask;
    int nkeys, max_keys;
    struct elist lru;  /* idle entries, most recent first */
    struct elist busy; /* entries with a call in flight, listed or not */
    struct oplist firing;

    int degraded;
    int64_t retry_redis_at; /* after an error reply: decide locally until then */
    struct rl_stats st;

    int depth;   /* callbacks running */
    int closing; /* rl_free has begun */
    int freed;   /* rl_free ran inside a callback: free the struct when depth is 0 */
};

static void fetch_done(struct redisReply **replies, int n, int status, void *ud);

/* ---- time, hashing, Redis keys ------------------------------------------------------------ */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int ms_ceil(int64_t us)
{
    int64_t ms = (us + 999) / 1000;
    return ms < 1 ? 1 : ms > INT32_MAX ? INT32_MAX : (int) ms;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                                  \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                                     \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                                     \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                                  \
    } while (0)

/* SipHash-1-3 (the variant Redis uses for its own dicts), keyed per process. */
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

static uint64_t key_hash(const struct rl *rl, int cls, const char *key, size_t len)
{
    return siphash(rl->sipkey, (const unsigned char *) key, len) +
           (uint64_t) cls * 0x9e3779b97f4a7c15ULL;
}

/* "rl:<class>:<key>", the key's bytes outside '!'..'~' and '%' written %XX: any bytes are safe
 * and the key stays readable in redis-cli. out has RKEY_MAX bytes. */
static size_t redis_key(char *out, const struct cls *c, const char *key, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = (size_t) snprintf(out, RKEY_MAX, "rl:%s:", c->name);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) key[i];
        if (ch > ' ' && ch < 0x7f && ch != '%') {
            out[n++] = (char) ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    return n;
}

static size_t fmt_i64(char *out, int64_t v)
{
    char tmp[24];
    size_t n = 0, k = 0;
    uint64_t u = v < 0 ? (uint64_t) -v : (uint64_t) v;
    do
        tmp[k++] = (char) ('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        out[n++] = '-';
    while (k)
        out[n++] = tmp[--k];
    out[n] = '\0';
    return n;
}

/* ---- op lists --------------------------------------------------------------------------- */

static void op_push(struct oplist *l, struct rl_op *op)
{
    op->list = l;
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    l->n++;
}

static void op_unlink(struct rl_op *op)
{
    struct oplist *l = op->list;
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    l->n--;
    op->list = NULL;
    op->prev = op->next = NULL;
}

/* Move op from its wait list to `firing` with its outcome. */
static void decide(struct rl *rl, struct rl_op *op, int status, int retry_ms)
{
    op_unlink(op);
    op->status = status;
    op->retry_ms = retry_ms;
    if (status == 0)
        rl->st.allowed++;
    else if (status == ERR_BUSY)
        rl->st.denied++;
    op_push(&rl->firing, op);
}

/* Run the decided callbacks, oldest first. Each op is freed before its callback runs. */
static void fire(struct rl *rl, int closing)
{
    rl->depth++;
    while (rl->firing.head && (closing || !rl->closing)) {
        struct rl_op *op = rl->firing.head;
        op_unlink(op);
        rl_cb *cb = op->cb;
        void *ud = op->ud;
        int status = closing ? ERR_CLOSED : op->status;
        int retry = closing ? 0 : op->retry_ms;
        free(op);
        cb(status, retry, ud);
    }
    rl->depth--;
}

/* ---- entries ------------------------------------------------------------------------------ */

static void el_push_head(struct elist *l, struct entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
}

static void el_unlink(struct elist *l, struct entry *e)
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

static struct entry *lookup(struct rl *rl, int cls, uint64_t h, const char *key, size_t len)
{
    for (struct entry *e = rl->tab[h & rl->mask]; e; e = e->hnext)
        if (e->hash == h && e->cls == cls && e->keylen == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

/* Drop an idle, listed entry: its reservation and cached denial go with it. */
static void evict(struct rl *rl, struct entry *e)
{
    struct entry **pp = &rl->tab[e->hash & rl->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    el_unlink(&rl->lru, e);
    rl->nkeys--;
    free(e);
}

static struct entry *entry_new(struct rl *rl, int cls, uint64_t h, const char *key, size_t len)
{
    struct entry *e = xcalloc(1, sizeof *e + len);
    e->rl = rl;
    e->hash = h;
    e->cls = cls;
    e->keylen = len;
    memcpy(e->key, key, len);
    return e;
}

/* A new idle entry in the table, evicting the least recently used idle one if full; NULL when
 * every entry is busy. */
static struct entry *insert(struct rl *rl, int cls, uint64_t h, const char *key, size_t len)
{
    if (rl->nkeys >= rl->max_keys) {
        if (rl->lru.tail == NULL)
            return NULL;
        evict(rl, rl->lru.tail);
        rl->st.evictions++;
    }
    struct entry *e = entry_new(rl, cls, h, key, len);
    e->hnext = rl->tab[h & rl->mask];
    rl->tab[h & rl->mask] = e;
    el_push_head(&rl->lru, e);
    if (++rl->nkeys > rl->st.keys_peak)
        rl->st.keys_peak = rl->nkeys;
    return e;
}

static void touch(struct rl *rl, struct entry *e)
{
    if (rl->lru.head != e) {
        el_unlink(&rl->lru, e);
        el_push_head(&rl->lru, e);
    }
}

/* A call is in flight: off the LRU (never evicted), on the busy list. */
static void pin(struct rl *rl, struct entry *e)
{
    if (e->unlisted)
        rl->st.unlisted++;
    else
        el_unlink(&rl->lru, e);
    el_push_head(&rl->busy, e);
}

/* The call came back: listed entries go back to the LRU; unlisted ones are freed. */
static void unpin(struct rl *rl, struct entry *e)
{
    el_unlink(&rl->busy, e);
    if (e->unlisted) {
        rl->st.unlisted--;
        free(e);
    } else {
        el_push_head(&rl->lru, e);
    }
}

/* ---- deciding ----------------------------------------------------------------------------- */

/* The per-node GCRA: same numbers, local clock. */
static int local_gcra(struct rl *rl, struct entry *e, int64_t now, int *retry_ms)
{
    struct cls *c = &rl->cls[e->cls];
    int64_t *tat = e->unlisted ? &c->overflow_tat : &e->tat;
    int64_t next = (*tat > now ? *tat : now) + c->t_us;
    rl->st.fallback_checks++;
    if (next - now <= c->cap_us) {
        *tat = next;
        return RL_ALLOW;
    }
    *retry_ms = ms_ceil(next - now - c->cap_us);
    return RL_DENY;
}

static void redis_failed(struct rl *rl, const char *why)
{
    if (!rl->degraded)
        log_warn("rl", "Redis unavailable (%s): rate limits are per node until it answers", why);
    rl->degraded = 1;
}

static void redis_answered(struct rl *rl)
{
    if (rl->degraded)
        log_info("rl", "Redis answers again: rate limits are shared by the nodes again");
    rl->degraded = 0;
    rl->retry_redis_at = 0;
}

/* Send the script for e, asking for its waiting checks + batch - 1. 0, or the rds error. */
static int call_start(struct rl *rl, struct entry *e, int64_t now, int eval)
{
    const struct cls *c = &rl->cls[e->cls];
    char rkey[RKEY_MAX];
    int64_t w = (int64_t) e->wait.n + (e->unlisted ? 0 : c->batch - 1);
    if (w < 1)
        w = 1;
    if (w > INT32_MAX / 2)
        w = INT32_MAX / 2;
    eval = eval || rl->sha[0] == '\0';
    char num[6][24];
    const char *argv[10] = {eval ? "EVAL" : "EVALSHA",
                            eval ? SCRIPT : rl->sha,
                            "1",
                            rkey,
                            num[0],
                            num[1],
                            num[2],
                            num[3],
                            num[4],
                            num[5]};
    size_t lens[10] = {eval ? 4 : 7, eval ? sizeof SCRIPT - 1 : 40, 1};
    lens[3] = redis_key(rkey, c, e->key, e->keylen);
    lens[4] = fmt_i64(num[0], c->t_us);
    lens[5] = fmt_i64(num[1], c->burst);
    lens[6] = fmt_i64(num[2], w);
    lens[7] = fmt_i64(num[3], e->refund);
    lens[8] = fmt_i64(num[4], e->refund_tat);
    lens[9] = fmt_i64(num[5], e->refund_given);
    int argc = 10;
    const char *const *argvp = argv;
    const size_t *lensp = lens;
    int rc = rds_batch(rl->rds, 1, &argc, &argvp, &lensp, 0, fetch_done, e, &e->call);
    if (rc < 0)
        return rc;
    rl->st.redis_calls++;
    if (eval && rl->sha[0])
        rl->st.script_loads++;
    e->sent_us = now;
    e->want = (int) w;
    e->eval = eval;
    return 0;
}

static int redis_usable(struct rl *rl, int64_t now)
{
    if (rl->rds == NULL)
        return 0;
    if (!rds_up(rl->rds)) {
        redis_failed(rl, "not connected");
        return 0;
    }
    return now >= rl->retry_redis_at;
}

/* Parse {granted, retry_ms, debt_us, tat, given}. 0, or -1 for anything else. */
static int parse_reply(const redisReply *r, long long out[5])
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 5)
        return -1;
    for (int i = 0; i < 5; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return -1;
        out[i] = r->element[i]->integer;
    }
    return out[0] >= 0 ? 0 : -1;
}

/* Redis answered: spend the grant on the waiting checks, keep the rest, cache a denial. */
static void granted(struct rl *rl, struct entry *e, const long long v[5], int64_t now)
{
    const struct cls *c = &rl->cls[e->cls];
    long long got = v[0];
    int retry_ms = (int) (v[1] > INT32_MAX ? INT32_MAX : v[1]);
    e->tat = now + v[2];
    e->refund = 0;
    while (got > 0 && e->wait.head) {
        decide(rl, e->wait.head, 0, 0);
        got--;
    }
    if (e->wait.head && v[0] == e->want && !e->unlisted) {
        if (call_start(rl, e, now, 0) == 0)
            return; /* all granted and more checks came: ask for them too */
        redis_failed(rl, "not connected");
        while (e->wait.head) {
            int r = 0;
            int d = local_gcra(rl, e, now, &r);
            decide(rl, e->wait.head, d == RL_ALLOW ? 0 : ERR_BUSY, r);
        }
    }
    if (retry_ms < 1)
        retry_ms = 1;
    while (e->wait.head)
        decide(rl, e->wait.head, ERR_BUSY, retry_ms);
    if (got > 0) {
        e->avail = (int) got;
        e->avail_until = e->sent_us + got * c->t_us;
        e->grant_tat = v[3];
        e->grant_given = v[4];
    } else if (v[1] > 0) {
        e->deny_until = now + v[1] * 1000;
    }
}

/* The script's answer for e (ud), or the reason there is none. */
static void fetch_done(struct redisReply **replies, int n, int status, void *ud)
{
    struct entry *e = ud;
    struct rl *rl = e->rl;
    int64_t now = now_us();
    const redisReply *r = status == 0 ? replies[0] : NULL;
    long long v[5];
    e->call = NULL;
    rl->depth++;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !e->eval &&
        call_start(rl, e, now, 1) == 0) {
        rl->depth--; /* lost by a restart or SCRIPT FLUSH: send the script itself */
        return;
    }
    if (r && parse_reply(r, v) == 0) {
        redis_answered(rl);
        granted(rl, e, v, now);
    } else {
        char why[160];
        if (r && r->type == REDIS_REPLY_ERROR) {
            snprintf(why, sizeof why, "error reply: %.120s", r->str);
            rl->retry_redis_at = now + ERROR_BACKOFF_US;
        } else {
            snprintf(why, sizeof why, "%s", r ? "unexpected reply" : err_str(status));
        }
        rl->st.redis_failures++;
        redis_failed(rl, why);
        while (e->wait.head) {
            int retry = 0;
            int d = local_gcra(rl, e, now, &retry);
            decide(rl, e->wait.head, d == RL_ALLOW ? 0 : ERR_BUSY, retry);
        }
    }
    if (e->call == NULL)
        unpin(rl, e); /* e may be freed here */
    fire(rl, 0);
    rl->depth--;
    if (rl->freed && rl->depth == 0)
        free(rl);
}

/* ---- API ---------------------------------------------------------------------------------- */

int rl_class_check(const struct rl_class *c, const char **why)
{
    const char *bad = NULL;
    size_t n = c && c->name ? strlen(c->name) : 0;
    if (c == NULL || n == 0 || n > RL_NAME_MAX)
        bad = "a class needs a name of 1 to 32 characters";
    for (size_t i = 0; bad == NULL && i < n; i++) {
        char ch = c->name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            bad = "a class name is letters, digits, '_' and '-'";
    }
    if (bad == NULL && (c->limit < 1 || c->limit > 1000000))
        bad = "limit must be 1 to 1000000";
    else if (bad == NULL && c->period_ms < 1)
        bad = "period_ms must be 1 or more";
    else if (bad == NULL && (c->burst < 1 || c->burst > 1000000))
        bad = "burst must be 1 to 1000000";
    else if (bad == NULL && (c->batch < 1 || c->batch > 10000))
        bad = "batch must be 1 to 10000";
    else if (bad == NULL &&
             ((int64_t) c->period_ms * 1000 + c->limit - 1) / c->limit * c->burst > MAX_CAP_US)
        bad = "burst x period_ms / limit must be under 115 days";
    if (bad == NULL)
        return 0;
    if (why)
        *why = bad;
    return ERR_INVALID;
}

struct rl *rl_new(struct rds *rds, const struct rl_class *classes, int nclasses, int local_max_keys)
{
    for (int i = 0; i < nclasses; i++) {
        const char *why = NULL;
        if (rl_class_check(&classes[i], &why) < 0) {
            log_error("rl", "rate class %d (%s): %s", i,
                      classes[i].name ? classes[i].name : "no name", why);
            return NULL;
        }
    }
    struct rl *rl = xcalloc(1, sizeof *rl);
    rl->rds = rds;
    rl->ncls = nclasses;
    rl->cls = xcalloc(nclasses > 0 ? (size_t) nclasses : 1, sizeof *rl->cls);
    for (int i = 0; i < nclasses; i++) {
        struct cls *c = &rl->cls[i];
        snprintf(c->name, sizeof c->name, "%s", classes[i].name);
        c->t_us = ((int64_t) classes[i].period_ms * 1000 + classes[i].limit - 1) / classes[i].limit;
        c->burst = classes[i].burst;
        c->cap_us = c->t_us * c->burst;
        c->batch = classes[i].batch;
    }
    rl->max_keys = local_max_keys > 0 ? local_max_keys : DEFAULT_MAX_KEYS;
    size_t buckets = 16;
    while (buckets < (size_t) rl->max_keys * 2)
        buckets *= 2;
    rl->tab = xcalloc(buckets, sizeof *rl->tab);
    rl->mask = buckets - 1;
    if (getrandom(rl->sipkey, sizeof rl->sipkey, GRND_NONBLOCK) != (ssize_t) sizeof rl->sipkey) {
        rl->sipkey[0] = (uint64_t) now_us() ^ (uint64_t) (uintptr_t) rl;
        rl->sipkey[1] = (uint64_t) getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t) time(NULL);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_Digest(SCRIPT, sizeof SCRIPT - 1, md, &mdlen, EVP_sha1(), NULL) == 1 && mdlen == 20)
        for (int i = 0; i < 20; i++)
            snprintf(rl->sha + 2 * i, 3, "%02x", md[i]);
    else
        log_warn("rl", "SHA-1 unavailable in libcrypto: every call sends the whole script");
    if (rds == NULL) {
        rl->degraded = 1;
        log_info("rl", "no Redis: rate limits are per node");
    }
    return rl;
}

void rl_free(struct rl *rl)
{
    if (rl == NULL || rl->closing)
        return;
    rl->closing = 1;
    while (rl->busy.head) {
        struct entry *e = rl->busy.head;
        rds_op_cancel(e->call);
        e->call = NULL;
        while (e->wait.head)
            decide(rl, e->wait.head, ERR_CLOSED, 0);
        unpin(rl, e);
    }
    fire(rl, 1);
    while (rl->lru.head)
        evict(rl, rl->lru.head);
    free(rl->tab);
    free(rl->cls);
    if (rl->depth > 0)
        rl->freed = 1; /* inside a callback: fetch_done frees the struct */
    else
        free(rl);
}

int rl_class_find(const struct rl *rl, const char *name)
{
    for (int i = 0; rl && name && i < rl->ncls; i++)
        if (strcmp(rl->cls[i].name, name) == 0)
            return i;
    return ERR_NOTFOUND;
}

int rl_check(struct rl *rl, int cls, const char *key, size_t keylen, rl_cb *cb, void *ud,
             struct rl_op **opp, int *retry_after_ms)
{
    if (opp)
        *opp = NULL;
    if (rl == NULL || cls < 0 || cls >= rl->ncls || key == NULL || keylen == 0 ||
        keylen > RL_KEY_MAX || cb == NULL)
        return ERR_INVALID;
    if (rl->closing)
        return ERR_CLOSED;
    int retry = 0, rc = 0;
    int64_t now = now_us();
    uint64_t h = key_hash(rl, cls, key, keylen);
    struct entry *e = lookup(rl, cls, h, key, keylen);
    rl->st.checks++;
    if (e && e->call == NULL) {
        touch(rl, e);
        if (e->avail > 0 && now < e->avail_until) {
            e->avail--;
            rl->st.allowed++;
            rl->st.local_allowed++;
            return RL_ALLOW;
        }
        if (e->avail > 0) { /* lapsed: give it back with the next call */
            e->refund = e->avail;
            e->refund_tat = e->grant_tat;
            e->refund_given = e->grant_given;
            e->avail = 0;
        }
        if (now < e->deny_until) {
            rl->st.denied++;
            rl->st.cached_denied++;
            if (retry_after_ms)
                *retry_after_ms = ms_ceil(e->deny_until - now);
            return RL_DENY;
        }
    } else if (e == NULL && (e = insert(rl, cls, h, key, keylen)) == NULL) {
        e = entry_new(rl, cls, h, key, keylen);
        e->unlisted = 1;
    }

    struct rl_op *op = xcalloc(1, sizeof *op);
    op->cb = cb;
    op->ud = ud;
    op_push(&e->wait, op);
    if (e->call) { /* a call is in flight for this key: wait for its answer */
        if (opp)
            *opp = op;
        return RL_PENDING;
    }
    if (redis_usable(rl, now)) {
        rc = call_start(rl, e, now, 0);
        if (rc == 0) {
            pin(rl, e);
            if (opp)
                *opp = op;
            return RL_PENDING;
        }
        redis_failed(rl, err_str(rc));
    }
    op_unlink(op);
    free(op);
    rc = local_gcra(rl, e, now, &retry);
    if (e->unlisted)
        free(e);
    if (rc == RL_ALLOW) {
        rl->st.allowed++;
    } else {
        rl->st.denied++;
        if (retry_after_ms)
            *retry_after_ms = retry;
    }
    return rc;
}

void rl_op_cancel(struct rl_op *op)
{
    if (op == NULL || op->list == NULL)
        return;
    op_unlink(op);
    free(op);
}

void rl_stats(const struct rl *rl, struct rl_stats *out)
{
    memset(out, 0, sizeof *out);
    if (rl == NULL)
        return;
    *out = rl->st;
    out->keys = rl->nkeys;
    out->max_keys = rl->max_keys;
    out->degraded = rl->degraded;
}
