/* auth.c -- JWT verification and signing (libjwt), the verified-token cache, session checks.
 *
 * Ownership: struct auth owns its keys, both caches (fixed arrays, allocated once: memory does
 * not grow with the number of tokens or sessions seen) and the pending session lookups. */
#include "auth.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "rds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jwt.h>

#define MAX_KEYS      8
#define MAX_TOKEN     4096
#define CLOCK_SKEW_S  5
#define SESSION_SLOTS 8192

struct key {
    char *kid;
    unsigned char *secret;
    int len;
};

struct token_slot {
    char *token; /* owned copy, NULL when empty */
    size_t len;
    struct auth_claims claims;
};

struct session_slot {
    char sid[AUTH_SID_MAX + 1]; /* "" when empty */
    int status;                 /* 0 alive, ERR_NOTFOUND revoked */
    unsigned roles;
    int64_t account_id;
    int64_t fetched_ms;
};

struct auth_op {
    struct auth *a;
    struct auth_op *prev, *next;
    struct rds_op *rop;
    auth_session_cb *cb;
    void *ud;
    char sid[AUTH_SID_MAX + 1];
};

struct auth {
    struct rds *rds;
    struct key keys[MAX_KEYS];
    int nkeys;
    int access_ttl_s;
    int session_cache_ms;
    int timeout_ms;
    struct token_slot *tokens;
    int ntokens;
    struct session_slot *sessions;
    struct auth_op *ops;
};

static const char *ROLE_NAMES[] = {"player", "moderator", "designer", "admin"};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- roles ----------------------------------------------------------------------------- */

unsigned auth_roles_parse(const char *list, size_t len)
{
    unsigned roles = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && list[j] != ',')
            j++;
        for (int r = 0; r < 4; r++)
            if (strlen(ROLE_NAMES[r]) == j - i && memcmp(ROLE_NAMES[r], list + i, j - i) == 0)
                roles |= 1u << r;
        i = j + 1;
    }
    return roles;
}

size_t auth_roles_format(unsigned roles, char *out, size_t cap)
{
    size_t o = 0;
    if (cap)
        out[0] = '\0';
    for (int r = 0; r < 4; r++) {
        if (!(roles & (1u << r)))
            continue;
        int n = snprintf(out + o, cap - o, "%s%s", o ? "," : "", ROLE_NAMES[r]);
        if (n < 0 || (size_t) n >= cap - o)
            break;
        o += (size_t) n;
    }
    return o;
}

int auth_roles_allow(unsigned roles, unsigned need)
{
    return (roles & AUTH_ROLE_ADMIN) || (roles & need) == need;
}

