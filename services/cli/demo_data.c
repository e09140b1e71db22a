/* demo_data.c: what `ursa demo` serves and plants, and how a dataset
 * compares with it (demo_data.h). */
#include "demo_data.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "dataset_edits.h"
#include "image.h"
#include "sha256.h"
#include "spawn.h"
#include "util.h"

const char *const demo_classes[DEMO_NCLASS] = {"tshirt", "trouser", "pullover", "dress", "coat",
                                               "sandal", "shirt",   "sneaker",  "bag",   "boot"};

/* Where a web search's wrong labels fall: the classes each class is taken
 * for (the pairs Fashion-MNIST's own confusion matrices show most): tops
 * among tops, shoes among shoes; a bag for a pullover or coat. -1 ends. */
static const int alike[DEMO_NCLASS][4] = {
    {6, 3, 2, -1},  /* tshirt: shirt, dress, pullover */
    {3, -1},        /* trouser: dress */
    {4, 6, 0, -1},  /* pullover: coat, shirt, tshirt */
    {4, 0, 6, -1},  /* dress: coat, tshirt, shirt */
    {2, 6, 3, -1},  /* coat: pullover, shirt, dress */
    {7, 9, -1},     /* sandal: sneaker, boot */
    {0, 2, 4, -1},  /* shirt: tshirt, pullover, coat */
    {5, 9, -1},     /* sneaker: sandal, boot */
    {2, 4, -1},     /* bag: pullover, coat */
    {7, 5, -1},     /* boot: sneaker, sandal */
};

static uint64_t rng;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }


int demo_images(const char *bindir, const char *data, const char *set, const char *dir, int n,
                int *reused) {
    char marker[4200], img[4200], lab[4200], lim[24], prog[4200];
    snprintf(marker, sizeof marker, "%s/.images", dir);
    *reused = util_read_int(marker) == n;
    if (*reused) return 0;
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", data, set);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", data, set);
    snprintf(lim, sizeof lim, "%d", n);
    snprintf(prog, sizeof prog, "%s/idx2jpeg", bindir);
    char *out = NULL;
    int rc = spawn_run(prog, (char *const[]){"idx2jpeg", img, lab, (char *)dir, "@", "--limit", lim,
                                             NULL}, 0, &out);
    free(out);
    if (rc) return -1;
    char v[24];
    int k = snprintf(v, sizeof v, "%d\n", n);
    return util_write_file_atomic(marker, v, (size_t)k) == URSA_OK ? 0 : -1;
}

int demo_truths(const char *dir, int n, int *truth) {
    for (int i = 0; i < n; i++) truth[i] = -1;
    for (int c = 0; c < DEMO_NCLASS; c++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/urls_%s.txt", dir, demo_classes[c]);
        FILE *f = fopen(p, "r");
        if (!f) return -1;
        char line[512];
        while (fgets(line, sizeof line, f)) {
            const char *s = strrchr(line, '/');
            int i = s ? atoi(s + 1) : -1;
            if (i >= 0 && i < n) truth[i] = c;
        }
        fclose(f);
    }
    for (int i = 0; i < n; i++)
        if (truth[i] < 0) return -1;
    return 0;
}

/* ---- planting ----------------------------------------------------------------------- */

static int add_row(demo_rows *v, const char *url, int label, int truth, char kind) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        demo_row *t = realloc(v->r, cap * sizeof *t);
        if (!t) return -1;
        v->r = t, v->cap = cap;
    }
    demo_row *w = &v->r[v->n++];
    memset(w, 0, sizeof *w);
    snprintf(w->url, sizeof w->url, "%s", url);
    w->label = label;
    w->truth = truth;
    w->kind = kind;
    return 0;
}

/* The image id of a file: 32 hex digits of the sha256 of its bytes. */
static int file_id(const char *path, char id[33]) {
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(path, 1 << 20, &d, &n) != URSA_OK) return -1;
    sha256_ctx c;
    uint8_t h[32];
    sha256_init(&c);
    sha256_update(&c, d, n);
    sha256_final(&c, h);
    free(d);
    for (int i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", h[i]);
    return 0;
}

static int write_jpeg(const img_rgb *im, int quality, const char *path) {
    uint8_t *j = NULL;
    size_t jl = 0;
    if (img_encode_jpeg(im, quality, &j, &jl)) return -1;
    ursa_err e = util_write_file_atomic(path, j, jl);
    free(j);
    return e ? -1 : 0;
}

/* A copy of image src re-encoded at a lower quality (a near-duplicate). */
static int reencode(const char *src, const char *dst) {
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(src, 1 << 20, &d, &n) != URSA_OK) return -1;
    img_rgb im;
    img_reject rej;
    ursa_err e = img_decode((const uint8_t *)d, n, NULL, &im, &rej);
    free(d);
    if (e) return -1;
    int rc = write_jpeg(&im, 60, dst);
    img_free(&im);
    return rc;
}

