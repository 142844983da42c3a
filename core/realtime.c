/* realtime.c -- WebSocket sessions: upgrade, per-connection order, the world's sink, and the
 * periodic session re-check.
 *
 * Ownership: the realtime owns the ws_server (which owns the connections), one rt_sess per
 * connection (freed in the closed callback, after the world has forgotten it) and the world.
 * A message waiting for its turn is a copy owned by its session's queue. */
#include "realtime.h"
#include "auth.h"
#include "err.h"
#include "gate.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "script.h"
#include "world.h"
#include "ws.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

struct qmsg {
    struct qmsg *next;
    size_t len;
    char text[];
};

struct rt_sess {
    uint64_t id;
    struct realtime *rt;
    struct ws_conn *c; /* NULL once closed */
    struct rt_sess *hnext;
    int64_t account;
    unsigned roles;
    char sid[AUTH_SID_MAX + 1];
    int64_t player;
    double speed, speed_until, base_speed;
    int busy;     /* a message's handler is running */
    int checking; /* a session re-check waits on Redis */
    struct qmsg *qhead, *qtail;
    int qlen;
    int64_t touched_ms;
    int64_t checked_ms;
    struct auth_op *aop;
};

struct realtime {
    struct event_base *base;
    struct ws_server *ws;
    struct world *world;
    struct script *script;
    struct auth *auth;
    struct realtime_opts o;
    struct rt_sess **buckets;
    size_t nbuckets, count;
    uint64_t next_id;
    struct event *sweep;
    struct event *expire; /* players detached or of other nodes, past their time */
    int max_connections;
    int draining;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the session table --------------------------------------------------------------------- */

static size_t slot_of(const struct realtime *rt, uint64_t id)
{
    return (size_t) ((id * 0x9E3779B97F4A7C15ULL) >> 24) & (rt->nbuckets - 1);
}

struct rt_sess *realtime_sess(struct realtime *rt, uint64_t id)
{
    for (struct rt_sess *s = rt->buckets[slot_of(rt, id)]; s; s = s->hnext)
        if (s->id == id)
            return s->c ? s : NULL;
    return NULL;
}

static void table_put(struct realtime *rt, struct rt_sess *s)
{
    if (rt->count >= rt->nbuckets) {
        size_t old = rt->nbuckets;
        struct rt_sess **ob = rt->buckets;
        rt->nbuckets *= 2;
        rt->buckets = xcalloc(rt->nbuckets, sizeof *rt->buckets);
        for (size_t i = 0; i < old; i++) {
            struct rt_sess *p = ob[i], *next;
            for (; p; p = next) {
                next = p->hnext;
                size_t k = slot_of(rt, p->id);
                p->hnext = rt->buckets[k];
                rt->buckets[k] = p;
            }
        }
        free(ob);
    }
    size_t k = slot_of(rt, s->id);
    s->hnext = rt->buckets[k];
    rt->buckets[k] = s;
    rt->count++;
}

static void table_del(struct realtime *rt, struct rt_sess *s)
{
    struct rt_sess **pp = &rt->buckets[slot_of(rt, s->id)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = s->hnext;
        rt->count--;
    }
}

uint64_t realtime_sess_id(const struct rt_sess *s)
{
    return s->id;
}

int64_t realtime_sess_account(const struct rt_sess *s)
{
    return s->account;
}

int64_t realtime_sess_player(const struct rt_sess *s)
{
    return s->player;
}

/* ---- the world's sink: frames go straight to ws ---------------------------------------------- */

static void *sink_new(const char *text, size_t len, void *ud)
{
    (void) ud;
    return ws_frame_text(text, len);
}

static void sink_send(void *conn, void *frame, void *ud)
{
    struct rt_sess *s = conn;
    (void) ud;
    if (s->c)
        ws_send_frame(s->c, frame);
}

static void sink_unref(void *frame, void *ud)
{
    (void) ud;
    ws_frame_unref(frame);
}

/* the player of this connection joined on another node */
static void sink_taken(void *conn, void *ud)
{
    realtime_replace(ud, realtime_sess_id(conn));
}

/* ---- messages ---------------------------------------------------------------------------------
 */

static void conn_view(const struct rt_sess *s, struct script_ws_conn *v)
{
    v->id = s->id;
    v->account_id = s->account;
    v->roles = s->roles;
    v->sid = s->sid;
    v->player_id = s->player;
    v->ip = s->c ? ws_conn_ip(s->c) : "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
    v->speed = s->speed_until > 0 && now >= s->speed_until ? s->base_speed : s->speed;
}

static void run(struct rt_sess *s, const char *text, size_t len)
{
    struct script_ws_conn v;
    conn_view(s, &v);
    s->busy = 1;
    script_ws_message(s->rt->script, &v, text, len);
}

static void send_error(struct rt_sess *s, const char *code, const char *message)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "{\"t\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}", code,
                     message);
    if (s->c)
        ws_send_text(s->c, buf, (size_t) n);
}

