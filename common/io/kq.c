/* kq.c: the producer and the consumer-group loop; the rules are in kq.h.
 *
 * Everything below runs on the caller's thread: librdkafka calls the delivery
 * and rebalance callbacks from inside rd_kafka_poll() and
 * rd_kafka_consumer_poll(), so the job lists need no locks, as long as a
 * producer has one polling thread (kq.h, "Threads"). */
#include "kq.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "sha256.h"
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
    int flush_ms; /* kq.flush-ms: how long destroy waits for deliveries */
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

/* Errors no retry can fix: the broker or librdkafka refuses this message
 * itself (too large, malformed, not allowed), not the cluster's state. */
static int err_permanent(rd_kafka_resp_err_t e) {
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

static ursa_err err_map(rd_kafka_resp_err_t e) {
    if (!e) return URSA_OK;
    if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || e == RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE ||
        e == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE)
        return URSA_ERR_TOO_LARGE;
    return err_permanent(e) ? URSA_ERR_PERMANENT : URSA_ERR_KAFKA;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *op) {
    (void)rk;
    (void)op;
    dr_ctx *d = m->_private;
    if (!d) return;
    if (d->cb) d->cb(d->opaque, err_map(m->err), m->err ? rd_kafka_err2str(m->err) : "");
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
    p->flush_ms = c ? (int)cfg_int(c, "kq.flush-ms") : 10000;
    return p;
}

