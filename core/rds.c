/* rds.c -- the Redis command connection: hiredis 0.14 async + its libevent adapter.
 *
 * States: DOWN (waiting to retry) -> CONNECTING (TCP) -> HELLO (PING sent) -> UP. Only UP takes
 * calls; a Redis that accepts TCP but answers PING with an error (LOADING, NOAUTH, max clients)
 * is not up. One timer serves as the connect deadline (CONNECTING, HELLO) and as the retry
 * delay (DOWN); the delay starts at RETRY_MIN_MS and doubles up to reconnect_max_ms.
 *
 * Ownership of the hiredis context (r->ac). hiredis frees it by itself when the connection
 * fails or drops, then calls on_connect (failed connect) or on_disconnect (dropped), so both set
 * r->ac to NULL and nothing else frees it. We free it ourselves (conn_drop) only from our own
 * events and from rds_free/rds_batch, never from inside a hiredis callback: hello failures are
 * handed to the timer with event_active. Before freeing, ac->data is cleared so on_disconnect
 * knows the drop was ours (h2o's back-pointer rule).
 *
 * Ownership of a call (struct rds_op). Two parties hold it: the caller until its callback
 * fires or it is canceled (`done`), and hiredis until every per-command callback has come back
 * (`inflight`; each comes back exactly once, with NULL when the context is freed). The op is
 * freed when both have let go. Replies are taken from hiredis as they arrive (take_reply) and
 * freed after the batch callback returns. User callbacks only ever run from the op's own event
 * (never inside hiredis, never inside rds_batch) or from rds_free.
 *
 * A call that gets no answer in time fails with ERR_TIMEOUT and the connection is dropped and
 * made again: a Redis that stopped answering is not trusted, and the calls queued behind the
 * stuck one fail at once with ERR_UNAVAILABLE instead of each waiting for its own deadline. */
#include "rds.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#define RETRY_MIN_MS         100
#define DEFAULT_PORT         6379
#define DEFAULT_CONNECT_MS   1000
#define DEFAULT_TIMEOUT_MS   1000
#define DEFAULT_RETRY_MAX_MS 5000
#define OP_PENDING           1 /* op->status until the outcome is known */

enum { ST_DOWN, ST_CONNECTING, ST_HELLO, ST_UP };

struct rds_op {
    struct rds *r;
    struct rds_op *prev, *next; /* in r->ops while the callback is owed */
    struct event *ev;           /* the deadline, and the deferred completion (event_active) */
    rds_batch_cb *cb;
    void *ud;
    int n;                        /* commands */
    int nrecv;                    /* replies taken so far */
    int inflight;                 /* hiredis callbacks not yet back */
    int status;                   /* OP_PENDING, 0 or ERR_* */
    int done;                     /* callback fired or canceled: the caller let go */
    struct redisReply *replies[]; /* owned: taken from hiredis, freed with freeReplyObject */
};

struct rds {
    struct event_base *base; /* borrowed */
    char *host;              /* owned */
    int port;
    int connect_timeout_ms;
    int timeout_ms;
    int retry_max_ms;

    redisAsyncContext *ac; /* NULL unless CONNECTING, HELLO or UP */
    int state;
    struct event *timer; /* connect deadline or retry delay */
    int retry_ms;        /* next retry delay */
    unsigned rng;        /* jitter for the retry delay */
    int was_up;          /* UP since the last "lost" line */
    int down_logged;     /* this outage has been logged */
    char hello_err[128]; /* why the PING handshake failed, for the timer */

    struct rds_op *ops; /* calls whose callback is owed */
    int depth;          /* user callbacks running */
    int closing;        /* rds_free has begun */
    int freed;          /* rds_free ran inside a callback: free the struct when depth is 0 */
};

static void went_down(struct rds *r, const char *why);

/* ---- calls ---------------------------------------------------------------------------------- */

static void op_link(struct rds *r, struct rds_op *op)
{
    op->prev = NULL;
    op->next = r->ops;
    if (r->ops)
        r->ops->prev = op;
    r->ops = op;
}

