/* ops.c -- /healthz, /readyz and /metrics.
 *
 * /readyz asks PostgreSQL (select 1) and Redis (PING) for real, each with a timeout, and says
 * how long each took. The checks cannot be used to flood them: one probe of each runs at a
 * time (requests that come meanwhile wait for it), and a result is used again for a while
 * (READY_FRESH_OK / READY_FRESH_FAIL). A pool with no connection up is down without asking.
 * /healthz (alive) says how long the last turn of the event loop took that it measured (a
 * timer due at once, armed by the /healthz before). */
#include "ops.h"
#include "db.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "rds.h"
#include "script.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READY_TIMEOUT_MS 1000 /* a probe not answered by then fails its check */
#define READY_FRESH_OK   1.0  /* seconds a passed check is used again without asking */
#define READY_FRESH_FAIL 0.25 /* and a failed one (a pool not connected: never) */
#define LOOP_SLOW_MS     100  /* /healthz: a loop turn longer than this is "slow" */
#define CHECK_NEVER      1    /* check status: not run yet */

/* One dependency's check: its last result, or the probe running. */
struct check {
    int status;       /* 0: passed; an ERR_* (why it failed); CHECK_NEVER */
    const char *why;  /* static: what failed, for a failed check */
    double ms;        /* how long the probe took */
    double at, until; /* monotonic seconds: when it ended, until when it may be used again */
    double started;
    int running;
};

/* Requests waiting for a check (each answered exactly once). */
struct waitlist {
    struct http_req **req;
    int n, cap;
};

struct ops {
    char *node_id;
    struct db_pool *db;
    struct rds *rds;
    struct extra_rds {
        char name[40];
        struct rds *rds;
    } extra[15]; /* the other Redis instances: their connection must be up */
    int nextra;
    char *layout;         /* the node's sorted instance names; NULL: not checked */
    char layout_why[400]; /* why the Redis check failed on the layout */
    struct script *script;
    ops_next_cb *next;
    void *next_ud;
    int draining;
    time_t started;
    struct metrics *metrics;
    /* /readyz */
    struct check pg, rd;
    struct db_op *pg_op;
    struct rds_op *rd_op;
    struct waitlist ready_wait;
    /* /healthz: a timer due now measures a turn of the loop */
    struct event *loop_ev;
    double loop_started, loop_at, loop_ms;
    int loop_armed;
    /* /metrics allow-list: networks (address, prefix length); none: everyone */
    struct allow {
        int family;
        unsigned char addr[16];
        int bits;
    } allow[32];
    int nallow;
};

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static void wait_push(struct waitlist *w, struct http_req *req)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 8;
        w->req = xrealloc(w->req, sizeof *w->req * (size_t) w->cap);
    }
    w->req[w->n++] = req;
}

/* Take the list's requests away from it (answering one may dispatch the next request of its
 * connection, which may wait again: on a fresh list). */
static struct waitlist wait_take(struct waitlist *w)
{
    struct waitlist t = *w;
    memset(w, 0, sizeof *w);
    return t;
}

struct ops *ops_new(const char *node_id, struct db_pool *db, struct rds *rds, struct script *script,
                    ops_next_cb *next, void *next_ud)
{
    struct ops *o = xcalloc(1, sizeof *o);
    char esc[128];
    log_json_escape(esc, sizeof esc, node_id, strlen(node_id));
    o->node_id = xstrdup(esc);
    o->db = db;
    o->rds = rds;
    o->script = script;
    o->next = next;
    o->next_ud = next_ud;
    o->started = time(NULL);
    o->pg.status = o->rd.status = CHECK_NEVER;
    o->loop_ms = -1;
    return o;
}

static void answer_ready(struct ops *o, struct http_req *req);

void ops_set_layout(struct ops *o, const char *layout)
{
    free(o->layout);
    o->layout = xstrdup(layout);
}

void ops_watch_redis(struct ops *o, const char *name, struct rds *rds)
{
    if (o->nextra >= (int) (sizeof o->extra / sizeof o->extra[0]))
        return;
    struct extra_rds *e = &o->extra[o->nextra++];
    log_json_escape(e->name, sizeof e->name, name, strlen(name));
    e->rds = rds;
}

/* ,"instances":{"name":{"status":..,"addr":..[,"error":..]},..} of the other Redis instances
 * into buf; *ok cleared when one is down. */
