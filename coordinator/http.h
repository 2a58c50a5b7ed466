/* coordinator/http.h: the HTTP server (libmicrohttpd), independent of what it serves.
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a handler may block while a
 * request generates. The body is collected up to max_body bytes (a larger Content-Length or
 * body gets 413 in the OpenAI error shape without reaching the handler), then the handler runs
 * once per request and fills an http_resp: either a whole body, or a stream whose next()
 * callback is called from the connection's thread until it returns 0 (end) or < 0 (abort:
 * the connection is closed). done() runs exactly once per streamed response, also when the
 * client went away, so the handler can cancel work. http_client_gone() tells a blocked handler
 * that the peer closed its socket. Thread-safe: handlers run concurrently. */
#ifndef BT_COORDINATOR_HTTP_H
#define BT_COORDINATOR_HTTP_H
#include "common/err.h"
#include "coordinator/metrics.h"

#include <stddef.h>
#include <sys/types.h>

struct http_req {
    const char *method;
    const char *path; /* without the query string */
    const char *body; /* NUL-terminated copy (may contain NULs before body_len) */
    size_t body_len;
    int fd; /* the client's socket, for http_client_gone() */
};

struct http_resp {
    int status;
    const char *content_type; /* static string; NULL = application/json */
    char *body;               /* malloc'd; the server frees it */
    size_t body_len;
    /* Streaming (body NULL): next() writes up to max bytes into buf and returns the count,
     * 0 at the end, < 0 to abort. done(ctx, completed) runs once when the stream ends
     * (completed = 1) or was cut short (0). */
    ssize_t (*next)(void *ctx, char *buf, size_t max);
    void (*done)(void *ctx, int completed);
    void *ctx;
};

typedef void (*http_handler_fn)(void *ctx, const struct http_req *rq, struct http_resp *rs);

struct http_opts {
    const char *host; /* "127.0.0.1", "0.0.0.0", "::1"; NULL = 127.0.0.1 */
    int port;         /* 0 = ephemeral (see http_port) */
    size_t max_body;  /* 0 = 1 MiB */
    int max_conns;    /* 0 = 256 */
    http_handler_fn handler;
    void *ctx;
    metrics_t *metrics; /* counts responses by status; may be NULL */
};

typedef struct http http_t;

/* Starts listening. -errno / BT_EINVAL (bad host) naming host:port. */
int http_open(http_t **out, const struct http_opts *o, bt_err *e);
/* Stops accepting, waits for connection threads, frees. NULL ok. */
void http_close(http_t *h);
int http_port(const http_t *h); /* the bound port */

/* 1 when the peer of fd has closed or reset the connection (never blocks). */
int http_client_gone(int fd);

#endif
