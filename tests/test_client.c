/* tests/test_client.c: the pure parts of the `baton` network client (client/http_client,
 * client/load_stats): URL parsing, chunked transfer decoding and SSE parsing with input split
 * at every position, percentile and length-distribution math; then client/oai_client against
 * a canned server on a loopback socket (chunked SSE in small pieces, a silent server, a closed
 * port). The client modules come from libclient.a. */
#include "client/http_client.h"
#include "client/load_stats.h"
#include "client/oai_client.h"
#include "common/clock.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ URLs */

Test(client, url_forms) {
    struct http_url u;
    bt_err e = {0};
    cr_assert_eq(http_url_parse("127.0.0.1:8080", &u, &e), 0, "%s", e.msg);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 8080);
    cr_assert_str_eq(u.path, "");
    cr_assert_eq(http_url_parse("http://example.org", &u, &e), 0);
    cr_assert_str_eq(u.host, "example.org");
    cr_assert_eq(u.port, 80);
    cr_assert_eq(http_url_parse("HTTP://h:1/v1/", &u, &e), 0);
    cr_assert_str_eq(u.host, "h");
    cr_assert_eq(u.port, 1);
    cr_assert_str_eq(u.path, "/v1");
    cr_assert_eq(http_url_parse("http://[::1]:9000/a/b", &u, &e), 0);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 9000);
    cr_assert_str_eq(u.path, "/a/b");
    cr_assert_eq(http_url_parse("localhost/", &u, &e), 0);
    cr_assert_str_eq(u.host, "localhost");
    cr_assert_str_eq(u.path, "");
}

Test(client, url_rejects) {
    const char *bad[] = {"",         "https://h:1", "ftp://h", "h:0",       "h:65536",
                         "h:80x",    "h:",          "[::1:80", ":80",       "http://",
                         "h:123456", "h?x",         "h:1/a b", "h:1/a?q=1", "h:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct http_url u;
        bt_err e = {0};
        int rc = http_url_parse(bad[i], &u, &e);
        cr_expect_lt(rc, 0, "'%s' accepted", bad[i]);
        cr_expect_neq(e.msg[0], 0, "'%s': no message", bad[i]);
    }
}