static int put_extra(const struct ops *o, char *buf, size_t cap, int *ok)
{
    if (o->nextra == 0)
        return 0;
    int n = snprintf(buf, cap, ",\"instances\":{");
    for (int i = 0; i < o->nextra && n > 0 && (size_t) n < cap; i++) {
        const struct extra_rds *e = &o->extra[i];
        int up = rds_up(e->rds);
        char addr[300], esc[320], why[400];
        rds_addr(e->rds, addr, sizeof addr);
        log_json_escape(esc, sizeof esc, addr, strlen(addr));
        n += snprintf(buf + n, cap - (size_t) n, "%s\"%s\":{\"status\":\"%s\",\"addr\":\"%s\"",
                      i ? "," : "", e->name, up ? "ok" : "down", esc);
        if (!up && n > 0 && (size_t) n < cap) {
            const char *w = rds_down_reason(e->rds);
            log_json_escape(why, sizeof why, w, strlen(w));
            n += snprintf(buf + n, cap - (size_t) n, ",\"error\":\"%s\"", why);
        }
        if (n > 0 && (size_t) n < cap)
            n += snprintf(buf + n, cap - (size_t) n, "}");
        *ok &= up;
    }
    if (n > 0 && (size_t) n < cap)
        n += snprintf(buf + n, cap - (size_t) n, "}");
    return n;
}

void ops_free(struct ops *o)
{
    if (o == NULL)
        return;
    /* requests still waiting were dropped by http_server_free: not answered here */
    if (o->pg_op)
        db_op_cancel(o->pg_op);
    if (o->rd_op)
        rds_op_cancel(o->rd_op);
    if (o->loop_ev)
        event_free(o->loop_ev);
    free(o->ready_wait.req);
    free(o->layout);
    free(o->node_id);
    free(o);
}

void ops_set_draining(struct ops *o)
{
    o->draining = 1;
    /* nobody waits on a probe past the drain: answered now, as draining */
    struct waitlist r = wait_take(&o->ready_wait);
    for (int i = 0; i < r.n; i++)
        answer_ready(o, r.req[i]);
    free(r.req);
}

int ops_set_metrics(struct ops *o, struct metrics *m, const char *allow, char *err, size_t cap)
{
    o->metrics = m;
    o->nallow = 0;
    const char *p = allow ? allow : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        char item[64];
        size_t n = strcspn(p, ", ");
        if (n >= sizeof item || o->nallow >= 32) {
            snprintf(err, cap, "metrics.allow: at most 32 entries of an address or a CIDR");
            return -1;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        p += n;
        struct allow *a = &o->allow[o->nallow];
        char *slash = strchr(item, '/');
        if (slash)
            *slash = '\0';
        if (inet_pton(AF_INET, item, a->addr) == 1)
            a->family = AF_INET, a->bits = 32;
        else if (inet_pton(AF_INET6, item, a->addr) == 1)
            a->family = AF_INET6, a->bits = 128;
        else {
            snprintf(err, cap, "metrics.allow: %s is not an address", item);
            return -1;
        }
        if (slash) {
            char *end;
            long b = strtol(slash + 1, &end, 10);
            if (*end || b < 0 || b > a->bits) {
                snprintf(err, cap, "metrics.allow: bad prefix length in %s/%s", item, slash + 1);
                return -1;
            }
            a->bits = (int) b;
        }
        o->nallow++;
    }
    return 0;
}

static int allowed(const struct ops *o, const char *ip)
{
    if (o->nallow == 0)
        return 1;
    unsigned char a4[4], a6[16];
    for (int i = 0; i < o->nallow; i++) {
        const struct allow *a = &o->allow[i];
        const unsigned char *x = NULL;
        if (a->family == AF_INET && inet_pton(AF_INET, ip, a4) == 1)
            x = a4;
        else if (a->family == AF_INET6 && inet_pton(AF_INET6, ip, a6) == 1)
            x = a6;
        if (x == NULL)
            continue;
        int full = a->bits / 8, rest = a->bits % 8;
        if (memcmp(x, a->addr, (size_t) full) != 0)
            continue;
        if (rest && ((x[full] ^ a->addr[full]) & (0xff << (8 - rest))))
            continue;
        return 1;
    }
    return 0;
}

static void metrics_page(struct ops *o, struct http_req *req)
{
    if (o->metrics == NULL) {
        http_respond_error(req, 404, "not_found", "no such route");
        return;
    }
    if (!allowed(o, req->remote_ip)) {
        http_respond_error(req, 403, "forbidden", "this address may not read the metrics");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    metrics_render(o->metrics, b);
    size_t n = evbuffer_get_length(b);
    const char *text = (const char *) evbuffer_pullup(b, -1);
    http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, n,
                 "Cache-Control: no-store\r\n", 25);
    evbuffer_free(b);
}

