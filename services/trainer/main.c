/* ursa-trainer: runs the training and lr_find jobs of ursa.train.jobs, one
 * at a time per worker; more workers take more jobs.
 *
 * Exactly once, on top of Kafka's at least once:
 *  - a job's offset is stored only when the job has ended (done, failed or
 *    cancelled in Redis): a worker killed mid-job leaves its message to be
 *    delivered again, to itself after a restart or to another worker;
 *  - a job runs only under its lease in Redis (ursa:job:<id>:lease), which
 *    the worker renews while it runs: when a rebalance hands the message to
 *    another worker while the first still trains, the second drops its
 *    copy instead of starting it again;
 *  - the job itself resumes from its last epoch's checkpoint (job.c);
 *  - Kafka may lose the message (an embedded broker's restart loses every
 *    one): every few seconds, and at start, the worker sweeps the jobs
 *    that are not final for those nobody holds a lease on, and sends them
 *    again or ends them (jobs.h, job_sweep). So a message for a job that
 *    has ended, or that another worker holds, may be dropped: should that
 *    worker die, the sweep sends the job again;
 *  - a job whose workers keep dying while they run it (out of memory)
 *    fails after trainer.max-starts such deaths, with the reason.
 * The consumer keeps polling while a job runs (its partitions paused), so a
 * job of hours never costs the worker its group membership. */
#include <limits.h>
#include <stdatomic.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "nn.h"
#include "blob.h"
#include "dataset.h"
#include "data.h"
#include "job.h"
#include "jobs.h"
#include "kq.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "rstore.h"
#include "service.h"
#include "statedir.h"
#include "topics.h"
#include "util.h"

static const char usage[] =
    "usage: ursa-trainer [settings]\n"
    "Runs the jobs of ursa.train.jobs (submitted by `ursa train`, `ursa lr-find` and\n"
    "`ursa audit`),\n"
    "one at a time: snapshots the dataset, trains in stages with one-cycle, writes a\n"
    "checkpoint after every epoch (a restarted worker resumes from it), then exports\n"
    "the model to the blob store, registers it in Redis with the interpretation of its\n"
    "validation set and announces it on ursa.models.published. Stops cleanly on\n"
    "SIGTERM (the job resumes from its checkpoint later).\n\n";

/* A job message we hold: waiting for its turn, or running. */
typedef struct pend {
    kq_job *job;
    Ursa__TrainJob *spec; /* owned */
    char id[JOB_ID_MAX + 1];
    int64_t next_try;
    struct pend *next;
} pend;

typedef struct {
    service_conns sc;
    char worker[160], ckpt_dir[PATH_MAX];
    int lease_ms, min_per_class, max_starts, sweep_ms, requeue_ms, space_retry_ms;
    int degraded; /* the running job waits for space: the health says so */
    int swept_all; /* the first sweep walks every job */
    int64_t next_sweep;
    size_t image_cache_bytes;
    pend *waiting;
    pend *cur; /* running on the thread */
    tjob tj;
    pthread_t th;
    int64_t renewed, retry_ms;
    uint64_t ended, retries, requeued;
} trainer;

static atomic_int run = 1;

/* the trainer's own metrics (metrics.h); job.c shows the running job's progress */
static struct {
    metrics_series *ended, *retries, *waiting, *running, *requeued;
} met;

static void register_metrics(void) {
    met.ended =
        metrics_plain_counter("jobs_ended_total", "Jobs run to an end: done, failed or cancelled.");
    met.retries = metrics_plain_counter(
        "job_retries_total", "Jobs put back to try again later (Redis, Kafka or the disk failed).");
    met.waiting =
        metrics_plain_gauge("jobs_waiting", "Jobs held by this worker, waiting for their turn.");
    met.running = metrics_plain_gauge("job_running", "1 while a job runs.");
    met.requeued = metrics_plain_counter(
        "jobs_requeued_total",
        "Jobs nobody held that this worker's sweep sent again to ursa.train.jobs, or cancelled.");
    tjob_register_metrics();
}

static void pend_free(pend *p) {
    if (!p) return;
    ursa__train_job__free_unpacked(p->spec, NULL);
    free(p);
}

