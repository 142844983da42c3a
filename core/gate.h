/* gate.h -- what a request passes before any Lua runs: authentication, the route's role, the
 * rate limit. In that order; the first refusal answers the request (401, 403, 429, 503 in the
 * error shape) and Lua never sees it.
 *
 * Some steps may wait on Redis (a session not in the local cache, a rate-limit reservation);
 * the request is then parked here until the answer comes, and the loop goes on. */
#ifndef CORE_GATE_H
#define CORE_GATE_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"

struct http_req;
struct auth;
struct rl;
struct gate;

struct gate_route {
    unsigned role;  /* AUTH_ROLE_* the route needs; 0: public */
    int rate_class; /* index into the rate classes; -1: none */
    int rate_by_ip; /* the class counts per IP even when the caller is signed in */
};

struct gate_identity {
    int authenticated;
    int64_t account_id;
    unsigned roles; /* the session's current roles */
    char sid[AUTH_SID_MAX + 1];
};

/* The request passed: run it. id is borrowed for the call. */
typedef void gate_pass_cb(struct http_req *req, const struct gate_identity *id, void *ud);

/* auth and rl are borrowed; either may be NULL (no auth: non-public routes answer 503; no rl:
 * no limits, for tools that run without Redis). */
struct gate *gate_new(struct auth *auth, struct rl *rl);
/* Answer every parked request 503 and forget them (shutdown). */
void gate_kill_all(struct gate *g);
void gate_free(struct gate *g);

/* Run the checks of route rt on req; pass(req, id, ud) is called once if it passes (maybe
 * before gate_run returns), else req is answered here. */
void gate_run(struct gate *g, struct http_req *req, const struct gate_route *rt, gate_pass_cb *pass,
              void *ud);
/* Like gate_run, with the token given (e.g. from ?token= of a WebSocket upgrade, which a
 * browser cannot send as a header) instead of the Authorization header. */
void gate_run_token(struct gate *g, struct http_req *req, const struct gate_route *rt,
                    const char *token, size_t len, gate_pass_cb *pass, void *ud);
/* Requests parked, waiting on Redis. */
int gate_parked(const struct gate *g);

#endif
