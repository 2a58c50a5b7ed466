/* tests/test_transport.c: both backends (ZMQ over tcp://127.0.0.1:*, and INPROC) under the
 * same tests: a server and 2 client threads exchanging multipart messages with 8 MB payloads,
 * zero-copy ownership, deadlines, wakeup, loss of a client and of the server, unknown peers,
 * and transport_poll over several transports. Client threads record results; the main thread
 * asserts. */
#include "common/clock.h"
#include "proto/transport.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIG (8u << 20)

static int server_open(transport_t **s, enum transport_kind kind, const char *name, int hb_ms) {
    struct transport_opts o = {.kind = kind,
                               .role = TRANSPORT_SERVER,
                               .endpoint = kind == TRANSPORT_ZMQ ? "tcp://127.0.0.1:*" : name,
                               .heartbeat_ms = hb_ms,
                               .liveness = 3};
    bt_err e = {0};
    int rc = transport_open(s, &o, &e);
    cr_assert_eq(rc, 0, "server open: %s", e.msg);
    return rc;
}

static int client_open(transport_t **c, enum transport_kind kind, const transport_t *s,
                       const char *id, int hb_ms, bt_err *e) {
    const char *ep = transport_endpoint(s);
    if (kind == TRANSPORT_INPROC) ep += strlen("inproc:");
    struct transport_opts o = {.kind = kind,
                               .role = TRANSPORT_CLIENT,
                               .endpoint = ep,
                               .identity = id,
                               .heartbeat_ms = hb_ms,
                               .liveness = 3,
                               .reconnect_ms = 20,
                               .reconnect_max_ms = 200};
    return transport_open(c, &o, e);
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131u + seed * 7u + (i >> 13));
}

static int check(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 131u + seed * 7u + (i >> 13))) return 0;
    return 1;
}

static atomic_int freed;
static void count_free(void *data, void *hint) {
    (void)hint;
    free(data);
    atomic_fetch_add(&freed, 1);
}

/* ---- big multipart messages between a server and 2 clients ---- */

struct client_job {
    enum transport_kind kind;
    const transport_t *server;
    char id[16];
    unsigned seed;
    int ok; /* 1 when the reply arrived intact */
    char err[320];
};

static void *client_main(void *arg) {
    struct client_job *j = arg;
    transport_t *c = NULL;
    bt_err e = {0};
    if (client_open(&c, j->kind, j->server, j->id, 1000, &e)) {
        snprintf(j->err, sizeof j->err, "open: %s", e.msg);
        return NULL;
    }
    /* frame 1 is handed over without a copy; frame 2 is copied by the transport */
    unsigned char *own = malloc(BIG), *copied = malloc(BIG / 2);
    fill(own, BIG, j->seed);
    fill(copied, BIG / 2, j->seed + 1);
    char head[32];
    snprintf(head, sizeof head, "E:%s", j->id);
    struct tx_frame f[3] = {{head, strlen(head) + 1, NULL, NULL},
                            {own, BIG, count_free, NULL},
                            {copied, BIG / 2, NULL, NULL}};
    int rc = transport_send(c, NULL, f, 3, &e);
    free(copied); /* the transport copied it before returning */
    if (rc) {
        snprintf(j->err, sizeof j->err, "send: %s", e.msg);
        transport_close(c);
        return NULL;
    }
    struct tx_msg m;
    rc = transport_recv(c, 5000, &m, &e);
    if (rc)
        snprintf(j->err, sizeof j->err, "recv: %d %s", rc, e.msg);
    else if (m.n_frames != 2 || strcmp(m.data[0], head) != 0 || m.len[1] != BIG ||
             !check(m.data[1], BIG, j->seed + 2) || m.peer[0] != 0)
        snprintf(j->err, sizeof j->err, "reply mangled: %d frames", m.n_frames);
    else
        j->ok = 1;
    transport_close(c);
    return NULL;
}

