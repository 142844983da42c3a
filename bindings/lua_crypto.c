/* lua_crypto.c -- require "mmo.crypto": password hashing, random tokens, digests.
 *
 *   crypto.hash_password(pw [, cost])  -> hash | nil, err
 *   crypto.verify_password(pw, hash)   -> true | false | nil, err
 *   crypto.random(n)                   -> n random bytes (1..256) as base64url, no padding
 *   crypto.sha256(s)                   -> lowercase hex (64 characters)
 *   crypto.hmac_sha256(key, s)         -> lowercase hex (64 characters)
 *   crypto.equal(a, b)                 -> boolean, in constant time for strings of one length
 *
 * hash_password: yescrypt through libxcrypt ("$y$j9T$<salt>$<hash>": method, cost and a fresh
 * random salt are in the string; store it whole). cost: 0 (the library default, 5; about
 * 15-80 ms of CPU depending on the machine) or 1..8 (each step roughly doubles time and
 * memory; the default uses 16 MB while it runs). pw: up to 511 bytes (libxcrypt's limit:
 * CRYPT_MAX_PASSPHRASE_SIZE - 1), no NUL byte; otherwise nil, "invalid".
 *
 * verify_password: true when pw hashes to hash, else false. A hash that is nil, not a string
 * libxcrypt accepts, or of a legacy method (DES, MD5 crypt) gives false after the same work
 * as a real check, against a dummy yescrypt setting of the default cost made once at first
 * use: a login for an unknown account takes as long as one with a wrong password (for hashes
 * made with the default cost). A pw that hash_password would refuse also gives false, after
 * the same work. The final comparison is constant-time (CRYPTO_memcmp).
 *
 * Both run on the node's worker threads (core/work.c) and yield the calling task meanwhile;
 * outside a task they raise. err: "busy" (the pool's queue is full: answer 503),
 * "unavailable" (the node runs without a pool), "closed" (node shutting down), "invalid"
 * (hash_password: see above), or a system error ("Cannot allocate memory"). The password is
 * copied into the job and wiped (explicit_bzero) once hashed; the Lua string itself stays
 * where Lua keeps it.
 *
 * random, sha256, hmac_sha256 and equal do not yield. random reads getrandom(2) (it waits
 * only at boot, until the kernel's pool is ready) and returns nil, err if the kernel fails.
 * Arguments of the wrong type, and n outside 1..256 or a cost outside 0..8, raise. */
#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "mem.h"
#include "work.h"

#include <crypt.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_PW     (CRYPT_MAX_PASSPHRASE_SIZE - 1) /* 511: crypt_rn refuses longer (ERANGE) */
#define MAX_COST   8
#define MAX_RANDOM 256

/* ---- the jobs -------------------------------------------------------------------------------
 * One struct per call, heap-allocated on the loop thread and freed there (job_free). The
 * worker reads kind/cost/pw/hash and writes rc/match/hash; the pool's mutex orders both sides
 * (written before work_submit, read after done). w and op are the loop thread's. */

enum { JOB_HASH, JOB_VERIFY };

struct job {
    struct lb_wait *w;
    struct work_op *op;
    int kind;
    unsigned long cost;
    int never; /* verify: pw cannot match (too long, NUL): do the work, answer false */
    int rc;    /* 0, ERR_INVALID or -errno */
    int match;
    char hash[CRYPT_OUTPUT_SIZE]; /* verify: the stored hash ("" if none); hash: the result */
    char pw[MAX_PW + 1];
};

static struct job *job_new(struct lb_wait *w, int kind, const char *pw, size_t len)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->w = w;
    j->kind = kind;
    memcpy(j->pw, pw, len);
    j->pw[len] = '\0';
    return j;
}

/* Also the release callback of work_op_cancel. */
static void job_free(void *ud)
{
    struct job *j = ud;
    explicit_bzero(j, sizeof *j);
    free(j);
}

