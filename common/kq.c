/* kq.c: the producer and the consumer-group loop; the rules are in kq.h.
 *
 * Everything below runs on the caller's thread: librdkafka calls the delivery
 * and rebalance callbacks from inside rd_kafka_poll() and
 * rd_kafka_consumer_poll(), so the job lists need no locks, as long as a
 * producer has one polling thread (kq.h, "Threads"). */
#include "kq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "topics.h"
#include "util.h"

/* ---- shared configuration ---------------------------------------------- */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf) {
    (void)rk;
    char q[1024];
    int lvl = level <= 3 ? ULOG_ERROR : level <= 4 ? ULOG_WARN
              : level <= 6 ? ULOG_INFO : ULOG_DEBUG;
    ULOG(lvl, "event=rdkafka fac=%s msg=%s", fac, ulog_quote(q, sizeof q, buf));
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *op) {
    (void)rk;
    (void)op;
    char q[1024];
    ULOG_WARN("event=kafka_error err=%s reason=%s",
              rd_kafka_err2name((rd_kafka_resp_err_t)err),
              ulog_quote(q, sizeof q, reason));
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                    char *errstr, size_t n) {
    if (rd_kafka_conf_set(conf, name, value, errstr, n) != RD_KAFKA_CONF_OK)
        return -1;
    return 0;
}

typedef const char *conf_pair[2];

/* ursa's defaults, then the kafka.* pass-through settings, then the settings
 * the delivery rules depend on (forced, NULL-terminated lists). */
