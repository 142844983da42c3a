/* ops.h -- the node's own endpoints, answered in C before the Lua routes:
 *   GET /healthz  200 while the process serves: {"status":"ok","checks":{"loop":{status,ms}}},
 *                 at once, with how long the last turn of the event loop measured took
 *   GET /readyz   200 when PostgreSQL, Redis and the scripts are all ready, else 503; each in
 *                 "checks" with its status and how long it took ("ms"): PostgreSQL and Redis
 *                 are asked (select 1, PING; 1 s timeout), one probe at a time, a result used
 *                 again for 1 s (0.25 s when it failed); other Redis instances (ops_watch_redis)
 *                 must have their connection up, and the running nodes' list of instances
 *                 (nodes:layout) must be this node's (ops_set_layout)
 *   GET /metrics  the Prometheus text exposition (core/metrics.h), to metrics.allow
 * Everything else goes to the next dispatcher (the Lua routes). */
#ifndef CORE_OPS_H
#define CORE_OPS_H

#include <stddef.h>

struct http_req;
struct db_pool;
struct rds;
struct script;
struct ops;

typedef void ops_next_cb(struct http_req *req, void *ud);

/* All borrowed; db/rds may be NULL (reported as down). Free it before db and rds: its probes
 * still running are canceled. */
struct ops *ops_new(const char *node_id, struct db_pool *db, struct rds *rds, struct script *script,
                    ops_next_cb *next, void *next_ud);
void ops_free(struct ops *o);
/* Another Redis instance (core/rds_set.h; name copied, rds borrowed): /readyz is 503 while its
 * connection is down, and lists it under checks.redis.instances. At most 15. */
void ops_watch_redis(struct ops *o, const char *name, struct rds *rds);
/* The node's list of Redis instances as lib/leases.lua writes it in nodes:layout (the names,
 * sorted, comma-separated; copied): /readyz asks home for nodes:layout with its PING and is
 * 503 while the running nodes' list is another (such a node takes no region). */
void ops_set_layout(struct ops *o, const char *layout);
/* From now on /readyz answers 503 "draining" (at once: no probe); the requests waiting on a
 * probe are answered now. */
void ops_set_draining(struct ops *o);
/* Serve GET /metrics from m to the addresses of allow ("10.0.0.0/8, 127.0.0.1, ::1"; empty:
 * anyone). -1 with a message in err for a bad allow-list. */
struct metrics;
int ops_set_metrics(struct ops *o, struct metrics *m, const char *allow, char *err, size_t cap);
/* An http_dispatch_cb; ud is the struct ops. */
void ops_dispatch(struct http_req *req, void *ud);

#endif