static void on_message(struct ws_conn *c, const char *text, size_t len, void *ud)
{
    struct realtime *rt = ud;
    struct rt_sess *s = ws_conn_ud(c);
    if (rt->script == NULL) {
        send_error(s, "unavailable", "the node is starting");
        return;
    }
    if (!s->busy) {
        run(s, text, len);
        return;
    }
    if (s->qlen >= rt->o.queue_max) {
        send_error(s, "busy", "too many messages waiting; this one was dropped");
        return;
    }
    struct qmsg *m = xmalloc(sizeof *m + len);
    m->next = NULL;
    m->len = len;
    memcpy(m->text, text, len);
    if (s->qtail)
        s->qtail->next = m;
    else
        s->qhead = m;
    s->qtail = m;
    s->qlen++;
}

void realtime__message_done(struct realtime *rt, uint64_t id)
{
    struct rt_sess *s = realtime_sess(rt, id);
    if (s == NULL)
        return; /* closed meanwhile: its queue went with it */
    s->busy = 0;
    struct qmsg *m = s->qhead;
    if (m == NULL)
        return;
    s->qhead = m->next;
    if (s->qhead == NULL)
        s->qtail = NULL;
    s->qlen--;
    run(s, m->text, m->len); /* the text is copied by the host before it runs Lua */
    free(m);
}

static void free_queue(struct rt_sess *s)
{
    while (s->qhead) {
        struct qmsg *m = s->qhead;
        s->qhead = m->next;
        free(m);
    }
    s->qtail = NULL;
    s->qlen = 0;
}

static void on_closed(struct ws_conn *c, int code, void *ud)
{
    struct realtime *rt = ud;
    struct rt_sess *s = ws_conn_ud(c);
    if (s == NULL)
        return;
    struct script_ws_conn v;
    conn_view(s, &v);
    s->c = NULL;
    if (s->aop) {
        auth_op_cancel(s->aop);
        s->aop = NULL;
    }
    double x = 0, y = 0, at = 0;
    const char *region = NULL;
    /* the world forgets the connection now; the Lua handler of the close then writes the
     * position where it was. A player who ended the connection leaves (others see it vanish);
     * one whose connection was lost or whose node went away stays for the grace period,
     * to come back here or on another node */
    if (s->player && world_position(rt->world, s->player, &x, &y, &region, &at) == 0 &&
        world_conn(rt->world, s->player) == s) {
        char reg[32];
        snprintf(reg, sizeof reg, "%s", region);
        if ((code == 1001 || code == 1006) && rt->o.grace_ms > 0)
            world_detach(rt->world, s->player, s, (double) now_ms() / 1000.0);
        else
            world_leave(rt->world, s->player, s);
        if (rt->script)
            script_ws_closed(rt->script, &v, code, reg, x, y, at);
    } else if (rt->script) {
        script_ws_closed(rt->script, &v, code, NULL, 0, 0, 0);
    }
    table_del(rt, s);
    free_queue(s);
    free(s);
}

/* ---- upgrade ------------------------------------------------------------------------------------
 */

