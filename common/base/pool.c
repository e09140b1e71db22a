/* pool.c: worker threads with a bounded queue and a byte budget; see pool.h. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct job {
    pool_fn *fn;
    void *arg;
    struct job *next;
} job;

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work;
    job *head, *tail;
    int stop, nthreads, max_queue, reserved; /* reserved: places taken, queued or not */
    pthread_t *th;
    pool_stats st;
};

static void *worker(void *arg) {
    pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop) pthread_cond_wait(&p->work, &p->mu);
        job *j = p->head;
        if (!j) break; /* stopping, nothing left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->st.queued--;
        p->reserved--;
        p->st.running++;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
        p->st.running--;
        p->st.done++;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pool *pool_new(int threads, size_t budget, int max_queue) {
    pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    p->st.budget = budget;
    p->max_queue = max_queue < 1 ? 1 : max_queue;
    p->th = calloc((size_t)(threads < 1 ? 1 : threads), sizeof(pthread_t));
    for (int i = 0; p->th && i < (threads < 1 ? 1 : threads); i++)
        if (pthread_create(&p->th[i], NULL, worker, p) == 0) p->nthreads++;
    if (!p->nthreads) {
        pool_free(p);
        return NULL;
    }
    return p;
}

void pool_free(pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->th[i], NULL);
    free(p->th);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    free(p);
}

int pool_reserve(pool *p, size_t bytes) {
    int ok = 0;
    pthread_mutex_lock(&p->mu);
    if (p->stop || p->reserved >= p->max_queue) {
        p->st.refused_queue++;
    } else if (p->st.budget && p->st.in_use + bytes > p->st.budget) {
        p->st.refused_budget++;
    } else {
        p->st.in_use += bytes;
        p->reserved++;
        ok = 1;
    }
    pthread_mutex_unlock(&p->mu);
    return ok ? 0 : -1;
}

void pool_push(pool *p, pool_fn *fn, void *arg) {
    job *j = malloc(sizeof *j);
    if (!j) { /* no memory for a list node: run it here rather than lose it */
        pthread_mutex_lock(&p->mu);
        p->reserved--;
        pthread_mutex_unlock(&p->mu);
        fn(arg);
        return;
    }
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail) p->tail->next = j;
    else p->head = j;
    p->tail = j;
    p->st.queued++;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

void pool_release(pool *p, size_t bytes) {
    pthread_mutex_lock(&p->mu);
    p->st.in_use = bytes > p->st.in_use ? 0 : p->st.in_use - bytes;
    pthread_mutex_unlock(&p->mu);
}

void pool_get_stats(pool *p, pool_stats *st) {
    pthread_mutex_lock(&p->mu);
    *st = p->st;
    pthread_mutex_unlock(&p->mu);
}
