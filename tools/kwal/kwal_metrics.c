/*
 * kwal_metrics.c -- metrics.listen: the Prometheus endpoint of kwal receive
 * and kwal direct (DESIGN.md, "Statistics and metrics").
 *
 * The HTTP side is libmicrohttpd's (Debian libmicrohttpd-dev): one daemon
 * with its own polling thread serves every connection, so requests are
 * answered one at a time on that thread and never on a thread of the data
 * path. This file only binds the listening socket itself (so that a port in
 * use or an address that is not local is a one-line error with errno's
 * words, and port 0's choice is read back with getsockname), hands it to the
 * daemon, and answers:
 *
 *   GET or HEAD /metrics   200, Content-Type text/plain; version=0.0.4;
 *                          charset=utf-8: kw_stats_format_prometheus() of a
 *                          kw_stats_t filled by the command's fill function
 *                          (the one --stats-json uses, so one struct feeds
 *                          both) and of the partitions its parts function gives
 *   another path           404
 *   another method         405, Allow: GET, HEAD
 *
 * Nothing here writes anything the data path reads: a slow or broken
 * scraper costs this thread, never a record.
 */
#include "kwal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "kw_log.h"
#include "kw_time.h"

#define METRICS_MOD "metrics"
#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* a scraper or two and a person with curl; more wait in the backlog */
#define METRICS_MAX_CONNECTIONS 16
#define METRICS_IDLE_TIMEOUT_S 10

struct kwal_metrics {
    struct MHD_Daemon    *daemon;
    kwal_stats_fill_fn    fill;
    kwal_partitions_fn    parts_fn;
    void                 *opaque;
    kw_stats_t            base;        /* mode, started_ms */
    int64_t               start_mono;
    int                   port;
    /* the daemon's thread only: the partitions of the last request */
    kw_stats_partition_t *parts;
    size_t                capparts;
};

/* ---- metrics.listen's value ---- */

typedef struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t               len;
} listen_addr_t;

/* The port of HOST:PORT: 0..65535 in decimal. -1 otherwise. */
static int parse_port(const char *p)
{
    long v = 0;

    if (*p == '\0' || strlen(p) > 5)
        return -1;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v <= 65535 ? (int)v : -1;
}

/* Split v into host and port and resolve the host (an IPv4 address first).
 * KWAL_EXIT_OK or KWAL_EXIT_USAGE with errstr. */
static int parse_listen(const char *v, listen_addr_t *a, char *errstr, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *pick;
    const char *host_end, *port_s;
    char host[256];
    size_t hlen;
    int bracket = v[0] == '[', port, rc;

    if (bracket) {
        host_end = strchr(v, ']');
        if (host_end == NULL) {
            snprintf(errstr, errlen, "metrics.listen: '%s': no ']' after the IPv6 address "
                     "([ADDRESS]:PORT)", v);
            return KWAL_EXIT_USAGE;
        }
        port_s = host_end[1] == ':' ? host_end + 2 : NULL;
        v++;
    } else if (strchr(v, ':') == NULL && v[0] != '\0' && strspn(v, "0123456789") == strlen(v)) {
        host_end = v;       /* a port alone: loopback, below */
        port_s = v;
    } else {
        host_end = strrchr(v, ':');
        port_s = host_end != NULL ? host_end + 1 : NULL;
        if (host_end != NULL && memchr(v, ':', (size_t)(host_end - v)) != NULL) {
            snprintf(errstr, errlen, "metrics.listen: '%s': an IPv6 address goes in "
                     "brackets ([::1]:PORT)", v);
            return KWAL_EXIT_USAGE;
        }
    }
    if (port_s == NULL || *port_s == '\0') {
        snprintf(errstr, errlen, "metrics.listen: '%s%s': no port (HOST:PORT, e.g. "
                 "127.0.0.1:9100)", bracket ? "[" : "", v);
        return KWAL_EXIT_USAGE;
    }
    if ((port = parse_port(port_s)) < 0) {
        snprintf(errstr, errlen, "metrics.listen: port '%s' is not a number from 0 to "
                 "65535", port_s);
        return KWAL_EXIT_USAGE;
    }
    hlen = (size_t)(host_end - v);
    if (hlen >= sizeof(host) || (hlen == 0 && bracket)) {
        snprintf(errstr, errlen, "metrics.listen: %s host (HOST:PORT, e.g. 127.0.0.1:9100)",
                 hlen == 0 ? "no" : "too long a");
        return KWAL_EXIT_USAGE;
    }
    if (hlen == 0) {        /* "PORT" or ":PORT": loopback, never every address */
        snprintf(host, sizeof(host), "127.0.0.1");
    } else {
        memcpy(host, v, hlen);
        host[hlen] = '\0';
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = bracket ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = bracket ? AI_NUMERICHOST : 0;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(errstr, errlen, "metrics.listen: host '%s' does not resolve (%s)", host,
                 rc != 0 ? gai_strerror(rc) : "no address");
        return KWAL_EXIT_USAGE;
    }
    /* "localhost" may come as ::1 first; loopback IPv4 is what people mean */
    for (pick = res; pick != NULL && pick->ai_family != AF_INET; pick = pick->ai_next)
        ;
    if (pick == NULL)
        pick = res;
    memset(a, 0, sizeof(*a));
    memcpy(&a->ss, pick->ai_addr, pick->ai_addrlen);
    a->len = pick->ai_addrlen;
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return KWAL_EXIT_OK;
}

