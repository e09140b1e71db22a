/* api.c: the console's JSON API, run on the worker threads (console.h).
 * Every string that came from outside (labels, URLs, reasons, errors) goes
 * out through util_json_str; the page puts it in the DOM as text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audits.h"
#include "console.h"
#include "dataset.h"
#include "dataset_edits.h"
#include "interp.h"
#include "jobs.h"
#include "log.h"
#include "msg.h"
#include "registry.h"
#include "rstore.h"
#include "util.h"

#define J(f, s) util_json_str(f, s)

/* ---- small helpers ------------------------------------------------------------------ */

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int form_get(const char *body, size_t len, const char *name, char *out, size_t n) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && body[end] != '&') end++;
        if (end - i > nl && !memcmp(body + i, name, nl) && body[i + nl] == '=') {
            size_t k = 0;
            for (size_t j = i + nl + 1; j < end; j++) {
                int c = (unsigned char)body[j];
                if (c == '+') c = ' ';
                else if (c == '%' && j + 2 < end && hexval(body[j + 1]) >= 0 &&
                         hexval(body[j + 2]) >= 0) {
                    c = hexval(body[j + 1]) * 16 + hexval(body[j + 2]);
                    j += 2;
                }
                if (k + 1 >= n) {
                    out[0] = '\0';
                    return -2;
                }
                out[k++] = (char)c;
            }
            out[k] = '\0';
            return (int)k;
        }
        i = end + 1;
    }
    if (n) out[0] = '\0';
    return -1;
}

/* A number as JSON: null for what JSON cannot hold (inf, nan). */
static void jnum(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fprintf(f, "null");
}

/* Sends what f holds as JSON, or 503 when it could not be written. */
static void reply_json(http_req *r, FILE *f, char **buf, size_t *len) {
    if (fclose(f)) { /* the stream sets *buf and *len as it closes */
        http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    } else {
        http_reply(r, 200, "application/json", NULL, *buf, *len);
    }
    free(*buf);
}

#define OPEN_JSON(r)                                                                            \
    char *jbuf = NULL;                                                                          \
    size_t jlen = 0;                                                                            \
    FILE *f = open_memstream(&jbuf, &jlen);                                                     \
    if (!f) {                                                                                   \
        http_error(r, 503, "Retry-After: 1\r\n", "out of memory");                             \
        return;                                                                                 \
    }

static void redis_error(http_req *r, rstore *redis) {
    http_error(r, 503, "Retry-After: 1\r\n", "Redis: %s", rstore_last_error(redis));
}

/* The dataset named by the query, checked; NULL after answering 400. */
static const char *query_ds(http_req *r, char *ds, size_t n, const char *param) {
    if (http_query(r, param, ds, n) <= 0 || !ds_name_valid(ds)) {
        http_error(r, 400, NULL, "give a valid %s", param);
        return NULL;
    }
    return ds;
}

/* ---- datasets ------------------------------------------------------------------------ */

typedef struct {
    long long n[DS__COUNT], total;
} totals;

static void sum_counts(const ds_count *k, size_t n, totals *t) {
    memset(t->n, 0, sizeof t->n);
    for (size_t i = 0; i < n; i++)
        if (k[i].label[0] && !k[i].reason[0] && k[i].state < DS__COUNT) t->n[k[i].state] += k[i].n;
}

void api_datasets(console *s, http_req *r, rstore *redis) {
    (void)s;
    redisReply *names = NULL;
    if (ds_list(redis, &names)) return redis_error(r, redis);
    OPEN_JSON(r);
    fputc('[', f);
    for (size_t i = 0; names->type == REDIS_REPLY_ARRAY && i < names->elements; i++) {
        const char *ds = names->element[i]->str;
        ds_count *k = NULL;
        size_t n = 0;
        totals t = {{0}, 0};
        long long seq = 0;
        if (ds_counts_read(redis, ds, &k, &n, &t.total) || ds_edits_seq(redis, ds, &seq)) {
            free(k);
            fclose(f);
            free(jbuf);
            freeReplyObject(names);
            return redis_error(r, redis);
        }
        sum_counts(k, n, &t);
        free(k);
        fprintf(f, "%s{\"name\":", i ? "," : "");
        J(f, ds);
        fprintf(f, ",\"total\":%lld,\"verified\":%lld,\"duplicate\":%lld,\"rejected\":%lld,"
                   "\"failed\":%lld,\"pending\":%lld,\"edits\":%lld}",
                t.total, t.n[DS_VERIFIED], t.n[DS_DUPLICATE], t.n[DS_REJECTED], t.n[DS_FAILED],
                t.n[DS_QUEUED] + t.n[DS_DOWNLOADED], seq);
    }
    fputc(']', f);
    freeReplyObject(names);
    reply_json(r, f, &jbuf, &jlen);
}

