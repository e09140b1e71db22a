/* audits.h: a dataset's latest audit as the cleaners read it (`ursa clean`
 * and the console's cleaner): its record, its rows, and which rows are
 * still open. The audit job (services/trainer/audit.c) writes them: the
 * rows as label_issues.h's TSV in a blob, the job's hash the blob's key
 * (field audit), the edit sequence it saw (edit_seq), its out-of-fold
 * error (error_rate) and its classes (n_classes); dataset_edits.h keeps
 * which job is the dataset's latest. */
#ifndef URSA_AUDITS_H
#define URSA_AUDITS_H

#include <stddef.h>

#include "blob.h"
#include "dataset_edits.h"
#include "err.h"
#include "label_issues.h"
#include "rstore.h"

typedef struct {
    char job[48];       /* "" when the dataset has no audit */
    char rows_key[65];  /* the blob of its rows; "" until it is done */
    long long edit_seq; /* the last edit it saw */
    double error_rate;  /* out-of-fold, 0..1; NaN when not recorded */
    int n_classes;      /* 0 when not recorded */
    int unreliable;     /* ds_audit_unreliable(error_rate, n_classes), 0 when not recorded */
} audit_latest;

/* The latest audit of ds into *a (a->job "" when it has none). */
ursa_err audit_latest_read(rstore *r, const char *ds, audit_latest *a);

/* Its rows, most likely first (the caller frees *rows); URSA_ERR_NOT_FOUND
 * when it has none yet (not done, or its blob is gone). */
ursa_err audit_rows_read(blob_store *bs, const audit_latest *a, li_row **rows, size_t *n);

/* 1 while nothing was decided on the row's image since the audit saw the
 * dataset (cur: ds_edits_current's decisions in force). */
int audit_row_open(const ds_edit_cur *cur, size_t ncur, const li_row *row, long long seen_seq);

/* The warning for an unreliable audit, in a sentence ("" when reliable). */
const char *audit_warning(const audit_latest *a, char *buf, size_t n);

#endif