/* The dummy setting for verifies without a usable hash: made once, on the first worker that
 * needs it. A fixed one if the library cannot make one (no entropy): only its cost matters. */
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char dummy[CRYPT_GENSALT_OUTPUT_SIZE];

static void make_dummy(void)
{
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, dummy, (int) sizeof dummy) == NULL)
        snprintf(dummy, sizeof dummy, "%s", "$y$j9T$Fp7Lhhm4Kzv0CWx2Shk3q/");
}

static int crypt_errno(void)
{
    return errno == ENOMEM ? -ENOMEM : ERR_INVALID;
}

/* On a worker thread. */
static void job_run(void *ud)
{
    struct job *j = ud;
    struct crypt_data *cd = xcalloc(1, sizeof *cd); /* 32 KB; zeroed, as crypt_rn wants */
    if (j->kind == JOB_HASH) {
        char setting[CRYPT_GENSALT_OUTPUT_SIZE];
        const char *h = NULL;
        if (crypt_gensalt_rn("$y$", j->cost, NULL, 0, setting, (int) sizeof setting) == NULL ||
            (h = crypt_rn(j->pw, setting, cd, (int) sizeof *cd)) == NULL)
            j->rc = crypt_errno();
        else
            snprintf(j->hash, sizeof j->hash, "%s", h); /* < CRYPT_OUTPUT_SIZE by contract */
    } else {
        const char *h = NULL;
        if (!j->never && j->hash[0] == '$' && crypt_checksalt(j->hash) == CRYPT_SALT_OK)
            h = crypt_rn(j->pw, j->hash, cd, (int) sizeof *cd);
        size_t n = h ? strlen(h) : 0;
        if (h != NULL && n == strlen(j->hash)) {
            j->match = CRYPTO_memcmp(h, j->hash, n) == 0;
        } else {
            pthread_once(&dummy_once, make_dummy);
            crypt_rn(j->pw, dummy, cd, (int) sizeof *cd);
            j->match = 0;
        }
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    explicit_bzero(j->pw, sizeof j->pw);
}

/* On the loop thread. */
static void job_done(int status, void *ud)
{
    struct job *j = ud;
    struct lb_wait *w = j->w;
    lua_State *co = lb_wait_thread(w);
    int rc = status < 0 ? status : j->rc;
    int n = 1;
    if (rc < 0)
        n = lb_push_err(co, rc);
    else if (j->kind == JOB_HASH)
        lua_pushstring(co, j->hash);
    else
        lua_pushboolean(co, j->match);
    job_free(j);
    lb_wait_resume(w, n);
}

/* The task is dropped (shutdown): forget the job; job_free runs once no worker uses it. */
static void cancel_job(void *ud)
{
    struct job *j = ud;
    work_op_cancel(j->op, job_free);
}

/* Queue j and yield; on a refusal ("busy", "closed"), return nil, err at once. */
static int submit(lua_State *L, struct work_pool *pool, struct job *j)
{
    struct lb_wait *w = j->w;
    int rc = work_submit(pool, job_run, job_done, j, &j->op);
    if (rc < 0) {
        job_free(j);
        return lb_wait_fail(L, w, rc);
    }
    lb_wait_on_cancel(w, cancel_job, j);
    return lua_yield(L, 0);
}

static int bad_password(const char *pw, size_t len)
{
    return len > MAX_PW || memchr(pw, '\0', len) != NULL;
}

/* ---- Lua functions ------------------------------------------------------------------------ */

static int l_hash_password(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *pw = luaL_checklstring(L, 1, &len);
    lua_Integer cost = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, cost >= 0 && cost <= MAX_COST, 2, "cost out of range (0..8)");
    struct lb_wait *w = lb_wait_begin(L); /* raises outside a task: nothing to undo yet */
    if (bad_password(pw, len))
        return lb_wait_fail(L, w, ERR_INVALID);
    if (ctx->work == NULL)
        return lb_wait_fail(L, w, ERR_UNAVAILABLE);
    struct job *j = job_new(w, JOB_HASH, pw, len);
    j->cost = (unsigned long) cost;
    return submit(L, ctx->work, j);
}

