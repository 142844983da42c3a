/* hash.c -- time one password hash the way the node makes them (tools/bench/run, login step).
 *
 *   hash N       hashes a fixed password N times (1..100) with a fresh setting from
 *                crypt_gensalt_rn("$y$", 0, ...): yescrypt at libxcrypt's default cost, as
 *                bindings/lua_crypto.c and core/migrate.c make it; one thread
 *
 * Prints one line: "setting=<$y$...$> n=N wall_ms=<median> user_ms=<median> sys_ms=<median>
 * minflt=<median>" (per hash; user/sys from getrusage of this thread's process). Exits 1 if
 * libxcrypt fails. Bounded: at most 100 hashes of well under a second each. */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double tv_ms(struct timeval a, struct timeval b)
{
    return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_usec - a.tv_usec) / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t) n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 5;
    if (n < 1 || n > 100) {
        fprintf(stderr, "usage: hash N (1..100)\n");
        return 2;
    }
    struct crypt_data *cd = calloc(1, sizeof *cd); /* 32 KB */
    double wall[100], user[100], sys[100], flt[100];
    char setting[CRYPT_GENSALT_OUTPUT_SIZE] = "";
    for (int i = 0; i < n; i++) {
        if (cd == NULL ||
            crypt_gensalt_rn("$y$", 0, NULL, 0, setting, (int) sizeof setting) == NULL) {
            perror("crypt_gensalt_rn");
            return 1;
        }
        struct rusage a, b;
        getrusage(RUSAGE_SELF, &a);
        double t0 = now_ms();
        const char *h = crypt_rn("bench-password-123", setting, cd, (int) sizeof *cd);
        double t1 = now_ms();
        getrusage(RUSAGE_SELF, &b);
        if (h == NULL || h[0] != '$') {
            perror("crypt_rn");
            return 1;
        }
        wall[i] = t1 - t0;
        user[i] = tv_ms(a.ru_utime, b.ru_utime);
        sys[i] = tv_ms(a.ru_stime, b.ru_stime);
        flt[i] = (double) (b.ru_minflt - a.ru_minflt);
    }
    /* the setting without its salt: "$y$j9T$" */
    char *salt = strrchr(setting, '$');
    if (salt)
        salt[1] = '\0';
    printf("setting=%s n=%d wall_ms=%.1f user_ms=%.1f sys_ms=%.1f minflt=%.0f\n", setting, n,
           median(wall, n), median(user, n), median(sys, n), median(flt, n));
    free(cd);
    return 0;
}