static void multipart_two_clients(enum transport_kind kind, const char *name) {
    transport_t *s;
    /* pings queue behind data: the window must exceed the time 12 MB takes (ASan, 2 cores) */
    server_open(&s, kind, name, 1000);
    atomic_store(&freed, 0);
    struct client_job jobs[2] = {{kind, s, "alpha", 11, 0, ""}, {kind, s, "beta", 22, 0, ""}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, client_main, &jobs[i]);
    bt_err e = {0};
    int got = 0;
    int64_t until = bt_now_ns() + 8000000000;
    while (got < 2 && bt_now_ns() < until) {
        struct tx_msg m;
        int rc = transport_recv(s, 1000, &m, &e);
        if (rc == BT_ETIMEDOUT) continue;
        cr_assert_eq(rc, 0, "server recv: %s", e.msg);
        struct client_job *j = strcmp(m.peer, "alpha") == 0  ? &jobs[0]
                               : strcmp(m.peer, "beta") == 0 ? &jobs[1]
                                                             : NULL;
        cr_assert_not_null(j, "unknown peer %s", m.peer);
        cr_assert_eq(m.n_frames, 3);
        cr_assert_eq(m.len[1], BIG);
        cr_assert(check(m.data[1], BIG, j->seed), "8 MB frame from %s intact", m.peer);
        cr_assert_eq(m.len[2], BIG / 2);
        cr_assert(check(m.data[2], BIG / 2, j->seed + 1));
        unsigned char *reply = malloc(BIG);
        fill(reply, BIG, j->seed + 2);
        char head[32];
        snprintf(head, sizeof head, "%s", (const char *)m.data[0]);
        struct tx_frame f[2] = {{head, strlen(head) + 1, NULL, NULL},
                                {reply, BIG, count_free, NULL}};
        cr_assert_eq(transport_send(s, m.peer, f, 2, &e), 0, "reply: %s", e.msg);
        got++;
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        cr_assert(jobs[i].ok, "client %s: %s", jobs[i].id, jobs[i].err);
    }
    struct tx_peer peers[4];
    cr_assert_geq(transport_peers(s, peers, 4), 2, "both clients known to the server");
    transport_close(s);
    /* 2 client frames + 2 server replies handed over with free_fn, each freed exactly once */
    cr_assert_eq(atomic_load(&freed), 4);
}

Test(transport, zmq_multipart_8mb_two_clients, .timeout = 20) {
    multipart_two_clients(TRANSPORT_ZMQ, NULL);
}

Test(transport, inproc_multipart_8mb_two_clients, .timeout = 20) {
    multipart_two_clients(TRANSPORT_INPROC, "mp");
}

/* ---- deadlines, bad arguments, unknown peers ---- */

static void timeouts_and_errors(enum transport_kind kind, const char *name) {
    transport_t *s, *c;
    server_open(&s, kind, name, 1000);
    bt_err e = {0};
    cr_assert_eq(client_open(&c, kind, s, "c1", 1000, &e), 0, "%s", e.msg);
    struct tx_msg m;
    int64_t t0 = bt_now_ns();
    cr_assert_eq(transport_recv(s, 150, &m, &e), BT_ETIMEDOUT, "%s", e.msg);
    double ms = (double)(bt_now_ns() - t0) * 1e-6;
    cr_assert(ms >= 140.0 && ms < 1000.0, "timeout took %.1f ms", ms);
    cr_assert_eq(transport_recv(c, 0, &m, &e), BT_ETIMEDOUT, "poll with nothing waiting");

    atomic_store(&freed, 0);
    unsigned char *p = malloc(16);
    p[0] = 0; /* reserved for pings: refused, and the owned frame is still freed */
    struct tx_frame bad = {p, 16, count_free, NULL};
    cr_assert_eq(transport_send(c, NULL, &bad, 1, &e), BT_EINVAL);
    cr_assert_eq(atomic_load(&freed), 1);
    struct tx_frame ok = {"x", 1, NULL, NULL};
    cr_assert_eq(transport_send(s, "nobody", &ok, 1, &e), BT_EPEERLOST, "%s", e.msg);
    cr_assert_eq(transport_send(s, NULL, &ok, 1, &e), BT_EINVAL);
    cr_assert_eq(transport_send(c, NULL, &ok, 0, &e), BT_EINVAL);

    /* a message round trip still works after all that */
    cr_assert_eq(transport_send(c, NULL, &ok, 1, &e), 0, "%s", e.msg);
    cr_assert_eq(transport_recv(s, 2000, &m, &e), 0, "%s", e.msg);
    cr_assert_str_eq(m.peer, "c1");
    cr_assert_eq(m.n_frames, 1);
    cr_assert_eq(((const char *)m.data[0])[0], 'x');
    transport_close(c);
    transport_close(s);
}

Test(transport, zmq_timeouts_and_errors, .timeout = 10) {
    timeouts_and_errors(TRANSPORT_ZMQ, NULL);
}

Test(transport, inproc_timeouts_and_errors, .timeout = 10) {
    timeouts_and_errors(TRANSPORT_INPROC, "te");
}

