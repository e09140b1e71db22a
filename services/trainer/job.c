/* job.c: one job's thread: it takes the job (state, cancel, the snapshot)
 * and hands it to its kind: training and lr_find (train.c) or the audit
 * (audit.c), over the context of run.c; see job.h. */
#include "job.h"
#include "run.h"
#include "train.h"
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rstore.h"
#include "util.h"

void tjob_register_metrics(void) { run_register_metrics(); }

/* the kinds of job, by the spec's kind */
static const struct {
    const char *kind;
    tjob_outcome (*run)(run *R);
} kinds[] = {{"train", train_run}, {"lr_find", train_lr_find}, {"audit", audit_run}};

static tjob_outcome run_job(run *R) {
    tjob *tj = R->tj;
    job_state st;
    ursa_err e = job_get_state(R->r, tj->id, &st);
    if (e == URSA_ERR_NOT_FOUND) return TJ_DONE; /* not ours to run (see main.c) */
    if (e) return run_redis_down(R, "reading the job");
    if (job_state_final(st)) return TJ_DONE;
    redisReply *rep = NULL;
    if (job_get_field(R->r, tj->id, "cancel", &rep)) return run_redis_down(R, "reading");
    int cancel = rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "1");
    freeReplyObject(rep);
    if (cancel) {
        R->cancelled = 1;
        return run_cancelled(R);
    }
    /* starts its workers did not end or stop in order are deaths: a worker
     * killed by the kernel for memory at every start would start it forever */
    char starts[24], stops[24];
    if (run_field(R, "starts", starts, sizeof starts) || run_field(R, "stops", stops, sizeof stops))
        return run_redis_down(R, "reading the job");
    int deaths = atoi(starts) - atoi(stops);
    if (deaths >= tj->max_starts) {
        snprintf(R->why, sizeof R->why,
                 "the trainer died %d times while running it: out of memory? (started %d "
                 "times; trainer.max-starts is %d)", deaths, atoi(starts), tj->max_starts);
        return run_fail(R);
    }
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
    const char *kv[] = {"worker", tj->worker, "beat_ms", now, "requeues", "0", NULL};
    int moved = 0;
    if (job_set_state(R->r, tj->id, JOB_RUNNING, kv, &moved))
        return run_redis_down(R, "starting the job");
    if (!moved) return TJ_DONE; /* ended meanwhile (a cancel): nothing to run */
    if (job_set_once(R->r, tj->id, "started_ms", now) || job_incr(R->r, tj->id, "starts"))
        return run_redis_down(R, "starting the job");
    tj->started = 1;
    job_del_field(R->r, tj->id, "waiting"); /* a dead worker's pause is not this run's */
    ULOG_INFO("event=job_started job=%s kind=%s dataset=%s arch=%s", tj->id, R->spec->kind,
              R->spec->dataset, R->spec->arch);
    tjob_outcome o = run_snapshot(R);
    if (o != TJ_DONE || R->why[0]) return o;
    R->cache_max = tj->image_cache_bytes;
    if (R->cache_max && !(R->cache = calloc(R->nim, sizeof *R->cache))) {
        snprintf(tj->reason, sizeof tj->reason, "out of memory");
        return TJ_RETRY;
    }
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (!strcmp(R->spec->kind, kinds[i].kind)) return kinds[i].run(R);
    snprintf(R->why, sizeof R->why, "kind \"%s\" is not train, lr_find or audit", R->spec->kind);
    return run_fail(R); /* main.c refuses such jobs before they get here */
}

void *tjob_run(void *arg) {
    tjob *tj = arg;
    run *R = run_new(tj);
    char err[512];
    if (!R) {
        tj->outcome = TJ_RETRY;
        snprintf(tj->reason, sizeof tj->reason, "out of memory");
        atomic_store(&tj->finished, 1);
        return NULL;
    }
    if (!(R->r = rstore_new(tj->redis_url, 5000, err, sizeof err))) {
        tj->outcome = TJ_RETRY;
        snprintf(tj->reason, sizeof tj->reason, "redis: %s", err);
    } else {
        tj->outcome = run_job(R);
    }
    run_free(R);
    atomic_store(&tj->finished, 1);
    return NULL;
}
