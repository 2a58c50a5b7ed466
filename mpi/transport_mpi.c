/* mpi/transport_mpi.c: the MPI backend (tx_mpi_ops) and the comm thread behind it. See
 * transport_mpi.h for the endpoint form, the wire layout, the polling cadence and liveness.
 *
 * Threads: the comm thread owns every MPI call and the comm-only state (pending sends, the
 * receive in progress, per-rank clocks). g.mu guards what other threads share with it: the
 * submit queue, the registry of open MPI transports (their inbound queues, client tables and
 * in-flight counts), lost/bye flags and the finish/abort requests. Callers' threads only pack,
 * queue and pop; the comm thread is woken through g.evfd. */
#include "mpi/transport_mpi.h"

#include "common/assert.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/transport_impl.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define TAG_CTRL  0
#define MAGIC     0x314d5442u /* "BTM1" little-endian */
#define HDR_FIXED 12          /* magic, dir, n_frames, id_len, reserved */
#define MAX_RANKS 4096

/* Control messages on tag 0: PING is one byte; BYE is two, the second the rank's exit code
 * (0..255), so a peer can tell a rank that was told to stop from one that failed. */
enum { CTRL_PING = 'P', CTRL_BYE = 'B' };
static const unsigned char ctrl_ping = CTRL_PING;
static unsigned char ctrl_bye[2] = {CTRL_BYE, 0}; /* [1] set by finish_step before it is sent */

static const struct tx_backend_ops tx_mpi_ops; /* at the end */

/* ---- shared state ---- */

struct mnode { /* one received message, frames pointing into buf */
    struct mnode *next;
    char peer[TX_PEER_MAX + 1];
    int n, proto_err;
    int src, port, wire_len; /* where it came from and went, and its bytes on the wire */
    int64_t parked_at;       /* when it was parked for a port nobody had bound */
    const void *data[TX_MAX_FRAMES];
    size_t len[TX_MAX_FRAMES];
    void *buf;
};

struct client_rank {
    char id[TX_PEER_MAX + 1];
    int rank;
};

struct mbe { /* one open MPI transport */
    struct mbe *next;
    transport_t *t;
    uint64_t serial;
    int server, port, rank;      /* rank: server's (own for a server) */
    struct client_rank *clients; /* server: identity -> rank, learnt from messages */
    int n_clients, cap_clients;
    struct mnode *head, *tail, *held;
    int evfd;     /* semaphore: count = queued messages */
    int inflight; /* messages queued or in flight to MPI */
};

struct psend { /* a send queued to or posted by the comm thread */
    struct psend *next;
    int dest, tag, len;
    const void *data; /* buf, or a static control byte */
    void *buf;        /* owned; freed at completion */
    uint64_t serial;  /* the transport's (0: control) */
    int64_t deadline;
    MPI_Request req;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int started, init_done, init_rc;
    bt_err init_err;
    struct mpicomm_opts o;
    int rank, size;
    MPI_Comm comm;
    int evfd;
    struct psend *sub_head, *sub_tail; /* submitted, not yet posted */
    struct mbe *reg;
    struct mnode *park_head, *park_tail; /* for ports not bound yet, oldest first */
    size_t park_bytes;
    uint64_t next_serial;
    unsigned char *lost, *bye; /* per rank */
    int finishing, finish_timeout_ms, finish_code, finish_rc, finish_done;
    int abort_code;
    char abort_msg[300];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .evfd = -1};

/* comm-thread-only state */
static struct {
    struct psend *pending;
    int n_pending;
    int64_t *heard;         /* per rank: last message from it */
    unsigned char *pinging; /* per rank: a ping to it still in flight */
    int64_t next_ping;
    int rx_active, rx_src, rx_tag, rx_len;
    void *rx_buf;
    int64_t rx_deadline;
    MPI_Request rx_req;
} c;

static void wake_comm(void) {
    uint64_t one = 1;
    ssize_t w = write(g.evfd, &one, sizeof one); /* a full counter still wakes: result moot */
    (void)w;
}

