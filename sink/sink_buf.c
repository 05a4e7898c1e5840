/*
 * sink_buf.c -- byte helpers the sink kinds share (sink_int.h): a growable
 * buffer and a write that finishes. Apart from sink.c, the dispatcher, so
 * that the kinds depend on this file and sink.c on the kinds, not both ways.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "sink_int.h"

kw_err_t kw__sink_buf_reserve(kw_sink_buf_t *b, size_t more)
{
    size_t need, cap;
    char *nd;

    if (more > SIZE_MAX - b->len)
        return KW_ENOMEM;
    need = b->len + more;
    if (need <= b->cap)
        return KW_OK;
    cap = b->cap == 0 ? 4096 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    nd = realloc(b->data, cap);
    if (nd == NULL)
        return KW_ENOMEM;
    b->data = nd;
    b->cap = cap;
    return KW_OK;
}

int kw__sink_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}
