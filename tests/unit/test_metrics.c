/* Unit tests of metrics.c: the page Prometheus reads (HELP and TYPE once a
 * family, label values escaped, histograms cumulative with +Inf equal to
 * the count), one family a name, the bound on series, and exact counts
 * under threads adding at once. promtool's own check of live pages is in
 * tests/integration/test_instances.sh. */
#include <pthread.h>

#include "test.h"
#include "metrics.h"

/* The page as a string the caller frees (not inlined: GCC 12 then takes
 * the stream's buffer for a dangling pointer). */
static __attribute__((noinline)) char *page(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    metrics_write(f);
    fclose(f);
    return buf;
}

static void has(const char *text, const char *line) {
    if (!strstr(text, line)) fail_msg("missing \"%s\" in:\n%s", line, text);
}

static void families_and_series(void **state) {
    (void)state;
    metrics_set_prefix("ursa_t");
    metrics_family *c = metrics_counter("things_total", "Things.", "reason");
    assert_non_null(c);
    assert_ptr_equal(metrics_counter("things_total", "Things.", "reason"), c);
    assert_null(metrics_gauge("things_total", "Things.", "reason")); /* another type */
    assert_null(metrics_counter("things_total", "Things.", "other")); /* another label */
    metrics_add(metrics_with(c, "a"), 2);
    metrics_add(metrics_with(c, "a"), 1);
    metrics_add(metrics_with(c, "say \"hi\"\\\n"), 1);
    metrics_series *g = metrics_with(metrics_gauge("level", "A level.", NULL), "ignored");
    metrics_set(g, 0.25);
    metrics_add(NULL, 1); /* a family refused at registration: nothing happens */
    char *p = page();
    has(p, "# HELP ursa_t_things_total Things.\n# TYPE ursa_t_things_total counter\n");
    has(p, "ursa_t_things_total{reason=\"a\"} 3\n");
    has(p, "ursa_t_things_total{reason=\"say \\\"hi\\\"\\\\\\n\"} 1\n");
    has(p, "# TYPE ursa_t_level gauge\nursa_t_level 0.25\n");
    assert_null(strstr(strstr(p, "# TYPE ursa_t_things_total") + 1, "# TYPE ursa_t_things_total"));
    free(p);
}

static void series_are_bounded(void **state) {
    (void)state;
    metrics_family *f = metrics_counter("many_total", "Many.", "v");
    char v[16];
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        snprintf(v, sizeof v, "v%d", i);
        metrics_add(metrics_with(f, v), 1);
    }
    char *p = page();
    has(p, "ursa_t_many_total{v=\"v0\"} 1\n");
    has(p, "ursa_t_many_total{v=\"other\"} 10\n"); /* the rest lumped together */
    assert_null(strstr(p, "v=\"v70\""));
    free(p);
}

static void histogram(void **state) {
    (void)state;
    const double le[] = {0.1, 1};
    metrics_series *h =
        metrics_with(metrics_histogram("wait_seconds", "Waits.", NULL, le, 2), NULL);
    metrics_observe(h, 0.05);
    metrics_observe(h, 0.1); /* a bound is inclusive */
    metrics_observe(h, 0.5);
    metrics_observe(h, 7);
    char *p = page();
    has(p, "# TYPE ursa_t_wait_seconds histogram\n"
           "ursa_t_wait_seconds_bucket{le=\"0.1\"} 2\n"
           "ursa_t_wait_seconds_bucket{le=\"1\"} 3\n"
           "ursa_t_wait_seconds_bucket{le=\"+Inf\"} 4\n"
           "ursa_t_wait_seconds_sum 7.65\n"
           "ursa_t_wait_seconds_count 4\n");
    free(p);
}

static void sample(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    metrics_write_sample(f, "x_total", "counter", "Xs.", "{a=\"b\"}", 5);
    metrics_write_sample(f, "x_total", "counter", NULL, "{a=\"c\"}", 1e20);
    fclose(f);
    assert_string_equal(buf, "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"b\"} 5\n"
                             "x_total{a=\"c\"} 1e+20\n");
    free(buf);
}

enum { THREADS = 4, ADDS = 100000 };

static void *adder(void *arg) {
    metrics_family *f = arg;
    metrics_series *s = metrics_with(f, "x");
    for (int i = 0; i < ADDS; i++) {
        metrics_add(s, 1);
        metrics_add(metrics_with(f, "y"), 0.5);
    }
    return NULL;
}

static void threads_add_exactly(void **state) {
    (void)state;
    metrics_family *f = metrics_counter("race_total", "Races.", "k");
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&th[i], NULL, adder, f), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    char *p = page();
    has(p, "ursa_t_race_total{k=\"x\"} 400000\n");
    has(p, "ursa_t_race_total{k=\"y\"} 200000\n");
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(families_and_series), cmocka_unit_test(series_are_bounded),
        cmocka_unit_test(histogram), cmocka_unit_test(sample),
        cmocka_unit_test(threads_add_exactly)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
