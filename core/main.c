/* main.c -- the `mmo` command: subcommands, and the wiring of a node (serve).
 *
 * Start order: config, log, event loop, PostgreSQL pool, Redis, Lua host, ops endpoints,
 * HTTP listener. Stop order is the reverse, after draining: SIGTERM/SIGINT stop accepting,
 * let requests in flight finish (at most shutdown.drain_ms), end the remaining tasks, then
 * free everything and exit 0. A second signal skips the wait. */
#include "auth.h"
#include "backup.h"
#include "check.h"
#include "conf.h"
#include "control.h"
#include "db.h"
#include "err.h"
#include "gate.h"
#include "web.h"
#include "ipcap.h"
#include "http.h"
#include "lcache.h"
#include "bus.h"
#include "live.h"
#include "metrics.h"
#include "node_metrics.h"
#include "lb.h"
#include "log.h"
#include "mem.h"
#include "migrate.h"
#include "ops.h"
#include "queue_cli.h"
#include "rds.h"
#include "rds_set.h"
#include "sentinel.h"
#include "ratelimit.h"
#include "realtime.h"
#include "replica.h"
#include "script.h"
#include "work.h"
#include "ws.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

static const char USAGE[] =
    "usage: mmo [COMMAND] [--config FILE]\n"
    "\n"
    "commands:\n"
    "  serve      run the node (the default)\n"
    "  migrate    apply the pending migrations of sql/ (--dry-run, --status)\n"
    "  seed       load sql/seed/ and create the admin account (idempotent)\n"
    "  check      compile every script, load the route table, lint for module state that a\n"
    "             reload would reset, run luacheck if installed; problems as file:line, then\n"
    "             \"N errors, M warnings\"; exit 1 on errors (--strict: on warnings too)\n"
    "  config     print the configuration in effect (file + environment)\n"
    "  queue      the game event stream and its dead letters: queue [stats], queue dead\n"
    "             [--limit N], queue show ID, queue requeue ID|--all, queue drop ID|--all\n"
    "  backup     back up the main database, every shard and every Redis instance into one\n"
    "             dated folder: backup [DIR] (default backup.dir), backup-<UTC time>/ with a\n"
    "             manifest and checksums; its path is the last line printed\n"
    "  restore    restore DIR (a backup-* folder) into empty databases and empty Redis\n"
    "             instances of the same names, checksums first, then row and key counts;\n"
    "             --force over existing data, or with instances the backup lacks\n"
    "  reload     make the running node load its scripts anew (control.socket); on a\n"
    "             broken script it keeps the running set and prints file:line: message\n"
    "  rollback   make the running node return to its previous script set\n"
    "  scripts    the running node's script set: version and content hash\n"
    "  version    print the version\n"
    "\n"
    "options:\n"
    "  --config FILE   configuration file (default: $MMO_CONFIG, else ./config.lua if present)\n"
    "  --sql DIR       migrations directory for migrate/seed (default: $MMO_SQL_DIR, else sql)\n"
    "  -h, --help      this help\n"
    "\n"
    "Environment overrides every key: MMO_<SECTION>_<KEY> (MMO_HTTP_PORT=8081), and the short\n"
    "forms MMO_PORT, MMO_PG, MMO_REDIS=host:port, MMO_NODE_ID, MMO_LOG_LEVEL, MMO_SCRIPTS;\n"
    "MMO_REDIS_INSTANCES=name=host:port,... the other Redis instances (redis.instances).\n";