void api_dataset(console *s, http_req *r, rstore *redis) {
    (void)s;
    char dsb[80];
    const char *ds = query_ds(r, dsb, sizeof dsb, "name");
    if (!ds) return;
    ds_count *k = NULL;
    size_t n = 0;
    long long total = 0, seq = 0;
    ds_edit_cur *cur = NULL;
    size_t ncur = 0;
    char audit[48] = "";
    if (ds_counts_read(redis, ds, &k, &n, &total) || ds_edits_seq(redis, ds, &seq) ||
        ds_edits_current(redis, ds, &cur, &ncur) || ds_audit_latest(redis, ds, audit, sizeof audit)) {
        free(k);
        free(cur);
        return redis_error(r, redis);
    }
    if (!total) {
        free(k);
        free(cur);
        http_error(r, 404, NULL, "no dataset \"%s\"", ds);
        return;
    }
    OPEN_JSON(r);
    fprintf(f, "{\"name\":");
    J(f, ds);
    fprintf(f, ",\"total\":%lld,\"edits\":%lld,\"labels\":[", total, seq);
    /* one object a label: its states, and its verified images as edited */
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        if (!k[i].label[0] || k[i].reason[0]) continue;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !k[j].reason[0] && !strcmp(k[j].label, k[i].label);
        if (seen) continue;
        long long st[DS__COUNT] = {0};
        for (size_t j = i; j < n; j++)
            if (!k[j].reason[0] && !strcmp(k[j].label, k[i].label) && k[j].state < DS__COUNT)
                st[k[j].state] += k[j].n;
        long long edited = st[DS_VERIFIED] + ds_edits_label_delta(cur, ncur, k[i].label);
        fprintf(f, "%s{\"label\":", first ? "" : ",");
        J(f, k[i].label);
        fprintf(f, ",\"verified\":%lld,\"duplicate\":%lld,\"rejected\":%lld,\"failed\":%lld,"
                   "\"pending\":%lld,\"edited\":%lld}",
                st[DS_VERIFIED], st[DS_DUPLICATE], st[DS_REJECTED], st[DS_FAILED],
                st[DS_QUEUED] + st[DS_DOWNLOADED], edited);
        first = 0;
    }
    fprintf(f, "],\"reasons\":[");
    first = 1;
    for (size_t i = 0; i < n; i++) {
        if (!k[i].reason[0]) continue;
        fprintf(f, "%s{\"label\":", first ? "" : ",");
        J(f, k[i].label);
        fprintf(f, ",\"state\":");
        J(f, ds_state_name(k[i].state));
        fprintf(f, ",\"reason\":");
        J(f, k[i].reason);
        fprintf(f, ",\"n\":%lld}", k[i].n);
        first = 0;
    }
    long long del = 0, rel = 0;
    for (size_t j = 0; j < ncur; j++) del += cur[j].op == ED_DELETE, rel += cur[j].op == ED_RELABEL;
    fprintf(f, "],\"deleted\":%lld,\"relabelled\":%lld,\"audit\":", del, rel);
    J(f, audit);
    fputc('}', f);
    free(k);
    free(cur);
    reply_json(r, f, &jbuf, &jlen);
}

/* ---- jobs ------------------------------------------------------------------------------ */

