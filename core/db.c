/* db.c -- PostgreSQL pool over libpq's async API, driven by one libevent event_base.
 *
 * Shape. A pool owns `size` connection slots (struct db_conn) and every pending call
 * (struct db_op). A slot is DOWN (no PGconn; maybe a backoff timer), CONNECTING
 * (PQconnectStartParams done, PQconnectPoll driven by socket events and bounded by a timer)
 * or UP. An UP slot is idle, running one query (c->op), or reserved by a db_reserve caller.
 * Calls that find no idle slot wait in a FIFO queue; each call has its own timer that covers
 * the wait and the execution.
 *
 * Nothing here blocks: the socket is watched for what libpq asks (EV_READ always once up,
 * EV_WRITE while PQflush returns 1), results are read with PQconsumeInput/PQisBusy/PQgetResult.
 * There is no PQcancel (it blocks): a query that outlives its timer has its connection closed
 * and made again; the statement_timeout given at connect (query_timeout_ms + 1 s) makes the
 * server stop it too.
 *
 * Callbacks run only from this file's libevent handlers, never from inside an API call: a
 * reservation that can be served at once is handed over through a zero-delay event
 * (op_defer). Handlers count themselves in p->depth, so db_pool_free called from inside a
 * callback closes everything at once but frees memory only when the outermost handler
 * returns.
 *
 * Ownership: the pool owns its slots, the ops (with copies of sql and params) and the
 * PGresults until a callback returns. A reserved slot is lent to the caller until db_release;
 * if the pool is freed first, the slot becomes an orphan (closed, pool == NULL) that
 * db_release frees. */
#include "db.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MIN_MS 100
#define MAX_PARAMS     65535

enum { CS_DOWN, CS_CONNECTING, CS_UP };
enum { OP_QUERY, OP_RESERVE };
enum { OS_QUEUED, OS_RUNNING, OS_DEFERRED, OS_CLOSING, OS_DONE };

struct db_op {
    struct db_pool *pool;
    struct db_op *prev, *next;   /* pool->ops: every op not yet finished */
    struct db_op *qprev, *qnext; /* pool's wait queue, while OS_QUEUED */
    struct db_conn *conn;        /* running on it (query) or handed over (reserve, deferred) */
    struct event *ev;            /* the timeout; also fires a deferred completion */
    PGresult *res;               /* owned: result being collected while running */
    int kind, state, status;
    int canceled; /* running query whose callback must never fire */
    db_result_cb *qcb;
    db_reserve_cb *rcb;
    void *ud;
    int nparams;
    const char **params; /* into the same allocation as the op */
    const char *sql;     /* same */
    double started;      /* monotonic seconds when it was asked for (metrics) */
};

struct db_conn {
    struct db_pool *pool; /* NULL once orphaned (pool freed while reserved) */
    int id;
    PGconn *pg;          /* owned; NULL while DOWN */
    struct event *io;    /* socket watch, reassigned when the socket or the interest changes */
    struct event *timer; /* connect timeout while CONNECTING, backoff while DOWN */
    int state;
    int io_fd;
    short io_flags;
    int reserved; /* lent to a db_reserve caller (or being handed over) */
    int released; /* db_release while the pool was closing: free with the pool */
    int failed;   /* the last attempt failed: not counted as available; backoff applies */
    int down;     /* a loss or failure was logged: log the recovery once up */
    int backoff_ms;
    struct db_op *op; /* query running on it */
};

struct db_pool {
    struct event_base *base; /* borrowed */
    PQconninfoOption *info;  /* owned: the parsed conninfo; keys/vals point into it */
    const char **keys, **vals;
    char *options; /* owned: the user's options plus statement_timeout */
    int size, connect_timeout_ms, query_timeout_ms, reconnect_max_ms;
    struct db_conn **conns;
    struct db_op *ops;
    struct db_op *qhead, *qtail;
    int nwaiting;
    db_query_observer *observe; /* told of every query finished (metrics) */
    void *observe_ud;
    int available; /* as last logged */
    int depth;     /* handlers of this pool on the stack */
    int closing;
};

