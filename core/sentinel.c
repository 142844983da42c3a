/* sentinel.c -- asking Redis Sentinel where the primary is (sentinel.h).
 *
 * An ask (struct sentinel_ask) tries the sentinels one at a time: a hiredis async context per
 * try, the question queued before the TCP connect completes, one timer as the try's deadline
 * and as the deferred step. Ownership of the context follows core/rds.c: hiredis frees it by
 * itself after a failed connect or a drop (the callbacks then set a->ac to NULL); we free it
 * ourselves only from the ask's own event or from sentinel_ask_cancel, never from inside a
 * hiredis callback, after clearing ac->data so that the callbacks it triggers do nothing.
 * The user's callback runs from the ask's event only. */
#include "sentinel.h"
#include "conf.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

/* ---- parsing -------------------------------------------------------------------------------- */

static int parse_port(const char *s, size_t len)
{
    if (len == 0 || len > 5)
        return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535 ? v : -1;
}

static int host_ok(const char *s, size_t len)
{
    if (len == 0 || len >= SENTINEL_HOST_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == ',' || s[i] == '/' || s[i] == '[' || s[i] == ']')
            return 0;
    return 1;
}

int sentinel_parse_addrs(const char *list, struct sentinel_addr *out, int max, char *err,
                         size_t cap)
{
    int n = 0;
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0) {
            if (end == NULL && n == 0 && *p == '\0')
                return 0; /* an empty list: no sentinels */
            snprintf(err, cap, "redis.sentinels: an empty entry (want \"host:port,...\")");
            return -1;
        }
        const char *host = p, *colon;
        size_t hlen;
        if (*p == '[') { /* [v6 address]:port */
            const char *close = memchr(p, ']', len);
            if (close == NULL || close + 1 >= p + len || close[1] != ':') {
                snprintf(err, cap, "redis.sentinels: \"%.*s\" is not [address]:port", (int) len, p);
                return -1;
            }
            host = p + 1;
            hlen = (size_t) (close - host);
            colon = close + 1;
        } else {
            colon = NULL;
            for (size_t i = 0; i < len; i++)
                if (p[i] == ':')
                    colon = p + i; /* the last one */
            if (colon == NULL || memchr(p, ':', (size_t) (colon - p))) {
                snprintf(err, cap, "redis.sentinels: \"%.*s\" is not host:port", (int) len, p);
                return -1;
            }
            hlen = (size_t) (colon - p);
        }
        int port = parse_port(colon + 1, (size_t) (p + len - colon - 1));
        if (!host_ok(host, hlen) || port < 0) {
            snprintf(err, cap, "redis.sentinels: \"%.*s\" is not host:port (port 1..65535)",
                     (int) len, p);
            return -1;
        }
        if (n == max) {
            snprintf(err, cap, "redis.sentinels: more than %d sentinels", max);
            return -1;
        }
        memcpy(out[n].host, host, hlen);
        out[n].host[hlen] = '\0';
        out[n].port = port;
        n++;
        if (end == NULL)
            return n;
        p = end + 1;
    }
}

static int is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->str;
}

int sentinel_parse_master(const redisReply *r, char *host, size_t cap, int *port)
{
    if (r == NULL)
        return ERR_PROTOCOL;
    if (r->type == REDIS_REPLY_NIL)
        return ERR_NOTFOUND;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !is_str(r->element[0]) ||
        !is_str(r->element[1]))
        return ERR_PROTOCOL;
    const redisReply *h = r->element[0], *p = r->element[1];
    int v = parse_port(p->str, p->len);
    if (v < 0 || !host_ok(h->str, h->len) || h->len >= cap || strlen(h->str) != h->len)
        return ERR_PROTOCOL;
    memcpy(host, h->str, h->len);
    host[h->len] = '\0';
    *port = v;
    return 0;
}

static int str_is(const redisReply *r, const char *s)
{
    return is_str(r) && r->len == strlen(s) && strncasecmp(r->str, s, r->len) == 0;
}

int sentinel_parse_role(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return ERR_PROTOCOL;
    if (str_is(r->element[0], "master"))
        return SENTINEL_ROLE_MASTER;
    if (str_is(r->element[0], "slave") || str_is(r->element[0], "replica"))
        return SENTINEL_ROLE_REPLICA;
    if (str_is(r->element[0], "sentinel"))
        return SENTINEL_ROLE_SENTINEL;
    return ERR_PROTOCOL;
}

static int prefix(const redisReply *r, const char *word)
{
    size_t n = strlen(word);
    return r->len >= n && strncmp(r->str, word, n) == 0 && (r->len == n || r->str[n] == ' ');
}

int sentinel_reply_stale(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ERROR || r->str == NULL)
        return 0;
    return prefix(r, "READONLY") || prefix(r, "LOADING") || prefix(r, "MASTERDOWN");
}

/* ---- the shared state ----------------------------------------------------------------------- */