/* A job's fields as a JSON object (not its spec, which is binary). */
static int job_json(FILE *f, rstore *redis, const char *id, int full) {
    redisReply *rep = NULL;
    if (job_get_all(redis, id, &rep)) return -1;
    fprintf(f, "{\"id\":");
    J(f, id);
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *k = rep->element[i]->str, *v = rep->element[i + 1]->str;
        if (!strcmp(k, "spec") || !strcmp(k, "lr_curve") || !strcmp(k, "worker")) continue;
        if (!full && strcmp(k, "kind") && strcmp(k, "dataset") && strcmp(k, "arch") &&
            strcmp(k, "state") && strcmp(k, "epoch") && strcmp(k, "error_rate") &&
            strcmp(k, "created_ms") && strcmp(k, "model") && strcmp(k, "loss") &&
            strcmp(k, "step") && strcmp(k, "steps") && strcmp(k, "error"))
            continue;
        fputc(',', f);
        J(f, k);
        fputc(':', f);
        J(f, v);
    }
    if (full) {
        for (size_t i = 0; i + 1 < rep->elements; i += 2) {
            if (strcmp(rep->element[i]->str, "lr_curve")) continue;
            fprintf(f, ",\"lr_curve\":[");
            double lr, loss;
            int k = 0;
            for (const char *p = rep->element[i + 1]->str; p && *p; p = strchr(p, '\n')) {
                if (*p == '\n') p++;
                /* lr_find records the loss that diverged: JSON has no inf */
                if (sscanf(p, "%lf\t%lf", &lr, &loss) == 2 && isfinite(lr) && isfinite(loss))
                    fprintf(f, "%s[%.6g,%.6g]", k++ ? "," : "", lr, loss);
            }
            fputc(']', f);
        }
        job_row *rows = NULL;
        int nr = 0;
        if (job_rows_read(redis, id, &rows, &nr) == URSA_OK) {
            fprintf(f, ",\"rows\":[");
            for (int i = 0; i < nr; i++) {
                fprintf(f, "%s[%d,%d", i ? "," : "", rows[i].stage, rows[i].epoch);
                double v[4] = {rows[i].train_loss, rows[i].valid_loss, rows[i].error_rate,
                               rows[i].seconds};
                for (int q = 0; q < 4; q++) {
                    fputc(',', f);
                    jnum(f, v[q]);
                }
                fputc(']', f);
            }
            fputc(']', f);
            free(rows);
        }
    }
    fputc('}', f);
    freeReplyObject(rep);
    return 0;
}

void api_jobs(console *s, http_req *r, rstore *redis) {
    (void)s;
    char ds[80];
    int want = http_query(r, "dataset", ds, sizeof ds) > 0;
    redisReply *ids = NULL;
    if (job_list(redis, &ids)) return redis_error(r, redis);
    OPEN_JSON(r);
    fputc('[', f);
    int k = 0;
    for (size_t i = ids->elements; i-- > 0 && k < 50;) { /* newest first */
        if (want) {
            redisReply *d = NULL;
            int match = job_get_field(redis, ids->element[i]->str, "dataset", &d) == URSA_OK &&
                        d->type == REDIS_REPLY_STRING && !strcmp(d->str, ds);
            if (d) freeReplyObject(d);
            if (!match) continue;
        }
        if (k++) fputc(',', f);
        if (job_json(f, redis, ids->element[i]->str, 0)) fprintf(f, "{}");
    }
    fputc(']', f);
    freeReplyObject(ids);
    reply_json(r, f, &jbuf, &jlen);
}

void api_job(console *s, http_req *r, rstore *redis) {
    (void)s;
    char id[64];
    if (http_query(r, "id", id, sizeof id) <= 0 || !job_id_valid(id)) {
        http_error(r, 400, NULL, "give a valid job id");
        return;
    }
    OPEN_JSON(r);
    if (job_json(f, redis, id, 1)) {
        fclose(f);
        free(jbuf);
        http_error(r, 404, NULL, "no job %s", id);
        return;
    }
    reply_json(r, f, &jbuf, &jlen);
}

/* ---- models ------------------------------------------------------------------------------ */

void api_models(console *s, http_req *r, rstore *redis) {
    (void)s;
    char ds[80] = "";
    http_query(r, "dataset", ds, sizeof ds);
    redisReply *ids = NULL;
    if (registry_list(redis, ds, 1, 50, &ids)) return redis_error(r, redis);
    OPEN_JSON(r);
    fputc('[', f);
    const char *fields[] = {"dataset", "arch", "error_rate", "n_valid", "n_train", "job",
                            "created_ms", "size", NULL};
    int first = 1;
    for (size_t i = 0; ids->type == REDIS_REPLY_ARRAY && i < ids->elements; i++) {
        redisReply *v = NULL;
        if (registry_fields(redis, ids->element[i]->str, fields, &v)) continue;
        fprintf(f, "%s{\"id\":", first ? "" : ",");
        first = 0;
        J(f, ids->element[i]->str);
        for (int k = 0; fields[k] && (size_t)k < v->elements; k++) {
            fputc(',', f);
            J(f, fields[k]);
            fputc(':', f);
            J(f, v->element[k]->type == REDIS_REPLY_STRING ? v->element[k]->str : "");
        }
        fputc('}', f);
        freeReplyObject(v);
    }
    fputc(']', f);
    freeReplyObject(ids);
    reply_json(r, f, &jbuf, &jlen);
}