static int copy_file(const char *src, const char *dst) {
    char *d = NULL;
    size_t n = 0;
    if (util_read_file(src, 1 << 20, &d, &n) != URSA_OK) return -1;
    ursa_err e = util_write_file_atomic(dst, d, n);
    free(d);
    return e ? -1 : 0;
}

/* An image of no class, 28 px: what else a search for clothes turns up
 * (noise, a gradient, stripes, blobs, scribbles), kind k % 5. */
static int junk_image(int k, const char *path) {
    enum { S = 28 };
    uint8_t px[S * S * 3];
    double a = unif() * 6.2832, f = 2 + unif() * 6, cx[3], cy[3], r[3];
    for (int j = 0; j < 3; j++) cx[j] = unif() * S, cy[j] = unif() * S, r[j] = 3 + unif() * 7;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double v = 0;
            switch (k % 5) {
            case 0: v = unif(); break;
            case 1: v = 0.5 + 0.5 * ((x - 14) * cos(a) + (y - 14) * sin(a)) / 20; break;
            case 2: v = sin(((x * cos(a) + y * sin(a)) / S) * f * 6.2832) > 0; break;
            case 3:
                for (int j = 0; j < 3; j++)
                    v += (x - cx[j]) * (x - cx[j]) + (y - cy[j]) * (y - cy[j]) < r[j] * r[j];
                v = v > 0 ? 0.9 : 0.1;
                break;
            default: /* two strokes, like a digit */
                v = fabs((x - cx[0]) * sin(a) - (y - cy[0]) * cos(a)) < 1.5 ||
                    fabs((x - cx[1]) * cos(a) + (y - cy[1]) * sin(a)) < 1.5;
            }
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            px[3 * (y * S + x)] = px[3 * (y * S + x) + 1] = px[3 * (y * S + x) + 2] =
                (uint8_t)(v * 255);
        }
    img_rgb im = {.w = S, .h = S, .px = px};
    return write_jpeg(&im, 90, path);
}

/* the label an image is put under: its class, or for a share a wrong one,
 * most often one that looks alike */
static int plant_label(const demo_plan *pl, int truth, int *alike_out) {
    *alike_out = 0;
    if (unif() >= pl->noise) return truth;
    int na = 0;
    while (na < 4 && alike[truth][na] >= 0) na++;
    if (na && unif() < pl->alike) {
        *alike_out = 1;
        return alike[truth][rnd() % (uint64_t)na];
    }
    return (truth + 1 + (int)(rnd() % (DEMO_NCLASS - 1))) % DEMO_NCLASS;
}

