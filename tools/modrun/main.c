/* modrun -- try mods without a node: load a directory of mods the way the node does
 * (core/mods.h) and feed them events from the command line (docs/modding.md).
 *
 *   modrun [options] DIR [EVENT JSON]...
 *       prints each mod in load order, "NAME VERSION: STATE" (and why, if it is not running),
 *       then emits each event in turn: "EVENT: N handlers", every game.send as
 *       "send PLAYER JSON", and the mods whose state changed or that took a strike
 *       ("NAME VERSION: running, strike 1 of 3: why"). game.log lines and failures go to
 *       stderr, as the node logs them.
 *   modrun --bench N [options] DIR EVENT JSON
 *       emits the event N times and prints the time per emit.
 *
 *   options: --memory-mb N (16)  --instructions N (1000000)  --time-ms N (100)
 *            --strikes N (3): config.lua's mods.memory_mb, mods.instructions, mods.time_ms,
 *            mods.strikes
 *
 * Exits 1 on bad usage or an unreadable directory, 2 when a mod failed or got disabled. */
#include "log.h"
#include "mods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int quiet;

static void on_send(void *ud, int64_t player, const char *json, size_t len)
{
    if (!quiet)
        printf("send %lld %.*s\n", (long long) player, (int) len, json);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: modrun [--bench N] [--memory-mb N] [--instructions N] "
                    "[--time-ms N] [--strikes N] DIR [EVENT JSON]...\n");
    exit(1);
}

/* what was last printed of each mod */
struct seen {
    const char *state;
    int strikes;
};

/* Print the mods whose state or strikes differ from seen (all when all is set); remember them.
 * 1 when a mod is not running. */
static int report(struct mods *m, struct seen *seen, int strikes, int all)
{
    int bad = 0;
    for (int i = 0; i < mods_count(m); i++) {
        struct mods_info mi;
        mods_info(m, i, &mi);
        if (all || strcmp(seen[i].state, mi.state) != 0 || seen[i].strikes != mi.strikes) {
            printf("%s%s%s: %s", mi.name, mi.version ? " " : "", mi.version ? mi.version : "",
                   mi.state);
            if (mi.error)
                printf(": %s", mi.error);
            else if (mi.strikes)
                printf(", strike %d of %d: %s", mi.strikes, strikes, mi.last_strike);
            printf("\n");
        }
        seen[i].state = mi.state;
        seen[i].strikes = mi.strikes;
        bad |= strcmp(mi.state, "running") != 0;
    }
    return bad;
}

int main(int argc, char **argv)
{
    struct mods_limits lim = {16u << 20, 1000000, 100, 3};
    long bench = 0;
    int a = 1;
    for (; a < argc && strncmp(argv[a], "--", 2) == 0; a += 2) {
        if (a + 1 >= argc)
            usage();
        long v = strtol(argv[a + 1], NULL, 10);
        if (v <= 0)
            usage();
        if (strcmp(argv[a], "--bench") == 0)
            bench = v;
        else if (strcmp(argv[a], "--memory-mb") == 0)
            lim.memory_bytes = (size_t) v << 20;
        else if (strcmp(argv[a], "--instructions") == 0)
            lim.instructions = v;
        else if (strcmp(argv[a], "--time-ms") == 0)
            lim.time_ms = v;
        else if (strcmp(argv[a], "--strikes") == 0 && v <= 1000)
            lim.strikes = (int) v;
        else
            usage();
    }
    if (a >= argc || (argc - a - 1) % 2 != 0 || (bench && argc - a != 3))
        usage();
    log_init("modrun", LOG_INFO);
    log_set_fd(2);
    struct mods_host host = {NULL, on_send, NULL};
    char err[512];
    struct mods *m = mods_load(argv[a], &lim, &host, NULL, err, sizeof err);
    if (m == NULL) {
        fprintf(stderr, "modrun: %s\n", err);
        return 1;
    }
    struct seen *seen = calloc((size_t) mods_count(m) + 1, sizeof *seen);
    report(m, seen, lim.strikes, 1);
    int rc = 0;
    if (bench) {
        const char *ev = argv[a + 1], *json = argv[a + 2];
        size_t len = strlen(json);
        quiet = 1;
        double t0 = now_s();
        long ran = 0;
        for (long i = 0; i < bench; i++) {
            int n = mods_emit(m, ev, json, len);
            ran += n > 0 ? n : 0;
        }
        double dt = now_s() - t0;
        printf("%ld emits of %s: %.3f us per emit, %ld handlers ran\n", bench, ev,
               dt / (double) bench * 1e6, ran);
    } else {
        for (int i = a + 1; i + 1 < argc; i += 2) {
            int n = mods_emit(m, argv[i], argv[i + 1], strlen(argv[i + 1]));
            if (n < 0)
                printf("%s: refused (the name is not an event name, or the payload not a JSON "
                       "object)\n",
                       argv[i]);
            else
                printf("%s: %d handler%s\n", argv[i], n, n == 1 ? "" : "s");
            report(m, seen, lim.strikes, 0);
        }
    }
    if (report(m, seen, lim.strikes, 0))
        rc = 2;
    free(seen);
    mods_free(m);
    log_deinit();
    return rc;
}