static int is_loopback(const listen_addr_t *a)
{
    if (a->ss.ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
}

/* "127.0.0.1:9100" or "[::1]:9100" for the log. */
static void addr_str(const listen_addr_t *a, int port, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    int v4 = a->ss.ss_family == AF_INET;
    const void *src = v4 ? (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr
                         : (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;

    if (inet_ntop(a->ss.ss_family, src, ip, sizeof(ip)) == NULL)
        snprintf(ip, sizeof(ip), "?");
    snprintf(out, outlen, v4 ? "%s:%d" : "[%s]:%d", ip, port);
}

/* A listening socket on a; its port in *port. The fd, or -1 with errstr. */
static int bind_listen(const listen_addr_t *a, const char *value, int *port, char *errstr,
                       size_t errlen)
{
    struct sockaddr_storage got;
    socklen_t glen = sizeof(got);
    int fd, one = 1;

    fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    /* a restart binds at once, while the last run's connections linger in
     * TIME_WAIT; a port another socket listens on is still refused */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
        listen(fd, METRICS_MAX_CONNECTIONS) < 0 ||
        getsockname(fd, (struct sockaddr *)&got, &glen) < 0)
        goto fail;
    *port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                           : ((struct sockaddr_in6 *)&got)->sin6_port);
    return fd;

fail: {
        int e = errno;
        char where[INET6_ADDRSTRLEN + 16];

        addr_str(a, ntohs(a->ss.ss_family == AF_INET
                          ? ((const struct sockaddr_in *)&a->ss)->sin_port
                          : ((const struct sockaddr_in6 *)&a->ss)->sin6_port),
                 where, sizeof(where));
        snprintf(errstr, errlen, "metrics.listen: cannot listen on %s%s%s%s: %s", where,
                 strcmp(where, value) != 0 ? " (" : "", strcmp(where, value) != 0 ? value : "",
                 strcmp(where, value) != 0 ? ")" : "", strerror(e));
    }
    if (fd >= 0)
        close(fd);
    return -1;
}

/* ---- requests (the daemon's thread) ---- */

/* libmicrohttpd's own complaints (a connection it dropped, ...). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    KW_LOG_W(METRICS_MOD, "libmicrohttpd: %s", msg);
}

/* The partitions now, into m->parts (grown to fit; a few tries, since they
 * may grow between two calls). How many are there. */
static size_t take_partitions(kwal_metrics_t *m)
{
    size_t n = 0;

    if (m->parts_fn == NULL)
        return 0;
    if (m->parts == NULL) {     /* never hand out NULL, even for 0 entries */
        m->parts = malloc(64 * sizeof(*m->parts));
        if (m->parts == NULL)
            return 0;
        m->capparts = 64;
    }
    for (int tries = 0; tries < 3; tries++) {
        n = m->parts_fn(m->parts, m->capparts, m->opaque);
        if (n <= m->capparts)
            return n;
        {
            size_t ncap = n + n / 4 + 8;
            kw_stats_partition_t *p = realloc(m->parts, ncap * sizeof(*p));

            if (p == NULL)
                break;
            m->parts = p;
            m->capparts = ncap;
        }
    }
    return n < m->capparts ? n : m->capparts;   /* out of memory: what fits */
}

/* The text of one scrape, malloc'd (*len bytes), or NULL. */
static char *render(kwal_metrics_t *m, size_t *len)
{
    kw_stats_t s = m->base;
    size_t nparts, need;
    char *buf;

    s.uptime_ms = kw_mono_ms() - m->start_mono;
    m->fill(&s, m->start_mono, m->opaque);
    nparts = take_partitions(m);
    need = kw_stats_format_prometheus(&s, m->parts, nparts, NULL, 0);
    buf = malloc(need + 1);
    if (buf == NULL)
        return NULL;
    *len = kw_stats_format_prometheus(&s, m->parts, nparts, buf, need + 1);
    return buf;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned int status,
                                  const char *text, const char *allow)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    kwal_metrics_t *m = cls;
    struct MHD_Response *r;
    enum MHD_Result ret;
    size_t len = 0;
    char *body;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    if (strcmp(url, METRICS_PATH) != 0)
        return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: the metrics are at GET "
                          METRICS_PATH "\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: GET or "
                          "HEAD " METRICS_PATH "\n", "GET, HEAD");
    body = render(m, &len);
    if (body == NULL)
        return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
    r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- start and stop ---- */

