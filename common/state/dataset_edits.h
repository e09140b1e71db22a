/* dataset_edits.h: cleaning decisions on a dataset's images, the one owner
 * of their keys. A decision (delete, relabel, restore) travels as a
 * DatasetEdit on ursa.dataset.edits and ursa-verifier applies it here, once
 * per message id: a redelivered message, or one sent again after a SIGKILL,
 * changes nothing twice.
 *
 * Each edit says the decision in force on its image when it was made (its
 * base: none, delete, or relabel to a label), and is refused as a conflict
 * when that is no longer the one in force: of two cleaners deciding on
 * the same image at once, the first applied wins and the other is told,
 * per image; nothing applied is overwritten unseen. The verifier checks
 * the rest against state before applying (the dataset exists, the image
 * is a verified one of it, the label before is its given label, a new
 * label is a class of the dataset) and refuses, with a reason, what does
 * not hold. A refusal is recorded per message id, so the sender waiting
 * for its edits can say which were refused and why, and is final: the
 * same message sent again stays refused. Nothing is removed from the blob store or from the
 * URL records; an edit only changes how the dataset is seen (ds_manifest_read
 * and everything built on it: training, export, status), so every edit can
 * be undone by a restore.
 *
 *   ursa:ds:{<ds>:ed}:cur    HASH image id (32 hex) -> "op\tfrom\tto\tseq":
 *                            the decision in force for that image (from:
 *                            its given label; seq: the edit that made it)
 *   ursa:ds:{<ds>:ed}:log    LIST every edit applied, in order (the n-th is
 *                            edit #n): "ts_ms\timage\top\tfrom\tto\tauthor\t
 *                            reason\tmessage id"
 *   ursa:ds:{<ds>:ed}:seen   SET the message ids applied
 *   ursa:ds:{<ds>:ed}:refused HASH message id -> why it was refused, for
 *                            good: "conflict\top\tto\tseq" (the decision
 *                            in force instead of the edit's base: op none,
 *                            delete or relabel, seq the edit that made it,
 *                            0 for none) or "refused\t<reason>". Written
 *                            only for a dataset that exists
 *   ursa:ds:{<ds>:ed}:pending HASH message id -> the DatasetEdit as sent,
 *                            until it is applied
 *   ursa:ds:{<ds>:ed}:pendt  ZSET message id -> when it was sent (ms x 1000
 *                            + a counter: the order to send them again in)
 *   ursa:ds:{<ds>:ed}:resend STRING, expiring: a sweep sent the overdue
 *                            edits again lately; the next waits for it
 *   ursa:ds:{<ds>:ed}:audit  HASH "latest" -> the last audit job done,
 *                            "m:<manifest blob>" -> the audit of that
 *                            version of the dataset (its results are the
 *                            job's "audit" blob, label_issues.h's rows)
 *
 * The log's length is the dataset's edit sequence: a training job records
 * the one it saw.
 *
 * Kafka may lose an edit before it is applied (an embedded broker keeps
 * nothing over a restart), so the sender records it as pending first and
 * the verifier's sweep sends it again while it is not applied; the
 * message id stays, so it is still applied once. */
#ifndef URSA_DATASET_EDITS_H
#define URSA_DATASET_EDITS_H

#include <stddef.h>

#include "err.h"
#include "rstore.h"

typedef enum { ED_NONE = 0, ED_DELETE, ED_RELABEL, ED_RESTORE } ed_op;

const char *ed_op_name(ed_op op);
/* ED_NONE for an unknown name. */
ed_op ed_op_parse(const char *s);
/* A base (the decision in force an edit was made against) by name: "none"
 * for ED_NONE, "delete", "relabel". */
const char *ed_base_name(ed_op op);
/* 0 and *op for "none", "delete" or "relabel"; -1 for anything else
 * (empty: an edit from a sender that did not say). */
int ed_base_parse(const char *s, ed_op *op);
/* 1 if id is an image id: 32 lowercase hex digits. */
int ed_image_valid(const char *id);

/* One edit as sent and as logged. */
typedef struct {
    long long seq;   /* its place in the log (from 1); 0 before it is applied */
    long long ts_ms; /* when it was decided */
    char image[33];
    ed_op op;
    char from[72], to[72]; /* its given label (its URL's, whatever was decided
                              since); the new one for a relabel */
    char author[72], reason[208];
    char msg_id[33];
    ed_op base_op;     /* the decision in force when it was decided: ED_NONE,
                          ED_DELETE or ED_RELABEL */
    char base_to[72];  /* base_op ED_RELABEL: the label it had been given */
} ds_edit;

/* Checks an edit before it is sent or applied, on its own (not against
 * state): NULL, or why it is refused. A restore needs a base to undo, a
 * delete a base that is not one. */
const char *ds_edit_problem(const char *ds, const ds_edit *e);

/* Sends an edit to ursa.dataset.edits (keyed by dataset and image, so one
 * image's edits stay in order), with a new message id written into
 * e->msg_id and e->ts_ms set to now, after recording it in Redis as
 * pending (so Redis failing, URSA_ERR_UNAVAILABLE, sends nothing). Checked
 * first: URSA_ERR_INVALID with the reason from ds_edit_problem. Flushing
 * is the caller's. */
