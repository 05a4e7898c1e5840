/* kw_err.c -- strings for the error list in kw_err.h. */
#include "kw_err.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const err_str[] = {
#define KW__ERR_STR(name, str) str,
    KW_ERR_LIST(KW__ERR_STR)
#undef KW__ERR_STR
};

static const char *const err_name[] = {
#define KW__ERR_NAME(name, str) #name,
    KW_ERR_LIST(KW__ERR_NAME)
#undef KW__ERR_NAME
};

const char *kw_err_str(kw_err_t err)
{
    if ((unsigned)err >= KW__ERR_COUNT)
        return "unknown error";
    return err_str[err];
}

const char *kw_err_name(kw_err_t err)
{
    if ((unsigned)err >= KW__ERR_COUNT)
        return "KW_E?";
    return err_name[err];
}

kw_err_t kw_seterr(char *errstr, size_t errlen, kw_err_t err,
                   const char *fmt, ...)
{
    va_list ap;

    if (errstr == NULL || errlen == 0)
        return err;
    va_start(ap, fmt);
    vsnprintf(errstr, errlen, fmt, ap);
    va_end(ap);
    return err;
}
