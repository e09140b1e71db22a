/* label_issues.h: which images of a dataset are likely mislabeled or odd,
 * from out-of-sample predicted probabilities: confident learning
 * (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty
 * in Dataset Labels", JAIR 2021), the method behind cleanlab. The audit
 * job (issue 16) feeds it K-fold probabilities; it needs no Redis and no
 * model, so it is tested on cases with a known answer.
 *
 *  - each class j gets a threshold t_j: the mean probability of j over the
 *    images labelled j (the class's mean self-confidence);
 *  - an image labelled i is counted in the confident joint at (i, j), where
 *    j is its most probable class among those whose probability reaches
 *    their threshold;
 *  - prune by noise rate (cleanlab's default): row i of the joint, scaled
 *    to the n_i images labelled i, estimates how many of them are really
 *    j; that many, the ones with the largest p_j - p_i, are label issues,
 *    and j is the suggested label (the largest margin's, when several rows
 *    name an image);
 *  - an image that is no label issue and whose likeliest class reaches less
 *    than half its threshold is an outlier (low confidence in every class);
 *  - quality is the self-confidence p_given in [0, 1]: the lower, the more
 *    likely the label is wrong. Issues are ranked by it, lowest first (on
 *    Fashion-MNIST with 8% flipped labels it put more flips in the top
 *    than ranking the joint's own off-diagonal by normalised margin did:
 *    0.86 against 0.72 at the cut; see
 *    ops/bench-clean.sh). */
#ifndef URSA_LABEL_ISSUES_H
#define URSA_LABEL_ISSUES_H

#include <stddef.h>

typedef enum { LI_NONE = 0, LI_LABEL, LI_OUTLIER } li_kind;

typedef struct {
    int given;      /* the label the image has */
    int suggested;  /* the label confident learning proposes (given when none) */
    double quality; /* self-confidence, p_given, in [0, 1]; low is suspect */
    li_kind kind;
} li_result;

/* probs: n rows of k out-of-sample probabilities (each row sums to about
 * 1); labels: the given label of each row (0..k-1; a row with a label out of
 * range is left LI_NONE). Fills out[n]. *joint (may be NULL) gets the
 * k x k confident joint, row = given, column = confident class, which the
 * caller frees. Returns the number of label issues, or -1 on bad
 * arguments or no memory. */
long li_find(const float *probs, const int *labels, size_t n, int k, li_result *out,
             long **joint);

/* Sorts idx (n indexes into res) most suspect first: label issues, then
 * outliers, then the rest, each by quality ascending. */
void li_rank(const li_result *res, size_t *idx, size_t n);

/* ---- an audit's result, as stored (a blob of TSV) -------------------------- */

/* One suspect image of an audit. score is how sure the audit is, in [0, 1]:
 * 1 - quality for a label issue, the cosine similarity for a duplicate
 * (partner is the image it repeats, which is kept), 1 - the best ratio of
 * a class's probability to its threshold for an outlier. */
typedef struct {
    char image[33], jpeg[65];
    char given[72], suggested[72];
    double score;
    char kind[12]; /* "label", "duplicate" or "outlier" */
    char partner[33], partner_jpeg[65];
} li_row;

/* The rows as TSV after a "# " header line (header: one line, no newline),
 * one row a line: image, jpeg, given, suggested, score, kind, partner and
 * its jpeg ("-" when none). NULL when out of memory; the caller frees. */
char *li_rows_tsv(const li_row *rows, size_t n, const char *header, size_t *len);
/* Parses li_rows_tsv's text; lines that are not rows are skipped (counted
 * in *bad, may be NULL). The caller frees *out. Returns 0, or -1 when out of
 * memory. */
int li_rows_parse(const char *tsv, size_t len, li_row **out, size_t *n, size_t *bad);
/* Sorts rows most likely first: by score, highest first, then by image. */
void li_rows_sort(li_row *rows, size_t n);

#endif