struct node {
    struct conf conf;
    struct event_base *base;
    struct db_pool *db;
    struct db_pool *shards[CONF_MAX_SHARDS];
    struct db_pool *replicas[CONF_MAX_SHARDS];    /* [id] of shard id's replica; [0] the main's */
    struct replica *replica_lag[CONF_MAX_SHARDS]; /* [id] replicas[id]'s freshness, or NULL */
    struct rds *rds;
    struct rds_sub *sub;
    struct sentinel *sentinel; /* redis.sentinels; NULL: none. Freed after rds, sub and live */
    /* every Redis instance, home first ([0] is rds): redis.instances (core/rds_set.h) */
    struct rds_set redis;
    struct rds_opts redis_opts[RDS_SET_MAX];       /* [k]: how instance k is reached */
    struct sentinel *redis_sentinels[RDS_SET_MAX]; /* [k > 0]: its own; NULL: none */
    struct live *live; /* notifications to the players of other nodes (core/live.h) */
    struct bus *bus;   /* this node's players told to the others, theirs to it (bus.h) */
    struct metrics *metrics;
    struct node_metrics *node_metrics;
    struct lcache *lcache;
    struct auth *auth;
    struct rl *rl;
    struct gate *gate;
    struct work_pool *work;
    struct realtime *rt;
    struct lb_ctx ctx;
    struct script *script;
    struct control *control;
    struct ops *ops;
    struct web *web;
    struct ipcap *ipcap; /* connections per client address (HTTP and WebSocket) */
    struct http_server *http;
    struct http_server *admin; /* http.admin_port's listener, or NULL */
    struct event *sig_term, *sig_int, *sig_hup, *drain_timer;
    int draining;
    struct timeval drain_deadline;
};

static int place(const struct rds_set *set, const char *tag)
{
    return rds_set_place(set, tag, strlen(tag));
}

/* `mmo config`, with several Redis instances: where the stream, the channels and regions r1-r9
 * (the usual ids; any other: cache.place in a script) are placed. */
static void print_placement(const struct conf *c)
{
    if (c->nredis_instances == 0)
        return;
    struct rds_set names = {.n = 1};
    names.name[0] = c->redis_name;
    for (int i = 0; i < c->nredis_instances && names.n < RDS_SET_MAX; i++)
        names.name[names.n++] = c->redis_instances[i].name;
    static const char *const tags[] = {"stream:mmo:events", "channel:" BUS_CHANNEL,
                                       "channel:" LIVE_CHANNEL};
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        printf("redis.place[\"%s\"] = \"%s\"\n", tags[i], names.name[place(&names, tags[i])]);
    for (int r = 1; r <= 9; r++) {
        char tag[24];
        snprintf(tag, sizeof tag, "region:r%d", r);
        printf("redis.place[\"%s\"] = \"%s\"\n", tag, names.name[place(&names, tag)]);
    }
}

/* The Redis instances besides home (redis.instances): each with its own connection, and its
 * own sentinels when it has some; placement over all of them, home first, by name. */