static const char *mpi_errstr(int rc, char *buf) {
    int n = 0;
    if (MPI_Error_string(rc, buf, &n) != MPI_SUCCESS)
        snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", rc);
    return buf;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- comm thread: losing ranks, sends, receives ---- */

/* Marks rank lost (once) and tells the program. Comm thread only. */
static void rank_lost(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rank_lost(int r, const char *fmt, ...) {
    if (r < 0 || r >= g.size || r == g.rank) return;
    pthread_mutex_lock(&g.mu);
    int was = g.lost[r];
    g.lost[r] = 1;
    pthread_mutex_unlock(&g.mu);
    if (was) return;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    BT_LOG(ERROR, "mpi", "rank %d lost: %s", r, why);
    if (g.o.on_event) g.o.on_event(MPICOMM_LOST, r, -1, why, g.o.arg);
}

static void post_send(struct psend *s) {
    s->next = NULL;
    int rc = MPI_Isend(s->data, s->len, MPI_BYTE, s->dest, s->tag, g.comm, &s->req);
    if (rc != MPI_SUCCESS) {
        char eb[MPI_MAX_ERROR_STRING];
        rank_lost(s->dest, "MPI_Isend of %d bytes: %s", s->len, mpi_errstr(rc, eb));
        s->req = MPI_REQUEST_NULL; /* completes at the next test */
    }
    s->next = c.pending;
    c.pending = s;
    c.n_pending++;
}

static void send_done(struct psend *s) {
    if (s->serial) {
        pthread_mutex_lock(&g.mu);
        for (struct mbe *b = g.reg; b; b = b->next)
            if (b->serial == s->serial) {
                b->inflight--;
                break;
            }
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
    } else if (s->data == &ctrl_ping) {
        c.pinging[s->dest] = 0;
    }
    free(s->buf);
    free(s);
}

/* Tests every posted send; returns how many completed. A send past its deadline loses its
 * rank but stays pending: MPI may still read the buffer, and the job ends anyway. */
static int progress_sends(int64_t now) {
    int done = 0;
    for (struct psend **pp = &c.pending; *pp;) {
        struct psend *s = *pp;
        int flag = 0; /* MPI_Test of MPI_REQUEST_NULL (a failed Isend) completes at once */
        int rc = MPI_Test(&s->req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char eb[MPI_MAX_ERROR_STRING];
            rank_lost(s->dest, "send of %d bytes: %s", s->len, mpi_errstr(rc, eb));
            flag = 1;
        } else if (!flag && now > s->deadline && !g.lost[s->dest]) {
            rank_lost(s->dest, "a send of %d bytes not taken within %.1f s", s->len,
                      (double)(now - s->deadline) * 1e-9 + (double)g.o.liveness_ms * 1e-3);
        }
        if (flag) {
            *pp = s->next;
            c.n_pending--;
            send_done(s);
            done++;
        } else {
            pp = &s->next;
        }
    }
    return done;
}

static struct mbe *find_server(int port) {
    for (struct mbe *b = g.reg; b; b = b->next)
        if (b->server && b->port == port) return b;
    return NULL;
}

static struct mbe *find_client(int rank, int port, const char *id) {
    for (struct mbe *b = g.reg; b; b = b->next)
        if (!b->server && b->port == port && b->rank == rank && strcmp(b->t->o.identity, id) == 0)
            return b;
    return NULL;
}

/* Server side: remembers which rank identity id speaks from. Called with g.mu held. */
static void learn_client(struct mbe *b, const char *id, int rank) {
    for (int i = 0; i < b->n_clients; i++)
        if (strcmp(b->clients[i].id, id) == 0) {
            b->clients[i].rank = rank;
            return;
        }
    if (b->n_clients == b->cap_clients) {
        int cap = b->cap_clients ? 2 * b->cap_clients : 8;
        struct client_rank *nc = realloc(b->clients, (size_t)cap * sizeof *nc);
        if (!nc) return; /* unknown client: the server's sends to it fail with BT_EPEERLOST */
        b->clients = nc;
        b->cap_clients = cap;
    }
    snprintf(b->clients[b->n_clients].id, sizeof b->clients[0].id, "%s", id);
    b->clients[b->n_clients++].rank = rank;
}

/* Queues nd on b and wakes b's reader; a server learns the sender's rank. g.mu held. */
static void deliver(struct mbe *b, struct mnode *nd) {
    if (b->server)
        learn_client(b, nd->peer, nd->src);
    else
        nd->peer[0] = 0; /* a client's only peer is its server: "" */
    nd->next = NULL;
    if (b->tail)
        b->tail->next = nd;
    else
        b->head = nd;
    b->tail = nd;
    uint64_t one = 1;
    ssize_t w = write(b->evfd, &one, sizeof one);
    (void)w;
}

/* A client may send before its server binds (ranks start in any order), as a ZeroMQ client
 * may connect before the bind: the message waits for the bind, within bounds. g.mu held. */
static void park(struct mnode *nd) {
    nd->next = NULL;
    nd->parked_at = bt_now_ns();
    if (g.park_tail)
        g.park_tail->next = nd;
    else
        g.park_head = nd;
    g.park_tail = nd;
    g.park_bytes += (size_t)nd->wire_len;
    BT_LOG(DEBUG, "mpi", "a message from rank %d waits for a server on port %d", nd->src, nd->port);
}

/* Hands b every parked message for its port, in arrival order. g.mu held. */
static void unpark(struct mbe *b) {
    struct mnode **pp = &g.park_head, *last = NULL;
    while (*pp) {
        struct mnode *nd = *pp;
        if (nd->port != b->port) {
            last = nd;
            pp = &nd->next;
            continue;
        }
        *pp = nd->next;
        g.park_bytes -= (size_t)nd->wire_len;
        deliver(b, nd);
    }
    g.park_tail = last;
}

static unsigned long n_dropped;

static void drop(int src, int tag, int len, const char *why) {
    n_dropped++;
    /* powers of two: a flood of garbage logs a handful of lines */
    if ((n_dropped & (n_dropped - 1)) == 0)
        BT_LOG(WARN, "mpi", "dropped a %d-byte message from rank %d tag %d: %s (%lu dropped)", len,
               src, tag, why, n_dropped);
}

/* Validates a data message and queues it on its transport; takes buf. Comm thread. */
static void dispatch(int src, int tag, unsigned char *buf, int len) {
    struct mnode *nd = NULL;
    if (len < HDR_FIXED || get_u32(buf) != MAGIC) {
        drop(src, tag, len, "no baton header");
        goto out;
    }
    int dir = buf[4], n = buf[5], id_len = buf[6] | buf[7] << 8;
    size_t hdr = HDR_FIXED + 8 * (size_t)n + (size_t)id_len;
    if (dir > 1 || n < 1 || id_len < 1 || id_len > TX_PEER_MAX || hdr > (size_t)len) {
        drop(src, tag, len, "bad header fields");
        goto out;
    }
    const char *id = (const char *)buf + HDR_FIXED + 8 * n;
    if (memchr(id, 0, (size_t)id_len)) {
        drop(src, tag, len, "identity with a NUL byte");
        goto out;
    }
    nd = calloc(1, sizeof *nd);
    if (!nd) {
        drop(src, tag, len, "out of memory");
        goto out;
    }
    memcpy(nd->peer, id, (size_t)id_len);
    if (n > TX_MAX_FRAMES) {
        nd->proto_err = 1; /* the server answers the sender; nothing else to deliver */
    } else {
        size_t off = hdr;
        for (int i = 0; i < n; i++) {
            uint64_t l = get_u64(buf + HDR_FIXED + 8 * i);
            if (l > (uint64_t)len - off) {
                drop(src, tag, len, "frame lengths exceed the message");
                goto out;
            }
            nd->data[i] = buf + off;
            nd->len[i] = (size_t)l;
            off += (size_t)l;
        }
        if (off != (size_t)len || nd->len[0] == 0) {
            drop(src, tag, len, off != (size_t)len ? "trailing bytes" : "empty frame 0");
            goto out;
        }
        nd->n = n;
    }
    nd->buf = buf;
    nd->src = src;
    nd->port = tag;
    nd->wire_len = len;
    int parked = 0;
    pthread_mutex_lock(&g.mu);
    struct mbe *b = dir == 0 ? find_server(tag) : find_client(src, tag, nd->peer);
    if (b) {
        deliver(b, nd);
    } else if (dir == 0 && g.park_bytes + (size_t)len <= TX_MPI_PARK_BYTES) {
        park(nd);
        parked = 1;
    }
    pthread_mutex_unlock(&g.mu);
    if (b || parked) return;
    if (dir == 0) /* more early messages than the park holds */
        drop(src, tag, len, "no server bound on that port yet, and the park is full");
    else /* a reply to a client that has closed, as ZeroMQ drops one to a gone peer */
        BT_LOG(DEBUG, "mpi", "no client for a message from rank %d port %d", src, tag);
out:
    if (nd) free(nd);
    free(buf);
}

/* Drops parked messages older than the liveness window (all of them when now is INT64_MAX).
 * Comm thread. */
static void expire_parked(int64_t now, const char *why) {
    struct mnode *old = NULL;
    pthread_mutex_lock(&g.mu);
    while (g.park_head && now - g.park_head->parked_at > (int64_t)g.o.liveness_ms * 1000000) {
        struct mnode *nd = g.park_head;
        g.park_head = nd->next;
        if (!g.park_head) g.park_tail = NULL;
        g.park_bytes -= (size_t)nd->wire_len;
        nd->next = old;
        old = nd;
    }
    pthread_mutex_unlock(&g.mu);
    while (old) {
        struct mnode *next = old->next;
        drop(old->src, old->port, old->wire_len, why);
        free(old->buf);
        free(old);
        old = next;
    }
}

static void on_ctrl(int src, const unsigned char *buf, int len) {
    if (!(len == 1 && buf[0] == CTRL_PING) && !(len == 2 && buf[0] == CTRL_BYE)) {
        drop(src, TAG_CTRL, len, "bad control message");
        return;
    }
    if (buf[0] == CTRL_BYE) {
        pthread_mutex_lock(&g.mu);
        int was = g.bye[src];
        g.bye[src] = 1;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
        if (!was) {
            BT_LOG(INFO, "mpi", "rank %d finished (exit %d)", src, buf[1]);
            if (g.o.on_event) g.o.on_event(MPICOMM_BYE, src, buf[1], "said BYE", g.o.arg);
        }
    }
}

/* At most one receive in flight: probe, post it, complete it. Returns 1 on progress. */
static int progress_recv(int64_t now) {
    char eb[MPI_MAX_ERROR_STRING];
    if (!c.rx_active) {
        int flag = 0, rc;
        MPI_Status st;
        if ((rc = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, g.comm, &flag, &st)) != MPI_SUCCESS) {
            BT_LOG(ERROR, "mpi", "MPI_Iprobe: %s", mpi_errstr(rc, eb));
            return 0;
        }
        if (!flag) return 0;
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        c.rx_src = st.MPI_SOURCE;
        c.rx_tag = st.MPI_TAG;
        c.rx_len = count;
        c.rx_buf = malloc(count > 0 ? (size_t)count : 1);
        if (!c.rx_buf) BT_PANIC("mpi: %d bytes for a message from rank %d", count, c.rx_src);
        rc = MPI_Irecv(c.rx_buf, count, MPI_BYTE, c.rx_src, c.rx_tag, g.comm, &c.rx_req);
        if (rc != MPI_SUCCESS) {
            rank_lost(c.rx_src, "MPI_Irecv of %d bytes: %s", count, mpi_errstr(rc, eb));
            free(c.rx_buf);
            return 0;
        }
        c.rx_active = 1;
        /* a live sender pushes its bytes while our loop progresses: allow the liveness window
         * plus 10 MB/s for the size */
        c.rx_deadline = now + (int64_t)g.o.liveness_ms * 1000000 + (int64_t)count * 100;
    }
    int flag = 0;
    int rc = MPI_Test(&c.rx_req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
        rank_lost(c.rx_src, "receive of %d bytes: %s", c.rx_len, mpi_errstr(rc, eb));
        c.rx_active = 0; /* the buffer stays with MPI: leaked, the job is ending */
        return 0;
    }
    if (!flag) {
        if (now > c.rx_deadline)
            rank_lost(c.rx_src, "a %d-byte message did not arrive within its deadline", c.rx_len);
        return 0;
    }
    c.rx_active = 0;
    c.heard[c.rx_src] = now;
    if (c.rx_tag == TAG_CTRL) {
        on_ctrl(c.rx_src, c.rx_buf, c.rx_len);
        free(c.rx_buf);
    } else {
        dispatch(c.rx_src, c.rx_tag, c.rx_buf, c.rx_len);
    }
    c.rx_buf = NULL;
    return 1;
}

static void queue_ctrl(int dest, const unsigned char *what, int len, int64_t now) {
    struct psend *s = calloc(1, sizeof *s);
    if (!s) return; /* a missed ping; the next interval retries */
    *s = (struct psend){.dest = dest,
                        .tag = TAG_CTRL,
                        .len = len,
                        .data = what,
                        .deadline = now + (int64_t)g.o.liveness_ms * 1000000};
    if (what == &ctrl_ping) c.pinging[dest] = 1;
    post_send(s);
}

static void heartbeat(int64_t now) {
    if (now >= c.next_ping) {
        for (int r = 0; r < g.size; r++)
            if (r != g.rank && !g.lost[r] && !g.bye[r] && !c.pinging[r])
                queue_ctrl(r, &ctrl_ping, 1, now);
        c.next_ping = now + (int64_t)g.o.heartbeat_ms * 1000000;
        expire_parked(now, "no server bound that port within the liveness window");
    }
    for (int r = 0; r < g.size; r++)
        if (r != g.rank && !g.lost[r] && !g.bye[r] &&
            now - c.heard[r] > (int64_t)g.o.liveness_ms * 1000000)
            rank_lost(r, "silent for %.1f s (liveness %d ms)", (double)(now - c.heard[r]) * 1e-9,
                      g.o.liveness_ms);
}

static void take_submitted(void) {
    pthread_mutex_lock(&g.mu);
    struct psend *s = g.sub_head;
    g.sub_head = g.sub_tail = NULL;
    pthread_mutex_unlock(&g.mu);
    while (s) {
        struct psend *next = s->next;
        post_send(s); /* in submission order: MPI keeps order per (source, dest, tag) */
        s = next;
    }
}

/* Sleeps until woken or us microseconds passed. */
static void comm_sleep(int us) {
    struct pollfd p = {.fd = g.evfd, .events = POLLIN};
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
    if (ppoll(&p, 1, &ts, NULL) > 0) {
        uint64_t v;
        ssize_t r = read(g.evfd, &v, sizeof v);
        (void)r;
    }
}

static void do_abort(int code, const char *msg) {
    BT_LOG(ERROR, "mpi", "rank %d ends the MPI job: %s", g.rank, msg);
    fflush(stderr);
    MPI_Abort(g.comm, code ? code : 1);
    _exit(code ? code : 1); /* MPI_Abort does not return; in case it does */
}

/* The finish sequence (transport_mpi.h): runs on the comm thread inside its loop. Returns 1
 * when the thread may leave the loop (MPI finalized), else 0. */
static int finish_step(int64_t now, int64_t *deadline, int *phase) {
    for (int r = 0; r < g.size; r++)
        if (g.lost[r]) /* no BYE dance: the job cannot end normally */
            *phase = 2;
    if (*phase == 0) { /* let the program's last messages (Shutdown, Results) leave */
        *deadline = now + (int64_t)g.finish_timeout_ms * 1000000;
        *phase = 1;
    }
    pthread_mutex_lock(&g.mu);
    int queued = g.sub_head != NULL;
    pthread_mutex_unlock(&g.mu);
    int data_pending = queued;
    for (struct psend *s = c.pending; s && !data_pending; s = s->next)
        data_pending = s->serial != 0 || s->buf != NULL;
    if (*phase == 1 && (!data_pending || now > *deadline)) {
        ctrl_bye[1] =
            (unsigned char)(g.finish_code < 0 || g.finish_code > 255 ? 255 : g.finish_code);
        for (int r = 0; r < g.size; r++)
            if (r != g.rank && !g.lost[r]) queue_ctrl(r, ctrl_bye, 2, now);
        *phase = 2;
    }
    if (*phase != 2) return 0;
    int missing = 0, lost = 0;
    char who[128] = "", gone[128] = "";
    pthread_mutex_lock(&g.mu);
    for (int r = 0; r < g.size; r++) {
        if (r == g.rank || (g.bye[r] && !g.lost[r])) continue;
        char *list = g.lost[r] ? gone : who;
        size_t l = strlen(list);
        if (l + 12 < sizeof who) snprintf(list + l, sizeof who - l, "%s%d", l ? "," : "", r);
        lost += g.lost[r];
        missing++;
    }
    pthread_mutex_unlock(&g.mu);
    if (lost) {
        char msg[256];
        snprintf(msg, sizeof msg, "rank(s) %s lost; an MPI job cannot continue without them", gone);
        do_abort(g.finish_code ? g.finish_code : 1, msg);
    }
    if (missing && now <= *deadline) return 0;
    if (missing) {
        char msg[256];
        snprintf(msg, sizeof msg, "rank(s) %s did not finish within %d ms", who,
                 g.finish_timeout_ms);
        do_abort(g.finish_code ? g.finish_code : 1, msg);
    }
    /* every BYE arrived: drain our own sends (the BYEs) before finalizing */
    while (c.pending && bt_now_ns() <= *deadline) {
        progress_sends(bt_now_ns());
        if (c.pending) comm_sleep(20);
    }
    MPI_Comm_free(&g.comm);
    int rc = MPI_Finalize();
    if (rc != MPI_SUCCESS) BT_LOG(WARN, "mpi", "MPI_Finalize: error %d", rc);
    return 1;
}

static void *comm_main(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals belong to the program's main thread */
    int provided = 0, rc, r = 0, s = 0;
    char eb[MPI_MAX_ERROR_STRING];
    rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        g.init_rc =
            bt_fail(&g.init_err, BT_EUNSUPPORTED, "MPI_Init_thread: %s", mpi_errstr(rc, eb));
    } else if (provided < MPI_THREAD_FUNNELED) {
        g.init_rc = bt_fail(&g.init_err, BT_EUNSUPPORTED,
                            "MPI_Init_thread: FUNNELED not provided (level %d)", provided);
    } else if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &g.comm)) != MPI_SUCCESS ||
               (rc = MPI_Comm_set_errhandler(g.comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS ||
               (rc = MPI_Comm_rank(g.comm, &r)) != MPI_SUCCESS ||
               (rc = MPI_Comm_size(g.comm, &s)) != MPI_SUCCESS) {
        g.init_rc =
            bt_fail(&g.init_err, BT_EUNSUPPORTED, "MPI communicator: %s", mpi_errstr(rc, eb));
    } else if (s > MAX_RANKS) {
        g.init_rc = bt_fail(&g.init_err, BT_EUNSUPPORTED, "MPI job of %d ranks > %d", s, MAX_RANKS);
    } else {
        g.rank = r;
        g.size = s;
        g.lost = calloc((size_t)s, 1);
        g.bye = calloc((size_t)s, 1);
        c.heard = calloc((size_t)s, sizeof *c.heard);
        c.pinging = calloc((size_t)s, 1);
        if (!g.lost || !g.bye || !c.heard || !c.pinging)
            g.init_rc = bt_fail(&g.init_err, -ENOMEM, "mpi: per-rank tables for %d ranks", s);
    }
    int64_t now = bt_now_ns();
    for (int i = 0; !g.init_rc && i < s; i++)
        c.heard[i] = now; /* a rank that never speaks is lost one window after start */
    pthread_mutex_lock(&g.mu);
    g.init_done = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (g.init_rc) {
        if (rc == MPI_SUCCESS && provided >= MPI_THREAD_FUNNELED) MPI_Finalize();
        return NULL;
    }
    BT_LOG(INFO, "mpi",
           "rank %d of %d: MPI_THREAD_FUNNELED comm thread up (heartbeat %d ms, "
           "liveness %d ms, idle %d us)",
           r, s, g.o.heartbeat_ms, g.o.liveness_ms, g.o.idle_us);
    int idle = 0, phase = 0;
    int64_t fin_deadline = 0;
    for (;;) {
        now = bt_now_ns();
        pthread_mutex_lock(&g.mu);
        int finishing = g.finishing, abort_code = g.abort_code;
        pthread_mutex_unlock(&g.mu);
        if (abort_code) do_abort(abort_code, g.abort_msg);
        take_submitted();
        int busy = progress_sends(now);
        for (int k = 0; k < 64 && progress_recv(now); k++)
            busy = 1;
        heartbeat(now);
        if (finishing && finish_step(now, &fin_deadline, &phase)) break;
        if (busy) {
            idle = 0;
            continue;
        }
        idle++;
        int us = 10 << (idle < 6 ? idle : 6);
        if (us > g.o.idle_us) us = g.o.idle_us;
        if ((c.n_pending || c.rx_active) && us > 20)
            us = 20; /* MPI moves a large transfer only while we call into it */
        comm_sleep(us);
    }
    expire_parked(INT64_MAX, "no server bound that port before MPI finished");
    pthread_mutex_lock(&g.mu);
    g.finish_done = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* ---- public: start / finish / abort / raw ---- */

int mpicomm_start(const struct mpicomm_opts *o, int *rank, int *size, bt_err *e) {
    if (g.started) return bt_fail(e, BT_EINVAL, "mpi: mpicomm_start called twice");
    g.o = *o;
    if (g.o.heartbeat_ms <= 0) g.o.heartbeat_ms = 1000;
    if (g.o.liveness_ms <= 0) g.o.liveness_ms = 15000;
    if (g.o.idle_us <= 0) g.o.idle_us = 250;
    g.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g.evfd < 0) return bt_fail(e, -errno, "mpi: eventfd: %s", strerror(errno));
    int rc = pthread_create(&g.th, NULL, comm_main, NULL);
    if (rc) {
        close(g.evfd);
        return bt_fail(e, -rc, "mpi: comm thread: %s", strerror(rc));
    }
    g.started = 1;
    pthread_mutex_lock(&g.mu);
    while (!g.init_done)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    if (g.init_rc) {
        pthread_join(g.th, NULL);
        g.started = 0;
        if (e) *e = g.init_err;
        return g.init_rc;
    }
    tx_mpi_backend = &tx_mpi_ops;
    *rank = g.rank;
    *size = g.size;
    return 0;
}