/* Checks a job message; NULL and a reason when it can never run. */
static const char *job_problem(const Ursa__TrainJob *j) {
    static char why[256];
    if (!j->header || !job_id_valid(j->header->job_id)) return "no valid job id in the header";
    if (!ds_name_valid(j->dataset)) return "bad dataset name";
    if (strcmp(j->kind, "train") && strcmp(j->kind, "lr_find") && strcmp(j->kind, "audit"))
        return "kind is not train, lr_find or audit";
    if (strcmp(j->arch, "resnet18") && strcmp(j->arch, "resnet34") && strcmp(j->arch, "small"))
        return "arch is not resnet18, resnet34 or small";
    if (j->size < 16 || j->size > 1024) return "size is not within 16..1024";
    if (j->batch_size < 1 || j->batch_size > 4096) return "batch size is not within 1..4096";
    if (!(j->valid_pct > 0 && j->valid_pct < 1)) return "valid_pct is not between 0 and 1";
    if (!(j->weight_decay >= 0 && j->weight_decay < 1)) return "weight decay is not within [0, 1)";
    if (!(j->label_smoothing >= 0 && j->label_smoothing < 1))
        return "label smoothing is not within [0, 1)";
    if (j->pretrained_blob[0] && !blob_key_valid(j->pretrained_blob)) return "bad pretrained blob key";
    unsigned tta;
    if (nn_tta_parse(j->tta ? j->tta : "", &tta)) return "tta is not off, flip, shift or flip+shift";
    if (strcmp(j->kind, "lr_find") && (j->n_stages < 1 || j->n_stages > 16))
        return "a training or audit job needs 1 to 16 stages";
    if (!strcmp(j->kind, "audit") && (j->folds == 1 || j->folds > 20))
        return "an audit needs 2 to 20 folds";
    if (!(j->dup_threshold >= 0 && j->dup_threshold <= 1)) return "dup_threshold is not within [0, 1]";
    for (size_t i = 0; i < j->n_stages; i++) {
        const Ursa__TrainStage *s = j->stages[i];
        if (s->epochs < 1 || s->epochs > 10000 || !(s->lr_min > 0) || !(s->lr_max < 100) ||
            !(s->lr_min <= s->lr_max)) {
            snprintf(why, sizeof why, "stage %zu: epochs 1..10000 and 0 < lr_min <= lr_max < 100",
                     i + 1);
            return why;
        }
    }
    return NULL;
}

static ursa_err handle(void *opaque, const kq_msg *m, kq_job *job, char *reason, size_t rn) {
    trainer *t = opaque;
    Ursa__TrainJob *j = ursa__train_job__unpack(NULL, m->len, m->value);
    if (!j) {
        snprintf(reason, rn, "not a TrainJob protobuf");
        return URSA_ERR_PERMANENT;
    }
    ursa_err err = msg_check_header(j->header, reason, rn);
    const char *why = err ? NULL : job_problem(j);
    if (err || why) {
        if (why) snprintf(reason, rn, "bad job: %s", why);
        /* a recorded job learns why it will never run */
        if (j->header && job_id_valid(j->header->job_id)) {
            const char *kv[] = {"error", reason, NULL};
            job_set_state(t->sc.r, j->header->job_id, JOB_FAILED, kv, NULL);
        }
        ursa__train_job__free_unpacked(j, NULL);
        return URSA_ERR_PERMANENT;
    }
    const char *id = j->header->job_id;
    job_state st;
    err = job_get_state(t->sc.r, id, &st);
    if (err == URSA_ERR_NOT_FOUND && job_is_deleted(t->sc.r, id)) { /* a replay of a deleted job */
        ULOG_INFO("event=job_deleted_replay job=%s note=\"deleted by its user; not made again\"", id);
        ursa__train_job__free_unpacked(j, NULL);
        return URSA_OK;
    }
    if (err == URSA_ERR_NOT_FOUND) { /* produced by something else than the CLI */
        err = job_create(t->sc.r, id, j->kind, j->dataset, j->arch, m->value, m->len, NULL);
        st = JOB_QUEUED;
    }
    if (err) {
        snprintf(reason, rn, "job %s: Redis: %s", id, rstore_last_error(t->sc.r));
        ursa__train_job__free_unpacked(j, NULL);
        return URSA_ERR_UNAVAILABLE;
    }
    if (job_state_final(st)) { /* ended already: a replay */
        ULOG_INFO("event=job_already_ended job=%s state=%s", id, job_state_name(st));
        ursa__train_job__free_unpacked(j, NULL);
        return URSA_OK;
    }
    pend *p = calloc(1, sizeof *p);
    if (!p) {
        ursa__train_job__free_unpacked(j, NULL);
        return URSA_ERR_TRANSIENT;
    }
    p->job = job;
    p->spec = j;
    snprintf(p->id, sizeof p->id, "%s", id);
    pend **tail = &t->waiting;
    while (*tail) tail = &(*tail)->next;
    *tail = p;
    kq_job_hold(job);
    ULOG_INFO("event=job_received job=%s kind=%s dataset=%s", id, j->kind, j->dataset);
    return URSA_OK;
}