void realtime_upgrade(struct realtime *rt, struct http_req *req, const struct gate_identity *id)
{
    size_t klen = 0, vlen = 0;
    const char *key = http_req_header(req, "sec-websocket-key", &klen);
    const char *ver = http_req_header(req, "sec-websocket-version", &vlen);
    if (http_req_is_upgrade(req) && (ver == NULL || vlen != 2 || memcmp(ver, "13", 2) != 0)) {
        char body[256];
        static const char EXTRA[] = "Sec-WebSocket-Version: 13\r\n";
        size_t n = http_error_body(body, sizeof body, "bad_upgrade",
                                   "this server speaks WebSocket version 13", req->request_id);
        http_respond(req, 426, "application/json", body, n, EXTRA, sizeof EXTRA - 1);
        return;
    }
    if (!http_req_is_upgrade(req) || key == NULL || !ws_key_valid(key, klen)) {
        http_respond_error(req, 400, "bad_upgrade",
                           "a WebSocket upgrade needs Upgrade: websocket, a valid "
                           "Sec-WebSocket-Key and Sec-WebSocket-Version: 13");
        return;
    }
    if (rt->script == NULL || rt->draining) {
        http_respond_error(req, 503, "unavailable", "the node is starting or stopping");
        return;
    }
    if (ws_server_count(rt->ws) >= rt->max_connections) {
        http_respond_error(req, 503, "overloaded", "too many WebSocket connections");
        return;
    }
    char kbuf[64];
    memcpy(kbuf, key, klen); /* the request's memory goes with http_detach */
    struct http_detached d;
    if (http_detach(req, &d) < 0)
        return;
    struct ws_conn *c = ws_accept(rt->ws, &d, kbuf, klen);
    if (c == NULL) {
        log_warn("rt", "WebSocket refused: full or draining");
        return;
    }
    struct rt_sess *s = xcalloc(1, sizeof *s);
    s->id = ++rt->next_id;
    s->rt = rt;
    s->c = c;
    s->account = id->account_id;
    s->roles = id->roles;
    snprintf(s->sid, sizeof s->sid, "%s", id->sid);
    s->checked_ms = now_ms();
    ws_conn_set_ud(c, s);
    table_put(rt, s);
}

/* ---- session re-checks: a ban or a logout elsewhere ends the connection ---------------------- */

