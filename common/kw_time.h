/*
 * kw_time.h -- milliseconds: a monotonic clock for intervals and deadlines,
 * the wall clock for what outlives the process (ids, timestamps), a sleep.
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