static void start(trainer *t, pend *p) {
    memset(&t->tj, 0, sizeof t->tj);
    snprintf(t->tj.id, sizeof t->tj.id, "%s", p->id);
    t->tj.spec = p->spec;
    t->tj.redis_url = t->sc.a.redis;
    t->tj.bs = t->sc.bs;
    t->tj.p = t->sc.p;
    t->tj.ckpt_dir = t->ckpt_dir;
    t->tj.worker = t->worker;
    t->tj.min_per_class = t->min_per_class;
    t->tj.image_cache_bytes = t->image_cache_bytes;
    t->tj.max_starts = t->max_starts;
    t->tj.space_retry_ms = t->space_retry_ms;
    if (pthread_create(&t->th, NULL, tjob_run, &t->tj) != 0) {
        ULOG_ERROR("event=thread_failed job=%s", p->id);
        job_lease_release(t->sc.r, p->id, t->worker);
        p->next_try = util_mono_ms() + 5000;
        p->next = t->waiting;
        t->waiting = p;
        return;
    }
    t->cur = p;
    t->renewed = util_mono_ms();
    metrics_set(met.running, 1);
}

/* The running job's thread ended: let its message go accordingly. */
static void finish(trainer *t) {
    pthread_join(t->th, NULL);
    pend *p = t->cur;
    t->cur = NULL;
    metrics_set(met.running, 0);
    /* a start that ends without ending the job, in order: not a death */
    if (t->tj.started && t->tj.outcome != TJ_DONE) job_incr(t->sc.r, p->id, "stops");
    job_lease_release(t->sc.r, p->id, t->worker);
    char q[600];
    ULOG_INFO("event=job_ended job=%s outcome=%s detail=%s", p->id,
              t->tj.outcome == TJ_DONE ? "ended" : t->tj.outcome == TJ_RETRY ? "retry" : "stopped",
              ulog_quote(q, sizeof q, t->tj.reason));
    if (t->tj.outcome == TJ_DONE) {
        t->ended++;
        metrics_add(met.ended, 1);
        kq_job_done(p->job); /* now its offset may be stored */
        pend_free(p);
    } else if (t->tj.outcome == TJ_STOPPED && !run) {
        kq_job_abandon(p->job); /* delivered again: resumed from the checkpoint */
        pend_free(p);
    } else { /* try again later, from the checkpoint */
        t->retries++;
        metrics_add(met.retries, 1);
        p->next_try = util_mono_ms() + t->retry_ms;
        p->next = t->waiting;
        t->waiting = p;
    }
}

static void swept(void *opaque, const char *id, const char *what, const char *why) {
    trainer *t = opaque;
    t->requeued++;
    metrics_add(met.requeued, 1);
    ULOG_WARN("event=job_%s job=%s why=\"%s\"", what, id, why);
}

