/* clean_cmd.c: ursa clean, edit and edits: the lesson's cleaning step on
 * the command line (the console's cleaner does the same by click).
 *
 * Decisions never change Redis directly: each is a DatasetEdit on
 * ursa.dataset.edits, which ursa-verifier applies once per message id
 * (common/state/dataset_edits.h); the CLI then waits until they are applied, so
 * what it reports is what the dataset now is. */
#include "clean_cmd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audits.h"
#include "conn.h"
#include "dataset.h"
#include "dataset_edits.h"
#include "jobs.h"
#include "label_issues.h"
#include "msg.h"
#include "topics.h"
#include "util.h"

#define EDIT_DEFS                                                                              \
    {"dataset", CFG_STR, "", 1, 0, "the dataset (required)"},                                    \
    {"author", CFG_STR, "", 1, 0, "who decides, kept with each edit (default: $USER)"},        \
    {"reason", CFG_STR, "", 1, 0, "why, kept with each edit"},                                 \
    {"wait-s", CFG_INT, "30", 0, 3600,                                                         \
     "wait this long for ursa-verifier to apply the edits (0: do not wait)"}

const cfg_def clean_defs[] = {
    EDIT_DEFS,
    {"apply", CFG_STR, "", 1, 0,
     "a decisions file in fast.ai's cleaned.csv form: a header with name and label "
     "columns, one kept image a line (name: the image id, its blob, <label>/<blob>.jpg as "
     "export-dataset writes, or its source URL); a label that differs relabels the image "
     "(to a class of the dataset), a deleted image listed is restored"},
    {"delete-missing", CFG_BOOL, "false", 1, 0,
     "with --apply: delete the images the file does not list (cleaned.csv's meaning of a "
     "missing line)"},
    {"accept-suggestions", CFG_BOOL, "false", 1, 0,
     "act on the last audit's suspects in bulk: relabel label issues to their suggestion, "
     "delete near-duplicates (the first of a pair is kept) and outliers"},
    {"min-score", CFG_DOUBLE, "0.5", 0, 1, "with --accept-suggestions: only suspects this sure"},
    {"delete-score", CFG_DOUBLE, "1", 0, 1,
     "with --accept-suggestions: label issues scoring at least this but under --min-score "
     "are deleted instead of relabelled (the given label is likely wrong, the right one "
     "unclear); 1: none"},
    {"kinds", CFG_STR, "label,duplicate", 1, 0,
     "the kinds of suspect --accept-suggestions acts on, or the listing shows "
     "(label, duplicate, outlier)"},
    {"limit", CFG_INT, "0", 0, 1e9, "list at most N suspects (0: all)"},
    {"dry-run", CFG_BOOL, "false", 1, 0, "print the edits instead of sending them"},
    {"output", CFG_STR, "text", 1, 0, "the listing as text (TSV) or json (-o json)"},
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def edit_defs[] = {EDIT_DEFS, {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def edits_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "the dataset (required)"},
    {"from", CFG_INT, "1", 1, 1e15, "the first edit to list"},
    {"limit", CFG_INT, "1000", 1, 1e9, "list at most N edits"},
    CLI_OUTPUT_DEF,
    {NULL, 0, NULL, 0, 0, NULL}};

/* ---- the dataset as the CLI resolves names ------------------------------------------ */

typedef struct {
    ds_image *im; /* the manifest with deleted images kept (marked), sorted by image id */
    size_t n;
    long long seq; /* the edit sequence it reflects */
    ds_edit_cur *cur; /* decisions in force */
    size_t ncur;
    ds_image_url *urls; /* image id -> URL key, read when needed */
    size_t nurls;
    int have_urls;
} dsview;

static void view_free(dsview *v) {
    free(v->im);
    free(v->cur);
    free(v->urls);
    memset(v, 0, sizeof *v);
}

static int view_read(rstore *r, const char *ds, const char *cmd, dsview *v) {
    memset(v, 0, sizeof *v);
    if (ds_manifest_read_ex(r, ds, 1, &v->im, &v->n, &v->seq) ||
        ds_edits_current(r, ds, &v->cur, &v->ncur)) {
        fprintf(stderr, "ursa %s: cannot read the dataset: %s\n", cmd, rstore_last_error(r));
        return 1;
    }
    if (!v->n) {
        fprintf(stderr, "ursa %s: dataset \"%s\" has no verified image\n", cmd, ds);
        return 1;
    }
    return 0;
}

static ds_image *by_src(dsview *v, const char *src) {
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strncmp(v->im[mid].src, src, 32);
        if (!c) return &v->im[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* An image by any of the names a user has for it: its id, its blob, a
 * path ending in <blob>.jpg, or the URL it came from. */
static ds_image *resolve(rstore *r, const char *ds, dsview *v, const char *name) {
    char buf[80];
    const char *base = strrchr(name, '/');
    if (!strncmp(name, "http://", 7) || !strncmp(name, "https://", 8)) {
        if (!v->have_urls) {
            if (ds_image_urls(r, ds, &v->urls, &v->nurls)) return NULL;
            v->have_urls = 1;
        }
        char h[65];
        ds_url_hash(name, h);
        for (size_t i = 0; i < v->nurls; i++) /* rare: a linear walk will do */
            if (!strncmp(v->urls[i].key, h, DS_KEY_HEX)) return by_src(v, v->urls[i].src);
        return NULL;
    }
    base = base ? base + 1 : name;
    snprintf(buf, sizeof buf, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"))) *dot = '\0';
    if (is_hex(buf, 32)) return by_src(v, buf);
    if (is_hex(buf, 64)) {
        for (size_t i = 0; i < v->n; i++)
            if (!strcmp(v->im[i].jpeg, buf)) return &v->im[i];
        return by_src(v, buf); /* a full source hash */
    }
    return NULL;
}

/* The label an image had before any decision: its URL's label. */
static const char *given_label(const dsview *v, const ds_image *d) {
    const ds_edit_cur *c = ds_edits_find(v->cur, v->ncur, d->src);
    return c && c->from[0] ? c->from : d->label;
}

/* A label a relabel may go to: valid, and a class of the dataset (a label
 * some URL was ingested under), the rule ursa-verifier applies: a class of
 * a few relabelled images would break training. NULL, or why not. */
static const char *label_problem(rstore *r, const char *ds, const char *label) {
    int known = 0;
    if (!ds_label_valid(label))
        return "is not a valid label (1..64 bytes of UTF-8, no control character, '|', '/' or "
               "'\\', no leading '.')";
    if (ds_label_exists(r, ds, label, &known)) return "could not be checked: Redis failed";
    if (!known)
        return "is no class of the dataset (a new class comes with its images: ursa ingest)";
    return NULL;
}

/* ---- sending edits ------------------------------------------------------------------ */

typedef struct {
    ds_edit *e;
    size_t n, cap;
} edit_list;

/* Adds the edit of image d, made on its decision in force as read into v. */
static int edit_add(edit_list *l, const dsview *v, const ds_image *d, ed_op op, const char *to,
                    const cfg *c) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        ds_edit *ne = realloc(l->e, cap * sizeof *ne);
        if (!ne) return -1;
        l->e = ne;
        l->cap = cap;
    }
    ds_edit *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->image, sizeof e->image, "%.32s", d->src);
    e->op = op;
    snprintf(e->from, sizeof e->from, "%s", given_label(v, d));
    snprintf(e->to, sizeof e->to, "%s", to ? to : "");
    e->base_op = d->edit == ED_DELETE || d->edit == ED_RELABEL ? (ed_op)d->edit : ED_NONE;
    snprintf(e->base_to, sizeof e->base_to, "%s", d->edit == ED_RELABEL ? d->label : "");
    const char *who = cfg_str(c, "author");
    if (!*who) who = getenv("USER") ? getenv("USER") : "cli";
    snprintf(e->author, sizeof e->author, "%s", who);
    snprintf(e->reason, sizeof e->reason, "%s", cfg_str(c, "reason"));
    return 0;
}

/* Sends the edits and waits until ursa-verifier applied or refused them
 * (or wait-s passed). 0 when all were applied, 3 when all were handled
 * and some refused (each said on stderr, with the image), 1 else (after
 * saying why). */
static int send_edits(const cfg *c, rstore *r, const char *ds, const char *cmd, edit_list *l) {
    long counts[4] = {0};
    for (size_t i = 0; i < l->n; i++) counts[l->e[i].op]++;
    if (!l->n) {
        printf("no edit to make\n");
        return 0;
    }
    if (cfg_bool(c, "dry-run")) {
        printf("op\timage\tfrom\tto\n");
        for (size_t i = 0; i < l->n; i++) {
            const char *row[] = {ed_op_name(l->e[i].op), l->e[i].image, l->e[i].from, l->e[i].to};
            util_tsv_row(stdout, row, 4);
        }
        printf("dry run: %zu edits not sent\n", l->n);
        return 0;
    }
    kq_producer *p = cli_kafka(c);
    if (!p) return 1;
    int rc = 1;
    for (size_t i = 0; i < l->n; i++) {
        ursa_err err = ds_edit_send(r, p, ds, &l->e[i]);
        if (err == URSA_ERR_INVALID) {
            fprintf(stderr, "ursa %s: edit of %s: %s\n", cmd, l->e[i].image,
                    ds_edit_problem(ds, &l->e[i]));
            goto out;
        }
        if (err == URSA_ERR_UNAVAILABLE) {
            fprintf(stderr, "ursa %s: Redis: %s (%zu of %zu edits sent)\n", cmd,
                    rstore_last_error(r), i, l->n);
            goto out;
        }
        if (err) {
            fprintf(stderr, "ursa %s: Kafka: %s\n", cmd, ursa_err2str(err));
            goto out;
        }
    }
    if (kq_producer_flush(p, 15000) != URSA_OK) {
        fprintf(stderr, "ursa %s: Kafka did not take every edit; sending again is safe\n", cmd);
        goto out;
    }
    printf("%zu edits sent: %ld relabel, %ld delete, %ld restore\n", l->n, counts[ED_RELABEL],
           counts[ED_DELETE], counts[ED_RESTORE]);
    fflush(stdout);
    int64_t deadline = util_mono_ms() + cfg_int(c, "wait-s") * 1000;
    size_t done = 0, applied = 0, refused = 0, conflicts = 0;
    for (;;) { /* the edits of one image are applied in order: watch them all */
        while (done < l->n) {
            ed_outcome o = ED_PENDING;
            ds_edit_refusal f;
            const ds_edit *e = &l->e[done];
            if (ds_edit_outcome(r, ds, e->msg_id, &o, &f) || o == ED_PENDING) break;
            done++;
            if (o == ED_APPLIED) {
                applied++;
                continue;
            }
            char why[400], what[120];
            refused++;
            if (o == ED_REFUSED) {
                conflicts += f.conflict;
                ds_edit_refusal_text(e, &f, why, sizeof why);
            } else {
                snprintf(why, sizeof why, "refused by ursa-verifier without a record (its "
                                          "dead letters, ursa.dlq.verifier, say why)");
            }
            if (e->op == ED_RELABEL) snprintf(what, sizeof what, "relabel to \"%s\"", e->to);
            else snprintf(what, sizeof what, "%s", ed_op_name(e->op));
            fprintf(stderr, "ursa %s: image %s (%s): %s\n", cmd, e->image, what, why);
        }
        if (done == l->n || util_mono_ms() >= deadline) break;
        util_sleep_ms(100);
    }
    long long seq = 0;
    ds_edits_seq(r, ds, &seq);
    if (done == l->n && !refused) {
        printf("applied: the dataset is at edit #%lld (ursa edits --dataset %s)\n", seq, ds);
        rc = 0;
    } else if (done == l->n) {
        printf("%zu of %zu applied, %zu refused (%zu conflict%s: another edit of the image "
               "came first; read the dataset again and decide on what is in force now): the "
               "dataset is at edit #%lld\n", applied, l->n, refused, conflicts,
               conflicts == 1 ? "" : "s", seq);
        rc = 3;
    } else {
        printf("%zu of %zu applied so far%s; ursa-verifier applies the rest when it runs "
               "(they are kept in Redis until then, and sent again if Kafka loses them; ursa "
               "status)\n", applied, l->n, refused ? " (some refused, above)" : "");
    }
out:
    kq_producer_destroy(p);
    return rc;
}

/* ---- ursa edit ------------------------------------------------------------------------ */

int edit_cmd(const cfg *c, int argc, char **argv) {
    const char *ds = cli_dataset(c, "edit");
    if (!ds) return 2;
    ed_op op = argc >= 2 ? ed_op_parse(argv[0]) : ED_NONE;
    if (op == ED_NONE || (op == ED_RELABEL) != (argc == 3) || argc > 3) {
        fprintf(stderr, "ursa edit: give delete IMAGE, restore IMAGE or relabel IMAGE LABEL\n");
        return 2;
    }
    rstore *r = cli_redis(c);
    if (!r) return 1;
    dsview v;
    int rc = 1;
    edit_list l = {0};
    if (view_read(r, ds, "edit", &v)) goto out;
    ds_image *d = resolve(r, ds, &v, argv[1]);
    if (!d) {
        fprintf(stderr, "ursa edit: no image \"%s\" in dataset %s (an image id, blob, "
                        "<label>/<blob>.jpg or source URL)\n", argv[1], ds);
        rc = 2;
        goto out;
    }
    const char *why = op == ED_RELABEL ? label_problem(r, ds, argv[2]) : NULL;
    if (why) {
        char sh[300];
        fprintf(stderr, "ursa edit: \"%s\" %s\n", util_shown(argv[2], sh, sizeof sh), why);
        rc = 2;
        goto out;
    }
    if (op == ED_RESTORE && !d->edit) {
        fprintf(stderr, "ursa edit: image %s has no decision in force: nothing to restore\n",
                d->src);
        rc = 2;
        goto out;
    }
    if (op == ED_DELETE && d->edit == ED_DELETE) {
        fprintf(stderr, "ursa edit: image %s is deleted already\n", d->src);
        rc = 2;
        goto out;
    }
    if (edit_add(&l, &v, d, op, op == ED_RELABEL ? argv[2] : "", c) == 0)
        rc = send_edits(c, r, ds, "edit", &l);
out:
    free(l.e);
    view_free(&v);
    rstore_destroy(r);
    return rc;
}

/* ---- ursa edits ----------------------------------------------------------------------- */

int edits_cmd(const cfg *c, int argc, char **argv) {
    (void)argv;
    if (argc) {
        fprintf(stderr, "ursa edits: no arguments (--dataset NAME)\n");
        return 2;
    }
    const char *ds = cli_dataset(c, "edits");
    if (!ds) return 2;
    int json = cli_json(c, "edits");
    if (json < 0) return 2;
    rstore *r = cli_redis(c);
    if (!r) return 1;
    ds_edit *e = NULL;
    size_t n = 0;
    long long seq = 0, pending = 0;
    int rc = 1;
    if (ds_edits_seq(r, ds, &seq) || ds_edits_pending(r, ds, &pending) ||
        ds_edits_log(r, ds, cfg_int(c, "from"), (size_t)cfg_int(c, "limit"), &e, &n)) {
        fprintf(stderr, "ursa edits: %s\n", rstore_last_error(r));
        goto out;
    }
    if (json) {
        printf("{\"dataset\": ");
        util_json_str(stdout, ds);
        printf(", \"edits\": %lld, \"pending\": %lld, \"list\": [", seq, pending);
        for (size_t i = 0; i < n; i++) {
            const char *kv[] = {"op", ed_op_name(e[i].op), "image", e[i].image,
                                "from", e[i].from, "to", e[i].op == ED_RELABEL ? e[i].to : "",
                                "author", e[i].author, "reason", e[i].reason};
            printf("%s{\"seq\": %lld, \"ts_ms\": %lld", i ? ", " : "", e[i].seq,
                   (long long)e[i].ts_ms);
            for (int k = 0; k < 12; k += 2) {
                printf(", \"%s\": ", kv[k]);
                util_json_str(stdout, kv[k + 1]);
            }
            printf("}");
        }
        printf("]}\n");
        rc = 0;
        goto out;
    }
    printf("dataset %s: %lld edits\n", ds, seq);
    if (pending) /* dataset_edits.h: the verifier sends them again if Kafka lost them */
        printf("%lld more sent and not applied yet (ursa-verifier applies them when it runs)\n",
               pending);
    if (n) printf("#\ttime\top\timage\tfrom\tto\tauthor\treason\n");
    for (size_t i = 0; i < n; i++) {
        char t[32] = "-";
        time_t s = (time_t)(e[i].ts_ms / 1000);
        struct tm tm;
        if (e[i].ts_ms && localtime_r(&s, &tm)) strftime(t, sizeof t, "%Y-%m-%d %H:%M:%S", &tm);
        char sq[24];
        snprintf(sq, sizeof sq, "%lld", e[i].seq);
        const char *row[] = {sq, t, ed_op_name(e[i].op), e[i].image, e[i].from,
                             e[i].op == ED_RELABEL ? e[i].to : "-", e[i].author, e[i].reason};
        util_tsv_row(stdout, row, 8);
    }
    rc = 0;
out:
    free(e);
    rstore_destroy(r);
    return rc;
}

/* ---- ursa clean ----------------------------------------------------------------------- */

/* The dataset's last audit: its rows and the edit sequence it saw; an
 * unreliable audit is said on stderr. */
static int audit_read(const cfg *c, rstore *r, const char *ds, li_row **rows, size_t *n,
                      long long *seen_seq, char *job, size_t jn) {
    audit_latest a;
    if (audit_latest_read(r, ds, &a)) {
        fprintf(stderr, "ursa clean: %s\n", rstore_last_error(r));
        return 1;
    }
    snprintf(job, jn, "%s", a.job);
    *seen_seq = a.edit_seq;
    if (!a.job[0]) {
        fprintf(stderr, "ursa clean: dataset %s has no audit yet: ursa audit --dataset %s\n", ds,
                ds);
        return 1;
    }
    blob_store *bs = cli_blobs(c);
    ursa_err e = bs ? audit_rows_read(bs, &a, rows, n) : URSA_ERR_UNAVAILABLE;
    blob_store_destroy(bs);
    if (e) {
        fprintf(stderr, "ursa clean: the result of audit %s (blob %.12s): %s\n", a.job,
                a.rows_key[0] ? a.rows_key : "none yet", ursa_err2str(e));
        return 1;
    }
    char warn[320];
    if (audit_warning(&a, warn, sizeof warn)[0]) fprintf(stderr, "ursa clean: warning: %s\n", warn);
    return 0;
}

static int kind_wanted(const char *kinds, const char *kind) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", kinds);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        if (!strcmp(t, kind)) return 1;
    return 0;
}

