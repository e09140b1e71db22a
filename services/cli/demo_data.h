/* demo_data.h: the data `ursa demo` serves and what it planted in it:
 * Fashion-MNIST written as JPEG files, a web search's wrong labels (most of
 * them between classes that look alike), images of no class at all,
 * copies, near-duplicates and URLs that are not images; and, afterwards,
 * what a dataset holds against that truth. */
#ifndef URSA_CLI_DEMO_DATA_H
#define URSA_CLI_DEMO_DATA_H

#include <stddef.h>

#include "rstore.h"

#define DEMO_NCLASS 10
/* as idx2jpeg names Fashion-MNIST's classes (ops/tools/idx.h) */
extern const char *const demo_classes[DEMO_NCLASS];

typedef struct {
    char url[256];
    int label;      /* the label in the URL list */
    int truth;      /* the true class; -1 for an image of no class or a mess case */
    char kind;      /* 'i' an image, 'j' an image of no class, 'c' an exact copy,
                     * 'n' a near-duplicate, 'm' not an image at all */
    char near_orig; /* an image a near-duplicate was made of */
    char id[33];    /* 'i' and 'j': the image id (32 hex digits of the sha256 of its bytes) */
} demo_row;

typedef struct {
    demo_row *r;
    size_t n, cap;
    int *by_id; /* the 'i', 'j' and 'n' rows by image id (demo_find) */
    size_t nid;
} demo_rows;

typedef struct {
    const char *www;  /* where the images are and the mess goes */
    const char *base; /* the URL the server serves www at */
    int n;            /* training images */
    double noise;     /* share of images under a wrong label */
    double alike;     /* share of the wrong labels that go to a look-alike class */
    double junk;      /* images of no class, as a share of n */
    int ndup, nnear, nmess;
    unsigned long long seed;
} demo_plan;

typedef struct {
    long flipped, alike, junk, ndup, nnear, nmess;
} demo_planted;

/* Writes DIR/<class>/<i>.jpg for images [0, n) of a Fashion-MNIST set
 * ("train" or "t10k") with idx2jpeg from bindir, unless a marker says they
 * are there already (*reused). 0 or -1. */
int demo_images(const char *bindir, const char *data, const char *set, const char *dir, int n,
                int *reused);
/* The classes idx2jpeg wrote into dir: truth[i] for i < n. 0 or -1. */
int demo_truths(const char *dir, int n, int *truth);

/* Plants the mess (pl->seed decides it) and fills v: every image under its
 * label, wrong for a share, the images of no class, the copies and
 * near-duplicates, the URLs that are no image. Writes out/planted.tsv,
 * out/urls.csv (what is ingested: the mess first) and out/urls-true.csv
 * (the images under their true classes, nothing planted: what a perfect
 * cleaning leaves). 0, or -1 with *why set. */
int demo_plant(const demo_plan *pl, const int *truth, const char *out, demo_rows *v,
               demo_planted *got, char *why, size_t wn);

/* What a dataset holds against the truth, by image. */
typedef struct {
    long images;                       /* images in the dataset, deleted ones too */
    long wrong;                        /* kept under a wrong label, or of no class */
    long fixed, unfixed, relabel_wrong; /* planted wrong labels: now right, untouched, relabelled
                                        * to another wrong class */
    long flip_deleted;                 /* planted wrong labels deleted */
    long broken, right_deleted;        /* right labels relabelled wrong, or deleted */
    long junk_deleted, junk_kept;      /* images of no class */
} demo_outcome;
int demo_score(rstore *r, const char *ds, demo_rows *v, demo_outcome *o);

/* The decisions of a reviewer who looks at every suspect in suspects (the
 * TSV `ursa clean` lists; its label issues and outliers) and sees what
 * each image shows: a wrong label is relabelled to the true class, an
 * image of no class deleted, a right one kept. Written to path as a
 * cleaned.csv of dataset ds for `ursa clean --apply FILE --delete-missing`:
 * every image of ds by id under the label it keeps, the deleted left out.
 * *fixed and *deleted count the decisions. 0 or -1. */
int demo_review(rstore *r, const char *ds, demo_rows *v, const char *suspects, const char *path,
                long *fixed, long *deleted);

/* The row of an image id, or NULL (the index is built on first use). */
const demo_row *demo_find(demo_rows *v, const char *id);
void demo_rows_free(demo_rows *v);

#endif
