/* pool.h: work off the HTTP event threads, bounded: a fixed set of worker
 * threads, a queue of at most max_queue jobs, and a budget of bytes (of
 * pixels being decoded) in flight. A job reserves its bytes before it is
 * queued (the caller knows them from the image's header: width x height x
 * 4, before a pixel is decoded); a reservation past the budget or past a
 * full queue is refused at once, and the server answers 503 with
 * Retry-After: many large images at once cannot take the process's
 * memory. A job gives its bytes back with pool_release when its pixels are
 * freed. */
#ifndef URSA_POOL_H
#define URSA_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct pool pool;
typedef void pool_fn(void *arg);

/* threads workers; budget bytes (0: no budget); max_queue jobs waiting.
 * NULL when the threads cannot start. */
pool *pool_new(int threads, size_t budget, int max_queue);
/* Runs what is queued, stops the workers, frees. */
void pool_free(pool *p);

/* Reserves bytes and a place in the queue: 0, or -1 (refused: over the
 * budget, or the queue is full). */
int pool_reserve(pool *p, size_t bytes);
/* Queues fn(arg) on a reservation pool_reserve made. */
void pool_push(pool *p, pool_fn *fn, void *arg);
/* Gives bytes of a reservation back (the job's pixels are freed). */
void pool_release(pool *p, size_t bytes);

typedef struct {
    size_t budget, in_use;
    int queued, running;
    uint64_t done, refused_budget, refused_queue;
} pool_stats;
void pool_get_stats(pool *p, pool_stats *st);

#endif
