/* metrics.c -- the metrics registry and its text exposition (metrics.h). */
#include "metrics.h"
#include "mem.h"

#include <event2/buffer.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 256
#define MAX_COLLECT  16

struct metric_series {
    char **values;
    double value; /* counter, gauge; a histogram's sum */
    uint64_t count;
    uint64_t *buckets; /* cumulative at render time, per-bucket here */
    uint64_t hash;
    const struct metric_family *fam;
    struct metric_series *next;
};

struct metric_family {
    char *name, *help;
    enum metric_type type;
    int nlabels;
    char *labels[METRICS_MAX_LABELS];
    double bounds[METRICS_MAX_BUCKETS];
    int nbounds;
    struct metric_series **slots;
    size_t nslots;
    int nseries, cap;
    struct metric_series *only; /* the series of a family without labels */
    struct metrics *m;
};

struct metrics {
    struct metric_family *fam[MAX_FAMILIES];
    int nfam;
    struct metric_family *dropped; /* mmo_metrics_dropped_series_total{metric} */
    struct {
        metrics_collect_fn *fn;
        void *ud;
    } collect[MAX_COLLECT];
    int ncollect;
};

static const double DEFAULT_BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static int valid_name(const char *s)
{
    if (s == NULL || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return 0;
    return strlen(s) <= 100;
}

struct metrics *metrics_new(void)
{
    struct metrics *m = xcalloc(1, sizeof *m);
    const char *lab[] = {"metric"};
    m->dropped = metrics_family(m, "mmo_metrics_dropped_series_total",
                                "Label sets refused because the metric had reached its cap",
                                METRIC_COUNTER, 1, lab, NULL, 0, NULL);
    return m;
}

static void free_series(struct metric_family *f, struct metric_series *s)
{
    for (int i = 0; i < f->nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s);
}

static void clear(struct metric_family *f)
{
    for (size_t i = 0; i < f->nslots; i++) {
        struct metric_series *s = f->slots[i];
        while (s) {
            struct metric_series *next = s->next;
            free_series(f, s);
            s = next;
        }
        f->slots[i] = NULL;
    }
    f->nseries = 0;
    f->only = NULL;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->nfam; i++) {
        struct metric_family *f = m->fam[i];
        clear(f);
        free(f->slots);
        for (int k = 0; k < f->nlabels; k++)
            free(f->labels[k]);
        free(f->name);
        free(f->help);
        free(f);
    }
    free(m);
}

struct metric_family *metrics_family(struct metrics *m, const char *name, const char *help,
                                     enum metric_type type, int nlabels, const char *const *labels,
                                     const double *buckets, int nbuckets, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    if (!valid_name(name)) {
        *why = "a metric name is [a-zA-Z_][a-zA-Z0-9_]*";
        return NULL;
    }
    if (nlabels < 0 || nlabels > METRICS_MAX_LABELS) {
        *why = "at most 4 labels";
        return NULL;
    }
    for (int i = 0; i < nlabels; i++)
        if (!valid_name(labels[i]) || strncmp(labels[i], "__", 2) == 0 ||
            strcmp(labels[i], "le") == 0) {
            *why = "a label name is [a-zA-Z_][a-zA-Z0-9_]*, not le nor __*";
            return NULL;
        }
    for (int i = 0; i < m->nfam; i++) {
        struct metric_family *f = m->fam[i];
        if (strcmp(f->name, name) != 0)
            continue;
        int same = f->type == type && f->nlabels == nlabels;
        for (int k = 0; same && k < nlabels; k++)
            same = strcmp(f->labels[k], labels[k]) == 0;
        if (!same) {
            *why = "a metric of that name exists with another type or other labels";
            return NULL;
        }
        return f;
    }
    if (m->nfam >= MAX_FAMILIES) {
        *why = "too many metrics";
        return NULL;
    }
    if (buckets == NULL || nbuckets <= 0) {
        buckets = DEFAULT_BUCKETS;
        nbuckets = (int) (sizeof DEFAULT_BUCKETS / sizeof DEFAULT_BUCKETS[0]);
    }
    if (type == METRIC_HISTOGRAM) {
        if (nbuckets > METRICS_MAX_BUCKETS) {
            *why = "at most 24 buckets";
            return NULL;
        }
        for (int i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
                *why = "buckets must be finite and increasing";
                return NULL;
            }
    }
    struct metric_family *f = xcalloc(1, sizeof *f);
    f->name = xstrdup(name);
    f->help = xstrdup(help ? help : "");
    f->type = type;
    f->nlabels = nlabels;
    for (int i = 0; i < nlabels; i++)
        f->labels[i] = xstrdup(labels[i]);
    if (type == METRIC_HISTOGRAM) {
        memcpy(f->bounds, buckets, sizeof(double) * (size_t) nbuckets);
        f->nbounds = nbuckets;
    }
    f->nslots = 64;
    f->slots = xcalloc(f->nslots, sizeof *f->slots);
    f->cap = METRICS_DEFAULT_CAP;
    f->m = m;
    m->fam[m->nfam++] = f;
    return f;
}

