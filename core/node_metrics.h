/* node_metrics.h -- the core's own metrics on a registry (see node_metrics.c for the list). */
#ifndef MMO_NODE_METRICS_H
#define MMO_NODE_METRICS_H

struct metrics;
struct event_base;
struct http_server;
struct realtime;
struct script;
struct db_pool;
struct replica;
struct rds;
struct live;
struct bus;
typedef struct lua_State lua_State;

/* What the collector reads (borrowed, any may be NULL; they outlive the node_metrics). */
struct node_metrics_src {
    struct http_server *http;
    struct realtime *rt;
    struct script *script;
    lua_State *L;
    struct db_pool *db;
    struct rds *rds;
    struct live *live;
    struct bus *bus;
    int slow_ms;       /* a request answered later than this is logged as slow (0: never) */
    int slow_query_ms; /* a query answered later than this is logged as slow (0: never) */
};

struct node_metrics;

/* Registers the families on m, observes every HTTP response of src->http, and starts a timer
 * measuring the loop's lag. */
struct node_metrics *node_metrics_new(struct metrics *m, struct event_base *base,
                                      const struct node_metrics_src *src, const char *version,
                                      const char *commit);
void node_metrics_free(struct node_metrics *nm);
/* Count and time the queries of a PostgreSQL pool, labelled db="<name>" ("main", "shard1"...;
 * copied), with its connections and waiting calls as gauges. At most 65 pools. */
void node_metrics_watch_db(struct node_metrics *nm, struct db_pool *p, const char *name);
/* A streaming replica's freshness (core/replica.h), labelled db="<name>" (the database it is
 * a replica of: "main", "shard1"...; copied): mmo_db_replica_fresh 0/1 and
 * mmo_db_replica_lag_bytes. At most 64. */
void node_metrics_watch_replica(struct node_metrics *nm, struct replica *r, const char *name);
/* A Redis instance (core/rds_set.h; the home one too): mmo_redis_instance_up{redis="<name>"}
 * (copied), and its calls counted with the others in mmo_redis_calls_total. At most 16. */
void node_metrics_watch_redis(struct node_metrics *nm, struct rds *r, const char *name);

#endif