Test(transport, inproc_duplicate_names_refused) {
    transport_t *s, *s2;
    server_open(&s, TRANSPORT_INPROC, "dup", 1000);
    struct transport_opts o = {
        .kind = TRANSPORT_INPROC, .role = TRANSPORT_SERVER, .endpoint = "dup"};
    bt_err e = {0};
    cr_assert_eq(transport_open(&s2, &o, &e), -EADDRINUSE);
    o.role = TRANSPORT_CLIENT; /* no identity */
    cr_assert_eq(transport_open(&s2, &o, &e), BT_EINVAL);
    transport_close(s);
}

/* ---- wakeup ---- */

static void *wake_later(void *arg) {
    usleep(100000);
    transport_wakeup(arg);
    return NULL;
}

static void wakeup(enum transport_kind kind, const char *name) {
    transport_t *s;
    server_open(&s, kind, name, 1000);
    pthread_t th;
    pthread_create(&th, NULL, wake_later, s);
    struct tx_msg m;
    bt_err e = {0};
    int64_t t0 = bt_now_ns();
    cr_assert_eq(transport_recv(s, 5000, &m, &e), -EINTR, "%s", e.msg);
    double ms = (double)(bt_now_ns() - t0) * 1e-6;
    cr_assert(ms >= 90.0 && ms < 2000.0, "woken after %.1f ms", ms);
    pthread_join(th, NULL);
    cr_assert_eq(transport_recv(s, 50, &m, &e), BT_ETIMEDOUT, "one wakeup, one EINTR");
    transport_close(s);
}

Test(transport, zmq_wakeup_from_other_thread, .timeout = 10) {
    wakeup(TRANSPORT_ZMQ, NULL);
}

Test(transport, inproc_wakeup_from_other_thread, .timeout = 10) {
    wakeup(TRANSPORT_INPROC, "wk");
}

/* ---- peer loss ---- */

static void client_lost(enum transport_kind kind, const char *name) {
    const int hb = 50; /* window = 150 ms */
    transport_t *s, *c, *c2;
    server_open(&s, kind, name, hb);
    bt_err e = {0};
    cr_assert_eq(client_open(&c, kind, s, "goner", hb, &e), 0, "%s", e.msg);
    cr_assert_eq(client_open(&c2, kind, s, "stayer", hb, &e), 0, "%s", e.msg);
    struct tx_frame f = {"hi", 2, NULL, NULL};
    cr_assert_eq(transport_send(c, NULL, &f, 1, &e), 0);
    struct tx_msg m;
    cr_assert_eq(transport_recv(s, 2000, &m, &e), 0, "%s", e.msg);
    cr_assert_str_eq(m.peer, "goner");
    transport_close(c); /* goes away without a word */
    int64_t gone = bt_now_ns();
    int lost = 0;
    while (!lost && bt_now_ns() - gone < 3000000000) {
        int rc = transport_recv(s, 100, &m, &e);
        if (rc == BT_EPEERLOST) {
            cr_assert_str_eq(m.peer, "goner", "only the silent client is lost");
            lost = 1;
        } else {
            cr_assert_eq(rc, BT_ETIMEDOUT, "%d %s", rc, e.msg);
        }
        transport_tick(c2, NULL); /* the stayer keeps pinging from this thread */
        struct tx_msg m2;
        transport_recv(c2, 0, &m2, NULL);
    }
    double ms = (double)(bt_now_ns() - gone) * 1e-6;
    cr_assert(lost, "goner never reported lost");
    cr_assert(ms >= 100.0 && ms < 1500.0, "lost after %.0f ms (window 150 ms)", ms);
    struct tx_peer p[4];
    int n = transport_peers(s, p, 4);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(p[0].id, "stayer");
    cr_assert_eq(transport_silent_peers(s, 10000, p, 4), 0);
    transport_close(c2);
    transport_close(s);
}

Test(transport, zmq_silent_client_reported_lost, .timeout = 10) {
    client_lost(TRANSPORT_ZMQ, NULL);
}

Test(transport, inproc_silent_client_reported_lost, .timeout = 10) {
    client_lost(TRANSPORT_INPROC, "cl");
}

static void server_lost(enum transport_kind kind, const char *name) {
    const int hb = 50;
    transport_t *s, *c;
    server_open(&s, kind, name, hb);
    bt_err e = {0};
    cr_assert_eq(client_open(&c, kind, s, "w", hb, &e), 0, "%s", e.msg);
    struct tx_msg m;
    /* let the server learn the client, then vanish */
    transport_recv(s, 100, &m, NULL);
    transport_close(s);
    int64_t t0 = bt_now_ns();
    int rc;
    do
        rc = transport_recv(c, 3000, &m, &e);
    while (rc == BT_ETIMEDOUT && bt_now_ns() - t0 < 3000000000);
    cr_assert_eq(rc, BT_EPEERLOST, "%d %s", rc, e.msg);
    cr_assert_str_eq(m.peer, "");
    /* reported once: afterwards the client just keeps trying */
    cr_assert_eq(transport_recv(c, 200, &m, &e), BT_ETIMEDOUT);
    transport_close(c);
}

