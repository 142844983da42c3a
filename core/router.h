/* router.h -- HTTP route matching: method + path template ("/api/players/:id") -> route id.
 *
 * A trie of path segments; a literal segment wins over a :param at the same depth, with
 * backtracking, so "/api/players/me" and "/api/players/:id" can both exist. Matching does not
 * allocate: parameter values point into the path (still percent-encoded). */
#ifndef CORE_ROUTER_H
#define CORE_ROUTER_H

#include <stddef.h>

#define ROUTER_MAX_PARAMS 8
#define ROUTER_NOMETHOD   1 /* router_match: the path exists, not with this method (405) */

struct router;

struct router_param {
    const char *name; /* owned by the router */
    const char *value;
    size_t len;
};

struct router_match {
    int route_id;
    int nparams;
    struct router_param params[ROUTER_MAX_PARAMS];
};

struct router *router_new(void);
void router_free(struct router *r);
/* Add a route. method: GET HEAD POST PUT PATCH DELETE OPTIONS. Returns 0, or -1 with a static
 * reason in *why (bad method, bad pattern, duplicate route, too many params). */
int router_add(struct router *r, const char *method, const char *pattern, int route_id,
               const char **why);
/* 0 and m filled; ROUTER_NOMETHOD (the path exists with other methods); ERR_NOTFOUND.
 * HEAD falls back to GET. m->params borrow from path (valid while path is). */
int router_match(const struct router *r, const char *method, size_t method_len, const char *path,
                 size_t len, struct router_match *m);
/* The methods the path accepts, as "GET, POST" (for the Allow header); returns the length. */
size_t router_allow(const struct router *r, const char *path, size_t len, char *buf, size_t cap);
/* Number of routes. */
int router_count(const struct router *r);

#endif