static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void op_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* libpq's message on one line (runs of whitespace become one space), in buf. */
static const char *pq_msg(const PGconn *pg, char *buf, size_t cap)
{
    const char *m = pg ? PQerrorMessage(pg) : NULL;
    if (m == NULL || *m == '\0')
        m = "unknown error";
    size_t o = 0;
    for (; *m && o + 1 < cap; m++) {
        int space = *m == ' ' || *m == '\n' || *m == '\t' || *m == '\r';
        if (space && (o == 0 || buf[o - 1] == ' '))
            continue;
        buf[o++] = space ? ' ' : *m;
    }
    while (o > 0 && buf[o - 1] == ' ')
        o--;
    buf[o] = '\0';
    return buf;
}

static void notice_cb(void *arg, const char *msg)
{
    /* NOTICEs and the FATAL a server sends to an idle session; the text may quote data, so
     * only at debug level. */
    struct db_conn *c = arg;
    log_debug("db", "connection %d: notice: %.200s", c->id, msg);
}

/* ---- ops ---------------------------------------------------------------------------------- */

static int param_len(const char *const *params, const int *lengths, int i)
{
    if (params[i] == NULL)
        return 0;
    return lengths ? lengths[i] : (int) strlen(params[i]);
}

/* Copies sql and params into one allocation. Returns NULL if a parameter holds a NUL byte
 * (text parameters cannot carry one). */
static struct db_op *op_new(struct db_pool *p, int kind, const char *sql, int nparams,
                            const char *const *params, const int *lengths, int timeout_ms)
{
    size_t sqllen = sql ? strlen(sql) : 0;
    size_t size = sizeof(struct db_op) + (size_t) nparams * sizeof(char *) + sqllen + 1;
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL)
            continue;
        int len = param_len(params, lengths, i);
        if (len < 0 || memchr(params[i], '\0', (size_t) len) != NULL)
            return NULL;
        size += (size_t) len + 1;
    }
    struct db_op *op = xcalloc(1, size);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    op->started = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
    op->params = (const char **) (op + 1);
    char *s = (char *) (op->params + nparams);
    op->sql = s;
    memcpy(s, sql ? sql : "", sqllen + 1);
    s += sqllen + 1;
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL)
            continue;
        size_t len = (size_t) param_len(params, lengths, i);
        memcpy(s, params[i], len);
        s[len] = '\0';
        op->params[i] = s;
        s += len + 1;
    }
    op->pool = p;
    op->kind = kind;
    op->nparams = nparams;
    op->ev = event_new(p->base, -1, 0, op_timer_cb, op);
    struct timeval tv = ms_tv(timeout_ms > 0 ? timeout_ms : p->query_timeout_ms);
    event_add(op->ev, &tv);
    op->next = p->ops;
    if (p->ops)
        p->ops->prev = op;
    p->ops = op;
    return op;
}

static void op_unlink(struct db_op *op)
{
    struct db_pool *p = op->pool;
    if (op->prev)
        op->prev->next = op->next;
    else if (p->ops == op)
        p->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void op_free(struct db_op *op)
{
    op_unlink(op);
    event_free(op->ev);
    PQclear(op->res);
    free(op);
}

static void queue_push(struct db_pool *p, struct db_op *op, int front)
{
    op->state = OS_QUEUED;
    if (front) {
        op->qnext = p->qhead;
        op->qprev = NULL;
        if (p->qhead)
            p->qhead->qprev = op;
        else
            p->qtail = op;
        p->qhead = op;
    } else {
        op->qprev = p->qtail;
        op->qnext = NULL;
        if (p->qtail)
            p->qtail->qnext = op;
        else
            p->qhead = op;
        p->qtail = op;
    }
    p->nwaiting++;
}

static void queue_remove(struct db_pool *p, struct db_op *op)
{
    if (op->qprev)
        op->qprev->qnext = op->qnext;
    else
        p->qhead = op->qnext;
    if (op->qnext)
        op->qnext->qprev = op->qprev;
    else
        p->qtail = op->qprev;
    op->qprev = op->qnext = NULL;
    p->nwaiting--;
}

/* Fire op's callback (unless canceled) and free it. Only from handlers or db_pool_free. res is
 * borrowed; the caller clears it. */
static void op_finish(struct db_op *op, PGresult *res, int status)
{
    op_unlink(op);
    op->state = OS_DONE;
    if (op->kind == OP_QUERY && op->pool && op->pool->observe) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t = (double) now.tv_sec + (double) now.tv_nsec / 1e9;
        op->pool->observe(op->sql, status, t - op->started, op->pool->observe_ud);
    }
    if (!op->canceled) {
        if (op->kind == OP_QUERY)
            op->qcb(status == 0 || status == ERR_QUERY ? res : NULL, status, op->ud);
        else
            op->rcb(status == 0 ? op->conn : NULL, status, op->ud);
    }
    op_free(op);
}

