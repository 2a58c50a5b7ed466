/* client/http_client.c: see http_client.h. Sockets are non-blocking and every wait goes
 * through poll() with the call's timeout, so a silent server never hangs a client thread. */
#include "client/http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------- URLs */

int http_url_parse(const char *s, struct http_url *u, bt_err *e) {
    if (!s || !*s) return bt_fail(e, BT_EINVAL, "url: empty");
    memset(u, 0, sizeof *u);
    u->port = 80;
    const char *p = s;
    if (!strncasecmp(p, "http://", 7))
        p += 7;
    else if (!strncasecmp(p, "https://", 8))
        return bt_fail(e, BT_EUNSUPPORTED, "url %s: https is not supported (plain http only)", s);
    else if (strstr(p, "://"))
        return bt_fail(e, BT_EINVAL, "url %s: only http:// URLs", s);
    const char *host = p, *host_end;
    if (*p == '[') { /* IPv6 literal */
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) return bt_fail(e, BT_EINVAL, "url %s: unterminated [ in host", s);
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof u->host)
        return bt_fail(e, BT_EINVAL, "url %s: missing or too long host", s);
    memcpy(u->host, host, hlen);
    u->host[hlen] = 0;
    /* names and IPv4 (letters, digits, - . _), or inside [] an IPv6 literal (hex, : . %) */
    if (strspn(u->host, host == s || host[-1] != '['
                            ? "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
                            : "0123456789abcdefABCDEF:.%") != hlen)
        return bt_fail(e, BT_EINVAL, "url %s: bad character in host '%s'", s, u->host);
    if (*p == ':') {
        p++;
        long port = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6)
            port = port * 10 + (*p++ - '0'), digits++;
        if (!digits || port < 1 || port > 65535 || (*p && *p != '/'))
            return bt_fail(e, BT_EINVAL, "url %s: port must be 1..65535", s);
        u->port = (int)port;
    } else if (*p && *p != '/') {
        return bt_fail(e, BT_EINVAL, "url %s: unexpected '%c' after the host", s, *p);
    }
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    if (plen >= sizeof u->path) return bt_fail(e, BT_EINVAL, "url %s: path too long", s);
    memcpy(u->path, p, plen);
    u->path[plen] = 0;
    if (strpbrk(u->path, " \t\r\n?#"))
        return bt_fail(e, BT_EINVAL, "url %s: path with spaces, query or fragment", s);
    return 0;
}

int http_url_endpoint(const struct http_url *u, const char *route, char *out, size_t cap,
                      bt_err *e) {
    size_t plen = strlen(u->path);
    /* OpenAI clients take base URLs ending in /v1; do not make that /v1/v1/... */
    if (plen >= 3 && !strcmp(u->path + plen - 3, "/v1") && !strncmp(route, "/v1/", 4)) plen -= 3;
    int n = snprintf(out, cap, "%.*s%s", (int)plen, u->path, route);
    if (n < 0 || (size_t)n >= cap)
        return bt_fail(e, BT_EMSGSIZE, "url path %s%s too long", u->path, route);
    return 0;
}

/* ---------------------------------------------------------------- chunked decoding */

enum {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LINE,
    CH_END_LF,
    CH_DONE
};

