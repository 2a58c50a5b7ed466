/* client/http_client.h: a small HTTP/1.1 client over plain TCP sockets for the `baton chat`,
 * `complete` and `load` commands (no TLS, no keep-alive: one request per connection, sent with
 * "Connection: close").
 *
 * Layers, each usable alone:
 *   - http_url_parse: "host:port", "http://host[:port][/path]", "[::1]:port" -> host, port, path.
 *   - http_chunked_*: incremental Transfer-Encoding: chunked decoder, in place, any split.
 *   - sse_*: incremental Server-Sent Events parser (text/event-stream): bytes in, one callback
 *     per event (the "data:" lines joined with '\n'), lines split anywhere, CRLF/LF/CR ends.
 *   - http_call_*: one request on one connection; the body is read back piece by piece, already
 *     de-chunked, so a streaming response can be consumed as it arrives.
 * The pure parts (url, chunked, sse) do no I/O and validate every byte; they are unit-tested in
 * tests/test_client.c. A call or parser is used by one thread at a time.
 *
 * Errors: negative codes per common/err.h: -errno for socket failures (-ECONNREFUSED,
 * -ECONNRESET, ...), BT_ETIMEDOUT when the server is silent for timeout_ms, BT_EPROTO for a
 * malformed response, BT_EMSGSIZE for an oversized header or SSE line, BT_EINVAL for bad URLs. */
#ifndef BT_CLIENT_HTTP_CLIENT_H
#define BT_CLIENT_HTTP_CLIENT_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- URLs ---- */
struct http_url {
    char host[256];  /* without the brackets of an IPv6 literal */
    int port;        /* default 80 */
    char path[1024]; /* "" when the URL has none; never ends with '/' */
};

/* Accepts "host:port", "host", "http://host[:port][/path]", with [v6] literals. The path is
 * kept (trailing slashes dropped) as a prefix for http_url_endpoint. BT_EINVAL naming s. */
int http_url_parse(const char *s, struct http_url *u, bt_err *e);

/* The request path for an API route under the URL's prefix: route "/v1/models" with prefix ""
 * or "/" -> "/v1/models"; a prefix that already ends in "/v1" ("http://h:1/v1", as OpenAI
 * clients take it) is not doubled -> "/v1/models"; "/proxy" -> "/proxy/v1/models".
 * BT_EMSGSIZE if it does not fit cap. */
int http_url_endpoint(const struct http_url *u, const char *route, char *out, size_t cap,
                      bt_err *e);

/* ---- chunked transfer decoding ---- */
struct http_chunked {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    int digits;         /* hex digits seen in the size line */
    int done;           /* 1 once the last chunk and the trailer were read */
};

void http_chunked_init(struct http_chunked *c);
/* Decodes n bytes of the chunked stream in buf in place; *out_n = decoded bytes now at the
 * start of buf, *used = input bytes consumed (less than n only once done: what follows the
 * body). BT_EPROTO on a malformed size line or missing CRLF, BT_EMSGSIZE on a chunk size
 * over 2^60. */
int http_chunked_feed(struct http_chunked *c, char *buf, size_t n, size_t *out_n, size_t *used,
                      bt_err *e);

/* ---- Server-Sent Events ---- */
/* Called once per complete event; data is NUL-terminated (len excludes the NUL); event is the
 * "event:" field or "" (the default "message"). Return 0 to go on, non-zero to stop: sse_feed
 * then returns that value. */
typedef int (*sse_event_fn)(void *ctx, const char *event, const char *data, size_t len);

struct sse_parser {
    sse_event_fn on_event;
    void *ctx;
    size_t max_line; /* longest line accepted (0 = 8 MiB) */
    char *line;      /* current partial line */
    size_t line_len, line_cap;
    char *data; /* data of the event being built */
    size_t data_len, data_cap;
    int has_data;
    char event[64];
    int after_cr; /* the last byte was CR: a following LF belongs to the same line end */
};

void sse_init(struct sse_parser *p, sse_event_fn fn, void *ctx);
void sse_free(struct sse_parser *p); /* the buffers; the struct is the caller's */
/* Feeds n bytes. 0, the callback's non-zero value, -ENOMEM, or BT_EMSGSIZE on a line longer
 * than max_line. An event is dispatched at the blank line that ends it; bytes of an
 * unfinished event stay buffered for the next call. */
int sse_feed(struct sse_parser *p, const char *buf, size_t n, bt_err *e);

/* ---- one request ---- */
typedef struct http_call http_call_t;

struct http_call_opts {
    const char *method;       /* "GET", "POST" */
    const char *path;         /* "/v1/completions" */
    const char *content_type; /* of body; NULL = application/json */
    const char *accept;       /* NULL = none sent */
    const char *body;
    size_t body_len;
    int timeout_ms; /* connect, and each wait for bytes; 0 = 60000 */
};

/* Connects, sends the request and reads the status line and headers. On 0, *out holds the
 * call (close with http_call_close) whatever the status; on error *out is NULL. */
int http_call_open(http_call_t **out, const struct http_url *u, const struct http_call_opts *o,
                   bt_err *e);
int http_call_status(const http_call_t *c);
/* The Content-Type header value ("" when absent). */
const char *http_call_content_type(const http_call_t *c);
/* Next bytes of the body (de-chunked): > 0 bytes written to buf, 0 at the end of the body,
 * or a negative code. */
ssize_t http_call_read(http_call_t *c, char *buf, size_t cap, bt_err *e);
/* The rest of the body, NUL-terminated, at most max bytes (BT_EMSGSIZE beyond). *body is
 * malloc'd: caller frees with free(). */
int http_call_read_all(http_call_t *c, size_t max, char **body, size_t *len, bt_err *e);
void http_call_close(http_call_t *c); /* NULL ok */

/* A whole request: status and NUL-terminated body (caller frees with free()). */
int http_fetch(const struct http_url *u, const struct http_call_opts *o, int *status, char **body,
               size_t *len, bt_err *e);

#endif