/* Complete op on the next loop turn, with op->status (and op->conn for a reservation). */
static void op_defer(struct db_op *op, int status)
{
    event_del(op->ev);
    op->state = OS_DEFERRED;
    op->status = status;
    event_active(op->ev, EV_TIMEOUT, 1);
}

/* ---- connections -------------------------------------------------------------------------- */

static int pool_available(const struct db_pool *p)
{
    if (p->closing)
        return 0;
    for (int i = 0; i < p->size; i++) {
        const struct db_conn *c = p->conns[i];
        if (c->state == CS_UP || (c->state == CS_CONNECTING && !c->failed))
            return 1;
    }
    return 0;
}

/* Watch c's socket for flags. force: re-register even if nothing seems to have changed (while
 * connecting, libpq may close the socket and open another with the same number). */
static void conn_watch(struct db_conn *c, short flags, int force)
{
    int fd = c->pg ? PQsocket(c->pg) : -1;
    if (!force && fd == c->io_fd && flags == c->io_flags)
        return;
    event_del(c->io);
    c->io_fd = fd;
    c->io_flags = flags;
    if (fd < 0 || flags == 0)
        return;
    event_assign(c->io, c->pool->base, fd, flags | EV_PERSIST, conn_io_cb, c);
    event_add(c->io, NULL);
}

/* Drop the PGconn; no callback, no reconnect. */
static void conn_close(struct db_conn *c)
{
    event_del(c->io);
    c->io_fd = -1;
    c->io_flags = 0;
    event_del(c->timer);
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->state = CS_DOWN;
}

static void conn_connect(struct db_conn *c);

static void conn_attempt_failed(struct db_conn *c, const char *why)
{
    struct db_pool *p = c->pool;
    if (!c->down)
        log_warn("db", "connection %d: cannot connect: %s", c->id, why);
    c->down = 1;
    c->failed = 1;
    conn_close(c);
    struct timeval tv = ms_tv(c->backoff_ms);
    c->backoff_ms =
        c->backoff_ms * 2 < p->reconnect_max_ms ? c->backoff_ms * 2 : p->reconnect_max_ms;
    event_add(c->timer, &tv);
}

/* Start a connection attempt now; an immediate failure starts the backoff. */
static void conn_connect(struct db_conn *c)
{
    struct db_pool *p = c->pool;
    char buf[256];
    if (p->keys == NULL) {
        c->failed = c->down = 1; /* invalid conninfo, logged once by db_pool_new */
        return;
    }
    c->pg = PQconnectStartParams(p->keys, p->vals, 0);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_attempt_failed(c, c->pg ? pq_msg(c->pg, buf, sizeof buf) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->pg, notice_cb, c);
    c->state = CS_CONNECTING;
    conn_watch(c, EV_WRITE, 1); /* as if PQconnectPoll had said PGRES_POLLING_WRITING */
    struct timeval tv = ms_tv(p->connect_timeout_ms);
    event_add(c->timer, &tv);
}

/* The slot went down outside a reservation or came back from one: connect now, or after the
 * backoff if it is failing. */
static void conn_restart(struct db_conn *c)
{
    if (c->failed && c->pool->keys) {
        struct timeval tv = ms_tv(c->backoff_ms);
        event_add(c->timer, &tv);
    } else {
        conn_connect(c);
    }
}

/* Close a connection in an unknown state and make a new one (not counted as a failure). */
static void conn_reset(struct db_conn *c)
{
    conn_close(c);
    if (!c->reserved)
        conn_connect(c);
}

/* The server or the network dropped c: close it and try again at once (that attempt still
 * counts as available; if it fails, the backoff starts). A reserved slot stays down until
 * db_release. Fires no callback. */
static void conn_drop(struct db_conn *c, const char *why)
{
    log_warn("db", "connection %d lost: %s", c->id, why);
    conn_close(c);
    c->down = 1;
    c->failed = 0;
    if (!c->reserved)
        conn_connect(c);
}

