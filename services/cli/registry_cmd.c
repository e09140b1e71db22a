/* registry_cmd.c: ursa models, export and interp: the published models in
 * Redis (common/state/jobs.h) and their files in the blob store. */
#include "registry_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "dataset.h"
#include "jobs.h"
#include "interp.h"
#include "plot.h"
#include "registry.h"
#include "util.h"

const cfg_def models_defs[] = {{"dataset", CFG_STR, "", 1, 0, "only this dataset's models"},
                               CLI_OUTPUT_DEF,
                               {NULL, 0, NULL, 0, 0, NULL}};
const cfg_def export_model_defs[] = {{NULL, 0, NULL, 0, 0, NULL}};
const cfg_def interp_defs[] = {
    {"top-losses", CFG_INT, "0", 0, 1e6,
     "also list the K validation images with the highest loss"},
    {"plot", CFG_STR, "", 1, 0, "write the confusion matrix to this .svg file"},
    {"most-confused", CFG_INT, "0", 0, 1e6, "list at most K most confused pairs (0: every one)"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    char dataset[72], job[48], arch[16], blob[65], interp[65];
    char *classes; /* tab-separated */
    int size, n_train, n_valid;
    double error_rate, valid_loss;
    long long created, bytes;
} model_info;

static ursa_err model_read(rstore *r, const char *id, model_info *m) {
    memset(m, 0, sizeof *m);
    redisReply *rep = NULL;
    ursa_err e = registry_get(r, id, &rep);
    if (e) return e;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *k = rep->element[i]->str, *v = rep->element[i + 1]->str;
        if (!strcmp(k, "dataset")) snprintf(m->dataset, sizeof m->dataset, "%s", v);
        else if (!strcmp(k, "job")) snprintf(m->job, sizeof m->job, "%s", v);
        else if (!strcmp(k, "arch")) snprintf(m->arch, sizeof m->arch, "%s", v);
        else if (!strcmp(k, "blob")) snprintf(m->blob, sizeof m->blob, "%s", v);
        else if (!strcmp(k, "interp")) snprintf(m->interp, sizeof m->interp, "%s", v);
        else if (!strcmp(k, "classes")) m->classes = strdup(v);
        else if (!strcmp(k, "size")) m->size = atoi(v);
        else if (!strcmp(k, "n_train")) m->n_train = atoi(v);
        else if (!strcmp(k, "n_valid")) m->n_valid = atoi(v);
        else if (!strcmp(k, "error_rate")) m->error_rate = atof(v);
        else if (!strcmp(k, "valid_loss")) m->valid_loss = atof(v);
        else if (!strcmp(k, "created_ms")) m->created = atoll(v);
        else if (!strcmp(k, "bytes")) m->bytes = atoll(v);
    }
    freeReplyObject(rep);
    return URSA_OK;
}

/* Opens Redis and reads one model; prints why not and returns NULL. */
static rstore *open_model(const cfg *c, const char *cmd, const char *id, model_info *m) {
    if (!job_id_valid(id) && strlen(id) > 120) {
        fprintf(stderr, "ursa %s: \"%s\" is not a model id\n", cmd, id);
        return NULL;
    }
    rstore *r = cli_redis(c);
    if (!r) return NULL;
    ursa_err e = model_read(r, id, m);
    if (e == URSA_OK) return r;
    if (e == URSA_ERR_NOT_FOUND) fprintf(stderr, "ursa %s: no model %s (see ursa models)\n", cmd, id);
    else fprintf(stderr, "ursa %s: %s\n", cmd, rstore_last_error(r));
    rstore_destroy(r);
    return NULL;
}