static void op_unlink(struct rds_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        op->r->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void op_free(struct rds_op *op)
{
    for (int i = 0; i < op->nrecv; i++)
        freeReplyObject(op->replies[i]);
    event_free(op->ev);
    free(op);
}

/* The caller let go: drop its replies; free the op unless hiredis still holds it. */
static void op_release(struct rds_op *op)
{
    op->done = 1;
    if (op->inflight == 0) {
        op_free(op);
        return;
    }
    for (int i = 0; i < op->nrecv; i++)
        freeReplyObject(op->replies[i]);
    op->nrecv = 0;
}

/* Run the callback once, then let go of the op. The caller checks r->freed afterwards. */
static void op_fire(struct rds_op *op, int status)
{
    struct rds *r = op->r;
    op_unlink(op);
    op->done = 1;
    event_del(op->ev);
    r->depth++;
    op->cb(status == 0 ? op->replies : NULL, op->n, status, op->ud);
    r->depth--;
    op_release(op);
}

/* hiredis frees each reply when its callback returns. Take it instead: move the node's contents
 * to a node of our own and leave hiredis an empty integer reply, which freeReplyObject frees
 * without touching str or element. The node comes from hiredis's allocator because
 * freeReplyObject frees it. */
static redisReply *take_reply(redisReply *reply)
{
    redisReply *mine = hi_malloc(sizeof *mine);
    *mine = *reply;
    reply->type = REDIS_REPLY_INTEGER;
    reply->str = NULL;
    reply->len = 0;
    reply->element = NULL;
    reply->elements = 0;
    return mine;
}

/* One per command, in order. reply is NULL when the context is being freed. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds_op *op = privdata;
    op->inflight--;
    if (!op->done && op->status == OP_PENDING) {
        if (reply == NULL) {
            op->status = ERR_UNAVAILABLE;
            event_active(op->ev, EV_TIMEOUT, 0);
        } else {
            op->replies[op->nrecv++] = take_reply(reply);
            if (op->nrecv == op->n) {
                op->status = 0;
                event_active(op->ev, EV_TIMEOUT, 0);
            }
        }
    }
    if (op->done && op->inflight == 0)
        op_free(op);
}

/* Free the context ourselves (never from inside a hiredis callback). Pending commands come back
 * with NULL; on_disconnect sees data == NULL and does nothing. */
static void conn_drop(struct rds *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state = ST_DOWN;
    event_del(r->timer);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

/* The op's deadline passed, or its outcome is known (event_active from on_reply). */
static void on_op_event(evutil_socket_t fd, short what, void *arg)
{
    struct rds_op *op = arg;
    struct rds *r = op->r;
    if (op->status == OP_PENDING) {
        op->status = ERR_TIMEOUT; /* set first: conn_drop's NULL replies must not overwrite it */
        if (r->ac) {
            conn_drop(r);
            went_down(r, "a call got no reply in time");
        }
    }
    op_fire(op, op->status);
    if (r->freed && r->depth == 0)
        free(r);
}

/* ---- the connection ------------------------------------------------------------------------- */

static int jitter(struct rds *r, int ms)
{
    r->rng = r->rng * 1103515245u + 12345u;
    int quarter = ms / 4;
    return quarter > 0 ? ms - quarter + (int) ((r->rng >> 8) % (unsigned) (2 * quarter + 1)) : ms;
}

static void timer_in(struct rds *r, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(r->timer, &tv);
}

/* The connection is gone (r->ac is NULL, state DOWN): log the change once, retry later. */
static void went_down(struct rds *r, const char *why)
{
    if (r->was_up)
        log_warn("rds", "connection to %s:%d lost: %s; reconnecting", r->host, r->port, why);
    else if (!r->down_logged)
        log_warn("rds", "cannot connect to %s:%d: %s; retrying", r->host, r->port, why);
    else
        log_debug("rds", "connect to %s:%d failed again: %s", r->host, r->port, why);
    r->was_up = 0;
    r->down_logged = 1;
    if (r->closing)
        return;
    timer_in(r, jitter(r, r->retry_ms));
    r->retry_ms = r->retry_ms * 2 > r->retry_max_ms ? r->retry_max_ms : r->retry_ms * 2;
}

static void went_up(struct rds *r)
{
    r->state = ST_UP;
    event_del(r->timer);
    r->retry_ms = RETRY_MIN_MS;
    if (r->down_logged)
        log_info("rds", "reconnected to %s:%d", r->host, r->port);
    else
        log_info("rds", "connected to %s:%d", r->host, r->port);
    r->down_logged = 0;
    r->was_up = 1;
}

/* The answer to the handshake PING. reply is NULL when the context is being freed: whoever
 * frees it handles the state. */
static void on_hello(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds *r = privdata;
    redisReply *rep = reply;
    if (rep == NULL || ac->data == NULL || r->state != ST_HELLO)
        return;
    if (rep->type == REDIS_REPLY_STATUS && rep->str && strcasecmp(rep->str, "PONG") == 0) {
        went_up(r);
        return;
    }
    /* Not ready (LOADING, NOAUTH, ...). The message is Redis's own, never a value. */
    snprintf(r->hello_err, sizeof r->hello_err, "%s",
             rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "unexpected PING reply");
    event_active(r->timer, EV_TIMEOUT, 0); /* drop from the timer, outside hiredis */
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct rds *r = cac->data;
    if (r == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context when we return; the disconnect callback will not run. */
        char why[128];
        snprintf(why, sizeof why, "%s", cac->c.errstr[0] ? cac->c.errstr : "connect failed");
        r->ac = NULL;
        r->state = ST_DOWN;
        event_del(r->timer);
        went_down(r, why);
        return;
    }
    r->state = ST_HELLO;
    if (redisAsyncCommand(r->ac, on_hello, r, "PING") != REDIS_OK) {
        snprintf(r->hello_err, sizeof r->hello_err, "cannot send PING");
        event_active(r->timer, EV_TIMEOUT, 0);
    }
}

/* hiredis is freeing a connected context: dropped by the server or a read/write error, or
 * freed by us (data == NULL). */
static void on_disconnect(const redisAsyncContext *cac, int status)
{
    struct rds *r = cac->data;
    if (r == NULL)
        return;
    char why[128];
    snprintf(why, sizeof why, "%s", cac->c.errstr[0] ? cac->c.errstr : "closed by the server");
    r->ac = NULL;
    r->state = ST_DOWN;
    event_del(r->timer);
    went_down(r, why);
}

static void connect_start(struct rds *r)
{
    r->hello_err[0] = '\0';
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        went_down(r, "cannot allocate a context");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->c.errstr);
        redisAsyncFree(ac); /* never connected, nothing attached: no callback runs */
        went_down(r, why);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        went_down(r, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = ST_CONNECTING;
    timer_in(r, r->connect_timeout_ms);
}

/* DOWN: time to retry. CONNECTING/HELLO: the connect deadline passed, or on_hello failed. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rds *r = arg;
    if (r->state == ST_DOWN) {
        connect_start(r);
    } else if (r->state == ST_CONNECTING || r->state == ST_HELLO) {
        char why[160];
        if (r->hello_err[0])
            snprintf(why, sizeof why, "PING answered: %s", r->hello_err);
        else if (r->state == ST_HELLO)
            snprintf(why, sizeof why, "no answer to PING within %d ms", r->connect_timeout_ms);
        else
            snprintf(why, sizeof why, "no connection within %d ms", r->connect_timeout_ms);
        conn_drop(r);
        went_down(r, why);
    }
}

/* ---- API ------------------------------------------------------------------------------------ */

struct rds *rds_new(struct event_base *base, const struct rds_opts *opts)
{
    struct rds *r = xcalloc(1, sizeof *r);
    r->base = base;
    r->host = xstrdup(opts && opts->host && *opts->host ? opts->host : "127.0.0.1");
    r->port = opts && opts->port > 0 ? opts->port : DEFAULT_PORT;
    r->connect_timeout_ms =
        opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : DEFAULT_CONNECT_MS;
    r->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    r->retry_max_ms =
        opts && opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : DEFAULT_RETRY_MAX_MS;
    if (r->retry_max_ms < RETRY_MIN_MS)
        r->retry_max_ms = RETRY_MIN_MS;
    r->retry_ms = RETRY_MIN_MS;
    r->rng = (unsigned) time(NULL) ^ (unsigned) (uintptr_t) r;
    r->timer = evtimer_new(base, on_timer, r);
    r->state = ST_DOWN;
    connect_start(r);
    return r;
}

void rds_free(struct rds *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    conn_drop(r); /* every op's commands come back now: inflight drops to 0 */
    while (r->ops)
        op_fire(r->ops, ERR_CLOSED);
    event_free(r->timer);
    r->timer = NULL;
    free(r->host);
    r->host = NULL;
    if (r->depth > 0)
        r->freed = 1; /* inside an op's callback: on_op_event frees the struct */
    else
        free(r);
}

int rds_up(const struct rds *r)
{
    return r != NULL && r->state == ST_UP;
}

int rds_batch(struct rds *r, int ncmds, const int *argc, const char *const *const *argv,
              const size_t *const *argvlen, int timeout_ms, rds_batch_cb *cb, void *ud,
              struct rds_op **opp)
{
    if (opp)
        *opp = NULL;
    if (r == NULL || ncmds <= 0 || cb == NULL ||
        rds_check_batch(ncmds, argc, argv, argvlen, NULL, NULL) < 0)
        return ERR_INVALID;
    if (r->closing)
        return ERR_CLOSED;
    if (r->state != ST_UP)
        return ERR_UNAVAILABLE;

    struct rds_op *op = xcalloc(1, sizeof *op + (size_t) ncmds * sizeof op->replies[0]);
    op->r = r;
    op->cb = cb;
    op->ud = ud;
    op->n = ncmds;
    op->status = OP_PENDING;
    op->ev = evtimer_new(r->base, on_op_event, op);
    /* Appended to hiredis's output buffer back to back: they leave in one write. */
    for (int i = 0; i < ncmds; i++) {
        if (redisAsyncCommandArgv(r->ac, on_reply, op, argc[i], (const char **) argv[i],
                                  argvlen[i]) != REDIS_OK) {
            /* Only a context that is going away refuses (or a failed format). Commands already
             * queued come back with NULL when conn_drop frees the context; that frees op. */
            op->done = 1;
            if (op->inflight == 0)
                op_free(op);
            conn_drop(r);
            went_down(r, "hiredis refused a command");
            return ERR_UNAVAILABLE;
        }
        op->inflight++;
    }
    int ms = timeout_ms > 0 ? timeout_ms : r->timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(op->ev, &tv);
    op_link(r, op);
    if (opp)
        *opp = op;
    return 0;
}

void rds_op_cancel(struct rds_op *op)
{
    if (op == NULL || op->done)
        return;
    op_unlink(op);
    event_del(op->ev);
    op_release(op);
}

/* ---- commands that do not belong on a shared connection ------------------------------------- */

static int is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

static const char *check_cmd(int argc, const char *const *argv, const size_t *argvlen)
{
    static const char *const CHANGES[] = {
        "SUBSCRIBE",    "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
        "SUNSUBSCRIBE", "MONITOR",    "HELLO",      "SYNC",        "PSYNC",
        "RESET",        "QUIT",       "SELECT",     "AUTH"};
    static const char *const BLOCKS[] = {"BLPOP",    "BRPOP",    "BRPOPLPUSH", "BLMOVE", "BLMPOP",
                                         "BZPOPMIN", "BZPOPMAX", "BZMPOP",     "WAIT",   "WAITAOF"};
    static const char CHANGE[] = "it would change the shared connection for every caller";
    static const char BLOCK[] = "it would block the shared connection";
    if (argc <= 0 || argv[0] == NULL)
        return "empty command";
    const char *name = argv[0];
    size_t len = argvlen[0];
    for (size_t i = 0; i < sizeof CHANGES / sizeof CHANGES[0]; i++)
        if (is(name, len, CHANGES[i]))
            return CHANGE;
    for (size_t i = 0; i < sizeof BLOCKS / sizeof BLOCKS[0]; i++)
        if (is(name, len, BLOCKS[i]))
            return BLOCK;
    if (is(name, len, "CLIENT") && argc > 1 && is(argv[1], argvlen[1], "REPLY"))
        return CHANGE;
    if (is(name, len, "WATCH"))
        return "WATCH would span calls on the shared connection (use EVAL)";
    if (is(name, len, "XREAD") || is(name, len, "XREADGROUP"))
        for (int i = 1; i < argc && !is(argv[i], argvlen[i], "STREAMS"); i++)
            if (is(argv[i], argvlen[i], "BLOCK"))
                return BLOCK;
    return NULL;
}

int rds_check_batch(int ncmds, const int *argc, const char *const *const *argv,
                    const size_t *const *argvlen, int *bad, const char **why)
{
    const char *reason = NULL;
    int in_multi = 0, i;
    for (i = 0; i < ncmds; i++) {
        reason = check_cmd(argc[i], argv[i], argvlen[i]);
        if (reason)
            break;
        if (is(argv[i][0], argvlen[i][0], "MULTI")) {
            if (in_multi)
                reason = "MULTI inside MULTI";
            in_multi = 1;
        } else if (is(argv[i][0], argvlen[i][0], "EXEC") ||
                   is(argv[i][0], argvlen[i][0], "DISCARD")) {
            if (!in_multi)
                reason = "EXEC or DISCARD without a MULTI in the same call";
            in_multi = 0;
        }
        if (reason)
            break;
    }
    if (reason == NULL && in_multi) {
        reason = "MULTI must be closed by EXEC or DISCARD in the same call";
        i = ncmds - 1;
    }
    if (reason == NULL)
        return 0;
    if (bad)
        *bad = i;
    if (why)
        *why = reason;
    return ERR_INVALID;
}