static void on_session(int status, unsigned roles, int64_t account, void *ud)
{
    struct rt_sess *s = ud;
    s->aop = NULL;
    s->checking = 0;
    if (status == ERR_NOTFOUND || (status == 0 && account != s->account)) {
        if (s->c)
            ws_close(s->c, 4001, "session ended");
    } else if (status == 0) {
        s->roles = roles;
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct realtime *rt = arg;
    int64_t now = now_ms();
    for (size_t i = 0; i < rt->nbuckets; i++)
        for (struct rt_sess *s = rt->buckets[i]; s; s = s->hnext) {
            if (!s->c || s->checking || now - s->checked_ms < rt->o.session_check_ms)
                continue;
            s->checked_ms = now;
            int st = 0;
            unsigned roles = 0;
            int64_t account = 0;
            int rc = auth_session(rt->auth, s->sid, on_session, s, &s->aop, &st, &roles, &account);
            if (rc == 1)
                on_session(st, roles, account, s);
            else if (rc == 0)
                s->checking = 1;
        }
    (void) fd, (void) what;
}

/* Once a second: players of other nodes not heard of for the grace period (at least three
 * rosters) and this node's detached players past it leave the world. */
static void on_expire(evutil_socket_t fd, short what, void *arg)
{
    struct realtime *rt = arg;
    double grace = rt->o.grace_ms / 1000.0, ttl = grace > 3.0 ? grace : 3.0;
    world_expire(rt->world, (double) now_ms() / 1000.0, ttl, grace);
    (void) fd, (void) what;
}

/* ---- the node's side
 * ------------------------------------------------------------------------------ */

struct realtime *realtime_new(struct event_base *base, const struct ws_opts *ws,
                              const struct realtime_opts *opts, struct auth *auth)
{
    struct realtime *rt = xcalloc(1, sizeof *rt);
    rt->base = base;
    rt->o = *opts;
    if (rt->o.queue_max <= 0)
        rt->o.queue_max = 32;
    if (rt->o.session_check_ms <= 0)
        rt->o.session_check_ms = 10000;
    rt->auth = auth;
    rt->ws = ws_server_new(base, ws, on_message, on_closed, rt);
    rt->max_connections = ws->max_connections > 0 ? ws->max_connections : 10000;
    struct world_sink sink = {sink_new, sink_send, sink_unref, sink_taken, rt};
    rt->world = world_new(opts->view_radius > 0 ? opts->view_radius : 100, &sink);
    rt->nbuckets = 1024;
    rt->buckets = xcalloc(rt->nbuckets, sizeof *rt->buckets);
    if (auth) {
        rt->sweep = event_new(base, -1, EV_PERSIST, on_sweep, rt);
        struct timeval tv = {1, 0};
        event_add(rt->sweep, &tv);
    }
    rt->expire = event_new(base, -1, EV_PERSIST, on_expire, rt);
    struct timeval every = {1, 0};
    event_add(rt->expire, &every);
    return rt;
}

void realtime_set_script(struct realtime *rt, struct script *s)
{
    rt->script = s;
}

void realtime_free(struct realtime *rt)
{
    if (rt == NULL)
        return;
    if (rt->sweep)
        event_free(rt->sweep);
    event_free(rt->expire);
    rt->script = NULL;      /* no Lua from here on: the host is gone or going */
    ws_server_free(rt->ws); /* every closed callback: sessions leave the world, are freed */
    world_free(rt->world);
    free(rt->buckets);
    free(rt);
}

void realtime_drain(struct realtime *rt)
{
    rt->draining = 1;
    ws_server_close_all(rt->ws, 1001, "the node is shutting down");
}

int realtime_count(const struct realtime *rt)
{
    return (int) rt->count;
}

void realtime_ws_stats(const struct realtime *rt, struct ws_stats *out)
{
    ws_server_stats(rt->ws, out);
}

struct world *realtime_world(struct realtime *rt)
{
    return rt->world;
}

int realtime_send(struct realtime *rt, uint64_t id, const char *text, size_t len)
{
    struct rt_sess *s = realtime_sess(rt, id);
    return s ? ws_send_text(s->c, text, len) : ERR_CLOSED;
}

void realtime_replace(struct realtime *rt, uint64_t id)
{
    static const char MSG[] = "{\"t\":\"error\",\"code\":\"replaced\",\"message\":\"this "
                              "player joined from another connection\"}";
    realtime_send(rt, id, MSG, sizeof MSG - 1);
    realtime_set_player(rt, id, 0, 0, 0, 0);
    realtime_close(rt, id, 4002, "replaced by another connection");
}

void realtime_close(struct realtime *rt, uint64_t id, int code, const char *reason)
{
    struct rt_sess *s = realtime_sess(rt, id);
    if (s)
        ws_close(s->c, code, reason);
}

int realtime_close_account(struct realtime *rt, int64_t account, int code, const char *reason)
{
    int n = 0;
    for (size_t i = 0; i < rt->nbuckets; i++)
        for (struct rt_sess *s = rt->buckets[i]; s; s = s->hnext)
            if (s->c && s->account == account) {
                ws_close(s->c, code, reason);
                n++;
            }
    return n;
}

int realtime_close_sid(struct realtime *rt, const char *sid, int code, const char *reason)
{
    int n = 0;
    for (size_t i = 0; i < rt->nbuckets; i++)
        for (struct rt_sess *s = rt->buckets[i]; s; s = s->hnext)
            if (s->c && strcmp(s->sid, sid) == 0) {
                ws_close(s->c, code, reason);
                n++;
            }
    return n;
}

void realtime_set_player(struct realtime *rt, uint64_t id, int64_t player, double speed,
                         double speed_until, double base_speed)
{
    struct rt_sess *s = realtime_sess(rt, id);
    if (s) {
        s->player = player;
        s->speed = speed;
        s->speed_until = speed_until;
        s->base_speed = base_speed;
    }
}

int realtime_touch(struct realtime *rt, uint64_t id, int interval_ms)
{
    struct rt_sess *s = realtime_sess(rt, id);
    int64_t now = now_ms();
    if (s == NULL || now - s->touched_ms < interval_ms)
        return 0;
    s->touched_ms = now;
    return 1;
}
