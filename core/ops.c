/* ops.c -- /healthz and /readyz. No I/O: each check reads the state its module keeps. */
#include "ops.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "rds.h"
#include "script.h"

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
        if (is(req, "/healthz") || is(req, "/readyz")) {
            if (!is_get(req)) {
                char body[256], extra[] = "Allow: GET, HEAD\r\n";
                size_t bn = http_error_body(body, sizeof body, "method_not_allowed",
                                            "method not allowed on this route", req->request_id);
                http_respond(req, 405, "application/json", body, bn, extra, sizeof extra - 1);
                return;
            }
            if (is(req, "/healthz"))
                healthz(o, req);
            else
                readyz(o, req);
            return;
        }
    }
    o->next(req, o->next_ud);
}