static int tick(void *opaque, int timeout_ms) {
    trainer *t = opaque;
    int64_t now = util_mono_ms();
    if (run && now >= t->next_sweep) { /* jobs whose message Kafka lost */
        t->next_sweep = now + t->sweep_ms;
        if (job_sweep(t->sc.r, t->sc.p, !t->swept_all, t->lease_ms, t->requeue_ms, swept, t) ==
            URSA_OK)
            t->swept_all = 1;
    }
    char why[700]; /* the running job waiting for space is the daemon's health */
    int w = tjob_waiting(why, sizeof why);
    if (w != t->degraded) {
        service_degraded(w ? why : NULL);
        t->degraded = w;
    }
    if (service_beat_due()) {
        char ended[24], waiting[24];
        int nw = 0;
        for (pend *p = t->waiting; p; p = p->next) nw++;
        snprintf(ended, sizeof ended, "%llu", (unsigned long long)t->ended);
        snprintf(waiting, sizeof waiting, "%d", nw);
        const char *kv[] = {"job", t->cur ? t->cur->id : "-", "jobs_ended", ended, "waiting",
                            waiting, NULL};
        service_beat(t->sc.r, kv);
    }
    if (t->cur) {
        if (atomic_load(&t->tj.finished)) {
            finish(t);
        } else {
            if (!run) t->tj.stop = 1;
            if (now - t->renewed >= t->lease_ms / 3) {
                int got = 1;
                if (job_lease(t->sc.r, t->cur->id, t->worker, t->lease_ms, &got) == URSA_OK) {
                    t->renewed = now;
                    if (!got) { /* we were cut off long enough for another to take it */
                        ULOG_ERROR("event=lease_lost job=%s note=\"stopping; the holder runs it\"",
                                   t->cur->id);
                        t->tj.stop = 1;
                    }
                }
            }
        }
    }
    if (!run) { /* shutting down: what waits is delivered again later */
        while (t->waiting) {
            pend *p = t->waiting;
            t->waiting = p->next;
            kq_job_abandon(p->job);
            pend_free(p);
        }
    }
    if (!t->cur) {
        for (pend **pp = &t->waiting; *pp;) {
            pend *p = *pp;
            if (p->next_try > now) {
                pp = &p->next;
                continue;
            }
            job_state st = JOB_QUEUED;
            int got = 0;
            ursa_err e = URSA_OK;
            if (kq_job_orphaned(p->job) ||
                ((e = job_get_state(t->sc.r, p->id, &st)) == URSA_OK && job_state_final(st)) ||
                e == URSA_ERR_NOT_FOUND) {
                *pp = p->next; /* ended, or no longer ours to handle */
                kq_job_done(p->job);
                pend_free(p);
                continue;
            }
            if (e || job_lease(t->sc.r, p->id, t->worker, t->lease_ms, &got) != URSA_OK) {
                p->next_try = now + 1000; /* Redis down */
                pp = &p->next;
                continue;
            }
            if (!got) { /* another worker runs it: if it dies, the sweep sends it again */
                ULOG_INFO("event=job_held_elsewhere job=%s note=\"message dropped\"", p->id);
                *pp = p->next;
                kq_job_done(p->job);
                pend_free(p);
                continue;
            }
            *pp = p->next;
            p->next = NULL;
            start(t, p);
            break;
        }
    }
    int n = t->cur != NULL;
    for (pend *p = t->waiting; p; p = p->next) n++;
    metrics_set(met.waiting, n - (t->cur != NULL));
    if (timeout_ms > 0) util_sleep_ms(timeout_ms < 50 ? timeout_ms : 50);
    return n;
}

