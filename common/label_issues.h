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
 *    their threshold; images off the diagonal (j != i) are label issues,
 *    and j is the suggested label;
 *  - an image that reaches no class's threshold is an outlier (low
 *    confidence in every class);
 *  - quality is the normalised margin, (p_given - max_{j != given} p_j + 1) / 2
 *    in [0, 1]: the lower, the more likely the label is wrong. Issues are
 *    ranked by it, lowest first. */
#ifndef URSA_LABEL_ISSUES_H
#define URSA_LABEL_ISSUES_H

#include <stddef.h>

typedef enum { LI_NONE = 0, LI_LABEL, LI_OUTLIER } li_kind;

typedef struct {
    int given;      /* the label the image has */
    int suggested;  /* the label confident learning proposes (given when none) */
    double quality; /* normalised margin in [0, 1]; low is suspect */
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

#endif
