/* node_metrics.c -- the core's own metrics (node_metrics.h): requests by route and status with
 * their latency, connections open and accepted, bytes in and out, tasks, the Lua VM's memory
 * and GC cycles, PostgreSQL and Redis up, the event loop's lag, the process's CPU, memory and
 * descriptors, and the build. Gauges, and counters the modules keep as plain integers (bytes,
 * connections accepted), are read from each module's state when /metrics is rendered; other
 * counters and histograms as things happen. */
#include "node_metrics.h"
#include "db.h"
#include "err.h"
#include "http.h"
#include "bus.h"
#include "live.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "rds.h"
#include "realtime.h"
#include "replica.h"
#include "script.h"
#include "ws.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <lua.h>

#define LAG_EVERY_MS 250

struct node_metrics {
    struct metrics *m;
    struct node_metrics_src src;
    struct metric_family *req_total, *req_seconds, *lag;
    struct metric_family *http_conns, *ws_conns, *tasks, *lua_mem, *pg_up, *redis_up;
    struct metric_family *cpu, *rss, *fds, *started, *live_pub, *live_recv;
    struct metric_family *bus_pub, *bus_recv, *bus_failed;
    /* by kind: [0] http, [1] ws */
    struct metric_series *accepted[2], *bytes_in[2], *bytes_out[2], *http_refused, *gc_cycles;
    uint64_t *gc_count; /* in the Lua VM (see gc_watch); NULL: no VM */
    struct event *lag_ev;
    double lag_due;
    double start_time;
    /* the series of a (route, status) pair, cached by the route name's address: the hot
     * path finds them without formatting or hashing label values. Route names live as long
     * as the scripts, so the address identifies the name; a script reload that frees them
     * must clear this cache first. */
    struct series_slot {
        const char *route;
        int status;
        struct metric_series *count, *seconds;
    } slots[256];
    struct metric_family *q_total, *q_seconds, *db_up, *db_waiting;
    struct metric_family *r_total, *r_seconds, *r_connects;
    struct metric_series *r_ok, *r_sec;
    struct dbwatch {
        struct node_metrics *nm;
        struct db_pool *pool;
        char name[24];
        struct metric_series *ok, *seconds;
    } dbs[129]; /* main, 63 shards, and a replica of each */
    struct metric_family *replica_fresh, *replica_lag;
    struct replicawatch {
        struct replica *r;
        char name[24];
    } replicas[64];
    int nreplicas;
    struct metric_family *inst_up;
    struct rdswatch {
        struct rds *rds;
        char name[40];
    } rdss[16];
    int nrdss;
    int ndbs;
};

static double now_mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static struct metric_family *gauge(struct metrics *m, const char *name, const char *help)
{
    return metrics_family(m, name, help, METRIC_GAUGE, 0, NULL, NULL, 0, NULL);
}

static void on_lag(evutil_socket_t fd, short what, void *arg)
{
    struct node_metrics *nm = arg;
    double now = now_mono(), late = now - nm->lag_due;
    metrics_observe(metrics_only(nm->lag), late > 0 ? late : 0);
    nm->lag_due = now + LAG_EVERY_MS / 1000.0;
    struct timeval tv = {0, LAG_EVERY_MS * 1000};
    evtimer_add(nm->lag_ev, &tv);
}

static void on_query(const char *sql, int status, double seconds, void *ud)
{
    struct dbwatch *w = ud;
    struct node_metrics *nm = w->nm;
    if (status == 0 && w->ok) {
        metrics_inc(w->ok, 1);
    } else {
        const char *v[2] = {w->name, status == 0 ? "ok" : err_str(status)};
        metrics_inc(metrics_series(nm->q_total, v), 1);
    }
    metrics_observe(w->seconds, seconds);
    if (nm->src.slow_query_ms > 0 && seconds * 1000 >= nm->src.slow_query_ms)
        log_warn("db", "slow query on %s: %.0f ms (%s): %.200s", w->name, seconds * 1000,
                 status == 0 ? "ok" : err_str(status), sql);
}

static void on_redis(int status, double seconds, void *ud)
{
    struct node_metrics *nm = ud;
    if (status == 0) {
        metrics_inc(nm->r_ok, 1);
    } else {
        const char *v[1] = {err_str(status)};
        metrics_inc(metrics_series(nm->r_total, v), 1);
    }
    metrics_observe(nm->r_sec, seconds);
}