/* conn_drop, and a query running on c completes with ERR_UNAVAILABLE (handlers only). */
static void conn_lost(struct db_conn *c, const char *why)
{
    struct db_op *op = c->op;
    c->op = NULL;
    conn_drop(c, why);
    if (op) {
        op->conn = NULL;
        op_finish(op, NULL, ERR_UNAVAILABLE);
    }
}

static int conn_idle(const struct db_conn *c)
{
    return c->state == CS_UP && !c->reserved && c->op == NULL;
}

/* Send op on c. Returns 0 (results come through conn_io_cb), or -1 if libpq refused it. */
static int conn_send(struct db_conn *c, struct db_op *op)
{
    if (!PQsendQueryParams(c->pg, op->sql, op->nparams, NULL, op->params, NULL, NULL, 0))
        return -1;
    op->state = OS_RUNNING;
    op->conn = c;
    c->op = op;
    /* 1: the rest goes when writable; -1: the next event reports the broken connection. */
    conn_watch(c, PQflush(c->pg) == 0 ? EV_READ : EV_READ | EV_WRITE, 0);
    return 0;
}

static struct db_conn *pool_idle_conn(struct db_pool *p)
{
    for (int i = 0; i < p->size; i++)
        if (conn_idle(p->conns[i]))
            return p->conns[i];
    return NULL;
}

/* Give idle connections to waiting calls, oldest first. Never fires a callback. */
static void pool_dispatch(struct db_pool *p)
{
    char buf[256];
    struct db_conn *c;
    while (!p->closing && p->qhead && (c = pool_idle_conn(p)) != NULL) {
        struct db_op *op = p->qhead;
        queue_remove(p, op);
        if (op->kind == OP_RESERVE) {
            c->reserved = 1;
            op->conn = c;
            op_defer(op, 0);
        } else if (conn_send(c, op) < 0) {
            queue_push(p, op, 1); /* never reached the server: wait for another connection */
            conn_drop(c, pq_msg(c->pg, buf, sizeof buf));
        }
    }
}

/* After every handler: log availability changes; with no connection left, fail the queue. */
static void pool_check(struct db_pool *p)
{
    if (p->closing)
        return;
    int avail = pool_available(p);
    if (avail != p->available) {
        p->available = avail;
        if (avail)
            log_info("db", "postgresql available again");
        else
            log_warn("db", "postgresql unavailable: no connection up");
    }
    while (!avail && p->qhead && !p->closing) {
        struct db_op *op = p->qhead;
        queue_remove(p, op);
        op_finish(op, NULL, ERR_UNAVAILABLE);
    }
}

static void pool_destroy(struct db_pool *p);

static void pool_leave(struct db_pool *p)
{
    pool_check(p);
    if (--p->depth == 0 && p->closing)
        pool_destroy(p);
}

static void conn_up(struct db_conn *c)
{
    char buf[256];
    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_attempt_failed(c, pq_msg(c->pg, buf, sizeof buf));
        return;
    }
    event_del(c->timer);
    c->state = CS_UP;
    if (c->down)
        log_info("db", "connection %d reconnected", c->id);
    c->failed = c->down = 0;
    c->backoff_ms = BACKOFF_MIN_MS;
    conn_watch(c, EV_READ, 1);
    if (c->reserved)
        return; /* cannot happen: reserved slots do not reconnect */
    pool_dispatch(c->pool);
}

static void conn_poll(struct db_conn *c)
{
    char buf[256];
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING: conn_watch(c, EV_READ, 1); break;
    case PGRES_POLLING_WRITING: conn_watch(c, EV_WRITE, 1); break;
    case PGRES_POLLING_OK: conn_up(c); break;
    default: conn_attempt_failed(c, pq_msg(c->pg, buf, sizeof buf)); break;
    }
}

/* An error that means the session is gone, not that the statement was rejected. */
static int result_is_fatal(const PGconn *pg, const PGresult *res)
{
    if (PQstatus(pg) != CONNECTION_OK)
        return 1;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        return 1;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0);
}

/* Collect the results of c's query; when complete, fire its callback. Must be the last thing
 * a handler does with c: the callback may release, reset or free it. */