static int l_verify_password(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    size_t len, hlen = 0;
    const char *pw = luaL_checklstring(L, 1, &len);
    int t = lua_type(L, 2);
    luaL_argcheck(L, t == LUA_TSTRING || t == LUA_TNIL || t == LUA_TNONE, 2,
                  "string or nil expected");
    const char *hash = t == LUA_TSTRING ? lua_tolstring(L, 2, &hlen) : NULL;
    struct lb_wait *w = lb_wait_begin(L);
    if (ctx->work == NULL)
        return lb_wait_fail(L, w, ERR_UNAVAILABLE);
    int never = bad_password(pw, len);
    struct job *j = job_new(w, JOB_VERIFY, never ? "" : pw, never ? 0 : len);
    j->never = never;
    /* too long or with a NUL byte: not a crypt string; "" sends the job to the dummy */
    if (hash != NULL && hlen < sizeof j->hash && memchr(hash, '\0', hlen) == NULL)
        memcpy(j->hash, hash, hlen + 1);
    return submit(L, ctx->work, j);
}

static int l_random(lua_State *L)
{
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= MAX_RANDOM, 1, "n out of range (1..256)");
    unsigned char buf[MAX_RANDOM];
    for (size_t got = 0; got < (size_t) n;) {
        ssize_t r = getrandom(buf + got, (size_t) n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return lb_push_err(L, -errno);
        got += (size_t) r;
    }
    char out[(MAX_RANDOM + 2) / 3 * 4];
    size_t o = 0;
    for (size_t i = 0; i < (size_t) n; i += 3) {
        size_t left = (size_t) n - i;
        unsigned v = (unsigned) buf[i] << 16;
        if (left > 1)
            v |= (unsigned) buf[i + 1] << 8;
        if (left > 2)
            v |= buf[i + 2];
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        if (left > 1)
            out[o++] = B64[(v >> 6) & 63];
        if (left > 2)
            out[o++] = B64[v & 63];
    }
    explicit_bzero(buf, sizeof buf);
    lua_pushlstring(L, out, o);
    explicit_bzero(out, sizeof out);
    return 1;
}

/* [..] -> [.., hex] */
static void push_hex(lua_State *L, const unsigned char *md, unsigned n)
{
    static const char HEX[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = HEX[md[i] >> 4];
        out[2 * i + 1] = HEX[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t) n);
}

static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_Digest(s, len, md, &n, EVP_sha256(), NULL) != 1)
        return luaL_error(L, "sha256: libcrypto failed");
    push_hex(L, md, n);
    return 1;
}

static int l_hmac_sha256(lua_State *L)
{
    size_t klen, len;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *s = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, klen <= INT_MAX, 1, "key too long");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (HMAC(EVP_sha256(), key, (int) klen, (const unsigned char *) s, len, md, &n) == NULL)
        return luaL_error(L, "hmac_sha256: libcrypto failed");
    push_hex(L, md, n);
    return 1;
}

/* Strings of different lengths differ at once: only the length can leak. */
static int l_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
    return 1;
}

static const luaL_Reg FUNCS[] = {
    {"hash_password", l_hash_password},
    {"verify_password", l_verify_password},
    {"random", l_random},
    {"sha256", l_sha256},
    {"hmac_sha256", l_hmac_sha256},
    {"equal", l_equal},
    {NULL, NULL},
};

int luaopen_mmo_crypto(lua_State *L)
{
    luaL_newlibtable(L, FUNCS);
    lua_pushlightuserdata(L, lb_ctx(L)); /* borrowed for the VM's lifetime; ->work read per call */
    luaL_setfuncs(L, FUNCS, 1);
    return 1;
}
