/* stats.c -- latency histograms, small code tables, clocks and /proc sampling. */
#include "loadbot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Buckets: values below 64 us one each; above, 32 per power of two (3% wide). */
static int bucket_of(uint64_t us)
{
    if (us < 64)
        return (int) us;
    int e = 63 - __builtin_clzll(us); /* >= 6 */
    int i = 64 + (e - 6) * 32 + (int) ((us >> (e - 5)) & 31);
    return i < LB_HIST_BUCKETS ? i : LB_HIST_BUCKETS - 1;
}

/* The largest value that falls in bucket i. */
static uint64_t bucket_top(int i)
{
    if (i < 64)
        return (uint64_t) i;
    int e = (i - 64) / 32 + 6, sub = (i - 64) % 32;
    return ((uint64_t) (32 + sub + 1) << (e - 5)) - 1;
}

void hist_add(struct lb_hist *h, uint64_t us)
{
    h->n++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
    h->b[bucket_of(us)]++;
}

uint64_t hist_quantile(const struct lb_hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t) (q * (double) h->n + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (int i = 0; i < LB_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t top = bucket_top(i);
            return top < h->max_us ? top : h->max_us;
        }
    }
    return h->max_us;
}

void hist_merge(struct lb_hist *into, const struct lb_hist *from)
{
    into->n += from->n;
    into->sum_us += from->sum_us;
    if (from->max_us > into->max_us)
        into->max_us = from->max_us;
    for (int i = 0; i < LB_HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
}

void codes_add(struct lb_codes *c, const char *name, size_t len)
{
    if (len >= sizeof c->name[0])
        len = sizeof c->name[0] - 1;
    for (int i = 0; i < c->n; i++)
        if (strlen(c->name[i]) == len && memcmp(c->name[i], name, len) == 0) {
            c->count[i]++;
            return;
        }
    if (c->n == LB_MAX_CODES) {
        c->other++;
        return;
    }
    memcpy(c->name[c->n], name, len);
    c->name[c->n][len] = 0;
    /* keep it printable and JSON-safe */
    for (char *s = c->name[c->n]; *s; s++)
        if (*s < 0x20 || *s == '"' || *s == '\\' || (unsigned char) *s > 0x7e)
            *s = '?';
    c->count[c->n++] = 1;
}

uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int64_t machine_busy_us(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 4)
        return -1;
    /* user nice system idle iowait irq softirq steal (guest time is inside user) */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t) (busy * 1000000ull / (unsigned long long) (hz > 0 ? hz : 100));
}

uint64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

int64_t proc_cpu_us(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t) ((ut + st) * 1000000ull / (unsigned long long) (hz > 0 ? hz : 100));
}

long proc_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}
