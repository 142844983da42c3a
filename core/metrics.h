/* metrics.h -- Prometheus metrics kept in C: counters, gauges and histograms with labels, one
 * registry per node, rendered in the text exposition format (version 0.0.4) by GET /metrics.
 *
 * A family has a name, help, a type and up to METRICS_MAX_LABELS label names, fixed when it is
 * made; its series are made on first use of a set of label values, at most `cap` of them:
 * past the cap a new set is dropped (its updates go nowhere) and counted in
 * mmo_metrics_dropped_series_total{metric}, so memory and the size of a scrape stay bounded
 * whatever the label values. Everything runs on the loop thread: no locks. */
#ifndef MMO_METRICS_H
#define MMO_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_LABELS  4
#define METRICS_MAX_BUCKETS 24
#define METRICS_DEFAULT_CAP 1000

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics;
struct metric_family;
struct metric_series;
struct evbuffer;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* A family, made or found by name. labels: nlabels names (copied); buckets: upper bounds in
 * increasing order for a histogram (NULL: the default latency buckets, 0.5 ms to 10 s).
 * Returns NULL when the name or a label is not a valid Prometheus name, or when a family of
 * that name exists with another type or other labels (why, if not NULL, says which). */
struct metric_family *metrics_family(struct metrics *m, const char *name, const char *help,
                                     enum metric_type type, int nlabels, const char *const *labels,
                                     const double *buckets, int nbuckets, const char **why);
/* The series of these label values (nlabels strings, copied), made on first use; NULL past the
 * family's cap (counted as dropped). */
struct metric_series *metrics_series(struct metric_family *f, const char *const *values);
/* Shorthand for a family without labels. */
struct metric_series *metrics_only(struct metric_family *f);

void metrics_inc(struct metric_series *s, double by);    /* counter, gauge; s may be NULL */
void metrics_set(struct metric_series *s, double v);     /* gauge; s may be NULL */
void metrics_observe(struct metric_series *s, double v); /* histogram; s may be NULL */
/* Forget every series of a gauge family (before setting it again from a fresh count). */
void metrics_reset(struct metric_family *f);

/* A function run before each render, to set gauges from the state of the node. */
typedef void metrics_collect_fn(struct metrics *m, void *ud);
void metrics_on_collect(struct metrics *m, metrics_collect_fn *fn, void *ud);

/* Run the collect functions (as a render does first). */
void metrics_collect(struct metrics *m);

/* A family's values summed over its series, or over those whose label `label` is `value`
 * (label NULL: all): counters and gauges in value; a histogram's sum in value, its count, and
 * its per-bucket counts (not cumulative; what lies past the last bound is count less their
 * sum) with their bounds, nbuckets of them. */
struct metrics_reading {
    double value;
    uint64_t count;
    int nbuckets;
    double bounds[METRICS_MAX_BUCKETS];
    uint64_t buckets[METRICS_MAX_BUCKETS];
};
/* Returns the number of series summed (0: none yet), or -1 when there is no such family or
 * label. */
int metrics_read(struct metrics *m, const char *name, const char *label, const char *value,
                 struct metrics_reading *out);

/* The text exposition of every family. */
void metrics_render(struct metrics *m, struct evbuffer *out);

#endif
