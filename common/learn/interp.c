/* interp.c: reading a model's interpretation; see interp.h. */
#include "interp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int class_index(const char *const *cls, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(cls[i], name)) return i;
    return -1;
}

static int by_count(const void *x, const void *y) {
    const interp_pair *a = x, *b = y;
    return a->n < b->n ? 1 : a->n > b->n ? -1 : a->a != b->a ? a->a - b->a : a->p - b->p;
}

int interp_parse(const char *tsv, size_t len, const char *const *cls, int nc, interp *it) {
    memset(it, 0, sizeof *it);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += tsv[i] == '\n';
    it->nc = nc;
    it->rows = calloc(lines + 1, sizeof *it->rows);
    it->cm = calloc((size_t)nc * (size_t)nc + 1, sizeof *it->cm);
    it->pairs = calloc((size_t)nc * (size_t)nc + 1, sizeof *it->pairs);
    char *line = malloc(len + 1);
    if (!it->rows || !it->cm || !it->pairs || !line) {
        free(line);
        interp_free(it);
        return -1;
    }
    for (const char *p = tsv, *end = tsv + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        memcpy(line, p, l);
        line[l] = '\0';
        p += l + 1;
        interp_row *w = &it->rows[it->nrows];
        w->src[0] = '\0';
        if (sscanf(line, "%64[0-9a-f]\t%71[^\t]\t%71[^\t]\t%lf\t%lf\t%64[0-9a-f]", w->jpeg,
                   w->actual, w->pred, &w->loss, &w->p, w->src) < 5)
            continue;
        int a = class_index(cls, nc, w->actual), q = class_index(cls, nc, w->pred);
        if (a < 0 || q < 0) continue;
        it->cm[a * nc + q]++;
        it->nrows++;
    }
    free(line);
    for (int a = 0; a < nc; a++) {
        it->right += it->cm[a * nc + a];
        for (int q = 0; q < nc; q++)
            if (a != q && it->cm[a * nc + q] > 0)
                it->pairs[it->npairs++] = (interp_pair){a, q, it->cm[a * nc + q]};
    }
    qsort(it->pairs, (size_t)it->npairs, sizeof *it->pairs, by_count);
    return 0;
}

void interp_free(interp *it) {
    free(it->rows);
    free(it->cm);
    free(it->pairs);
    memset(it, 0, sizeof *it);
}
