/* conn.c: the CLI's connections; see conn.h. */
#include "conn.h"

#include <stdio.h>
#include <string.h>

#include "dataset.h"
#include "statedir.h"
#include "util.h"

rstore *cli_redis(const cfg *c) {
    char url[600], err[512];
    if (statedir_redis_url(c, url, sizeof url, err, sizeof err)) {
        fprintf(stderr, "ursa: %s\n", err);
        return NULL;
    }
    rstore *r = rstore_new(url, (int)cfg_int(c, "redis.timeout-ms"), err, sizeof err);
    if (!r) fprintf(stderr, "ursa: %s\n", err);
    else rstore_set_retry_ms(r, 3000);
    return r;
}

kq_producer *cli_kafka(const cfg *c) {
    char bs[512], err[512];
    if (statedir_kafka_bootstrap(c, bs, sizeof bs, err, sizeof err)) {
        fprintf(stderr, "ursa: %s\n", err);
        return NULL;
    }
    kq_producer *p = kq_producer_new(c, bs, err, sizeof err);
    if (!p) fprintf(stderr, "ursa: %s\n", err);
    return p;
}

blob_store *cli_blobs(const cfg *c) {
    char err[512];
    blob_store *bs = statedir_blob_store(c, err, sizeof err);
    if (!bs) fprintf(stderr, "ursa: %s\n", err);
    return bs;
}

int cli_outage_note(cli_outage *o, ursa_err err, rstore *r, int64_t asked_at) {
    int64_t now = util_mono_ms();
    if (!err) {
        if (o->since)
            fprintf(stderr, "\n%s: Redis answers again after %.0f s; still waiting\n", o->cmd,
                    (double)(now - o->since) / 1000);
        o->since = 0;
        return 0;
    }
    if (!o->since) {
        o->since = asked_at;
        o->said = now;
        fprintf(stderr, "\n%s: Redis does not answer (%s); the work goes on without us. "
                        "Waiting up to %lld s for it (--outage-timeout-s)\n",
                o->cmd, rstore_last_error(r), o->limit_s);
    }
    if (now - o->since >= o->limit_s * 1000) {
        fprintf(stderr, "%s: Redis has not answered for %.0f s (%s); gave up waiting. Nothing "
                        "is lost: see `ursa status` once it is back\n",
                o->cmd, (double)(now - o->since) / 1000, rstore_last_error(r));
        return 1;
    }
    if (now - o->said >= 10000) {
        fprintf(stderr, "%s: Redis has not answered for %.0f s; waiting (up to %lld s)\n", o->cmd,
                (double)(now - o->since) / 1000, o->limit_s);
        o->said = now;
    }
    return 0;
}

const char *cli_dataset(const cfg *c, const char *cmd) {
    const char *ds = cfg_str(c, "dataset");
    if (!*ds) {
        fprintf(stderr, "ursa %s: --dataset NAME is required\n", cmd);
        return NULL;
    }
    if (!ds_name_valid(ds)) {
        fprintf(stderr, "ursa %s: bad dataset name \"%s\" (1 to 64 of A-Z a-z 0-9 . _ -)\n", cmd,
                ds);
        return NULL;
    }
    return ds;
}

int cli_json(const cfg *c, const char *cmd) {
    const char *out = cfg_str(c, "output");
    if (!strcmp(out, "json")) return 1;
    if (!strcmp(out, "text")) return 0;
    fprintf(stderr, "ursa %s: --output: expected text or json, got \"%s\"\n", cmd, out);
    return -1;
}
