/* test_router.c -- core/router.c: templates, precedence, 404 vs 405, bad routes. */
#include "test.h"

#include "err.h"
#include "router.h"

#define MATCH(r, m, p, out) router_match((r), (m), strlen(m), (p), strlen(p), (out))

TEST(literal_and_params)
{
    struct router *r = router_new();
    const char *why = NULL;
    ASSERT_OK(router_add(r, "GET", "/api/players", 0, &why));
    ASSERT_OK(router_add(r, "GET", "/api/players/:id", 1, &why));
    ASSERT_OK(router_add(r, "POST", "/api/players/:id/inventory/use", 2, &why));
    struct router_match m;
    ASSERT_OK(MATCH(r, "GET", "/api/players", &m));
    ASSERT_EQ(m.route_id, 0);
    ASSERT_EQ(m.nparams, 0);
    ASSERT_OK(MATCH(r, "GET", "/api/players/42", &m));
    ASSERT_EQ(m.route_id, 1);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_STR(m.params[0].name, "id");
    ASSERT_EQ(m.params[0].len, 2);
    ASSERT(memcmp(m.params[0].value, "42", 2) == 0);
    ASSERT_OK(MATCH(r, "POST", "/api/players/7/inventory/use", &m));
    ASSERT_EQ(m.route_id, 2);
    router_free(r);
}

TEST(literal_wins_with_backtracking)
{
    struct router *r = router_new();
    const char *why = NULL;
    ASSERT_OK(router_add(r, "GET", "/a/me", 0, &why));
    ASSERT_OK(router_add(r, "GET", "/a/:id/x", 1, &why));
    ASSERT_OK(router_add(r, "GET", "/a/:id", 2, &why));
    struct router_match m;
    ASSERT_OK(MATCH(r, "GET", "/a/me", &m));
    ASSERT_EQ(m.route_id, 0);
    /* "me" is literal at depth 1, but only the param branch has /x below it */
    ASSERT_OK(MATCH(r, "GET", "/a/me/x", &m));
    ASSERT_EQ(m.route_id, 1);
    ASSERT_EQ(m.nparams, 1);
    ASSERT_OK(MATCH(r, "GET", "/a/other", &m));
    ASSERT_EQ(m.route_id, 2);
    router_free(r);
}

TEST(not_found_and_method_not_allowed)
{
    struct router *r = router_new();
    const char *why = NULL;
    ASSERT_OK(router_add(r, "GET", "/x", 0, &why));
    ASSERT_OK(router_add(r, "DELETE", "/x", 1, &why));
    struct router_match m;
    ASSERT_EQ(MATCH(r, "GET", "/y", &m), ERR_NOTFOUND);
    ASSERT_EQ(MATCH(r, "GET", "/x/", &m), ERR_NOTFOUND);
    ASSERT_EQ(MATCH(r, "GET", "//x", &m), ERR_NOTFOUND);
    ASSERT_EQ(MATCH(r, "GET", "", &m), ERR_NOTFOUND);
    ASSERT_EQ(MATCH(r, "GET", "x", &m), ERR_NOTFOUND);
    ASSERT_EQ(MATCH(r, "POST", "/x", &m), ROUTER_NOMETHOD);
    ASSERT_EQ(MATCH(r, "BREW", "/x", &m), ROUTER_NOMETHOD);
    ASSERT_OK(MATCH(r, "HEAD", "/x", &m)); /* HEAD falls back to GET */
    ASSERT_EQ(m.route_id, 0);
    char allow[64];
    router_allow(r, "/x", 2, allow, sizeof allow);
    ASSERT_STR(allow, "GET, HEAD, DELETE");
    router_free(r);
}

TEST(bad_routes_are_refused)
{
    struct router *r = router_new();
    const char *why = NULL;
    ASSERT_EQ(router_add(r, "FETCH", "/x", 0, &why), -1);
    ASSERT_STR(why, "unknown method");
    ASSERT_EQ(router_add(r, "GET", "x", 0, &why), -1);
    ASSERT_EQ(router_add(r, "GET", "/a//b", 0, &why), -1);
    ASSERT_EQ(router_add(r, "GET", "/a/", 0, &why), -1);
    ASSERT_EQ(router_add(r, "GET", "/a/:", 0, &why), -1);
    ASSERT_EQ(router_add(r, "GET", "/a b", 0, &why), -1);
    ASSERT_OK(router_add(r, "GET", "/p/:id", 0, &why));
    ASSERT_EQ(router_add(r, "GET", "/p/:id", 1, &why), -1);
    ASSERT_STR(why, "duplicate route");
    ASSERT_EQ(router_add(r, "POST", "/p/:name", 1, &why), -1);
    ASSERT_EQ(router_add(r, "GET", "/:a/:b/:c/:d/:e/:f/:g/:h/:i", 2, &why), -1);
    ASSERT_STR(why, "too many parameters");
    ASSERT_EQ(router_count(r), 1);
    router_free(r);
}

TEST(many_routes)
{
    struct router *r = router_new();
    const char *why = NULL;
    char path[64];
    for (int i = 0; i < 500; i++) {
        snprintf(path, sizeof path, "/api/r%d/:id", i);
        ASSERT_OK(router_add(r, "GET", path, i, &why));
    }
    struct router_match m;
    for (int i = 0; i < 500; i += 37) {
        snprintf(path, sizeof path, "/api/r%d/abc", i);
        ASSERT_OK(MATCH(r, "GET", path, &m));
        ASSERT_EQ(m.route_id, i);
    }
    router_free(r);
}

int main(void)
{
    RUN(literal_and_params);
    RUN(literal_wins_with_backtracking);
    RUN(not_found_and_method_not_allowed);
    RUN(bad_routes_are_refused);
    RUN(many_routes);
    return test_summary();
}
