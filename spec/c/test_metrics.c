/* test_metrics.c -- core/metrics.c: families, the cap on label sets, histograms, and the text
 * exposition, byte for byte. */
#include "test.h"

#include "metrics.h"

#include <event2/buffer.h>

static char *render(struct metrics *m)
{
    struct evbuffer *b = evbuffer_new();
    metrics_render(m, b);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

TEST(counters_and_gauges_with_labels_render_as_prometheus_text)
{
    struct metrics *m = metrics_new();
    const char *lab[] = {"route", "status"};
    struct metric_family *f =
        metrics_family(m, "req_total", "Requests", METRIC_COUNTER, 2, lab, NULL, 0, NULL);
    const char *v1[] = {"GET /a", "200"}, *v2[] = {"GET \"b\"\\\n", "500"};
    metrics_inc(metrics_series(f, v1), 1);
    metrics_inc(metrics_series(f, v1), 2);
    metrics_inc(metrics_series(f, v2), 1);
    struct metric_family *g =
        metrics_family(m, "temp", "A\nB", METRIC_GAUGE, 0, NULL, NULL, 0, NULL);
    metrics_set(metrics_only(g), 21.5);
    char *s = render(m);
    ASSERT(strstr(s, "# TYPE req_total counter\n") != NULL);
    ASSERT(strstr(s, "req_total{route=\"GET /a\",status=\"200\"} 3\n") != NULL);
    ASSERT(strstr(s, "req_total{route=\"GET \\\"b\\\"\\\\\\n\",status=\"500\"} 1\n") != NULL);
    ASSERT(strstr(s, "# HELP temp A\\nB\n# TYPE temp gauge\ntemp 21.5\n") != NULL);
    free(s);
    metrics_free(m);
}

TEST(a_family_is_found_again_and_refused_with_another_shape)
{
    struct metrics *m = metrics_new();
    const char *lab[] = {"x"}, *other[] = {"y"};
    const char *why = NULL;
    struct metric_family *a = metrics_family(m, "c", "", METRIC_COUNTER, 1, lab, NULL, 0, NULL);
    ASSERT(metrics_family(m, "c", "", METRIC_COUNTER, 1, lab, NULL, 0, NULL) == a);
    ASSERT(metrics_family(m, "c", "", METRIC_GAUGE, 1, lab, NULL, 0, &why) == NULL);
    ASSERT(why != NULL);
    ASSERT(metrics_family(m, "c", "", METRIC_COUNTER, 1, other, NULL, 0, NULL) == NULL);
    ASSERT(metrics_family(m, "bad-name", "", METRIC_COUNTER, 0, NULL, NULL, 0, NULL) == NULL);
    const char *le[] = {"le"};
    ASSERT(metrics_family(m, "h", "", METRIC_HISTOGRAM, 1, le, NULL, 0, NULL) == NULL);
    double down[] = {1, 0.5};
    ASSERT(metrics_family(m, "h2", "", METRIC_HISTOGRAM, 0, NULL, down, 2, NULL) == NULL);
    metrics_free(m);
}

TEST(past_the_cap_new_label_sets_are_dropped_and_counted)
{
    struct metrics *m = metrics_new();
    const char *lab[] = {"id"};
    struct metric_family *f = metrics_family(m, "by_id", "", METRIC_COUNTER, 1, lab, NULL, 0, NULL);
    char id[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "%d", i);
        const char *v[] = {id};
        metrics_inc(metrics_series(f, v), 1);
    }
    char *s = render(m);
    int lines = 0;
    for (const char *p = s; (p = strstr(p, "\nby_id{")) != NULL; p++)
        lines++;
    ASSERT_EQ(lines, METRICS_DEFAULT_CAP);
    ASSERT(strstr(s, "mmo_metrics_dropped_series_total{metric=\"by_id\"} 9000\n") != NULL);
    free(s);
    metrics_free(m);
}

TEST(histograms_count_into_cumulative_buckets)
{
    struct metrics *m = metrics_new();
    double b[] = {0.1, 1, 10};
    struct metric_family *h = metrics_family(m, "lat", "", METRIC_HISTOGRAM, 0, NULL, b, 3, NULL);
    double obs[] = {0.05, 0.1, 0.5, 5, 50};
    for (int i = 0; i < 5; i++)
        metrics_observe(metrics_only(h), obs[i]);
    char *s = render(m);
    ASSERT(strstr(s, "lat_bucket{le=\"0.1\"} 2\nlat_bucket{le=\"1\"} 3\nlat_bucket{le=\"10\"} 4\n"
                     "lat_bucket{le=\"+Inf\"} 5\nlat_sum 55.65\nlat_count 5\n") != NULL);
    free(s);
    metrics_free(m);
}

int main(void)
{
    RUN(counters_and_gauges_with_labels_render_as_prometheus_text);
    RUN(a_family_is_found_again_and_refused_with_another_shape);
    RUN(past_the_cap_new_label_sets_are_dropped_and_counted);
    RUN(histograms_count_into_cumulative_buckets);
    return test_summary();
}