void node_metrics_watch_db(struct node_metrics *nm, struct db_pool *p, const char *name)
{
    if (p == NULL || nm->ndbs >= (int) (sizeof nm->dbs / sizeof nm->dbs[0]))
        return;
    struct dbwatch *w = &nm->dbs[nm->ndbs++];
    w->nm = nm;
    w->pool = p;
    snprintf(w->name, sizeof w->name, "%s", name);
    const char *v[2] = {w->name, "ok"};
    w->ok = metrics_series(nm->q_total, v);
    w->seconds = metrics_series(nm->q_seconds, v);
    db_pool_observe(p, on_query, w);
}

void node_metrics_watch_replica(struct node_metrics *nm, struct replica *r, const char *name)
{
    if (r == NULL || nm->nreplicas >= (int) (sizeof nm->replicas / sizeof nm->replicas[0]))
        return;
    struct replicawatch *w = &nm->replicas[nm->nreplicas++];
    w->r = r;
    snprintf(w->name, sizeof w->name, "%s", name);
}

void node_metrics_watch_redis(struct node_metrics *nm, struct rds *r, const char *name)
{
    if (r == NULL || nm->nrdss >= (int) (sizeof nm->rdss / sizeof nm->rdss[0]))
        return;
    struct rdswatch *w = &nm->rdss[nm->nrdss++];
    w->rds = r;
    snprintf(w->name, sizeof w->name, "%s", name);
    if (r != nm->src.rds) /* the home's calls are observed already */
        rds_observe(r, on_redis, nm);
}

/* Full GC cycles of the Lua VM, counted by a sentinel: an unreachable userdata whose __gc
 * counts and makes the next one. A cycle finalizes the sentinel made during the one before
 * (objects made while finalizers run survive their cycle), so the count goes up by one per
 * completed cycle, a collectgarbage() included. Upvalues: the count's box, the metatable. */
static int gc_sentinel(lua_State *L)
{
    uint64_t *n = lua_touserdata(L, lua_upvalueindex(1));
    (*n)++;
    lua_newuserdata(L, 0);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
    return 0;
}

/* The count lives in the VM (anchored in the registry), so it goes with it. */
static uint64_t *gc_watch(lua_State *L)
{
    uint64_t *n = lua_newuserdata(L, sizeof *n);
    *n = 0;
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "mmo.gc_cycles");
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, gc_sentinel, 2);
    lua_setfield(L, -2, "__gc");
    lua_newuserdata(L, 0); /* the first sentinel */
    lua_pushvalue(L, -2);
    lua_setmetatable(L, -2);
    lua_pop(L, 3);
    return n;
}