void http_chunked_init(struct http_chunked *c) {
    memset(c, 0, sizeof *c);
    c->state = CH_SIZE;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The size line ended: start the data or, for size 0, the trailer. */
static int end_size_line(struct http_chunked *c, bt_err *e) {
    if (!c->digits) return bt_fail(e, BT_EPROTO, "chunked body: size line without hex digits");
    c->state = c->remaining ? CH_DATA : CH_TRAILER;
    return 0;
}

int http_chunked_feed(struct http_chunked *c, char *buf, size_t n, size_t *out_n, size_t *used,
                      bt_err *e) {
    size_t i = 0, w = 0;
    while (i < n && c->state != CH_DONE) {
        char ch = buf[i];
        switch (c->state) {
        case CH_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (c->remaining >> 56) /* 2^60 and up: nobody sends that, and it would wrap */
                    return bt_fail(e, BT_EMSGSIZE, "chunked body: chunk size over 2^60");
                c->remaining = c->remaining * 16 + (uint64_t)v;
                c->digits++;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                if (!c->digits)
                    return bt_fail(e, BT_EPROTO, "chunked body: size line without hex digits");
                c->state = CH_EXT;
            } else if (ch == '\r') {
                if (!c->digits)
                    return bt_fail(e, BT_EPROTO, "chunked body: size line without hex digits");
                c->state = CH_SIZE_LF;
            } else if (ch == '\n') { /* bare LF: tolerated, as most clients do */
                int rc = end_size_line(c, e);
                if (rc) return rc;
            } else {
                return bt_fail(e, BT_EPROTO, "chunked body: byte 0x%02x in a size line",
                               (unsigned char)ch);
            }
            i++;
            break;
        }
        case CH_EXT: /* chunk extensions: ignored up to the line end */
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == '\n') {
                int rc = end_size_line(c, e);
                if (rc) return rc;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return bt_fail(e, BT_EPROTO, "chunked body: CR without LF after a size line");
            i++;
            {
                int rc = end_size_line(c, e);
                if (rc) return rc;
            }
            break;
        case CH_DATA: {
            size_t take = n - i;
            if ((uint64_t)take > c->remaining) take = (size_t)c->remaining;
            memmove(buf + w, buf + i, take); /* w <= i always: output never outruns input */
            w += take, i += take;
            c->remaining -= take;
            if (!c->remaining) c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch == '\r')
                c->state = CH_DATA_LF;
            else if (ch == '\n')
                c->state = CH_SIZE, c->digits = 0;
            else
                return bt_fail(e, BT_EPROTO, "chunked body: chunk data longer than its size");
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return bt_fail(e, BT_EPROTO, "chunked body: CR without LF after chunk data");
            c->state = CH_SIZE, c->digits = 0;
            i++;
            break;
        case CH_TRAILER: /* at the start of a trailer line; an empty one ends the body */
            if (ch == '\r')
                c->state = CH_END_LF;
            else if (ch == '\n')
                c->state = CH_DONE;
            else
                c->state = CH_TRAILER_LINE;
            i++;
            break;
        case CH_TRAILER_LINE:
            if (ch == '\n') c->state = CH_TRAILER;
            i++;
            break;
        case CH_END_LF:
            if (ch != '\n') return bt_fail(e, BT_EPROTO, "chunked body: CR without LF at the end");
            c->state = CH_DONE;
            i++;
            break;
        default:
            break;
        }
    }
    c->done = c->state == CH_DONE;
    *out_n = w;
    *used = i;
    return 0;
}

/* ---------------------------------------------------------------- SSE */

void sse_init(struct sse_parser *p, sse_event_fn fn, void *ctx) {
    memset(p, 0, sizeof *p);
    p->on_event = fn;
    p->ctx = ctx;
}

void sse_free(struct sse_parser *p) {
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *nb = realloc(*buf, nc);
    if (!nb) return -ENOMEM;
    *buf = nb;
    *cap = nc;
    return 0;
}

/* One complete line (without its end) of the stream. */
static int sse_line(struct sse_parser *p, bt_err *e) {
    const char *l = p->line;
    size_t n = p->line_len;
    if (n == 0) { /* blank line: dispatch */
        int rc = 0;
        if (p->has_data && p->data_len > 0) {
            p->data[p->data_len] = 0;
            rc = p->on_event(p->ctx, p->event, p->data, p->data_len);
        }
        p->data_len = 0, p->has_data = 0, p->event[0] = 0;
        return rc;
    }
    if (l[0] == ':') /* comment (keep-alive) */
        return 0;
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *val = colon ? colon + 1 : l + n;
    size_t vlen = (size_t)(l + n - val);
    if (vlen && *val == ' ') val++, vlen--;
    if (flen == 4 && !memcmp(l, "data", 4)) {
        /* data lines join with '\n'; +2 leaves room for it and the NUL */
        if (grow(&p->data, &p->data_cap, p->data_len + vlen + 2))
            return bt_fail(e, -ENOMEM, "sse: event data of %zu bytes", p->data_len + vlen);
        if (p->has_data) p->data[p->data_len++] = '\n';
        memcpy(p->data + p->data_len, val, vlen);
        p->data_len += vlen;
        p->data[p->data_len] = 0;
        p->has_data = 1;
    } else if (flen == 5 && !memcmp(l, "event", 5)) {
        size_t k = vlen < sizeof p->event - 1 ? vlen : sizeof p->event - 1;
        memcpy(p->event, val, k);
        p->event[k] = 0;
    } /* id, retry and unknown fields: nothing a client of ours uses */
    return 0;
}

