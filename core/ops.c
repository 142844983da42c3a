/* ops.c -- /healthz, /readyz and /metrics. No I/O: each reads the state its module keeps. */
#include "ops.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "rds.h"
#include "script.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ops {
    char *node_id;
    struct db_pool *db;
    struct rds *rds;
    struct script *script;
    ops_next_cb *next;
    void *next_ud;
    int draining;
    time_t started;
    struct metrics *metrics;
    /* /metrics allow-list: networks (address, prefix length); none: everyone */
    struct allow {
        int family;
        unsigned char addr[16];
        int bits;
    } allow[32];
    int nallow;
};

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
    return o;
}

void ops_free(struct ops *o)
{
    if (o == NULL)
        return;
    free(o->node_id);
    free(o);
}

void ops_set_draining(struct ops *o)
{
    o->draining = 1;
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

static void healthz(struct ops *o, struct http_req *req)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"node\":\"%s\",\"uptime_s\":%ld}",
                     o->node_id, (long) (time(NULL) - o->started));
    http_respond(req, 200, "application/json", body, (size_t) n, "Cache-Control: no-store\r\n", 25);
}

static void readyz(struct ops *o, struct http_req *req)
{
    int pg = o->db ? db_pool_up(o->db) : 0;
    int rd = o->rds ? rds_up(o->rds) : 0;
    int sc = o->script != NULL;
    int ok = pg > 0 && rd && sc && !o->draining;
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"status\":\"%s\",\"node\":\"%s\",\"checks\":{"
                     "\"postgres\":{\"status\":\"%s\",\"connections\":%d},"
                     "\"redis\":{\"status\":\"%s\"},"
                     "\"scripts\":{\"status\":\"%s\",\"routes\":%d}}}",
                     o->draining ? "draining" : (ok ? "ok" : "unavailable"), o->node_id,
                     pg > 0 ? "ok" : "down", pg, rd ? "ok" : "down", sc ? "ok" : "down",
                     sc ? script_routes(o->script) : 0);
    http_respond(req, ok ? 200 : 503, "application/json", body, (size_t) n,
                 "Cache-Control: no-store\r\n", 25);
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
