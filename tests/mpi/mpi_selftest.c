/* tests/mpi/mpi_selftest.c: the MPI transport under a real mpirun (tests/e2e/test_mpi.sh).
 * Criterion forks per test, which MPI does not survive, so this is a plain program that every
 * rank runs; each check prints "ok"/"FAIL" with the rank, and the exit code is the number of
 * failures (mpirun returns non-zero when any rank does).
 *
 *   mpirun -np 3 mpi_selftest          send/recv, frames, large message, order, a send before
 *                                       the bind, timeouts, wakeup, mixed poll, errors, malformed
 *                                       input, a rank-to-rank data channel, clean finish
 *   mpirun -np 3 mpi_selftest stop     rank 2 stops (SIGSTOP) after a first exchange: rank 0
 *                                       must see it LOST within the liveness window and end the
 *                                       job through MPI_Abort (the script checks time and text)
 *   mpirun -np 3 mpi_selftest crash    rank 2 dies by SIGKILL: mpirun must end the job */
#include "common/clock.h"
#include "common/log.h"
#include "mpi/transport_mpi.h"
#include "proto/transport.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size, failures;
static volatile int lost_rank = -1, bye_count;
static volatile int bye_code[3] = {-1, -1, -1}; /* the code in each rank's BYE */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            printf("rank %d ok: ", rank);                                                          \
        } else {                                                                                   \
            failures++;                                                                            \
            printf("rank %d FAIL (%s:%d): ", rank, __FILE__, __LINE__);                            \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

static void on_event(enum mpicomm_event ev, int r, int code, const char *why, void *arg) {
    (void)arg;
    if (ev == MPICOMM_LOST)
        lost_rank = r;
    else
        bye_count++;
    if (ev == MPICOMM_BYE && r >= 0 && r < 3) bye_code[r] = code;
    printf("rank %d event: rank %d %s (code %d): %s\n", rank, r,
           ev == MPICOMM_LOST ? "lost" : "bye", code, why);
    fflush(stdout);
}

static transport_t *open_t(enum transport_role role, const char *ep, const char *id) {
    struct transport_opts o = {.kind = TRANSPORT_MPI,
                               .role = role,
                               .endpoint = ep,
                               .identity = id,
                               .heartbeat_ms = 200,
                               .liveness = 25};
    transport_t *t = NULL;
    bt_err e = {0};
    int rc = transport_open(&t, &o, &e);
    if (rc) {
        printf("rank %d FAIL: open %s: %s\n", rank, ep, bt_errmsg(&e, rc));
        exit(100);
    }
    return t;
}

static int send1(transport_t *t, const char *peer, const void *d, size_t n) {
    struct tx_frame f = {.data = d, .len = n};
    bt_err e = {0};
    int rc = transport_send(t, peer, &f, 1, &e);
    if (rc) printf("rank %d send: %s\n", rank, bt_errmsg(&e, rc));
    return rc;
}

/* The next message (pings are hidden by the transport) within ms; returns the code. */
static int recv_msg(transport_t *t, int ms, struct tx_msg *m) {
    bt_err e = {0};
    int rc = transport_recv(t, ms, m, &e);
    if (rc && rc != BT_ETIMEDOUT && rc != BT_EPROTO)
        printf("rank %d recv: %s\n", rank, bt_errmsg(&e, rc));
    return rc;
}

static int is(const struct tx_msg *m, int i, const char *s) {
    return m->n_frames > i && m->len[i] == strlen(s) && memcmp(m->data[i], s, m->len[i]) == 0;
}

static int frees;
static void count_free(void *d, void *hint) {
    (void)hint;
    frees++;
    free(d);
}

static unsigned char pattern(size_t i) {
    return (unsigned char)((i * 2654435761u) >> 13);
}

/* ---- rank 0: the server side ---- */

static void server(void) {
    transport_t *s = open_t(TRANSPORT_SERVER, "mpi:*:1", NULL);
    CHECK(strcmp(transport_endpoint(s), "mpi:0:1") == 0, "bound %s", transport_endpoint(s));
    struct tx_msg m;
    /* 1. a 3-frame message from each client, peers named by identity */
    int got1 = 0, got2 = 0;
    for (int i = 0; i < 2; i++) {
        if (recv_msg(s, 10000, &m) != 0) break;
        int ok = m.n_frames == 3 && is(&m, 0, "hello") && m.len[1] == 1000 && m.len[2] == 0;
        for (size_t k = 0; ok && k < 1000; k++)
            ok = ((const unsigned char *)m.data[1])[k] == pattern(k);
        if (ok && strcmp(m.peer, "w1") == 0) got1 = 1;
        if (ok && strcmp(m.peer, "w2") == 0) got2 = 1;
    }
    CHECK(got1 && got2, "3-frame hello from w1 and w2 (frames intact, empty frame kept)");
    /* replies with a zero-copy frame: freed exactly once */
    for (int i = 1; i <= 2; i++) {
        char *d = strdup(i == 1 ? "ack-w1" : "ack-w2");
        struct tx_frame f[2] = {{.data = "ack", .len = 3},
                                {.data = d, .len = strlen(d), .free_fn = count_free}};
        bt_err e = {0};
        CHECK(transport_send(s, i == 1 ? "w1" : "w2", f, 2, &e) == 0, "reply to w%d", i);
    }
    CHECK(frees == 2, "free_fn frames released once each (%d)", frees);
    /* 2, 3. at the same time: 64 MiB from w1 and 500 numbered messages from w2 (order is
     * kept per sender, not across senders) */
    int64_t t0 = bt_now_ns();
    int next = 0, big_ok = -1, rc;
    double big_s = 0;
    while ((next < 500 || big_ok < 0) && (rc = recv_msg(s, 30000, &m)) == 0) {
        if (strcmp(m.peer, "w1") == 0) {
            big_ok = m.n_frames == 2 && is(&m, 0, "big") && m.len[1] == (64u << 20);
            for (size_t k = 0; big_ok && k < m.len[1]; k += 4093)
                big_ok = ((const unsigned char *)m.data[1])[k] == pattern(k);
            big_s = (double)(bt_now_ns() - t0) * 1e-9;
            continue;
        }
        int v = -1;
        if (m.n_frames == 1 && m.len[0] == 8) sscanf((const char *)m.data[0], "n%7d", &v);
        if (v != next) break;
        next++;
    }
    CHECK(big_ok == 1, "64 MiB frame intact in %.2f s", big_s);
    CHECK(next == 500, "500 messages in order (%d)", next);
    /* 3b. w1 sent to port 3 before anything else, long before this bind: the message waited
     * for the server, and the server learnt where to answer it */
    transport_t *late = open_t(TRANSPORT_SERVER, "mpi:*:3", NULL);
    rc = recv_msg(late, 1000, &m);
    CHECK(rc == 0 && is(&m, 0, "early") && strcmp(m.peer, "early-w1") == 0,
          "a message sent before the bind is delivered at the bind (%d, from %s)", rc,
          rc == 0 ? m.peer : "-");
    CHECK(send1(late, "early-w1", "seen", 4) == 0, "answer to the early client");
    transport_close(late);
    /* 4. a receive timeout: nobody sends now */
    t0 = bt_now_ns();
    rc = recv_msg(s, 300, &m);
    double ms = (double)(bt_now_ns() - t0) * 1e-6;
    CHECK(rc == BT_ETIMEDOUT && ms >= 290 && ms < 2000, "recv timeout after %.0f ms", ms);
    /* 5. wakeup */
    transport_wakeup(s);
    CHECK(recv_msg(s, 5000, &m) == -EINTR, "wakeup makes recv return -EINTR");
    /* 6. poll over an inproc and the MPI transport: only the MPI one gets ready */
    struct transport_opts io = {
        .kind = TRANSPORT_INPROC, .role = TRANSPORT_SERVER, .endpoint = "selftest"};
    transport_t *in = NULL;
    bt_err e = {0};
    CHECK(transport_open(&in, &io, &e) == 0, "inproc server");
    send1(s, "w1", "go-poll", 7);
    transport_t *ts[2] = {in, s};
    uint64_t ready = 0;
    int got = 0, inproc_msgs = 0;
    t0 = bt_now_ns();
    /* a bit is also set when a ping is due: recv then returns BT_ETIMEDOUT */
    while (!got && bt_now_ns() - t0 < 10000000000LL) {
        transport_poll(ts, 2, 1000, &ready, &e);
        if ((ready & 1) && recv_msg(in, 0, &m) == 0) inproc_msgs++;
        if ((ready & 2) && recv_msg(s, 0, &m) == 0) got = is(&m, 0, "poll-me") ? 1 : -1;
    }
    CHECK(got == 1 && inproc_msgs == 0,
          "transport_poll wakes for the MPI message, not the idle inproc one");
    transport_close(in);
    /* 7. argument errors */
    CHECK(send1(s, "nobody", "x", 1) == BT_EPEERLOST, "send to an unknown peer: BT_EPEERLOST");
    struct transport_opts bad = {
        .kind = TRANSPORT_MPI, .role = TRANSPORT_SERVER, .endpoint = "mpi:x"};
    transport_t *bt = NULL;
    CHECK(transport_open(&bt, &bad, &e) == BT_EINVAL, "endpoint mpi:x refused");
    bad.endpoint = "mpi:1:5";
    CHECK(transport_open(&bt, &bad, &e) == BT_EINVAL, "bind on another rank refused");
    bad.endpoint = "mpi:*:1";
    CHECK(transport_open(&bt, &bad, &e) == -EADDRINUSE, "port 1 twice: EADDRINUSE");
    bad.endpoint = "mpi:*:*";
    CHECK(transport_open(&bt, &bad, &e) == 0 && strcmp(transport_endpoint(bt), "mpi:0:30000") == 0,
          "mpi:*:* binds a free port (%s)", bt ? transport_endpoint(bt) : "-");
    transport_close(bt);
    /* 8. malformed input from w1: garbage is dropped, 17 frames is BT_EPROTO naming w1, and
     * a good message still comes through afterwards */
    send1(s, "w1", "go-bad", 6);
    rc = recv_msg(s, 10000, &m);
    CHECK(rc == BT_EPROTO && strcmp(m.peer, "w1") == 0, "17 frames: BT_EPROTO from %s", m.peer);
    rc = recv_msg(s, 10000, &m);
    CHECK(rc == 0 && is(&m, 0, "after-bad"), "garbage dropped, next message delivered");
    /* 9. w1 and w2 talk over their own data channel; then everyone finishes */
    for (int i = 1; i <= 2; i++) {
        rc = recv_msg(s, 20000, &m);
        CHECK(rc == 0 && is(&m, 0, "data-ok"), "data channel report %d from %s", i, m.peer);
    }
    send1(s, "w1", "done", 4);
    send1(s, "w2", "done", 4);
    transport_close(s);
}

/* ---- ranks 1, 2: clients ---- */

static void client(void) {
    char id[16], ep_data[32];
    snprintf(id, sizeof id, "w%d", rank);
    /* rank 1 speaks to port 3 first; rank 0 binds it only after step 2 (3b) */
    transport_t *early = rank == 1 ? open_t(TRANSPORT_CLIENT, "mpi:0:3", "early-w1") : NULL;
    if (early) send1(early, NULL, "early", 5);
    transport_t *c = open_t(TRANSPORT_CLIENT, "mpi:0:1", id);
    struct tx_msg m;
    unsigned char *blob = malloc(1000);
    for (size_t k = 0; k < 1000; k++)
        blob[k] = pattern(k);
    struct tx_frame f[3] = {
        {.data = "hello", .len = 5}, {.data = blob, .len = 1000}, {.data = "", .len = 0}};
    bt_err e = {0};
    CHECK(transport_send(c, NULL, f, 3, &e) == 0, "hello sent");
    free(blob);
    char want[32];
    snprintf(want, sizeof want, "ack-%s", id);
    int rc = recv_msg(c, 10000, &m);
    CHECK(rc == 0 && is(&m, 0, "ack") && is(&m, 1, want) && m.peer[0] == 0, "reply %s", want);
    if (rank == 1) {
        size_t n = 64u << 20;
        unsigned char *big = malloc(n);
        for (size_t k = 0; k < n; k++)
            big[k] = pattern(k);
        struct tx_frame bf[2] = {{.data = "big", .len = 3}, {.data = big, .len = n}};
        CHECK(transport_send(c, NULL, bf, 2, &e) == 0, "64 MiB queued");
        free(big); /* copied at send */
        /* oversize against our own limit is refused before MPI */
        struct transport_opts so = {.kind = TRANSPORT_MPI,
                                    .role = TRANSPORT_CLIENT,
                                    .endpoint = "mpi:0:1",
                                    .identity = "small",
                                    .max_frame_bytes = 16};
        transport_t *sm = NULL;
        CHECK(transport_open(&sm, &so, &e) == 0, "second client on the same server");
        CHECK(send1(sm, NULL, "seventeen bytes!!", 17) == BT_EMSGSIZE, "frame > max: EMSGSIZE");
        transport_close(sm);
        rc = recv_msg(c, 20000, &m);
        CHECK(rc == 0 && is(&m, 0, "go-poll"), "go-poll");
        usleep(300000); /* rank 0 is in transport_poll by now */
        send1(c, NULL, "poll-me", 7);
        rc = recv_msg(c, 20000, &m);
        CHECK(rc == 0 && is(&m, 0, "go-bad"), "go-bad");
        unsigned char junk[40];
        memset(junk, 0xab, sizeof junk);
        mpicomm_send_raw(0, 1, junk, sizeof junk, &e); /* no header */
        mpicomm_send_raw(0, 1, junk, 5, &e);           /* shorter than a header */
        /* a real header claiming 17 frames */
        unsigned char h[12 + 17 * 8 + 2] = {'B', 'T', 'M', '1', 0, 17, 2, 0};
        memcpy(h + 12 + 17 * 8, "w1", 2);
        memset(h + 12, 0, 17 * 8);
        mpicomm_send_raw(0, 1, h, sizeof h, &e);
        /* lengths beyond the message */
        unsigned char h2[12 + 8 + 2 + 3] = {'B', 'T', 'M', '1', 0, 1, 2, 0, 0, 0, 0, 0, 99};
        memcpy(h2 + 20, "w1abc", 5);
        mpicomm_send_raw(0, 1, h2, sizeof h2, &e);
        /* malformed control messages (tag 0): a BYE without its exit code, one too long, an
         * unknown kind; all dropped, so the BYE checked at the end is the first from rank 1 */
        mpicomm_send_raw(0, 0, "B", 1, &e);
        mpicomm_send_raw(0, 0, "B\0\0", 3, &e);
        mpicomm_send_raw(0, 0, "Q", 1, &e);
        send1(c, NULL, "after-bad", 9);
    } else {
        for (int k = 0; k < 500; k++) {
            char b[16]; /* wide enough for any int at -O1 (-Wformat-truncation) */
            snprintf(b, sizeof b, "n%07d", k);
            send1(c, NULL, b, 8);
        }
    }
    /* 9: rank 1 binds a data channel, rank 2 connects to it (a stage talking to the next) */
    if (rank == 1) {
        transport_t *d = open_t(TRANSPORT_SERVER, "mpi:*:2", "stage1");
        rc = recv_msg(d, 20000, &m);
        int ok = rc == 0 && is(&m, 0, "fwd") && strcmp(m.peer, "stage2") == 0;
        ok = ok && send1(d, "stage2", "result", 6) == 0;
        CHECK(ok, "data channel: got fwd from stage2, answered");
        send1(c, NULL, "data-ok", 7);
        rc = recv_msg(c, 30000, &m);
        CHECK(rc == 0 && is(&m, 0, "done"), "done");
        transport_close(d);
        rc = recv_msg(early, 10000, &m);
        CHECK(rc == 0 && is(&m, 0, "seen"), "the early message was answered");
        transport_close(early);
    } else {
        snprintf(ep_data, sizeof ep_data, "mpi:%d:2", 1);
        transport_t *d = open_t(TRANSPORT_CLIENT, ep_data, "stage2");
        /* the server may bind after our first ping: resend until answered */
        int ok = 0;
        for (int i = 0; i < 40 && !ok; i++) {
            send1(d, NULL, "fwd", 3);
            ok = recv_msg(d, 500, &m) == 0 && is(&m, 0, "result");
        }
        CHECK(ok, "data channel: result from stage1");
        send1(c, NULL, "data-ok", 7);
        rc = recv_msg(c, 30000, &m);
        CHECK(rc == 0 && is(&m, 0, "done"), "done");
        transport_close(d);
    }
    transport_close(c);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "basic";
    struct mpicomm_opts o = {.on_event = on_event,
                             .heartbeat_ms = 200,
                             .liveness_ms = strcmp(mode, "basic") ? 1500 : 20000};
    bt_err e = {0};
    int rc = mpicomm_start(&o, &rank, &size, &e);
    if (rc) {
        fprintf(stderr, "mpi_selftest: %s\n", bt_errmsg(&e, rc));
        return 2;
    }
    if (size != 3) {
        fprintf(stderr, "mpi_selftest: run with mpirun -np 3 (got %d)\n", size);
        mpicomm_finish(1000, 2);
        return 2;
    }
    if (strcmp(mode, "basic") == 0) {
        if (rank == 0)
            server();
        else
            client();
        /* a code of its own per rank (10 + rank, or 100 + failures): each BYE must carry it */
        mpicomm_finish(10000, failures ? 100 + failures : 10 + rank);
        for (int r = 0; r < 3; r++)
            if (r != rank)
                CHECK(bye_code[r] == 10 + r, "rank %d's BYE carried its exit code (%d)", r,
                      bye_code[r]);
        printf("rank %d: %d failed\n", rank, failures);
        return failures;
    }
    /* stop / crash: one exchange, then rank 2 goes away */
    if (rank == 2) {
        sleep(1);
        if (strcmp(mode, "crash") == 0) raise(SIGKILL);
        raise(SIGSTOP);
        for (;;)
            pause();
    }
    int64_t t0 = bt_now_ns();
    while (lost_rank < 0 && bt_now_ns() - t0 < 20000000000LL)
        usleep(10000);
    printf("rank %d: saw rank %d lost after %.1f s\n", rank, lost_rank,
           (double)(bt_now_ns() - t0) * 1e-9);
    fflush(stdout);
    mpicomm_finish(3000, 3); /* aborts the job: a rank is lost */
    return 1;
}
