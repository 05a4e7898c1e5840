/*
 * kw_log.h -- leveled logging to stderr, shared by every module.
 *
 * Libraries log here and never print to stdout. The level and the sink are
 * process-wide; set them before starting threads. Thread-safe: each message
 * is written with a single write(2).
 */
#ifndef KW_LOG_H
#define KW_LOG_H

typedef enum {
    KW_LOG_ERROR = 0,
    KW_LOG_WARN  = 1,
    KW_LOG_INFO  = 2,
    KW_LOG_DEBUG = 3
} kw_log_level_t;

/* Messages above this level are dropped. Default KW_LOG_INFO, or the
 * value of KWAL_LOG_LEVEL (error|warn|info|debug) when set. */
void kw_log_set_level(kw_log_level_t level);
kw_log_level_t kw_log_get_level(void);

/* Parse "error", "warn", "info", "debug"; -1 when unknown. */
int kw_log_level_parse(const char *s);

/* Optional hook that sees every emitted message (tests use it to check that
 * something was reported). Called with the formatted message, without the
 * trailing newline. NULL restores the default. */
typedef void (*kw_log_hook_t)(kw_log_level_t level, const char *msg, void *opaque);
void kw_log_set_hook(kw_log_hook_t hook, void *opaque);

void kw_log(kw_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KW_LOG_E(mod, ...) kw_log(KW_LOG_ERROR, mod, __VA_ARGS__)
#define KW_LOG_W(mod, ...) kw_log(KW_LOG_WARN, mod, __VA_ARGS__)
#define KW_LOG_I(mod, ...) kw_log(KW_LOG_INFO, mod, __VA_ARGS__)
#define KW_LOG_D(mod, ...) kw_log(KW_LOG_DEBUG, mod, __VA_ARGS__)

#endif /* KW_LOG_H */
