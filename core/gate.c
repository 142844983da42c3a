/* gate.c -- authentication, roles and rate limits in front of the Lua routes.
 *
 * A request that can be decided from local state (a cached token, a cached session, a local
 * rate allowance) goes through without any allocation. One that must ask Redis gets a parked
 * record, owned by the gate until the answer comes or gate_kill_all. */
#include "gate.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "ratelimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct parked {
    struct gate *g;
    struct parked *prev, *next;
    struct http_req *req;
    struct gate_route rt;
    struct gate_identity id;
    gate_pass_cb *pass;
    void *ud;
    struct auth_op *aop;
    struct rl_op *rop;
};

struct gate {
    struct auth *auth;
    struct rl *rl;
    struct parked *parked;
    int nparked;
    struct parked *spare; /* unparked records kept for reuse (through next), SPARE_MAX at most */
    int nspare;
};

#define SPARE_MAX 64

struct gate *gate_new(struct auth *auth, struct rl *rl)
{
    struct gate *g = xcalloc(1, sizeof *g);
    g->auth = auth;
    g->rl = rl;
    return g;
}

static void unpark(struct parked *p)
{
    struct gate *g = p->g;
    if (p->prev)
        p->prev->next = p->next;
    else
        g->parked = p->next;
    if (p->next)
        p->next->prev = p->prev;
    g->nparked--;
    if (g->nspare < SPARE_MAX) {
        p->next = g->spare;
        g->spare = p;
        g->nspare++;
    } else {
        free(p);
    }
}

void gate_kill_all(struct gate *g)
{
    while (g->parked) {
        struct parked *p = g->parked;
        if (p->aop)
            auth_op_cancel(p->aop);
        if (p->rop)
            rl_op_cancel(p->rop);
        struct http_req *req = p->req;
        unpark(p);
        http_respond_error(req, 503, "shutting_down", "the node is shutting down");
    }
}

void gate_free(struct gate *g)
{
    if (g == NULL)
        return;
    gate_kill_all(g);
    while (g->spare) {
        struct parked *p = g->spare;
        g->spare = p->next;
        free(p);
    }
    free(g);
}

int gate_parked(const struct gate *g)
{
    return g->nparked;
}

static struct parked *park(struct gate *g, struct http_req *req, const struct gate_route *rt,
                           const struct gate_identity *id, gate_pass_cb *pass, void *ud)
{
    struct parked *p = g->spare;
    if (p) {
        g->spare = p->next;
        g->nspare--;
        memset(p, 0, sizeof *p);
    } else {
        p = xcalloc(1, sizeof *p);
    }
    p->g = g;
    p->req = req;
    p->rt = *rt;
    p->id = *id;
    p->pass = pass;
    p->ud = ud;
    p->next = g->parked;
    if (g->parked)
        g->parked->prev = p;
    g->parked = p;
    g->nparked++;
    return p;
}

static void respond_limited(struct http_req *req, int retry_after_ms)
{
    char body[384], extra[48];
    int secs = (retry_after_ms + 999) / 1000;
    if (secs < 1)
        secs = 1;
    size_t bn = http_error_body(body, sizeof body, "rate_limited", "too many requests; retry later",
                                req->request_id);
    int xn = snprintf(extra, sizeof extra, "Retry-After: %d\r\n", secs);
    http_respond(req, 429, "application/json", body, bn, extra, (size_t) xn);
}

/* ---- step 3: the rate limit --------------------------------------------------------------- */

/* "ip:1.2.3.4"; an IPv6 client counts by its /64, the block one host usually controls (else
 * one machine could rotate addresses forever). */
static int client_key(const char *ip, char *out, size_t cap)
{
    struct in6_addr a6;
    if (strchr(ip, ':') && inet_pton(AF_INET6, ip, &a6) == 1 && !IN6_IS_ADDR_V4MAPPED(&a6)) {
        memset(a6.s6_addr + 8, 0, 8);
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a6, buf, sizeof buf);
        return snprintf(out, cap, "ip:%s/64", buf);
    }
    return snprintf(out, cap, "ip:%s", ip);
}

static void on_rate(int status, int retry_after_ms, void *ud)
{
    struct parked *p = ud;
    struct http_req *req = p->req;
    gate_pass_cb *pass = p->pass;
    void *pud = p->ud;
    struct gate_identity id = p->id;
    unpark(p);
    if (status == 0)
        pass(req, &id, pud);
    else
        respond_limited(req, retry_after_ms);
}

