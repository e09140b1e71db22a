/* label_issues.c: confident learning; see label_issues.h. */
#include "label_issues.h"

#include <stdlib.h>

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