int mpicomm_finish(int timeout_ms, int exit_code) {
    if (!g.started) return 0;
    pthread_mutex_lock(&g.mu);
    g.finishing = 1;
    g.finish_timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    g.finish_code = exit_code;
    pthread_mutex_unlock(&g.mu);
    wake_comm();
    pthread_join(g.th, NULL);
    g.started = 0;
    tx_mpi_backend = NULL;
    return 0;
}

void mpicomm_abort(int code, const char *msg) {
    if (!g.started) {
        BT_LOG(ERROR, "mpi", "%s", msg);
        exit(code ? code : 1);
    }
    pthread_mutex_lock(&g.mu);
    snprintf(g.abort_msg, sizeof g.abort_msg, "%s", msg);
    g.abort_code = code ? code : 1;
    pthread_mutex_unlock(&g.mu);
    wake_comm();
    for (;;)
        pause(); /* the comm thread ends the process */
}

static int submit(int dest, int tag, void *buf, size_t len, uint64_t serial, int timeout_ms) {
    struct psend *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    *s = (struct psend){.dest = dest,
                        .tag = tag,
                        .len = (int)len,
                        .data = buf,
                        .buf = buf,
                        .serial = serial,
                        .deadline = bt_now_ns() + (int64_t)timeout_ms * 1000000};
    pthread_mutex_lock(&g.mu);
    if (g.sub_tail)
        g.sub_tail->next = s;
    else
        g.sub_head = s;
    g.sub_tail = s;
    pthread_mutex_unlock(&g.mu);
    wake_comm();
    return 0;
}