/* A model's classes field ("a\tb\t...", split in place): how many. */
static int split_classes(char *classes, char **cls, int max) {
    int nc = 0;
    for (char *save = NULL, *t = classes ? strtok_r(classes, "\t", &save) : NULL; t && nc < max;
         t = strtok_r(NULL, "\t", &save))
        cls[nc++] = t;
    return nc;
}

void api_model(console *s, http_req *r, rstore *redis) {
    char id[200];
    if (http_query(r, "id", id, sizeof id) <= 0) {
        http_error(r, 400, NULL, "give a model id");
        return;
    }
    const char *fields[] = {"dataset", "arch", "error_rate", "valid_loss", "n_valid", "n_train",
                            "job", "classes", "interp", "size", NULL};
    redisReply *v = NULL;
    if (registry_fields(redis, id, fields, &v)) return redis_error(r, redis);
    if (v->elements < 10 || v->element[7]->type != REDIS_REPLY_STRING) {
        freeReplyObject(v);
        http_error(r, 404, NULL, "no model %s", id);
        return;
    }
    char *classes = strdup(v->element[7]->str), *data = NULL, *cls[1024];
    int nc = split_classes(classes, cls, 1024);
    size_t len = 0;
    interp it = {0};
    if (v->element[8]->type == REDIS_REPLY_STRING &&
        blob_get(s->sc.bs, v->element[8]->str, (size_t)1 << 30, &data, &len) == URSA_OK)
        interp_parse(data, len, (const char *const *)cls, nc, &it);
    free(data);
    char *jbuf = NULL;
    size_t jlen = 0;
    FILE *f = open_memstream(&jbuf, &jlen);
    if (f) {
        fprintf(f, "{\"id\":");
        J(f, id);
        for (int k = 0; k < 10; k++) {
            if (k == 7 || k == 8) continue;
            fputc(',', f);
            J(f, fields[k]);
            fputc(':', f);
            J(f, v->element[k]->type == REDIS_REPLY_STRING ? v->element[k]->str : "");
        }
        fprintf(f, ",\"classes\":[");
        for (int i = 0; i < nc; i++) {
            if (i) fputc(',', f);
            J(f, cls[i]);
        }
        fprintf(f, "],\"cm\":[");
        for (int a = 0; it.cm && a < nc; a++) {
            fprintf(f, "%s[", a ? "," : "");
            for (int p = 0; p < nc; p++) fprintf(f, "%s%ld", p ? "," : "", it.cm[a * nc + p]);
            fputc(']', f);
        }
        fprintf(f, "],\"pairs\":[");
        for (int k = 0; k < it.npairs && k < 20; k++)
            fprintf(f, "%s[%d,%d,%ld]", k ? "," : "", it.pairs[k].a, it.pairs[k].p, it.pairs[k].n);
        fprintf(f, "],\"top_losses\":[");
        for (int k = 0; k < it.nrows && k < 24; k++) {
            const interp_row *w = &it.rows[k];
            fprintf(f, "%s{\"jpeg\":", k ? "," : "");
            J(f, w->jpeg);
            fprintf(f, ",\"actual\":");
            J(f, w->actual);
            fprintf(f, ",\"pred\":");
            J(f, w->pred);
            fprintf(f, ",\"loss\":");
            jnum(f, w->loss);
            fprintf(f, ",\"p\":");
            jnum(f, w->p);
            fputc('}', f);
        }
        fprintf(f, "]}");
        reply_json(r, f, &jbuf, &jlen);
    } else {
        http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    }
    interp_free(&it);
    free(classes);
    freeReplyObject(v);
}

/* ---- the cleaner --------------------------------------------------------------------------- */

/* The rows of the dataset's latest audit, from the cache or the blob store;
 * a copy the caller frees. 0, 1 when there is no audit, -1 on a failure. */
