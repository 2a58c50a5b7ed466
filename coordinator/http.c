/* coordinator/http.c: libmicrohttpd glue (see http.h). */
#include "coordinator/http.h"

#include "common/log.h"
#include "coordinator/api_json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http {
    struct http_opts o;
    struct MHD_Daemon *d;
    int port;
};

/* Per request: the body as it arrives. */
struct conn_state {
    char *body;
    size_t len, cap;
    int too_big;
    int answered; /* a response was queued early (413) */
};

/* Per streamed response. */
struct stream {
    struct http_resp rs;
    int completed;
};

int http_client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) != 0;
}

static enum MHD_Result queue(struct http *h, struct MHD_Connection *c, int status, const char *type,
                             char *body, size_t len) {
    if (!body) { /* MHD frees what it is given: an empty body is still a heap block */
        body = calloc(1, 1);
        len = 0;
    }
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type ? type : "application/json");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    metrics_http(h->o.metrics, status);
    return ok;
}

static enum MHD_Result queue_error(struct http *h, struct MHD_Connection *c, int status,
                                   const char *code, const char *msg) {
    struct api_error err;
    api_error_set(&err, status, status >= 500 ? "server_error" : "invalid_request_error", code,
                  NULL, "%s", msg);
    char *body = api_build_error(&err);
    return queue(h, c, status, NULL, body, body ? strlen(body) : 0);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    struct stream *s = cls;
    ssize_t n = s->rs.next(s->rs.ctx, buf, max);
    if (n > 0) return n;
    if (n == 0) {
        s->completed = 1;
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* MHD calls this when the response is destroyed: after the last byte, or when the client
 * went away mid-stream. */
static void stream_free(void *cls) {
    struct stream *s = cls;
    if (s->rs.done) s->rs.done(s->rs.ctx, s->completed);
    free(s);
}

static enum MHD_Result respond(struct http *h, struct MHD_Connection *c, struct http_resp *rs) {
    if (rs->body || !rs->next) {
        if (!rs->body && !rs->next) return queue_error(h, c, 500, "internal_error", "no response");
        return queue(h, c, rs->status, rs->content_type, rs->body, rs->body_len);
    }
    struct stream *s = calloc(1, sizeof *s);
    if (!s) {
        if (rs->done) rs->done(rs->ctx, 0);
        return MHD_NO;
    }
    s->rs = *rs;
    /* 16 KiB blocks: a chunk per SSE event in practice, since next() returns what it has. */
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, s, stream_free);
    if (!r) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            rs->content_type ? rs->content_type : "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)rs->status, r);
    MHD_destroy_response(r); /* the connection holds its own reference */
    metrics_http(h->o.metrics, rs->status);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    struct http *h = cls;
    size_t max_body = h->o.max_body ? h->o.max_body : (size_t)1 << 20;
    struct conn_state *st = *con_cls;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st) return MHD_NO;
        *con_cls = st;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || end == cl || v > max_body) {
                st->too_big = 1;
                st->answered = 1;
                char msg[128];
                snprintf(msg, sizeof msg, "request body is larger than %zu bytes", max_body);
                return queue_error(h, c, 413, "request_too_large", msg);
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->answered) return MHD_YES;
        if (st->too_big || st->len + n > max_body) {
            st->too_big = 1;
            free(st->body);
            st->body = NULL;
            st->len = st->cap = 0;
            return MHD_YES;
        }
        if (st->len + n + 1 > st->cap) {
            size_t cap = st->cap ? st->cap : 4096;
            while (cap < st->len + n + 1)
                cap *= 2;
            char *p = realloc(st->body, cap);
            if (!p) return MHD_NO;
            st->body = p;
            st->cap = cap;
        }
        memcpy(st->body + st->len, upload_data, n);
        st->len += n;
        st->body[st->len] = 0;
        return MHD_YES;
    }
    if (st->answered) return MHD_YES;
    if (st->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body is larger than %zu bytes", max_body);
        return queue_error(h, c, 413, "request_too_large", msg);
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct http_req rq = {.method = method,
                          .path = url,
                          .body = st->body ? st->body : "",
                          .body_len = st->len,
                          .fd = ci ? ci->connect_fd : -1};
    struct http_resp rs = {.status = 200};
    h->o.handler(h->o.ctx, &rq, &rs);
    return respond(h, c, &rs);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    struct conn_state *st = *con_cls;
    if (st) {
        free(st->body);
        free(st);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = 0;
    BT_LOG(WARN, "http", "mhd: %s", buf);
}

int http_open(http_t **out, const struct http_opts *o, bt_err *e) {
    *out = NULL;
    const char *host = o->host ? o->host : "127.0.0.1";
    if (o->port < 0 || o->port > 65535 || !o->handler)
        return bt_fail(e, BT_EINVAL, "http: bad port %d or no handler", o->port);
    struct sockaddr_in6 a6 = {0};
    struct sockaddr_in a4 = {0};
    const struct sockaddr *sa;
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)o->port);
        sa = (const struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)o->port);
        sa = (const struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        return bt_fail(e, BT_EINVAL, "http: host '%s' is not a numeric IPv4/IPv6 address", host);
    }
    struct http *h = calloc(1, sizeof *h);
    if (!h) return bt_fail(e, -ENOMEM, "http: out of memory");
    h->o = *o;
    /* The logger goes first: whatever MHD reports before it has parsed this option (problems
     * with earlier options included) goes to MHD's own stderr logger instead of ours. */
    h->d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->max_conns > 0 ? o->max_conns : 256),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!h->d) {
        int err = errno ? errno : EADDRINUSE;
        free(h);
        return bt_fail(e, -err, "http: cannot listen on %s:%d", host, o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    BT_LOG(INFO, "http", "listening host=%s port=%d", host, h->port);
    *out = h;
    return 0;
}

void http_close(http_t *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h);
}

int http_port(const http_t *h) {
    return h->port;
}