void kq_producer_destroy(kq_producer *p) {
    if (!p) return;
    if (rd_kafka_flush(p->rk, p->flush_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        ULOG_WARN("event=producer_close undelivered=%d waited_ms=%d "
                  "note=\"what they carried is redone: their sources were not acknowledged\"",
                  rd_kafka_outq_len(p->rk), p->flush_ms);
    /* a dead broker must not hold the exit: drop what is left (its sources
     * were not acknowledged, so it is produced again after the restart) */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
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
        ULOG_WARN("event=produce_failed topic=%s err=%s bytes=%zu", topic,
                  rd_kafka_err2name(err), keylen + len);
        if (h) rd_kafka_headers_destroy(h);
        free(d);
        return err_map(err);
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

enum { KQ_MAX_HDRS = 10, KQ_SUMMARY_BYTES = 1024 };

typedef struct kq_out {
    kq_job *job;
    char *topic;
    void *key, *value;
    size_t keylen, len;
    kq_header hdrs[KQ_MAX_HDRS];
    char hbuf[KQ_MAX_HDRS][256];
    size_t nhdrs;
    int attempts;
    int summary;       /* a dead letter cut down to what identifies its message */
    int queued;        /* handed to librdkafka, delivery report pending */
    int64_t resend_at; /* >0: failed, send again at this time */
    struct kq_out *next;
} kq_out;

struct kq_job {
    kq_consumer *kc;
    struct part *part;
    int32_t partition;
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
    int64_t seen_to; /* 1 + the highest offset handed to the handler; 0: none */
    /* what we know is done: every message below done_to had all its effects
     * (the offset stored for the next commit), as of its revoke at
     * revoked_at (0: owned now, or never) */
    int64_t done_to, revoked_at;
    metrics_series *handled, *dead; /* its topic's counters */
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
    size_t max_msg_bytes; /* kq.max-message-bytes: bigger input is refused unread */
    int drain_ms;         /* kq.drain-ms: how long a stop waits for effects */
    int stopping;
    int closed; /* left the group: destroy need not close again */
    atomic_int intake_paused; /* kq_consumer_pause_intake() */
    int64_t backoff_ms, backoff_max_ms;
    part *parts;
    size_t nparts, capparts;
    int inflight;
    kq_stats stats;
    kq_tick *tick;
    void *tick_opaque;
    int nresend; /* outputs waiting to be sent again; 0 skips the scan */
    int paused;  /* the assignment is paused: over_bound() */
    int open;    /* messages not finished: over_bound()'s last count, and one
                  * more for each message taken since */
    int64_t open_at;
    int revoke_wait_ms; /* how long a revoke waits for the jobs it takes away */
    /* metrics (metrics.h): messages handled and dead-lettered by topic (the
     * series hang on each part), failed attempts by error class, what is in
     * flight, and the lag of the assigned partitions by subscribed topic */
    metrics_family *m_handled, *m_dead, *m_failed;
    metrics_series *m_inflight;
    struct {
        char *topic;
        metrics_series *s;
    } lag[8];
    int nlag;
    int64_t lag_at;
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
    pt->handled = metrics_with(kc->m_handled, topic);
    pt->dead = metrics_with(kc->m_dead, topic);
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
static void out_refused(kq_out *o, const char *why);

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
    if (err == URSA_ERR_PERMANENT || err == URSA_ERR_TOO_LARGE) {
        out_refused(o, errstr);
        return;
    }
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

/* Hands an output to librdkafka; one it could not take is tried again
 * later, one it can never take is refused at once. */
static void out_start(kq_out *o) {
    ursa_err err = out_send(o);
    kq_consumer *kc = o->job->kc;
    if (err == URSA_ERR_PERMANENT || err == URSA_ERR_TOO_LARGE) {
        out_refused(o, ursa_err2str(err));
    } else if (err && kc) {
        o->resend_at = util_mono_ms() + kc->backoff_ms;
        kc->nresend++;
    }
}

static void out_header(kq_out *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void out_header(kq_out *o, const char *name, const char *fmt, ...) {
    if (o->nhdrs >= KQ_MAX_HDRS) return;
    size_t i = o->nhdrs++;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->hbuf[i], sizeof o->hbuf[i], fmt, ap);
    va_end(ap);
    o->hdrs[i].name = name; /* static strings */
    o->hdrs[i].value = o->hbuf[i];
    o->hdrs[i].len = strlen(o->hbuf[i]);
}

/* Cuts an output down to a dead letter that cannot be too large: its first
 * KQ_SUMMARY_BYTES of key and value, and headers with its full size and
 * SHA-256 (ursa.dlq.truncated=1 says it cannot be replayed as is). An
 * ordinary output that the cluster refused becomes one, with the reason. */
static void summarize(kq_out *o, const char *why) {
    kq_job *j = o->job;
    kq_consumer *kc = j->kc;
    char sha[65];
    sha256_hex(o->value, o->len, sha);
    size_t size = o->keylen + o->len;
    if (!o->nhdrs) { /* an ordinary output: it gets the dead-letter headers */
        out_header(o, "ursa.dlq.reason", "produce to %s refused: %s", o->topic, why);
        out_header(o, "ursa.dlq.attempts", "%d", o->attempts + 1);
        out_header(o, "ursa.dlq.topic", "%s", j->part ? j->part->topic : "?");
        out_header(o, "ursa.dlq.partition", "%d", j->partition);
        out_header(o, "ursa.dlq.offset", "%lld", (long long)j->offset);
        out_header(o, "ursa.dlq.group", "%s", kc->group);
        out_header(o, "ursa.dlq.output-topic", "%s", o->topic);
    }
    out_header(o, "ursa.dlq.truncated", "1");
    out_header(o, "ursa.dlq.size", "%zu", size);
    out_header(o, "ursa.dlq.sha256", "%s", sha);
    if (o->keylen > KQ_SUMMARY_BYTES) o->keylen = KQ_SUMMARY_BYTES;
    if (o->len > KQ_SUMMARY_BYTES) o->len = KQ_SUMMARY_BYTES;
    if (strcmp(o->topic, kc->dlq) != 0) {
        char *t = strdup(kc->dlq);
        if (t) {
            free(o->topic);
            o->topic = t;
        }
    }
    o->summary = 1;
}

/* An output the cluster refuses for good: it must not hold its partition.
 * It goes on as a summary dead letter; a summary refused too is logged with
 * everything that identifies it, and let go: never silently. */
static void out_refused(kq_out *o, const char *why) {
    kq_job *j = o->job;
    kq_consumer *kc = j->kc;
    char q[300];
    if (o->summary || !kc) {
        ULOG_ERROR("event=message_lost topic=%s bytes=%zu why=%s source=%s[%d]@%lld",
                   o->topic, o->keylen + o->len, ulog_quote(q, sizeof q, why),
                   j->part ? j->part->topic : "?", j->partition, (long long)j->offset);
        j->pending--;
        return;
    }
    ULOG_WARN("event=output_refused topic=%s bytes=%zu why=%s dlq=%s note=\"sent as a "
              "summary\"",
              o->topic, o->keylen + o->len, ulog_quote(q, sizeof q, why), kc->dlq);
    summarize(o, why);
    out_start(o);
}

/* A new output of job j; hdrs (at most KQ_MAX_HDRS) hold short strings. */
static kq_out *out_new(kq_job *j, const char *topic, const void *key, size_t keylen,
                       const void *value, size_t len, const kq_header *hdrs,
                       size_t nhdrs) {
    kq_out *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->job = j;
    o->topic = strdup(topic);
    o->key = malloc(keylen ? keylen : 1);
    o->value = malloc(len ? len : 1);
    if (!o->topic || !o->key || !o->value) {
        out_free(o);
        return NULL;
    }
    if (keylen) memcpy(o->key, key, keylen);
    if (len) memcpy(o->value, value, len);
    o->keylen = keylen;
    o->len = len;
    for (size_t i = 0; i < nhdrs; i++)
        out_header(o, hdrs[i].name, "%.*s", (int)hdrs[i].len, (const char *)hdrs[i].value);
    o->next = j->outs;
    j->outs = o;
    j->pending++;
    return o;
}

static ursa_err job_produce(kq_job *j, const char *topic, const void *key,
                            size_t keylen, const void *value, size_t len,
                            const kq_header *hdrs, size_t nhdrs) {
    kq_out *o = out_new(j, topic, key, keylen, value, len, hdrs, nhdrs);
    if (!o) return URSA_ERR_NOMEM;
    out_start(o);
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
        pt->done_to = next;
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

/* Waits up to ms for background work or delivery reports, and really
 * waits: a tick with nothing to wait on returns at once, and spinning on it
 * would burn a core (retry waits did). */
static void idle(kq_consumer *kc, int ms) {
    int64_t t0 = util_mono_ms();
    rd_kafka_poll(kc->producer->rk, 0);
    if (kc->tick) kc->tick(kc->tick_opaque, ms);
    int64_t left = ms - (util_mono_ms() - t0);
    if (left > 0) rd_kafka_poll(kc->producer->rk, (int)left);
}

/* Waits until no job of the matching partitions (all when l is NULL) has
 * outputs in flight, or timeout_ms passes, storing offsets as it goes.
 * Returns the number of jobs still waiting for their outputs. */
static int drain(kq_consumer *kc, const rd_kafka_topic_partition_list_t *l,
                 int timeout_ms) {
    int64_t deadline = util_mono_ms() + timeout_ms;
    for (;;) {
        idle(kc, 20);
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

/* A partition given back soon after we gave it up (a rebalance forced by a
 * failed commit, say) starts where our own work ended, not at the group's
 * committed offset, when that is behind: a commit that failed, and fails
 * again in each rebalance it forces, would otherwise hand out the whole
 * backlog again each time. Ours is only trusted this long after the
 * revoke; another owner's commit since then wins when it is ahead. */
enum { RESUME_WINDOW_MS = 120000, LOST_DRAIN_MS = 3000 };

static void resume_from_done(kq_consumer *kc, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *l) {
    int64_t now = util_mono_ms();
    rd_kafka_topic_partition_list_t *ours = rd_kafka_topic_partition_list_new(l->cnt);
    for (int i = 0; i < l->cnt; i++) {
        part *pt = part_get(kc, l->elems[i].topic, l->elems[i].partition);
        if (pt && pt->revoked_at && now - pt->revoked_at < RESUME_WINDOW_MS && pt->done_to > 0)
            rd_kafka_topic_partition_list_add(ours, pt->topic, pt->partition);
    }
    /* the group's committed offsets, to keep another owner's progress */
    rd_kafka_resp_err_t cerr = ours->cnt ? rd_kafka_committed(rk, ours, 2000)
                                         : RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int k = 0; k < ours->cnt; k++) {
        part *pt = part_get(kc, ours->elems[k].topic, ours->elems[k].partition);
        int64_t committed = cerr || ours->elems[k].err ? -1 : ours->elems[k].offset;
        if (!pt || committed >= pt->done_to) continue;
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].partition == pt->partition && !strcmp(l->elems[i].topic, pt->topic))
                l->elems[i].offset = pt->done_to;
        ULOG_INFO("event=resume_from_done group=%s topic=%s partition=%d offset=%lld "
                  "committed=%lld note=\"the last commit failed; not handing out again what "
                  "is done\"", kc->group, pt->topic, pt->partition, (long long)pt->done_to,
                  (long long)committed);
    }
    rd_kafka_topic_partition_list_destroy(ours);
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
        resume_from_done(kc, rk, l);
        for (int i = 0; i < l->cnt; i++) {
            part *pt = part_get(kc, l->elems[i].topic, l->elems[i].partition);
            if (pt) pt->revoked_at = 0;
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
    int lost = rd_kafka_assignment_lost(rk);
    /* what is under way finishes first, so that its effects are there and
     * nobody (the next owner may be us) does it again; a lost assignment
     * may have a new owner already, whose work would be done twice (and is
     * idempotent): a short wait only */
    int left = drain(kc, l, kc->stopping ? 0 : lost ? LOST_DRAIN_MS : kc->revoke_wait_ms);
    if (left)
        ULOG_WARN("event=revoke_with_pending jobs=%d lost=%d "
                  "note=\"they will be handled again by the new owner\"", left, lost);
    if (!lost) {
        /* a stop must not wait on a dead coordinator: commit asynchronously */
        rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, kc->stopping);
        if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            ULOG_WARN("event=commit_failed err=%s", rd_kafka_err2name(cerr));
    }
    for (int i = 0; i < l->cnt; i++) { /* lost or not: what is done stays done */
        part *pt = part_get(kc, l->elems[i].topic, l->elems[i].partition);
        if (pt) pt->revoked = 1, pt->revoked_at = util_mono_ms();
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
    if (!kc) {
        snprintf(errstr, n, "out of memory");
        return NULL;
    }
    kc->producer = producer;
    kc->handler = handler;
    kc->opaque = opaque;
    snprintf(kc->group, sizeof kc->group, "%s", group);
    kq_dlq_name(group, kc->dlq, sizeof kc->dlq);
    kc->max_attempts = c ? (int)cfg_int(c, "kq.max-attempts") : 5;
    kc->max_inflight = c ? (int)cfg_int(c, "kq.max-inflight") : 1000;
    kc->backoff_ms = c ? cfg_int(c, "kq.backoff-ms") : 100;
    kc->backoff_max_ms = c ? cfg_int(c, "kq.backoff-max-ms") : 5000;
    kc->revoke_wait_ms = 30000;
    kc->max_msg_bytes = c ? (size_t)cfg_int(c, "kq.max-message-bytes") : 1000000;
    kc->drain_ms = c ? (int)cfg_int(c, "kq.drain-ms") : 5000;
    kc->m_handled = metrics_counter("messages_handled_total",
                                    "Consumed messages whose handler succeeded, by topic.",
                                    "topic");
    kc->m_dead = metrics_counter("messages_dead_lettered_total",
                                 "Consumed messages sent to the dead-letter topic, by topic.",
                                 "topic");
    kc->m_failed = metrics_counter("message_failures_total",
                                   "Handler attempts that failed, by error class (every retry "
                                   "counts; see the log for each reason).",
                                   "reason");
    kc->m_inflight = metrics_with(
        metrics_gauge("messages_in_flight",
                      "Consumed messages being worked on or waiting for their offsets, by group.",
                      "group"),
        group);
    metrics_family *lag = metrics_gauge(
        "consumer_lag",
        "Messages of this instance's partitions not consumed yet (last high watermark minus "
        "position), by topic.",
        "topic");
    for (size_t i = 0; topics[i] && kc->nlag < (int)(sizeof kc->lag / sizeof kc->lag[0]); i++) {
        if (!(kc->lag[kc->nlag].topic = strdup(topics[i]))) {
            snprintf(errstr, n, "out of memory");
            goto fail;
        }
        kc->lag[kc->nlag++].s = metrics_with(lag, topics[i]);
    }

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
    for (int i = 0; i < kc->nlag; i++) free(kc->lag[i].topic);
    /* after a close that timed out, destroy must not try again and block */
    if (kc->rk)
        rd_kafka_destroy_flags(kc->rk, kc->closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
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

void kq_consumer_pause_intake(kq_consumer *kc, int pause) {
    atomic_store(&kc->intake_paused, pause);
}

void kq_consumer_set_tick(kq_consumer *kc, kq_tick *tick, void *opaque) {
    kc->tick = tick;
    kc->tick_opaque = opaque;
}

/* Sends a consumed message to the group's dead-letter topic, whole when it
 * fits (so it can be replayed as is), else as a summary (see summarize). */
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
    int whole = m->key_len + m->len + 4096 <= kc->max_msg_bytes;
    ULOG_WARN("event=dead_letter topic=%s partition=%d offset=%lld attempts=%d "
              "dlq=%s bytes=%zu whole=%d reason=%s",
              topic, m->partition, (long long)m->offset, attempts, kc->dlq,
              m->key_len + m->len, whole, ulog_quote(q, sizeof q, reason));
    kc->stats.dead_letters++;
    metrics_add(j->part ? j->part->dead : NULL, 1);
    kq_out *o = out_new(j, kc->dlq, m->key, m->key_len, m->payload, m->len, h, 6);
    if (!o) return URSA_ERR_NOMEM;
    if (!whole) summarize(o, reason);
    out_start(o);
    return URSA_OK;
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
    j->partition = m->partition;
    j->offset = m->offset;
    if (pt->tail) pt->tail->next = j;
    else pt->head = j;
    pt->tail = j;
    kc->inflight++;
    kc->open++;

    if (m->key_len + m->len > kc->max_msg_bytes) { /* refused before parsing */
        char why[160];
        snprintf(why, sizeof why, "message of %zu bytes is over kq.max-message-bytes (%zu)",
                 m->key_len + m->len, kc->max_msg_bytes);
        dead_letter(kc, j, m, why, 1);
        j->handled = 1;
        return;
    }
    kq_msg km = {topic, m->partition, m->offset, m->key, m->key_len,
                 m->payload, m->len, 0, m->offset < pt->seen_to};
    if (m->offset >= pt->seen_to) pt->seen_to = m->offset + 1;
    char reason[512];
    int failures = 0; /* failures that count towards dead-lettering */
    for (int attempt = 1;; attempt++) {
        km.attempt = attempt;
        reason[0] = '\0';
        if (attempt > 1) kc->stats.retries++;
        ursa_err err = kc->handler(kc->opaque, &km, j, reason, sizeof reason);
        if (err == URSA_OK) {
            kc->stats.handled++;
            metrics_add(pt->handled, 1);
            break;
        }
        metrics_add(metrics_with(kc->m_failed, ursa_err2str(err)), 1);
        if (!reason[0]) snprintf(reason, sizeof reason, "%s", ursa_err2str(err));
        int outage = err == URSA_ERR_UNAVAILABLE || err == URSA_ERR_NO_SPACE;
        if (!outage) failures++;
        if (!ursa_err_retriable(err) || failures >= kc->max_attempts) {
            dead_letter(kc, j, m, reason, attempt);
            break;
        }
        int64_t wait = util_backoff_ms(outage ? attempt : failures,
                                       kc->backoff_ms, kc->backoff_max_ms);
        char q[600];
        ULOG_WARN("event=handler_retry topic=%s partition=%d offset=%lld attempt=%d "
                  "err=\"%s\" reason=%s wait_ms=%lld",
                  topic, m->partition, (long long)m->offset, attempt,
                  ursa_err2str(err), ulog_quote(q, sizeof q, reason), (long long)wait);
        int64_t until = util_mono_ms() + wait;
        while (*run && util_mono_ms() < until) {
            idle(kc, (int)(until - util_mono_ms() < 20 ? until - util_mono_ms() : 20));
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

/* Whether to stop taking messages: max_inflight of them are still being
 * worked on (in the handler, held, or with outputs unsent), or KQ_BACKLOG
 * times that wait for their offsets behind one that is. A slow message at
 * a partition's head so holds its own place, not every place: counting all
 * that waited for an offset let one slow host stall every download. Open
 * ones are counted again every 10 ms. */
#define KQ_BACKLOG 16
static int over_bound(kq_consumer *kc) {
    if (kc->inflight < kc->max_inflight) return 0;
    if (kc->inflight >= kc->max_inflight * KQ_BACKLOG) return 1;
    int64_t now = util_mono_ms();
    if (now - kc->open_at >= 10) {
        int open = 0;
        for (size_t i = 0; i < kc->nparts; i++)
            for (kq_job *j = kc->parts[i].head; j; j = j->next)
                open += !(j->handled && j->pending == 0 && j->held == 0 && !j->abandoned);
        kc->open = open;
        kc->open_at = now;
    }
    return kc->open >= kc->max_inflight;
}

/* Leaves the group, waiting at most ms: with the coordinator down,
 * librdkafka's own close waits about session.timeout.ms, and longer when the
 * final commit hangs. Past ms the group notices our absence by itself. */
static void close_bounded(kq_consumer *kc, int ms) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(kc->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(kc->rk, q);
    if (e) {
        ULOG_WARN("event=consumer_close_failed err=\"%s\"", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        int64_t deadline = util_mono_ms() + ms;
        while (!rd_kafka_consumer_closed(kc->rk) && util_mono_ms() < deadline)
            rd_kafka_queue_poll_callback(q, 100);
    }
    rd_kafka_queue_destroy(q);
    kc->closed = rd_kafka_consumer_closed(kc->rk);
    if (!kc->closed) ULOG_WARN("event=consumer_close_timeout waited_ms=%d", ms);
}

/* The lag of the partitions assigned to this consumer, by topic, every
 * 2 s: the high watermark of the last fetch and the position are both
 * known locally, so this asks the broker nothing. */
static void update_lag(kq_consumer *kc) {
    int64_t now = util_mono_ms();
    if (now - kc->lag_at < 2000) return;
    kc->lag_at = now;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(kc->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a) return;
    rd_kafka_position(kc->rk, a);
    for (int t = 0; t < kc->nlag; t++) {
        int64_t sum = 0, lo, hi;
        for (int i = 0; i < a->cnt; i++) {
            const rd_kafka_topic_partition_t *e = &a->elems[i];
            if (strcmp(e->topic, kc->lag[t].topic) || e->offset < 0 ||
                rd_kafka_get_watermark_offsets(kc->rk, e->topic, e->partition, &lo, &hi) ||
                hi <= e->offset)
                continue; /* nothing consumed or fetched yet: unknown, not counted */
            sum += hi - e->offset;
        }
        metrics_set(kc->lag[t].s, (double)sum);
    }
    rd_kafka_topic_partition_list_destroy(a);
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
        metrics_set(kc->m_inflight, kc->inflight);
        update_lag(kc);
        /* bound what we hold, and take nothing while the daemon cannot */
        int full = atomic_load(&kc->intake_paused) || over_bound(kc);
        if (full != kc->paused) pause_all(kc, full);
        if (full) idle(kc, 20);
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
    kc->stopping = 1;
    int left = drain(kc, NULL, kc->drain_ms);
    if (left)
        ULOG_WARN("event=stopped_with_pending jobs=%d waited_ms=%d "
                  "note=\"their messages are delivered again\"", left, kc->drain_ms);
    rd_kafka_resp_err_t cerr = rd_kafka_commit(kc->rk, NULL, 1);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ULOG_WARN("event=commit_failed err=%s", rd_kafka_err2name(cerr));
    close_bounded(kc, 4000);
    ULOG_INFO("event=consumer_stopped group=%s handled=%llu retries=%llu dead_letters=%llu",
              kc->group, (unsigned long long)kc->stats.handled,
              (unsigned long long)kc->stats.retries,
              (unsigned long long)kc->stats.dead_letters);
    return ret;
}

void kq_dlq_name(const char *group, char *out, size_t size) {
    const char *stage = strncmp(group, "ursa-", 5) == 0 ? group + 5 : group;
    snprintf(out, size, "ursa.dlq.%s", stage);
}