static int audit_rows(console *s, rstore *redis, const char *ds, li_row **out, size_t *n,
                      audit_latest *a) {
    *out = NULL;
    *n = 0;
    if (audit_latest_read(redis, ds, a)) return -1;
    if (!a->job[0] || !a->rows_key[0]) return 1;
    const char *key = a->rows_key;
    pthread_mutex_lock(&s->cache_mu);
    for (int i = 0; i < 4; i++) {
        audit_cache *c = &s->audits[i];
        if (c->rows && !strcmp(c->key, key) && !strcmp(c->ds, ds)) {
            *out = malloc(sizeof **out * (c->n ? c->n : 1));
            if (*out) memcpy(*out, c->rows, sizeof **out * c->n), *n = c->n;
            pthread_mutex_unlock(&s->cache_mu);
            return *out ? 0 : -1;
        }
    }
    pthread_mutex_unlock(&s->cache_mu);
    li_row *rows = NULL;
    size_t nr = 0;
    if (audit_rows_read(s->sc.bs, a, &rows, &nr)) return -1;
    *out = malloc(sizeof **out * (nr ? nr : 1));
    if (!*out) {
        free(rows);
        return -1;
    }
    memcpy(*out, rows, sizeof **out * nr);
    *n = nr;
    pthread_mutex_lock(&s->cache_mu);
    audit_cache *c = &s->audits[s->audit_next++ % 4];
    free(c->rows);
    snprintf(c->ds, sizeof c->ds, "%s", ds);
    snprintf(c->key, sizeof c->key, "%s", key);
    c->rows = rows;
    c->n = nr;
    pthread_mutex_unlock(&s->cache_mu);
    return 0;
}

/* The top losses of the dataset's newest model as rows of kind "loss". */
static int loss_rows(console *s, rstore *redis, const char *ds, li_row **out, size_t *n) {
    *out = NULL;
    *n = 0;
    redisReply *ids = NULL, *v = NULL;
    char *data = NULL, *classes = NULL, *cls[1024];
    int nc = 0, rc = -1;
    interp it = {0};
    const char *fields[] = {"interp", "classes", NULL};
    if (registry_list(redis, ds, 1, 1, &ids)) goto out;
    rc = 0;
    if (ids->type != REDIS_REPLY_ARRAY || !ids->elements) goto out;
    rc = -1;
    if (registry_fields(redis, ids->element[0]->str, fields, &v) || v->elements != 2 ||
        v->element[0]->type != REDIS_REPLY_STRING || v->element[1]->type != REDIS_REPLY_STRING)
        goto out;
    if (!(classes = strdup(v->element[1]->str))) goto out;
    nc = split_classes(classes, cls, 1024);
    size_t len = 0;
    if (blob_get(s->sc.bs, v->element[0]->str, (size_t)1 << 30, &data, &len) ||
        interp_parse(data, len, (const char *const *)cls, nc, &it))
        goto out;
    if (!(*out = calloc((size_t)it.nrows + 1, sizeof **out))) goto out;
    for (int i = 0; i < it.nrows; i++) {
        const interp_row *w = &it.rows[i];
        li_row *x = &(*out)[*n];
        if (strlen(w->src) < 32) continue;
        snprintf(x->image, sizeof x->image, "%.32s", w->src);
        snprintf(x->jpeg, sizeof x->jpeg, "%s", w->jpeg);
        snprintf(x->given, sizeof x->given, "%s", w->actual);
        snprintf(x->suggested, sizeof x->suggested, "%s", w->pred);
        snprintf(x->kind, sizeof x->kind, "loss");
        x->score = w->loss;
        (*n)++;
    }
    rc = 0;
out:
    if (ids) freeReplyObject(ids);
    if (v) freeReplyObject(v);
    free(data);
    free(classes);
    interp_free(&it);
    return rc;
}