struct sentinel {
    struct event_base *base; /* borrowed */
    struct sentinel_addr addrs[SENTINEL_MAX];
    int n;
    int first;         /* the one that answered last: asked first */
    char *master_name; /* owned */
    int timeout_ms;
    char primary[SENTINEL_HOST_MAX + 8]; /* "host:port" last answered, or "" */
    unsigned long switches;
    int asks; /* pending: sentinel_free checks none is left */
};

struct sentinel *sentinel_new(struct event_base *base, const struct sentinel_addr *addrs, int n,
                              const char *master_name, int timeout_ms)
{
    CORE_ASSERT(n >= 1 && n <= SENTINEL_MAX);
    struct sentinel *s = xcalloc(1, sizeof *s);
    s->base = base;
    memcpy(s->addrs, addrs, sizeof *addrs * (size_t) n);
    s->n = n;
    s->master_name = xstrdup(master_name);
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
    return s;
}

void sentinel_free(struct sentinel *s)
{
    if (s == NULL)
        return;
    CORE_ASSERT(s->asks == 0);
    free(s->master_name);
    free(s);
}

void sentinel_primary(const struct sentinel *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", s ? s->primary : "");
}

const char *sentinel_master_name(const struct sentinel *s)
{
    return s->master_name;
}

unsigned long sentinel_switches(const struct sentinel *s)
{
    return s->switches;
}

/* An answer from sentinel i: remember it, log a change once. */
static void learned(struct sentinel *s, int i, const char *host, int port)
{
    char now[sizeof s->primary];
    snprintf(now, sizeof now, "%s:%d", host, port);
    s->first = i;
    if (strcmp(now, s->primary) == 0)
        return;
    if (s->primary[0] == '\0') {
        log_info("rds", "Redis primary \"%s\" is %s (from sentinel %s:%d)", s->master_name, now,
                 s->addrs[i].host, s->addrs[i].port);
    } else {
        log_info("rds", "Redis primary \"%s\" moved from %s to %s (from sentinel %s:%d)",
                 s->master_name, s->primary, now, s->addrs[i].host, s->addrs[i].port);
        s->switches++;
    }
    memcpy(s->primary, now, sizeof now);
}

/* ---- an ask --------------------------------------------------------------------------------- */

enum { ASK_PENDING = 1 };

struct sentinel_ask {
    struct sentinel *s;
    sentinel_cb *cb;
    void *ud;
    int tried; /* sentinels tried, this one included */
    int idx;   /* the one being asked */
    redisAsyncContext *ac;
    struct event *ev; /* the try's deadline, and the deferred step */
    int result;       /* ASK_PENDING, 0, or ERR_* for this try */
    char host[SENTINEL_HOST_MAX];
    int port;
    char why[200]; /* what the last try got */
};

static void ask_try(struct sentinel_ask *a);

static void ask_drop(struct sentinel_ask *a)
{
    redisAsyncContext *ac = a->ac;
    a->ac = NULL;
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

static void ask_done(struct sentinel_ask *a, const char *why)
{
    snprintf(a->why, sizeof a->why, "%s", why);
    if (a->result == ASK_PENDING)
        a->result = ERR_UNAVAILABLE;
    event_active(a->ev, EV_TIMEOUT, 0);
}

static void on_ask_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct sentinel_ask *a = ac->data;
    redisReply *r = reply;
    if (a == NULL || r == NULL || a->result != ASK_PENDING)
        return;
    int rc = sentinel_parse_master(r, a->host, sizeof a->host, &a->port);
    if (rc == 0) {
        a->result = 0;
        event_active(a->ev, EV_TIMEOUT, 0);
    } else if (rc == ERR_NOTFOUND) {
        char why[160];
        snprintf(why, sizeof why, "it does not know master \"%s\"", a->s->master_name);
        ask_done(a, why);
    } else {
        char why[160];
        snprintf(why, sizeof why, "%s",
                 r->type == REDIS_REPLY_ERROR && r->str ? r->str : "an unexpected reply");
        ask_done(a, why);
    }
}

static void on_ask_connect(const redisAsyncContext *cac, int status)
{
    struct sentinel_ask *a = cac->data;
    if (a == NULL || status == REDIS_OK)
        return;
    a->ac = NULL; /* hiredis frees it when we return */
    ask_done(a, cac->c.errstr[0] ? cac->c.errstr : "connect failed");
}

static void on_ask_disconnect(const redisAsyncContext *cac, int status)
{
    struct sentinel_ask *a = cac->data;
    if (a == NULL)
        return;
    a->ac = NULL;
    if (a->result == ASK_PENDING)
        ask_done(a, cac->c.errstr[0] ? cac->c.errstr : "closed by the sentinel");
}