int sse_feed(struct sse_parser *p, const char *buf, size_t n, bt_err *e) {
    size_t max_line = p->max_line ? p->max_line : (size_t)8 << 20;
    for (size_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (p->after_cr) {
            p->after_cr = 0;
            if (ch == '\n') /* CRLF: the line already ended at the CR */
                continue;
        }
        if (ch == '\r' || ch == '\n') {
            p->after_cr = ch == '\r';
            int rc = sse_line(p, e);
            p->line_len = 0;
            if (rc) return rc;
            continue;
        }
        /* copy the run of ordinary bytes at once */
        size_t j = i;
        while (j < n && buf[j] != '\r' && buf[j] != '\n')
            j++;
        size_t run = j - i;
        if (p->line_len + run > max_line)
            return bt_fail(e, BT_EMSGSIZE, "sse: line longer than %zu bytes", max_line);
        if (grow(&p->line, &p->line_cap, p->line_len + run + 1))
            return bt_fail(e, -ENOMEM, "sse: line of %zu bytes", p->line_len + run);
        memcpy(p->line + p->line_len, buf + i, run);
        p->line_len += run;
        i = j - 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- connection */

#define HDR_MAX (64 * 1024)

enum body_mode { BODY_LEN, BODY_CHUNKED, BODY_CLOSE };

struct http_call {
    int fd;
    int timeout_ms;
    int status;
    char ctype[128];
    enum body_mode mode;
    uint64_t left; /* BODY_LEN: bytes still to read */
    struct http_chunked ch;
    char *raw; /* bytes read past the headers, not yet handed out */
    size_t raw_pos, raw_len;
    int eof;
};

static int wait_fd(int fd, short ev, int timeout_ms, const char *what, bt_err *e) {
    struct pollfd pf = {.fd = fd, .events = ev};
    for (;;) {
        int r = poll(&pf, 1, timeout_ms);
        if (r > 0) return 0;
        if (r == 0) return bt_fail(e, BT_ETIMEDOUT, "%s: no progress in %d ms", what, timeout_ms);
        if (errno != EINTR) return bt_fail(e, -errno, "%s: poll: %s", what, strerror(errno));
    }
}

static int connect_to(const struct http_url *u, int timeout_ms, int *fd_out, bt_err *e) {
    char port[16];
    snprintf(port, sizeof port, "%d", u->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(u->host, port, &hints, &res);
    if (g) return bt_fail(e, -EHOSTUNREACH, "resolve %s: %s", u->host, gai_strerror(g));
    int rc = bt_fail(e, -ECONNREFUSED, "connect %s:%d: no address", u->host, u->port);
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            rc = bt_fail(e, -errno, "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* small SSE frames */
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            *fd_out = fd;
            freeaddrinfo(res);
            return 0;
        }
        if (errno == EINPROGRESS) {
            char what[300];
            snprintf(what, sizeof what, "connect %s:%d", u->host, u->port);
            rc = wait_fd(fd, POLLOUT, timeout_ms, what, e);
            if (!rc) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
                if (!err) {
                    *fd_out = fd;
                    freeaddrinfo(res);
                    return 0;
                }
                rc = bt_fail(e, -err, "connect %s:%d: %s", u->host, u->port, strerror(err));
            }
        } else {
            rc = bt_fail(e, -errno, "connect %s:%d: %s", u->host, u->port, strerror(errno));
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

static int send_all(int fd, const char *p, size_t n, int timeout_ms, bt_err *e) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k, n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLOUT, timeout_ms, "send request", e);
            if (rc) return rc;
            continue;
        }
        return bt_fail(e, -errno, "send request: %s", strerror(errno));
    }
    return 0;
}

/* recv with the call's timeout: > 0 bytes, 0 on orderly close, or a negative code. */
static ssize_t recv_some(struct http_call *c, char *buf, size_t cap, bt_err *e) {
    for (;;) {
        ssize_t k = recv(c->fd, buf, cap, 0);
        if (k >= 0) return k;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(c->fd, POLLIN, c->timeout_ms, "read response", e);
            if (rc) return rc;
            continue;
        }
        return bt_fail(e, -errno, "read response: %s", strerror(errno));
    }
}

/* Header value with surrounding blanks trimmed, into out. */
static void header_value(const char *v, const char *end, char *out, size_t cap) {
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    size_t n = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
    memcpy(out, v, n);
    out[n] = 0;
}

