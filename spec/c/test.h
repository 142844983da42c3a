/* test.h -- a tiny harness for the C unit tests (one executable per core module, run by ctest).
 *
 *     TEST(parses_get) { ASSERT_EQ(1, 1); }
 *     int main(void) { RUN(parses_get); return test_summary(); }
 *
 * A failed ASSERT_* prints file:line and returns from the test; the executable exits non-zero
 * when any test failed. */
#ifndef SPEC_C_TEST_H
#define SPEC_C_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int test__failed;
static int test__run;
static int test__cur_failed;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                                  \
    do {                                                                                           \
        test__cur_failed = 0;                                                                      \
        test__run++;                                                                               \
        test_##name();                                                                             \
        printf("%s %s\n", test__cur_failed ? "not ok" : "ok", #name);                              \
        if (test__cur_failed)                                                                      \
            test__failed++;                                                                        \
    } while (0)

#define FAIL_AT(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        test__cur_failed = 1;                                                                      \
        return;                                                                                    \
    } while (0)

#define ASSERT(e)                                                                                  \
    do {                                                                                           \
        if (!(e))                                                                                  \
            FAIL_AT("assertion failed: %s", #e);                                                   \
    } while (0)
#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long) (a), b_ = (long long) (b);                                      \
        if (a_ != b_)                                                                              \
            FAIL_AT("%s == %s: %lld != %lld", #a, #b, a_, b_);                                     \
    } while (0)
#define ASSERT_OK(e) ASSERT_EQ((e), 0)
#define ASSERT_STR(a, b)                                                                           \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            FAIL_AT("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    } while (0)

static inline int test_summary(void)
{
    printf("%d tests, %d failed\n", test__run, test__failed);
    return test__failed ? 1 : 0;
}

/* Environment variable that a test needs; tools/dev test sets them. Missing is a failure. */
static inline const char *test_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        fprintf(stderr, "%s is not set: run the C tests through `tools/dev test`\n", name);
        exit(2);
    }
    return v;
}

/* A monotonic clock in milliseconds (for deadlines in tests). */
static inline double test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* MMO_TEST_REDIS ("host:port", set by tools/dev test) into host (cap bytes) and *port. */
static inline void test_redis_addr(char *host, size_t cap, int *port)
{
    const char *v = test_env("MMO_TEST_REDIS");
    const char *colon = strrchr(v, ':');
    if (colon == NULL || (size_t) (colon - v) >= cap) {
        fprintf(stderr, "MMO_TEST_REDIS must be host:port, got %s\n", v);
        exit(2);
    }
    memcpy(host, v, (size_t) (colon - v));
    host[colon - v] = '\0';
    *port = atoi(colon + 1);
}

#endif
