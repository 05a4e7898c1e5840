/*
 * state.c -- the part of the service handle every receiver-mode thread
 * touches: the first fatal error (any thread records it, everyone polls the
 * flag), the "first time" marks of the statistics, and --no-wal's batch
 * ids (the batcher's). Kept apart from
 * service.c, which starts the threads, so that the threads' files depend on
 * this one and not on the file that starts them.
 */
#include <stdarg.h>
#include <stdio.h>

#include "kw_log.h"
#include "receiver_int.h"

void kw_rcv_fatal(kw_receiver_t *svc, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&svc->fatal_mu);
    if (!atomic_load(&svc->fatal)) {
        snprintf(svc->fatal_msg, sizeof(svc->fatal_msg), "%s", msg);
        atomic_store(&svc->fatal, 1);
        KW_LOG_E(KW_RCV_MOD, "%s", msg);
    } else {
        KW_LOG_D(KW_RCV_MOD, "after the first fatal error: %s", msg);
    }
    pthread_mutex_unlock(&svc->fatal_mu);
}

int kw_rcv_is_fatal(kw_receiver_t *svc)
{
    return atomic_load(&svc->fatal);
}

void kw_rcv_note_first(_Atomic int64_t *when)
{
    int64_t none = 0;

    if (atomic_load(when) == 0)
        atomic_compare_exchange_strong(when, &none, kw_mono_ms());
}

uint64_t kw_receiver_next_batch_id(uint64_t prev, int64_t now_ms)
{
    uint64_t now = now_ms > 0 ? (uint64_t)now_ms : 1;

    return prev + 1 > now ? prev + 1 : now;
}