static int start_redis_instances(struct node *n, const struct rds_opts *home)
{
    const struct conf *c = &n->conf;
    char err[256];
    n->redis.n = 1;
    n->redis.r[0] = n->rds;
    n->redis.name[0] = c->redis_name;
    n->redis_opts[0] = *home;
    for (int i = 0; i < c->nredis_instances && n->redis.n < RDS_SET_MAX; i++) {
        const struct conf_redis_instance *ci = &c->redis_instances[i];
        int k = n->redis.n;
        struct sentinel_addr sa[SENTINEL_MAX];
        int ns = sentinel_parse_addrs(ci->sentinels, sa, SENTINEL_MAX, err, sizeof err);
        if (ns < 0) { /* conf_load checked it already */
            fprintf(stderr, "mmo: redis.instances %s: %s\n", ci->name, err);
            return -1;
        }
        n->redis_sentinels[k] =
            ns > 0 ? sentinel_new(n->base, sa, ns, ci->master_name, c->redis_connect_timeout_ms)
                   : NULL;
        n->redis_opts[k] = *home;
        n->redis_opts[k].host = ci->host;
        n->redis_opts[k].port = ci->port;
        n->redis_opts[k].sentinel = n->redis_sentinels[k];
        n->redis.r[k] = rds_new(n->base, &n->redis_opts[k]);
        n->redis.name[k] = ci->name;
        n->redis.n++;
    }
    /* durable writes (redis.wait_replicas): a connection of their own on each instance */
    for (int k = 0; c->redis_wait_replicas > 0 && k < n->redis.n; k++)
        n->redis.durable[k] = rds_new(n->base, &n->redis_opts[k]);
    return 0;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- shutdown ------------------------------------------------------------------------- */

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    struct timeval now;
    event_base_gettimeofday_cached(n->base, &now);
    int inflight = http_server_inflight(n->http) + (n->admin ? http_server_inflight(n->admin) : 0);
    int conns =
        http_server_connections(n->http) + (n->admin ? http_server_connections(n->admin) : 0);
    if (inflight == 0 && conns == 0 && realtime_count(n->rt) == 0 &&
        script_ws_closing(n->script) == 0) {
        event_base_loopexit(n->base, NULL);
        return;
    }
    if (evutil_timercmp(&now, &n->drain_deadline, >=)) {
        if (inflight > 0)
            log_warn("main", "drain time is over: ending %d request(s) in flight", inflight);
        gate_kill_all(n->gate);       /* requests waiting on Redis get 503 */
        script_kill_tasks(n->script); /* and so do those in Lua */
        struct timeval flush = {0, 100000};
        event_base_loopexit(n->base, &flush);
        return;
    }
    struct timeval tick = {0, 20000};
    evtimer_add(n->drain_timer, &tick);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct node *n = arg;
    if (n->draining) {
        log_warn("main", "second signal: stopping now");
        n->drain_deadline.tv_sec = 0;
        n->drain_deadline.tv_usec = 0;
        return;
    }
    n->draining = 1;
    log_info("main", "signal %d: draining (at most %d ms)", (int) sig, n->conf.shutdown_drain_ms);
    ops_set_draining(n->ops);
    http_server_drain(n->http);
    if (n->admin)
        http_server_drain(n->admin);
    realtime_drain(n->rt);  /* WebSocket close handshakes; their close handlers save positions */
    script_stop(n->script); /* routes.lua's on_stop: region leases released */
    struct timeval now,
        d = {n->conf.shutdown_drain_ms / 1000, (n->conf.shutdown_drain_ms % 1000) * 1000};
    event_base_gettimeofday_cached(n->base, &now);
    evutil_timeradd(&now, &d, &n->drain_deadline);
    n->drain_timer = evtimer_new(n->base, on_drain_tick, n);
    struct timeval zero = {0, 0};
    evtimer_add(n->drain_timer, &zero);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct node *n = arg;
    char err[1024];
    if (n->script == NULL || n->draining)
        return;
    if (script_reload(n->script, "sighup", 0, err, sizeof err) != 0)
        log_error("main", "SIGHUP: the scripts were not reloaded (the running set stays): %s", err);
}

/* ---- serve ---------------------------------------------------------------------------- */

static void node_free(struct node *n)
{
    if (n->sig_term)
        event_free(n->sig_term);
    if (n->sig_int)
        event_free(n->sig_int);
    if (n->sig_hup)
        event_free(n->sig_hup);
    if (n->drain_timer)
        event_free(n->drain_timer);
    /* Lua first: its tasks' pending I/O is canceled and its handles are released while the
     * pools still exist; then the connections they answered; then the pools. */
    if (n->gate)
        gate_kill_all(n->gate);
    if (n->script)
        script_kill_tasks(n->script); /* WebSocket handlers end while their sessions exist */
    realtime_free(n->rt);             /* closes every WebSocket; no Lua runs for them now */
    control_free(n->control);
    script_free(n->script);
    work_pool_free(n->work);
    http_server_free(n->admin);
    http_server_free(n->http);
    ops_free(n->ops);
    web_free(n->web);
    ipcap_free(n->ipcap); /* after both servers: their connections gave their places back */
    gate_free(n->gate);
    rl_free(n->rl);
    auth_free(n->auth);
    rds_sub_free(n->sub); /* before the cache its messages go to */
    lcache_free(n->lcache);
    for (int i = 0; i < CONF_MAX_SHARDS; i++)
        replica_free(n->replica_lag[i]); /* cancels its probes: before the pools they run on */
    db_pool_free(n->db);
    for (int i = 0; i < CONF_MAX_SHARDS; i++) {
        db_pool_free(n->replicas[i]);
        db_pool_free(n->shards[i]);
    }
    rds_free(n->rds); /* its pending PUBLISH callbacks still see the live */
    for (int k = 1; k < n->redis.n; k++)
        rds_free(n->redis.r[k]);
    for (int k = 0; k < n->redis.n; k++)
        rds_free(n->redis.durable[k]);
    live_free(n->live);
    bus_free(n->bus);
    sentinel_free(n->sentinel); /* after every connection that asks it */
    for (int k = 1; k < n->redis.n; k++)
        sentinel_free(n->redis_sentinels[k]);
    node_metrics_free(n->node_metrics);
    metrics_free(n->metrics);
    if (n->base)
        event_base_free(n->base);
}