static void collect(struct metrics *m, void *ud)
{
    struct node_metrics *nm = ud;
    const struct node_metrics_src *s = &nm->src;
    for (int i = 0; i < nm->ndbs; i++) {
        const char *v[1] = {nm->dbs[i].name};
        metrics_set(metrics_series(nm->db_up, v), db_pool_up(nm->dbs[i].pool));
        metrics_set(metrics_series(nm->db_waiting, v), db_pool_waiting(nm->dbs[i].pool));
    }
    for (int i = 0; i < nm->nreplicas; i++) {
        const char *v[1] = {nm->replicas[i].name};
        metrics_set(metrics_series(nm->replica_fresh, v), replica_fresh(nm->replicas[i].r));
        int64_t lag = replica_lag_bytes(nm->replicas[i].r);
        if (lag >= 0)
            metrics_set(metrics_series(nm->replica_lag, v), (double) lag);
    }
    if (s->http) {
        metrics_set(metrics_only(nm->http_conns), http_server_connections(s->http));
        struct http_stats st;
        http_server_stats(s->http, &st);
        metrics_set(nm->accepted[0], (double) st.accepted);
        metrics_set(nm->http_refused, (double) st.refused);
        metrics_set(nm->bytes_in[0], (double) st.bytes_in);
        metrics_set(nm->bytes_out[0], (double) st.bytes_out);
    }
    if (s->rt) {
        metrics_set(metrics_only(nm->ws_conns), realtime_count(s->rt));
        struct ws_stats st;
        realtime_ws_stats(s->rt, &st);
        metrics_set(nm->accepted[1], (double) st.accepted);
        metrics_set(nm->bytes_in[1], (double) st.bytes_in);
        metrics_set(nm->bytes_out[1], (double) st.bytes_out);
    }
    if (nm->gc_count)
        metrics_set(nm->gc_cycles, (double) *nm->gc_count);
    if (s->script)
        metrics_set(metrics_only(nm->tasks), script_tasks(s->script));
    if (s->L)
        metrics_set(metrics_only(nm->lua_mem),
                    lua_gc(s->L, LUA_GCCOUNT, 0) * 1024.0 + lua_gc(s->L, LUA_GCCOUNTB, 0));
    if (s->db)
        metrics_set(metrics_only(nm->pg_up), db_pool_up(s->db) > 0);
    if (s->rds) {
        metrics_set(metrics_only(nm->redis_up), rds_up(s->rds) != 0);
        unsigned long c = rds_connects(s->rds);
        metrics_set(metrics_only(nm->r_connects), c > 0 ? (double) (c - 1) : 0);
    }
    for (int i = 0; i < nm->nrdss; i++) {
        const char *v[1] = {nm->rdss[i].name};
        metrics_set(metrics_series(nm->inst_up, v), rds_up(nm->rdss[i].rds) != 0);
    }
    if (s->live) {
        uint64_t pub, recv, failed;
        live_stats(s->live, &pub, &recv, &failed);
        metrics_set(metrics_only(nm->live_pub), (double) pub);
        metrics_set(metrics_only(nm->live_recv), (double) recv);
    }
    if (s->bus) {
        uint64_t pub, recv, failed;
        bus_stats(s->bus, &pub, &recv, &failed);
        metrics_set(metrics_only(nm->bus_pub), (double) pub);
        metrics_set(metrics_only(nm->bus_recv), (double) recv);
        metrics_set(metrics_only(nm->bus_failed), (double) failed);
    }
    /* the process, from /proc/self */
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        const char *p = strrchr(buf, ')');
        unsigned long utime = 0, stime = 0;
        long rss = 0;
        /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
         * utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss */
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                        "%*d %*u %*u %ld",
                        &utime, &stime, &rss) == 3) {
            double hz = (double) sysconf(_SC_CLK_TCK);
            metrics_set(metrics_only(nm->cpu), (double) (utime + stime) / hz);
            metrics_set(metrics_only(nm->rss), (double) rss * (double) sysconf(_SC_PAGESIZE));
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int n = -1; /* the descriptor of d itself */
        while (readdir(d))
            n++;
        closedir(d);
        metrics_set(metrics_only(nm->fds), n - 2); /* . and .. */
    }
    (void) m;
}

static void on_response(const struct http_req *req, int status, double seconds, void *ud)
{
    struct node_metrics *nm = ud;
    if (nm->src.slow_ms > 0 && seconds * 1000 >= nm->src.slow_ms)
        log_write(LOG_WARN, "http", req->request_id, NULL, "slow request: %s -> %d in %.0f ms",
                  req->route ? req->route : "unmatched", status, seconds * 1000);
    struct series_slot *slot =
        &nm->slots[(((uintptr_t) req->route >> 4) ^ (uintptr_t) status * 31) % 256];
    if (req->route && slot->route == req->route && slot->status == status && slot->count) {
        metrics_inc(slot->count, 1);
        metrics_observe(slot->seconds, seconds);
        return;
    }
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *route = req->route ? req->route : "unmatched";
    const char *v[2] = {route, st};
    struct metric_series *c = metrics_series(nm->req_total, v);
    struct metric_series *h = metrics_series(nm->req_seconds, v); /* by route: v[0] */
    metrics_inc(c, 1);
    metrics_observe(h, seconds);
    if (req->route && c && h)
        *slot = (struct series_slot){req->route, status, c, h};
}

