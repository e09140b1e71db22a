/* dataset_cmd.c: ingest, dataset status, retry, export-dataset.
 *
 * Redis is the source of truth for a dataset (common/state/dataset.h): ingest
 * records every new URL there before it queues a crawl request, so a URL is
 * never accepted and then lost; if the queue itself is lost (the embedded
 * broker keeps nothing across a restart) `ursa retry --pending` queues again
 * every URL without a final state. */
#include "dataset_cmd.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob.h"
#include "conn.h"
#include "dataset.h"
#include "dataset_edits.h"
#include "jobs.h"
#include "kq.h"
#include "log.h"
#include "msg.h"
#include "registry.h"
#include "rstore.h"
#include "statedir.h"
#include "topics.h"
#include "url.h"
#include "util.h"

const cfg_def ingest_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "dataset name (required)"},
    {"label", CFG_STR, "", 1, 0, "label for every URL (default: from the file name)"},
    {"max-per-label", CFG_INT, "0", 0, 1e9, "take at most N URLs per label (0: all)"},
    {"no-wait", CFG_BOOL, "false", 1, 0, "return once the URLs are queued"},
    {"wait-timeout-s", CFG_INT, "0", 0, 1e7, "give up waiting after this long (0: never)"},
    {"outage-timeout-s", CFG_INT, "300", 1, 1e7,
     "while waiting, give up when Redis has not answered for this long"},
    {"allow-empty", CFG_BOOL, "false", 1, 0,
     "exit 0 even when the lists hold no valid URL (by default that is an error)"},
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def retry_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "dataset name (required)"},
    {"pending", CFG_BOOL, "false", 1, 0,
     "queue again every URL without a final state (after a broker restart lost the queue)"},
    {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def export_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "dataset name (required)"}, {NULL, 0, NULL, 0, 0, NULL}};

/* Queues one crawl request; the key is the URL hash. */
static ursa_err queue_url(kq_producer *p, const char *ds, const char *url, const char *label,
                          uint32_t attempt) {
    Ursa__Header h;
    char id[33], hash[65];
    msg_header_init(&h, id, ds, NULL);
    ds_url_hash(url, hash);
    Ursa__CrawlRequest q = URSA__CRAWL_REQUEST__INIT;
    q.header = &h;
    q.url = (char *)url;
    q.url_hash = hash;
    q.label = (char *)label;
    q.attempt = attempt;
    void *buf;
    size_t len;
    ursa_err err = msg_pack(&q.base, &buf, &len);
    if (err) return err;
    err = kq_produce(p, TOPIC_CRAWL_REQUESTS, hash, 64, buf, len, NULL, 0, NULL, NULL);
    free(buf);
    return err;
}

/* ---- counts and progress -------------------------------------------------------- */

typedef struct {
    char label[72];
    long long n[DS__COUNT];
} label_count;

typedef struct {
    long long total;
    long long n[DS__COUNT];
    label_count *labels;
    size_t nlabels;
    struct {
        char label[72], state[16], reason[40];
        long long n;
    } *reasons;
    size_t nreasons;
} ds_counts;

static void counts_free(ds_counts *k) {
    free(k->labels);
    free(k->reasons);
    memset(k, 0, sizeof *k);
}

static ursa_err read_counts(rstore *r, const char *ds, ds_counts *k) {
    memset(k, 0, sizeof *k);
    ds_count *c = NULL;
    size_t nc = 0;
    ursa_err err = ds_counts_read(r, ds, &c, &nc, &k->total);
    if (err) return err;
    for (size_t i = 0; i < nc; i++) {
        int si = (int)c[i].state;
        if (c[i].reason[0]) {
            if (c[i].n <= 0) continue;
            void *nr = realloc(k->reasons, (k->nreasons + 1) * sizeof *k->reasons);
            if (!nr) break;
            k->reasons = nr;
            snprintf(k->reasons[k->nreasons].label, 72, "%s", c[i].label);
            snprintf(k->reasons[k->nreasons].state, 16, "%s", ds_state_name(c[i].state));
            snprintf(k->reasons[k->nreasons].reason, 40, "%s", c[i].reason);
            k->reasons[k->nreasons++].n = c[i].n;
            continue;
        }
        k->n[si] += c[i].n;
        size_t li = 0;
        while (li < k->nlabels && strcmp(k->labels[li].label, c[i].label)) li++;
        if (li == k->nlabels) {
            void *nl = realloc(k->labels, (k->nlabels + 1) * sizeof *k->labels);
            if (!nl) break;
            k->labels = nl;
            memset(&k->labels[li], 0, sizeof k->labels[li]);
            snprintf(k->labels[li].label, 72, "%s", c[i].label);
            k->nlabels++;
        }
        k->labels[li].n[si] += c[i].n;
    }
    free(c);
    return URSA_OK;
}

static long long finals(const ds_counts *k) {
    return k->n[DS_VERIFIED] + k->n[DS_DUPLICATE] + k->n[DS_REJECTED] + k->n[DS_FAILED];
}