struct kq_producer;
ursa_err ds_edit_send(rstore *r, struct kq_producer *p, const char *ds, ds_edit *e);

/* Sends again, in the order they were first sent, the edits of a dataset
 * still pending older_ms after they were sent, unless a sweep did so in
 * the last older_ms (any process's). *n gets how many went. Flushing is
 * the caller's. */
ursa_err ds_edits_resend(rstore *r, struct kq_producer *p, const char *ds, long long older_ms,
                         size_t *n);
/* Edits sent and not applied yet. */
ursa_err ds_edits_pending(rstore *r, const char *ds, long long *n);
/* Deletes every key above of the dataset: its edits, refusals, pending
 * edits and latest audit (ds_delete removes the rest); *removed gets the
 * keys removed. An edit still in flight for it is then refused: the
 * dataset is gone. */
ursa_err ds_edits_delete(rstore *r, const char *ds, long long *removed);
/* Forgets a pending edit that will never apply (refused by the verifier). */
ursa_err ds_edit_forget(rstore *r, const char *ds, const char *msg_id);

/* Why an edit was refused (the refused key's record, parsed). */
typedef struct {
    int conflict;      /* 1: its base is no longer the decision in force */
    ed_op now_op;      /* conflict: the one in force (ED_NONE: none) */
    char now_to[72];   /* now_op ED_RELABEL: the label it gives */
    long long now_seq; /* the edit that made it (0: none) */
    char why[208];     /* not a conflict: the verifier's reason */
} ds_edit_refusal;

/* Parses a record of the refused key; -1 if it is none. */
int ds_edit_refusal_parse(const char *value, ds_edit_refusal *out);
/* One line on why e was refused ("conflict: decided on ..., now ..."),
 * into buf; returns buf. */
char *ds_edit_refusal_text(const ds_edit *e, const ds_edit_refusal *f, char *buf, size_t n);

/* Applies one edit (checked alone with ds_edit_problem; the caller checked
 * it against the dataset) unless its msg_id was applied or refused before,
 * and refuses it as a conflict when its base is not the decision in force:
 * one script, so a concurrent edit of the same image cannot slip between
 * the check and the change. *applied is 1 when it changed something now, 0
 * for a replay, -1 when refused (now or before: *ref, may be NULL, says
 * why); *seq gets its number (or the log's length). Pending no more after. */
ursa_err ds_edit_apply(rstore *r, const char *ds, const ds_edit *e, int *applied,
                       long long *seq, ds_edit_refusal *ref);

/* Records that an edit is refused for good, with why, and forgets it as
 * pending; *recorded is 0 (nothing written) when its message id was
 * applied before. Only for a dataset that exists: it writes its keys. */
ursa_err ds_edit_refuse(rstore *r, const char *ds, const char *msg_id, const char *why,
                        int *recorded);

/* What became of a sent edit. ED_LOST: neither applied, refused nor
 * pending (refused without a record: its dataset does not exist). */
typedef enum { ED_PENDING = 0, ED_APPLIED, ED_REFUSED, ED_LOST } ed_outcome;
/* One round trip; *ref (may be NULL) is filled for ED_REFUSED. */
ursa_err ds_edit_outcome(rstore *r, const char *ds, const char *msg_id, ed_outcome *out,
                         ds_edit_refusal *ref);

/* The number of edits applied to the dataset so far (its edit sequence). */
ursa_err ds_edits_seq(rstore *r, const char *ds, long long *seq);

/* The decisions in force, sorted by image id; the caller frees *out. */
typedef struct {
    char image[33];
    ed_op op; /* ED_DELETE or ED_RELABEL */
    char from[72], to[72];
    long long seq;
} ds_edit_cur;
ursa_err ds_edits_current(rstore *r, const char *ds, ds_edit_cur **out, size_t *n);
/* The decision in force for one image (one HGET): *found is 0 when none. */
ursa_err ds_edit_current(rstore *r, const char *ds, const char *image, ds_edit_cur *out,
                         int *found);
/* The one in force for an image in ds_edits_current's result, or NULL. */
const ds_edit_cur *ds_edits_find(const ds_edit_cur *cur, size_t n, const char *image);

/* How the decisions in force change a label's verified images: minus those
 * that had it (deleted or relabelled away), plus those relabelled to it. */
long long ds_edits_label_delta(const ds_edit_cur *cur, size_t n, const char *label);

/* The log from edit #first (1-based) on, at most max entries; the caller
 * frees *out. */
ursa_err ds_edits_log(rstore *r, const char *ds, long long first, size_t max, ds_edit **out,
                      size_t *n);

/* Records a finished audit of a dataset version (its manifest snapshot). */
ursa_err ds_audit_record(rstore *r, const char *ds, const char *job_id, const char *manifest);
/* The last audit job of a dataset ("" when none); job_id has room for 41. */
ursa_err ds_audit_latest(rstore *r, const char *ds, char *job_id, size_t size);

/* 1 when an audit's out-of-fold error rate (0..1) over nclass classes
 * makes its suggestions unreliable: its models' own mistakes would
 * outnumber the label errors they find. The one rule the trainer, `ursa
 * job`, `ursa clean` and the console apply. */
int ds_audit_unreliable(double oof_error, int nclass);

#endif