/* Parses the status line and headers in hdr[0..n) (ending with the blank line). */
static int parse_head(struct http_call *c, const char *hdr, size_t n, bt_err *e) {
    const char *end = hdr + n, *eol = memchr(hdr, '\n', n);
    if (!eol || n < 12 || memcmp(hdr, "HTTP/1.", 7))
        return bt_fail(e, BT_EPROTO, "response: not an HTTP/1.x status line");
    if (hdr[8] != ' ' || hdr[9] < '1' || hdr[9] > '5' || hdr[10] < '0' || hdr[10] > '9' ||
        hdr[11] < '0' || hdr[11] > '9')
        return bt_fail(e, BT_EPROTO, "response: bad status code in '%.12s'", hdr);
    c->status = (hdr[9] - '0') * 100 + (hdr[10] - '0') * 10 + (hdr[11] - '0');
    int have_len = 0, chunked = 0;
    uint64_t len = 0;
    for (const char *l = eol + 1; l < end;) {
        const char *le = memchr(l, '\n', (size_t)(end - l));
        if (!le) le = end;
        const char *colon = memchr(l, ':', (size_t)(le - l));
        if (colon) {
            char v[256];
            header_value(colon + 1, le, v, sizeof v);
            size_t nl = (size_t)(colon - l);
            if (nl == 14 && !strncasecmp(l, "content-length", 14)) {
                char *ep;
                errno = 0;
                unsigned long long x = strtoull(v, &ep, 10);
                if (errno || ep == v || *ep || v[0] == '-')
                    return bt_fail(e, BT_EPROTO, "response: Content-Length '%s'", v);
                len = x, have_len = 1;
            } else if (nl == 17 && !strncasecmp(l, "transfer-encoding", 17)) {
                chunked = strcasestr(v, "chunked") != NULL;
            } else if (nl == 12 && !strncasecmp(l, "content-type", 12)) {
                snprintf(c->ctype, sizeof c->ctype, "%.127s", v);
            }
        }
        l = le + 1;
    }
    if (c->status == 204 || c->status == 304)
        c->mode = BODY_LEN, c->left = 0;
    else if (chunked)
        c->mode = BODY_CHUNKED, http_chunked_init(&c->ch);
    else if (have_len)
        c->mode = BODY_LEN, c->left = len;
    else
        c->mode = BODY_CLOSE;
    return 0;
}

static int read_head(struct http_call *c, bt_err *e) {
    char *hdr = malloc(HDR_MAX);
    if (!hdr) return bt_fail(e, -ENOMEM, "response header buffer");
    size_t n = 0;
    for (;;) {
        ssize_t k = recv_some(c, hdr + n, HDR_MAX - n, e);
        if (k < 0) {
            free(hdr);
            return (int)k;
        }
        if (k == 0) {
            free(hdr);
            return bt_fail(e, -ECONNRESET, "connection closed before the response headers");
        }
        size_t from = n >= 3 ? n - 3 : 0;
        n += (size_t)k;
        char *t = memmem(hdr + from, n - from, "\r\n\r\n", 4);
        if (t) {
            size_t hl = (size_t)(t - hdr) + 4;
            int rc = parse_head(c, hdr, hl, e);
            if (rc) {
                free(hdr);
                return rc;
            }
            if (c->status == 100) { /* interim response: the real one follows */
                memmove(hdr, hdr + hl, n - hl);
                n -= hl;
                continue;
            }
            c->raw = hdr; /* the body bytes already read stay in this buffer */
            c->raw_pos = hl;
            c->raw_len = n;
            return 0;
        }
        if (n == HDR_MAX) {
            free(hdr);
            return bt_fail(e, BT_EMSGSIZE, "response headers over %d bytes", HDR_MAX);
        }
    }
}

