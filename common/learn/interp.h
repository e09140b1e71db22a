/* interp.h: a model's interpretation (jobs.h: the TSV blob the trainer
 * writes of its validation set, worst loss first) read back: the rows, the
 * confusion matrix and fast.ai's most_confused pairs. Shared by `ursa
 * interp` and the console. */
#ifndef URSA_INTERP_H
#define URSA_INTERP_H

#include <stddef.h>

typedef struct {
    char jpeg[65], actual[72], pred[72], src[65];
    double loss, p; /* p: the probability of the actual class */
} interp_row;

typedef struct {
    int a, p; /* actual, predicted */
    long n;
} interp_pair;

typedef struct {
    int nc;            /* classes, in the model's order */
    long *cm;          /* nc x nc: actual down, predicted across */
    interp_row *rows;  /* worst loss first */
    int nrows;
    interp_pair *pairs; /* off-diagonal cells with a count, most first */
    int npairs;
    long right;        /* the diagonal's sum */
} interp;

/* Parses the blob against the model's classes (rows naming another class
 * are skipped). 0, or -1 when out of memory. */
int interp_parse(const char *tsv, size_t len, const char *const *classes, int nc, interp *out);
void interp_free(interp *it);

#endif