int mpicomm_send_raw(int rank, int tag, const void *buf, size_t len, bt_err *e) {
    if (!g.started || rank < 0 || rank >= g.size || tag < 0 || tag > TX_MPI_MAX_PORT ||
        len > INT_MAX)
        return bt_fail(e, BT_EINVAL, "mpi raw send: rank %d tag %d len %zu", rank, tag, len);
    void *copy = malloc(len ? len : 1);
    if (!copy) return bt_fail(e, -ENOMEM, "mpi raw send: %zu bytes", len);
    memcpy(copy, buf, len);
    int rc = submit(rank, tag, copy, len, 0, g.o.liveness_ms);
    if (rc) {
        free(copy);
        return bt_fail(e, rc, "mpi raw send to rank %d", rank);
    }
    return 0;
}

/* ---- the backend ---- */

/* "mpi:RANK[:PORT]": rank a number or "*" (-1), port a number or "*" (0), default 1. */
static int parse_endpoint(const char *ep, int *rank, int *port) {
    if (strncmp(ep, "mpi:", 4) != 0) return -1;
    const char *p = ep + 4;
    char *end;
    if (*p == '*') {
        *rank = -1;
        end = (char *)(uintptr_t)(p + 1);
    } else {
        errno = 0;
        long r = strtol(p, &end, 10);
        if (errno || end == p || r < 0 || r >= MAX_RANKS) return -1;
        *rank = (int)r;
    }
    if (*end == 0) {
        *port = 1;
        return 0;
    }
    if (*end != ':') return -1;
    p = end + 1;
    if (strcmp(p, "*") == 0) {
        *port = 0;
        return 0;
    }
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno || end == p || *end || v < 1 || v > TX_MPI_MAX_PORT) return -1;
    *port = (int)v;
    return 0;
}

