/* auth.h -- access tokens (JWT, HS256 by libjwt) and the session check, in C before any Lua.
 *
 * Tokens: signed with the current key (its key id in the header as "kid"); older keys still
 * verify until their tokens expire. libjwt 1.10 checks neither the algorithm nor exp/nbf, so
 * auth_verify does: alg must be HS256, kid must name the key that verified, exp must be in the
 * future and at most access_ttl_s (+ skew) ahead, nbf (if any) must be past, sub and sid well
 * formed. A key is always given to jwt_decode (never NULL: that would accept alg "none").
 * A verified token's claims are kept in a bounded cache until it expires, so the steady-state
 * cost of a request is a lookup.
 *
 * Sessions live in Redis as the hash sess:<sid> (fields acct, roles: "player,admin"), written
 * by the Lua handlers (scripts/handlers/auth.lua). auth_session checks that the session still
 * exists and reads its current roles; the answer is cached for session_cache_ms. The node that
 * revokes a session or changes roles calls auth_session_forget at once, so the change applies
 * to the very next request on that node; other nodes see it within session_cache_ms. */
#ifndef CORE_AUTH_H
#define CORE_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct rds;
struct auth;
struct auth_op;

enum {
    AUTH_ROLE_PLAYER = 1,
    AUTH_ROLE_MODERATOR = 2,
    AUTH_ROLE_DESIGNER = 4,
    AUTH_ROLE_ADMIN = 8,
};

#define AUTH_SID_MAX 64

struct auth_claims {
    int64_t account_id;
    char sid[AUTH_SID_MAX + 1];
    unsigned roles; /* from the token; the session's roles win (auth_session) */
    int64_t exp;    /* seconds since the epoch */
};

struct auth_opts {
    const char *secret;   /* current signing key (>= 32 bytes); copied */
    const char *kid;      /* its key id; copied */
    const char *old_keys; /* "kid:secret;kid:secret" still accepted; copied; may be NULL */
    int access_ttl_s;     /* <= 900 */
    int session_cache_ms;
    int token_cache_size; /* slots of the verified-token cache */
    int timeout_ms;       /* Redis lookups */
};

/* status 0: the session exists (roles, account filled); ERR_NOTFOUND: revoked or expired;
 * ERR_UNAVAILABLE / ERR_TIMEOUT: Redis could not say. */
typedef void auth_session_cb(int status, unsigned roles, int64_t account_id, void *ud);

/* NULL with a message in err when a key is unusable (too short, bad old_keys syntax). */
struct auth *auth_new(struct rds *rds, const struct auth_opts *opts, char *err, size_t cap);
void auth_free(struct auth *a);

/* Verify a token (len bytes, not NUL-terminated). 0 and *out filled, or ERR_INVALID
 * (malformed, bad signature, wrong alg or kid) or ERR_TIMEOUT (expired / not yet valid). */
int auth_verify(struct auth *a, const char *token, size_t len, struct auth_claims *out);
/* A new access token (malloc'd, caller frees) for these claims; *ttl_s gets its lifetime. */
char *auth_sign(struct auth *a, int64_t account_id, const char *sid, unsigned roles, int *ttl_s);

/* Is session sid (NUL-terminated) alive? Returns 1 when answered from the cache (status,
 * roles and account in the out-params; cb never fires), 0 when a Redis lookup is under way
 * (cb fires exactly once, never from inside this call), or < 0 (cb never fires). */
int auth_session(struct auth *a, const char *sid, auth_session_cb *cb, void *ud,
                 struct auth_op **op, int *status, unsigned *roles, int64_t *account_id);
void auth_op_cancel(struct auth_op *op);
/* Drop what this node knows of session sid: the next request looks it up again. */
void auth_session_forget(struct auth *a, const char *sid);

/* "player,admin" -> bitmask (unknown names ignored); and back ("player,admin"). */
unsigned auth_roles_parse(const char *list, size_t len);
size_t auth_roles_format(unsigned roles, char *out, size_t cap);
/* Does a holder of roles pass a route that needs `need` (one AUTH_ROLE_*)? admin passes all. */
int auth_roles_allow(unsigned roles, unsigned need);
/* A session id is 16..64 characters of [A-Za-z0-9_-]. */
int auth_sid_valid(const char *sid, size_t len);

#endif