static void progress_line(const ds_counts *k, int tty, double secs) {
    long long done = finals(k);
    int width = 30, fill = k->total ? (int)(width * done / k->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '-';
    bar[width] = '\0';
    fprintf(stderr,
            "%s[%s] %lld/%lld  verified %lld  duplicate %lld  rejected %lld  failed %lld  "
            "| downloaded %lld  queued %lld  %.0fs%s",
            tty ? "\r" : "", bar, done, k->total, k->n[DS_VERIFIED], k->n[DS_DUPLICATE],
            k->n[DS_REJECTED], k->n[DS_FAILED], k->n[DS_DOWNLOADED], k->n[DS_QUEUED], secs,
            tty ? "\033[K" : "\n");
    fflush(stderr);
}

/* Waits until every URL of the dataset has a final state, through Redis
 * outages of up to outage_s. */
static int wait_final(rstore *r, const char *ds, long long timeout_s, long long outage_s) {
    int tty = isatty(2);
    int64_t t0 = util_mono_ms(), last = 0;
    cli_outage o = {.cmd = "ursa ingest", .limit_s = outage_s};
    for (;;) {
        ds_counts k;
        int64_t asked = util_mono_ms();
        ursa_err err = read_counts(r, ds, &k);
        if (cli_outage_note(&o, err, r, asked)) return 1;
        int64_t now = util_mono_ms();
        if (err) {
            if (timeout_s && now - t0 > timeout_s * 1000) {
                fprintf(stderr, "ursa: gave up waiting after %lld s; the work goes on (see ursa "
                                "status --dataset %s)\n", timeout_s, ds);
                return 1;
            }
            util_sleep_ms(1000);
            continue;
        }
        int done = finals(&k) >= k.total;
        if (tty || done || now - last >= 5000) {
            progress_line(&k, tty, (double)(now - t0) / 1000);
            last = now;
        }
        counts_free(&k);
        if (done) {
            if (tty) fputc('\n', stderr);
            return 0;
        }
        if (timeout_s && now - t0 > timeout_s * 1000) {
            fprintf(stderr, "%sursa: gave up waiting after %lld s; the work goes on "
                            "(see ursa status --dataset %s)\n", tty ? "\n" : "", timeout_s, ds);
            return 1;
        }
        util_sleep_ms(250);
    }
}

/* ---- ingest ------------------------------------------------------------------ */

typedef struct {
    char *url, *label;
    char hash[65];
} entry;

typedef struct {
    entry *e;
    size_t n, cap;
    long invalid;
} entries;

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1])) s[--l] = '\0';
    return s;
}

/* Label from a file name: urls_black.txt and black.txt give black. */
static void label_from_path(const char *path, char *out, size_t n) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    const char *b = basename(copy);
    if (!strncmp(b, "urls_", 5)) b += 5;
    snprintf(out, n, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

static int add_entry(entries *es, const char *url, const char *label) {
    if (es->n == es->cap) {
        size_t cap = es->cap ? es->cap * 2 : 1024;
        entry *ne = realloc(es->e, cap * sizeof *ne);
        if (!ne) return -1;
        es->e = ne;
        es->cap = cap;
    }
    entry *e = &es->e[es->n];
    if (!(e->url = strdup(url)) || !(e->label = strdup(label))) return -1;
    ds_url_hash(url, e->hash);
    es->n++;
    return 0;
}

static int read_list(const char *path, const char *force_label, entries *es) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ursa ingest: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t pl = strlen(path);
    int csv = pl > 4 && !strcasecmp(path + pl - 4, ".csv");
    int url_col = 0, label_col = 1, lineno = 0;
    char file_label[256];
    label_from_path(path, file_label, sizeof file_label);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        const char *url = s, *label = force_label && *force_label ? force_label : file_label;
        char fields[16][2100];
        int nf = 0;
        if (csv) { /* RFC 4180: a quoted field may hold commas */
            const char *q = s;
            int last = 0;
            while (nf < 16 && !last) {
                last = util_csv_field(&q, fields[nf], sizeof fields[nf]);
                char *t = trim(fields[nf]);
                memmove(fields[nf], t, strlen(t) + 1);
                nf++;
            }
            if (last < 0) {
                fprintf(stderr, "%s:%d: not a CSV line (a quote left open, or text after a "
                                "closing quote); skipped\n", path, lineno);
                es->invalid++;
                continue;
            }
            if (lineno == 1 || (url_col == 0 && label_col == 1 && nf && !strcasecmp(fields[0], "url"))) {
                int hdr = 0;
                for (int i = 0; i < nf; i++) {
                    if (!strcasecmp(fields[i], "url")) url_col = i, hdr = 1;
                    if (!strcasecmp(fields[i], "label")) label_col = i, hdr = 1;
                }
                if (hdr) continue;
            }
            if (url_col >= nf || (!(force_label && *force_label) && label_col >= nf)) {
                fprintf(stderr, "%s:%d: expected url,label columns; skipped\n", path, lineno);
                es->invalid++;
                continue;
            }
            url = fields[url_col];
            if (!(force_label && *force_label)) label = fields[label_col];
        }
        char norm[2100], why[160];
        if (url_normalize(url, norm, sizeof norm, why, sizeof why)) {
            fprintf(stderr, "%s:%d: invalid URL (%s); skipped\n", path, lineno, why);
            es->invalid++;
            continue;
        }
        url = norm;
        if (!ds_label_valid(label)) {
            char sh[300]; /* the list's bytes, not a terminal's commands */
            fprintf(stderr, "%s:%d: invalid label \"%s\" (1..64 bytes of UTF-8, no control "
                            "character, '|', '/' or '\\', no leading '.'); skipped\n",
                    path, lineno, util_shown(label, sh, sizeof sh));
            es->invalid++;
            continue;
        }
        if (add_entry(es, url, label)) {
            fprintf(stderr, "ursa ingest: out of memory\n");
            free(line);
            fclose(f);
            return -1;
        }
    }
    free(line);
    fclose(f);
    return 0;
}

