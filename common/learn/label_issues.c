/* label_issues.c: confident learning; see label_issues.h. */
#include "label_issues.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double m; /* margin p_b - p_a */
    size_t i;
} pick;

static int by_margin(const void *x, const void *y) {
    const pick *a = x, *b = y;
    if (a->m != b->m) return a->m > b->m ? -1 : 1;
    return a->i < b->i ? -1 : 1;
}

long li_find(const float *probs, const int *labels, size_t n, int k, li_result *out,
             long **joint) {
    if (joint) *joint = NULL;
    if (!probs || !labels || !out || k < 2) return -1;
    double *t = calloc((size_t)k, sizeof *t), *best_m = calloc(n ? n : 1, sizeof *best_m);
    long *cnt = calloc((size_t)k, sizeof *cnt);
    long *cj = calloc((size_t)k * (size_t)k, sizeof *cj);
    pick *pk = malloc(sizeof *pk * (n ? n : 1));
    if (!t || !best_m || !cnt || !cj || !pk) {
        free(t), free(best_m), free(cnt), free(cj), free(pk);
        return -1;
    }
    /* per-class thresholds: the mean self-confidence */
    for (size_t i = 0; i < n; i++) {
        int y = labels[i];
        if (y < 0 || y >= k) continue;
        t[y] += probs[i * (size_t)k + (size_t)y];
        cnt[y]++;
    }
    for (int j = 0; j < k; j++) t[j] = cnt[j] ? t[j] / (double)cnt[j] : 1.0;
    /* the confident joint */
    for (size_t i = 0; i < n; i++) {
        const float *p = probs + i * (size_t)k;
        int y = labels[i];
        li_result *r = &out[i];
        r->given = r->suggested = y;
        r->kind = LI_NONE;
        r->quality = 1.0;
        if (y < 0 || y >= k) continue;
        r->quality = p[y]; /* self-confidence */
        int best = -1;
        for (int j = 0; j < k; j++) /* the most probable class over its threshold */
            if (p[j] >= t[j] && (best < 0 || p[j] > p[best])) best = j;
        if (best >= 0) cj[(size_t)y * (size_t)k + (size_t)best]++;
    }
    /* prune by noise rate: the joint's row a, calibrated to the n_a images
     * labelled a, says how many of them belong to each b; those are the
     * ones most in favour of b over a */
    for (int a = 0; a < k; a++) {
        long row = 0;
        for (int b = 0; b < k; b++) row += cj[(size_t)a * (size_t)k + (size_t)b];
        if (!row) continue;
        for (int b = 0; b < k; b++) {
            if (b == a) continue;
            long want = lround((double)cj[(size_t)a * (size_t)k + (size_t)b] / (double)row *
                               (double)cnt[a]);
            if (want <= 0) continue;
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (labels[i] == a)
                    pk[m++] = (pick){(double)probs[i * (size_t)k + (size_t)b] -
                                         (double)probs[i * (size_t)k + (size_t)a], i};
            qsort(pk, m, sizeof *pk, by_margin);
            for (size_t q = 0; q < m && q < (size_t)want; q++) {
                li_result *r = &out[pk[q].i];
                if (r->kind != LI_LABEL || pk[q].m > best_m[pk[q].i]) {
                    r->kind = LI_LABEL;
                    r->suggested = b;
                    best_m[pk[q].i] = pk[q].m;
                }
            }
        }
    }
    long issues = 0;
    for (size_t i = 0; i < n; i++) {
        li_result *r = &out[i];
        if (r->kind == LI_LABEL) {
            issues++;
            continue;
        }
        int y = labels[i];
        if (y < 0 || y >= k) continue;
        double top = 0; /* how near its threshold the likeliest class comes */
        for (int j = 0; j < k; j++) {
            double v = probs[i * (size_t)k + (size_t)j] / (t[j] > 0 ? t[j] : 1);
            if (v > top) top = v;
        }
        if (top < 0.5) r->kind = LI_OUTLIER;
    }
    free(t), free(best_m), free(cnt), free(pk);
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

/* 1 if s is exactly n lowercase hex digits. */
static int hexn(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
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
        if (!ok || !e || *e || !hexn(r->image, 32) || !hexn(r->jpeg, 64) || !r->given[0] ||
            (strcmp(r->partner, "-") && !hexn(r->partner, 32)) ||
            (r->partner_jpeg[0] && strcmp(r->partner_jpeg, "-") && !hexn(r->partner_jpeg, 64)) ||
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
