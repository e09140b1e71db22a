/* c11threads.c: C11 threads as thin wrappers over pthreads, linked into
 * every executable of a ThreadSanitizer build (cmake -DURSA_TSAN=ON).
 *
 * Debian's librdkafka runs on C11 threads (thrd_create, mtx_lock,
 * cnd_wait), and glibc implements them without going through the pthread
 * symbols TSan intercepts: TSan never registers librdkafka's threads and
 * crashes in the first one, and would not see its locks. Defined here, in
 * the executable, these are found before glibc's, so every thread and lock
 * goes through pthreads and TSan sees them. Never in a normal build. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) >= sizeof(pthread_mutex_t), "mtx_t holds a pthread mutex");
_Static_assert(sizeof(cnd_t) >= sizeof(pthread_cond_t), "cnd_t holds a pthread condition");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");
_Static_assert(sizeof(once_flag) >= sizeof(pthread_once_t), "once_flag holds a pthread_once_t");

static int result(int e) {
    return e == 0 ? thrd_success : e == ENOMEM ? thrd_nomem : e == ETIMEDOUT ? thrd_timedout
           : e == EBUSY ? thrd_busy : thrd_error;
}

typedef struct {
    thrd_start_t fn;
    void *arg;
} start;

static void *trampoline(void *p) {
    start s = *(start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *t, thrd_start_t fn, void *arg) {
    start *s = malloc(sizeof *s);
    if (!s) return thrd_nomem;
    s->fn = fn, s->arg = arg;
    int e = pthread_create((pthread_t *)t, NULL, trampoline, s);
    if (e) free(s);
    return result(e);
}

int thrd_join(thrd_t t, int *res) {
    void *r;
    int e = pthread_join((pthread_t)t, &r);
    if (!e && res) *res = (int)(intptr_t)r;
    return result(e);
}

int thrd_detach(thrd_t t) { return result(pthread_detach((pthread_t)t)); }
thrd_t thrd_current(void) { return (thrd_t)pthread_self(); }
int thrd_equal(thrd_t a, thrd_t b) { return pthread_equal((pthread_t)a, (pthread_t)b); }
void thrd_exit(int res) { pthread_exit((void *)(intptr_t)res); }

int mtx_init(mtx_t *m, int type) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive) pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int e = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return result(e);
}
int mtx_lock(mtx_t *m) { return result(pthread_mutex_lock((pthread_mutex_t *)m)); }
int mtx_trylock(mtx_t *m) { return result(pthread_mutex_trylock((pthread_mutex_t *)m)); }
int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts) {
    return result(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}
int mtx_unlock(mtx_t *m) { return result(pthread_mutex_unlock((pthread_mutex_t *)m)); }
void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) { return result(pthread_cond_init((pthread_cond_t *)c, NULL)); }
int cnd_signal(cnd_t *c) { return result(pthread_cond_signal((pthread_cond_t *)c)); }
int cnd_broadcast(cnd_t *c) { return result(pthread_cond_broadcast((pthread_cond_t *)c)); }
int cnd_wait(cnd_t *c, mtx_t *m) {
    return result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts) {
    return result(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}
void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

void call_once(once_flag *f, void (*fn)(void)) { pthread_once((pthread_once_t *)f, fn); }