int main(int argc, char **argv) {
    char nerr[200];
    ulog_set_fd(STDOUT_FILENO); /* a daemon logs to stdout, the engine's first lines too */
    if (nn_engine_init(argv, nerr, sizeof nerr) != URSA_OK) {
        fprintf(stderr, "ursa-trainer: %s\n", nerr);
        return 2;
    }
    static const cfg_def trainer_defs[] = {
        {"trainer.checkpoint-dir", CFG_STR, "", 1, 0,
         "where running jobs keep their checkpoints; shared by every worker "
         "(default: checkpoints/ beside a local blob store; in an object store's blobs when "
         "blob.url is s3://)"},
        {"trainer.image-cache-mb", CFG_INT, "1024", 0, 1 << 20,
         "decoded images a job keeps in memory for its later epochs and folds "
         "(0: decode every image every epoch)"},
        {"trainer.lease-ms", CFG_INT, "15000", 1000, 3600000,
         "a job's lease: another worker may take over a job this long after its worker "
         "stopped renewing it"},
        {"trainer.max-starts", CFG_INT, "5", 1, 1e6,
         "a job whose worker died this many times while running it (started it and never "
         "ended or stopped it: out of memory, SIGKILL) fails with the reason instead of "
         "starting again"},
        {"trainer.min-images-per-class", CFG_INT, "5", 2, 1e9,
         "a class with fewer images fails the job"},
        {"trainer.requeue-ms", CFG_INT, "20000", 1000, 3600000,
         "a job nobody holds is sent again to ursa.train.jobs at most this often (doubling "
         "each time, up to 5 minutes)"},
        {"trainer.retry-ms", CFG_INT, "5000", 100, 3600000,
         "wait before trying again a job that failed for want of Redis, Kafka or the disk"},
        {"trainer.space-retry-ms", CFG_INT, "2000", 100, 3600000,
         "a job that cannot store a checkpoint or its results on a full disk waits, paused, "
         "and tries again this often"},
        {"trainer.sweep-ms", CFG_INT, "3000", 100, 3600000,
         "how often the worker looks for jobs that are not final and that no worker holds "
         "(their message lost with a broker), to send them again"},
        {NULL, 0, NULL, 0, 0, NULL}};
    const cfg_def *const tables[] = {cfg_defs_base, cfg_defs_kafka, cfg_defs_redis, cfg_defs_blob,
                                     nn_cfg_defs, trainer_defs, NULL};
    cfg *c;
    int argi, rc = service_setup("trainer", 0, usage, tables, argc, argv, &c, &argi);
    if (rc >= 0) return rc;
    nn_limits_from_cfg(c); /* what a --pretrained file may ask for */
    register_metrics();
    service_signals(&run);
    char err[512];
    cfg_set(c, "kq.max-inflight", "1", err, sizeof err); /* one job at a time */
    static trainer t;
    kq_consumer *kc = NULL;
    if (service_connect(c, "ursa-trainer", &t.sc, &rc)) goto out;
    rc = 1;
    t.lease_ms = (int)cfg_int(c, "trainer.lease-ms");
    t.min_per_class = (int)cfg_int(c, "trainer.min-images-per-class");
    t.image_cache_bytes = (size_t)cfg_int(c, "trainer.image-cache-mb") << 20;
    t.retry_ms = cfg_int(c, "trainer.retry-ms");
    t.max_starts = (int)cfg_int(c, "trainer.max-starts");
    t.space_retry_ms = (int)cfg_int(c, "trainer.space-retry-ms");
    t.sweep_ms = (int)cfg_int(c, "trainer.sweep-ms");
    t.requeue_ms = (int)cfg_int(c, "trainer.requeue-ms");
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(t.worker, sizeof t.worker, "%s:%d", host, (int)getpid());
    if (*cfg_str(c, "trainer.checkpoint-dir")) {
        snprintf(t.ckpt_dir, sizeof t.ckpt_dir, "%s", cfg_str(c, "trainer.checkpoint-dir"));
    } else if (blob_store_remote(t.sc.bs)) {
        t.ckpt_dir[0] = '\0'; /* in the blob store: any worker on any host resumes it */
    } else {
        char b[PATH_MAX];
        snprintf(b, sizeof b, "%s", t.sc.a.blobs);
        snprintf(t.ckpt_dir, sizeof t.ckpt_dir, "%s/checkpoints", dirname(b));
    }
    if (t.ckpt_dir[0] && util_mkdirs_mode(t.ckpt_dir, 0700) != URSA_OK) {
        fprintf(stderr, "ursa-trainer: cannot create %s\n", t.ckpt_dir);
        goto out;
    }
    const char *topics[] = {TOPIC_TRAIN_JOBS, NULL};
    if (!(kc = kq_consumer_new(c, t.sc.a.kafka, "ursa-trainer", topics, t.sc.p, handle, &t, err,
                               sizeof err))) {
        ULOG_ERROR("event=start_failed err=\"%s\"", err);
        goto out;
    }
    kq_consumer_set_tick(kc, tick, &t);
    kq_consumer_set_revoke_wait_ms(kc, 2000); /* the lease guards a job that moves */
    ULOG_INFO("event=started worker=%s kafka=%s redis=%s blobs=\"%s\" checkpoints=%s blas=%s",
              t.worker, t.sc.a.kafka, t.sc.a.redis_shown, blob_store_where(t.sc.bs),
              t.ckpt_dir[0] ? t.ckpt_dir : "blobs", nn_blas_core());
    rc = kq_consumer_run(kc, &run) == URSA_OK ? 0 : 1;
    if (t.cur) { /* the drain gave up waiting: stop it now */
        t.tj.stop = 1;
        finish(&t);
    }
    while (t.waiting) {
        pend *p = t.waiting;
        t.waiting = p->next;
        kq_job_abandon(p->job);
        pend_free(p);
    }
    ULOG_INFO("event=stopped jobs_ended=%llu retries=%llu requeued=%llu",
              (unsigned long long)t.ended, (unsigned long long)t.retries,
              (unsigned long long)t.requeued);
out:
    kq_consumer_destroy(kc);
    service_disconnect(&t.sc);
    cfg_destroy(c);
    return rc;
}
