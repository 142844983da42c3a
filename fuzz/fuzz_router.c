/* fuzz_router.c -- core/router.c: router_match and router_allow on a fuzzed method and path,
 * against a router holding the templates of scripts/routes.lua (as core/script.c builds it).
 *
 * Input: "METHOD PATH" (split at the first space; no space: the whole input is a GET path).
 * The path is given as the HTTP layer gives it: raw bytes, not NUL-terminated. Checks: a match
 * has a valid route id and at most ROUTER_MAX_PARAMS parameters, each inside the path. */
#include "err.h"
#include "router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const ROUTES[][2] = {
    {"POST", "/api/auth/register"},
    {"POST", "/api/auth/login"},
    {"POST", "/api/auth/refresh"},
    {"POST", "/api/auth/logout"},
    {"GET", "/api/me"},
    {"POST", "/api/admin/accounts/:id/roles"},
    {"POST", "/api/admin/accounts/:id/ban"},
    {"POST", "/api/admin/accounts/:id/kick"},
    {"GET", "/api/admin/audit"},
    {"GET", "/api/admin/log"},
    {"PUT", "/api/admin/log"},
    {"POST", "/api/admin/scripts/reload"},
    {"POST", "/api/players"},
    {"GET", "/api/players"},
    {"GET", "/api/players/:id"},
    {"PATCH", "/api/players/:id"},
    {"DELETE", "/api/players/:id"},
    {"GET", "/api/players/:id/inventory"},
    {"POST", "/api/players/:id/inventory/use"},
    {"POST", "/api/admin/players/:id/items"},
    {"GET", "/api/world/regions"},
    {"GET", "/api/world/regions/:region/zones/:zone"},
    {"OPTIONS", "/api/trades/:a/:b/:c/:d/:e/:f/:g/:h"},
    {"GET", "/"},
};
#define NROUTES ((int) (sizeof ROUTES / sizeof ROUTES[0]))

static struct router *R;

static void setup(void)
{
    R = router_new();
    for (int i = 0; i < NROUTES; i++) {
        const char *why = NULL;
        if (router_add(R, ROUTES[i][0], ROUTES[i][1], i, &why) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (R == NULL)
        setup();
    const char *in = (const char *) data;
    const char *sp = memchr(in, ' ', size);
    const char *method = "GET", *path = in;
    size_t mlen = 3, plen = size;
    if (sp) {
        method = in;
        mlen = (size_t) (sp - in);
        path = sp + 1;
        plen = size - mlen - 1;
    }
    /* copies of exactly the right size, so ASan sees any read past the end */
    char *m = malloc(mlen ? mlen : 1), *p = malloc(plen ? plen : 1);
    memcpy(m, method, mlen);
    memcpy(p, path, plen);
    struct router_match rm;
    int rc = router_match(R, m, mlen, p, plen, &rm);
    if (rc == 0) {
        if (rm.route_id < 0 || rm.route_id >= NROUTES || rm.nparams < 0 ||
            rm.nparams > ROUTER_MAX_PARAMS)
            abort();
        for (int i = 0; i < rm.nparams; i++)
            if (rm.params[i].value < p || rm.params[i].value + rm.params[i].len > p + plen)
                abort();
    } else if (rc != ROUTER_NOMETHOD && rc != ERR_NOTFOUND) {
        abort();
    }
    char allow[128];
    size_t n = router_allow(R, p, plen, allow, sizeof allow);
    if (n >= sizeof allow)
        abort();
    free(m);
    free(p);
    return 0;
}