Test(transport, zmq_client_reports_server_lost, .timeout = 10) {
    server_lost(TRANSPORT_ZMQ, NULL);
}

Test(transport, inproc_client_reports_server_lost, .timeout = 10) {
    server_lost(TRANSPORT_INPROC, "sl");
}

/* ---- zmq client reconnects to a restarted server on the same port ---- */

Test(transport, zmq_client_reconnects_after_server_restart, .timeout = 10) {
    transport_t *s, *c;
    server_open(&s, TRANSPORT_ZMQ, NULL, 100);
    char ep[256];
    snprintf(ep, sizeof ep, "%s", transport_endpoint(s));
    bt_err e = {0};
    cr_assert_eq(client_open(&c, TRANSPORT_ZMQ, s, "re", 100, &e), 0);
    struct tx_frame f = {"a", 1, NULL, NULL};
    struct tx_msg m;
    cr_assert_eq(transport_send(c, NULL, &f, 1, &e), 0);
    cr_assert_eq(transport_recv(s, 2000, &m, &e), 0, "%s", e.msg);
    transport_close(s);
    usleep(50000);
    struct transport_opts o = {
        .kind = TRANSPORT_ZMQ, .role = TRANSPORT_SERVER, .endpoint = ep, .heartbeat_ms = 100};
    cr_assert_eq(transport_open(&s, &o, &e), 0, "rebind %s: %s", ep, e.msg);
    f.data = "b";
    cr_assert_eq(transport_send(c, NULL, &f, 1, &e), 0);
    int rc;
    int64_t t0 = bt_now_ns();
    do
        rc = transport_recv(s, 500, &m, &e);
    while (rc == BT_ETIMEDOUT && bt_now_ns() - t0 < 5000000000);
    cr_assert_eq(rc, 0, "%d %s", rc, e.msg);
    cr_assert_str_eq(m.peer, "re");
    cr_assert_eq(((const char *)m.data[0])[0], 'b');
    transport_close(c);
    transport_close(s);
}

/* ---- poll over several transports of both kinds ---- */

Test(transport, poll_mixes_backends, .timeout = 10) {
    transport_t *zs, *is, *zc, *ic;
    server_open(&zs, TRANSPORT_ZMQ, NULL, 1000);
    server_open(&is, TRANSPORT_INPROC, "pl", 1000);
    bt_err e = {0};
    cr_assert_eq(client_open(&zc, TRANSPORT_ZMQ, zs, "z", 1000, &e), 0);
    cr_assert_eq(client_open(&ic, TRANSPORT_INPROC, is, "i", 1000, &e), 0);
    transport_t *const ts[2] = {zs, is};
    struct tx_msg m;
    /* swallow the clients' opening pings */
    transport_recv(zs, 100, &m, NULL);
    transport_recv(is, 10, &m, NULL);
    uint64_t ready;
    cr_assert_eq(transport_poll(ts, 2, 50, &ready, &e), 0);
    cr_assert_eq(ready, 0, "nothing waiting: %llu", (unsigned long long)ready);
    struct tx_frame f = {"i", 1, NULL, NULL};
    cr_assert_eq(transport_send(ic, NULL, &f, 1, &e), 0);
    cr_assert_eq(transport_poll(ts, 2, 1000, &ready, &e), 0);
    cr_assert_eq(ready, 2, "inproc server ready: %llu", (unsigned long long)ready);
    cr_assert_eq(transport_recv(is, 0, &m, &e), 0);
    cr_assert_str_eq(m.peer, "i");
    f.data = "z";
    cr_assert_eq(transport_send(zc, NULL, &f, 1, &e), 0);
    int64_t t0 = bt_now_ns();
    cr_assert_eq(transport_poll(ts, 2, 2000, &ready, &e), 0);
    cr_assert(ready & 1, "zmq server ready after %.1f ms", (double)(bt_now_ns() - t0) * 1e-6);
    cr_assert_eq(transport_recv(zs, 0, &m, &e), 0, "%s", e.msg);
    cr_assert_str_eq(m.peer, "z");
    transport_wakeup(zs);
    cr_assert_eq(transport_poll(ts, 2, 1000, &ready, &e), 0);
    cr_assert(ready & 1, "a wakeup makes a transport ready");
    cr_assert_eq(transport_recv(zs, 0, &m, &e), -EINTR);
    transport_close(zc);
    transport_close(ic);
    transport_close(zs);
    transport_close(is);
}