static int mopen(transport_t *t, bt_err *e) {
    int rank, port;
    if (parse_endpoint(t->o.endpoint, &rank, &port))
        return bt_fail(e, BT_EINVAL,
                       "transport mpi: endpoint '%s' is not mpi:RANK:PORT (port 1..%d)",
                       t->o.endpoint, TX_MPI_MAX_PORT);
    int server = t->o.role == TRANSPORT_SERVER;
    if (server && rank != -1 && rank != g.rank)
        return bt_fail(e, BT_EINVAL, "transport mpi: bind %s on rank %d: not this rank",
                       t->o.endpoint, g.rank);
    if (!server && (rank < 0 || rank >= g.size || port == 0))
        return bt_fail(e, BT_EINVAL, "transport mpi: connect %s: needs a rank in 0..%d and a port",
                       t->o.endpoint, g.size - 1);
    if (t->o.n_ranks && t->o.n_ranks != g.size)
        return bt_fail(e, BT_EINVAL, "transport mpi: n_ranks %d but the job has %d", t->o.n_ranks,
                       g.size);
    struct mbe *b = calloc(1, sizeof *b);
    if (!b) return bt_fail(e, -ENOMEM, "transport mpi %s", t->o.endpoint);
    b->evfd = eventfd(0, EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC);
    if (b->evfd < 0) {
        int err = errno;
        free(b);
        return bt_fail(e, -err, "transport mpi %s: eventfd: %s", t->o.endpoint, strerror(err));
    }
    b->t = t;
    b->server = server;
    b->rank = server ? g.rank : rank;
    int rc = 0;
    pthread_mutex_lock(&g.mu);
    if (server && port == 0) { /* a free port, from the top so fixed ports stay free */
        for (port = TX_MPI_MAX_PORT; port > 0 && find_server(port); port--)
            ;
    }
    if (port == 0 ||
        (server ? find_server(port) != NULL : find_client(rank, port, t->o.identity) != NULL)) {
        rc = -EADDRINUSE;
    } else {
        b->port = port;
        b->serial = ++g.next_serial;
        b->next = g.reg;
        g.reg = b;
        if (server) unpark(b);
    }
    pthread_mutex_unlock(&g.mu);
    if (rc) {
        close(b->evfd);
        free(b);
        return bt_fail(e, rc, "transport mpi %s: %s already open", t->o.endpoint,
                       server ? "port" : "client");
    }
    snprintf(t->bound, sizeof t->bound, "mpi:%d:%d", b->rank, port);
    t->be = b;
    return 0;
}

