/* metrics.c: the registry of counters, gauges and histograms and its
 * Prometheus text; see metrics.h.
 *
 * A value is a double kept as its bits in an atomic 64-bit word, so adding
 * is a compare-and-swap loop and reading never tears; a histogram's count
 * is the sum of its buckets as read, so its +Inf bucket and _count agree
 * on every page even while other threads observe. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum { M_COUNTER, M_GAUGE, M_HISTOGRAM } mtype;

struct metrics_series {
    const struct metrics_family *fam;
    char *value;                 /* the label's value; NULL without a label */
    _Atomic uint64_t bits;       /* counter or gauge value, or a histogram's sum */
    atomic_ullong *buckets;      /* a histogram's counts: nb + 1 (the last: +Inf) */
};

struct metrics_family {
    char *name, *help, *label;
    mtype type;
    double *bounds;
    int nb;
    metrics_series *series[METRICS_MAX_SERIES + 1]; /* the last: "other" */
    int nseries;
    metrics_family *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static metrics_family *families, **families_tail = &families;
static char prefix[64] = "ursa";

static double from_bits(uint64_t b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t to_bits(double d) {
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

void metrics_set_prefix(const char *p) {
    pthread_mutex_lock(&mu);
    snprintf(prefix, sizeof prefix, "%s", p);
    pthread_mutex_unlock(&mu);
}

static int same(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static metrics_series *series_new(const metrics_family *f, const char *value) {
    metrics_series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->fam = f;
    if ((value && !(s->value = strdup(value))) ||
        (f->type == M_HISTOGRAM &&
         !(s->buckets = calloc((size_t)f->nb + 1, sizeof *s->buckets)))) {
        free(s->value);
        free(s);
        return NULL;
    }
    return s;
}

static void family_free(metrics_family *f) {
    free(f->name);
    free(f->help);
    free(f->label);
    free(f->bounds);
    free(f);
}

static metrics_family *reg(mtype type, const char *name, const char *help, const char *label,
                           const double *bounds, int nb) {
    char full[256];
    pthread_mutex_lock(&mu);
    snprintf(full, sizeof full, "%s_%s", prefix, name);
    metrics_family *f = families;
    while (f && strcmp(f->name, full)) f = f->next;
    if (f) {
        if (f->type != type || !same(f->label, label)) f = NULL;
        pthread_mutex_unlock(&mu);
        return f;
    }
    f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(full)) || !(f->help = strdup(help)) ||
        (label && !(f->label = strdup(label))) ||
        (nb > 0 && !(f->bounds = malloc(sizeof(double) * (size_t)nb))))
        goto nomem;
    f->type = type;
    f->nb = nb;
    if (nb > 0) memcpy(f->bounds, bounds, sizeof(double) * (size_t)nb);
    if (!label) { /* its one series, so it shows (as 0) from the start */
        if (!(f->series[0] = series_new(f, NULL))) goto nomem;
        f->nseries = 1;
    }
    *families_tail = f;
    families_tail = &f->next;
    pthread_mutex_unlock(&mu);
    return f;
nomem:
    if (f) family_free(f);
    pthread_mutex_unlock(&mu);
    return NULL;
}

metrics_family *metrics_counter(const char *name, const char *help, const char *label) {
    return reg(M_COUNTER, name, help, label, NULL, 0);
}

metrics_family *metrics_gauge(const char *name, const char *help, const char *label) {
    return reg(M_GAUGE, name, help, label, NULL, 0);
}

metrics_family *metrics_histogram(const char *name, const char *help, const char *label,
                                  const double *bounds, int nb) {
    return reg(M_HISTOGRAM, name, help, label, bounds, nb);
}

metrics_series *metrics_plain_counter(const char *name, const char *help) {
    return metrics_with(metrics_counter(name, help, NULL), NULL);
}

metrics_series *metrics_plain_gauge(const char *name, const char *help) {
    return metrics_with(metrics_gauge(name, help, NULL), NULL);
}

metrics_series *metrics_with(metrics_family *f, const char *value) {
    if (!f) return NULL;
    if (!f->label) return f->series[0];
    if (!value) value = "";
    pthread_mutex_lock(&mu);
    metrics_series *s = NULL;
    for (int i = 0; i < f->nseries && !s; i++)
        if (!strcmp(f->series[i]->value, value)) s = f->series[i];
    if (!s) {
        int i = f->nseries < METRICS_MAX_SERIES ? f->nseries : METRICS_MAX_SERIES;
        if (i == METRICS_MAX_SERIES) value = "other";
        if (!f->series[i] && (f->series[i] = series_new(f, value))) f->nseries = i + 1;
        s = f->series[i];
    }
    pthread_mutex_unlock(&mu);
    return s;
}

void metrics_add(metrics_series *s, double v) {
    if (!s) return;
    uint64_t old = atomic_load_explicit(&s->bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&s->bits, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

void metrics_set(metrics_series *s, double v) {
    if (s) atomic_store_explicit(&s->bits, to_bits(v), memory_order_relaxed);
}

void metrics_observe(metrics_series *s, double v) {
    if (!s || !s->buckets) return;
    const metrics_family *f = s->fam;
    int k = 0;
    while (k < f->nb && v > f->bounds[k]) k++;
    atomic_fetch_add_explicit(&s->buckets[k], 1, memory_order_relaxed);
    metrics_add(s, v);
}

/* A sample value as Prometheus reads it: integers exactly, others with 15
 * significant digits. */
static void put_value(FILE *f, double v) {
    if (isnan(v)) fputs("NaN", f);
    else if (isinf(v)) fputs(v > 0 ? "+Inf" : "-Inf", f);
    else fprintf(f, "%.15g", v);
}

/* A label value with \, " and newlines escaped. */
static void put_label_value(FILE *f, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') fputc('\\', f), fputc(*v, f);
        else if (*v == '\n') fputs("\\n", f);
        else fputc(*v, f);
    }
}

/* name{label="value"[,le="bound"]} */
static void put_name(FILE *f, const char *name, const char *suffix, const char *label,
                     const char *value, const char *le) {
    fprintf(f, "%s%s", name, suffix);
    if (!label && !le) return;
    fputc('{', f);
    if (label) {
        fprintf(f, "%s=\"", label);
        put_label_value(f, value);
        fputc('"', f);
    }
    if (le) fprintf(f, "%sle=\"%s\"", label ? "," : "", le);
    fputc('}', f);
}

static void write_histogram(FILE *f, const metrics_family *m, const metrics_series *s) {
    unsigned long long cum = 0;
    char le[32];
    for (int k = 0; k <= m->nb; k++) {
        cum += atomic_load(&s->buckets[k]);
        if (k < m->nb) snprintf(le, sizeof le, "%g", m->bounds[k]);
        else snprintf(le, sizeof le, "+Inf");
        put_name(f, m->name, "_bucket", m->label, s->value, le);
        fprintf(f, " %llu\n", cum);
    }
    put_name(f, m->name, "_sum", m->label, s->value, NULL);
    fputc(' ', f);
    put_value(f, from_bits(atomic_load(&s->bits)));
    fputc('\n', f);
    put_name(f, m->name, "_count", m->label, s->value, NULL);
    fprintf(f, " %llu\n", cum);
}

void metrics_write(FILE *f) {
    static const char *const types[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&mu);
    for (const metrics_family *m = families; m; m = m->next) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, types[m->type]);
        for (int i = 0; i < m->nseries; i++) {
            const metrics_series *s = m->series[i];
            if (m->type == M_HISTOGRAM) {
                write_histogram(f, m, s);
                continue;
            }
            put_name(f, m->name, "", m->label, s->value, NULL);
            fputc(' ', f);
            put_value(f, from_bits(atomic_load(&s->bits)));
            fputc('\n', f);
        }
    }
    pthread_mutex_unlock(&mu);
}

void metrics_write_sample(FILE *f, const char *name, const char *type, const char *help,
                          const char *labels, double v) {
    if (help) fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    fprintf(f, "%s%s ", name, labels ? labels : "");
    put_value(f, v);
    fputc('\n', f);
}
