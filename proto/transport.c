/* proto/transport.c: backend dispatch plus everything backends share: argument checks, the
 * wait loop (zmq_poll over the backend's item and the wakeup eventfd, so zmq sockets and plain
 * fds mix), liveness pings and the peer table. See transport.h for the contract. */
#include "proto/transport.h"

#include "common/clock.h"
#include "common/log.h"
#include "proto/transport_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* The ping: frame 0 starting with 0x00 is never a packed Envelope (see transport.h). */
static const char ping_frame[2] = {0, 'P'};

static int is_ping(const struct tx_msg *m) {
    return m->n_frames >= 1 && m->len[0] >= 1 && ((const unsigned char *)m->data[0])[0] == 0;
}

const struct tx_backend_ops *tx_mpi_backend;

static const struct tx_backend_ops *backend(enum transport_kind k) {
    switch (k) {
    case TRANSPORT_ZMQ:
        return &tx_zmq_ops;
    case TRANSPORT_INPROC:
        return &tx_inproc_ops;
    case TRANSPORT_MPI:
        return tx_mpi_backend;
    default:
        return NULL;
    }
}

static int64_t window_ns(const transport_t *t) {
    return (int64_t)t->o.heartbeat_ms * t->o.liveness * 1000000;
}

/* ---- peer table ---- */

static struct peer_state *peer_find(transport_t *t, const char *id) {
    for (int i = 0; i < t->n_peers; i++)
        if (strcmp(t->peers[i].p.id, id) == 0) return &t->peers[i];
    return NULL;
}

static void peer_seen(transport_t *t, const char *id) {
    struct peer_state *p = peer_find(t, id);
    if (!p) {
        if (t->n_peers == t->cap_peers) {
            int cap = t->cap_peers ? 2 * t->cap_peers : 8;
            struct peer_state *np = realloc(t->peers, (size_t)cap * sizeof *np);
            if (!np) return; /* untracked peer: never reported lost; logged once per attempt */
            t->peers = np;
            t->cap_peers = cap;
        }
        p = &t->peers[t->n_peers++];
        memset(p, 0, sizeof *p);
        snprintf(p->p.id, sizeof p->p.id, "%s", id);
        if (t->o.role == TRANSPORT_SERVER)
            BT_LOG(DEBUG, "transport", "%s: peer %s connected", t->bound, id);
    } else if (p->lost) {
        BT_LOG(INFO, "transport", "%s: peer %s is back", t->bound, id[0] ? id : "(server)");
    }
    p->lost = 0;
    p->p.last_seen_ns = bt_now_ns();
}

/* Finds one peer silent past the window and not yet reported; servers forget it. */
static int take_lost(transport_t *t, int64_t now, char *id) {
    for (int i = 0; i < t->n_peers; i++) {
        struct peer_state *p = &t->peers[i];
        if (p->lost || now - p->p.last_seen_ns <= window_ns(t)) continue;
        memcpy(id, p->p.id, sizeof p->p.id);
        BT_LOG(WARN, "transport", "%s: peer %s lost: silent %.1fs (window %dms x %d)", t->bound,
               id[0] ? id : "(server)", (double)(now - p->p.last_seen_ns) * 1e-9, t->o.heartbeat_ms,
               t->o.liveness);
        if (t->o.role == TRANSPORT_SERVER)
            t->peers[i] = t->peers[--t->n_peers];
        else
            p->lost = 1;
        return 1;
    }
    return 0;
}

/* Earliest time something needs doing: next ping or the next peer to overrun its window. */
static int64_t next_due(const transport_t *t) {
    int64_t due = t->next_ping_ns;
    for (int i = 0; i < t->n_peers; i++) {
        int64_t d = t->peers[i].p.last_seen_ns + window_ns(t) + 1;
        if (!t->peers[i].lost && d < due) due = d;
    }
    return due;
}

int transport_peers(const transport_t *t, struct tx_peer *out, int max) {
    int n = 0;
    for (int i = 0; i < t->n_peers && n < max; i++)
        out[n++] = t->peers[i].p;
    return n;
}

int transport_silent_peers(const transport_t *t, int silent_ms, struct tx_peer *out, int max) {
    int64_t now = bt_now_ns(), lim = (int64_t)silent_ms * 1000000;
    int n = 0;
    for (int i = 0; i < t->n_peers && n < max; i++)
        if (now - t->peers[i].p.last_seen_ns > lim) out[n++] = t->peers[i].p;
    return n;
}

/* ---- pings ---- */

