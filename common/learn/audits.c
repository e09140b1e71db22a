/* audits.c: a dataset's latest audit as the cleaners read it (audits.h). */
#include "audits.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"

/* A string field of the job's hash into out ("" when absent). */
static ursa_err field(rstore *r, const char *job, const char *name, char *out, size_t n) {
    redisReply *v = NULL;
    out[0] = '\0';
    ursa_err e = job_get_field(r, job, name, &v);
    if (e) return e;
    if (v->type == REDIS_REPLY_STRING) snprintf(out, n, "%s", v->str);
    freeReplyObject(v);
    return URSA_OK;
}

ursa_err audit_latest_read(rstore *r, const char *ds, audit_latest *a) {
    memset(a, 0, sizeof *a);
    a->error_rate = NAN;
    ursa_err e = ds_audit_latest(r, ds, a->job, sizeof a->job);
    if (e || !a->job[0]) return e;
    char seq[24], err[32], nc[16];
    if ((e = field(r, a->job, "audit", a->rows_key, sizeof a->rows_key)) ||
        (e = field(r, a->job, "edit_seq", seq, sizeof seq)) ||
        (e = field(r, a->job, "error_rate", err, sizeof err)) ||
        (e = field(r, a->job, "n_classes", nc, sizeof nc)))
        return e;
    a->edit_seq = atoll(seq);
    if (err[0]) a->error_rate = strtod(err, NULL);
    a->n_classes = atoi(nc);
    /* an audit recorded before it kept its classes is not judged */
    a->unreliable = err[0] && a->n_classes && ds_audit_unreliable(a->error_rate, a->n_classes);
    return URSA_OK;
}

ursa_err audit_rows_read(blob_store *bs, const audit_latest *a, li_row **rows, size_t *n) {
    *rows = NULL;
    *n = 0;
    if (!a->rows_key[0]) return URSA_ERR_NOT_FOUND;
    char *data = NULL;
    size_t len = 0;
    ursa_err e = blob_get(bs, a->rows_key, (size_t)1 << 32, &data, &len);
    if (e) return e;
    int bad = li_rows_parse(data, len, rows, n, NULL);
    free(data);
    return bad ? URSA_ERR_NOMEM : URSA_OK;
}

int audit_row_open(const ds_edit_cur *cur, size_t ncur, const li_row *row, long long seen_seq) {
    const ds_edit_cur *c = ds_edits_find(cur, ncur, row->image);
    return !(c && c->seq > seen_seq);
}

const char *audit_warning(const audit_latest *a, char *buf, size_t n) {
    if (!a->unreliable) return buf[0] = '\0', buf;
    snprintf(buf, n,
             "audit %s got %.0f%% of the images wrong out of fold: its suggestions are unreliable "
             "(its models' own mistakes outnumber the label errors; train longer, or a better "
             "model, and audit again)", a->job, 100 * a->error_rate);
    return buf;
}