static int serve(struct node *n)
{
    char err[1024];
    struct conf *c = &n->conf;
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);

    n->base = event_base_new();
    if (n->base == NULL) {
        fprintf(stderr, "mmo: cannot create the event loop\n");
        return 1;
    }
    struct db_opts dbo = {c->pg_conninfo, c->pg_pool_size, c->pg_connect_timeout_ms,
                          c->pg_query_timeout_ms, c->pg_reconnect_max_ms};
    n->db = db_pool_new(n->base, &dbo);
    for (int i = 0; i < c->nshards; i++) {
        struct db_opts so = dbo;
        so.conninfo = c->shards[i].conninfo;
        n->shards[c->shards[i].id] = db_pool_new(n->base, &so);
        n->ctx.shards[c->shards[i].id] = n->shards[c->shards[i].id];
    }
    /* streaming replicas, for db.read: pools of their own, of the same size and timeouts;
     * with postgres.replica_max_lag_ms, each probed against its primary (core/replica.h) */
    for (int i = -1; i < c->nshards; i++) {
        const char *rc = i < 0 ? c->pg_replica_conninfo : c->shards[i].replica_conninfo;
        int id = i < 0 ? 0 : c->shards[i].id;
        if (rc[0] == '\0')
            continue;
        struct db_opts rpo = dbo;
        rpo.conninfo = rc;
        n->replicas[id] = db_pool_new(n->base, &rpo);
        n->ctx.replicas[id] = n->replicas[id];
        if (c->pg_replica_max_lag_ms > 0) {
            char name[24] = "main";
            if (id > 0)
                snprintf(name, sizeof name, "shard%d", id);
            n->replica_lag[id] = replica_new(n->base, id == 0 ? n->db : n->shards[id],
                                             n->replicas[id], name, c->pg_replica_max_lag_ms);
            n->ctx.replica_lag[id] = n->replica_lag[id];
        }
    }
    struct sentinel_addr sa[SENTINEL_MAX];
    int nsentinels = sentinel_parse_addrs(c->redis_sentinels, sa, SENTINEL_MAX, err, sizeof err);
    if (nsentinels < 0) { /* conf_load checked it already */
        fprintf(stderr, "mmo: %s\n", err);
        return 1;
    }
    if (nsentinels > 0)
        n->sentinel = sentinel_new(n->base, sa, nsentinels, c->redis_master_name,
                                   c->redis_connect_timeout_ms);
    struct rds_opts ro = {c->redis_host,
                          c->redis_port,
                          c->redis_connect_timeout_ms,
                          c->redis_timeout_ms,
                          c->redis_reconnect_max_ms,
                          n->sentinel};
    n->rds = rds_new(n->base, &ro);
    if (start_redis_instances(n, &ro) < 0)
        return 1;
    /* the in-process cache layer, and the channel that keeps nodes' copies fresh */
    n->lcache = lcache_new(100000, (size_t) 64 << 20);
    n->sub = rds_sub_new(n->base, &ro, LCACHE_CHANNEL, lcache_on_message, lcache_on_gap, n->lcache);

    char secret[65];
    const char *key = c->auth_jwt_secret;
    if (key[0] == '\0') {
        unsigned char rnd[32];
        evutil_secure_rng_get_bytes(rnd, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(secret + 2 * i, 3, "%02x", rnd[i]);
        key = secret;
        log_warn("main", "auth.jwt_secret is not set: using a random key; tokens will not survive "
                         "a restart nor work on other nodes (set MMO_AUTH_JWT_SECRET)");
    }
    struct auth_opts ao = {key,
                           c->auth_jwt_kid,
                           c->auth_jwt_old_keys,
                           c->auth_access_ttl_s,
                           c->auth_session_cache_ms,
                           c->auth_token_cache_size,
                           c->redis_timeout_ms};
    n->auth = auth_new(n->rds, &ao, err, sizeof err);
    explicit_bzero(secret, sizeof secret);
    if (n->auth == NULL) {
        log_error("main", "%s", err);
        fprintf(stderr, "mmo: %s\n", err);
        node_free(n);
        return 1;
    }
    struct rl_class classes[32];
    int nclasses = c->nrate;
    if (nclasses > 32) {
        fprintf(stderr, "mmo: config: at most 32 ratelimit classes\n");
        node_free(n);
        return 1;
    }
    for (int i = 0; i < nclasses; i++) {
        classes[i].name = c->rate[i].name;
        classes[i].limit = c->rate[i].limit;
        classes[i].period_ms = c->rate[i].period_ms;
        classes[i].burst = c->rate[i].burst;
        classes[i].batch = c->rate[i].batch;
    }
    n->rl = rl_new(n->rds, classes, nclasses, c->rate_local_keys);
    if (n->rl == NULL) {
        fprintf(stderr, "mmo: config: a ratelimit class is not valid (see the log)\n");
        node_free(n);
        return 1;
    }
    n->gate = gate_new(n->auth, n->rl);
    n->work = work_pool_new(n->base, c->auth_hash_threads, c->auth_hash_queue);
    n->ipcap = ipcap_new(c->http_max_connections_per_ip);
    struct ws_opts wo = {
        .ipcap = n->ipcap,
        .max_connections = c->ws_max_connections,
        .max_message_bytes = c->ws_max_message_bytes,
        .max_queued_bytes = c->ws_max_queued_bytes,
        .idle_timeout_ms = c->ws_idle_timeout_ms,
        .ping_interval_ms = c->ws_ping_interval_ms,
        .close_timeout_ms = 5000,
        .msg_rate = c->ws_msg_rate,
        .msg_burst = c->ws_msg_burst,
        .flush_interval_ms = c->ws_flush_interval_ms,
    };
    struct realtime_opts rto = {c->world_view_radius, c->ws_session_check_ms, 32,
                                c->world_grace_ms};
    n->rt = realtime_new(n->base, &wo, &rto, n->auth);
    {
        /* the name this run publishes under: node id and a random part (a restart is new) */
        unsigned char rnd[4];
        char sender[160];
        evutil_secure_rng_get_bytes(rnd, sizeof rnd);
        snprintf(sender, sizeof sender, "%s/%02x%02x%02x%02x", c->node_id, rnd[0], rnd[1], rnd[2],
                 rnd[3]);
        /* each channel on the instance its tag is placed on */
        int kl = place(&n->redis, "channel:" LIVE_CHANNEL),
            kb = place(&n->redis, "channel:" BUS_CHANNEL);
        n->live = live_new(n->base, &n->redis_opts[kl], n->redis.r[kl], n->rt, n->auth, sender);
        n->bus =
            bus_new(n->base, &n->redis_opts[kb], n->redis.r[kb], realtime_world(n->rt), sender);
    }

    n->ctx.base = n->base;
    n->ctx.auth = n->auth;
    n->ctx.lcache = n->lcache;
    n->ctx.sub = n->sub;
    n->ctx.gate = n->gate;
    n->ctx.work = n->work;
    n->ctx.rt = n->rt;
    n->ctx.live = n->live;
    n->metrics = metrics_new();
    n->ctx.metrics = n->metrics;
    n->ctx.db = n->db;
    n->ctx.rds = n->rds;
    n->ctx.redis = &n->redis;
    n->ctx.conf = c;
    n->script = script_new(&n->ctx, err, sizeof err);
    if (n->script == NULL) {
        log_error("main", "scripts: %s", err);
        fprintf(stderr, "mmo: scripts: %s\n", err);
        node_free(n);
        return 1;
    }
    realtime_set_script(n->rt, n->script);
    if (c->control_socket[0]) {
        char path[256];
        if (control_path(c->control_socket, c->node_id, path, sizeof path) < 0)
            snprintf(err, sizeof err, "control.socket: the path is too long");
        else
            n->control = control_new(n->base, path, n->script, err, sizeof err);
        if (n->control == NULL)
            log_warn("main",
                     "%s; `mmo reload` cannot reach this node (SIGHUP and the admin API "
                     "still reload)",
                     err);
    }
    if (c->scripts_watch && script_watch(n->script, err, sizeof err) < 0)
        log_warn("main", "scripts.watch: %s", err);
    n->web = web_new(c->http_web_root, script_http_dispatch, n->script);
    n->ops = ops_new(c->node_id, n->db, n->rds, n->script, web_dispatch, n->web);
    for (int k = 1; k < n->redis.n; k++)
        ops_watch_redis(n->ops, n->redis.name[k], n->redis.r[k]);
    {
        char layout[RDS_SET_LAYOUT_MAX];
        rds_set_layout(&n->redis, layout, sizeof layout);
        ops_set_layout(n->ops, layout);
    }
    struct http_opts ho = {
        .host = c->http_host,
        .port = c->http_port,
        .backlog = c->http_backlog,
        .reuseport = c->http_reuseport,
        .max_connections = c->http_max_connections,
        .max_header_bytes = c->http_max_header_bytes,
        .max_body_bytes = c->http_max_body_bytes,
        .header_timeout_ms = c->http_header_timeout_ms,
        .body_timeout_ms = c->http_body_timeout_ms,
        .idle_timeout_ms = c->http_idle_timeout_ms,
        .write_timeout_ms = c->http_write_timeout_ms,
        .ipcap = n->ipcap,
    };
    n->http = http_server_new(n->base, &ho, ops_dispatch, n->ops, err, sizeof err);
    if (n->http != NULL && c->http_admin_port > 0) {
        struct http_opts admin_opts = ho;
        admin_opts.port = c->http_admin_port;
        admin_opts.reuseport = 0; /* this node's alone */
        n->admin = http_server_new(n->base, &admin_opts, ops_dispatch, n->ops, err, sizeof err);
        if (n->admin == NULL) {
            http_server_free(n->http);
            n->http = NULL;
        }
    }
    if (n->http == NULL) {
        log_error("main", "%s", err);
        fprintf(stderr, "mmo: %s\n", err);
        node_free(n);
        return 1;
    }
    if (c->metrics_enabled) {
        struct node_metrics_src src = {
            .http = n->http,
            .rt = n->rt,
            .script = n->script,
            .L = n->ctx.main_L,
            .db = n->db,
            .rds = n->rds,
            .live = n->live,
            .bus = n->bus,
            .slow_ms = c->http_slow_ms,
            .slow_query_ms = c->pg_slow_ms,
        };
        n->node_metrics = node_metrics_new(n->metrics, n->base, &src, MMO_VERSION, MMO_GIT_COMMIT);
        node_metrics_watch_db(n->node_metrics, n->db, "main");
        for (int k = 0; k < n->redis.n; k++)
            node_metrics_watch_redis(n->node_metrics, n->redis.r[k], n->redis.name[k]);
        for (int i = 0; i < c->nshards; i++) {
            char name[24];
            snprintf(name, sizeof name, "shard%d", c->shards[i].id);
            node_metrics_watch_db(n->node_metrics, n->shards[c->shards[i].id], name);
        }
        for (int id = 0; id < CONF_MAX_SHARDS; id++) {
            char name[32];
            if (n->replicas[id] == NULL)
                continue;
            if (id == 0)
                snprintf(name, sizeof name, "main_replica");
            else
                snprintf(name, sizeof name, "shard%d_replica", id);
            node_metrics_watch_db(n->node_metrics, n->replicas[id], name);
            if (n->replica_lag[id]) {
                if (id == 0)
                    snprintf(name, sizeof name, "main");
                else
                    snprintf(name, sizeof name, "shard%d", id);
                node_metrics_watch_replica(n->node_metrics, n->replica_lag[id], name);
            }
        }
        if (ops_set_metrics(n->ops, n->metrics, c->metrics_allow, err, sizeof err) < 0) {
            log_error("main", "%s", err);
            fprintf(stderr, "mmo: config: %s\n", err);
            node_free(n);
            return 1;
        }
    }
    n->sig_term = evsignal_new(n->base, SIGTERM, on_stop_signal, n);
    n->sig_int = evsignal_new(n->base, SIGINT, on_stop_signal, n);
    n->sig_hup = evsignal_new(n->base, SIGHUP, on_hup, n);
    event_add(n->sig_term, NULL);
    event_add(n->sig_int, NULL);
    event_add(n->sig_hup, NULL);

    log_write(LOG_INFO, "main", NULL, NULL,
              "listening on http://%s:%d (version %s, commit %s, %d routes, pid %d)", c->http_host,
              http_server_port(n->http), MMO_VERSION, MMO_GIT_COMMIT, script_routes(n->script),
              (int) getpid());
    if (n->admin)
        log_info("main", "and on http://%s:%d, this node's alone (http.admin_port)", c->http_host,
                 http_server_port(n->admin));
    event_base_dispatch(n->base);
    log_info("main", "stopped");
    node_free(n);
    return 0;
}