/* Suspects still open: the image is in the dataset and nothing was
 * decided on it since the audit. */
static int still_open(dsview *v, const li_row *w, long long seen_seq, ds_image **d) {
    *d = by_src(v, w->image);
    return *d && audit_row_open(v->cur, v->ncur, w, seen_seq);
}

static int list_suspects(const cfg *c, rstore *r, const char *ds) {
    li_row *rows = NULL;
    size_t n = 0;
    long long seen = 0;
    char job[JOB_ID_MAX + 1];
    dsview v;
    memset(&v, 0, sizeof v);
    int rc = 1;
    char **urls = NULL;
    const char **keys = NULL;
    blob_store *bs = NULL;
    size_t k = 0;
    int json = cli_json(c, "clean");
    if (json < 0) return 2;
    if (audit_read(c, r, ds, &rows, &n, &seen, job, sizeof job) || view_read(r, ds, "clean", &v))
        goto out;
    if (v.seq > seen)
        fprintf(stderr, "ursa clean: audit %s saw the dataset at edit #%lld; it is at #%lld now "
                        "(images decided since are left out; ursa audit again to re-check)\n",
                job, seen, v.seq);
    long limit = (long)cfg_int(c, "limit");
    const char *kinds = cfg_given(c, "kinds") ? cfg_str(c, "kinds") : "label,duplicate,outlier";
    size_t of = 0, decided = 0, shown_max = 0;
    for (size_t i = 0; i < n; i++) { /* keep the ones to show, in the audit's order */
        ds_image *d;
        if (!kind_wanted(kinds, rows[i].kind)) continue;
        of++;
        if (!still_open(&v, &rows[i], seen, &d)) {
            decided++;
            continue;
        }
        shown_max++;
        if (limit && (long)k >= limit) continue;
        rows[k++] = rows[i];
    }
    /* the console's cleaner counts the same suspects, in the same order */
    fprintf(stderr, "ursa clean: audit %s: %zu suspects (%s), %zu decided since the audit and "
                    "left out, %zu open%s\n", job, of, kinds, decided, shown_max,
            k < shown_max ? " (--limit shows the first)" : "");
    if (!(bs = cli_blobs(c))) goto out;
    urls = calloc(k + 1, sizeof *urls);
    keys = calloc(k + 1, sizeof *keys);
    if (!urls || !keys || ds_image_urls(r, ds, &v.urls, &v.nurls)) {
        fprintf(stderr, "ursa clean: cannot read the dataset's URLs: %s\n", rstore_last_error(r));
        goto out;
    }
    for (size_t i = 0; i < k; i++) {
        const ds_image_url *u = ds_image_url_find(v.urls, v.nurls, rows[i].image);
        keys[i] = u ? u->key : "-";
    }
    if (ds_urls_find(r, bs, ds, k, keys, urls)) {
        fprintf(stderr, "ursa clean: cannot read the URL lists\n");
        goto out;
    }
    if (json) {
        printf("{\"audit\": \"%s\", \"suspects\": %zu, \"decided\": %zu, \"open\": %zu, "
               "\"items\": [", job, of, decided, shown_max);
        for (size_t i = 0; i < k; i++) {
            const li_row *w = &rows[i];
            const char *kv[] = {"url", urls[i] ? urls[i] : "", "blob", w->jpeg, "given", w->given,
                                "suggestion", w->suggested, "kind", w->kind, "image", w->image,
                                "partner", w->partner};
            printf("%s{", i ? ", " : "");
            for (size_t j = 0; j < sizeof kv / sizeof *kv; j += 2) {
                printf("%s\"%s\": ", j ? ", " : "", kv[j]);
                util_json_str(stdout, kv[j + 1]);
            }
            printf(", \"score\": %.4f}", isfinite(w->score) ? w->score : 0.0);
        }
        printf("]}\n");
    } else {
        printf("url\tblob\tgiven\tsuggestion\tscore\tkind\timage\tpartner\n");
        for (size_t i = 0; i < k; i++) {
            const li_row *w = &rows[i];
            char sc[24];
            snprintf(sc, sizeof sc, "%.4f", w->score);
            const char *row[] = {urls[i] ? urls[i] : "-", w->jpeg, w->given, w->suggested, sc,
                                 w->kind, w->image, w->partner[0] ? w->partner : "-"};
            util_tsv_row(stdout, row, 8);
        }
    }
    rc = 0;
out:
    for (size_t i = 0; urls && i < k; i++) free(urls[i]);
    free(urls);
    free(keys);
    blob_store_destroy(bs);
    free(rows);
    view_free(&v);
    return rc;
}