static rd_kafka_conf_t *base_conf(const cfg *c, const char *bootstrap,
                                  const conf_pair *defaults,
                                  const conf_pair *forced, char *errstr,
                                  size_t n) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char es[512];
    if (conf_set(conf, "bootstrap.servers", bootstrap, es, sizeof es) ||
        conf_set(conf, "client.id", "ursa", es, sizeof es) ||
        conf_set(conf, "log.connection.close", "false", es, sizeof es))
        goto fail;
    for (; defaults && (*defaults)[0]; defaults++)
        if (conf_set(conf, (*defaults)[0], (*defaults)[1], es, sizeof es)) goto fail;
    for (size_t i = 0; c && i < cfg_passthrough_count(c); i++) {
        const char *name, *value;
        cfg_passthrough_get(c, i, &name, &value);
        if (conf_set(conf, name + strlen("kafka."), value, es, sizeof es)) {
            snprintf(errstr, n, "--%s: %s", name, es);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    for (; forced && (*forced)[0]; forced++)
        if (conf_set(conf, (*forced)[0], (*forced)[1], es, sizeof es)) goto fail;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    return conf;
fail:
    snprintf(errstr, n, "%s", es);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* ---- producer ------------------------------------------------------------ */

struct kq_producer {
    rd_kafka_t *rk;
    pthread_t poller; /* the one thread that serves its delivery reports */
    atomic_int has_poller;
};

/* The calling thread becomes the producer's poller (kq_consumer_run, or
 * the first kq_producer_poll). */
static void claim(kq_producer *p) {
    if (!atomic_load(&p->has_poller)) {
        p->poller = pthread_self();
        atomic_store(&p->has_poller, 1);
    }
}

typedef struct {
    kq_delivery_cb *cb;
    void *opaque;
} dr_ctx;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *op) {
    (void)rk;
    (void)op;
    dr_ctx *d = m->_private;
    if (!d) return;
    if (d->cb)
        d->cb(d->opaque, m->err ? URSA_ERR_KAFKA : URSA_OK,
              m->err ? rd_kafka_err2str(m->err) : "");
    free(d);
}

kq_producer *kq_producer_new(const cfg *c, const char *bootstrap, char *errstr,
                             size_t n) {
    static const conf_pair defaults[] = {{"linger.ms", "5"}, {NULL, NULL}};
    static const conf_pair forced[] = {{"enable.idempotence", "true"},
                                       {NULL, NULL}};
    rd_kafka_conf_t *conf = base_conf(c, bootstrap, defaults, forced, errstr, n);
    if (!conf) return NULL;
    char es[512];
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    kq_producer *p = calloc(1, sizeof *p);
    if (!p) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (!p->rk) {
        snprintf(errstr, n, "kafka producer: %s", es);
        rd_kafka_conf_destroy(conf);
        free(p);
        return NULL;
    }
    conf = NULL; /* now owned by rk */
    return p;
}

void kq_producer_destroy(kq_producer *p) {
    if (!p) return;
    if (rd_kafka_flush(p->rk, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        ULOG_WARN("event=producer_close undelivered=%d", rd_kafka_outq_len(p->rk));
    rd_kafka_destroy(p->rk);
    free(p);
}

ursa_err kq_produce(kq_producer *p, const char *topic, const void *key,
                    size_t keylen, const void *value, size_t len,
                    const kq_header *hdrs, size_t nhdrs, kq_delivery_cb *cb,
                    void *opaque) {
    dr_ctx *d = calloc(1, sizeof *d);
    if (!d) return URSA_ERR_NOMEM;
    d->cb = cb;
    d->opaque = opaque;
    rd_kafka_headers_t *h = NULL;
    if (nhdrs) {
        h = rd_kafka_headers_new(nhdrs);
        for (size_t i = 0; i < nhdrs; i++)
            rd_kafka_header_add(h, hdrs[i].name, -1, hdrs[i].value,
                                (ssize_t)hdrs[i].len);
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_KEY((void *)key, keylen),
            RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
        if (!err) return URSA_OK; /* headers now owned by the message */
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* back-pressure: wait for room, which the poller's serving of
             * delivery reports makes; only the poller polls */
            if (atomic_load(&p->has_poller) && !pthread_equal(p->poller, pthread_self()))
                util_sleep_ms(20);
            else
                rd_kafka_poll(p->rk, 100);
            continue;
        }
        ULOG_WARN("event=produce_failed topic=%s err=%s", topic,
                  rd_kafka_err2name(err));
        if (h) rd_kafka_headers_destroy(h);
        free(d);
        return URSA_ERR_KAFKA;
    }
}

int kq_producer_poll(kq_producer *p, int timeout_ms) {
    claim(p);
    return rd_kafka_poll(p->rk, timeout_ms);
}

ursa_err kq_producer_flush(kq_producer *p, int timeout_ms) {
    return rd_kafka_flush(p->rk, timeout_ms) ? URSA_ERR_TIMEOUT : URSA_OK;
}

int kq_producer_outq(kq_producer *p) { return rd_kafka_outq_len(p->rk); }
rd_kafka_t *kq_producer_rk(kq_producer *p) { return p->rk; }

/* ---- consumer ------------------------------------------------------------ */

typedef struct kq_out {
    kq_job *job;
    char *topic;
    void *key, *value;
    size_t keylen, len;
    kq_header hdrs[6];
    char hbuf[6][256];
    size_t nhdrs;
    int attempts;
    int queued;        /* handed to librdkafka, delivery report pending */
    int64_t resend_at; /* >0: failed, send again at this time */
    struct kq_out *next;
} kq_out;

struct kq_job {
    kq_consumer *kc;
    struct part *part;
    int64_t offset;
    int pending;  /* outputs not yet acknowledged */
    int queued;   /* outputs librdkafka holds (they point at this job) */
    int held;     /* kq_job_hold() calls not yet matched by kq_job_done() */
    int handled;  /* the handler is done with it */
    int abandoned; /* retry cut short by shutdown: never stored */
    int orphan;   /* its partition was revoked; freed once nothing uses it */
    kq_out *outs; /* every output, freed with the job */
    kq_job *next;
};

typedef struct part {
    char *topic;
    int32_t partition;
    kq_job *head, *tail;
    int revoked;
} part;

/* Counters logged when the loop stops. */
typedef struct {
    uint64_t handled;      /* handler returned OK */
    uint64_t retries;      /* handler calls after a failure */
    uint64_t dead_letters; /* messages sent to the dead-letter topic */
} kq_stats;

struct kq_consumer {
    rd_kafka_t *rk;
    kq_producer *producer;
    kq_handler *handler;
    void *opaque;
    char group[256], dlq[256];
    int max_attempts, max_inflight;
    int64_t backoff_ms, backoff_max_ms;
    part *parts;
    size_t nparts, capparts;
    int inflight;
    kq_stats stats;
    kq_tick *tick;
    void *tick_opaque;
    int nresend; /* outputs waiting to be sent again; 0 skips the scan */
    int paused;  /* the assignment is paused: we hold max_inflight messages */
    int revoke_wait_ms; /* how long a revoke waits for the jobs it takes away */
};

static part *part_get(kq_consumer *kc, const char *topic, int32_t partition) {
    for (size_t i = 0; i < kc->nparts; i++)
        if (kc->parts[i].partition == partition &&
            strcmp(kc->parts[i].topic, topic) == 0)
            return &kc->parts[i];
    if (kc->nparts == kc->capparts) {
        size_t cap = kc->capparts ? kc->capparts * 2 : 16;
        part *np = realloc(kc->parts, cap * sizeof *np);
        if (!np) return NULL;
        /* jobs point at their part: fix them up after the move */
        for (size_t i = 0; i < kc->nparts; i++)
            for (kq_job *j = np[i].head; j; j = j->next) j->part = &np[i];
        kc->parts = np;
        kc->capparts = cap;
    }
    part *pt = &kc->parts[kc->nparts];
    memset(pt, 0, sizeof *pt);
    if (!(pt->topic = strdup(topic))) return NULL;
    pt->partition = partition;
    kc->nparts++;
    return pt;
}

static void out_free(kq_out *o) {
    free(o->topic);
    free(o->key);
    free(o->value);
    free(o);
}

static void job_free(kq_job *j) {
    kq_out *o = j->outs;
    while (o) {
        kq_out *next = o->next;
        out_free(o);
        o = next;
    }
    free(j);
}

/* Frees an orphan once no delivery report and no holder can reach it. */
static void orphan_try_free(kq_job *j) {
    if (j->orphan && j->queued == 0 && j->held == 0) job_free(j);
}

/* Lets go of a job whose partition we no longer own (or on destroy): its
 * message will be handled again by the owner, so its effects no longer
 * matter, but its memory lives until outputs and holders are done with it. */
static void job_release(kq_job *j) {
    j->orphan = 1;
    j->kc = NULL;
    j->part = NULL;
    j->next = NULL;
    orphan_try_free(j);
}
static void out_delivered(void *opaque, ursa_err err, const char *errstr) {
    kq_out *o = opaque;
    kq_job *j = o->job;
    o->queued = 0;
    j->queued--;
    if (j->orphan) {
        orphan_try_free(j);
        return;
    }
    kq_consumer *kc = j->kc;
    if (err) {
        /* librdkafka already retried until message.timeout.ms: the cluster
         * is in trouble. Keep the offset held and send again later. */
        o->resend_at = util_mono_ms() +
                       util_backoff_ms(++o->attempts, kc->backoff_ms, kc->backoff_max_ms);
        kc->nresend++;
        ULOG_WARN("event=delivery_failed topic=%s err=\"%s\" will_resend=1",
                  o->topic, errstr);
        return;
    }
    j->pending--;
}

static ursa_err out_send(kq_out *o) {
    o->resend_at = 0;
    if (!o->job->kc) return URSA_ERR_SHUTDOWN; /* orphan: the owner redoes it */
    ursa_err err = kq_produce(o->job->kc->producer, o->topic, o->key, o->keylen,
                              o->value, o->len, o->nhdrs ? o->hdrs : NULL,
                              o->nhdrs, out_delivered, o);
    o->queued = err == URSA_OK;
    o->job->queued += o->queued;
    return err;
}

static ursa_err job_produce(kq_job *j, const char *topic, const void *key,
                            size_t keylen, const void *value, size_t len,
                            const kq_header *hdrs, size_t nhdrs) {
    kq_out *o = calloc(1, sizeof *o);
    if (!o) return URSA_ERR_NOMEM;
    o->job = j;
    o->topic = strdup(topic);
    o->key = malloc(keylen ? keylen : 1);
    o->value = malloc(len ? len : 1);
    if (!o->topic || !o->key || !o->value) {
        free(o->topic);
        free(o->key);
        free(o->value);
        free(o);
        return URSA_ERR_NOMEM;
    }
    if (keylen) memcpy(o->key, key, keylen);
    if (len) memcpy(o->value, value, len);
    o->keylen = keylen;
    o->len = len;
    for (size_t i = 0; i < nhdrs && i < 6; i++) {
        snprintf(o->hbuf[i], sizeof o->hbuf[i], "%.*s", (int)hdrs[i].len,
                 (const char *)hdrs[i].value);
        o->hdrs[i].name = hdrs[i].name; /* static strings */
        o->hdrs[i].value = o->hbuf[i];
        o->hdrs[i].len = strlen(o->hbuf[i]);
        o->nhdrs++;
    }
    o->next = j->outs;
    j->outs = o;
    j->pending++;
    ursa_err err = out_send(o);
    if (err && j->kc) { /* could not even queue it: try again later */
        o->resend_at = util_mono_ms() + j->kc->backoff_ms;
        j->kc->nresend++;
    }
    return URSA_OK;
}

ursa_err kq_job_produce(kq_job *job, const char *topic, const void *key,
                        size_t keylen, const void *value, size_t len) {
    return job_produce(job, topic, key, keylen, value, len, NULL, 0);
}

void kq_job_hold(kq_job *job) { job->held++; }

int kq_job_orphaned(const kq_job *job) { return job->orphan; }

void kq_job_abandon(kq_job *job) {
    job->abandoned = 1;
    kq_job_done(job);
}

void kq_job_done(kq_job *job) {
    job->held--;
    orphan_try_free(job);
}

/* Sends again the outputs whose delivery failed, once their time comes. */
static void resend_due(kq_consumer *kc) {
    if (!kc->nresend) return;
    int64_t now = util_mono_ms();
    int waiting = 0;
    kc->nresend = 0; /* failures reported during the scan add to this */
    for (size_t i = 0; i < kc->nparts; i++)
        for (kq_job *j = kc->parts[i].head; j; j = j->next)
            for (kq_out *o = j->outs; o; o = o->next) {
                if (!o->resend_at) continue;
                if (o->resend_at <= now && out_send(o) != URSA_OK)
                    o->resend_at = now + kc->backoff_max_ms;
                waiting += o->resend_at != 0;
            }
    kc->nresend += waiting; /* recount: forgotten jobs took theirs along */
}

/* Pops finished jobs from the head of every partition's queue and stores the
 * offset after the last one. */
static void store_done(kq_consumer *kc) {
    for (size_t i = 0; i < kc->nparts; i++) {
        part *pt = &kc->parts[i];
        int64_t next = -1;
        while (pt->head && pt->head->handled && pt->head->pending == 0 &&
               pt->head->held == 0 && !pt->head->abandoned) {
            kq_job *j = pt->head;
            next = j->offset + 1;
            pt->head = j->next;
            if (!pt->head) pt->tail = NULL;
            job_free(j);
            kc->inflight--;
        }
        if (next < 0 || pt->revoked) continue;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, pt->topic, pt->partition)->offset = next;
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(kc->rk, l);
        if (err || l->elems[0].err)
            ULOG_DEBUG("event=offset_store_skipped topic=%s partition=%d err=%s",
                       pt->topic, pt->partition,
                       rd_kafka_err2name(err ? err : l->elems[0].err));
        rd_kafka_topic_partition_list_destroy(l);
    }
}

/* Waits until no job of the matching partitions (all when l is NULL) has
 * outputs in flight, or timeout_ms passes, storing offsets as it goes.
 * Returns the number of jobs still waiting for their outputs. */
static int drain(kq_consumer *kc, const rd_kafka_topic_partition_list_t *l,
                 int timeout_ms) {
    int64_t deadline = util_mono_ms() + timeout_ms;
    for (;;) {
        if (kc->tick) {
            rd_kafka_poll(kc->producer->rk, 0);
            kc->tick(kc->tick_opaque, 20);
        } else {
            rd_kafka_poll(kc->producer->rk, 20);
        }
        resend_due(kc);
        store_done(kc);
        int left = 0;
        for (size_t i = 0; i < kc->nparts; i++) {
            part *pt = &kc->parts[i];
            if (!pt->head) continue;
            if (l) {
                int match = 0;
                for (int k = 0; k < l->cnt && !match; k++)
                    match = l->elems[k].partition == pt->partition &&
                            strcmp(l->elems[k].topic, pt->topic) == 0;
                if (!match) continue;
            }
            for (kq_job *j = pt->head; j; j = j->next) left += j->pending > 0 || j->held > 0;
        }
        if (!left || util_mono_ms() >= deadline) return left;
    }
}

/* Forgets the jobs of partitions we no longer own: their messages will be
 * delivered again to the new owner, whose handling is idempotent. */
static void forget(kq_consumer *kc, const rd_kafka_topic_partition_list_t *l) {
    for (int k = 0; k < l->cnt; k++) {
        part *pt = NULL;
        for (size_t i = 0; i < kc->nparts && !pt; i++)
            if (kc->parts[i].partition == l->elems[k].partition &&
                strcmp(kc->parts[i].topic, l->elems[k].topic) == 0)
                pt = &kc->parts[i];
        if (!pt) continue;
        while (pt->head) {
            kq_job *j = pt->head;
            pt->head = j->next;
            kc->inflight--;
            job_release(j);
        }
        pt->tail = NULL;
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *l, void *opaque) {
    kq_consumer *kc = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char parts[512];
    size_t o = 0;
    parts[0] = '\0';
    for (int i = 0; i < l->cnt && o + 40 < sizeof parts; i++)
        o += (size_t)snprintf(parts + o, sizeof parts - o, "%s%s[%d]",
                              i ? "," : "", l->elems[i].topic, l->elems[i].partition);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        ULOG_INFO("event=partitions_assigned group=%s partitions=%s", kc->group, parts);
        for (int i = 0; i < l->cnt; i++) {
            part *pt = part_get(kc, l->elems[i].topic, l->elems[i].partition);
            if (pt) pt->revoked = 0;
        }
        if (coop) rd_kafka_incremental_assign(rk, l);
        else rd_kafka_assign(rk, l);
        /* librdkafka remembers a pause on a partition across assignments:
         * start every assigned one fetching; the loop pauses them again if
         * we are still full */
        rd_kafka_resume_partitions(rk, l);
        kc->paused = 0;
        return;
    }
    ULOG_INFO("event=partitions_revoked group=%s partitions=%s", kc->group, parts);
    if (!rd_kafka_assignment_lost(rk)) {
        int left = drain(kc, l, kc->revoke_wait_ms);
        if (left)
            ULOG_WARN("event=revoke_with_pending jobs=%d "
                      "note=\"they will be handled again by the new owner\"", left);
        rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
        if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            ULOG_WARN("event=commit_failed err=%s", rd_kafka_err2name(cerr));
    }
    for (int i = 0; i < l->cnt; i++) {
        part *pt = part_get(kc, l->elems[i].topic, l->elems[i].partition);
        if (pt) pt->revoked = 1;
    }
    forget(kc, l);
    if (coop) rd_kafka_incremental_unassign(rk, l);
    else rd_kafka_assign(rk, NULL);
}

kq_consumer *kq_consumer_new(const cfg *c, const char *bootstrap,
                             const char *group, const char *const *topics,
                             kq_producer *producer, kq_handler *handler,
                             void *opaque, char *errstr, size_t n) {
    kq_consumer *kc = calloc(1, sizeof *kc);
    if (!kc) return NULL;
    kc->producer = producer;
    kc->handler = handler;
    kc->opaque = opaque;
    snprintf(kc->group, sizeof kc->group, "%s", group);
    topics_dlq_name(group, kc->dlq, sizeof kc->dlq);
    kc->max_attempts = c ? (int)cfg_int(c, "kq.max-attempts") : 5;
    kc->max_inflight = c ? (int)cfg_int(c, "kq.max-inflight") : 1000;
    kc->backoff_ms = c ? cfg_int(c, "kq.backoff-ms") : 100;
    kc->backoff_max_ms = c ? cfg_int(c, "kq.backoff-max-ms") : 5000;
    kc->revoke_wait_ms = 30000;

    /* session.timeout.ms 6000 (the smallest a real broker allows by
     * default): a SIGKILLed worker's partitions move on after 6 s, and the
     * mock broker, which holds a rebalance for session timeout - 1 s after a
     * member leaves, lets a restarted worker in after 5 s instead of 44. */
    static const conf_pair defaults[] = {{"auto.offset.reset", "earliest"},
                                         {"enable.auto.commit", "true"},
                                         {"auto.commit.interval.ms", "1000"},
                                         {"session.timeout.ms", "6000"},
                                         {"heartbeat.interval.ms", "1500"},
                                         {NULL, NULL}};
    const conf_pair forced[] = {{"group.id", group},
                                {"enable.auto.offset.store", "false"},
                                {NULL, NULL}};
    char es[512];
    rd_kafka_conf_t *conf = base_conf(c, bootstrap, defaults, forced, errstr, n);
    if (!conf) goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, kc);
    kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof es);
    if (!kc->rk) goto conf_fail;
    conf = NULL; /* now owned by rk */
    rd_kafka_poll_set_consumer(kc->rk);

    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(4);
    for (size_t i = 0; topics[i]; i++)
        rd_kafka_topic_partition_list_add(sub, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(kc->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        snprintf(errstr, n, "subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return kc;
conf_fail:
    snprintf(errstr, n, "kafka consumer: %s", es);
    if (conf) rd_kafka_conf_destroy(conf);
fail:
    kq_consumer_destroy(kc);
    return NULL;
}

void kq_consumer_destroy(kq_consumer *kc) {
    if (!kc) return;
    if (kc->rk) rd_kafka_destroy(kc->rk);
    for (size_t i = 0; i < kc->nparts; i++) {
        part *pt = &kc->parts[i];
        while (pt->head) {
            kq_job *j = pt->head;
            pt->head = j->next;
            job_release(j);
        }
        free(pt->topic);
    }
    free(kc->parts);
    free(kc);
}

void kq_consumer_set_revoke_wait_ms(kq_consumer *kc, int ms) { kc->revoke_wait_ms = ms; }

/* Pauses (or resumes) every partition we own. A paused consumer still polls,
 * so it keeps its group membership and serves rebalances however long its
 * work takes; messages fetched before the pause are dropped by librdkafka
 * and fetched again from our position on resume. */
static void pause_all(kq_consumer *kc, int pause) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(kc->rk, &l) == RD_KAFKA_RESP_ERR_NO_ERROR && l) {
        if (l->cnt) {
            rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(kc->rk, l)
                                            : rd_kafka_resume_partitions(kc->rk, l);
            if (err) ULOG_WARN("event=%s_failed err=%s", pause ? "pause" : "resume",
                               rd_kafka_err2name(err));
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    kc->paused = pause;
}

void kq_consumer_set_tick(kq_consumer *kc, kq_tick *tick, void *opaque) {
    kc->tick = tick;
    kc->tick_opaque = opaque;
}

static ursa_err dead_letter(kq_consumer *kc, kq_job *j, const rd_kafka_message_t *m,
                            const char *reason, int attempts) {
    char att[16], part_s[16], off[24];
    snprintf(att, sizeof att, "%d", attempts);
    snprintf(part_s, sizeof part_s, "%d", m->partition);
    snprintf(off, sizeof off, "%lld", (long long)m->offset);
    const char *topic = rd_kafka_topic_name(m->rkt);
    kq_header h[6] = {
        {"ursa.dlq.reason", reason, strlen(reason)},
        {"ursa.dlq.attempts", att, strlen(att)},
        {"ursa.dlq.topic", topic, strlen(topic)},
        {"ursa.dlq.partition", part_s, strlen(part_s)},
        {"ursa.dlq.offset", off, strlen(off)},
        {"ursa.dlq.group", kc->group, strlen(kc->group)},
    };
    char q[600];
    ULOG_WARN("event=dead_letter topic=%s partition=%d offset=%lld attempts=%d "
              "dlq=%s reason=%s",
              topic, m->partition, (long long)m->offset, attempts, kc->dlq,
              ulog_quote(q, sizeof q, reason));
    kc->stats.dead_letters++;
    return job_produce(j, kc->dlq, m->key, m->key_len, m->payload, m->len, h, 6);
}

/* Runs the handler on one message with the retry rules; the job is queued on
 * its partition before, so its offset waits for its outputs. */
static void handle(kq_consumer *kc, const rd_kafka_message_t *m,
                   atomic_int *run) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    part *pt = part_get(kc, topic, m->partition);
    kq_job *j = calloc(1, sizeof *j);
    while ((!pt || !j) && *run) { /* out of memory: wait rather than skip it */
        ULOG_ERROR("event=oom topic=%s offset=%lld", topic, (long long)m->offset);
        util_sleep_ms(1000);
        if (!pt) pt = part_get(kc, topic, m->partition);
        if (!j) j = calloc(1, sizeof *j);
    }
    if (!pt || !j) { /* shutting down: nothing after it is stored either */
        free(j);
        return;
    }
    j->kc = kc;
    j->part = pt;
    j->offset = m->offset;
    if (pt->tail) pt->tail->next = j;
    else pt->head = j;
    pt->tail = j;
    kc->inflight++;

    kq_msg km = {topic, m->partition, m->offset, m->key, m->key_len,
                 m->payload, m->len, 0};
    char reason[512];
    int failures = 0; /* failures that count towards dead-lettering */
    for (int attempt = 1;; attempt++) {
        km.attempt = attempt;
        reason[0] = '\0';
        if (attempt > 1) kc->stats.retries++;
        ursa_err err = kc->handler(kc->opaque, &km, j, reason, sizeof reason);
        if (err == URSA_OK) {
            kc->stats.handled++;
            break;
        }
        if (!reason[0]) snprintf(reason, sizeof reason, "%s", ursa_err2str(err));
        if (err != URSA_ERR_UNAVAILABLE) failures++;
        if (!ursa_err_retriable(err) || failures >= kc->max_attempts) {
            dead_letter(kc, j, m, reason, attempt);
            break;
        }
        int64_t wait = util_backoff_ms(err == URSA_ERR_UNAVAILABLE ? attempt : failures,
                                       kc->backoff_ms, kc->backoff_max_ms);
        char q[600];
        ULOG_WARN("event=handler_retry topic=%s partition=%d offset=%lld attempt=%d "
                  "err=\"%s\" reason=%s wait_ms=%lld",
                  topic, m->partition, (long long)m->offset, attempt,
                  ursa_err2str(err), ulog_quote(q, sizeof q, reason), (long long)wait);
        int64_t until = util_mono_ms() + wait;
        while (*run && util_mono_ms() < until) {
            rd_kafka_poll(kc->producer->rk, kc->tick ? 0 : 20);
            if (kc->tick) kc->tick(kc->tick_opaque, 20);
            resend_due(kc);
        }
        if (!*run) {
            /* Shutting down mid-retry: leave the message unstored so it is
             * delivered again, and keep everything behind it unstored too. */
            ULOG_INFO("event=retry_abandoned_for_shutdown topic=%s offset=%lld",
                      topic, (long long)m->offset);
            j->abandoned = 1;
            break;
        }
    }
    j->handled = 1;
}

ursa_err kq_consumer_run(kq_consumer *kc, atomic_int *run) {
    ursa_err ret = URSA_OK;
    ULOG_INFO("event=consumer_started group=%s dlq=%s", kc->group, kc->dlq);
    claim(kc->producer);
    while (*run) {
        rd_kafka_poll(kc->producer->rk, 0);
        int busy = kc->tick ? kc->tick(kc->tick_opaque, 0) : 0;
        resend_due(kc);
        store_done(kc);
        int full = kc->inflight >= kc->max_inflight; /* bound what we hold */
        if (full != kc->paused) pause_all(kc, full);
        if (full) {
            if (kc->tick) kc->tick(kc->tick_opaque, 20);
            else rd_kafka_poll(kc->producer->rk, 50);
        }
        /* poll even when full: a rebalance or a long job must not cost us
         * the group (max.poll.interval.ms). A message fetched just before
         * the pause may still come; it is handled, one over the bound. */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(kc->rk, busy || full ? 0 : 100);
        if (!m) {
            if (busy) kc->tick(kc->tick_opaque, 5);
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                ULOG_WARN("event=consume_error err=%s msg=\"%s\"",
                          rd_kafka_err2name(m->err), rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            char fe[512];
            if (rd_kafka_fatal_error(kc->rk, fe, sizeof fe)) {
                ULOG_ERROR("event=kafka_fatal err=\"%s\"", fe);
                ret = URSA_ERR_KAFKA;
                break;
            }
            continue;
        }
        handle(kc, m, run);
        rd_kafka_message_destroy(m);
    }
    ULOG_INFO("event=consumer_stopping group=%s inflight=%d", kc->group, kc->inflight);
    int left = drain(kc, NULL, 30000);
    if (left) ULOG_WARN("event=stopped_with_pending jobs=%d", left);
    rd_kafka_resp_err_t cerr = rd_kafka_commit(kc->rk, NULL, 0);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ULOG_WARN("event=commit_failed err=%s", rd_kafka_err2name(cerr));
    rd_kafka_consumer_close(kc->rk);
    ULOG_INFO("event=consumer_stopped group=%s handled=%llu retries=%llu dead_letters=%llu",
              kc->group, (unsigned long long)kc->stats.handled,
              (unsigned long long)kc->stats.retries,
              (unsigned long long)kc->stats.dead_letters);
    return ret;
}