void api_suspects(console *s, http_req *r, rstore *redis) {
    char dsb[80], kind[16] = "", label[80] = "", num[24];
    const char *ds = query_ds(r, dsb, sizeof dsb, "dataset");
    if (!ds) return;
    http_query(r, "kind", kind, sizeof kind);
    http_query(r, "label", label, sizeof label);
    long page = http_query(r, "page", num, sizeof num) > 0 ? atol(num) : 0;
    long per = http_query(r, "per", num, sizeof num) > 0 ? atol(num) : 48;
    if (page < 0 || per < 1 || per > 200) {
        http_error(r, 400, NULL, "page >= 0 and per within 1..200");
        return;
    }
    int loss = !strcmp(kind, "loss");
    li_row *rows = NULL;
    size_t n = 0;
    audit_latest a = {.error_rate = NAN};
    int got = loss ? loss_rows(s, redis, ds, &rows, &n) : audit_rows(s, redis, ds, &rows, &n, &a);
    ds_edit_cur *cur = NULL;
    size_t ncur = 0;
    ds_count *k = NULL;
    size_t nk = 0;
    long long total = 0;
    if (got < 0 || ds_edits_current(redis, ds, &cur, &ncur) ||
        ds_counts_read(redis, ds, &k, &nk, &total)) {
        free(rows);
        free(cur);
        free(k);
        return redis_error(r, redis);
    }
    /* the filter, then the page */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (kind[0] && !loss && strcmp(rows[i].kind, kind)) continue;
        if (label[0] && strcmp(rows[i].given, label)) continue;
        rows[m++] = rows[i];
    }
    size_t decided = 0; /* since the audit: what ursa clean leaves out of its list */
    for (size_t i = 0; i < m; i++) decided += !audit_row_open(cur, ncur, &rows[i], a.edit_seq);
    size_t from = m, to = m; /* a page past the end (however far) is empty */
    if ((size_t)page <= m / (size_t)per) {
        from = (size_t)page * (size_t)per;
        to = m - from < (size_t)per ? m : from + (size_t)per;
    }
    /* the source URLs of the page's images */
    char **urls = calloc(to - from + 1, sizeof *urls);
    const char **keys = calloc(to - from + 1, sizeof *keys);
    char (*kbuf)[DS_KEY_HEX + 1] = calloc(to - from + 1, sizeof *kbuf);
    if (urls && keys && kbuf && to > from) { /* two round trips an image, no scan */
        for (size_t i = from; i < to; i++) {
            ds_record rec;
            snprintf(kbuf[i - from], sizeof kbuf[0], "%s",
                     ds_image_get(redis, ds, rows[i].image, &rec) == URSA_OK ? rec.key : "-");
            keys[i - from] = kbuf[i - from];
        }
        ds_urls_find(redis, s->sc.bs, ds, to - from, keys, urls);
    }
    char *jbuf = NULL;
    size_t jlen = 0;
    FILE *f = open_memstream(&jbuf, &jlen);
    if (f) {
        fprintf(f, "{\"dataset\":");
        J(f, ds);
        fprintf(f, ",\"audit\":");
        J(f, a.job);
        fprintf(f, ",\"audit_edit_seq\":%lld", a.edit_seq);
        /* an unreliable audit: the cleaner shows why above its suggestions */
        if (isfinite(a.error_rate)) fprintf(f, ",\"audit_error_rate\":%.4f", a.error_rate);
        char warn[320];
        fprintf(f, ",\"audit_unreliable\":%s,\"audit_warning\":", a.unreliable ? "true" : "false");
        J(f, audit_warning(&a, warn, sizeof warn));
        fprintf(f, ",\"total\":%zu,\"decided\":%zu,\"page\":%ld,\"per\":%ld,\"classes\":[", m,
                decided, page, per);
        int first = 1;
        for (size_t i = 0; i < nk; i++) {
            if (!k[i].label[0] || k[i].reason[0]) continue;
            int dup = 0;
            for (size_t j = 0; j < i && !dup; j++) dup = !k[j].reason[0] && !strcmp(k[j].label, k[i].label);
            if (dup) continue;
            if (!first) fputc(',', f);
            J(f, k[i].label);
            first = 0;
        }
        fprintf(f, "],\"items\":[");
        for (size_t i = from; i < to; i++) {
            const li_row *w = &rows[i];
            const ds_edit_cur *c = ds_edits_find(cur, ncur, w->image);
            fprintf(f, "%s{\"image\":", i > from ? "," : "");
            J(f, w->image);
            fprintf(f, ",\"jpeg\":");
            J(f, w->jpeg);
            fprintf(f, ",\"url\":");
            J(f, urls && urls[i - from] ? urls[i - from] : "");
            fprintf(f, ",\"given\":");
            J(f, c && c->from[0] ? c->from : w->given);
            fprintf(f, ",\"label\":");
            J(f, c && c->op == ED_RELABEL ? c->to : (c && c->from[0] ? c->from : w->given));
            fprintf(f, ",\"suggested\":");
            J(f, w->suggested);
            fprintf(f, ",\"score\":");
            jnum(f, w->score);
            fprintf(f, ",\"kind\":");
            J(f, w->kind);
            fprintf(f, ",\"decision\":\"%s\",\"partner\":", c ? ed_op_name(c->op) : "none");
            J(f, w->partner);
            fprintf(f, ",\"partner_jpeg\":");
            J(f, w->partner_jpeg);
            fputc('}', f);
        }
        fprintf(f, "]}");
        reply_json(r, f, &jbuf, &jlen);
    } else {
        http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
    }
    for (size_t i = 0; urls && i < to - from; i++) free(urls[i]);
    free(urls);
    free(keys);
    free(kbuf);
    free(rows);
    free(cur);
    free(k);
}