int http_call_open(http_call_t **out, const struct http_url *u, const struct http_call_opts *o,
                   bt_err *e) {
    *out = NULL;
    struct http_call *c = calloc(1, sizeof *c);
    if (!c) return bt_fail(e, -ENOMEM, "http call");
    c->fd = -1;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 60000;
    int rc = connect_to(u, c->timeout_ms, &c->fd, e);
    if (rc) goto fail;
    char head[2048];
    int v6 = strchr(u->host, ':') != NULL;
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: baton\r\n"
                      "Connection: close\r\n",
                      o->method, o->path[0] ? o->path : "/", v6 ? "[" : "", u->host, v6 ? "]" : "",
                      u->port);
    if (o->accept && hn > 0 && (size_t)hn < sizeof head)
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "Accept: %s\r\n", o->accept);
    if (o->body && hn > 0 && (size_t)hn < sizeof head)
        hn += snprintf(head + hn, sizeof head - (size_t)hn,
                       "Content-Type: %s\r\nContent-Length: %zu\r\n",
                       o->content_type ? o->content_type : "application/json", o->body_len);
    if (hn > 0 && (size_t)hn < sizeof head)
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "\r\n");
    if (hn < 0 || (size_t)hn >= sizeof head) {
        rc = bt_fail(e, BT_EMSGSIZE, "request head for %s too long", o->path);
        goto fail;
    }
    if ((rc = send_all(c->fd, head, (size_t)hn, c->timeout_ms, e))) goto fail;
    if (o->body && (rc = send_all(c->fd, o->body, o->body_len, c->timeout_ms, e))) goto fail;
    if ((rc = read_head(c, e))) goto fail;
    *out = c;
    return 0;
fail:
    http_call_close(c);
    return rc;
}

int http_call_status(const http_call_t *c) {
    return c->status;
}

const char *http_call_content_type(const http_call_t *c) {
    return c->ctype;
}

/* Raw body bytes (before de-chunking): first what came with the headers, then the socket. */
static ssize_t raw_read(struct http_call *c, char *buf, size_t cap, bt_err *e) {
    if (c->raw_pos < c->raw_len) {
        size_t k = c->raw_len - c->raw_pos < cap ? c->raw_len - c->raw_pos : cap;
        memcpy(buf, c->raw + c->raw_pos, k);
        c->raw_pos += k;
        return (ssize_t)k;
    }
    if (c->eof) return 0;
    ssize_t k = recv_some(c, buf, cap, e);
    if (k == 0) c->eof = 1;
    return k;
}

ssize_t http_call_read(http_call_t *c, char *buf, size_t cap, bt_err *e) {
    if (cap == 0) return bt_fail(e, BT_EINVAL, "http_call_read: empty buffer");
    switch (c->mode) {
    case BODY_CLOSE:
        return raw_read(c, buf, cap, e);
    case BODY_LEN: {
        if (c->left == 0) return 0;
        size_t want = (uint64_t)cap < c->left ? cap : (size_t)c->left;
        ssize_t k = raw_read(c, buf, want, e);
        if (k == 0)
            return bt_fail(e, BT_EPROTO, "connection closed with %llu body bytes missing",
                           (unsigned long long)c->left);
        if (k > 0) c->left -= (uint64_t)k;
        return k;
    }
    case BODY_CHUNKED:
        while (!c->ch.done) {
            ssize_t k = raw_read(c, buf, cap, e);
            if (k < 0) return k;
            if (k == 0) return bt_fail(e, BT_EPROTO, "connection closed inside a chunked body");
            size_t out_n, used;
            int rc = http_chunked_feed(&c->ch, buf, (size_t)k, &out_n, &used, e);
            if (rc) return rc;
            if (out_n) return (ssize_t)out_n;
        }
        return 0;
    }
    return 0;
}

int http_call_read_all(http_call_t *c, size_t max, char **body, size_t *len, bt_err *e) {
    size_t n = 0, cap = 4096;
    char *b = malloc(cap);
    if (!b) return bt_fail(e, -ENOMEM, "response body");
    for (;;) {
        if (cap - n < 2048) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return bt_fail(e, -ENOMEM, "response body of %zu bytes", n);
            }
            b = nb, cap *= 2;
        }
        ssize_t k = http_call_read(c, b + n, cap - n - 1, e);
        if (k < 0) {
            free(b);
            return (int)k;
        }
        if (k == 0) break;
        n += (size_t)k;
        if (n > max) {
            free(b);
            return bt_fail(e, BT_EMSGSIZE, "response body over %zu bytes", max);
        }
    }
    b[n] = 0;
    *body = b;
    *len = n;
    return 0;
}

void http_call_close(http_call_t *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->raw);
    free(c);
}

int http_fetch(const struct http_url *u, const struct http_call_opts *o, int *status, char **body,
               size_t *len, bt_err *e) {
    http_call_t *c;
    int rc = http_call_open(&c, u, o, e);
    if (rc) return rc;
    *status = c->status;
    rc = http_call_read_all(c, (size_t)64 << 20, body, len, e);
    http_call_close(c);
    return rc;
}