static uint64_t hash_values(int n, const char *const *v)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *) v[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0x1f) * 1099511628211ULL;
    }
    return h;
}

static void grow(struct metric_family *f)
{
    size_t n = f->nslots * 2;
    struct metric_series **slots = xcalloc(n, sizeof *slots);
    for (size_t i = 0; i < f->nslots; i++) {
        struct metric_series *s = f->slots[i];
        while (s) {
            struct metric_series *next = s->next;
            s->next = slots[s->hash % n];
            slots[s->hash % n] = s;
            s = next;
        }
    }
    free(f->slots);
    f->slots = slots;
    f->nslots = n;
}

struct metric_series *metrics_series(struct metric_family *f, const char *const *values)
{
    if (f == NULL)
        return NULL;
    if (f->nlabels == 0 && f->only)
        return f->only;
    uint64_t h = hash_values(f->nlabels, values);
    for (struct metric_series *s = f->slots[h % f->nslots]; s; s = s->next) {
        if (s->hash != h)
            continue;
        int same = 1;
        for (int i = 0; same && i < f->nlabels; i++)
            same = strcmp(s->values[i], values[i]) == 0;
        if (same)
            return s;
    }
    if (f->nseries >= f->cap) {
        if (f != f->m->dropped) {
            const char *name = f->name;
            metrics_inc(metrics_series(f->m->dropped, &name), 1);
        }
        return NULL;
    }
    struct metric_series *s = xcalloc(1, sizeof *s);
    s->hash = h;
    s->fam = f;
    s->values = xcalloc((size_t) (f->nlabels ? f->nlabels : 1), sizeof *s->values);
    for (int i = 0; i < f->nlabels; i++)
        s->values[i] = xstrdup(values[i] ? values[i] : "");
    if (f->type == METRIC_HISTOGRAM)
        s->buckets = xcalloc((size_t) f->nbounds, sizeof *s->buckets);
    if ((size_t) f->nseries >= f->nslots)
        grow(f);
    s->next = f->slots[h % f->nslots];
    f->slots[h % f->nslots] = s;
    f->nseries++;
    if (f->nlabels == 0)
        f->only = s;
    return s;
}

struct metric_series *metrics_only(struct metric_family *f)
{
    return metrics_series(f, NULL);
}

void metrics_inc(struct metric_series *s, double by)
{
    if (s)
        s->value += by;
}

void metrics_set(struct metric_series *s, double v)
{
    if (s)
        s->value = v;
}

void metrics_observe(struct metric_series *s, double v)
{
    if (s == NULL || s->buckets == NULL || !isfinite(v))
        return;
    s->value += v;
    s->count++;
    const struct metric_family *f = s->fam;
    for (int b = 0; b < f->nbounds; b++)
        if (v <= f->bounds[b]) {
            s->buckets[b]++;
            break;
        }
}

void metrics_reset(struct metric_family *f)
{
    if (f)
        clear(f);
}

void metrics_collect(struct metrics *m)
{
    for (int i = 0; i < m->ncollect; i++)
        m->collect[i].fn(m, m->collect[i].ud);
}

int metrics_read(struct metrics *m, const char *name, const char *label, const char *value,
                 struct metrics_reading *out)
{
    memset(out, 0, sizeof *out);
    const struct metric_family *f = NULL;
    for (int i = 0; i < m->nfam && f == NULL; i++)
        if (strcmp(m->fam[i]->name, name) == 0)
            f = m->fam[i];
    if (f == NULL)
        return -1;
    int li = -1;
    if (label) {
        for (int i = 0; i < f->nlabels; i++)
            if (strcmp(f->labels[i], label) == 0)
                li = i;
        if (li < 0)
            return -1;
    }
    if (f->type == METRIC_HISTOGRAM) {
        out->nbuckets = f->nbounds;
        memcpy(out->bounds, f->bounds, (size_t) f->nbounds * sizeof *f->bounds);
    }
    int n = 0;
    for (size_t i = 0; i < f->nslots; i++) {
        for (const struct metric_series *s = f->slots[i]; s; s = s->next) {
            if (li >= 0 && strcmp(s->values[li], value ? value : "") != 0)
                continue;
            n++;
            out->value += s->value;
            out->count += s->count;
            for (int b = 0; s->buckets && b < f->nbounds; b++)
                out->buckets[b] += s->buckets[b];
        }
    }
    return n;
}