Test(client, url_endpoint) {
    struct http_url u;
    char out[1100];
    const char *cases[][2] = {{"h:1", "/v1/models"},
                              {"http://h:1/", "/v1/models"},
                              {"http://h:1/v1", "/v1/models"},
                              {"http://h:1/proxy", "/proxy/v1/models"},
                              {"http://h:1/proxy/v1/", "/proxy/v1/models"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cr_assert_eq(http_url_parse(cases[i][0], &u, NULL), 0);
        cr_assert_eq(http_url_endpoint(&u, "/v1/models", out, sizeof out, NULL), 0);
        cr_expect_str_eq(out, cases[i][1], "%s", cases[i][0]);
    }
    cr_assert_eq(http_url_endpoint(&u, "/v1/models", out, 5, NULL), BT_EMSGSIZE);
}

/* ------------------------------------------------------------------ chunked */

/* Decodes in in pieces cut at the given positions (sorted, < n); returns the body. */
static int dechunk(const char *in, size_t n, const size_t *cuts, int n_cuts, char *out,
                   size_t *out_len, int *done) {
    struct http_chunked c;
    http_chunked_init(&c);
    char buf[512];
    size_t pos = 0, w = 0;
    for (int k = 0; k <= n_cuts; k++) {
        size_t end = k < n_cuts ? cuts[k] : n;
        size_t len = end - pos;
        memcpy(buf, in + pos, len);
        size_t on, used;
        bt_err e = {0};
        int rc = http_chunked_feed(&c, buf, len, &on, &used, &e);
        if (rc) return rc;
        memcpy(out + w, buf, on);
        w += on;
        pos = end;
    }
    *out_len = w;
    *done = c.done;
    return 0;
}

static const char chunked_msg[] = "5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n"
                                  "0\r\nX-Trailer: 1\r\n\r\n";

Test(client, chunked_every_split) {
    size_t n = strlen(chunked_msg);
    char out[256];
    size_t on;
    int done;
    cr_assert_eq(dechunk(chunked_msg, n, NULL, 0, out, &on, &done), 0);
    cr_assert_eq(on, 16);
    cr_assert_eq(memcmp(out, "hello 0123456789", 16), 0);
    cr_assert(done);
    for (size_t i = 1; i < n; i++) /* two pieces, cut everywhere */
        for (size_t j = i; j < n; j += 7) {
            size_t cuts[2] = {i, j};
            cr_assert_eq(dechunk(chunked_msg, n, cuts, 2, out, &on, &done), 0, "cut %zu %zu", i, j);
            cr_assert_eq(on, 16, "cut %zu %zu", i, j);
            cr_assert_eq(memcmp(out, "hello 0123456789", 16), 0, "cut %zu %zu", i, j);
            cr_assert(done);
        }
    size_t ones[sizeof chunked_msg]; /* one byte at a time */
    for (size_t i = 0; i + 1 < n; i++)
        ones[i] = i + 1;
    cr_assert_eq(dechunk(chunked_msg, n, ones, (int)n - 1, out, &on, &done), 0);
    cr_assert_eq(on, 16);
    cr_assert(done);
}

Test(client, chunked_stops_after_body) {
    struct http_chunked c;
    http_chunked_init(&c);
    char buf[] = "3\r\nabc\r\n0\r\n\r\nEXTRA";
    size_t on, used;
    cr_assert_eq(http_chunked_feed(&c, buf, strlen(buf), &on, &used, NULL), 0);
    cr_assert_eq(on, 3);
    cr_assert_eq(used, strlen(buf) - 5);
    cr_assert(c.done);
}

Test(client, chunked_rejects) {
    const char *bad[] = {"\r\n",          "zz\r\n",           "5\rhello",
                         "3\r\nabcd\r\n", "3\r\nabc\rX",      "0\r\n\rX",
                         ";x\r\n",        "1\r\na\r\n-1\r\n", "FFFFFFFFFFFFFFFFF\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct http_chunked c;
        http_chunked_init(&c);
        char buf[64];
        snprintf(buf, sizeof buf, "%s", bad[i]);
        size_t on, used;
        bt_err e = {0};
        int rc = http_chunked_feed(&c, buf, strlen(buf), &on, &used, &e);
        cr_expect_lt(rc, 0, "'%s' accepted", bad[i]);
    }
}

/* ------------------------------------------------------------------ SSE */

struct events {
    int n;
    char ev[16][64];
    char data[16][256];
};

static int collect(void *ctx, const char *event, const char *data, size_t len) {
    struct events *x = ctx;
    cr_assert_lt(x->n, 16);
    cr_assert_eq(strlen(data), len);
    snprintf(x->ev[x->n], sizeof x->ev[0], "%s", event);
    snprintf(x->data[x->n], sizeof x->data[0], "%s", data);
    x->n++;
    return 0;
}

static const char sse_stream[] = ": keep-alive\r\n"
                                 "data: {\"a\":1}\r\n\r\n"
                                 "event: ping\ndata:x\ndata:  y\n\n"
                                 "data\n\n"  /* a field without colon: empty data */
                                 "data:\n\n" /* empty data: no event */
                                 "id: 3\rdata: cr\r\r"
                                 "data: [DONE]\n\n"
                                 "data: unfinished";

static void check_events(const struct events *x) {
    cr_assert_eq(x->n, 4);
    cr_assert_str_eq(x->data[0], "{\"a\":1}");
    cr_assert_str_eq(x->ev[0], "");
    cr_assert_str_eq(x->ev[1], "ping");
    cr_assert_str_eq(x->data[1], "x\n y");
    cr_assert_str_eq(x->data[2], "cr");
    cr_assert_str_eq(x->data[3], "[DONE]");
}

Test(client, sse_every_split) {
    size_t n = strlen(sse_stream);
    for (size_t i = 0; i <= n; i++)
        for (size_t j = i; j <= n; j += 5) {
            struct events x = {0};
            struct sse_parser p;
            sse_init(&p, collect, &x);
            cr_assert_eq(sse_feed(&p, sse_stream, i, NULL), 0);
            cr_assert_eq(sse_feed(&p, sse_stream + i, j - i, NULL), 0);
            cr_assert_eq(sse_feed(&p, sse_stream + j, n - j, NULL), 0);
            check_events(&x);
            sse_free(&p);
        }
    struct events x = {0}; /* a byte at a time */
    struct sse_parser p;
    sse_init(&p, collect, &x);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(sse_feed(&p, sse_stream + i, 1, NULL), 0);
    check_events(&x);
    sse_free(&p);
}

static int stop_at_second(void *ctx, const char *event, const char *data, size_t len) {
    int *n = ctx;
    (void)event, (void)data, (void)len;
    return ++*n == 2 ? 7 : 0;
}

Test(client, sse_stop_and_limits) {
    int n = 0;
    struct sse_parser p;
    sse_init(&p, stop_at_second, &n);
    const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    cr_assert_eq(sse_feed(&p, s, strlen(s), NULL), 7);
    cr_assert_eq(n, 2);
    sse_free(&p);
    struct events x = {0};
    sse_init(&p, collect, &x);
    p.max_line = 16;
    bt_err e = {0};
    const char *longl = "data: 0123456789abcdef\n\n";
    cr_assert_eq(sse_feed(&p, longl, strlen(longl), &e), BT_EMSGSIZE);
    cr_assert_eq(x.n, 0);
    sse_free(&p);
}

/* ------------------------------------------------------------------ statistics */

Test(client, percentiles) {
    struct load_samples s = {0};
    cr_assert(isnan(load_percentile(&s, 50)));
    cr_assert(isnan(load_mean(&s)));
    const double v[] = {7, 1, 10, 3, 2, 9, 4, 8, 6, 5}; /* 1..10 shuffled */
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(load_samples_add(&s, v[i]), 0);
    cr_assert_float_eq(load_percentile(&s, 50), 5.5, 1e-12);
    cr_assert_float_eq(load_percentile(&s, 90), 9.1, 1e-12);
    cr_assert_float_eq(load_percentile(&s, 99), 9.91, 1e-12);
    cr_assert_float_eq(load_percentile(&s, 0), 1.0, 1e-12);
    cr_assert_float_eq(load_percentile(&s, 100), 10.0, 1e-12);
    cr_assert_float_eq(load_mean(&s), 5.5, 1e-12);
    struct load_samples t = {0};
    cr_assert_eq(load_samples_add(&t, 42), 0);
    cr_assert_float_eq(load_percentile(&t, 99), 42.0, 1e-12);
    cr_assert_eq(load_samples_merge(&t, &s), 0); /* adding after a sort re-sorts */
    cr_assert_eq(t.n, 11);
    cr_assert_float_eq(load_percentile(&t, 100), 42.0, 1e-12);
    cr_assert_float_eq(load_percentile(&t, 50), 6.0, 1e-12);
    load_samples_free(&s);
    load_samples_free(&t);
}

Test(client, dist_parse) {
    struct load_dist d;
    char txt[64];
    cr_assert_eq(load_dist_parse("64", &d, NULL), 0);
    cr_assert_eq(d.kind, DIST_FIXED);
    load_dist_format(&d, txt, sizeof txt);
    cr_assert_str_eq(txt, "64");
    cr_assert_eq(load_dist_parse("32:128", &d, NULL), 0);
    cr_assert_eq(d.kind, DIST_UNIFORM);
    load_dist_format(&d, txt, sizeof txt);
    cr_assert_str_eq(txt, "32:128");
    cr_assert_float_eq(load_dist_mean(&d), 80.0, 1e-12);
    cr_assert_eq(load_dist_parse("normal:64:16", &d, NULL), 0);
    cr_assert_eq(d.kind, DIST_NORMAL);
    load_dist_format(&d, txt, sizeof txt);
    cr_assert_str_eq(txt, "normal:64:16");
    const char *bad[] = {
        "",          "0",          "-1",          "5:3", "abc", "1:2:3", "1.5",     "normal",
        "normal:64", "normal:0:1", "normal:5:-1", "2:",  ":2",  " 4",    "2000000", "4x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bt_err e = {0};
        cr_expect_eq(load_dist_parse(bad[i], &d, &e), BT_EINVAL, "'%s' accepted", bad[i]);
    }
}

Test(client, dist_sample) {
    struct load_dist d;
    uint64_t rng = 5;
    cr_assert_eq(load_dist_parse("7", &d, NULL), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(load_dist_sample(&d, &rng), 7);
    cr_assert_eq(load_dist_parse("3:6", &d, NULL), 0);
    int seen[8] = {0};
    for (int i = 0; i < 4000; i++) {
        int v = load_dist_sample(&d, &rng);
        cr_assert(v >= 3 && v <= 6, "uniform draw %d", v);
        seen[v]++;
    }
    for (int v = 3; v <= 6; v++) /* each of 4 values about 1000 times */
        cr_assert(seen[v] > 850 && seen[v] < 1150, "value %d drawn %d times", v, seen[v]);
    cr_assert_eq(load_dist_parse("normal:100:10", &d, NULL), 0);
    double sum = 0, sq = 0;
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        double v = load_dist_sample(&d, &rng);
        sum += v, sq += v * v;
    }
    double mean = sum / n, sd = sqrt(sq / n - mean * mean);
    cr_assert(fabs(mean - 100) < 0.5, "mean %f", mean);
    cr_assert(fabs(sd - 10) < 0.5, "sd %f", sd);
    cr_assert_eq(load_dist_parse("normal:2:50", &d, NULL), 0); /* clamped to >= 1 */
    for (int i = 0; i < 1000; i++)
        cr_assert_geq(load_dist_sample(&d, &rng), 1);
}

/* ------------------------------------------------------------------ over a socket */

struct canned {
    int lfd;
    const char *const *pieces; /* written one by one with a pause between */
    int n_pieces;
    int silent; /* accept, read the request, then say nothing */
    char request[4096];
};

static void *serve_once(void *p) {
    struct canned *c = p;
    int fd = accept(c->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    size_t n = 0;
    while (n < sizeof c->request - 1 && !strstr(c->request, "\r\n\r\n")) {
        ssize_t k = recv(fd, c->request + n, sizeof c->request - 1 - n, 0);
        if (k <= 0) break;
        n += (size_t)k;
        c->request[n] = 0;
    }
    /* Read the body too: closing with unread bytes would make the kernel send RST, and the
     * client would see a reset instead of the ending the test is about. */
    const char *cl = strstr(c->request, "Content-Length: ");
    const char *end = strstr(c->request, "\r\n\r\n");
    if (cl && end) {
        size_t want = (size_t)(end + 4 - c->request) + strtoul(cl + 16, NULL, 10);
        while (n < want && n < sizeof c->request - 1) {
            ssize_t k = recv(fd, c->request + n, sizeof c->request - 1 - n, 0);
            if (k <= 0) break;
            n += (size_t)k;
            c->request[n] = 0;
        }
    }
    if (c->silent) {
        struct timespec ts = {0, 600 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < c->n_pieces; i++) {
        if (send(fd, c->pieces[i], strlen(c->pieces[i]), MSG_NOSIGNAL) < 0) break;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    return NULL;
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

struct seen {
    int n_deltas, n_tokens;
};

static int count_deltas(void *ctx, const struct oai_delta *d, int64_t t_ns) {
    struct seen *s = ctx;
    (void)t_ns;
    s->n_deltas++;
    s->n_tokens += d->n_tokens;
    return 0;
}

Test(client, oai_stream_over_chunked_sse) {
    /* the SSE body in chunks of 23 bytes, sent in pieces of 13: chunk, event and send bounds
     * all fall in different places */
    static const char body[] =
        "data: {\"choices\":[{\"index\":0,\"text\":\"Hel\",\"token_ids\":[5,6]}]}\n\n"
        ": comment\n\n"
        "data: {\"choices\":[{\"text\":\"lo\",\"token_ids\":[7],\"finish_reason\":\"length\"}]}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n"
        "data: [DONE]\n\n";
    static char raw[2048];
    static char piece_buf[200][14];
    static const char *pieces[200];
    int n = snprintf(raw, sizeof raw,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0, len = strlen(body); off < len; off += 23) {
        size_t k = len - off < 23 ? len - off : 23;
        n += snprintf(raw + n, sizeof raw - (size_t)n, "%zx\r\n%.*s\r\n", k, (int)k, body + off);
    }
    n += snprintf(raw + n, sizeof raw - (size_t)n, "0\r\n\r\n");
    int n_pieces = 0;
    for (int off = 0; off < n; off += 13, n_pieces++) {
        snprintf(piece_buf[n_pieces], sizeof piece_buf[0], "%.13s", raw + off);
        pieces[n_pieces] = piece_buf[n_pieces];
    }
    struct canned c = {.pieces = pieces, .n_pieces = n_pieces};
    int port;
    c.lfd = listen_any(&port);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, serve_once, &c), 0);
    struct http_url u;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    cr_assert_eq(http_url_parse(url, &u, NULL), 0);
    struct oai_result r;
    struct seen s = {0};
    bt_err e = {0};
    int rc = oai_request(&u, "/v1/completions", "{\"x\":1}", 5000, count_deltas, &s, &r, &e);
    pthread_join(th, NULL);
    close(c.lfd);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert(strstr(c.request, "POST /v1/completions HTTP/1.1\r\n"));
    cr_assert(strstr(c.request, "Content-Length: 7\r\n"));
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.text, "Hello");
    cr_assert_eq(r.n_ids, 3);
    cr_assert_eq(r.ids[0], 5);
    cr_assert_eq(r.ids[2], 7);
    cr_assert_eq(r.n_tokens, 3);
    cr_assert_eq(s.n_deltas, 2);
    cr_assert_eq(s.n_tokens, 3);
    cr_assert_eq(r.prompt_tokens, 4);
    cr_assert_eq(r.completion_tokens, 3);
    cr_assert_str_eq(r.finish_reason, "length");
    cr_assert(r.done);
    cr_assert(r.t_first_ns >= r.t_start_ns && r.t_end_ns >= r.t_first_ns);
    oai_result_free(&r);
}

Test(client, oai_error_body_and_cut_stream) {
    static const char *const err_pieces[] = {
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 56\r\n\r\n",
        "{\"error\":{\"message\":\"no such model\",\"code\":\"model_nf\"}}\n"};
    struct canned c = {.pieces = err_pieces, .n_pieces = 2};
    int port;
    c.lfd = listen_any(&port);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, serve_once, &c), 0);
    struct http_url u = {.port = port};
    snprintf(u.host, sizeof u.host, "127.0.0.1");
    struct oai_result r;
    bt_err e = {0};
    int rc = oai_request(&u, "/v1/completions", "{}", 5000, NULL, NULL, &r, &e);
    pthread_join(th, NULL);
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(r.error, "no such model");
    oai_result_free(&r);

    /* a stream that stops without [DONE] is a protocol error, not a success */
    static const char *const cut[] = {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
                                      "data: {\"choices\":[{\"text\":\"a\"}]}\n\n"};
    c = (struct canned){.lfd = c.lfd, .pieces = cut, .n_pieces = 2};
    cr_assert_eq(pthread_create(&th, NULL, serve_once, &c), 0);
    rc = oai_request(&u, "/v1/completions", "{}", 5000, NULL, NULL, &r, &e);
    pthread_join(th, NULL);
    cr_assert_eq(rc, BT_EPROTO);
    cr_assert_str_eq(r.text, "a");
    oai_result_free(&r);
    close(c.lfd);
}

Test(client, timeout_and_refused) {
    struct canned c = {.silent = 1};
    int port;
    c.lfd = listen_any(&port);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, serve_once, &c), 0);
    struct http_url u = {.port = port};
    snprintf(u.host, sizeof u.host, "127.0.0.1");
    struct oai_result r;
    bt_err e = {0};
    int64_t t0 = bt_now_ns();
    int rc = oai_request(&u, "/v1/completions", "{}", 200, NULL, NULL, &r, &e);
    int64_t ms = (bt_now_ns() - t0) / 1000000;
    pthread_join(th, NULL);
    close(c.lfd);
    cr_assert_eq(rc, BT_ETIMEDOUT, "rc=%d %s", rc, e.msg);
    cr_assert(ms >= 150 && ms < 550, "timed out after %lld ms", (long long)ms);
    oai_result_free(&r);
    /* the port is closed now: a connection error, quickly */
    rc = oai_request(&u, "/v1/completions", "{}", 2000, NULL, NULL, &r, &e);
    cr_assert_eq(rc, -ECONNREFUSED, "rc=%d %s", rc, e.msg);
    oai_result_free(&r);
}