static void node_free(struct mnode *nd) {
    if (nd) {
        free(nd->buf);
        free(nd);
    }
}

static void mrelease(transport_t *t) {
    struct mbe *b = t->be;
    node_free(b->held);
    b->held = NULL;
}

static void mclose(transport_t *t) {
    struct mbe *b = t->be;
    pthread_mutex_lock(&g.mu);
    for (struct mbe **p = &g.reg; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    pthread_mutex_unlock(&g.mu);
    /* unregistered: the comm thread can no longer queue here; our sends in flight complete
     * without us (their count is looked up by serial) */
    for (struct mnode *nd = b->head, *next; nd; nd = next) {
        next = nd->next;
        node_free(nd);
    }
    node_free(b->held);
    free(b->clients);
    close(b->evfd);
    free(b);
}

static void free_owned(const struct tx_frame *f, int n) {
    for (int i = 0; i < n; i++)
        if (f[i].free_fn) f[i].free_fn((void *)(uintptr_t)f[i].data, f[i].hint);
}

static int msend(transport_t *t, const char *peer, const struct tx_frame *f, int n, int dontwait,
                 bt_err *e) {
    struct mbe *b = t->be;
    const char *id = b->server ? peer : t->o.identity;
    size_t id_len = strlen(id), total = HDR_FIXED + 8 * (size_t)n + id_len;
    for (int i = 0; i < n; i++)
        total += f[i].len;
    int rc = 0, dest = b->rank;
    int64_t deadline = bt_now_ns() + (int64_t)t->o.send_timeout_ms * 1000000;
    pthread_mutex_lock(&g.mu);
    if (b->server) {
        dest = -1;
        for (int i = 0; i < b->n_clients; i++)
            if (strcmp(b->clients[i].id, peer) == 0) dest = b->clients[i].rank;
    }
    if (id_len > TX_PEER_MAX)
        rc = bt_fail(e, BT_EINVAL, "transport %s: peer id of %zu bytes", t->bound, id_len);
    else if (total > INT_MAX)
        rc = bt_fail(e, BT_EMSGSIZE,
                     "transport %s: message of %zu bytes > INT_MAX (one MPI "
                     "message)",
                     t->bound, total);
    else if (dest < 0)
        rc = bt_fail(e, BT_EPEERLOST, "transport %s: peer %s not connected", t->bound, peer);
    else if (g.lost[dest] || g.finishing)
        rc = bt_fail(e, BT_EPEERLOST, "transport %s: rank %d %s", t->bound, dest,
                     g.lost[dest] ? "is lost" : "(MPI is finishing)");
    while (!rc && b->inflight >= TX_MPI_HWM) {
        if (dontwait) {
            rc = bt_fail(e, BT_ETIMEDOUT, "transport %s: %d messages in flight to rank %d",
                         t->bound, b->inflight, dest);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t left = deadline - bt_now_ns();
        if (left <= 0) {
            rc = bt_fail(e, BT_ETIMEDOUT, "transport %s: send queue to rank %d full for %d ms",
                         t->bound, dest, t->o.send_timeout_ms);
            break;
        }
        int64_t abs_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + left;
        ts.tv_sec = abs_ns / 1000000000;
        ts.tv_nsec = abs_ns % 1000000000;
        pthread_cond_timedwait(&g.cv, &g.mu, &ts);
    }
    if (!rc) b->inflight++;
    pthread_mutex_unlock(&g.mu);
    if (rc) {
        free_owned(f, n);
        return rc;
    }
    unsigned char *buf = malloc(total);
    if (!buf) {
        free_owned(f, n);
        rc = bt_fail(e, -ENOMEM, "transport %s: %zu-byte message", t->bound, total);
        goto undo;
    }
    put_u32(buf, MAGIC);
    buf[4] = (unsigned char)(b->server ? 1 : 0);
    buf[5] = (unsigned char)n;
    buf[6] = (unsigned char)(id_len & 0xff);
    buf[7] = (unsigned char)(id_len >> 8);
    put_u32(buf + 8, 0);
    size_t off = HDR_FIXED;
    for (int i = 0; i < n; i++, off += 8)
        put_u64(buf + off, f[i].len);
    memcpy(buf + off, id, id_len);
    off += id_len;
    for (int i = 0; i < n; i++) {
        if (f[i].len) memcpy(buf + off, f[i].data, f[i].len);
        off += f[i].len;
    }
    free_owned(f, n); /* copied: the zero-copy promise of free_fn ends here */
    /* a live receiver drains continuously, so a send not done within the liveness window
     * (or send_timeout, if longer) means the rank is gone */
    int tmo = t->o.send_timeout_ms > g.o.liveness_ms ? t->o.send_timeout_ms : g.o.liveness_ms;
    if ((rc = submit(dest, b->port, buf, total, b->serial, tmo))) {
        free(buf);
        rc = bt_fail(e, rc, "transport %s: queueing a message", t->bound);
        goto undo;
    }
    return 0;
undo:
    pthread_mutex_lock(&g.mu);
    b->inflight--;
    pthread_mutex_unlock(&g.mu);
    return rc;
}

static int mrecv_nowait(transport_t *t, struct tx_msg *out, bt_err *e) {
    struct mbe *b = t->be;
    pthread_mutex_lock(&g.mu);
    struct mnode *nd = b->head;
    if (nd) {
        b->head = nd->next;
        if (!b->head) b->tail = NULL;
        uint64_t v;
        ssize_t r = read(b->evfd, &v, sizeof v); /* semaphore: takes exactly 1 */
        (void)r;
    }
    pthread_mutex_unlock(&g.mu);
    if (!nd) return BT_ETIMEDOUT;
    memcpy(out->peer, nd->peer, sizeof out->peer);
    if (nd->proto_err) {
        node_free(nd);
        out->n_frames = 0;
        return bt_fail(e, BT_EPROTO, "transport %s: message from %s has more than %d frames",
                       t->bound, out->peer, TX_MAX_FRAMES);
    }
    b->held = nd;
    out->n_frames = nd->n;
    for (int i = 0; i < nd->n; i++) {
        out->data[i] = nd->data[i];
        out->len[i] = nd->len[i];
    }
    return 0;
}

static void mpollitem(transport_t *t, zmq_pollitem_t *item) {
    struct mbe *b = t->be;
    *item = (zmq_pollitem_t){.socket = NULL, .fd = b->evfd, .events = ZMQ_POLLIN};
}

static const struct tx_backend_ops tx_mpi_ops = {
    .name = "mpi",
    .open = mopen,
    .close = mclose,
    .send = msend,
    .recv_nowait = mrecv_nowait,
    .release = mrelease,
    .pollitem = mpollitem,
};
