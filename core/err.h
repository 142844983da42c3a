/* err.h -- error codes shared by the core and the Lua bindings.
 *
 * Functions that can fail return 0 or a negative code: one of ERR_* below, or -errno passed
 * through. err_str() turns either into a static lowercase string; that same string is what
 * Lua code receives as `err` in `nil, err`. */
#ifndef CORE_ERR_H
#define CORE_ERR_H

enum {
    ERR_BASE = -10000,
    ERR_TIMEOUT,     /* "timeout": no answer within the deadline */
    ERR_CLOSED,      /* "closed": the object or the node is shutting down */
    ERR_NOTFOUND,    /* "not found" */
    ERR_BUSY,        /* "busy": a pool or queue is full */
    ERR_UNAVAILABLE, /* "unavailable": the dependency (PostgreSQL, Redis) is down */
    ERR_PROTOCOL,    /* "protocol": the peer said something we cannot parse */
    ERR_QUERY,       /* "query": the database rejected the statement (details in the reply) */
    ERR_TOOLARGE,    /* "too large" */
    ERR_INVALID,     /* "invalid": a bad argument from the caller */
    ERR_CANCELED,    /* "canceled": the waiting coroutine went away */
    ERR_LAST
};

/* Static string for rc (an ERR_* value or -errno). Never NULL. */
const char *err_str(int rc);

#endif