/* The try's outcome is known, or its deadline passed. */
static void on_ask_event(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel_ask *a = arg;
    struct sentinel *s = a->s;
    const struct sentinel_addr *at = &s->addrs[a->idx];
    if (a->result == ASK_PENDING) {
        a->result = ERR_TIMEOUT;
        snprintf(a->why, sizeof a->why, "no answer within %d ms", s->timeout_ms);
    }
    ask_drop(a);
    if (a->result == 0) {
        learned(s, a->idx, a->host, a->port);
        sentinel_cb *cb = a->cb;
        void *ud = a->ud;
        char host[SENTINEL_HOST_MAX];
        int port = a->port;
        memcpy(host, a->host, sizeof host);
        sentinel_ask_cancel(a); /* frees it: the callback may start the next ask */
        cb(0, host, port, NULL, ud);
        return;
    }
    log_debug("rds", "sentinel %s:%d: %s", at->host, at->port, a->why);
    if (a->tried < s->n) {
        ask_try(a);
        return;
    }
    char why[300];
    snprintf(why, sizeof why, "no sentinel answered for \"%s\" (%d tried; %s:%d: %s)",
             s->master_name, s->n, at->host, at->port, a->why);
    sentinel_cb *cb = a->cb;
    void *ud = a->ud;
    sentinel_ask_cancel(a);
    cb(ERR_UNAVAILABLE, NULL, 0, why, ud);
}

static void ask_try(struct sentinel_ask *a)
{
    struct sentinel *s = a->s;
    a->idx = (s->first + a->tried) % s->n;
    a->tried++;
    a->result = ASK_PENDING;
    a->why[0] = '\0';
    struct timeval tv = {s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000};
    evtimer_add(a->ev, &tv);
    const struct sentinel_addr *at = &s->addrs[a->idx];
    redisAsyncContext *ac = redisAsyncConnect(at->host, at->port);
    if (ac == NULL || ac->err) {
        ask_done(a, ac ? ac->c.errstr : "cannot allocate a context");
        if (ac)
            redisAsyncFree(ac); /* never connected, nothing attached: no callback runs */
        return;
    }
    ac->data = a;
    if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        ask_done(a, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_ask_connect);
    redisAsyncSetDisconnectCallback(ac, on_ask_disconnect);
    a->ac = ac;
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->master_name};
    size_t lens[3] = {8, 23, strlen(s->master_name)};
    if (redisAsyncCommandArgv(ac, on_ask_reply, NULL, 3, argv, lens) != REDIS_OK)
        ask_done(a, "cannot send the question");
}

struct sentinel_ask *sentinel_ask(struct sentinel *s, sentinel_cb *cb, void *ud)
{
    struct sentinel_ask *a = xcalloc(1, sizeof *a);
    a->s = s;
    a->cb = cb;
    a->ud = ud;
    a->ev = evtimer_new(s->base, on_ask_event, a);
    s->asks++;
    ask_try(a);
    return a;
}

void sentinel_ask_cancel(struct sentinel_ask *a)
{
    if (a == NULL)
        return;
    ask_drop(a);
    event_free(a->ev);
    a->s->asks--;
    free(a);
}

/* ---- blocking, for the commands that are not the event loop --------------------------------- */

int sentinel_resolve_conf(const struct conf *c, const char *name, char *host, size_t cap, int *port,
                          char *err, size_t errcap)
{
    const char *sentinels = c->redis_sentinels, *master = c->redis_master_name;
    const char *fixed_host = c->redis_host;
    int fixed_port = c->redis_port;
    for (int i = 0; name && i < c->nredis_instances; i++) {
        const struct conf_redis_instance *ci = &c->redis_instances[i];
        if (strcmp(ci->name, name) == 0) {
            sentinels = ci->sentinels;
            master = ci->master_name;
            fixed_host = ci->host;
            fixed_port = ci->port;
        }
    }
    struct sentinel_addr addrs[SENTINEL_MAX];
    int n = sentinel_parse_addrs(sentinels, addrs, SENTINEL_MAX, err, errcap);
    if (n < 0)
        return -1;
    if (n == 0) {
        snprintf(host, cap, "%s", fixed_host);
        *port = fixed_port;
        return 0;
    }
    int ms = c->redis_connect_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    char why[200] = "";
    for (int i = 0; i < n; i++) {
        redisContext *r = redisConnectWithTimeout(addrs[i].host, addrs[i].port, tv);
        if (r == NULL || r->err) {
            snprintf(why, sizeof why, "%.100s:%d: %.80s", addrs[i].host, addrs[i].port,
                     r ? r->errstr : "out of memory");
            redisFree(r);
            continue;
        }
        redisSetTimeout(r, tv);
        redisReply *rep = redisCommand(r, "SENTINEL get-master-addr-by-name %s", master);
        char h[SENTINEL_HOST_MAX];
        int p = 0, rc = rep ? sentinel_parse_master(rep, h, sizeof h, &p) : ERR_UNAVAILABLE;
        if (rc == 0 && strlen(h) < cap) {
            snprintf(host, cap, "%s", h);
            *port = p;
            freeReplyObject(rep);
            redisFree(r);
            return 0;
        }
        snprintf(why, sizeof why, "%.100s:%d: %.80s", addrs[i].host, addrs[i].port,
                 rep == NULL                      ? r->errstr
                 : rc == ERR_NOTFOUND             ? "does not know that master"
                 : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                  : "an unexpected reply");
        freeReplyObject(rep);
        redisFree(r);
    }
    snprintf(err, errcap, "no sentinel answered for \"%s\" (%s)", master, why);
    return -1;
}
