/* status_cmd.c: `ursa status`: a deployment's health, from the host it
 * runs on or from anywhere else.
 *
 * It reads: with an embedded stack in the state dir, its processes
 * (stack.h); from Redis, the heartbeat of every instance of every daemon,
 * on whatever host it runs (common/state/heartbeats.h); from Kafka, each topic's
 * size and each consumer group's lag from its committed offsets and the
 * watermarks, which any Kafka answers. Neither of the last two needs a pid
 * file or a local port, so `ursa status --redis.url URL --kafka.bootstrap
 * HOSTS` with no state dir sees a whole deployment.
 *
 * Healthy (exit 0): Redis and Kafka answer, each stage (crawler, verifier,
 * trainer, inference) has a live instance, and no live instance says it is
 * degraded; with an embedded stack, also every daemon it runs is running.
 * The console is no stage: its instances are listed and a degraded one
 * counts, but a deployment needs none. Stale instances (killed, or cut off
 * from Redis) are listed apart and count only by the stage they leave
 * without a live instance. */
#include "status_cmd.h"

#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset_cmd.h"
#include "heartbeats.h"
#include "rstore.h"
#include "stack.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

const cfg_def status_defs[] = {
    {"output", CFG_STR, "text", 1, 0,
     "text or json (-o json): the deployment's, or with --dataset its counts and reasons"},
    {"dataset", CFG_STR, "", 1, 0, "show this dataset instead of the stack"},
    {"failed", CFG_BOOL, "false", 1, 0, "with --dataset: list every URL that failed or was "
                                        "rejected, with its reason"},
    {"counts", CFG_BOOL, "false", 1, 0,
     "with --dataset: print the raw counters (label|state[|reason] TAB n)"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* The services a deployment needs a live instance of. */
static const char *const stages[] = {"crawler", "verifier", "trainer", "inference", NULL};

#define MAX_PROBLEMS 32
#define MAX_TOPICS 32

typedef struct {
    const char *topic, *group;
    int parts;               /* 0: missing */
    long long messages, lag; /* lag -1: unknown */
} topic_row;

typedef struct {
    int embedded;
    stack_view v;
    char redis_url[600], bootstrap[512];
    int redis_ok, cluster;
    double redis_ms;
    int topics; /* the cluster's, -1 when Kafka does not answer */
    hb_instance *in;
    size_t nin;
    topic_row rows[MAX_TOPICS];
    int nrows;
    char problems[MAX_PROBLEMS][320];
    int nproblems;
    char host[256];
    int64_t now;
} report;

static void problem(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(report *r, const char *fmt, ...) {
    if (r->nproblems == MAX_PROBLEMS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problems[r->nproblems++], sizeof r->problems[0], fmt, ap);
    va_end(ap);
}

/* ---- Kafka: sizes and lag --------------------------------------------------------- */

/* Each topic's size and, for the topics a group works off, the group's lag:
 * the high watermark minus its committed offset (the low one when nothing
 * is committed yet), summed over partitions. */
static void read_backlog(report *r) {
    rd_kafka_t *rk = stack_kafka_handle(r->bootstrap, RD_KAFKA_PRODUCER, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (!rk || rd_kafka_metadata(rk, 1, NULL, &md, 3000)) {
        if (rk) rd_kafka_destroy(rk);
        return;
    }
    /* one consumer handle a group, for rd_kafka_committed */
    struct {
        const char *group;
        rd_kafka_t *h;
    } gs[8];
    int ng = 0;
    for (const topic_info *t = topics_all; t->name && r->nrows < MAX_TOPICS; t++) {
        topic_row *row = &r->rows[r->nrows++];
        row->topic = t->name;
        row->group = t->group;
        row->lag = -1;
        const struct rd_kafka_metadata_topic *mt = NULL;
        for (int i = 0; i < md->topic_cnt; i++)
            if (strcmp(md->topics[i].topic, t->name) == 0) mt = &md->topics[i];
        if (!mt) continue;
        int np = row->parts = mt->partition_cnt;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
        int64_t *low = calloc((size_t)np + 1, sizeof *low);
        int64_t *high = calloc((size_t)np + 1, sizeof *high);
        for (int p = 0; p < np && low && high; p++) {
            rd_kafka_query_watermark_offsets(rk, t->name, mt->partitions[p].id, &low[p], &high[p],
                                             2000);
            row->messages += high[p] - low[p];
            rd_kafka_topic_partition_list_add(l, t->name, mt->partitions[p].id);
        }
        rd_kafka_t *gc = NULL;
        for (int g = 0; t->group && g < ng && !gc; g++)
            if (!strcmp(gs[g].group, t->group)) gc = gs[g].h;
        if (t->group && !gc && ng < 8 &&
            (gc = stack_kafka_handle(r->bootstrap, RD_KAFKA_CONSUMER, t->group)))
            gs[ng].group = t->group, gs[ng++].h = gc;
        if (gc && low && high && rd_kafka_committed(gc, l, 3000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            row->lag = 0;
            for (int p = 0; p < l->cnt; p++) {
                int64_t committed = l->elems[p].offset;
                row->lag += high[p] - (committed < 0 ? low[p] : committed);
            }
        }
        free(low);
        free(high);
        rd_kafka_topic_partition_list_destroy(l);
    }
    for (int g = 0; g < ng; g++) {
        rd_kafka_consumer_close(gs[g].h);
        rd_kafka_destroy(gs[g].h);
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
}

/* ---- gathering -------------------------------------------------------------------- */

static int is_stage(const char *svc) {
    for (int i = 0; stages[i]; i++)
        if (!strcmp(stages[i], svc)) return 1;
    return 0;
}

/* The embedded stack's process of that name, or NULL. */
static const stack_proc *proc_of(const report *r, const char *name) {
    for (int i = 0; r->embedded && i < r->v.n; i++)
        if (!strcmp(r->v.procs[i].name, name)) return &r->v.procs[i];
    return NULL;
}

static void gather_redis(const cfg *c, report *r) {
    char err[512];
    if (statedir_redis_url(c, r->redis_url, sizeof r->redis_url, err, sizeof err)) {
        problem(r, "redis: %s", err);
        return;
    }
    rstore *rs = rstore_new(r->redis_url, 1000, err, sizeof err);
    if (!rs) {
        problem(r, "redis: %s", err);
        return;
    }
    rstore_set_retry_ms(rs, 1000);
    int64_t t0 = util_mono_ms();
    r->redis_ok = rstore_cmd(rs, NULL, "PING") == URSA_OK;
    r->redis_ms = (double)(util_mono_ms() - t0);
    r->cluster = rstore_is_cluster(rs);
    char shown[600];
    util_url_redact(r->redis_url, shown, sizeof shown);
    if (!r->redis_ok) problem(r, "redis at %s does not answer: %s", shown, rstore_last_error(rs));
    else if (hb_list(rs, r->now, &r->in, &r->nin) != URSA_OK)
        problem(r, "redis: cannot read the heartbeats: %s", rstore_last_error(rs));
    rstore_destroy(rs);
}

static void gather_kafka(const cfg *c, report *r) {
    char err[512];
    r->topics = -1;
    if (statedir_kafka_bootstrap(c, r->bootstrap, sizeof r->bootstrap, err, sizeof err)) {
        problem(r, "kafka: %s", err);
        return;
    }
    const stack_proc *b = proc_of(r, "broker");
    if (b && !b->ok) { /* asked already: it did not answer */
        problem(r, "the embedded broker is %s", b->pid ? "not answering" : "down");
        return;
    }
    r->topics = stack_broker_topics(r->bootstrap, 3000);
    if (r->topics < 0) problem(r, "kafka at %s does not answer", r->bootstrap);
    else read_backlog(r);
}

/* What keeps the deployment from being healthy, into r->problems. */
static void judge(report *r) {
    for (int i = 2; r->embedded && i < r->v.n; i++) /* after redis and the broker */
        if (!strcmp(r->v.procs[i].state, "down"))
            problem(r, "%s is not running (ursa up starts it)", r->v.procs[i].name);
    if (!r->redis_ok) return; /* the instances are unknown, not missing */
    for (int s = 0; stages[s]; s++) {
        const stack_proc *p = proc_of(r, stages[s]);
        if (p && !strcmp(p->state, "not built")) continue; /* this stack runs none */
        int live = 0;
        for (size_t i = 0; i < r->nin; i++)
            live += r->in[i].live && !strcmp(r->in[i].service, stages[s]);
        if (!live) problem(r, "no live %s instance", stages[s]);
    }
    for (size_t i = 0; i < r->nin; i++)
        if (r->in[i].live && r->in[i].degraded[0])
            problem(r, "%s %s is degraded: %s", r->in[i].service, r->in[i].instance,
                    r->in[i].degraded);
}

/* ---- text ------------------------------------------------------------------------- */

/* A live instance's health: "ok: heartbeat 1 s ago, downloaded 5, ...". */
static void beat_text(const report *r, const hb_instance *h, char *out, size_t n) {
    double ago = (double)(r->now - h->last_ms) / 1000;
    size_t o;
    if (h->degraded[0])
        o = (size_t)snprintf(out, n, "DEGRADED: %s; heartbeat %.0f s ago", h->degraded, ago);
    else o = (size_t)snprintf(out, n, "ok: heartbeat %.0f s ago", ago < 0 ? 0 : ago);
    for (size_t k = 0; k < h->nkv && o < n; k++)
        o += (size_t)snprintf(out + o, n - o, ", %s %s", h->kv[2 * k], h->kv[2 * k + 1]);
}

/* "40s", "5m12s", "3h02m", "2d04h" */
static void span(int64_t ms, char *out, size_t n) {
    long long s = ms > 0 ? ms / 1000 : 0;
    if (s < 60) snprintf(out, n, "%llds", s);
    else if (s < 3600) snprintf(out, n, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400) snprintf(out, n, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else snprintf(out, n, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

/* The stack's process of that name, from its heartbeat on this host. */
static const hb_instance *instance_of(const report *r, const char *svc, int pid) {
    for (size_t i = 0; pid && i < r->nin; i++)
        if (r->in[i].live && r->in[i].pid == pid && !strcmp(r->in[i].service, svc) &&
            !strcmp(r->in[i].host, r->host))
            return &r->in[i];
    return NULL;
}

/* Calls fn on the instances in the order they are shown: services in
 * pipeline order (then any other, by name), within one by host and id. */
typedef void instance_fn(const report *r, const hb_instance *h, void *arg);
static void each_instance(const report *r, int live, instance_fn *fn, void *arg) {
    for (int s = 0; stack_daemons[s]; s++)
        for (size_t i = 0; i < r->nin; i++)
            if (r->in[i].live == live && !strcmp(r->in[i].service, stack_daemons[s]))
                fn(r, &r->in[i], arg);
    for (size_t i = 0; i < r->nin; i++) {
        int known = 0;
        for (int s = 0; stack_daemons[s]; s++) known |= !strcmp(r->in[i].service, stack_daemons[s]);
        if (!known && r->in[i].live == live) fn(r, &r->in[i], arg);
    }
}

static void print_instance(const report *r, const hb_instance *h, void *arg) {
    (void)arg;
    char health[1024], up[32];
    if (h->live) {
        beat_text(r, h, health, sizeof health);
        span(r->now - h->started_ms, up, sizeof up);
    } else {
        snprintf(health, sizeof health, "last heartbeat %.0f s ago",
                 (double)(r->now - h->last_ms) / 1000);
        snprintf(up, sizeof up, "-");
    }
    char pid[16] = "-";
    if (h->pid) snprintf(pid, sizeof pid, "%d", h->pid);
    printf("  %-10s %-16s %-24s %7s %7s  %s\n", h->service, h->host, h->instance, pid, up, health);
}

static void print_text(const report *r) {
    char shown[600];
    util_url_redact(r->redis_url, shown, sizeof shown);
    if (r->embedded) {
        printf("state dir %s\n%-10s %8s  %-8s %s\n", r->v.root, "process", "pid", "state",
               "health");
        for (int i = 0; i < r->v.n; i++) {
            const stack_proc *p = &r->v.procs[i];
            char pid[16] = "-", health[1024];
            if (p->pid) snprintf(pid, sizeof pid, "%d", p->pid);
            if (!strcmp(p->state, "external"))
                snprintf(health, sizeof health, "%s: %s%s", r->redis_ok ? "ok" : "not answering",
                         shown, r->cluster ? " (Redis Cluster)" : "");
            else if (i < 2) snprintf(health, sizeof health, "%s", p->health);
            else if (!p->pid) snprintf(health, sizeof health, "-");
            else if (instance_of(r, p->name, p->pid))
                beat_text(r, instance_of(r, p->name, p->pid), health, sizeof health);
            else snprintf(health, sizeof health, "no heartbeat");
            if (!strcmp(p->state, "not built")) printf("%-10s %8s  %-8s\n", p->name, "-", p->state);
            else printf("%-10s %8s  %-8s %s\n", p->name, pid, p->state, health);
        }
    } else {
        printf("%-10s %s: %s%s", "redis", r->redis_ok ? "ok" : "not answering", shown,
               r->cluster ? " (Redis Cluster)" : "");
        if (r->redis_ok) printf(", PING %.0f ms", r->redis_ms);
        printf("\n%-10s %s: %s", "kafka", r->topics >= 0 ? "ok" : "not answering", r->bootstrap);
        if (r->topics >= 0) printf(", %d topics", r->topics);
        printf("\n");
    }
    printf("\ninstances (a heartbeat every %d s, expiring after %d s):\n", HB_INTERVAL_MS / 1000,
           HB_TTL_MS / 1000);
    size_t live = 0;
    for (size_t i = 0; i < r->nin; i++) live += r->in[i].live;
    if (live)
        printf("  %-10s %-16s %-24s %7s %7s  %s\n", "service", "host", "instance", "pid", "up",
               "health");
    else printf("  none%s\n", r->redis_ok ? "" : " known (Redis does not answer)");
    each_instance(r, 1, print_instance, NULL);
    if (live < r->nin) {
        printf("stale (heartbeat expired; seen in the last %d minutes):\n", HB_STALE_MS / 60000);
        each_instance(r, 0, print_instance, NULL);
    }
    if (r->nrows) printf("\n%-24s %5s %9s  %-15s %7s\n", "topic", "parts", "messages", "group",
                         "backlog");
    for (int i = 0; i < r->nrows; i++) {
        const topic_row *t = &r->rows[i];
        char lag[24] = "-";
        if (t->group) snprintf(lag, sizeof lag, t->lag < 0 ? "?" : "%lld", t->lag);
        if (!t->parts) printf("%-24s %5s\n", t->topic, "missing");
        else printf("%-24s %5d %9lld  %-15s %7s\n", t->topic, t->parts, t->messages,
                    t->group ? t->group : "-", lag);
    }
    if (!r->nproblems) {
        printf("\nhealthy\n");
        return;
    }
    printf("\nNOT HEALTHY:");
    for (int i = 0; i < r->nproblems; i++) printf("%s %s", i ? ";" : "", r->problems[i]);
    printf("\n");
}

/* ---- JSON ------------------------------------------------------------------------- */

/* A heartbeat counter: a number when it is one, else a string. */
static void json_value(const char *v) {
    char *end;
    strtoll(v, &end, 10);
    if (*v && !*end && (v[0] != '0' || !v[1]) && strlen(v) < 16) printf("%s", v);
    else util_json_str(stdout, v);
}

static void json_instance(const report *r, const hb_instance *h, void *arg) {
    int *first = arg;
    (void)r;
    printf("%s\n    {\"service\": ", *first ? "" : ",");
    *first = 0;
    util_json_str(stdout, h->service);
    printf(", \"instance\": ");
    util_json_str(stdout, h->instance);
    printf(", \"host\": ");
    util_json_str(stdout, h->host);
    printf(", \"state\": \"%s\", \"last_beat_ms\": %lld", h->live ? "live" : "stale",
           (long long)h->last_ms);
    if (h->live) {
        printf(", \"pid\": %d, \"started_ms\": %lld, \"version\": ", h->pid,
               (long long)h->started_ms);
        util_json_str(stdout, h->version);
        printf(", \"metrics_port\": %d, \"degraded\": ", h->metrics_port);
        if (h->degraded[0]) util_json_str(stdout, h->degraded);
        else printf("null");
        printf(", \"counters\": {");
        for (size_t k = 0; k < h->nkv; k++) {
            printf("%s", k ? ", " : "");
            util_json_str(stdout, h->kv[2 * k]);
            printf(": ");
            json_value(h->kv[2 * k + 1]);
        }
        printf("}");
    }
    printf("}");
}

static void print_json(const report *r) {
    char shown[600];
    util_url_redact(r->redis_url, shown, sizeof shown);
    printf("{\n  \"healthy\": %s,\n  \"problems\": [", r->nproblems ? "false" : "true");
    for (int i = 0; i < r->nproblems; i++) {
        printf("%s", i ? ", " : "");
        util_json_str(stdout, r->problems[i]);
    }
    printf("],\n  \"state_dir\": ");
    if (r->embedded) util_json_str(stdout, r->v.root);
    else printf("null");
    printf(",\n  \"processes\": [");
    for (int i = 0; r->embedded && i < r->v.n; i++) {
        const stack_proc *p = &r->v.procs[i];
        printf("%s\n    {\"name\": \"%s\", \"pid\": %d, \"state\": \"%s\"", i ? "," : "", p->name,
               p->pid, p->state);
        if (i < 2 && strcmp(p->state, "external")) {
            printf(", \"health\": ");
            util_json_str(stdout, p->health);
        }
        printf("}");
    }
    printf("],\n  \"redis\": {\"url\": ");
    util_json_str(stdout, shown);
    printf(", \"ok\": %s, \"cluster\": %s},\n  \"kafka\": {\"bootstrap\": ",
           r->redis_ok ? "true" : "false", r->cluster ? "true" : "false");
    util_json_str(stdout, r->bootstrap);
    printf(", \"ok\": %s, \"topics\": %d},\n  \"services\": {", r->topics >= 0 ? "true" : "false",
           r->topics);
    int first = 1;
    for (int s = 0; stack_daemons[s]; s++) {
        int live = 0, stale = 0, degraded = 0;
        for (size_t i = 0; i < r->nin; i++) {
            if (strcmp(r->in[i].service, stack_daemons[s])) continue;
            live += r->in[i].live;
            stale += !r->in[i].live;
            degraded += r->in[i].live && r->in[i].degraded[0];
        }
        printf("%s\n    \"%s\": {\"live\": %d, \"stale\": %d, \"degraded\": %d, \"required\": %s}",
               first ? "" : ",", stack_daemons[s], live, stale, degraded,
               is_stage(stack_daemons[s]) ? "true" : "false");
        first = 0;
    }
    printf("},\n  \"instances\": [");
    first = 1;
    each_instance(r, 1, json_instance, &first);
    each_instance(r, 0, json_instance, &first);
    printf("],\n  \"topics\": [");
    for (int i = 0; i < r->nrows; i++) {
        const topic_row *t = &r->rows[i];
        printf("%s\n    {\"topic\": \"%s\", \"partitions\": %d, \"messages\": %lld, \"group\": ",
               i ? "," : "", t->topic, t->parts, t->messages);
        if (t->group) printf("\"%s\"", t->group);
        else printf("null");
        if (t->group && t->lag >= 0) printf(", \"lag\": %lld}", t->lag);
        else printf(", \"lag\": null}");
    }
    printf("]\n}\n");
}

int status_cmd(const cfg *c, int argc, char **argv) {
    (void)argc; /* no positional arguments */
    (void)argv;
    const char *out = cfg_str(c, "output");
    int json = !strcmp(out, "json");
    if (!json && strcmp(out, "text")) {
        fprintf(stderr, "ursa status: --output: expected text or json, got \"%s\"\n", out);
        return 2;
    }
    if (*cfg_str(c, "dataset")) return dataset_status(c); /* its -o json too */
    static report r; /* large: off the stack */
    memset(&r, 0, sizeof r);
    r.now = util_now_ms();
    gethostname(r.host, sizeof r.host - 1);
    /* an embedded stack runs its own broker and never kafka.bootstrap: with
     * one given, the deployment is elsewhere, whatever this state dir holds */
    r.embedded = !*cfg_str(c, "kafka.bootstrap") && stack_exists(c);
    if (!r.embedded && !*cfg_str(c, "redis.url") && !*cfg_str(c, "kafka.bootstrap")) {
        fprintf(stderr,
                "ursa status: no stack in %s and no addresses to look elsewhere: give "
                "--redis.url URL and --kafka.bootstrap HOSTS (or URSA_REDIS_URL, "
                "URSA_KAFKA_BOOTSTRAP), or --state-dir of a stack\n",
                statedir_root(c));
        return 1;
    }
    if (r.embedded && stack_inspect(c, &r.v)) return 1;
    gather_redis(c, &r);
    gather_kafka(c, &r);
    judge(&r);
    if (json) print_json(&r);
    else print_text(&r);
    hb_list_free(r.in, r.nin);
    return r.nproblems ? 1 : 0;
}