void metrics_on_collect(struct metrics *m, metrics_collect_fn *fn, void *ud)
{
    if (m->ncollect < MAX_COLLECT) {
        m->collect[m->ncollect].fn = fn;
        m->collect[m->ncollect].ud = ud;
        m->ncollect++;
    }
}

/* label values escaped as the format asks: \ " and newline */
static void put_escaped(struct evbuffer *out, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            evbuffer_add(out, "\\\\", 2);
        else if (*p == '"')
            evbuffer_add(out, "\\\"", 2);
        else if (*p == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, p, 1);
    }
}

static void put_number(struct evbuffer *out, double v)
{
    if (isnan(v))
        evbuffer_add(out, "NaN", 3);
    else if (isinf(v))
        evbuffer_add_printf(out, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        evbuffer_add_printf(out, "%.0f", v);
    else {
        /* the shortest of 15 and 17 digits that reads back as the same double */
        char buf[40];
        snprintf(buf, sizeof buf, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, sizeof buf, "%.17g", v);
        evbuffer_add(out, buf, strlen(buf));
    }
}

static void put_labels(struct evbuffer *out, const struct metric_family *f,
                       const struct metric_series *s, const char *le)
{
    if (f->nlabels == 0 && le == NULL)
        return;
    evbuffer_add(out, "{", 1);
    for (int i = 0; i < f->nlabels; i++) {
        evbuffer_add_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_escaped(out, s->values[i]);
        evbuffer_add(out, "\"", 1);
    }
    if (le)
        evbuffer_add_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    evbuffer_add(out, "}", 1);
}

void metrics_render(struct metrics *m, struct evbuffer *out)
{
    metrics_collect(m);
    static const char *const TYPES[] = {"counter", "gauge", "histogram"};
    for (int i = 0; i < m->nfam; i++) {
        struct metric_family *f = m->fam[i];
        evbuffer_add_printf(out, "# HELP %s ", f->name);
        for (const char *p = f->help; *p; p++) {
            if (*p == '\\')
                evbuffer_add(out, "\\\\", 2);
            else if (*p == '\n')
                evbuffer_add(out, "\\n", 2);
            else
                evbuffer_add(out, p, 1);
        }
        evbuffer_add_printf(out, "\n# TYPE %s %s\n", f->name, TYPES[f->type]);
        for (size_t k = 0; k < f->nslots; k++) {
            for (const struct metric_series *s = f->slots[k]; s; s = s->next) {
                if (f->type != METRIC_HISTOGRAM) {
                    evbuffer_add_printf(out, "%s", f->name);
                    put_labels(out, f, s, NULL);
                    evbuffer_add(out, " ", 1);
                    put_number(out, s->value);
                    evbuffer_add(out, "\n", 1);
                    continue;
                }
                uint64_t cum = 0;
                for (int b = 0; b < f->nbounds; b++) {
                    char le[40];
                    snprintf(le, sizeof le, "%g", f->bounds[b]);
                    cum += s->buckets[b];
                    evbuffer_add_printf(out, "%s_bucket", f->name);
                    put_labels(out, f, s, le);
                    evbuffer_add_printf(out, " %llu\n", (unsigned long long) cum);
                }
                evbuffer_add_printf(out, "%s_bucket", f->name);
                put_labels(out, f, s, "+Inf");
                evbuffer_add_printf(out, " %llu\n", (unsigned long long) s->count);
                evbuffer_add_printf(out, "%s_sum", f->name);
                put_labels(out, f, s, NULL);
                evbuffer_add(out, " ", 1);
                put_number(out, s->value);
                evbuffer_add_printf(out, "\n%s_count", f->name);
                put_labels(out, f, s, NULL);
                evbuffer_add_printf(out, " %llu\n", (unsigned long long) s->count);
            }
        }
    }
}