int transport_tick(transport_t *t, bt_err *e) {
    (void)e;
    int64_t now = bt_now_ns();
    if (now < t->next_ping_ns) return 0;
    struct tx_frame f = {.data = ping_frame, .len = sizeof ping_frame};
    int failed = 0;
    if (t->o.role == TRANSPORT_CLIENT) {
        failed = t->ops->send(t, "", &f, 1, 1, NULL) != 0;
    } else {
        for (int i = 0; i < t->n_peers; i++)
            t->ops->send(t, t->peers[i].p.id, &f, 1, 1, NULL); /* silence detects the dead */
    }
    /* a client whose ping could not even be queued retries soon rather than a full interval */
    int64_t ivl = (int64_t)t->o.heartbeat_ms * 1000000;
    t->next_ping_ns = now + (failed && ivl > 50000000 ? 50000000 : ivl);
    return 0;
}

/* ---- open / close ---- */

int transport_open(transport_t **out, const struct transport_opts *o, bt_err *e) {
    *out = NULL;
    const struct tx_backend_ops *ops = backend(o->kind);
    if (!ops) return bt_fail(e, BT_EUNSUPPORTED, "transport: kind %d not built in", (int)o->kind);
    if (!o->endpoint || !o->endpoint[0])
        return bt_fail(e, BT_EINVAL, "transport %s: no endpoint", ops->name);
    if (o->role == TRANSPORT_CLIENT &&
        (!o->identity || !o->identity[0] || strlen(o->identity) > TX_PEER_MAX))
        return bt_fail(e, BT_EINVAL, "transport %s client of %s: identity must be 1..%d bytes",
                       ops->name, o->endpoint, TX_PEER_MAX);
    transport_t *t = calloc(1, sizeof *t);
    if (!t) return bt_fail(e, -ENOMEM, "transport %s", o->endpoint);
    t->ops = ops;
    t->o = *o;
    t->wake_fd = -1;
    if (strlen(o->endpoint) >= sizeof t->endpoint_copy) {
        free(t);
        return bt_fail(e, BT_EINVAL, "transport: endpoint longer than %zu bytes",
                       sizeof t->endpoint_copy - 1);
    }
    snprintf(t->endpoint_copy, sizeof t->endpoint_copy, "%s", o->endpoint);
    snprintf(t->identity_copy, sizeof t->identity_copy, "%s", o->identity ? o->identity : "");
    t->o.endpoint = t->endpoint_copy;
    t->o.identity = t->identity_copy;
    if (!t->o.max_frame_bytes) t->o.max_frame_bytes = (size_t)1 << 30;
    if (t->o.heartbeat_ms <= 0) t->o.heartbeat_ms = 1000;
    if (t->o.liveness <= 0) t->o.liveness = 3;
    if (t->o.send_timeout_ms <= 0) t->o.send_timeout_ms = 10000;
    if (t->o.reconnect_ms <= 0) t->o.reconnect_ms = 100;
    if (t->o.reconnect_max_ms <= 0) t->o.reconnect_max_ms = 5000;
    int rc;
    t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->wake_fd < 0) {
        rc = bt_fail(e, -errno, "transport %s: eventfd: %s", o->endpoint, strerror(errno));
        goto fail;
    }
    if ((rc = ops->open(t, e))) goto fail;
    if (o->role == TRANSPORT_CLIENT) {
        peer_seen(t, "");    /* the server: lost if never heard from within the window */
        t->next_ping_ns = 0; /* ping at once so the server learns our identity */
        transport_tick(t, NULL);
    } else {
        t->next_ping_ns = bt_now_ns() + (int64_t)t->o.heartbeat_ms * 1000000;
    }
    BT_LOG(DEBUG, "transport", "%s %s %s%s%s", ops->name,
           o->role == TRANSPORT_SERVER ? "bound" : "connected", t->bound,
           t->identity_copy[0] ? " as " : "", t->identity_copy);
    *out = t;
    return 0;
fail:
    if (t->wake_fd >= 0) close(t->wake_fd);
    free(t);
    return rc;
}

void transport_close(transport_t *t) {
    if (!t) return;
    t->ops->release(t);
    t->ops->close(t);
    close(t->wake_fd);
    free(t->peers);
    free(t);
}

const char *transport_endpoint(const transport_t *t) {
    return t->bound;
}

void transport_wakeup(transport_t *t) {
    uint64_t one = 1;
    /* async-signal-safe; a full counter (2^64-2 wakeups) is harmless, so the result is moot */
    ssize_t w = write(t->wake_fd, &one, sizeof one);
    (void)w;
}

/* ---- send / recv ---- */