int demo_plant(const demo_plan *pl, const int *truth, const char *out, demo_rows *v,
               demo_planted *got, char *why, size_t wn) {
    rng = pl->seed * 7919u + 1;
    memset(got, 0, sizeof *got);
    char p[4300], q[4300];
    snprintf(p, sizeof p, "%s/planted.tsv", out);
    FILE *f = fopen(p, "w");
    if (!f) {
        snprintf(why, wn, "cannot write %s", p);
        return -1;
    }
    int rc = -1;
    fprintf(f, "kind\turl\tgiven\ttrue\n");
    snprintf(why, wn, "cannot write the images into %s", pl->www);
    for (int i = 0; i < pl->n; i++) {
        int is_alike, lab = plant_label(pl, truth[i], &is_alike);
        char u[256], path[4300];
        snprintf(u, sizeof u, "%s/ds/%s/%d.jpg", pl->base, demo_classes[truth[i]], i);
        snprintf(path, sizeof path, "%s/%s/%d.jpg", pl->www, demo_classes[truth[i]], i);
        if (lab != truth[i]) {
            got->flipped++;
            got->alike += is_alike;
            fprintf(f, "label\t%s\t%s\t%s\n", u, demo_classes[lab], demo_classes[truth[i]]);
        }
        if (add_row(v, u, lab, truth[i], 'i') || file_id(path, v->r[v->n - 1].id)) goto out;
    }
    /* images of no class, under a class they were found for */
    long nj = lround(pl->junk * pl->n);
    snprintf(q, sizeof q, "%s/junk", pl->www);
    if (nj && util_mkdirs(q)) goto out;
    for (long k = 0; k < nj; k++) {
        char u[256], path[4300];
        int lab = (int)(rnd() % DEMO_NCLASS);
        snprintf(path, sizeof path, "%s/junk/%ld.jpg", pl->www, k);
        snprintf(u, sizeof u, "%s/ds/junk/%ld.jpg", pl->base, k);
        if (junk_image((int)k, path) || add_row(v, u, lab, -1, 'j') ||
            file_id(path, v->r[v->n - 1].id))
            goto out;
        fprintf(f, "no_class\t%s\t%s\t-\n", u, demo_classes[lab]);
        got->junk++;
    }
    /* exact duplicates (the same bytes at a second URL) and near-duplicates
     * (re-encoded at quality 60), under the original's label */
    for (long k = 0; k < pl->ndup + pl->nnear; k++) {
        int i = (int)(rnd() % (uint64_t)pl->n);
        char src[4300], dst[4300], u[256];
        snprintf(src, sizeof src, "%s/%s/%d.jpg", pl->www, demo_classes[truth[i]], i);
        if (k < pl->ndup) {
            snprintf(dst, sizeof dst, "%s/copy%ld.jpg", pl->www, k);
            if (copy_file(src, dst)) goto out;
            snprintf(u, sizeof u, "%s/img/copy%ld.jpg", pl->base, k);
        } else {
            snprintf(dst, sizeof dst, "%s/near/%ld.jpg", pl->www, k);
            snprintf(q, sizeof q, "%s/near", pl->www);
            if (util_mkdirs(q) || reencode(src, dst)) goto out;
            snprintf(u, sizeof u, "%s/ds/near/%ld.jpg", pl->base, k);
        }
        fprintf(f, "%s\t%s\t%s\t%s/ds/%s/%d.jpg\n", k < pl->ndup ? "copy" : "near", u,
                demo_classes[v->r[i].label], pl->base, demo_classes[truth[i]], i);
        if (k >= pl->ndup) v->r[i].near_orig = 1;
        if (add_row(v, u, v->r[i].label, truth[i], k < pl->ndup ? 'c' : 'n')) goto out;
        if (k >= pl->ndup && file_id(dst, v->r[v->n - 1].id)) goto out;
    }
    got->ndup = pl->ndup;
    got->nnear = pl->nnear;
    /* what is not an image at all: 404s, HTML sent as image/jpeg, truncated
     * files, and a host that sends one byte a second */
    for (long k = 0; k < pl->nmess; k++) {
        char u[256], src[4300], dst[4300];
        int i = (int)(rnd() % (uint64_t)pl->n);
        snprintf(src, sizeof src, "%s/%s/%d.jpg", pl->www, demo_classes[truth[i]], i);
        snprintf(dst, sizeof dst, "%s/cut%ld.jpg", pl->www, k);
        if (copy_file(src, dst)) goto out;
        const char *kind[] = {"404", "html", "truncated"};
        for (int j = 0; j < 3; j++) {
            if (j == 0) snprintf(u, sizeof u, "%s/404?%ld", pl->base, k);
            else snprintf(u, sizeof u, "%s/%s/cut%ld.jpg", pl->base, kind[j], k);
            fprintf(f, "%s\t%s\t%s\t-\n", kind[j], u, demo_classes[truth[i]]);
            if (add_row(v, u, truth[i], -1, 'm')) goto out;
        }
    }
    got->nmess = pl->nmess;
    for (int k = 0; k < 2; k++) {
        char u[256];
        snprintf(u, sizeof u, "%s/slow?%d", pl->base, k);
        fprintf(f, "slow\t%s\t%s\t-\n", u, demo_classes[k]);
        if (add_row(v, u, k, -1, 'm')) goto out;
    }
    if (fclose(f)) {
        f = NULL;
        goto out;
    }
    f = NULL;
    /* the URL lists: the mess first, so the slow host's attempts and their
     * waits overlap the bulk instead of trailing it */
    for (int truelist = 0; truelist < 2; truelist++) {
        snprintf(p, sizeof p, "%s/%s", out, truelist ? "urls-true.csv" : "urls.csv");
        if (!(f = fopen(p, "w"))) goto out;
        fprintf(f, "url,label\n");
        for (int mess = 1; mess >= 0; mess--)
            for (size_t i = 0; i < v->n; i++) {
                const demo_row *w = &v->r[i];
                if ((w->kind == 'm') != mess) continue;
                if (truelist && w->kind != 'i') continue;
                fprintf(f, "%s,%s\n", w->url, demo_classes[truelist ? w->truth : w->label]);
            }
        if (fclose(f)) {
            f = NULL;
            goto out;
        }
        f = NULL;
    }
    rc = 0;
    why[0] = '\0';
out:
    if (f) fclose(f);
    return rc;
}

/* ---- against the truth -------------------------------------------------------------- */

static demo_rows *sort_rows; /* qsort has no context argument */
static int by_id(const void *a, const void *b) {
    return strcmp(sort_rows->r[*(const int *)a].id, sort_rows->r[*(const int *)b].id);
}
static int id_cmp(const void *key, const void *b) {
    return strcmp(key, sort_rows->r[*(const int *)b].id);
}