int auth_sid_valid(const char *sid, size_t len)
{
    if (len < 16 || len > AUTH_SID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = sid[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* ---- keys ------------------------------------------------------------------------------ */

static int add_key(struct auth *a, const char *kid, size_t kid_len, const char *secret, size_t len,
                   char *err, size_t cap)
{
    if (a->nkeys == MAX_KEYS) {
        snprintf(err, cap, "auth: at most %d keys", MAX_KEYS);
        return -1;
    }
    if (kid_len == 0 || kid_len > 32) {
        snprintf(err, cap, "auth: a key id must have 1 to 32 characters");
        return -1;
    }
    if (len < 32) {
        snprintf(err, cap, "auth: the key \"%.*s\" is shorter than 32 bytes", (int) kid_len, kid);
        return -1;
    }
    for (int i = 0; i < a->nkeys; i++)
        if (strlen(a->keys[i].kid) == kid_len && memcmp(a->keys[i].kid, kid, kid_len) == 0) {
            snprintf(err, cap, "auth: key id \"%.*s\" given twice", (int) kid_len, kid);
            return -1;
        }
    struct key *k = &a->keys[a->nkeys++];
    k->kid = xstrndup(kid, kid_len);
    k->secret = (unsigned char *) xstrndup(secret, len);
    k->len = (int) len;
    return 0;
}

struct auth *auth_new(struct rds *rds, const struct auth_opts *o, char *err, size_t cap)
{
    struct auth *a = xcalloc(1, sizeof *a);
    a->rds = rds;
    a->access_ttl_s = o->access_ttl_s;
    a->session_cache_ms = o->session_cache_ms;
    a->timeout_ms = o->timeout_ms;
    if (add_key(a, o->kid, strlen(o->kid), o->secret, strlen(o->secret), err, cap) < 0)
        goto fail;
    /* old keys: "kid:secret;kid:secret" */
    const char *p = o->old_keys ? o->old_keys : "";
    while (*p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t) (end - p) : strlen(p);
        const char *colon = memchr(p, ':', n);
        if (n > 0) {
            if (colon == NULL) {
                snprintf(err, cap, "auth: old keys must be \"kid:secret;kid:secret\"");
                goto fail;
            }
            if (add_key(a, p, (size_t) (colon - p), colon + 1, n - (size_t) (colon - p) - 1, err,
                        cap) < 0)
                goto fail;
        }
        p += n;
        if (*p == ';')
            p++;
    }
    a->ntokens = o->token_cache_size > 0 ? o->token_cache_size : 4096;
    a->tokens = xcalloc((size_t) a->ntokens, sizeof *a->tokens);
    a->sessions = xcalloc(SESSION_SLOTS, sizeof *a->sessions);
    return a;
fail:
    auth_free(a);
    return NULL;
}

void auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    while (a->ops) {
        struct auth_op *op = a->ops;
        a->ops = op->next;
        if (op->rop)
            rds_op_cancel(op->rop);
        op->cb(ERR_CLOSED, 0, 0, op->ud);
        free(op);
    }
    for (int i = 0; i < a->nkeys; i++) {
        free(a->keys[i].kid);
        explicit_bzero(a->keys[i].secret, (size_t) a->keys[i].len);
        free(a->keys[i].secret);
    }
    if (a->tokens)
        for (int i = 0; i < a->ntokens; i++)
            free(a->tokens[i].token);
    free(a->tokens);
    free(a->sessions);
    free(a);
}

/* ---- tokens ------------------------------------------------------------------------------ */

char *auth_sign(struct auth *a, int64_t account_id, const char *sid, unsigned roles, int *ttl_s)
{
    jwt_t *j = NULL;
    char *out = NULL;
    char buf[160], sub[32];
    time_t now = time(NULL);
    if (jwt_new(&j) != 0)
        return NULL;
    struct key *k = &a->keys[0];
    snprintf(sub, sizeof sub, "%lld", (long long) account_id);
    size_t o = (size_t) snprintf(buf, sizeof buf, "{\"roles\":[");
    for (int r = 0; r < 4; r++)
        if (roles & (1u << r))
            o += (size_t) snprintf(buf + o, sizeof buf - o, "%s\"%s\"",
                                   buf[o - 1] == '[' ? "" : ",", ROLE_NAMES[r]);
    snprintf(buf + o, sizeof buf - o, "]}");
    if (jwt_set_alg(j, JWT_ALG_HS256, k->secret, k->len) != 0 ||
        jwt_add_header(j, "kid", k->kid) != 0 || jwt_add_grant(j, "sub", sub) != 0 ||
        jwt_add_grant(j, "sid", sid) != 0 || jwt_add_grants_json(j, buf) != 0 ||
        jwt_add_grant_int(j, "iat", (long) now) != 0 ||
        jwt_add_grant_int(j, "nbf", (long) now) != 0 ||
        jwt_add_grant_int(j, "exp", (long) now + a->access_ttl_s) != 0)
        goto done;
    out = jwt_encode_str(j);
    if (ttl_s)
        *ttl_s = a->access_ttl_s;
done:
    jwt_free(j);
    return out;
}

/* roles claim: a JSON array of names, as jwt_get_grants_json returns it */
static unsigned roles_from_json(const char *json)
{
    unsigned roles = 0;
    const char *p = json;
    while (p && (p = strchr(p, '"')) != NULL) {
        const char *q = strchr(p + 1, '"');
        if (q == NULL)
            break;
        roles |= auth_roles_parse(p + 1, (size_t) (q - p - 1));
        p = q + 1;
    }
    return roles;
}

static int decode(struct auth *a, const char *token, struct auth_claims *out)
{
    jwt_t *j = NULL;
    int ki;
    for (ki = 0; ki < a->nkeys; ki++) {
        if (jwt_decode(&j, token, a->keys[ki].secret, a->keys[ki].len) == 0)
            break;
        j = NULL;
    }
    if (j == NULL)
        return ERR_INVALID;
    int rc = ERR_INVALID;
    time_t now = time(NULL);
    /* libjwt checks neither of these */
    if (jwt_get_alg(j) != JWT_ALG_HS256)
        goto done;
    const char *kid = jwt_get_header(j, "kid");
    if (kid == NULL || strcmp(kid, a->keys[ki].kid) != 0)
        goto done;
    errno = 0;
    long exp = jwt_get_grant_int(j, "exp");
    if (errno != 0 || exp <= 0)
        goto done; /* no exp: refused */
    if (exp > now + a->access_ttl_s + CLOCK_SKEW_S + 60)
        goto done; /* longer-lived than we ever sign */
    errno = 0;
    long nbf = jwt_get_grant_int(j, "nbf");
    if (errno == 0 && nbf > now + CLOCK_SKEW_S) {
        rc = ERR_TIMEOUT;
        goto done;
    }
    if (exp <= now) {
        rc = ERR_TIMEOUT;
        goto done;
    }
    const char *sub = jwt_get_grant(j, "sub");
    const char *sid = jwt_get_grant(j, "sid");
    if (sub == NULL || sid == NULL || !auth_sid_valid(sid, strlen(sid)))
        goto done;
    char *end;
    errno = 0;
    long long acct = strtoll(sub, &end, 10);
    if (errno || *end || acct <= 0)
        goto done;
    char *roles_json = jwt_get_grants_json(j, "roles");
    out->roles = roles_json ? roles_from_json(roles_json) : 0;
    free(roles_json);
    out->account_id = acct;
    out->exp = exp;
    snprintf(out->sid, sizeof out->sid, "%s", sid);
    rc = 0;
done:
    jwt_free(j);
    return rc;
}

int auth_verify(struct auth *a, const char *token, size_t len, struct auth_claims *out)
{
    if (len == 0 || len > MAX_TOKEN || memchr(token, '\0', len))
        return ERR_INVALID;
    /* the slot from the token's tail: a JWT ends in its HMAC, uniform already, and hashing a
     * whole 260-byte token byte by byte was the largest cost of a signed request; the full
     * compare below still decides */
    size_t tail = len > 32 ? len - 32 : 0;
    struct token_slot *slot = &a->tokens[fnv1a(token + tail, len - tail) % (uint64_t) a->ntokens];
    time_t now = time(NULL);
    if (slot->token && slot->len == len && memcmp(slot->token, token, len) == 0) {
        if (slot->claims.exp > now) {
            *out = slot->claims;
            return 0;
        }
        free(slot->token);
        slot->token = NULL;
        return ERR_TIMEOUT;
    }
    char *copy = xstrndup(token, len);
    int rc = decode(a, copy, out);
    if (rc == 0) {
        free(slot->token); /* one slot per hash: the newest token wins it */
        slot->token = copy;
        slot->len = len;
        slot->claims = *out;
    } else {
        free(copy);
    }
    return rc;
}

/* ---- sessions ------------------------------------------------------------------------------ */

static struct session_slot *session_slot(struct auth *a, const char *sid)
{
    return &a->sessions[fnv1a(sid, strlen(sid)) % SESSION_SLOTS];
}

void auth_session_forget(struct auth *a, const char *sid)
{
    struct session_slot *s = session_slot(a, sid);
    if (strcmp(s->sid, sid) == 0)
        s->sid[0] = '\0';
}

static void on_session(struct redisReply **replies, int n, int status, void *ud)
{
    struct auth_op *op = ud;
    struct auth *a = op->a;
    int st = status;
    unsigned roles = 0;
    int64_t acct = 0;
    if (status == 0) {
        struct redisReply *r = replies[0];
        st = ERR_PROTOCOL;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            struct redisReply *ra = r->element[0], *rr = r->element[1];
            if (ra->type == REDIS_REPLY_STRING && rr->type == REDIS_REPLY_STRING) {
                acct = strtoll(ra->str, NULL, 10);
                roles = auth_roles_parse(rr->str, rr->len);
                st = acct > 0 ? 0 : ERR_NOTFOUND;
            } else {
                st = ERR_NOTFOUND;
            }
        }
        if (st == 0 || st == ERR_NOTFOUND) {
            struct session_slot *s = session_slot(a, op->sid);
            snprintf(s->sid, sizeof s->sid, "%s", op->sid);
            s->status = st;
            s->roles = roles;
            s->account_id = acct;
            s->fetched_ms = now_ms();
        }
    }
    if (op->prev)
        op->prev->next = op->next;
    else
        a->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    auth_session_cb *cb = op->cb;
    void *cb_ud = op->ud;
    free(op);
    (void) n;
    cb(st, roles, acct, cb_ud);
}