static void conn_read(struct db_conn *c)
{
    struct db_pool *p = c->pool;
    struct db_op *op = c->op;
    char buf[256];
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
    if (op == NULL) {
        if (PQstatus(c->pg) != CONNECTION_OK)
            conn_lost(c, pq_msg(c->pg, buf, sizeof buf));
        return;
    }
    int done = 0, copy = 0;
    while (!done && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            done = 1;
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        if (op->res == NULL || PQresultStatus(op->res) != PGRES_FATAL_ERROR) {
            PQclear(op->res);
            op->res = r; /* keep the last result, or the first error */
        } else {
            PQclear(r);
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            done = copy = 1; /* COPY is not supported here; the session is dropped */
    }
    if (!done)
        return;
    PGresult *res = op->res;
    op->res = NULL;
    int status = ERR_UNAVAILABLE;
    if (res != NULL && !copy) {
        switch (PQresultStatus(res)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
        case PGRES_SINGLE_TUPLE: status = 0; break;
        case PGRES_FATAL_ERROR:
            status = result_is_fatal(c->pg, res) ? ERR_UNAVAILABLE : ERR_QUERY;
            break;
        default: break;
        }
    } else if (copy) {
        status = ERR_QUERY;
    }
    if (status == ERR_UNAVAILABLE) {
        PQclear(res);
        conn_lost(c, pq_msg(c->pg, buf, sizeof buf)); /* fires op */
        return;
    }
    c->op = NULL;
    op->conn = NULL;
    if (copy)
        conn_reset(c);
    else if (!c->reserved)
        pool_dispatch(p); /* the next waiter goes before this callback can queue more */
    op_finish(op, res, status);
    PQclear(res);
}

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    struct db_pool *p = c->pool;
    char buf[256];
    p->depth++;
    if (c->state == CS_CONNECTING) {
        conn_poll(c);
    } else if (c->state == CS_UP) {
        int ok = 1;
        if ((what & EV_READ) && !PQconsumeInput(c->pg))
            ok = 0;
        if (ok && (c->io_flags & EV_WRITE)) {
            int f = PQflush(c->pg);
            if (f < 0)
                ok = 0;
            else if (f == 0)
                conn_watch(c, EV_READ, 0);
        }
        if (ok)
            conn_read(c);
        else
            conn_lost(c, pq_msg(c->pg, buf, sizeof buf));
    }
    pool_leave(p);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    struct db_pool *p = c->pool;
    p->depth++;
    if (c->state == CS_CONNECTING)
        conn_attempt_failed(c, "connect timeout");
    else if (c->state == CS_DOWN && !c->reserved)
        conn_connect(c);
    pool_leave(p);
}

static void op_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_op *op = arg;
    struct db_pool *p = op->pool;
    p->depth++;
    switch (op->state) {
    case OS_DEFERRED: op_finish(op, NULL, op->status); break;
    case OS_QUEUED:
        queue_remove(p, op);
        op_finish(op, NULL, ERR_TIMEOUT);
        break;
    case OS_RUNNING: {
        struct db_conn *c = op->conn;
        log_debug("db", "connection %d: query timed out; reconnecting", c->id);
        c->op = NULL;
        op->conn = NULL;
        conn_reset(c);
        op_finish(op, NULL, ERR_TIMEOUT);
        break;
    }
    default: break;
    }
    pool_leave(p);
}

/* ---- pool ---------------------------------------------------------------------------------- */

/* Parse conninfo once; keys/vals then feed every PQconnectStartParams. The user's settings
 * are kept and -c statement_timeout is appended to their `options` (unless they set one). */