static int accept_suggestions(const cfg *c, rstore *r, const char *ds) {
    li_row *rows = NULL;
    size_t n = 0;
    long long seen = 0;
    char job[JOB_ID_MAX + 1];
    dsview v;
    memset(&v, 0, sizeof v);
    edit_list l = {0};
    int rc = 1;
    int json = cli_json(c, "clean");
    if (json < 0) return 2;
    if (audit_read(c, r, ds, &rows, &n, &seen, job, sizeof job) || view_read(r, ds, "clean", &v))
        goto out;
    double min = cfg_double(c, "min-score"), del = cfg_double(c, "delete-score");
    const char *kinds = cfg_str(c, "kinds");
    /* one decision an image (an image may be a label issue and a duplicate):
     * a delete wins over a relabel; of a duplicate pair one copy stays */
    unsigned char *want = calloc(v.n + 1, 1); /* 0 none, 1 relabel, 2 delete */
    const char **to = calloc(v.n + 1, sizeof *to);
    if (!want || !to) {
        free(want);
        free(to);
        fprintf(stderr, "ursa clean: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const li_row *w = &rows[i];
        ds_image *d;
        int label = !strcmp(w->kind, "label"), unsure = label && w->score < min;
        if ((w->score < min && !(unsure && w->score >= del)) || !kind_wanted(kinds, w->kind) ||
            !still_open(&v, w, seen, &d))
            continue;
        size_t at = (size_t)(d - v.im);
        if (d->edit == ED_DELETE || want[at] == 2) continue; /* already out */
        if (unsure) {
            want[at] = 2;
        } else if (label) {
            if (!strcmp(d->label, w->suggested) || want[at]) continue;
            want[at] = 1;
            to[at] = w->suggested;
        } else if (!strcmp(w->kind, "duplicate")) {
            ds_image *p = by_src(&v, w->partner);
            if (p && (p->edit == ED_DELETE || want[p - v.im] == 2)) continue; /* the other copy goes */
            want[at] = 2;
        } else {
            want[at] = 2;
        }
    }
    for (size_t i = 0; i < v.n; i++) {
        ds_image *d = &v.im[i];
        if (want[i] && edit_add(&l, &v, d, want[i] == 2 ? ED_DELETE : ED_RELABEL,
                                want[i] == 1 ? to[i] : NULL, c)) {
            free(want);
            free(to);
            fprintf(stderr, "ursa clean: out of memory\n");
            goto out;
        }
    }
    free(want);
    free(to);
    if (del < min)
        printf("audit %s: %zu suspects, %zu to act on (score >= %g, kinds %s; label issues of "
               "score %g to %g deleted)\n", job, n, l.n, min, kinds, del, min);
    else
        printf("audit %s: %zu suspects, %zu to act on (score >= %g, kinds %s)\n", job, n, l.n,
               min, kinds);
    rc = send_edits(c, r, ds, "clean", &l);
out:
    free(l.e);
    free(rows);
    view_free(&v);
    return rc;
}

static int apply_file(const cfg *c, rstore *r, const char *ds) {
    const char *path = cfg_str(c, "apply");
    char *text = NULL;
    size_t len = 0;
    ursa_err e = util_read_file(path, (size_t)1 << 30, &text, &len);
    if (e) {
        fprintf(stderr, "ursa clean: cannot read %s: %s\n", path, ursa_err2str(e));
        return 2;
    }
    dsview v;
    memset(&v, 0, sizeof v);
    edit_list l = {0};
    unsigned char *listed = NULL;
    int rc = 1, name_col = -1, label_col = -1, line = 0, errors = 0;
    if (view_read(r, ds, "clean", &v)) goto out;
    listed = calloc(v.n, 1);
    if (!listed) goto out;
    for (char *p = text, *end = text + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl) *nl = '\0';
        line++;
        const char *q = p;
        p = nl ? nl + 1 : end;
        if (!*q || *q == '\r') continue;
        char f[8][1024];
        int nf = 0;
        int malformed = 0;
        while (nf < 8) {
            int last = util_csv_field(&q, f[nf], sizeof f[nf]);
            util_cell_unescape(f[nf]); /* export-dataset's '=... */
            nf++;
            if (last) {
                malformed = last < 0;
                break;
            }
        }
        if (malformed && name_col >= 0) {
            fprintf(stderr, "ursa clean: %s:%d: not a CSV line (a quote left open, or text "
                            "after a closing quote)\n", path, line);
            errors++;
            continue;
        }
        if (name_col < 0) { /* the header */
            for (int i = 0; i < nf; i++) {
                if (!strcmp(f[i], "name") || !strcmp(f[i], "image") || !strcmp(f[i], "url") ||
                    !strcmp(f[i], "fn_col") || !strcmp(f[i], "blob"))
                    name_col = i;
                if (!strcmp(f[i], "label") || !strcmp(f[i], "label_col")) label_col = i;
            }
            if (name_col < 0 || label_col < 0) {
                fprintf(stderr, "ursa clean: %s:1: the header needs a name and a label column "
                                "(name,label as fast.ai's cleaned.csv)\n", path);
                rc = 2;
                goto out;
            }
            continue;
        }
        if (name_col >= nf || label_col >= nf) {
            fprintf(stderr, "ursa clean: %s:%d: fewer columns than the header\n", path, line);
            errors++;
            continue;
        }
        ds_image *d = resolve(r, ds, &v, f[name_col]);
        if (!d) {
            char sh[256];
            fprintf(stderr, "ursa clean: %s:%d: no image \"%s\" in dataset %s\n", path, line,
                    util_shown(f[name_col], sh, sizeof sh), ds);
            errors++;
            continue;
        }
        const char *why = strcmp(f[label_col], d->label) ? label_problem(r, ds, f[label_col]) : NULL;
        if (why) {
            char sh[256];
            fprintf(stderr, "ursa clean: %s:%d: \"%s\" %s\n", path, line,
                    util_shown(f[label_col], sh, sizeof sh), why);
            errors++;
            continue;
        }
        size_t at = (size_t)(d - v.im);
        if (listed[at]) continue; /* listed twice: the first line counts */
        listed[at] = 1;
        int bad = 0;
        if (strcmp(f[label_col], d->label) != 0)
            bad = edit_add(&l, &v, d, ED_RELABEL, f[label_col], c);
        else if (d->edit == ED_DELETE)
            bad = edit_add(&l, &v, d, ED_RESTORE, NULL, c);
        if (bad) goto out;
    }
    if (name_col < 0) {
        fprintf(stderr, "ursa clean: %s is empty\n", path);
        rc = 2;
        goto out;
    }
    if (errors) {
        fprintf(stderr, "ursa clean: %d bad lines in %s: nothing was changed\n", errors, path);
        rc = 2;
        goto out;
    }
    if (cfg_bool(c, "delete-missing"))
        for (size_t i = 0; i < v.n; i++)
            if (!listed[i] && v.im[i].edit != ED_DELETE &&
                edit_add(&l, &v, &v.im[i], ED_DELETE, NULL, c))
                goto out;
    rc = send_edits(c, r, ds, "clean", &l);
out:
    free(listed);
    free(l.e);
    free(text);
    view_free(&v);
    return rc;
}

int clean_cmd(const cfg *c, int argc, char **argv) {
    if (argc) {
        fprintf(stderr, "ursa clean: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    const char *ds = cli_dataset(c, "clean");
    if (!ds) return 2;
    int apply = *cfg_str(c, "apply") != 0, accept = cfg_bool(c, "accept-suggestions");
    if (apply && accept) {
        fprintf(stderr, "ursa clean: --apply and --accept-suggestions are separate steps\n");
        return 2;
    }
    rstore *r = cli_redis(c);
    if (!r) return 1;
    int rc = apply ? apply_file(c, r, ds) : accept ? accept_suggestions(c, r, ds)
                                                   : list_suspects(c, r, ds);
    rstore_destroy(r);
    return rc;
}
