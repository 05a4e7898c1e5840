/*
 * kw_tsan_c11.c -- C11 <threads.h> over pthreads, linked into ThreadSanitizer
 * builds only (KWAL_TSAN), so that librdkafka runs under TSan.
 *
 * Why: Debian's librdkafka is built on C11 threads (thrd_create, mtx_lock,
 * cnd_wait, call_once). glibc implements them by calling its internal
 * pthread functions directly, which TSan does not intercept: a thread made
 * by thrd_create starts without TSan's per-thread state and the process
 * crashes at the first instrumented access (SIGSEGV in every receiver
 * thread), and a mutex taken by mtx_lock is invisible to TSan, which would
 * then report librdkafka's hand-offs as races.
 *
 * How: the executable defines these symbols itself, so the dynamic linker
 * binds librdkafka's references to them instead of glibc's (an executable's
 * definitions come first in the lookup order), and each one calls the
 * pthread function that TSan does intercept. glibc's C11 types are the
 * pthread types under other names (mtx_t is a pthread_mutex_t-sized union,
 * cnd_t likewise, thrd_t is pthread_t, once_flag an int), as glibc's own
 * implementation assumes; the static asserts check the sizes.
 *
 * librdkafka itself is not instrumented, so TSan does not see the atomics
 * behind its reference counts: a message buffer that a receiver copies from
 * and that a broker thread frees after the receiver released it looks like a
 * race. __tsan_default_suppressions() (TSan asks for it at start-up) tells
 * TSan to ignore the interceptors (free, memcpy, ...) that librdkafka calls
 * itself, and the accesses to librdkafka's mutexes and condition variables
 * made through this file (they are initialised by one librdkafka thread and
 * published to others through those same invisible atomics); kwal's own
 * accesses are still checked against each other.
 *
 * Production builds never contain this file.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread mutex");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread cond");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

typedef struct kw_tsan_start {
    thrd_start_t fn;
    void        *arg;
} kw_tsan_start_t;

const char *__tsan_default_suppressions(void);

const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:librdkafka.so.1\n"
           "race:kw_tsan_c11.c\n";
}

static int c11_result(int err)
{
    switch (err) {
    case 0:         return thrd_success;
    case ENOMEM:    return thrd_nomem;
    case ETIMEDOUT: return thrd_timedout;
    case EBUSY:     return thrd_busy;
    default:        return thrd_error;
    }
}

static void *start(void *p)
{
    kw_tsan_start_t s = *(kw_tsan_start_t *)p;

    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    kw_tsan_start_t *s = malloc(sizeof(*s));
    int err;

    if (s == NULL)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    err = pthread_create((pthread_t *)thr, NULL, start, s);
    if (err != 0)
        free(s);
    return c11_result(err);
}

int thrd_join(thrd_t thr, int *res)
{
    void *ret = NULL;
    int err = pthread_join((pthread_t)thr, &ret);

    if (err == 0 && res != NULL)
        *res = (int)(intptr_t)ret;
    return c11_result(err);
}

int thrd_detach(thrd_t thr)
{
    return c11_result(pthread_detach((pthread_t)thr));
}

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    int err;

    pthread_mutexattr_init(&a);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    err = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return c11_result(err);
}

int mtx_lock(mtx_t *m)
{
    return c11_result(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m)
{
    return c11_result(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return c11_result(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m)
{
    return c11_result(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
    return c11_result(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
    return c11_result(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
    return c11_result(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return c11_result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return c11_result(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}

void call_once(once_flag *flag, void (*fn)(void))
{
    pthread_once((pthread_once_t *)flag, fn);
}