void api_thumb(console *s, http_req *r, rstore *redis) {
    (void)redis;
    char key[80];
    if (http_query(r, "blob", key, sizeof key) != 64 || !blob_key_valid(key)) {
        http_error(r, 400, NULL, "give a blob key (64 hex digits)");
        return;
    }
    char *data = NULL;
    size_t len = 0;
    ursa_err e = blob_get(s->sc.bs, key, (size_t)16 << 20, &data, &len);
    /* only images: a blob that is not a JPEG (a URL list, a model) is not shown */
    if (e || len < 3 || (unsigned char)data[0] != 0xff || (unsigned char)data[1] != 0xd8 ||
        (unsigned char)data[2] != 0xff) {
        free(data);
        http_error(r, 404, NULL, "no such image");
        return;
    }
    http_reply(r, 200, "image/jpeg", NULL, data, len);
    free(data);
}

/* ---- changes -------------------------------------------------------------------------------- */

void api_edit(console *s, http_req *r, rstore *redis) {
    size_t len = 0;
    const char *body = http_body(r, &len);
    char ds[80], image[40], op[16], label[80] = "", from[80] = "", reason[208] = "",
         base[16] = "", base_label[80] = "";
    if (form_get(body, len, "dataset", ds, sizeof ds) <= 0 || !ds_name_valid(ds) ||
        form_get(body, len, "image", image, sizeof image) != 32 ||
        form_get(body, len, "op", op, sizeof op) <= 0 || ed_op_parse(op) == ED_NONE ||
        form_get(body, len, "label", label, sizeof label) < -1 ||
        form_get(body, len, "from", from, sizeof from) < -1 ||
        form_get(body, len, "reason", reason, sizeof reason) < -1 ||
        form_get(body, len, "base", base, sizeof base) < -1 ||
        form_get(body, len, "base_label", base_label, sizeof base_label) < -1) {
        http_error(r, 400, NULL, "give dataset, image (32 hex), op (delete, relabel, restore), "
                                 "label for a relabel, and base (none, delete, relabel: the "
                                 "decision shown) with base_label for relabel");
        return;
    }
    ds_edit e = {0};
    e.op = ed_op_parse(op);
    snprintf(e.image, sizeof e.image, "%s", image);
    snprintf(e.to, sizeof e.to, "%s", e.op == ED_RELABEL ? label : "");
    snprintf(e.author, sizeof e.author, "console");
    snprintf(e.reason, sizeof e.reason, "%s", reason);
    (void)from; /* the label before is the server's to know: the URL's, or the
                   one recorded by the decision in force */
    ds_record rec;
    ds_edit_cur c;
    int known = 1, decided = 0;
    ursa_err ge = ds_image_get(redis, ds, image, &rec);
    if ((ge && ge != URSA_ERR_NOT_FOUND) ||
        (e.op == ED_RELABEL && ds_label_exists(redis, ds, label, &known)) ||
        ds_edit_current(redis, ds, image, &c, &decided))
        return redis_error(r, redis);
    snprintf(e.from, sizeof e.from, "%s", decided && c.from[0] ? c.from : ge ? "" : rec.label);
    /* the decision the page showed, so an edit made meanwhile elsewhere (a
     * cleaner on the command line, another tab) is a conflict, not
     * overwritten; without one, the decision in force now */
    if (base[0]) {
        if (ed_base_parse(base, &e.base_op)) {
            http_error(r, 400, NULL, "base is none, delete or relabel");
            return;
        }
        snprintf(e.base_to, sizeof e.base_to, "%s", e.base_op == ED_RELABEL ? base_label : "");
    } else if (decided) {
        e.base_op = c.op;
        snprintf(e.base_to, sizeof e.base_to, "%s", c.op == ED_RELABEL ? c.to : "");
    }
    const char *why = ge ? "no such image in the dataset"
                      : !known ? "the new label is no class of the dataset"
                               : NULL;
    if (why) {
        http_error(r, 400, NULL, "%s", why);
        return;
    }
    ursa_err err = ds_edit_send(redis, s->sc.p, ds, &e);
    if (err == URSA_ERR_INVALID) {
        http_error(r, 400, NULL, "%s", ds_edit_problem(ds, &e));
        return;
    }
    if (err == URSA_ERR_UNAVAILABLE) return redis_error(r, redis);
    if (err || kq_producer_flush(s->sc.p, 5000)) {
        http_error(r, 503, "Retry-After: 1\r\n", "Kafka did not take the edit");
        return;
    }
    ed_outcome o = ED_PENDING;
    ds_edit_refusal f;
    for (int i = 0; i < 40; i++) { /* ursa-verifier applies it within milliseconds */
        if (ds_edit_outcome(redis, ds, e.msg_id, &o, &f) || o != ED_PENDING) break;
        util_sleep_ms(50);
    }
    if (o == ED_REFUSED || o == ED_LOST) {
        char text[400];
        if (o == ED_REFUSED) ds_edit_refusal_text(&e, &f, text, sizeof text);
        else snprintf(text, sizeof text, "refused by ursa-verifier (see ursa.dlq.verifier)");
        http_error(r, 409, NULL, "image %s: %s; reload to see what is in force", image, text);
        return;
    }
    int seen = o == ED_APPLIED;
    long long seq = 0;
    ds_edits_seq(redis, ds, &seq);
    char json[200];
    int n = snprintf(json, sizeof json, "{\"applied\":%s,\"seq\":%lld,\"msg\":\"%s\"}",
                     seen ? "true" : "false", seq, e.msg_id);
    http_reply(r, 200, "application/json", NULL, json, (size_t)n);
}