int auth_session(struct auth *a, const char *sid, auth_session_cb *cb, void *ud,
                 struct auth_op **opp, int *status, unsigned *roles, int64_t *account_id)
{
    struct session_slot *s = session_slot(a, sid);
    if (s->sid[0] && strcmp(s->sid, sid) == 0 && now_ms() - s->fetched_ms < a->session_cache_ms) {
        *status = s->status;
        *roles = s->roles;
        *account_id = s->account_id;
        return 1;
    }
    if (a->rds == NULL)
        return ERR_UNAVAILABLE;
    char key[AUTH_SID_MAX + 8];
    int kn = snprintf(key, sizeof key, "sess:%s", sid);
    const char *argv[] = {"HMGET", key, "acct", "roles"};
    const size_t lens[] = {5, (size_t) kn, 4, 5};
    const char *const *argvs[] = {argv};
    const size_t *lenss[] = {lens};
    const int argc[] = {4};
    struct auth_op *op = xcalloc(1, sizeof *op);
    op->a = a;
    op->cb = cb;
    op->ud = ud;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    int rc = rds_batch(a->rds, 1, argc, argvs, lenss, a->timeout_ms, on_session, op, &op->rop);
    if (rc < 0) {
        free(op);
        return rc;
    }
    op->next = a->ops;
    if (a->ops)
        a->ops->prev = op;
    a->ops = op;
    if (opp)
        *opp = op;
    return 0;
}

void auth_op_cancel(struct auth_op *op)
{
    struct auth *a = op->a;
    rds_op_cancel(op->rop);
    if (op->prev)
        op->prev->next = op->next;
    else
        a->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    free(op);
}