/* ---- the command line ------------------------------------------------------------------- */

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return 1;
    return 0;
}

static const char *opt_value(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc - 1; i++)
        if (strcmp(argv[i], flag) == 0)
            return argv[i + 1];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *cmd = "serve";
    if (argc > 1 && argv[1][0] != '-')
        cmd = argv[1];
    if (has_flag(argc, argv, "-h") || has_flag(argc, argv, "--help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i == 1 && a[0] != '-')
            continue;
        if (strcmp(cmd, "queue") == 0 && (a[0] != '-' || strcmp(a, "--all") == 0))
            continue; /* its subcommand and ids */
        if ((strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0) && a[0] != '-')
            continue; /* the directory */
        if (strcmp(a, "--config") == 0 || strcmp(a, "--sql") == 0 ||
            (strcmp(cmd, "queue") == 0 && strcmp(a, "--limit") == 0)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mmo: %s needs a value\n", a);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--dry-run") != 0 && strcmp(a, "--status") != 0 &&
                   !(strcmp(cmd, "check") == 0 && strcmp(a, "--strict") == 0) &&
                   !(strcmp(cmd, "restore") == 0 && strcmp(a, "--force") == 0)) {
            fprintf(stderr, "mmo: unknown option %s (see mmo --help)\n", a);
            return 2;
        }
    }
    if (strcmp(cmd, "version") == 0) {
        printf("mmo %s (commit %s)\n", MMO_VERSION, MMO_GIT_COMMIT);
        return 0;
    }

    const char *config = opt_value(argc, argv, "--config");
    if (config == NULL)
        config = getenv("MMO_CONFIG");
    if (config == NULL && access("config.lua", R_OK) == 0)
        config = "config.lua";
    const char *sql_dir = opt_value(argc, argv, "--sql");
    if (sql_dir == NULL)
        sql_dir = getenv("MMO_SQL_DIR");
    if (sql_dir == NULL)
        sql_dir = "sql";

    static struct node n;
    char err[1024];
    if (conf_load(&n.conf, config, err, sizeof err) < 0) {
        fprintf(stderr, "mmo: config: %s\n", err);
        conf_free(&n.conf);
        return 1;
    }
    int level = log_level_parse(n.conf.log_level);
    if (level < 0) {
        fprintf(stderr, "mmo: config: log.level must be debug, info, warn, error or off\n");
        conf_free(&n.conf);
        return 1;
    }
    log_init(n.conf.node_id, level);

    int rc;
    if (strcmp(cmd, "serve") == 0) {
        rc = serve(&n);
    } else if (strcmp(cmd, "migrate") == 0 || strcmp(cmd, "seed") == 0) {
        rc = 0;
        /* the main database, then every shard: they share one schema */
        for (int i = -1; i < n.conf.nshards && rc == 0; i++) {
            const char *ci = i < 0 ? n.conf.pg_conninfo : n.conf.shards[i].conninfo;
            if (i >= 0)
                printf("shard %d:\n", n.conf.shards[i].id);
            if (cmd[0] == 's')
                rc = (i < 0 ? seed_run(ci, sql_dir, err, sizeof err)
                            : seed_run_shard(ci, sql_dir, err, sizeof err)) < 0;
            else if (has_flag(argc, argv, "--status"))
                rc = migrate_status(ci, sql_dir, err, sizeof err) < 0;
            else
                rc = migrate_run(ci, sql_dir, has_flag(argc, argv, "--dry-run"), err, sizeof err) <
                     0;
            if (rc)
                fprintf(stderr, "mmo: %s%s: %s\n", cmd, i < 0 ? "" : " (shard)", err);
        }
    } else if (strcmp(cmd, "check") == 0) {
        struct lb_ctx ctx = {0};
        ctx.conf = &n.conf;
        fflush(stdout);
        struct check_result r = check_scripts(&ctx, config, 1);
        rc = r.errors > 0 || (has_flag(argc, argv, "--strict") && r.warnings > 0);
    } else if (strcmp(cmd, "reload") == 0 || strcmp(cmd, "rollback") == 0 ||
               strcmp(cmd, "scripts") == 0) {
        rc = control_cli(&n.conf, cmd);
    } else if (strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0) {
        /* the one word after the command: the directory */
        const char *dir = NULL;
        int words = 0;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--sql") == 0)
                i++;
            else if (argv[i][0] != '-' && words++ == 0)
                dir = argv[i];
        }
        if (words > 1 || (cmd[0] == 'r' && dir == NULL)) {
            fprintf(stderr, "usage: mmo backup [DIR] | mmo restore DIR [--force]\n");
            rc = 2;
        } else if (cmd[0] == 'b') {
            rc = backup_run(&n.conf, dir ? dir : n.conf.backup_dir, n.conf.backup_timeout_s);
        } else {
            rc =
                restore_run(&n.conf, dir, has_flag(argc, argv, "--force"), n.conf.backup_timeout_s);
        }
    } else if (strcmp(cmd, "config") == 0) {
        conf_dump(&n.conf, 1);
        print_placement(&n.conf);
        rc = 0;
    } else if (strcmp(cmd, "queue") == 0) {
        /* the words after "queue", without --config/--sql and their values */
        char *words[16];
        int nw = 0;
        for (int i = 2; i < argc && nw < 16; i++) {
            if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--sql") == 0) {
                i++;
                continue;
            }
            words[nw++] = argv[i];
        }
        rc = queue_cli(&n.conf, nw, words);
    } else {
        fprintf(stderr, "mmo: unknown command %s (see mmo --help)\n", cmd);
        rc = 2;
    }
    conf_free(&n.conf);
    log_deinit();
    return rc;
}