int kwal_metrics_start(const char *listen, const char *mode, kwal_stats_fill_fn fill,
                       kwal_partitions_fn parts, void *opaque, kwal_metrics_t **out,
                       char *errstr, size_t errlen)
{
    listen_addr_t a;
    kwal_metrics_t *m;
    char where[INET6_ADDRSTRLEN + 16];
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    int rc, fd, port = 0;

    *out = NULL;
    if (listen == NULL || listen[0] == '\0')
        return KWAL_EXIT_OK;
    if ((rc = parse_listen(listen, &a, errstr, errlen)) != KWAL_EXIT_OK)
        return rc;
    if ((fd = bind_listen(&a, listen, &port, errstr, errlen)) < 0)
        return KWAL_EXIT_FAIL;
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        close(fd);
        snprintf(errstr, errlen, "metrics.listen: out of memory");
        return KWAL_EXIT_FAIL;
    }
    m->fill = fill;
    m->parts_fn = parts;
    m->opaque = opaque;
    m->port = port;
    kw_stats_init(&m->base, mode);
    m->base.started_ms = kw_wall_ms();
    m->start_mono = kw_mono_ms();
    if (a.ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* port 0 below: the socket is bound already; the daemon owns it from
     * here and closes it when it stops */
    m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                                 MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)METRICS_MAX_CONNECTIONS,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)METRICS_IDLE_TIMEOUT_S,
                                 MHD_OPTION_END);
    if (m->daemon == NULL) {
        /* fd is not closed here: libmicrohttpd's failure path closes the
         * listening socket it was given, and a second close could hit a
         * descriptor opened meanwhile; the command exits next anyway */
        free(m);
        snprintf(errstr, errlen, "metrics.listen: %s: the HTTP server (libmicrohttpd) did not "
                 "start (its reason is logged above)", listen);
        return KWAL_EXIT_FAIL;
    }
    addr_str(&a, port, where, sizeof(where));
    KW_LOG_I(METRICS_MOD, "serving the Prometheus text format at http://%s%s", where,
             METRICS_PATH);
    if (!is_loopback(&a))
        KW_LOG_W(METRICS_MOD, "metrics.listen=%s is not a loopback address: the statistics "
                 "are open to the network", listen);
    *out = m;
    return KWAL_EXIT_OK;
}

int kwal_metrics_port(const kwal_metrics_t *m)
{
    return m != NULL ? m->port : 0;
}

void kwal_metrics_stop(kwal_metrics_t *m)
{
    if (m == NULL)
        return;
    MHD_stop_daemon(m->daemon);     /* joins its thread, closes the socket */
    free(m->parts);
    free(m);
}
