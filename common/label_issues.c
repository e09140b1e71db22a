/* label_issues.c: confident learning; see label_issues.h. */
#include "label_issues.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long li_find(const float *probs, const int *labels, size_t n, int k, li_result *out,
             long **joint) {
    if (joint) *joint = NULL;
    if (!probs || !labels || !out || k < 2) return -1;
    double *sum = calloc((size_t)k, sizeof *sum);
    long *cnt = calloc((size_t)k, sizeof *cnt);
    long *cj = calloc((size_t)k * (size_t)k, sizeof *cj);
    if (!sum || !cnt || !cj) {
        free(sum);
        free(cnt);
        free(cj);
        return -1;
    }
    /* per-class thresholds: the mean self-confidence */
    for (size_t i = 0; i < n; i++) {
        int y = labels[i];
        if (y < 0 || y >= k) continue;
        sum[y] += probs[i * (size_t)k + (size_t)y];
        cnt[y]++;
    }
    for (int j = 0; j < k; j++) sum[j] = cnt[j] ? sum[j] / (double)cnt[j] : 1.0; /* t_j */
    long issues = 0;
    for (size_t i = 0; i < n; i++) {
        const float *p = probs + i * (size_t)k;
        int y = labels[i];
        li_result *r = &out[i];
        r->given = r->suggested = y;
        r->kind = LI_NONE;
        r->quality = 1.0;
        if (y < 0 || y >= k) continue;
        double other = 0;
        for (int j = 0; j < k; j++)
            if (j != y && p[j] > other) other = p[j];
        r->quality = ((double)p[y] - other + 1.0) / 2.0;
        int best = -1;
        for (int j = 0; j < k; j++) /* the most probable class over its threshold */
            if (p[j] >= sum[j] && (best < 0 || p[j] > p[best])) best = j;
        if (best < 0) {
            r->kind = LI_OUTLIER;
            continue;
        }
        cj[(size_t)y * (size_t)k + (size_t)best]++;
        if (best != y) {
            r->kind = LI_LABEL;
            r->suggested = best;
            issues++;
        }
    }
    free(sum);
    free(cnt);
    if (joint) *joint = cj;
    else free(cj);
    return issues;
}

static int rank_cmp(const void *a, const void *b, void *arg) {
    const li_result *res = arg;
    const li_result *x = &res[*(const size_t *)a], *y = &res[*(const size_t *)b];
    static const int order[] = {[LI_LABEL] = 0, [LI_OUTLIER] = 1, [LI_NONE] = 2};
    if (order[x->kind] != order[y->kind]) return order[x->kind] - order[y->kind];
    if (x->quality != y->quality) return x->quality < y->quality ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

void li_rank(const li_result *res, size_t *idx, size_t n) {
    qsort_r(idx, n, sizeof *idx, rank_cmp, (void *)res);
}

/* ---- rows -------------------------------------------------------------------------- */

char *li_rows_tsv(const li_row *rows, size_t n, const char *header, size_t *len) {
    char *buf = NULL;
    size_t l = 0;
    FILE *f = open_memstream(&buf, &l);
    if (!f) return NULL;
    fprintf(f, "# %s\n", header ? header : "");
    for (size_t i = 0; i < n; i++) {
        const li_row *r = &rows[i];
        fprintf(f, "%s\t%s\t%s\t%s\t%.6f\t%s\t%s\t%s\n", r->image, r->jpeg, r->given,
                r->suggested, r->score, r->kind, r->partner[0] ? r->partner : "-",
                r->partner_jpeg[0] ? r->partner_jpeg : "-");
    }
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    *len = l;
    return buf;
}

/* Copies field f (at most n - 1 bytes, else it fails) and moves on. */
static int field(char **p, char *out, size_t n) {
    char *t = strchr(*p, '\t');
    size_t l = t ? (size_t)(t - *p) : strlen(*p);
    if (l >= n) return -1;
    memcpy(out, *p, l);
    out[l] = '\0';
    *p = t ? t + 1 : *p + l;
    return t ? 0 : 1;
}

int li_rows_parse(const char *tsv, size_t len, li_row **out, size_t *n, size_t *bad) {
    size_t lines = 1, k = 0, nbad = 0;
    for (size_t i = 0; i < len; i++) lines += tsv[i] == '\n';
    li_row *v = calloc(lines, sizeof *v);
    char *line = malloc(len + 1);
    if (!v || !line) {
        free(v);
        free(line);
        return -1;
    }
    const char *p = tsv, *end = tsv + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        memcpy(line, p, l);
        line[l] = '\0';
        p += l + 1;
        if (!l || line[0] == '#') continue;
        li_row *r = &v[k];
        char *q = line, score[32];
        int ok = field(&q, r->image, sizeof r->image) == 0 &&
                 field(&q, r->jpeg, sizeof r->jpeg) == 0 &&
                 field(&q, r->given, sizeof r->given) == 0 &&
                 field(&q, r->suggested, sizeof r->suggested) == 0 &&
                 field(&q, score, sizeof score) == 0 && field(&q, r->kind, sizeof r->kind) == 0;
        if (ok) { /* the partner's jpeg came later: a line may end at the partner */
            int last = field(&q, r->partner, sizeof r->partner);
            ok = last == 1 || (last == 0 && field(&q, r->partner_jpeg, sizeof r->partner_jpeg) == 1);
        }
        char *e = NULL;
        if (ok) r->score = strtod(score, &e);
        if (!ok || !e || *e || strlen(r->image) != 32 || !r->given[0] ||
            (strcmp(r->kind, "label") && strcmp(r->kind, "duplicate") &&
             strcmp(r->kind, "outlier"))) {
            memset(r, 0, sizeof *r);
            nbad++;
            continue;
        }
        if (!strcmp(r->partner, "-")) r->partner[0] = '\0';
        if (!strcmp(r->partner_jpeg, "-")) r->partner_jpeg[0] = '\0';
        k++;
    }
    free(line);
    *out = v;
    *n = k;
    if (bad) *bad = nbad;
    return 0;
}

static int by_score(const void *a, const void *b) {
    const li_row *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return strcmp(x->image, y->image);
}

void li_rows_sort(li_row *rows, size_t n) { qsort(rows, n, sizeof *rows, by_score); }