int transport_send(transport_t *t, const char *peer, const struct tx_frame *frames, int n,
                   bt_err *e) {
    int rc = 0;
    if (n < 1 || n > TX_MAX_FRAMES)
        rc = bt_fail(e, BT_EINVAL, "transport %s: %d frames not in 1..%d", t->bound, n,
                     TX_MAX_FRAMES);
    else if (frames[0].len == 0 || ((const unsigned char *)frames[0].data)[0] == 0)
        rc = bt_fail(e, BT_EINVAL,
                     "transport %s: frame 0 empty or starting with 0x00 "
                     "(reserved for pings)",
                     t->bound);
    else if (t->o.role == TRANSPORT_SERVER && (!peer || !peer[0]))
        rc = bt_fail(e, BT_EINVAL, "transport %s: server send needs a peer id", t->bound);
    for (int i = 0; rc == 0 && i < n; i++)
        if (frames[i].len > t->o.max_frame_bytes)
            rc = bt_fail(e, BT_EMSGSIZE, "transport %s: frame %d is %zu bytes > %zu", t->bound, i,
                         frames[i].len, t->o.max_frame_bytes);
    if (rc) {
        /* ownership of free_fn frames passed to us: honour it on failure too */
        for (int i = 0; i < n && i < TX_MAX_FRAMES; i++)
            if (frames[i].free_fn)
                frames[i].free_fn((void *)(uintptr_t)frames[i].data, frames[i].hint);
        return rc;
    }
    return t->ops->send(t, t->o.role == TRANSPORT_CLIENT ? "" : peer, frames, n, 0, e);
}

static int wait_ms(int64_t until, int64_t now) {
    int64_t ms = (until - now + 999999) / 1000000; /* round up: never spin on a short wait */
    return ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

static int drain_wake(transport_t *t) {
    uint64_t v;
    return read(t->wake_fd, &v, sizeof v) == (ssize_t)sizeof v;
}

int transport_recv(transport_t *t, int timeout_ms, struct tx_msg *out, bt_err *e) {
    t->ops->release(t);
    out->n_frames = 0;
    out->peer[0] = 0;
    int64_t start = bt_now_ns();
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : start + (int64_t)timeout_ms * 1000000;
    for (;;) {
        transport_tick(t, e);
        int64_t now = bt_now_ns();
        if (take_lost(t, now, out->peer))
            return bt_fail(e, BT_EPEERLOST, "transport %s: peer %s silent for %d ms", t->bound,
                           out->peer[0] ? out->peer : "(server)",
                           t->o.heartbeat_ms * t->o.liveness);
        int64_t until = next_due(t);
        if (deadline < until) until = deadline;
        zmq_pollitem_t it[2];
        t->ops->pollitem(t, &it[0]);
        it[1] = (zmq_pollitem_t){.socket = NULL, .fd = t->wake_fd, .events = ZMQ_POLLIN};
        int n = zmq_poll(it, 2, wait_ms(until, now));
        if (n < 0 && errno != EINTR)
            return bt_fail(e, -errno, "transport %s: poll: %s", t->bound, zmq_strerror(errno));
        if (n > 0 && (it[1].revents & ZMQ_POLLIN) && drain_wake(t))
            return bt_fail(e, -EINTR, "transport %s: woken", t->bound);
        if (n > 0 && (it[0].revents & ZMQ_POLLIN)) {
            int rc = t->ops->recv_nowait(t, out, e);
            if (rc == 0 || rc == BT_EPROTO) peer_seen(t, out->peer);
            if (rc == 0 && is_ping(out)) {
                t->ops->release(t);
                out->n_frames = 0;
                continue;
            }
            if (rc != BT_ETIMEDOUT) return rc;
        }
        if (bt_now_ns() >= deadline)
            return bt_fail(e, BT_ETIMEDOUT, "transport %s: nothing within %d ms", t->bound,
                           timeout_ms);
    }
}

int transport_poll(transport_t *const *ts, int n, int timeout_ms, uint64_t *ready, bt_err *e) {
    *ready = 0;
    if (n < 1 || n > 64)
        return bt_fail(e, BT_EINVAL, "transport_poll: %d transports not in 1..64", n);
    zmq_pollitem_t it[128];
    int64_t now = bt_now_ns();
    int64_t until = timeout_ms < 0 ? INT64_MAX : now + (int64_t)timeout_ms * 1000000;
    for (int i = 0; i < n; i++) {
        int64_t due = next_due(ts[i]);
        if (due <= now)
            *ready |= 1ull << i; /* a ping to send or a loss to report: recv handles both */
        if (due < until) until = due;
        ts[i]->ops->pollitem(ts[i], &it[2 * i]);
        it[2 * i + 1] =
            (zmq_pollitem_t){.socket = NULL, .fd = ts[i]->wake_fd, .events = ZMQ_POLLIN};
    }
    int rc = zmq_poll(it, 2 * n, *ready ? 0 : wait_ms(until, now));
    if (rc < 0 && errno != EINTR)
        return bt_fail(e, -errno, "transport_poll: %s", zmq_strerror(errno));
    now = bt_now_ns();
    for (int i = 0; i < n; i++)
        if ((rc > 0 && ((it[2 * i].revents | it[2 * i + 1].revents) & ZMQ_POLLIN)) ||
            next_due(ts[i]) <= now)
            *ready |= 1ull << i;
    return 0;
}