int models_cmd(const cfg *c, int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[0], "delete")) {
        const char *id = argv[1];
        if (!*id || strlen(id) > 120 || strchr(id, ' ')) {
            fprintf(stderr, "ursa models delete: \"%s\" is not a model id (see ursa models)\n", id);
            return 2;
        }
        rstore *r = cli_redis(c);
        if (!r) return 1;
        ursa_err e = registry_delete(r, id);
        int rc = 0;
        if (e == URSA_ERR_NOT_FOUND) {
            fprintf(stderr, "ursa models delete: no model %s (see ursa models)\n", id);
            rc = 1;
        } else if (e) {
            fprintf(stderr, "ursa models delete: %s\n", rstore_last_error(r));
            rc = 1;
        } else {
            printf("model %s deleted from the registry (a server serving it goes on until it "
                   "loads another)\n", id);
        }
        rstore_destroy(r);
        return rc;
    }
    if (argc) {
        fprintf(stderr, "usage: ursa models [--dataset NAME] | ursa models delete MODEL\n");
        return 2;
    }
    const char *ds = cfg_str(c, "dataset");
    int json = cli_json(c, "models");
    if (json < 0) return 2;
    rstore *r = cli_redis(c);
    if (!r) return 1;
    redisReply *rep = NULL;
    ursa_err e = registry_list(r, ds, 0, 0, &rep);
    if (e) {
        fprintf(stderr, "ursa models: %s\n", rstore_last_error(r));
        rstore_destroy(r);
        return 1;
    }
    if (json) printf("{\"models\": [");
    else
        printf("%-32s %-14s %-9s %-5s %-8s %-10s %-10s %-13s %s\n", "MODEL", "DATASET", "ARCH",
               "SIZE", "CLASSES", "ERROR_RATE", "VALID_LOSS", "TRAIN/VALID", "CREATED");
    int shown = 0;
    for (size_t i = rep->elements; i-- > 0;) {
        model_info m;
        if (model_read(r, rep->element[i]->str, &m)) continue;
        int nc = m.classes && *m.classes ? 1 : 0;
        for (const char *p = m.classes; p && *p; p++) nc += *p == '\t';
        char tv[32], when[32] = "-";
        snprintf(tv, sizeof tv, "%d/%d", m.n_train, m.n_valid);
        time_t t = (time_t)(m.created / 1000);
        struct tm tm;
        if (m.created && localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
        if (json) {
            printf("%s{\"model\": ", shown ? ", " : "");
            util_json_str(stdout, rep->element[i]->str);
            printf(", \"dataset\": ");
            util_json_str(stdout, m.dataset);
            printf(", \"arch\": ");
            util_json_str(stdout, m.arch);
            printf(", \"size\": %d, \"classes\": %d, \"error_rate\": %.6g, \"valid_loss\": "
                   "%.6g, \"n_train\": %d, \"n_valid\": %d, \"created_ms\": %lld}",
                   m.size, nc, m.error_rate, m.valid_loss, m.n_train, m.n_valid,
                   (long long)m.created);
        } else {
            printf("%-32s %-14s %-9s %-5d %-8d %-10.4f %-10.4f %-13s %s\n",
                   rep->element[i]->str, m.dataset, m.arch, m.size, nc, m.error_rate,
                   m.valid_loss, tv, when);
        }
        shown++;
        free(m.classes);
    }
    if (json) printf("]}\n");
    else if (!rep->elements) printf("(no models yet%s%s: ursa train publishes them)\n",
                               *ds ? " for dataset " : "", ds);
    freeReplyObject(rep);
    rstore_destroy(r);
    return 0;
}

int export_model_cmd(const cfg *c, int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ursa export MODEL OUT.onnx\n");
        return 2;
    }
    model_info m;
    rstore *r = open_model(c, "export", argv[0], &m);
    if (!r) return 1;
    blob_store *bs = cli_blobs(c);
    char *data = NULL;
    size_t len = 0;
    int rc = 1;
    ursa_err e = bs ? blob_get(bs, m.blob, (size_t)1 << 31, &data, &len) : URSA_ERR_IO;
    if (e) {
        if (bs) fprintf(stderr, "ursa export: the model's file %.12s: %s\n", m.blob, ursa_err2str(e));
    } else if (util_write_file_atomic(argv[1], data, len)) {
        fprintf(stderr, "ursa export: cannot write %s\n", argv[1]);
    } else {
        printf("%s: model %s (%s, %d px, error_rate %.4f), %zu bytes\n", argv[1], argv[0], m.arch,
               m.size, m.error_rate, len);
        rc = 0;
    }
    free(data);
    free(m.classes);
    blob_store_destroy(bs);
    rstore_destroy(r);
    return rc;
}