static void step_rate(struct gate *g, struct http_req *req, const struct gate_route *rt,
                      const struct gate_identity *id, gate_pass_cb *pass, void *ud,
                      struct parked *p)
{
    struct gate_identity who = *id; /* id may live in p, freed by unpark */
    if (g->rl == NULL || rt->rate_class < 0) {
        if (p)
            unpark(p);
        pass(req, &who, ud);
        return;
    }
    char key[96];
    int kn;
    if (id->authenticated && !rt->rate_by_ip)
        kn = snprintf(key, sizeof key, "acct:%lld", (long long) id->account_id);
    else
        kn = client_key(req->remote_ip, key, sizeof key);
    int retry_ms = 0;
    if (p == NULL)
        p = park(g, req, rt, id, pass, ud);
    int rc = rl_check(g->rl, rt->rate_class, key, (size_t) kn, on_rate, p, &p->rop, &retry_ms);
    if (rc == RL_PENDING)
        return;
    unpark(p);
    if (rc == RL_ALLOW)
        pass(req, &who, ud);
    else if (rc == RL_DENY)
        respond_limited(req, retry_ms);
    else
        http_respond_error(req, 503, "unavailable", "rate limits cannot be checked right now");
}

/* ---- step 2: the session and the role ------------------------------------------------------ */

static void session_verdict(struct gate *g, struct http_req *req, const struct gate_route *rt,
                            struct gate_identity *id, gate_pass_cb *pass, void *ud,
                            struct parked *p, int status, unsigned roles, int64_t account)
{
    const char *code = NULL, *msg = NULL;
    int http_status = 0;
    if (status == ERR_NOTFOUND || (status == 0 && account != id->account_id)) {
        http_status = 401, code = "session_revoked", msg = "this session has ended; sign in again";
    } else if (status != 0) {
        http_status = 503, code = "unavailable", msg = "sessions cannot be checked right now";
    } else if (!auth_roles_allow(roles, rt->role)) {
        http_status = 403, code = "forbidden", msg = "your account lacks the role this needs";
    }
    if (http_status) {
        if (p)
            unpark(p);
        http_respond_error(req, http_status, code, msg);
        return;
    }
    id->roles = roles;
    if (p)
        p->id.roles = roles;
    step_rate(g, req, rt, p ? &p->id : id, pass, ud, p);
}

static void on_session(int status, unsigned roles, int64_t account, void *ud)
{
    struct parked *p = ud;
    p->aop = NULL;
    session_verdict(p->g, p->req, &p->rt, &p->id, p->pass, p->ud, p, status, roles, account);
}

/* ---- step 1: the token ----------------------------------------------------------------------- */

static const char *bearer(const struct http_req *req, size_t *len)
{
    size_t n;
    const char *v = http_req_header(req, "authorization", &n);
    if (v == NULL || n < 8 || strncasecmp(v, "bearer ", 7) != 0)
        return NULL;
    v += 7, n -= 7;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *len = n;
    return n ? v : NULL;
}

static void run(struct gate *g, struct http_req *req, const struct gate_route *rt,
                const char *given, size_t given_len, gate_pass_cb *pass, void *ud);

void gate_run(struct gate *g, struct http_req *req, const struct gate_route *rt, gate_pass_cb *pass,
              void *ud)
{
    run(g, req, rt, NULL, 0, pass, ud);
}

void gate_run_token(struct gate *g, struct http_req *req, const struct gate_route *rt,
                    const char *token, size_t len, gate_pass_cb *pass, void *ud)
{
    run(g, req, rt, token, len, pass, ud);
}

static void run(struct gate *g, struct http_req *req, const struct gate_route *rt,
                const char *given, size_t given_len, gate_pass_cb *pass, void *ud)
{
    struct gate_identity id = {0};
    if (rt->role == 0) {
        step_rate(g, req, rt, &id, pass, ud, NULL);
        return;
    }
    if (g->auth == NULL) {
        http_respond_error(req, 503, "unavailable", "authentication is not configured");
        return;
    }
    size_t tlen = given_len;
    const char *tok = given ? given : bearer(req, &tlen);
    if (tok == NULL) {
        http_respond_error(req, 401, "unauthenticated", "this route needs a signed-in account");
        return;
    }
    struct auth_claims claims;
    int rc = auth_verify(g->auth, tok, tlen, &claims);
    if (rc == ERR_TIMEOUT) {
        http_respond_error(req, 401, "token_expired", "the access token has expired; refresh it");
        return;
    }
    if (rc != 0) {
        http_respond_error(req, 401, "invalid_token", "the access token is not valid");
        return;
    }
    id.authenticated = 1;
    id.account_id = claims.account_id;
    id.roles = claims.roles;
    memcpy(id.sid, claims.sid, sizeof id.sid);

    int status = 0;
    unsigned roles = 0;
    int64_t account = 0;
    struct parked *p = park(g, req, rt, &id, pass, ud);
    rc = auth_session(g->auth, id.sid, on_session, p, &p->aop, &status, &roles, &account);
    if (rc == 0)
        return; /* parked until Redis answers */
    if (rc < 0) {
        status = rc;
        p->aop = NULL;
    }
    unpark(p);
    session_verdict(g, req, rt, &id, pass, ud, NULL, status, roles, account);
}