typedef struct {
    const char *hash;
    size_t i;
} hash_ix;

static int cmp_hash_ix(const void *a, const void *b) {
    const hash_ix *x = a, *y = b;
    int c = strcmp(x->hash, y->hash);
    return c ? c : (x->i < y->i ? -1 : 1); /* the first one listed wins */
}

static void entries_free(entries *es) {
    for (size_t i = 0; i < es->n; i++) {
        free(es->e[i].url);
        free(es->e[i].label);
    }
    free(es->e);
}

int ingest_cmd(const cfg *c, int argc, char **argv) {
    const char *ds = cli_dataset(c, "ingest");
    if (!ds) return 2;
    if (argc < 1) {
        fprintf(stderr, "ursa ingest: no URL lists given (see ursa ingest --help)\n");
        return 2;
    }
    const char *force = cfg_str(c, "label");
    if (*force && !ds_label_valid(force)) {
        char sh[300];
        fprintf(stderr, "ursa ingest: invalid --label \"%s\"\n", util_shown(force, sh, sizeof sh));
        return 2;
    }
    entries es = {0};
    for (int i = 0; i < argc; i++)
        if (read_list(argv[i], force, &es)) {
            entries_free(&es);
            return 2;
        }
    if (es.n == 0 && !cfg_bool(c, "allow-empty")) {
        fprintf(stderr, "ursa ingest: no valid URL in %d file%s (%ld invalid line%s); nothing "
                        "queued (--allow-empty makes that a success)\n",
                argc, argc == 1 ? "" : "s", es.invalid, es.invalid == 1 ? "" : "s");
        entries_free(&es);
        return 1;
    }
    /* A URL listed twice (in any of the ways url_normalize makes one) is
     * taken once, with the label it had first. */
    hash_ix *ix = malloc(sizeof *ix * (es.n ? es.n : 1));
    char *skip = calloc(es.n ? es.n : 1, 1);
    if (!ix || !skip) {
        fprintf(stderr, "ursa ingest: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < es.n; i++) ix[i].hash = es.e[i].hash, ix[i].i = i;
    qsort(ix, es.n, sizeof *ix, cmp_hash_ix);
    long repeats = 0;
    for (size_t k = 1; k < es.n; k++)
        if (!strcmp(ix[k].hash, ix[k - 1].hash)) skip[ix[k].i] = 1, repeats++;
    free(ix);
    /* --max-per-label, in the order the URLs were listed */
    long long maxpl = cfg_int(c, "max-per-label");
    long over = 0;
    const char **take_urls = malloc(sizeof(char *) * (es.n ? es.n : 1));
    const char **take_labels = malloc(sizeof(char *) * (es.n ? es.n : 1));
    struct {
        const char *label;
        long long n;
    } *per = calloc(es.n ? es.n : 1, sizeof *per);
    size_t nper = 0, ntake = 0;
    if (!take_urls || !take_labels || !per) return 1;
    for (size_t i = 0; i < es.n; i++) {
        if (skip[i]) continue;
        size_t li = 0;
        while (li < nper && strcmp(per[li].label, es.e[i].label)) li++;
        if (li == nper) per[nper++].label = es.e[i].label;
        if (maxpl && per[li].n >= maxpl) {
            over++;
            continue;
        }
        per[li].n++;
        take_urls[ntake] = es.e[i].url;
        take_labels[ntake++] = es.e[i].label;
    }
    free(skip);
    int rc = 1;
    int *added = calloc(ntake ? ntake : 1, sizeof *added);
    rstore *r = cli_redis(c);
    blob_store *bs = r ? cli_blobs(c) : NULL;
    kq_producer *p = bs ? cli_kafka(c) : NULL;
    long queued = 0, known = 0;
    if (!added || !r || !p) goto out;
    ursa_err err = ds_add_urls(r, bs, ds, ntake, take_urls, take_labels, added);
    if (err) {
        fprintf(stderr, "ursa ingest: cannot record the URLs (their list goes to the blob store, "
                        "their states to Redis): %s%s%s%s\n", ursa_err2str(err),
                err == URSA_ERR_REDIS || err == URSA_ERR_UNAVAILABLE ? " (" : "",
                err == URSA_ERR_REDIS || err == URSA_ERR_UNAVAILABLE ? rstore_last_error(r) : "",
                err == URSA_ERR_REDIS || err == URSA_ERR_UNAVAILABLE ? ")" : "");
        goto out;
    }
    for (size_t i = 0; i < ntake; i++) {
        if (!added[i]) {
            known++;
            continue;
        }
        if ((err = queue_url(p, ds, take_urls[i], take_labels[i], 1))) {
            fprintf(stderr, "ursa ingest: cannot queue %s: %s; the URLs are recorded, run "
                            "`ursa retry --dataset %s --pending` once Kafka is back\n",
                    take_urls[i], ursa_err2str(err), ds);
            goto out;
        }
        queued++;
    }
    if (kq_producer_flush(p, 60000)) {
        fprintf(stderr, "ursa ingest: Kafka did not acknowledge every request in 60 s; run "
                        "`ursa retry --dataset %s --pending` to queue again what is missing\n", ds);
        goto out;
    }
    printf("dataset %s: %zu URLs read from %d file%s, %zu label%s; %ld queued, %ld already in "
           "the dataset, %ld listed twice, %ld over --max-per-label, %ld invalid\n",
           ds, es.n + (size_t)es.invalid, argc, argc == 1 ? "" : "s", nper, nper == 1 ? "" : "s",
           queued, known, repeats, over, es.invalid);
    fflush(stdout);
    rc = cfg_bool(c, "no-wait") ? 0 : wait_final(r, ds, cfg_int(c, "wait-timeout-s"),
                                                   cfg_int(c, "outage-timeout-s"));
    if (rc == 0 && !cfg_bool(c, "no-wait")) rc = dataset_status(c);
out:
    free(added);
    free(take_urls);
    free(take_labels);
    free(per);
    if (p) kq_producer_destroy(p);
    blob_store_destroy(bs);
    rstore_destroy(r);
    entries_free(&es);
    return rc;
}

/* ---- status ---------------------------------------------------------------------- */

/* The records a scan picked, and their URL text from the dataset's lists. */
typedef struct {
    ds_record *rec;
    size_t n, cap;
    int want; /* 'f': failed, rejected, duplicate; 'p': pending; 't': transient failures */
    int oom;
} picked;

static int pick(void *opaque, const ds_record *rec) {
    picked *pk = opaque;
    int take = pk->want == 'p'   ? !ds_state_final(rec->state)
               : pk->want == 't' ? rec->state == DS_FAILED && rec->transient
                                 : rec->state >= DS_DUPLICATE;
    if (!take) return 0;
    if (pk->n == pk->cap) {
        size_t cap = pk->cap ? 2 * pk->cap : 1024;
        ds_record *nr = realloc(pk->rec, cap * sizeof *nr);
        if (!nr) return pk->oom = 1;
        pk->rec = nr;
        pk->cap = cap;
    }
    pk->rec[pk->n++] = *rec;
    return 0;
}

/* Scans the dataset for records of kind want and finds their URLs; the
 * caller frees pk->rec, each (*urls)[i] and *urls. */
static ursa_err pick_with_urls(rstore *r, blob_store *bs, const char *ds, int want,
                               picked *pk, char ***urls) {
    memset(pk, 0, sizeof *pk);
    pk->want = want;
    *urls = NULL;
    ursa_err err = ds_scan(r, ds, pick, pk);
    if (!err && pk->oom) err = URSA_ERR_NOMEM;
    const char **keys = malloc(sizeof *keys * (pk->n ? pk->n : 1));
    *urls = calloc(pk->n ? pk->n : 1, sizeof **urls);
    if (!err && (!keys || !*urls)) err = URSA_ERR_NOMEM;
    for (size_t i = 0; !err && i < pk->n; i++) keys[i] = pk->rec[i].key;
    if (!err) err = ds_urls_find(r, bs, ds, pk->n, keys, *urls);
    free(keys);
    return err;
}

static void picked_free(picked *pk, char **urls) {
    for (size_t i = 0; urls && i < pk->n; i++) free(urls[i]);
    free(urls);
    free(pk->rec);
}

static int list_failed(rstore *r, blob_store *bs, const char *ds) {
    picked pk;
    char **urls = NULL;
    ursa_err err = pick_with_urls(r, bs, ds, 'f', &pk, &urls);
    if (err) {
        fprintf(stderr, "ursa status: %s (%s)\n", ursa_err2str(err), rstore_last_error(r));
        picked_free(&pk, urls);
        return 1;
    }
    printf("url\tlabel\tstate\treason\ttransient\tdetail\n");
    for (size_t i = 0; i < pk.n; i++) {
        const ds_record *x = &pk.rec[i];
        const char *row[] = {urls[i] ? urls[i] : x->key, x->label, ds_state_name(x->state),
                             x->reason, x->transient ? "yes" : "no", x->detail};
        util_tsv_row(stdout, row, 6);
    }
    picked_free(&pk, urls);
    return 0;
}

/* The cleaning decisions in force, and the verified images per label as
 * training sees them (dataset_edits.h). */
static void edited_counts(rstore *r, const char *ds, const ds_counts *k) {
    ds_edit_cur *cur = NULL;
    size_t n = 0;
    long long seq = 0;
    if (ds_edits_seq(r, ds, &seq) || !seq || ds_edits_current(r, ds, &cur, &n)) return;
    long long del = 0, rel = 0;
    for (size_t i = 0; i < n; i++) {
        del += cur[i].op == ED_DELETE;
        rel += cur[i].op == ED_RELABEL;
    }
    printf("\nedits: %lld made (ursa edits --dataset %s), %lld deleted and %lld relabelled in "
           "force\n", seq, ds, del, rel);
    printf("%-20s %9s  (as training sees them)\n", "label", "verified");
    for (size_t i = 0; i < k->nlabels; i++) {
        printf("%-20s %9lld\n", k->labels[i].label,
               k->labels[i].n[DS_VERIFIED] + ds_edits_label_delta(cur, n, k->labels[i].label));
    }
    for (size_t j = 0; j < n; j++) { /* labels only edits gave */
        if (cur[j].op != ED_RELABEL) continue;
        int known = 0, first = 1;
        for (size_t i = 0; i < k->nlabels && !known; i++) known = !strcmp(cur[j].to, k->labels[i].label);
        for (size_t q = 0; q < j && first; q++)
            first = !(cur[q].op == ED_RELABEL && !strcmp(cur[q].to, cur[j].to));
        if (known || !first) continue;
        printf("%-20s %9lld\n", cur[j].to, ds_edits_label_delta(cur, n, cur[j].to));
    }
    free(cur);
}

/* ursa status --dataset NAME -o json: the counts by label and the reasons */
static void status_json(const char *ds, const ds_counts *k) {
    printf("{\"dataset\": ");
    util_json_str(stdout, ds);
    printf(", \"total\": %lld, \"final\": %lld, \"pending\": %lld, \"labels\": [", k->total,
           finals(k), k->n[DS_QUEUED] + k->n[DS_DOWNLOADED]);
    for (size_t i = 0; i < k->nlabels; i++) {
        const label_count *l = &k->labels[i];
        printf("%s{\"label\": ", i ? ", " : "");
        util_json_str(stdout, l->label);
        printf(", \"verified\": %lld, \"duplicate\": %lld, \"rejected\": %lld, \"failed\": %lld, "
               "\"pending\": %lld}", l->n[DS_VERIFIED], l->n[DS_DUPLICATE], l->n[DS_REJECTED],
               l->n[DS_FAILED], l->n[DS_QUEUED] + l->n[DS_DOWNLOADED]);
    }
    printf("], \"reasons\": [");
    for (size_t i = 0; i < k->nreasons; i++) {
        const char *kv[] = {"label", k->reasons[i].label, "state", k->reasons[i].state,
                            "reason", k->reasons[i].reason};
        printf("%s{", i ? ", " : "");
        for (int j = 0; j < 6; j += 2) {
            printf("%s\"%s\": ", j ? ", " : "", kv[j]);
            util_json_str(stdout, kv[j + 1]);
        }
        printf(", \"n\": %lld}", k->reasons[i].n);
    }
    printf("]}\n");
}

int dataset_status(const cfg *c) {
    const char *ds = cli_dataset(c, "status");
    if (!ds) return 2;
    int json = !strcmp(cfg_str(c, "output"), "json");
    if (json && (cfg_bool(c, "failed") || cfg_bool(c, "counts"))) {
        fprintf(stderr, "ursa status: -o json gives the counts and reasons; --failed and "
                        "--counts are text\n");
        return 2;
    }
    rstore *r = cli_redis(c);
    if (!r) return 1;
    ds_counts k;
    if (read_counts(r, ds, &k)) {
        fprintf(stderr, "ursa status: cannot read Redis: %s\n", rstore_last_error(r));
        rstore_destroy(r);
        return 1;
    }
    int rc = 0;
    if (!k.total) {
        fprintf(stderr, "ursa status: no dataset \"%s\"\n", ds);
        rc = 1;
    } else if (json) {
        status_json(ds, &k);
    } else if (cfg_bool(c, "failed")) {
        blob_store *bs = cli_blobs(c);
        rc = bs ? list_failed(r, bs, ds) : 1;
        blob_store_destroy(bs);
    } else if (cfg_bool(c, "counts")) { /* the raw counters, for scripts and tests */
        printf("total\t%lld\n", k.total);
        for (size_t i = 0; i < k.nlabels; i++)
            for (int st = 0; st < DS__COUNT; st++)
                if (k.labels[i].n[st])
                    printf("%s|%s\t%lld\n", k.labels[i].label, ds_state_name((ds_state)st),
                           k.labels[i].n[st]);
        for (size_t i = 0; i < k.nreasons; i++)
            printf("%s|%s|%s\t%lld\n", k.reasons[i].label, k.reasons[i].state,
                   k.reasons[i].reason, k.reasons[i].n);
    } else {
        long long pending = k.n[DS_QUEUED] + k.n[DS_DOWNLOADED];
        printf("dataset %s: %lld URLs, %lld with a final state, %lld pending\n", ds, k.total,
               finals(&k), pending);
        printf("%-20s %9s %9s %9s %9s %9s\n", "label", "verified", "duplicate", "rejected",
               "failed", "pending");
        for (size_t i = 0; i < k.nlabels; i++) {
            label_count *l = &k.labels[i];
            printf("%-20s %9lld %9lld %9lld %9lld %9lld\n", l->label, l->n[DS_VERIFIED],
                   l->n[DS_DUPLICATE], l->n[DS_REJECTED], l->n[DS_FAILED],
                   l->n[DS_QUEUED] + l->n[DS_DOWNLOADED]);
        }
        edited_counts(r, ds, &k);
        if (k.nreasons) {
            printf("\nreasons (ursa status --dataset %s --failed lists the URLs):\n", ds);
            for (size_t i = 0; i < k.nreasons; i++)
                printf("  %-20s %-9s %-22s %lld\n", k.reasons[i].label, k.reasons[i].state,
                       k.reasons[i].reason, k.reasons[i].n);
        }
    }
    counts_free(&k);
    rstore_destroy(r);
    return rc;
}

/* ---- retry ------------------------------------------------------------------------- */

int retry_cmd(const cfg *c, int argc, char **argv) {
    (void)argv;
    const char *ds = cli_dataset(c, "retry");
    if (!ds) return 2;
    if (argc) {
        fprintf(stderr, "ursa retry: unexpected argument\n");
        return 2;
    }
    rstore *r = cli_redis(c);
    blob_store *bs = r ? cli_blobs(c) : NULL;
    kq_producer *p = bs ? cli_kafka(c) : NULL;
    int rc = 1, pending = cfg_bool(c, "pending");
    picked pk = {0};
    char **urls = NULL;
    long n = 0, lost = 0;
    if (!p) goto out;
    int64_t t0 = util_mono_ms();
    ursa_err err = pick_with_urls(r, bs, ds, pending ? 'p' : 't', &pk, &urls);
    if (err) {
        fprintf(stderr, "ursa retry: %s (%s)\n", ursa_err2str(err), rstore_last_error(r));
        goto out;
    }
    /* transient failures go back to queued first (their counts move with
     * them), in pipelined rounds */
    enum { ROUND = 2000 };
    for (size_t off = 0; !pending && off < pk.n; off += ROUND) {
        size_t m = pk.n - off < ROUND ? pk.n - off : ROUND;
        ds_op *ops = calloc(m, sizeof *ops);
        if (!ops) {
            err = URSA_ERR_NOMEM;
            break;
        }
        for (size_t i = 0; i < m; i++)
            ops[i] = (ds_op){.kind = DS_OP_STATE, .ds = ds, .url_hash = pk.rec[off + i].key,
                             .state = DS_QUEUED, .reason = "", .detail = "", .force = 1};
        err = ds_apply(r, ops, m);
        free(ops);
        if (err) break;
    }
    for (size_t i = 0; !err && i < pk.n; i++) {
        if (!urls[i]) { /* its list blob is gone: nothing to download */
            lost++;
            continue;
        }
        if ((err = queue_url(p, ds, urls[i], pk.rec[i].label, 1))) break;
        n++;
    }
    if (err) {
        fprintf(stderr, "ursa retry: cannot queue: %s\n", ursa_err2str(err));
        goto out;
    }
    if (kq_producer_flush(p, 60000)) {
        fprintf(stderr, "ursa retry: Kafka did not acknowledge every request\n");
        goto out;
    }
    printf("dataset %s: %ld URL%s queued again (%s) in %.1f s\n", ds, n, n == 1 ? "" : "s",
           pending ? "every URL without a final state" : "transient failures",
           (double)(util_mono_ms() - t0) / 1000);
    if (lost)
        fprintf(stderr, "ursa retry: %ld URL%s not found in the dataset's lists (a list blob "
                        "is missing from the blob store)\n", lost, lost == 1 ? "" : "s");
    rc = 0;
out:
    picked_free(&pk, urls);
    if (p) kq_producer_destroy(p);
    blob_store_destroy(bs);
    rstore_destroy(r);
    return rc;
}

/* ---- export ------------------------------------------------------------------------- */

/* One labels.csv line (name, label); labels come from the web and may hold
 * commas and quotes, or start like a spreadsheet formula: util_cell quotes
 * and escapes them. */
static void csv_put(FILE *f, const char *label, const char *jpeg) {
    char name[4200];
    snprintf(name, sizeof name, "%s/%s.jpg", label, jpeg);
    util_cell(f, name, ',');
    fputc(',', f);
    util_cell(f, label, ',');
    fputc('\n', f);
}

int export_cmd(const cfg *c, int argc, char **argv) {
    const char *ds = cli_dataset(c, "export-dataset");
    if (!ds) return 2;
    if (argc != 1) {
        fprintf(stderr, "ursa export-dataset: give one output directory\n");
        return 2;
    }
    const char *dir = argv[0];
    blob_store *bs = cli_blobs(c);
    rstore *r = bs ? cli_redis(c) : NULL;
    if (!r) {
        blob_store_destroy(bs);
        return 1;
    }
    ds_image *im = NULL;
    size_t nim = 0;
    int rc = 1;
    long n = 0;
    FILE *csv = NULL;
    char *csvbuf = NULL;
    size_t csvlen = 0;
    if (ds_manifest_read(r, ds, &im, &nim)) {
        fprintf(stderr, "ursa export-dataset: %s\n", rstore_last_error(r));
        goto out;
    }
    if (!nim) {
        fprintf(stderr, "ursa export-dataset: dataset \"%s\" has no verified image\n", ds);
        goto out;
    }
    csv = open_memstream(&csvbuf, &csvlen);
    fprintf(csv, "name,label\n");
    for (size_t i = 0; i < nim; i++) {
        const char *label = im[i].label, *jpeg = im[i].jpeg;
        char *data = NULL;
        size_t len = 0;
        ursa_err e = blob_get(bs, jpeg, (size_t)1 << 28, &data, &len);
        if (e) {
            fprintf(stderr, "ursa export-dataset: blob %s: %s\n", jpeg, ursa_err2str(e));
            goto out;
        }
        char sub[4200], path[4400];
        snprintf(sub, sizeof sub, "%s/%s", dir, label);
        snprintf(path, sizeof path, "%s/%s.jpg", sub, jpeg);
        e = util_mkdirs(sub);
        if (!e) e = util_write_file_atomic(path, data, len);
        free(data);
        if (e) {
            fprintf(stderr, "ursa export-dataset: cannot write %s: %s\n", path, strerror(errno));
            goto out;
        }
        csv_put(csv, label, jpeg);
        n++;
    }
    fclose(csv);
    csv = NULL;
    /* labels.csv, unless a class has that name (its folder is there) */
    char csvn[64] = "labels.csv", csvp[4200];
    for (int k = 1, taken = 1; taken && k < 1000; k++) {
        taken = 0;
        for (size_t i = 0; i < nim && !taken; i++) taken = !strcmp(im[i].label, csvn);
        if (taken) snprintf(csvn, sizeof csvn, "labels-%d.csv", k);
    }
    snprintf(csvp, sizeof csvp, "%s/%s", dir, csvn);
    if (util_write_file_atomic(csvp, csvbuf, csvlen)) {
        fprintf(stderr, "ursa export-dataset: cannot write %s\n", csvp);
        goto out;
    }
    printf("dataset %s: %ld images written to %s (<label>/<sha256>.jpg and %s)\n", ds, n, dir,
           csvn);
    rc = 0;
out:
    if (csv) fclose(csv);
    free(csvbuf);
    free(im);
    rstore_destroy(r);
    blob_store_destroy(bs);
    return rc;
}

const cfg_def datasets_defs[] = {
    {"yes", CFG_BOOL, "false", 1, 0, "delete: do it (without: say what would go, delete nothing)"},
    {"force", CFG_BOOL, "false", 1, 0,
     "delete even while URLs are still being downloaded or verified (they then change nothing)"},
    {"output", CFG_STR, "text", 1, 0, "text or json (-o json)"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* What a dataset holds, for the listing and before a delete. */
typedef struct {
    ds_counts k;
    long long edits;
    size_t models;
} ds_summary;

/* What ds holds; on an error nothing is left to free. */
static ursa_err summarise(rstore *r, const char *ds, ds_summary *s) {
    memset(s, 0, sizeof *s);
    ursa_err e = read_counts(r, ds, &s->k);
    if (!e) e = ds_edits_seq(r, ds, &s->edits);
    redisReply *ids = NULL;
    if (!e) e = registry_list(r, ds, 0, 0, &ids);
    if (!e) s->models = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
    if (ids) freeReplyObject(ids);
    if (e) counts_free(&s->k);
    return e;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int datasets_list(const cfg *c, rstore *r, int json) {
    redisReply *names = NULL;
    if (ds_list(r, &names)) {
        fprintf(stderr, "ursa datasets: %s\n", rstore_last_error(r));
        return 1;
    }
    size_t n = names->type == REDIS_REPLY_ARRAY ? names->elements : 0;
    const char **sorted = malloc(sizeof(char *) * (n ? n : 1));
    if (!sorted) {
        freeReplyObject(names);
        return 1;
    }
    for (size_t i = 0; i < n; i++) sorted[i] = names->element[i]->str;
    qsort(sorted, n, sizeof *sorted, by_name);
    int rc = 0;
    if (json) printf("{\"datasets\": [");
    else printf("%-24s %10s %10s %8s %8s %6s\n", "DATASET", "URLS", "VERIFIED", "FAILED", "EDITS",
                "MODELS");
    for (size_t i = 0; i < n && !rc; i++) {
        ds_summary s;
        if (summarise(r, sorted[i], &s)) {
            fprintf(stderr, "ursa datasets: %s\n", rstore_last_error(r));
            rc = 1;
            break;
        }
        if (json) {
            printf("%s{\"dataset\": ", i ? ", " : "");
            util_json_str(stdout, sorted[i]);
            printf(", \"urls\": %lld, \"verified\": %lld, \"failed\": %lld, \"in_flight\": %lld, "
                   "\"edits\": %lld, \"models\": %zu}", s.k.total, s.k.n[DS_VERIFIED],
                   s.k.n[DS_FAILED], s.k.total - finals(&s.k), s.edits, s.models);
        } else {
            printf("%-24s %10lld %10lld %8lld %8lld %6zu\n", sorted[i], s.k.total,
                   s.k.n[DS_VERIFIED], s.k.n[DS_FAILED], s.edits, s.models);
        }
        counts_free(&s.k);
    }
    if (json && !rc) printf("]}\n");
    free(sorted);
    freeReplyObject(names);
    (void)c;
    return rc;
}

/* Jobs queued or running on ds: printed; how many. -1 on an error. */
static int active_jobs_on(rstore *r, const char *ds) {
    redisReply *ids = NULL;
    if (job_list_active(r, &ids)) return -1;
    int n = 0;
    for (size_t i = 0; ids->type == REDIS_REPLY_ARRAY && i < ids->elements; i++) {
        const char *id = ids->element[i]->str;
        redisReply *f = NULL;
        if (job_get_field(r, id, "dataset", &f)) {
            freeReplyObject(ids);
            return -1;
        }
        if (f->type == REDIS_REPLY_STRING && !strcmp(f->str, ds)) {
            job_state st = JOB_QUEUED;
            job_get_state(r, id, &st);
            fprintf(stderr, "ursa datasets delete: job %s is %s on dataset %s: cancel it first "
                            "(ursa job cancel %s)\n", id, job_state_name(st), ds, id);
            n++;
        }
        freeReplyObject(f);
    }
    freeReplyObject(ids);
    return n;
}

static int datasets_delete(const cfg *c, rstore *r, const char *ds, int json) {
    if (!ds_name_valid(ds)) {
        fprintf(stderr, "ursa datasets delete: \"%s\" is not a dataset name (see ursa datasets)\n",
                ds);
        return 2;
    }
    int exists = 0;
    ds_summary s;
    if (ds_exists(r, ds, &exists) || summarise(r, ds, &s)) {
        fprintf(stderr, "ursa datasets delete: %s\n", rstore_last_error(r));
        return 1;
    }
    long long total = s.k.total, verified = s.k.n[DS_VERIFIED], in_flight = total - finals(&s.k);
    counts_free(&s.k);
    if (!exists && !total && !s.edits && !s.models) {
        /* nothing listed; a delete cut short may have left keys all the same */
        long long gone = 0, egone = 0;
        if (cfg_bool(c, "yes") && (ds_delete(r, ds, &gone) || ds_edits_delete(r, ds, &egone))) {
            fprintf(stderr, "ursa datasets delete: %s\n", rstore_last_error(r));
            return 1;
        }
        if (!gone && !egone) {
            fprintf(stderr, "ursa datasets delete: no dataset %s (see ursa datasets)\n", ds);
            return 1;
        }
    }
    int jobs = active_jobs_on(r, ds);
    if (jobs < 0) {
        fprintf(stderr, "ursa datasets delete: %s\n", rstore_last_error(r));
        return 1;
    }
    if (jobs) return 1;
    if (in_flight > 0 && !cfg_bool(c, "force")) {
        fprintf(stderr, "ursa datasets delete: %lld URLs of %s are still being downloaded or "
                        "verified; wait for them (ursa status --dataset %s) or give --force\n",
                in_flight, ds, ds);
        return 1;
    }
    if (!cfg_bool(c, "yes")) {
        fprintf(stderr, "ursa datasets delete: dataset %s holds %lld URLs (%lld verified), %lld "
                        "edits and %zu models; nothing deleted: give --yes to delete them\n",
                ds, total, verified, s.edits, s.models);
        return 1;
    }
    /* the models first: a dataset half deleted still lists what is left */
    size_t nmodels = 0;
    if (registry_delete_dataset(r, ds, &nmodels)) goto redis_failed;
    long long keys = 0, ekeys = 0;
    if (ds_edits_delete(r, ds, &ekeys) || ds_delete(r, ds, &keys)) goto redis_failed;
    if (json)
        printf("{\"dataset\": \"%s\", \"deleted\": true, \"urls\": %lld, \"edits\": %lld, "
               "\"models\": %zu, \"keys\": %lld}\n", ds, total, s.edits, nmodels,
               keys + ekeys);
    else
        printf("dataset %s deleted: %lld URLs, %lld edits, %zu models (%lld Redis keys); its "
               "blobs stay in the blob store until ursa gc\n",
               ds, total, s.edits, nmodels, keys + ekeys);
    return 0;
redis_failed:
    fprintf(stderr, "ursa datasets delete: %s (run it again to finish)\n", rstore_last_error(r));
    return 1;
}

int datasets_cmd(const cfg *c, int argc, char **argv) {
    int json = cli_json(c, "datasets");
    if (json < 0) return 2;
    if (!(argc == 0 || (argc == 2 && !strcmp(argv[0], "delete")))) {
        fprintf(stderr, "usage: ursa datasets | ursa datasets delete NAME [--yes] [--force]\n");
        return 2;
    }
    if (argc == 2 && !ds_name_valid(argv[1])) {
        fprintf(stderr, "ursa datasets delete: \"%s\" is not a dataset name (see ursa datasets)\n",
                argv[1]);
        return 2;
    }
    rstore *r = cli_redis(c);
    if (!r) return 1;
    int rc = argc ? datasets_delete(c, r, argv[1], json) : datasets_list(c, r, json);
    rstore_destroy(r);
    return rc;
}