static void pool_params(struct db_pool *p, const char *conninfo)
{
    char *err = NULL;
    p->info = PQconninfoParse(conninfo ? conninfo : "", &err);
    if (p->info == NULL) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", err ? err : "out of memory");
        buf[strcspn(buf, "\n")] = '\0';
        log_error("db", "invalid pg conninfo: %s", buf);
        PQfreemem(err);
        return;
    }
    int n = 0;
    for (PQconninfoOption *o = p->info; o->keyword; o++)
        n++;
    p->keys = xcalloc((size_t) n + 3, sizeof(char *));
    p->vals = xcalloc((size_t) n + 3, sizeof(char *));
    const char *user_opts = NULL, *appname = NULL;
    int k = 0;
    for (PQconninfoOption *o = p->info; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "options") == 0) {
            user_opts = o->val;
            continue;
        }
        if (strcmp(o->keyword, "fallback_application_name") == 0)
            appname = o->val;
        p->keys[k] = o->keyword;
        p->vals[k++] = o->val;
    }
    if (user_opts && strstr(user_opts, "statement_timeout")) {
        p->options = xstrdup(user_opts);
    } else {
        const char *sep = user_opts ? " " : "";
        int len = snprintf(NULL, 0, "%s%s-c statement_timeout=%d", user_opts ? user_opts : "", sep,
                           p->query_timeout_ms + 1000);
        p->options = xmalloc((size_t) len + 1);
        snprintf(p->options, (size_t) len + 1, "%s%s-c statement_timeout=%d",
                 user_opts ? user_opts : "", sep, p->query_timeout_ms + 1000);
    }
    p->keys[k] = "options";
    p->vals[k++] = p->options;
    if (appname == NULL) {
        p->keys[k] = "fallback_application_name";
        p->vals[k++] = "mmo";
    }
}

struct db_pool *db_pool_new(struct event_base *base, const struct db_opts *opts)
{
    struct db_pool *p = xcalloc(1, sizeof *p);
    p->base = base;
    p->size = opts->size > 0 ? opts->size : 1;
    p->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
    p->query_timeout_ms = opts->query_timeout_ms > 0 ? opts->query_timeout_ms : 5000;
    p->reconnect_max_ms = opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : 5000;
    if (p->reconnect_max_ms < BACKOFF_MIN_MS)
        p->reconnect_max_ms = BACKOFF_MIN_MS;
    p->available = 1;
    pool_params(p, opts->conninfo);
    p->conns = xcalloc((size_t) p->size, sizeof *p->conns);
    for (int i = 0; i < p->size; i++) {
        struct db_conn *c = xcalloc(1, sizeof *c);
        c->pool = p;
        c->id = i;
        c->io_fd = -1;
        c->backoff_ms = BACKOFF_MIN_MS;
        c->io = event_new(base, -1, 0, conn_io_cb, c);
        c->timer = event_new(base, -1, 0, conn_timer_cb, c);
        p->conns[i] = c;
    }
    for (int i = 0; i < p->size; i++)
        conn_connect(p->conns[i]);
    return p;
}

static void pool_destroy(struct db_pool *p)
{
    for (int i = 0; i < p->size; i++) {
        struct db_conn *c = p->conns[i];
        event_free(c->io);
        event_free(c->timer);
        c->io = c->timer = NULL;
        if (c->reserved && !c->released)
            c->pool = NULL; /* the holder frees it in db_release */
        else
            free(c);
    }
    free(p->conns);
    free(p->keys);
    free(p->vals);
    free(p->options);
    PQconninfoFree(p->info);
    free(p);
}

void db_pool_free(struct db_pool *p)
{
    if (p == NULL || p->closing)
        return;
    p->closing = 1;
    p->depth++;
    for (int i = 0; i < p->size; i++) {
        p->conns[i]->op = NULL;
        conn_close(p->conns[i]);
    }
    p->qhead = p->qtail = NULL;
    p->nwaiting = 0;
    for (struct db_op *op = p->ops; op; op = op->next) {
        event_del(op->ev);
        if (op->kind == OP_RESERVE && op->conn) {
            op->conn->reserved = 0; /* never handed over */
            op->conn = NULL;
        }
        op->conn = NULL;
        op->state = OS_CLOSING;
    }
    /* Callbacks may cancel other ops or release connections: take one op at a time. */
    while (p->ops)
        op_finish(p->ops, NULL, ERR_CLOSED);
    if (--p->depth == 0)
        pool_destroy(p);
}

int db_pool_up(const struct db_pool *p)
{
    int n = 0;
    for (int i = 0; i < p->size; i++)
        n += p->conns[i]->state == CS_UP;
    return n;
}

int db_pool_waiting(const struct db_pool *p)
{
    return p->nwaiting;
}

void db_pool_observe(struct db_pool *p, db_query_observer *cb, void *ud)
{
    p->observe = cb;
    p->observe_ud = ud;
}

/* ---- calls --------------------------------------------------------------------------------- */

