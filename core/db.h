/* db.h -- PostgreSQL: a small pool of connections over libpq's async API.
 *
 * Never blocks the loop: connections are made with PQconnectStart/PQconnectPoll, queries
 * sent with PQsendQueryParams (parameters only; text format), results read when the socket
 * is readable. Every call has a timeout. A connection that fails is closed and made again
 * with backoff; while none is up, calls fail at once with ERR_UNAVAILABLE. A call that times
 * out closes the connection it ran on (no blocking PQcancel); the server-side
 * statement_timeout, set at connect to query_timeout_ms + 1000, stops the statement there.
 *
 * Async contract: a call that returns < 0 never calls its callback; otherwise the callback
 * fires exactly once, never from inside the call itself, with status 0, ERR_QUERY (the
 * server rejected the statement: res is the error result), ERR_TIMEOUT, ERR_UNAVAILABLE or
 * ERR_CLOSED (pool freed). */
#ifndef CORE_DB_H
#define CORE_DB_H

struct event_base;
struct pg_result;
struct db_pool;
struct db_conn; /* a connection reserved for a transaction */
struct db_op;   /* a pending call, for db_op_cancel */

struct db_opts {
    const char *conninfo;   /* libpq connection string; copied */
    int size;               /* connections in the pool */
    int connect_timeout_ms; /* per connection attempt */
    int query_timeout_ms;   /* default for calls given timeout_ms <= 0 */
    int reconnect_max_ms;   /* backoff cap between attempts */
};

/* res is borrowed: valid only until the callback returns (copy what you need); NULL unless
 * status is 0 or ERR_QUERY. */
typedef void db_result_cb(struct pg_result *res, int status, void *ud);
/* conn is the reserved connection (NULL unless status == 0); release it with db_release. */
typedef void db_reserve_cb(struct db_conn *conn, int status, void *ud);

/* Start a pool; connecting begins at once, in the background. */
struct db_pool *db_pool_new(struct event_base *base, const struct db_opts *opts);
/* Close every connection; pending callbacks fire with ERR_CLOSED before this returns. Safe
 * from inside a callback. A connection still reserved stays a valid (closed) handle until
 * db_release frees it. p may be NULL. */
void db_pool_free(struct db_pool *p);
/* Number of connections up (idle or busy). */
int db_pool_up(const struct db_pool *p);
/* Calls queued for a free connection. */
int db_pool_waiting(const struct db_pool *p);
/* Told of every query as it finishes (canceled ones too): its SQL, status (0, ERR_*) and the
 * seconds since it was asked for, queueing included (metrics, the slow query log). */
typedef void db_query_observer(const char *sql, int status, double seconds, void *ud);
void db_pool_observe(struct db_pool *p, db_query_observer *cb, void *ud);

/* Run sql with nparams text parameters (params[i] NULL is SQL NULL; borrowed: copied before
 * return; lengths may be NULL; a NUL byte inside a parameter is ERR_INVALID) on any free
 * connection. op (may be NULL) receives a handle for db_op_cancel, valid until the callback
 * fires or the op is canceled. */
int db_query(struct db_pool *p, const char *sql, int nparams, const char *const *params,
             const int *lengths, int timeout_ms, db_result_cb *cb, void *ud, struct db_op **op);
/* Reserve one connection for a sequence of queries (a transaction). */
int db_reserve(struct db_pool *p, int timeout_ms, db_reserve_cb *cb, void *ud, struct db_op **op);
/* Like db_query, on a reserved connection. Fails with ERR_BUSY if a query is already
 * running on it, ERR_CLOSED if it was lost. */
int db_conn_query(struct db_conn *c, const char *sql, int nparams, const char *const *params,
                  const int *lengths, int timeout_ms, db_result_cb *cb, void *ud,
                  struct db_op **op);
/* Give a reserved connection back. broken != 0 (or a transaction left open) closes it and
 * makes a new one. A query still running on it is canceled first (its callback never fires). */
void db_release(struct db_conn *c, int broken);
/* Forget a pending call: its callback never fires. */
void db_op_cancel(struct db_op *op);

#endif
