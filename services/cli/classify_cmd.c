/* classify_cmd.c: ursa classify. Each URL becomes a ClassifyRequest whose
 * id is the hash of the dataset and the URL, so running the same list again
 * asks nothing new: ursa-inference keeps each answer in Redis by request id
 * (ursa:classify:<id>) and sends it again for a replay. The command waits
 * for every answer there and writes one JSON line a URL, in input order. */
#include "classify_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify_results.h"
#include "conn.h"
#include "dataset.h"
#include "msg.h"
#include "sha256.h"
#include "topics.h"
#include "util.h"

const cfg_def classify_defs[] = {
    {"dataset", CFG_STR, "", 1, 0, "the dataset whose model classifies (required)"},
    {"out", CFG_STR, "", 1, 0, "write the results here as JSON lines (required; - for stdout)"},
    {"top", CFG_INT, "5", 0, 1e6, "predictions per image (0: every class)"},
    {"wait-timeout-s", CFG_INT, "0", 0, 1e7, "give up waiting after this long (0: never)"},
    {"outage-timeout-s", CFG_INT, "300", 1, 1e7,
     "while waiting, give up when Redis has not answered for this long"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    char *url;
    char id[41];
    int done;
} item;

#define json_str util_json_str

int classify_cmd(const cfg *c, int argc, char **argv) {
    const char *ds = cli_dataset(c, "classify"), *out = cfg_str(c, "out");
    if (!ds) return 2;
    if (!*out || argc < 1) {
        fprintf(stderr, "usage: ursa classify --dataset NAME --out results.jsonl URLS.txt...\n");
        return 2;
    }
    item *it = NULL;
    size_t n = 0, cap = 0;
    long bad = 0;
    for (int a = 0; a < argc; a++) {
        FILE *f = fopen(argv[a], "r");
        if (!f) {
            fprintf(stderr, "ursa classify: cannot read %s\n", argv[a]);
            return 2;
        }
        char line[8192];
        for (int ln = 1; fgets(line, sizeof line, f); ln++) {
            line[strcspn(line, "\r\n")] = '\0';
            char *u = line;
            while (*u == ' ' || *u == '\t') u++;
            if (!*u || *u == '#') continue;
            if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8)) {
                fprintf(stderr, "%s:%d: not an http:// or https:// URL; skipped\n", argv[a], ln);
                bad++;
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                item *ni = realloc(it, cap * sizeof *it);
                if (!ni) return 1;
                it = ni;
            }
            it[n].url = strdup(u);
            it[n].done = 0;
            char key[8300], h[65];
            snprintf(key, sizeof key, "%s\t%s", ds, u);
            sha256_hex(key, strlen(key), h);
            snprintf(it[n].id, sizeof it[n].id, "c%.32s", h);
            n++;
        }
        fclose(f);
    }
    int rc = 1;
    rstore *r = cli_redis(c);
    kq_producer *p = r ? cli_kafka(c) : NULL;
    FILE *of = NULL;
    if (!p) goto out;
    for (size_t i = 0; i < n; i++) {
        Ursa__Header h;
        char hid[33];
        msg_header_init(&h, hid, ds, NULL);
        Ursa__ClassifyRequest q = URSA__CLASSIFY_REQUEST__INIT;
        q.header = &h;
        q.request_id = it[i].id;
        q.url = it[i].url;
        q.top_k = (uint32_t)cfg_int(c, "top");
        q.dataset = (char *)ds;
        void *buf;
        size_t len;
        if (msg_pack(&q.base, &buf, &len) ||
            kq_produce(p, TOPIC_CLASSIFY_REQUESTS, it[i].id, strlen(it[i].id), buf, len, NULL, 0,
                       NULL, NULL)) {
            fprintf(stderr, "ursa classify: cannot queue the requests\n");
            goto out;
        }
        free(buf);
    }
    if (kq_producer_flush(p, 30000)) {
        fprintf(stderr, "ursa classify: Kafka did not take the requests\n");
        goto out;
    }
    fprintf(stderr, "%zu URLs queued for dataset %s%s\n", n, ds, bad ? " (some lines skipped)" : "");
    /* wait for the answers */
    int tty = isatty(2);
    size_t done = 0;
    int64_t t0 = util_mono_ms(), last = 0;
    long long timeout = cfg_int(c, "wait-timeout-s");
    cli_outage o = {.cmd = "ursa classify", .limit_s = cfg_int(c, "outage-timeout-s")};
    while (done < n) {
        /* the answers still missing, in one pipelined round trip */
        rstore_batch *bt = rstore_batch_new();
        size_t *which = malloc(sizeof(size_t) * (n - done));
        redisReply **reps = NULL;
        size_t nq = 0;
        for (size_t i = 0; bt && which && i < n; i++)
            if (!it[i].done && cresult_batch_exists(bt, it[i].id) == URSA_OK)
                which[nq++] = i;
        if (!bt || !which) {
            fprintf(stderr, "\nursa classify: out of memory\n");
            rstore_batch_destroy(bt);
            free(which);
            goto out;
        }
        int64_t asked = util_mono_ms();
        ursa_err err = rstore_batch_exec(r, bt, &reps);
        if (cli_outage_note(&o, err, r, asked)) {
            rstore_batch_destroy(bt);
            free(which);
            goto out;
        }
        if (err) {
            rstore_batch_destroy(bt);
            free(which);
            if (timeout && util_mono_ms() - t0 > timeout * 1000) {
                fprintf(stderr, "ursa classify: gave up after %lld s with %zu of %zu answered\n",
                        timeout, done, n);
                goto out;
            }
            util_sleep_ms(1000);
            continue;
        }
        for (size_t k = 0; k < nq; k++)
            if (reps[k]->type == REDIS_REPLY_INTEGER && reps[k]->integer == 1)
                it[which[k]].done = 1, done++;
        rstore_replies_free(reps, nq);
        rstore_batch_destroy(bt);
        free(which);
        int64_t now = util_mono_ms();
        if (tty || done == n || now - last > 5000) {
            int w = 30, fill = n ? (int)(w * done / n) : w;
            char bar[64];
            for (int k = 0; k < w; k++) bar[k] = k < fill ? '#' : '-';
            bar[w] = '\0';
            fprintf(stderr, "%s[%s] %zu/%zu classified  %.0fs%s", tty ? "\r" : "", bar, done, n,
                    (double)(now - t0) / 1000, tty ? "\033[K" : "\n");
            last = now;
        }
        if (done == n) break;
        if (timeout && now - t0 > timeout * 1000) {
            fprintf(stderr, "%sursa classify: gave up after %lld s with %zu of %zu answered "
                            "(is ursa-inference running? ursa status)\n",
                    tty ? "\n" : "", timeout, done, n);
            goto out;
        }
        util_sleep_ms(200);
    }
    if (tty) fputc('\n', stderr);
    int to_stdout = !strcmp(out, "-");
    if (!(of = to_stdout ? stdout : fopen(out, "w"))) {
        fprintf(stderr, "ursa classify: cannot write %s\n", out);
        goto out;
    }
    long errors = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *rep = NULL;
        if (cresult_get(r, it[i].id, &rep) || rep->type != REDIS_REPLY_STRING) {
            if (rep) freeReplyObject(rep);
            fprintf(stderr, "ursa classify: the answer to %s vanished\n", it[i].url);
            goto out;
        }
        Ursa__ClassifyResult *res =
            ursa__classify_result__unpack(NULL, rep->len, (const uint8_t *)rep->str);
        freeReplyObject(rep);
        fprintf(of, "{\"url\": ");
        json_str(of, it[i].url);
        fprintf(of, ", \"request_id\": \"%s\"", it[i].id);
        if (!res) {
            fprintf(of, ", \"error\": \"unreadable result\"}\n");
            errors++;
            continue;
        }
        fprintf(of, ", \"model\": ");
        json_str(of, res->model_id);
        if (res->error[0]) {
            fprintf(of, ", \"error\": ");
            json_str(of, res->error);
            errors++;
        } else {
            fprintf(of, ", \"predictions\": [");
            for (size_t k = 0; k < res->n_predictions; k++) {
                fprintf(of, "%s[", k ? ", " : "");
                json_str(of, res->predictions[k]->label);
                fprintf(of, ", %.6g]", res->predictions[k]->prob);
            }
            fprintf(of, "]");
        }
        fprintf(of, "}\n");
        ursa__classify_result__free_unpacked(res, NULL);
    }
    if (to_stdout ? fflush(of) || ferror(of) : fclose(of)) {
        of = NULL;
        fprintf(stderr, "ursa classify: cannot write %s\n", to_stdout ? "to stdout" : out);
        goto out;
    }
    of = NULL;
    /* the summary on stderr when the results are on stdout */
    fprintf(to_stdout ? stderr : stdout, "%zu results written to %s (%ld with an error)\n", n,
            to_stdout ? "stdout" : out, errors);
    rc = 0;
out:
    if (of && of != stdout) fclose(of);
    for (size_t i = 0; i < n; i++) free(it[i].url);
    free(it);
    kq_producer_destroy(p);
    rstore_destroy(r);
    return rc;
}