int db_query(struct db_pool *p, const char *sql, int nparams, const char *const *params,
             const int *lengths, int timeout_ms, db_result_cb *cb, void *ud, struct db_op **op)
{
    if (op)
        *op = NULL;
    if (p->closing)
        return ERR_CLOSED;
    if (sql == NULL || cb == NULL || nparams < 0 || nparams > MAX_PARAMS ||
        (nparams > 0 && params == NULL))
        return ERR_INVALID;
    if (!pool_available(p))
        return ERR_UNAVAILABLE;
    struct db_op *o = op_new(p, OP_QUERY, sql, nparams, params, lengths, timeout_ms);
    if (o == NULL)
        return ERR_INVALID;
    o->qcb = cb;
    o->ud = ud;
    queue_push(p, o, 0);
    pool_dispatch(p);
    if (op)
        *op = o;
    return 0;
}

int db_reserve(struct db_pool *p, int timeout_ms, db_reserve_cb *cb, void *ud, struct db_op **op)
{
    if (op)
        *op = NULL;
    if (p->closing)
        return ERR_CLOSED;
    if (cb == NULL)
        return ERR_INVALID;
    if (!pool_available(p))
        return ERR_UNAVAILABLE;
    struct db_op *o = op_new(p, OP_RESERVE, NULL, 0, NULL, NULL, timeout_ms);
    o->rcb = cb;
    o->ud = ud;
    queue_push(p, o, 0);
    pool_dispatch(p);
    if (op)
        *op = o;
    return 0;
}

int db_conn_query(struct db_conn *c, const char *sql, int nparams, const char *const *params,
                  const int *lengths, int timeout_ms, db_result_cb *cb, void *ud, struct db_op **op)
{
    char buf[256];
    if (op)
        *op = NULL;
    struct db_pool *p = c->pool;
    if (p == NULL || p->closing || !c->reserved || c->released)
        return ERR_CLOSED;
    if (sql == NULL || cb == NULL || nparams < 0 || nparams > MAX_PARAMS ||
        (nparams > 0 && params == NULL))
        return ERR_INVALID;
    if (c->op)
        return ERR_BUSY;
    if (c->state != CS_UP)
        return ERR_CLOSED;
    struct db_op *o = op_new(p, OP_QUERY, sql, nparams, params, lengths, timeout_ms);
    if (o == NULL)
        return ERR_INVALID;
    o->qcb = cb;
    o->ud = ud;
    if (conn_send(c, o) < 0) {
        op_free(o);
        conn_drop(c, pq_msg(c->pg, buf, sizeof buf)); /* reserved: down until db_release */
        return ERR_CLOSED;
    }
    if (op)
        *op = o;
    return 0;
}

void db_release(struct db_conn *c, int broken)
{
    struct db_pool *p = c->pool;
    if (p == NULL) {
        free(c); /* orphan: its pool is gone */
        return;
    }
    if (!c->reserved || c->released)
        return;
    if (p->closing) {
        c->released = 1; /* pool_destroy frees it */
        return;
    }
    if (c->op) {
        struct db_op *op = c->op;
        c->op = NULL;
        op_free(op); /* its callback never fires */
        broken = 1;
    }
    c->reserved = 0;
    if (c->state == CS_UP) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if (!broken && ts != PQTRANS_IDLE)
            log_warn("db", "connection %d released inside a transaction; closing it", c->id);
        if (broken || ts != PQTRANS_IDLE)
            conn_reset(c);
    } else if (c->state == CS_DOWN) {
        conn_restart(c);
    }
    pool_dispatch(p);
}

void db_op_cancel(struct db_op *op)
{
    if (op == NULL)
        return;
    struct db_pool *p = op->pool;
    switch (op->state) {
    case OS_QUEUED:
        queue_remove(p, op);
        op_free(op);
        break;
    case OS_DEFERRED: {
        struct db_conn *c = op->kind == OP_RESERVE ? op->conn : NULL;
        op_free(op);
        if (c) {
            c->reserved = 1; /* hand the unused reservation back */
            db_release(c, 0);
        }
        break;
    }
    case OS_RUNNING: op->canceled = 1; break; /* finishes (silently) with the query */
    case OS_CLOSING: op_free(op); break;
    default: break;
    }
}