struct node_metrics *node_metrics_new(struct metrics *m, struct event_base *base,
                                      const struct node_metrics_src *src, const char *version,
                                      const char *commit)
{
    struct node_metrics *nm = xcalloc(1, sizeof *nm);
    nm->m = m;
    nm->src = *src;
    const char *rs[] = {"route", "status"};
    nm->req_total = metrics_family(m, "mmo_http_requests_total",
                                   "HTTP requests answered, by route template and status",
                                   METRIC_COUNTER, 2, rs, NULL, 0, NULL);
    nm->req_seconds = metrics_family(m, "mmo_http_request_duration_seconds",
                                     "From a request's dispatch to its response being queued",
                                     METRIC_HISTOGRAM, 1, rs, NULL, 0, NULL);
    static const double LAG_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,   0.25,   0.5,   1,    2.5};
    nm->lag = metrics_family(m, "mmo_event_loop_lag_seconds",
                             "How late a timer due every 250 ms fires: the loop's responsiveness",
                             METRIC_HISTOGRAM, 0, NULL, LAG_BUCKETS,
                             (int) (sizeof LAG_BUCKETS / sizeof LAG_BUCKETS[0]), NULL);
    const char *dr[] = {"db", "result"};
    nm->q_total = metrics_family(m, "mmo_db_queries_total",
                                 "PostgreSQL queries finished, by database and result (ok, or "
                                 "the error: query, timeout, unavailable, closed...)",
                                 METRIC_COUNTER, 2, dr, NULL, 0, NULL);
    nm->q_seconds = metrics_family(m, "mmo_db_query_duration_seconds",
                                   "From a query asked for to its answer, queueing included",
                                   METRIC_HISTOGRAM, 1, dr, NULL, 0, NULL);
    nm->db_up = metrics_family(m, "mmo_db_connections_up", "PostgreSQL connections up, by pool",
                               METRIC_GAUGE, 1, dr, NULL, 0, NULL);
    nm->db_waiting = metrics_family(m, "mmo_db_waiting",
                                    "Calls waiting for a free PostgreSQL connection, by pool",
                                    METRIC_GAUGE, 1, dr, NULL, 0, NULL);
    nm->replica_fresh =
        metrics_family(m, "mmo_db_replica_fresh",
                       "1 while db.read may use the database's streaming replica: it has "
                       "replayed what the primary had postgres.replica_max_lag_ms ago",
                       METRIC_GAUGE, 1, dr, NULL, 0, NULL);
    nm->replica_lag = metrics_family(m, "mmo_db_replica_lag_bytes",
                                     "WAL bytes the streaming replica had still to replay at the "
                                     "last probe (the primary's LSN minus its replay LSN)",
                                     METRIC_GAUGE, 1, dr, NULL, 0, NULL);
    const char *res[] = {"result"};
    nm->r_total = metrics_family(m, "mmo_redis_calls_total",
                                 "Redis calls (a pipeline is one) by result (ok, or the error)",
                                 METRIC_COUNTER, 1, res, NULL, 0, NULL);
    nm->r_seconds = metrics_family(m, "mmo_redis_call_duration_seconds",
                                   "From a Redis call asked for to its answer", METRIC_HISTOGRAM, 0,
                                   NULL, NULL, 0, NULL);
    nm->r_connects = metrics_family(m, "mmo_redis_reconnects_total",
                                    "Times the Redis command connection was made again",
                                    METRIC_COUNTER, 0, NULL, NULL, 0, NULL);
    const char *okv[1] = {"ok"};
    nm->r_ok = metrics_series(nm->r_total, okv);
    nm->r_sec = metrics_only(nm->r_seconds);
    nm->http_conns = gauge(m, "mmo_http_connections", "HTTP connections open");
    nm->ws_conns = gauge(m, "mmo_ws_connections", "WebSocket connections open");
    const char *kl[] = {"kind"};
    struct metric_family *acc = metrics_family(
        m, "mmo_connections_accepted_total",
        "Connections accepted, by kind: http (TCP connections), ws (WebSocket upgrades, which "
        "began as http connections)",
        METRIC_COUNTER, 1, kl, NULL, 0, NULL);
    struct metric_family *refused =
        metrics_family(m, "mmo_connections_refused_total",
                       "Connections answered 503 and closed at once (full or draining), by kind",
                       METRIC_COUNTER, 1, kl, NULL, 0, NULL);
    struct metric_family *bin = metrics_family(m, "mmo_received_bytes_total",
                                               "Bytes read from client sockets, by kind (http, ws)",
                                               METRIC_COUNTER, 1, kl, NULL, 0, NULL);
    struct metric_family *bout = metrics_family(
        m, "mmo_sent_bytes_total", "Bytes written to client sockets, by kind (http, ws)",
        METRIC_COUNTER, 1, kl, NULL, 0, NULL);
    static const char *const KINDS[2] = {"http", "ws"};
    for (int k = 0; k < 2; k++) {
        if ((k == 0 && !src->http) || (k == 1 && !src->rt))
            continue;
        const char *v[1] = {KINDS[k]};
        nm->accepted[k] = metrics_series(acc, v);
        nm->bytes_in[k] = metrics_series(bin, v);
        nm->bytes_out[k] = metrics_series(bout, v);
        if (k == 0)
            nm->http_refused = metrics_series(refused, v);
    }
    nm->tasks = gauge(m, "mmo_lua_tasks", "Lua tasks (coroutines) alive");
    nm->lua_mem = gauge(m, "mmo_lua_memory_bytes", "Memory held by the Lua VM");
    if (src->L) {
        nm->gc_cycles = metrics_only(
            metrics_family(m, "mmo_lua_gc_cycles_total",
                           "Full garbage collection cycles the Lua VM completed (incremental "
                           "cycles started by allocation, and collectgarbage() calls)",
                           METRIC_COUNTER, 0, NULL, NULL, 0, NULL));
        nm->gc_count = gc_watch(src->L);
    }
    nm->pg_up = gauge(m, "mmo_postgres_up", "1 when the main PostgreSQL pool has a connection");
    nm->redis_up = gauge(m, "mmo_redis_up", "1 when the Redis connection is up (home's)");
    const char *il[] = {"redis"};
    nm->inst_up = metrics_family(m, "mmo_redis_instance_up",
                                 "1 when the connection to a Redis instance is up, by name",
                                 METRIC_GAUGE, 1, il, NULL, 0, NULL);
    nm->live_pub = metrics_family(m, "mmo_live_published_total",
                                  "Notifications published for the players of other nodes",
                                  METRIC_COUNTER, 0, NULL, NULL, 0, NULL);
    nm->live_recv =
        metrics_family(m, "mmo_live_received_total",
                       "Notifications from other nodes delivered to this node's players",
                       METRIC_COUNTER, 0, NULL, NULL, 0, NULL);
    nm->bus_pub = metrics_family(m, "mmo_bus_published_total",
                                 "Bus messages published: this node's players' changes, one a "
                                 "loop turn, and its roster each second",
                                 METRIC_COUNTER, 0, NULL, NULL, 0, NULL);
    nm->bus_recv = metrics_family(m, "mmo_bus_lines_received_total",
                                  "Changes of other nodes' players applied to this node's world",
                                  METRIC_COUNTER, 0, NULL, NULL, 0, NULL);
    nm->bus_failed = metrics_family(m, "mmo_bus_publish_failures_total",
                                    "Bus messages that could not be published", METRIC_COUNTER, 0,
                                    NULL, NULL, 0, NULL);
    nm->cpu = metrics_family(m, "process_cpu_seconds_total", "User and system CPU time",
                             METRIC_COUNTER, 0, NULL, NULL, 0, NULL);
    nm->rss = gauge(m, "process_resident_memory_bytes", "Resident memory");
    nm->fds = gauge(m, "process_open_fds", "Open file descriptors");
    nm->started = gauge(m, "process_start_time_seconds", "When the process started (epoch)");
    metrics_set(metrics_only(nm->started), (double) time(NULL));
    const char *bl[] = {"version", "commit"};
    struct metric_family *build = metrics_family(m, "mmo_build_info", "The build of this node",
                                                 METRIC_GAUGE, 2, bl, NULL, 0, NULL);
    const char *bv[] = {version, commit};
    metrics_set(metrics_series(build, bv), 1);
    metrics_on_collect(m, collect, nm);
    if (src->rds)
        rds_observe(src->rds, on_redis, nm);
    if (src->http)
        http_server_on_response(src->http, on_response, nm);
    nm->lag_ev = evtimer_new(base, on_lag, nm);
    nm->lag_due = now_mono() + LAG_EVERY_MS / 1000.0;
    struct timeval tv = {0, LAG_EVERY_MS * 1000};
    evtimer_add(nm->lag_ev, &tv);
    return nm;
}

void node_metrics_free(struct node_metrics *nm)
{
    if (nm == NULL)
        return;
    if (nm->lag_ev)
        event_free(nm->lag_ev);
    free(nm);
}
