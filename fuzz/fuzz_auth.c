/* fuzz_auth.c -- core/auth.c: auth_verify on untrusted access tokens (the Authorization header
 * and the WebSocket's token, core/gate.c), with a fixed key "k1" and an older key "k0".
 *
 * The first byte picks the mode:
 *   even: the rest is the token, as a client sends it (signature checks, mostly refusals);
 *   odd:  the rest is "<header JSON>\n<claims JSON>", signed here with a key the node accepts
 *         (byte 0 bit 1: the old key), so the claim checks after the signature (alg, kid, exp,
 *         nbf, sub, sid, roles) see fuzzed values; byte 0 bit 2: an "exp" claim is added at
 *         now + 60 * ((byte 0 >> 3) - 8) seconds, so seeds stay valid as time passes.
 * Each token is verified twice: the second answer comes from the verified-token cache and must
 * be the same. */
#include "auth.h"
#include "err.h"

#include <jwt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET     "fuzz-secret-0123456789abcdef0123456789"
#define OLD_SECRET "fuzz-old-secret-0123456789abcdef012345"

static struct auth *A;

static void setup(void)
{
    struct auth_opts o = {
        .secret = SECRET,
        .kid = "k1",
        .old_keys = "k0:" OLD_SECRET,
        .access_ttl_s = 900,
        .session_cache_ms = 1000,
        .token_cache_size = 64,
        .timeout_ms = 1000,
    };
    char err[256];
    A = auth_new(NULL, &o, err, sizeof err);
    if (A == NULL)
        abort();
}

static void verify(const char *token, size_t len)
{
    struct auth_claims c1, c2;
    int rc1 = auth_verify(A, token, len, &c1);
    int rc2 = auth_verify(A, token, len, &c2);
    if (rc1 != 0 && rc1 != ERR_INVALID && rc1 != ERR_TIMEOUT)
        abort();
    if (rc1 == 0) {
        /* a verified token: well-formed claims, and the cached answer agrees */
        if (c1.account_id <= 0 || !auth_sid_valid(c1.sid, strlen(c1.sid)))
            abort();
        if (rc2 != 0 || c2.account_id != c1.account_id || strcmp(c2.sid, c1.sid) != 0 ||
            c2.roles != c1.roles || c2.exp != c1.exp)
            abort();
    }
}

static void signed_token(const uint8_t *data, size_t size, int old, int exp_at)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL)
        return;
    char *head = strndup((const char *) data, (size_t) (nl - data));
    char *claims = strndup((const char *) nl + 1, size - (size_t) (nl - data) - 1);
    jwt_t *j = NULL;
    char *tok = NULL;
    if (head == NULL || claims == NULL || jwt_new(&j) != 0)
        goto done;
    const char *key = old ? OLD_SECRET : SECRET;
    if (jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *) key, (int) strlen(key)) != 0)
        goto done;
    if ((head[0] && jwt_add_headers_json(j, head) != 0) || jwt_add_grants_json(j, claims) != 0)
        goto done;
    if (exp_at && jwt_add_grant_int(j, "exp", (long) time(NULL) + 60L * (exp_at - 9)) != 0)
        goto done;
    tok = jwt_encode_str(j);
    if (tok)
        verify(tok, strlen(tok));
done:
    free(tok);
    jwt_free(j);
    free(head);
    free(claims);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (A == NULL)
        setup();
    if (size < 1)
        return 0;
    if (data[0] & 1)
        signed_token(data + 1, size - 1, (data[0] & 2) != 0,
                     (data[0] & 4) ? 1 + (data[0] >> 3) : 0);
    else
        verify((const char *) data + 1, size - 1);
    return 0;
}