const demo_row *demo_find(demo_rows *v, const char *id) {
    if (!v->by_id) {
        if (!(v->by_id = malloc(sizeof(int) * (v->n + 1)))) return NULL;
        v->nid = 0;
        for (size_t i = 0; i < v->n; i++)
            if (v->r[i].id[0]) v->by_id[v->nid++] = (int)i;
        sort_rows = v;
        qsort(v->by_id, v->nid, sizeof *v->by_id, by_id);
    }
    sort_rows = v;
    const int *at = bsearch(id, v->by_id, v->nid, sizeof *v->by_id, id_cmp);
    return at ? &v->r[*at] : NULL;
}

void demo_rows_free(demo_rows *v) {
    free(v->r);
    free(v->by_id);
    memset(v, 0, sizeof *v);
}

static int str_cmp(const void *a, const void *b) { return strcmp(a, b); }

static int class_of(const char *label) {
    for (int c = 0; c < DEMO_NCLASS; c++)
        if (!strcmp(label, demo_classes[c])) return c;
    return -1;
}

int demo_score(rstore *r, const char *ds, demo_rows *v, demo_outcome *o) {
    ds_image *im = NULL;
    size_t n = 0;
    memset(o, 0, sizeof *o);
    if (ds_manifest_read_ex(r, ds, 1, &im, &n, NULL) != URSA_OK) return -1;
    for (size_t i = 0; i < n; i++) {
        char id[33];
        snprintf(id, sizeof id, "%.32s", im[i].src);
        const demo_row *w = demo_find(v, id);
        if (!w) continue; /* not planted by this run */
        int del = im[i].edit == ED_DELETE, now = class_of(im[i].label);
        o->images++;
        if (w->truth < 0) {
            del ? o->junk_deleted++ : (o->junk_kept++, o->wrong++);
        } else if (w->label != w->truth) {
            if (del) o->flip_deleted++;
            else if (now == w->truth) o->fixed++;
            else if (now == w->label) o->unfixed++, o->wrong++;
            else o->relabel_wrong++, o->wrong++;
        } else if (del) {
            o->right_deleted++;
        } else if (now != w->truth) {
            o->broken++, o->wrong++;
        }
    }
    free(im);
    return 0;
}

int demo_review(rstore *r, const char *ds, demo_rows *v, const char *suspects, const char *path,
                long *fixed, long *deleted) {
    /* the suspects a reviewer looks at: label issues and outliers, by image id */
    size_t ns = 0, cap = 1024;
    char (*sus)[33] = malloc(cap * sizeof *sus);
    if (!sus) return -1;
    for (const char *line = suspects; line && *line;) {
        const char *nl = strchr(line, '\n'), *col[8] = {0};
        size_t len = nl ? (size_t)(nl - line) : strlen(line), nc = 0;
        for (const char *t = line; t && t < line + len && nc < 8;) {
            col[nc++] = t;
            t = memchr(t, '\t', (size_t)(line + len - t));
            if (t) t++;
        }
        if (nc >= 7 && (!strncmp(col[5], "label\t", 6) || !strncmp(col[5], "outlier\t", 8))) {
            if (ns == cap) {
                void *t = realloc(sus, 2 * cap * sizeof *sus);
                if (!t) {
                    free(sus);
                    return -1;
                }
                sus = t, cap *= 2;
            }
            snprintf(sus[ns++], 33, "%.32s", col[6]);
        }
        line = nl ? nl + 1 : NULL;
    }
    qsort(sus, ns, sizeof *sus, str_cmp);
    ds_image *im = NULL;
    size_t n = 0;
    int rc = -1;
    FILE *f = NULL;
    *fixed = *deleted = 0;
    if (ds_manifest_read(r, ds, &im, &n) != URSA_OK || !(f = fopen(path, "w"))) goto out;
    fprintf(f, "name,label\n");
    for (size_t i = 0; i < n; i++) {
        char id[33];
        snprintf(id, sizeof id, "%.32s", im[i].src);
        const demo_row *w = demo_find(v, id);
        int looked = bsearch(id, sus, ns, sizeof *sus, str_cmp) != NULL;
        const char *label = im[i].label;
        if (looked && w && w->truth < 0) {
            (*deleted)++;
            continue;
        }
        if (looked && w && strcmp(label, demo_classes[w->truth])) {
            label = demo_classes[w->truth];
            (*fixed)++;
        }
        fprintf(f, "%s,%s\n", id, label);
    }
    rc = fclose(f) ? -1 : 0;
    f = NULL;
out:
    if (f) fclose(f);
    free(im);
    free(sus);
    return rc;
}