void api_retrain(console *s, http_req *r, rstore *redis) {
    size_t len = 0;
    const char *body = http_body(r, &len);
    char ds[80];
    if (form_get(body, len, "dataset", ds, sizeof ds) <= 0 || !ds_name_valid(ds)) {
        http_error(r, 400, NULL, "give a dataset");
        return;
    }
    char model[160] = "", id[JOB_ID_MAX + 1];
    Ursa__TrainJob *base = job_last_recipe(redis, ds, model);
    if (!base || !strcmp(base->kind, "audit")) {
        if (base) ursa__train_job__free_unpacked(base, NULL);
        http_error(r, 409, NULL, "dataset %s has no model yet: train one first (ursa train)", ds);
        return;
    }
    const char *fields[] = {"error_rate", NULL};
    redisReply *v = NULL;
    char before[32] = "";
    if (registry_fields(redis, model, fields, &v) == URSA_OK) {
        if (v->elements == 1 && v->element[0]->type == REDIS_REPLY_STRING)
            snprintf(before, sizeof before, "%s", v->element[0]->str);
        freeReplyObject(v);
    }
    job_new_id(id);
    Ursa__Header h, *old = base->header;
    char hid[33];
    msg_header_init(&h, hid, ds, id);
    base->header = &h;
    ursa_err e = job_queue(redis, s->sc.p, id, base->kind, ds, base->arch, &base->base);
    base->header = old;
    ursa__train_job__free_unpacked(base, NULL);
    if (e) {
        http_error(r, 503, "Retry-After: 1\r\n", "the job could not be queued: %s",
                   ursa_err2str(e));
        return;
    }
    ULOG_INFO("event=retrain dataset=%s job=%s from_model=%s", ds, id, model);
    char json[400];
    int n = snprintf(json, sizeof json, "{\"job\":\"%s\",\"model\":", id);
    char *jbuf = NULL;
    size_t jlen = 0;
    FILE *f = open_memstream(&jbuf, &jlen);
    if (!f) {
        http_error(r, 503, "Retry-After: 1\r\n", "out of memory");
        return;
    }
    fwrite(json, 1, (size_t)n, f);
    J(f, model);
    fprintf(f, ",\"before\":");
    J(f, before);
    fputc('}', f);
    reply_json(r, f, &jbuf, &jlen);
}
