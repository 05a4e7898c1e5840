/*
 * kw_err.h -- kwal's error codes, shared by every module.
 *
 * One list macro generates the enum and the strings, so the two never drift
 * apart. Functions return a kw_err_t; where the code alone does not say enough
 * they also fill a caller-provided errstr buffer (errstr may be NULL).
 */
#ifndef KW_ERR_H
#define KW_ERR_H

#include <stddef.h>

#define KW_ERR_LIST(X)                                                     \
    X(KW_OK,          "success")                                           \
    X(KW_EOF,         "end of log")                                        \
    X(KW_EINVAL,      "invalid argument")                                  \
    X(KW_ENOMEM,      "out of memory")                                     \
    X(KW_EIO,         "I/O error")                                         \
    X(KW_ECORRUPT,    "corrupt data")                                      \
    X(KW_ELOCKED,     "locked by another process")                         \
    X(KW_EQUORUM,     "fewer healthy replicas than the write quorum")      \
    X(KW_ENOTFOUND,   "not found")                                         \
    X(KW_EFOREIGN,    "belongs to another WAL")                            \
    X(KW_ECLOSED,     "closed")                                            \
    X(KW_ECONFIG,     "bad configuration")                                 \
    X(KW_EFULL,       "queue full")                                        \
    X(KW_ETIMEDOUT,   "timed out")                                         \
    X(KW_EBUSY,       "held by another owner")                             \
    X(KW_EFENCED,     "not the owner")                                     \
    X(KW_EAGAIN,      "temporarily unavailable, try again")                \
    X(KW_EAUTH,       "authentication or TLS failure")

typedef enum {
#define KW__ERR_ENUM(name, str) name,
    KW_ERR_LIST(KW__ERR_ENUM)
#undef KW__ERR_ENUM
    KW__ERR_COUNT
} kw_err_t;

/* The fixed description of an error code; never NULL. */
const char *kw_err_str(kw_err_t err);

/* The code's name ("KW_EIO"); never NULL. */
const char *kw_err_name(kw_err_t err);

/* printf into errstr (if errstr is non-NULL and errlen > 0), return err. */
kw_err_t kw_seterr(char *errstr, size_t errlen, kw_err_t err,
                   const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* KW_ERR_H */