int interp_cmd(const cfg *c, int argc, char **argv) {
    if (argc != 1) {
        fprintf(stderr, "usage: ursa interp MODEL [--top-losses K] [--plot FILE.svg]\n");
        return 2;
    }
    const char *plot = cfg_str(c, "plot");
    if (*plot && !plot_path_ok(plot)) {
        fprintf(stderr, "ursa interp: --plot writes SVG: give a file name ending in .svg\n");
        return 2;
    }
    model_info m;
    rstore *r = open_model(c, "interp", argv[0], &m);
    if (!r) return 1;
    int rc = 1, nc = 0;
    char *data = NULL, **cls = NULL;
    size_t len = 0;
    interp it = {0};
    blob_store *bs = cli_blobs(c);
    if (!bs) goto out;
    ursa_err e = blob_get(bs, m.interp, (size_t)1 << 30, &data, &len);
    if (e) {
        fprintf(stderr, "ursa interp: the interpretation %.12s: %s\n", m.interp, ursa_err2str(e));
        goto out;
    }
    /* classes, in the model's order */
    cls = calloc(strlen(m.classes ? m.classes : "") + 2, sizeof(char *));
    if (!cls) goto out;
    for (char *save = NULL, *t = strtok_r(m.classes, "\t", &save); t; t = strtok_r(NULL, "\t", &save))
        cls[nc++] = t;
    if (interp_parse(data, len, (const char *const *)cls, nc, &it)) goto out;
    long *cm = it.cm;
    int nrows = it.nrows;
    printf("model %s: %d validation images, accuracy %.4f (error_rate %.4f)\n\n", argv[0], nrows,
           nrows ? (double)it.right / nrows : 0, nrows ? 1 - (double)it.right / nrows : 0);
    /* the confusion matrix: actual down, predicted across */
    int w = 9;
    for (int i = 0; i < nc; i++)
        if ((int)strlen(cls[i]) + 1 > w) w = (int)strlen(cls[i]) + 1;
    printf("confusion matrix (rows: actual, columns: predicted)\n%-*s", w, "");
    for (int p = 0; p < nc; p++) printf(" %*.*s", 8, 8, cls[p]);
    printf("\n");
    for (int a = 0; a < nc; a++) {
        printf("%-*s", w, cls[a]);
        for (int p = 0; p < nc; p++) printf(" %8ld", cm[a * nc + p]);
        printf("\n");
    }
    /* most confused: fast.ai's most_confused(min_val=1) */
    printf("\nmost confused (actual, predicted, count)\n");
    long mc = (long)cfg_int(c, "most-confused");
    for (int k = 0; k < it.npairs && (!mc || k < mc); k++) {
        char nb[24];
        snprintf(nb, sizeof nb, "%ld", it.pairs[k].n);
        const char *row[] = {cls[it.pairs[k].a], cls[it.pairs[k].p], nb};
        util_tsv_row(stdout, row, 3);
    }
    if (!it.npairs) printf("(none: every validation image is right)\n");
    long top = (long)cfg_int(c, "top-losses");
    if (top > nrows) top = nrows;
    if (top > 0) { /* with the URLs the images came from: two round trips an image */
        char **urls = calloc((size_t)top, sizeof *urls), (*keys)[DS_KEY_HEX + 1] =
                                                             calloc((size_t)top, sizeof *keys);
        const char **kp = calloc((size_t)top, sizeof *kp);
        if (urls && keys && kp) {
            for (long k = 0; k < top; k++) {
                ds_record rec;
                if (ds_image_get(r, m.dataset, it.rows[k].src, &rec) == URSA_OK)
                    snprintf(keys[k], sizeof keys[k], "%s", rec.key);
                kp[k] = keys[k];
            }
            ds_urls_find(r, bs, m.dataset, (size_t)top, kp, urls);
        }
        printf("\ntop losses (source URL, actual, predicted, loss, probability of actual, "
               "file)\n");
        for (long k = 0; k < top; k++) {
            char path[4300];
            const interp_row *x = &it.rows[k];
            blob_path(bs, x->jpeg, path, sizeof path);
            char lb[24], pb[24];
            snprintf(lb, sizeof lb, "%.4f", x->loss);
            snprintf(pb, sizeof pb, "%.4f", x->p);
            const char *row[] = {urls && urls[k] ? urls[k] : "-", x->actual, x->pred, lb, pb, path};
            util_tsv_row(stdout, row, 6);
        }
        for (long k = 0; urls && k < top; k++) free(urls[k]);
        free(urls);
        free(keys);
        free(kp);
    }
    if (*plot) {
        char title[300];
        snprintf(title, sizeof title, "%s: confusion matrix, %d validation images", argv[0], nrows);
        if (plot_confusion_svg(plot, (const char *const *)cls, nc, cm, title)) {
            fprintf(stderr, "ursa interp: cannot write %s\n", plot);
            goto out;
        }
        printf("\nplot: %s\n", plot);
    }
    rc = 0;
out:
    free(data);
    free(cls);
    interp_free(&it);
    free(m.classes);
    blob_store_destroy(bs);
    rstore_destroy(r);
    return rc;
}
