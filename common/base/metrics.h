/* metrics.h: the process's Prometheus metrics: a registry of counters,
 * gauges and histograms that a daemon and the common modules it runs (kq,
 * the blob store, ...) register into, written as text format 0.0.4 on
 * /metrics (common/daemon/health.h serves it).
 *
 * Names: a family registered as "messages_handled_total" is shown as
 * <prefix>_messages_handled_total, the prefix being the daemon's
 * ("ursa_crawler", set by service_setup), so a common module registers once
 * and every daemon shows it under its own name. A family has at most one
 * label; each of its values is a series, made on first use. A family holds
 * at most METRICS_MAX_SERIES series: later values are counted under
 * "other", so a value from the wire cannot grow the page without bound.
 *
 * Threads: registering and metrics_with take a lock (call them at start, or
 * keep the series); metrics_add, metrics_set and metrics_observe are
 * lock-free atomics, from any thread; metrics_write takes the lock.
 * Families and series live until the process exits. Every function accepts
 * NULL for a family or series (out of memory at registration) and then
 * does nothing, so callers need not check. */
#ifndef URSA_METRICS_H
#define URSA_METRICS_H

#include <stdio.h>

#define METRICS_MAX_SERIES 64

typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

/* The prefix of every family's name ("ursa_crawler"; copied). Set it before
 * the first registration: families keep the name they were made with. */
void metrics_set_prefix(const char *prefix);

/* Finds the family of that name, or registers it; label is the label's
 * name, or NULL for a family of one series. NULL when out of memory or
 * when the name is registered with another type or label. The strings are
 * copied. */
metrics_family *metrics_counter(const char *name, const char *help, const char *label);
metrics_family *metrics_gauge(const char *name, const char *help, const char *label);
/* A histogram of nb buckets with these ascending upper bounds (copied);
 * +Inf is added. */
metrics_family *metrics_histogram(const char *name, const char *help, const char *label,
                                  const double *bounds, int nb);

/* The one series of a family without a label: metrics_with(
 * metrics_counter(name, help, NULL), NULL), and the same for a gauge. */
metrics_series *metrics_plain_counter(const char *name, const char *help);
metrics_series *metrics_plain_gauge(const char *name, const char *help);

/* The series of a label value (ignored, may be NULL, for a family without
 * a label). Borrowed; lives as long as the process. */
metrics_series *metrics_with(metrics_family *f, const char *value);

/* A counter goes up by v (v >= 0). */
void metrics_add(metrics_series *s, double v);
/* A gauge becomes v. */
void metrics_set(metrics_series *s, double v);
/* A histogram counts one observation of v. */
void metrics_observe(metrics_series *s, double v);

/* Writes every registered family: HELP, TYPE, then its series. */
void metrics_write(FILE *f);

/* One sample of a metric kept elsewhere (name in full, labels as
 * `{a="b"}` or NULL), preceded by its HELP and TYPE lines unless help is
 * NULL (a further sample of the same metric). */
void metrics_write_sample(FILE *f, const char *name, const char *type, const char *help,
                          const char *labels, double v);

#endif
