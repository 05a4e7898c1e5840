/*
 * kw_time.h -- the one clock of kwal: a monotonic clock for intervals and
 * deadlines, the wall clock for what outlives the process (ids, timestamps),
 * condition-variable deadlines, a sleep. Every module uses these rather than
 * calling clock_gettime itself.
 */
#ifndef KW_TIME_H
#define KW_TIME_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in ms: for intervals and deadlines. */
static inline int64_t kw_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_MONOTONIC in ns: for short latencies. */
static inline uint64_t kw_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The absolute time ms milliseconds from now on clock clk, for
 * pthread_cond_timedwait (CLOCK_REALTIME unless the condition variable was
 * made with pthread_condattr_setclock). ms >= 0. */
static inline struct timespec kw_deadline_ts(clockid_t clk, int64_t ms)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ms since the epoch. */
static inline int64_t kw_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep ms milliseconds (a signal does not cut it short). */
static inline void kw_sleep_ms(int64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

#endif /* KW_TIME_H */
