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
 * stuck one fail at once with ERR_UNAVAILABLE instead of each waiting for its own deadline.
 *
 * The subscriber (struct rds_sub, at the end) has the same life on a connection of its own:
 * DOWN -> CONNECTING -> SUBSCRIBING (CLIENT SETNAME and SUBSCRIBE sent together) -> UP at the
 * first confirmation. In subscribe mode hiredis 0.14 calls the SUBSCRIBE callback for every
 * confirmation and message of the channel, and once more with NULL when the context is freed;
 * the callback finds the subscriber through ac->data (never its privdata), so a context we
 * freed (data cleared) reaches nothing. A PING is not usable there (0.14 looks the reply
 * ["pong", ""] up as a message of channel "" and never gives it to the PING's callback: checked
 * with a probe program), so the liveness check re-sends SUBSCRIBE for the channel and waits for
 * its confirmation. Messages and gaps are copied into a FIFO and handed
 * to the user from an event of ours: user code never runs inside hiredis, and may free the
 * subscriber from a callback (depth/freed, as above). */
#include "rds.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "sentinel.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sys/ioctl.h>

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

enum { ST_DOWN, ST_ASKING, ST_CONNECTING, ST_HELLO, ST_UP };

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
    double started;               /* monotonic seconds when it was asked for (metrics) */
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
    struct event *timer;    /* connect deadline or retry delay */
    int retry_ms;           /* next retry delay */
    unsigned rng;           /* jitter for the retry delay */
    int was_up;             /* UP since the last "lost" line */
    unsigned long connects; /* times it came up (the first time too) */
    rds_observer *observe;  /* told of every batch finished (metrics) */
    void *observe_ud;
    int down_logged;     /* this outage has been logged */
    char hello_err[128]; /* why the PING handshake failed, for the timer */
    char down_why[320];  /* why it is not up, for /readyz */

    struct sentinel *sentinel; /* borrowed; NULL: host and port are fixed */
    struct sentinel_ask *ask;  /* ASKING: the question in flight */
    int role_ok;               /* HELLO: ROLE said master */
    char stale[128];           /* UP: a reply said this is no primary (READONLY, ...) */

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
    if (r->observe) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        r->observe(status, (double) now.tv_sec + (double) now.tv_nsec / 1e9 - op->started,
                   r->observe_ud);
    }
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
        } else if (op->r->sentinel && sentinel_reply_stale(reply)) {
            /* not a primary (any more): this call fails as if the connection had dropped,
             * and the timer drops it and asks the sentinels again */
            struct rds *r = op->r;
            redisReply *rr = reply;
            op->status = ERR_UNAVAILABLE;
            event_active(op->ev, EV_TIMEOUT, 0);
            if (r->state == ST_UP && r->stale[0] == '\0') {
                snprintf(r->stale, sizeof r->stale, "%.*s", (int) rr->len, rr->str);
                event_active(r->timer, EV_TIMEOUT, 0);
            }
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

/* ms +- 25%, so nodes that lost Redis together do not come back in step. */
static int jitter_ms(unsigned *rng, int ms)
{
    *rng = *rng * 1103515245u + 12345u;
    int quarter = ms / 4;
    return quarter > 0 ? ms - quarter + (int) ((*rng >> 8) % (unsigned) (2 * quarter + 1)) : ms;
}

static int jitter(struct rds *r, int ms)
{
    return jitter_ms(&r->rng, ms);
}

static void evtimer_in(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void timer_in(struct rds *r, int ms)
{
    evtimer_in(r->timer, ms);
}

/* The connection is gone (r->ac is NULL, state DOWN): log the change once, retry later. */
/* "host:port", or with sentinels: the primary "name" (last at host:port) */
static void where(char *buf, size_t cap, struct sentinel *sn, const char *host, int port)
{
    if (sn)
        snprintf(buf, cap, "the primary \"%s\" (last at %s:%d)", sentinel_master_name(sn), host,
                 port);
    else
        snprintf(buf, cap, "%s:%d", host, port);
}

static void went_down(struct rds *r, const char *why)
{
    char at[400];
    where(at, sizeof at, r->sentinel, r->host, r->port);
    snprintf(r->down_why, sizeof r->down_why, "%s", why);
    if (r->was_up)
        log_warn("rds", "connection to %s lost: %s; reconnecting", at, why);
    else if (!r->down_logged)
        log_warn("rds", "cannot connect to %s: %s; retrying", at, why);
    else
        log_debug("rds", "connect to %s failed again: %s", at, why);
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
    r->down_why[0] = '\0';
    r->stale[0] = '\0'; /* a connection that dropped before its timer acted on it */
    event_del(r->timer);
    r->retry_ms = RETRY_MIN_MS;
    if (r->down_logged)
        log_info("rds", "reconnected to %s:%d", r->host, r->port);
    else
        log_info("rds", "connected to %s:%d", r->host, r->port);
    r->down_logged = 0;
    r->was_up = 1;
    r->connects++;
}

void rds_observe(struct rds *r, rds_observer *cb, void *ud)
{
    r->observe = cb;
    r->observe_ud = ud;
}

unsigned long rds_connects(const struct rds *r)
{
    return r->connects;
}

void rds_addr(const struct rds *r, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%d", r->host, r->port);
}

const char *rds_down_reason(const struct rds *r)
{
    if (r->state == ST_UP)
        return "";
    return r->down_why[0] ? r->down_why : "not connected";
}

/* The answer to ROLE (sentinel mode), before the PING's: only a primary will do. */
static void on_role(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds *r = privdata;
    redisReply *rep = reply;
    if (rep == NULL || ac->data == NULL || r->state != ST_HELLO)
        return;
    int role = sentinel_parse_role(rep);
    if (role == SENTINEL_ROLE_MASTER) {
        r->role_ok = 1;
        return;
    }
    if (role == SENTINEL_ROLE_REPLICA)
        snprintf(r->hello_err, sizeof r->hello_err, "a replica, not the primary (ROLE)");
    else
        snprintf(r->hello_err, sizeof r->hello_err, "%s",
                 rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "not a primary (ROLE)");
    event_active(r->timer, EV_TIMEOUT, 0); /* drop from the timer, outside hiredis */
}

/* The answer to the handshake PING. reply is NULL when the context is being freed: whoever
 * frees it handles the state. */
static void on_hello(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds *r = privdata;
    redisReply *rep = reply;
    if (rep == NULL || ac->data == NULL || r->state != ST_HELLO)
        return;
    if (r->hello_err[0])
        return; /* ROLE refused it; the timer drops it */
    if (rep->type == REDIS_REPLY_STATUS && rep->str && strcasecmp(rep->str, "PONG") == 0 &&
        (r->sentinel == NULL || r->role_ok)) {
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
    r->role_ok = 0;
    if ((r->sentinel && redisAsyncCommand(r->ac, on_role, r, "ROLE") != REDIS_OK) ||
        redisAsyncCommand(r->ac, on_hello, r, "PING") != REDIS_OK) {
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

/* The sentinels answered (or none did). */
static void on_asked(int status, const char *host, int port, const char *why, void *ud)
{
    struct rds *r = ud;
    r->ask = NULL;
    r->state = ST_DOWN;
    if (status < 0) {
        went_down(r, why);
        return;
    }
    if (strcmp(host, r->host) != 0) {
        free(r->host);
        r->host = xstrdup(host);
    }
    r->port = port;
    connect_start(r);
}

/* Connect: to host and port, or first ask the sentinels where the primary is. */
static void begin(struct rds *r)
{
    if (r->sentinel == NULL) {
        connect_start(r);
        return;
    }
    r->state = ST_ASKING;
    r->ask = sentinel_ask(r->sentinel, on_asked, r);
}

/* DOWN: time to retry. CONNECTING/HELLO: the connect deadline passed, or on_hello failed.
 * UP: a reply said the server is no primary (sentinel mode). */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rds *r = arg;
    if (r->state == ST_DOWN) {
        begin(r);
    } else if (r->state == ST_UP && r->stale[0]) {
        char why[200];
        snprintf(why, sizeof why, "%s:%d answered %s", r->host, r->port, r->stale);
        r->stale[0] = '\0';
        conn_drop(r);
        went_down(r, why);
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
    r->sentinel = opts ? opts->sentinel : NULL;
    begin(r);
    return r;
}

void rds_free(struct rds *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    sentinel_ask_cancel(r->ask);
    r->ask = NULL;
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

/* Send ncmds commands, then tail (tail_argc words; 0: none) unchecked, in one pipeline. */
static int send_batch(struct rds *r, int ncmds, const int *argc, const char *const *const *argv,
                      const size_t *const *argvlen, int tail_argc, const char *const *tail,
                      const size_t *tail_len, int timeout_ms, rds_batch_cb *cb, void *ud,
                      struct rds_op **opp)
{
    if (r->closing)
        return ERR_CLOSED;
    if (r->state != ST_UP)
        return ERR_UNAVAILABLE;

    int total = ncmds + (tail_argc > 0);
    struct rds_op *op = xcalloc(1, sizeof *op + (size_t) total * sizeof op->replies[0]);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    op->started = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
    op->r = r;
    op->cb = cb;
    op->ud = ud;
    op->n = total;
    op->status = OP_PENDING;
    op->ev = evtimer_new(r->base, on_op_event, op);
    /* Appended to hiredis's output buffer back to back: they leave in one write. */
    for (int i = 0; i < total; i++) {
        int ac = i < ncmds ? argc[i] : tail_argc;
        const char **av = (const char **) (i < ncmds ? argv[i] : tail);
        const size_t *al = i < ncmds ? argvlen[i] : tail_len;
        if (redisAsyncCommandArgv(r->ac, on_reply, op, ac, av, al) != REDIS_OK) {
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

int rds_batch(struct rds *r, int ncmds, const int *argc, const char *const *const *argv,
              const size_t *const *argvlen, int timeout_ms, rds_batch_cb *cb, void *ud,
              struct rds_op **opp)
{
    if (opp)
        *opp = NULL;
    if (r == NULL || ncmds <= 0 || cb == NULL ||
        rds_check_batch(ncmds, argc, argv, argvlen, NULL, NULL) < 0)
        return ERR_INVALID;
    return send_batch(r, ncmds, argc, argv, argvlen, 0, NULL, NULL, timeout_ms, cb, ud, opp);
}

int rds_batch_wait(struct rds *r, int ncmds, const int *argc, const char *const *const *argv,
                   const size_t *const *argvlen, int replicas, int wait_ms, int timeout_ms,
                   rds_batch_cb *cb, void *ud, struct rds_op **opp)
{
    if (opp)
        *opp = NULL;
    if (r == NULL || ncmds <= 0 || cb == NULL || replicas < 0 || wait_ms < 0 ||
        rds_check_batch(ncmds, argc, argv, argvlen, NULL, NULL) < 0)
        return ERR_INVALID;
    char rep[16], ms[16];
    const char *const wait[3] = {"WAIT", rep, ms};
    size_t lens[3] = {4, (size_t) snprintf(rep, sizeof rep, "%d", replicas),
                      (size_t) snprintf(ms, sizeof ms, "%d", wait_ms)};
    int t = (timeout_ms > 0 ? timeout_ms : r->timeout_ms) + wait_ms;
    return send_batch(r, ncmds, argc, argv, argvlen, 3, wait, lens, t, cb, ud, opp);
}

int rds_publish(struct rds *r, const char *channel, const char *msg, size_t len, rds_batch_cb *cb,
                void *ud)
{
    int argc = 3;
    const char *argv[3] = {"PUBLISH", channel, msg};
    size_t lens[3] = {7, strlen(channel), len};
    const char *const *av = argv;
    const size_t *al = lens;
    return rds_batch(r, 1, &argc, &av, &al, 0, cb, ud, NULL);
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

/* ---- the subscriber ------------------------------------------------------------------------- */

#define SUB_PING_MS 1000

enum { SUB_DOWN, SUB_ASKING, SUB_CONNECTING, SUB_ROLE, SUB_SUBSCRIBING, SUB_UP };

/* A message or a gap, copied out of hiredis, waiting for the deliver event. */
struct sub_item {
    struct sub_item *next;
    uint64_t gen; /* gap: the connection it was confirmed on */
    int gap;
    size_t len;
    char data[];
};

struct rds_sub {
    struct event_base *base; /* borrowed */
    char *host;              /* owned */
    int port;
    int connect_timeout_ms;
    int timeout_ms;
    int retry_max_ms;
    char *channel; /* owned */
    size_t chlen;
    char name[64]; /* CLIENT SETNAME: "mmo:sub:<channel>" */
    rds_msg_cb *on_msg;
    rds_gap_cb *on_gap;
    void *ud;

    redisAsyncContext *ac; /* NULL unless CONNECTING, SUBSCRIBING or UP */
    int state;
    int up;              /* the gap of this connection was delivered */
    uint64_t gen;        /* connections started: a gap queued for an older one is stale */
    int ping_out;        /* a SUBSCRIBE sent as a ping awaits its confirmation */
    struct event *timer; /* connect deadline, retry delay, ping interval or ping deadline */
    int retry_ms;
    unsigned rng;
    int was_up;
    int down_logged;
    char err[128];             /* a failure seen inside hiredis, for the timer to act on */
    struct sentinel *sentinel; /* borrowed; NULL: host and port are fixed */
    struct sentinel_ask *ask;  /* ASKING: the question in flight */

    struct event *deliver; /* runs the queue */
    struct sub_item *head, *tail;
    int depth;   /* user callbacks running */
    int closing; /* rds_sub_free has begun */
    int freed;   /* rds_sub_free ran inside a callback: free the struct when depth is 0 */
};

static void sub_queue(struct rds_sub *s, const char *data, size_t len, int gap)
{
    struct sub_item *it = xmalloc(sizeof *it + len);
    it->next = NULL;
    it->gen = s->gen;
    it->gap = gap;
    it->len = len;
    if (len)
        memcpy(it->data, data, len);
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    event_active(s->deliver, EV_TIMEOUT, 0);
}

/* Free the context ourselves (never from inside a hiredis callback): the channel callback gets
 * NULL and on_disconnect runs, both with data == NULL, and do nothing. */
static void sub_conn_drop(struct rds_sub *s)
{
    redisAsyncContext *ac = s->ac;
    s->ac = NULL;
    s->state = SUB_DOWN;
    s->up = 0;
    s->ping_out = 0;
    event_del(s->timer);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

/* The connection is gone (s->ac is NULL, state DOWN): log the change once, retry later. */
static void sub_went_down(struct rds_sub *s, const char *why)
{
    char at[400];
    where(at, sizeof at, s->sentinel, s->host, s->port);
    if (s->was_up)
        log_warn("rds", "subscription to %s on %s lost: %s; resubscribing", s->channel, at, why);
    else if (!s->down_logged)
        log_warn("rds", "cannot subscribe to %s on %s: %s; retrying", s->channel, at, why);
    else
        log_debug("rds", "subscribe to %s on %s failed again: %s", s->channel, at, why);
    s->was_up = 0;
    s->down_logged = 1;
    if (s->closing)
        return;
    evtimer_in(s->timer, jitter_ms(&s->rng, s->retry_ms));
    s->retry_ms = s->retry_ms * 2 > s->retry_max_ms ? s->retry_max_ms : s->retry_ms * 2;
}

static int send_subscribe(struct rds_sub *s, redisCallbackFn *fn)
{
    const char *argv[2] = {"SUBSCRIBE", s->channel};
    size_t lens[2] = {9, s->chlen};
    return redisAsyncCommandArgv(s->ac, fn, NULL, 2, argv, lens);
}

static int is_str(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && is(r->str, r->len, s);
}

/* Every confirmation and message of the channel; NULL when the context is being freed (whoever
 * frees it handles the state). */
static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds_sub *s = ac->data;
    redisReply *r = reply;
    if (s == NULL || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    if (is_str(r->element[0], "message") && r->element[2]->type == REDIS_REPLY_STRING) {
        sub_queue(s, r->element[2]->str, r->element[2]->len, 0);
        /* a message is news from a live connection: the ping's confirmation may be queued
         * behind many (a busy channel, a busy node); its deadline starts again */
        if (s->ping_out)
            evtimer_in(s->timer, s->timeout_ms);
    } else if (is_str(r->element[0], "subscribe")) {
        if (s->state == SUB_SUBSCRIBING) {
            s->state = SUB_UP;
            s->retry_ms = RETRY_MIN_MS;
            if (s->down_logged)
                log_info("rds", "subscribed again to %s on %s:%d", s->channel, s->host, s->port);
            else
                log_info("rds", "subscribed to %s on %s:%d", s->channel, s->host, s->port);
            s->down_logged = 0;
            s->was_up = 1;
            sub_queue(s, NULL, 0, 1);
            evtimer_in(s->timer, SUB_PING_MS);
        } else if (s->state == SUB_UP && s->ping_out) {
            s->ping_out = 0;
            evtimer_in(s->timer, SUB_PING_MS);
        }
    }
}

static int send_setname_subscribe(struct rds_sub *s)
{
    const char *argv[3] = {"CLIENT", "SETNAME", s->name};
    size_t lens[3] = {6, 7, strlen(s->name)};
    /* The name's reply needs no callback; an error there (LOADING, NOAUTH) comes back for the
     * SUBSCRIBE too, which no regular callback awaits: hiredis then drops the connection. */
    if (redisAsyncCommandArgv(s->ac, NULL, NULL, 3, argv, lens) != REDIS_OK ||
        send_subscribe(s, on_sub_reply) != REDIS_OK)
        return -1;
    return 0;
}

/* The answer to ROLE (sentinel mode): subscribe on a primary only. */
static void on_sub_role(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds_sub *s = ac->data;
    redisReply *rep = reply;
    if (s == NULL || rep == NULL || s->state != SUB_ROLE)
        return;
    int role = sentinel_parse_role(rep);
    if (role == SENTINEL_ROLE_MASTER) {
        s->state = SUB_SUBSCRIBING;
        if (send_setname_subscribe(s) == 0)
            return;
        snprintf(s->err, sizeof s->err, "cannot send SUBSCRIBE");
    } else if (role == SENTINEL_ROLE_REPLICA) {
        snprintf(s->err, sizeof s->err, "a replica, not the primary (ROLE)");
    } else {
        snprintf(s->err, sizeof s->err, "%s",
                 rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "not a primary (ROLE)");
    }
    event_active(s->timer, EV_TIMEOUT, 0); /* drop from the timer, outside hiredis */
}

static void on_sub_connect(const redisAsyncContext *cac, int status)
{
    struct rds_sub *s = cac->data;
    if (s == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context when we return; the disconnect callback will not run. */
        char why[128];
        snprintf(why, sizeof why, "%s", cac->c.errstr[0] ? cac->c.errstr : "connect failed");
        s->ac = NULL;
        s->state = SUB_DOWN;
        event_del(s->timer);
        sub_went_down(s, why);
        return;
    }
    if (s->sentinel) {
        s->state = SUB_ROLE;
        if (redisAsyncCommand(s->ac, on_sub_role, NULL, "ROLE") == REDIS_OK)
            return;
    } else {
        s->state = SUB_SUBSCRIBING;
        if (send_setname_subscribe(s) == 0)
            return;
    }
    snprintf(s->err, sizeof s->err, "cannot send %s", s->sentinel ? "ROLE" : "SUBSCRIBE");
    event_active(s->timer, EV_TIMEOUT, 0);
}

static void on_sub_disconnect(const redisAsyncContext *cac, int status)
{
    struct rds_sub *s = cac->data;
    if (s == NULL)
        return;
    char why[128];
    snprintf(why, sizeof why, "%s", cac->c.errstr[0] ? cac->c.errstr : "closed by the server");
    s->ac = NULL;
    s->state = SUB_DOWN;
    s->up = 0;
    s->ping_out = 0;
    event_del(s->timer);
    sub_went_down(s, why);
}

static void sub_connect_start(struct rds_sub *s)
{
    s->err[0] = '\0';
    s->gen++;
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (ac == NULL) {
        sub_went_down(s, "cannot allocate a context");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->c.errstr);
        redisAsyncFree(ac); /* never connected, nothing attached: no callback runs */
        sub_went_down(s, why);
        return;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        sub_went_down(s, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_sub_connect);
    redisAsyncSetDisconnectCallback(ac, on_sub_disconnect);
    s->ac = ac;
    s->state = SUB_CONNECTING;
    evtimer_in(s->timer, s->connect_timeout_ms);
}

/* Bytes received and not yet read from the subscriber's socket (0 when none or unknown). */
static int sub_unread(const struct rds_sub *s)
{
    int n = 0;
    if (s->ac == NULL || s->ac->c.fd < 0 || ioctl(s->ac->c.fd, FIONREAD, &n) != 0)
        return 0;
    return n;
}

/* The sentinels answered (or none did). */
static void on_sub_asked(int status, const char *host, int port, const char *why, void *ud)
{
    struct rds_sub *s = ud;
    s->ask = NULL;
    s->state = SUB_DOWN;
    if (status < 0) {
        sub_went_down(s, why);
        return;
    }
    if (strcmp(host, s->host) != 0) {
        free(s->host);
        s->host = xstrdup(host);
    }
    s->port = port;
    sub_connect_start(s);
}

/* Connect: to host and port, or first ask the sentinels where the primary is. */
static void sub_begin(struct rds_sub *s)
{
    if (s->sentinel == NULL) {
        sub_connect_start(s);
        return;
    }
    s->state = SUB_ASKING;
    s->ask = sentinel_ask(s->sentinel, on_sub_asked, s);
}

/* DOWN: retry. CONNECTING/ROLE/SUBSCRIBING: the deadline passed, or sending failed, or ROLE
 * said no. UP: time to ping, or the ping got no confirmation in time. */
static void on_sub_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rds_sub *s = arg;
    char why[200];
    if (s->state == SUB_DOWN) {
        sub_begin(s);
        return;
    }
    if (s->err[0]) {
        snprintf(why, sizeof why, "%s:%d: %s", s->host, s->port, s->err);
    } else if (s->state == SUB_ROLE) {
        snprintf(why, sizeof why, "ROLE not answered within %d ms", s->connect_timeout_ms);
    } else if (s->state == SUB_CONNECTING) {
        snprintf(why, sizeof why, "no connection within %d ms", s->connect_timeout_ms);
    } else if (s->state == SUB_SUBSCRIBING) {
        snprintf(why, sizeof why, "SUBSCRIBE not confirmed within %d ms", s->connect_timeout_ms);
    } else if (s->ping_out && sub_unread(s) > 0) {
        /* the node was too busy to read: what waits on the socket proves it alive */
        evtimer_in(s->timer, s->timeout_ms);
        return;
    } else if (s->ping_out) {
        snprintf(why, sizeof why, "ping not answered within %d ms", s->timeout_ms);
    } else if (send_subscribe(s, on_sub_reply) == REDIS_OK) {
        s->ping_out = 1;
        evtimer_in(s->timer, s->timeout_ms);
        return;
    } else {
        snprintf(why, sizeof why, "cannot send the ping");
    }
    sub_conn_drop(s);
    sub_went_down(s, why);
}

static void sub_destroy(struct rds_sub *s)
{
    free(s);
}

/* Hand the queue to the user, oldest first. A gap whose connection is gone is stale: the next
 * confirmation brings a gap of its own. */
static void on_sub_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct rds_sub *s = arg;
    s->depth++;
    while (s->head && !s->closing) {
        struct sub_item *it = s->head;
        s->head = it->next;
        if (s->head == NULL)
            s->tail = NULL;
        if (!it->gap) {
            s->on_msg(it->data, it->len, s->ud);
        } else if (it->gen == s->gen && s->state == SUB_UP) {
            s->up = 1;
            if (s->on_gap)
                s->on_gap(s->ud);
        }
        free(it);
    }
    s->depth--;
    if (s->freed && s->depth == 0)
        sub_destroy(s);
}

struct rds_sub *rds_sub_new(struct event_base *base, const struct rds_opts *opts,
                            const char *channel, rds_msg_cb *on_msg, rds_gap_cb *on_gap, void *ud)
{
    struct rds_sub *s = xcalloc(1, sizeof *s);
    s->base = base;
    s->host = xstrdup(opts && opts->host && *opts->host ? opts->host : "127.0.0.1");
    s->port = opts && opts->port > 0 ? opts->port : DEFAULT_PORT;
    s->connect_timeout_ms =
        opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : DEFAULT_CONNECT_MS;
    s->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    s->retry_max_ms =
        opts && opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : DEFAULT_RETRY_MAX_MS;
    if (s->retry_max_ms < RETRY_MIN_MS)
        s->retry_max_ms = RETRY_MIN_MS;
    s->retry_ms = RETRY_MIN_MS;
    s->channel = xstrdup(channel);
    s->chlen = strlen(channel);
    /* A name for CLIENT LIST: bytes a client name cannot hold become '_'. */
    int n = snprintf(s->name, sizeof s->name, "mmo:sub:%s", channel);
    for (int i = 0; i < n && i < (int) sizeof s->name - 1; i++)
        if (s->name[i] <= ' ' || s->name[i] > '~')
            s->name[i] = '_';
    s->on_msg = on_msg;
    s->on_gap = on_gap;
    s->ud = ud;
    s->rng = (unsigned) time(NULL) ^ (unsigned) (uintptr_t) s;
    s->timer = evtimer_new(base, on_sub_timer, s);
    s->deliver = event_new(base, -1, 0, on_sub_deliver, s);
    s->state = SUB_DOWN;
    s->sentinel = opts ? opts->sentinel : NULL;
    sub_begin(s);
    return s;
}

void rds_sub_free(struct rds_sub *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    sentinel_ask_cancel(s->ask);
    s->ask = NULL;
    sub_conn_drop(s);
    while (s->head) {
        struct sub_item *it = s->head;
        s->head = it->next;
        free(it);
    }
    s->tail = NULL;
    event_free(s->timer);
    event_free(s->deliver);
    s->timer = s->deliver = NULL;
    free(s->host);
    free(s->channel);
    s->host = s->channel = NULL;
    if (s->depth > 0)
        s->freed = 1; /* inside a callback: on_sub_deliver frees the struct */
    else
        sub_destroy(s);
}

int rds_sub_up(const struct rds_sub *s)
{
    return s != NULL && s->up && s->state == SUB_UP;
}
