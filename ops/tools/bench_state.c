/* bench-state: fills a dataset's Redis state as an ingest of N URLs would
 * leave it, through common/state/dataset (the code the daemons run), and prints
 * the Redis memory it took per URL. The mix: 88% verified, 3% duplicates,
 * 1% label conflicts, 5% failed (a third of them transient), 3% still
 * queued; 10 labels; URLs of a realistic length (about 90 characters).
 *
 *   bench-state REDIS_URL BLOB_DIR DATASET N
 *
 * ops/bench-state.sh runs it and then times ursa status, status --failed
 * and retry --pending over the result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "dataset.h"
#include "rstore.h"
#include "util.h"

static long long used_memory(rstore *r) {
    redisReply *rep = NULL;
    if (rstore_cmd(r, &rep, "INFO memory")) return -1;
    const char *p = strstr(rep->str, "used_memory:");
    long long v = p ? atoll(p + strlen("used_memory:")) : -1;
    freeReplyObject(rep);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: bench-state REDIS_URL BLOB_DIR DATASET N\n");
        return 2;
    }
    char err[256];
    rstore *r = rstore_new(argv[1], 5000, err, sizeof err);
    blob_store *bs = r ? blob_store_new(argv[2], err, sizeof err) : NULL;
    if (!bs) {
        fprintf(stderr, "bench-state: %s\n", err);
        return 1;
    }
    const char *ds = argv[3];
    size_t n = (size_t)atol(argv[4]);
    static const char *const labels[] = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                         "sandal", "shirt", "sneaker", "bag", "ankle-boot"};
    char **urls = malloc(n * sizeof *urls);
    const char **lab = malloc(n * sizeof *lab);
    if (!urls || !lab) return 1;
    for (size_t i = 0; i < n; i++) {
        char u[160];
        snprintf(u, sizeof u,
                 "https://images.example-cdn.com/catalogue/2026/%05zu/product-%09zu-front.jpg"
                 "?w=640",
                 i % 99991, i);
        urls[i] = strdup(u);
        lab[i] = labels[i % 10];
    }
    long long m0 = used_memory(r);
    int64_t t0 = util_mono_ms();
    int *added = calloc(n, sizeof *added);
    ursa_err e = ds_add_urls(r, bs, ds, n, (const char *const *)urls, lab, added);
    if (e) {
        fprintf(stderr, "bench-state: add: %s (%s)\n", ursa_err2str(e), rstore_last_error(r));
        return 1;
    }
    int64_t t1 = util_mono_ms();
    enum { ROUND = 2000 };
    ds_op *ops = calloc(ROUND, sizeof *ops);
    char (*hash)[65] = malloc(ROUND * sizeof *hash);
    char (*src)[65] = malloc(ROUND * sizeof *src);
    char (*jpeg)[65] = malloc(ROUND * sizeof *jpeg);
    size_t verified = 0, dup = 0, conflict = 0, failed = 0, queued = 0;
    for (size_t off = 0; off < n; off += ROUND) {
        size_t m = n - off < ROUND ? n - off : ROUND, k = 0;
        for (size_t j = 0; j < m; j++) {
            size_t i = off + j, pct = (i * 7919) % 100;
            ds_op *o = &ops[k];
            memset(o, 0, sizeof *o);
            o->ds = ds;
            ds_url_hash(urls[i], hash[k]);
            o->url_hash = hash[k];
            if (pct < 3) { /* still queued */
                queued++;
                continue;
            }
            if (pct < 8) {
                o->kind = DS_OP_STATE;
                o->state = DS_FAILED;
                o->transient = pct < 5 && pct % 3 == 0;
                o->reason = o->transient ? "timeout" : "http_status";
                o->detail = o->transient ? "no answer in 20 s" : "HTTP 404";
                failed++;
            } else {
                /* the source bytes: a duplicate reuses the bytes of URL i - 10
                 * (same label), a conflict those of URL i - 1 (another label) */
                size_t s = pct < 11 ? i - 10 : pct < 12 ? i - 1 : i;
                if (s >= i || i < 10) s = i;
                char b[32];
                snprintf(b, sizeof b, "src-%zu", s);
                ds_url_hash(b, src[k]);
                snprintf(b, sizeof b, "jpeg-%zu", s);
                ds_url_hash(b, jpeg[k]);
                o->kind = DS_OP_IMAGE;
                o->src_blob = src[k];
                o->jpeg_blob = jpeg[k];
            }
            k++;
        }
        if ((e = ds_apply(r, ops, k))) {
            fprintf(stderr, "bench-state: apply: %s (%s)\n", ursa_err2str(e),
                    rstore_last_error(r));
            return 1;
        }
        for (size_t j = 0; j < k; j++) /* what Redis decided */
            if (ops[j].kind == DS_OP_IMAGE) {
                if (ops[j].err) {
                    fprintf(stderr, "bench-state: image: %s\n", ursa_err2str(ops[j].err));
                    return 1;
                }
                verified += ops[j].outcome == DS_VERIFIED;
                dup += ops[j].outcome == DS_DUPLICATE;
                conflict += ops[j].outcome == DS_REJECTED;
            }
    }
    int64_t t2 = util_mono_ms();
    long long m1 = used_memory(r);
    printf("urls %zu\nverified %zu\nduplicate %zu\nconflict %zu\nfailed %zu\nqueued %zu\n", n,
           verified, dup, conflict, failed, queued);
    printf("add_s %.2f\napply_s %.2f\n", (t1 - t0) / 1000.0, (t2 - t1) / 1000.0);
    printf("redis_bytes %lld\nbytes_per_url %.1f\n", m1 - m0, (double)(m1 - m0) / (double)n);
    for (size_t i = 0; i < n; i++) free(urls[i]);
    free(urls);
    free(lab);
    free(added);
    free(ops);
    free(hash);
    free(src);
    free(jpeg);
    blob_store_destroy(bs);
    rstore_destroy(r);
    return 0;
}
