/*
 * kwal_stats.c -- `--stats-json FILE`: a thread that fills a kw_stats_t from
 * the running command every KWAL_STATS_INTERVAL_MS and replaces FILE with it
 * (common/kw_stats.h has the format), and one last time, with "final":true,
 * when the command ends. A failed write is logged once per failure streak
 * and never stops the service: statistics are for people and runners, not
 * part of the data path.
 */
#include "kwal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kw_log.h"
#include "kw_time.h"

struct kwal_stats_writer {
    const char        *path;
    kwal_stats_fill_fn fill;
    void              *opaque;
    kw_stats_t         base;      /* mode, started_ms */
    int64_t            start_mono;
    pthread_t          thread;
    pthread_mutex_t    mu;
    pthread_cond_t     cv;
    int                stop;
    int                failing;   /* the last write failed (logged once) */
};

static void write_once(kwal_stats_writer_t *w, int final)
{
    kw_stats_t s = w->base;
    char why[512];

    s.final = final;
    s.uptime_ms = kw_mono_ms() - w->start_mono;
    w->fill(&s, w->start_mono, w->opaque);
    if (kw_stats_write_json(&s, w->path, why, sizeof(why)) != 0) {
        if (!w->failing)
            KW_LOG_W("stats", "--stats-json: %s", why);
        w->failing = 1;
    } else {
        w->failing = 0;
    }
}

static void *writer_main(void *arg)
{
    kwal_stats_writer_t *w = arg;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec ts = kw_deadline_ts(CLOCK_REALTIME, KWAL_STATS_INTERVAL_MS);

        pthread_mutex_unlock(&w->mu);
        write_once(w, 0);
        pthread_mutex_lock(&w->mu);
        if (!w->stop)
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int kwal_stats_start(const char *path, const char *mode, kwal_stats_fill_fn fill,
                     void *opaque, kwal_stats_writer_t **out)
{
    kwal_stats_writer_t *w;

    *out = NULL;
    if (path == NULL)
        return 0;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    w->path = path;
    w->fill = fill;
    w->opaque = opaque;
    kw_stats_init(&w->base, mode);
    w->base.started_ms = kw_wall_ms();
    w->start_mono = kw_mono_ms();
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return -1;
    }
    *out = w;
    return 0;
}

void kwal_stats_kick(kwal_stats_writer_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void kwal_stats_finish(kwal_stats_writer_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    write_once(w, 1);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