static int is(const struct http_req *req, const char *path)
{
    size_t n = strlen(path);
    return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static int is_get(const struct http_req *req)
{
    return (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0) ||
           (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0);
}

/* ---- /healthz ------------------------------------------------------------------------- */

static void on_loop_turn(evutil_socket_t fd, short what, void *arg)
{
    struct ops *o = arg;
    o->loop_at = mono();
    o->loop_ms = (o->loop_at - o->loop_started) * 1000;
    o->loop_armed = 0;
    (void) fd;
    (void) what;
}

/* Answered at once (no waiting: /healthz stays as cheap as it was), with the last turn of the
 * loop measured; and the next one measured: a timer due now, which fires after the loop has
 * gone through what is ready (at most one such timer at a time). */
static void healthz(struct ops *o, struct http_req *req)
{
    double now = mono();
    if (!o->loop_armed && !o->draining) {
        if (o->loop_ev == NULL)
            o->loop_ev = evtimer_new(http_req_base(req), on_loop_turn, o);
        o->loop_started = now;
        o->loop_armed = 1;
        struct timeval zero = {0, 0};
        evtimer_add(o->loop_ev, &zero);
    }
    char body[384], loop[128];
    if (o->loop_ms < 0)
        snprintf(loop, sizeof loop, "{\"status\":\"unknown\"}");
    else
        snprintf(loop, sizeof loop, "{\"status\":\"%s\",\"ms\":%.3f,\"age_ms\":%.0f}",
                 o->loop_ms > LOOP_SLOW_MS ? "slow" : "ok", o->loop_ms,
                 floor((now - o->loop_at) * 1000));
    int n = snprintf(body, sizeof body,
                     "{\"status\":\"ok\",\"node\":\"%s\",\"uptime_s\":%ld,"
                     "\"checks\":{\"loop\":%s}}",
                     o->node_id, (long) (time(NULL) - o->started), loop);
    http_respond(req, 200, "application/json", body, (size_t) n, "Cache-Control: no-store\r\n", 25);
}

/* ---- /readyz -------------------------------------------------------------------------- */

static void check_done(struct check *c, int status, const char *why, double now)
{
    c->running = 0;
    c->status = status;
    c->why = status == 0 ? NULL : why ? why : err_str(status);
    c->ms = (now - c->started) * 1000;
    c->at = now;
    c->until = now + (status == 0 ? READY_FRESH_OK : READY_FRESH_FAIL);
}

/* A check that fails without asking (no connection up): not used again. why: borrowed until
 * the answer is written (this turn of the loop), or NULL. */
static void check_down(struct check *c, double now, const char *why)
{
    c->started = now;
    check_done(c, ERR_UNAVAILABLE, why && why[0] ? why : "not connected", now);
    c->until = now;
}

static void probes_done(struct ops *o)
{
    if (o->pg.running || o->rd.running)
        return;
    struct waitlist r = wait_take(&o->ready_wait);
    for (int i = 0; i < r.n; i++)
        answer_ready(o, r.req[i]);
    free(r.req);
}

static void on_pg(struct pg_result *res, int status, void *ud)
{
    struct ops *o = ud;
    o->pg_op = NULL;
    check_done(&o->pg, status, NULL, mono());
    probes_done(o);
    (void) res;
}

static void on_rd(struct redisReply **replies, int n, int status, void *ud)
{
    struct ops *o = ud;
    o->rd_op = NULL;
    const char *why = NULL;
    if (status == 0 && (n < 1 || replies[0] == NULL || replies[0]->type == REDIS_REPLY_ERROR)) {
        status = ERR_PROTOCOL;
        why = "error reply";
    } else if (status == 0 && n > 1 && replies[1]->type == REDIS_REPLY_STRING && o->layout &&
               (replies[1]->len != strlen(o->layout) ||
                memcmp(replies[1]->str, o->layout, replies[1]->len) != 0)) {
        /* the running nodes place regions over other instances: this one takes none */
        status = ERR_INVALID;
        snprintf(o->layout_why, sizeof o->layout_why,
                 "redis.instances differ from the running nodes' (theirs: %.*s; this node's: %s)",
                 (int) (replies[1]->len < 150 ? replies[1]->len : 150), replies[1]->str, o->layout);
        why = o->layout_why;
    }
    check_done(&o->rd, status, why, mono());
    probes_done(o);
}

static void probe_pg(struct ops *o, double now)
{
    struct check *c = &o->pg;
    if (c->running)
        return;
    if (o->db == NULL || db_pool_up(o->db) == 0) {
        check_down(c, now, NULL);
        return;
    }
    if (now < c->until)
        return;
    c->running = 1;
    c->started = now;
    int rc = db_query(o->db, "select 1", 0, NULL, NULL, READY_TIMEOUT_MS, on_pg, o, &o->pg_op);
    if (rc < 0) {
        o->pg_op = NULL;
        check_done(c, rc, NULL, mono());
    }
}

static void probe_rd(struct ops *o, double now)
{
    struct check *c = &o->rd;
    if (c->running)
        return;
    if (o->rds == NULL || !rds_up(o->rds)) {
        check_down(c, now, o->rds ? rds_down_reason(o->rds) : NULL);
        return;
    }
    if (now < c->until)
        return;
    c->running = 1;
    c->started = now;
    static const char *const ping[] = {"PING"};
    static const size_t ping_len[] = {4};
    static const char *const layout[] = {"GET", "nodes:layout"};
    static const size_t layout_len[] = {3, 12};
    const char *const *argv[] = {ping, layout};
    const size_t *argvlen[] = {ping_len, layout_len};
    int argc[] = {1, 2};
    int rc = rds_batch(o->rds, o->layout ? 2 : 1, argc, argv, argvlen, READY_TIMEOUT_MS, on_rd, o,
                       &o->rd_op);
    if (rc < 0) {
        o->rd_op = NULL;
        check_done(c, rc, NULL, mono());
    }
}

/* ,"status":..,"ms":..,"age_ms":..[,"error":".."] of a check, into buf */
static int put_check(char *buf, size_t cap, const struct check *c, double now)
{
    if (c->status == CHECK_NEVER)
        return snprintf(buf, cap, "\"status\":\"unknown\"");
    int n = snprintf(buf, cap, "\"status\":\"%s\",\"ms\":%.3f,\"age_ms\":%.0f",
                     c->status == 0 ? "ok" : "down", c->ms, floor((now - c->at) * 1000));
    if (c->status != 0 && n > 0 && (size_t) n < cap) {
        char why[400];
        log_json_escape(why, sizeof why, c->why, strlen(c->why));
        n += snprintf(buf + n, cap - (size_t) n, ",\"error\":\"%s\"", why);
    }
    return n;
}

static void answer_ready(struct ops *o, struct http_req *req)
{
    double now = mono();
    int sc = o->script != NULL;
    int routes = sc ? script_routes(o->script) : 0;
    double sc_ms = (mono() - now) * 1000;
    int ok = o->pg.status == 0 && o->rd.status == 0 && sc && !o->draining;
    char pg[600], rd[800 + 15 * 800], body[2000 + 15 * 800], addr[300], esc[320];
    put_check(pg, sizeof pg, &o->pg, now);
    int n = put_check(rd, sizeof rd, &o->rd, now);
    if (o->rds && n > 0 && (size_t) n < sizeof rd) {
        rds_addr(o->rds, addr, sizeof addr);
        log_json_escape(esc, sizeof esc, addr, strlen(addr));
        n += snprintf(rd + n, sizeof rd - (size_t) n, ",\"addr\":\"%s\"", esc);
    }
    if (n > 0 && (size_t) n < sizeof rd)
        put_extra(o, rd + n, sizeof rd - (size_t) n, &ok);
    n = snprintf(body, sizeof body,
                 "{\"status\":\"%s\",\"node\":\"%s\",\"checks\":{"
                 "\"postgres\":{%s,\"connections\":%d},"
                 "\"redis\":{%s},"
                 "\"scripts\":{\"status\":\"%s\",\"ms\":%.3f,\"routes\":%d}}}",
                 o->draining ? "draining" : (ok ? "ok" : "unavailable"), o->node_id, pg,
                 o->db ? db_pool_up(o->db) : 0, rd, sc ? "ok" : "down", sc_ms, routes);
    http_respond(req, ok ? 200 : 503, "application/json", body, (size_t) n,
                 "Cache-Control: no-store\r\n", 25);
}

/* Answered when both probes are done (at once when both results may be used again); while
 * draining, at once with the last results. */
static void readyz(struct ops *o, struct http_req *req)
{
    if (!o->draining) {
        double now = mono();
        probe_pg(o, now);
        probe_rd(o, now);
        if (o->pg.running || o->rd.running) {
            wait_push(&o->ready_wait, req);
            return;
        }
    }
    answer_ready(o, req);
}

void ops_dispatch(struct http_req *req, void *ud)
{
    struct ops *o = ud;
    if (req->path_len >= 7 && req->path[1] != 'a') { /* cheap pre-check: not /api/... */
        if (is(req, "/healthz") || is(req, "/readyz") || is(req, "/metrics")) {
            if (!is_get(req)) {
                char body[256], extra[] = "Allow: GET, HEAD\r\n";
                size_t bn = http_error_body(body, sizeof body, "method_not_allowed",
                                            "method not allowed on this route", req->request_id);
                http_respond(req, 405, "application/json", body, bn, extra, sizeof extra - 1);
                return;
            }
            if (is(req, "/healthz")) {
                req->route = "GET /healthz";
                healthz(o, req);
            } else if (is(req, "/readyz")) {
                req->route = "GET /readyz";
                readyz(o, req);
            } else {
                req->route = "GET /metrics";
                metrics_page(o, req);
            }
            return;
        }
    }
    o->next(req, o->next_ud);
}
