/* proto/transport_zmq.c: ZeroMQ backend. Server = ROUTER (ROUTER_MANDATORY so a send to a
 * vanished client fails with BT_EPEERLOST instead of vanishing; ROUTER_HANDOVER so a restarted
 * worker with the same identity takes over its old slot). Client = DEALER with a routing id,
 * automatic reconnect with exponential backoff (ZMQ_RECONNECT_IVL .. _MAX). Both set ZMTP
 * heartbeats (ZMQ_HEARTBEAT_IVL/TTL/TIMEOUT) so dead TCP connections are dropped by libzmq
 * itself; application-level liveness lives in transport.c. Frames with a free_fn go out
 * without a copy (zmq_msg_init_data); received frames are lent as zmq_msg_t until release.
 * One zmq context per process, reference-counted, shared by all ZMQ transports. */
#include "common/log.h"
#include "proto/transport_impl.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static void *ctx;
static int ctx_refs;

static void *ctx_get(void) {
    pthread_mutex_lock(&ctx_mu);
    if (!ctx) ctx = zmq_ctx_new();
    if (ctx) ctx_refs++;
    void *c = ctx;
    pthread_mutex_unlock(&ctx_mu);
    return c;
}

static void ctx_put(void) {
    pthread_mutex_lock(&ctx_mu);
    if (--ctx_refs == 0) {
        zmq_ctx_term(ctx); /* every socket is closed with LINGER 0, so this does not block */
        ctx = NULL;
    }
    pthread_mutex_unlock(&ctx_mu);
}

struct zbe {
    void *sock;
    zmq_msg_t held[TX_MAX_FRAMES];
    int n_held;
};

static int setopt_int(void *s, int opt, int v, const char *what, transport_t *t, bt_err *e) {
    if (zmq_setsockopt(s, opt, &v, sizeof v) == 0) return 0;
    return bt_fail(e, -errno, "transport zmq %s: %s: %s", t->o.endpoint, what, zmq_strerror(errno));
}

static int zopen(transport_t *t, bt_err *e) {
    const struct transport_opts *o = &t->o;
    struct zbe *z = calloc(1, sizeof *z);
    if (!z) return bt_fail(e, -ENOMEM, "transport zmq %s", o->endpoint);
    void *c = ctx_get();
    if (!c) {
        free(z);
        return bt_fail(e, -ENOMEM, "transport zmq %s: zmq_ctx_new failed", o->endpoint);
    }
    int server = o->role == TRANSPORT_SERVER, rc;
    z->sock = zmq_socket(c, server ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!z->sock) {
        rc = bt_fail(e, -errno, "transport zmq %s: socket: %s", o->endpoint, zmq_strerror(errno));
        goto fail;
    }
    int64_t maxmsg = o->max_frame_bytes > (size_t)INT64_MAX ? -1 : (int64_t)o->max_frame_bytes;
    int window = o->heartbeat_ms * o->liveness;
    if (zmq_setsockopt(z->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) {
        rc = bt_fail(e, -errno, "transport zmq %s: MAXMSGSIZE: %s", o->endpoint,
                     zmq_strerror(errno));
        goto fail;
    }
    if ((rc = setopt_int(z->sock, ZMQ_LINGER, 0, "LINGER", t, e)) ||
        (rc = setopt_int(z->sock, ZMQ_SNDTIMEO, o->send_timeout_ms, "SNDTIMEO", t, e)) ||
        (rc = setopt_int(z->sock, ZMQ_HEARTBEAT_IVL, o->heartbeat_ms, "HEARTBEAT_IVL", t, e)) ||
        (rc = setopt_int(z->sock, ZMQ_HEARTBEAT_TIMEOUT, window, "HEARTBEAT_TIMEOUT", t, e)) ||
        (rc = setopt_int(z->sock, ZMQ_HEARTBEAT_TTL, window, "HEARTBEAT_TTL", t, e)))
        goto fail;
    if (server) {
        if ((rc = setopt_int(z->sock, ZMQ_ROUTER_MANDATORY, 1, "ROUTER_MANDATORY", t, e)) ||
            (rc = setopt_int(z->sock, ZMQ_ROUTER_HANDOVER, 1, "ROUTER_HANDOVER", t, e)))
            goto fail;
        if (zmq_bind(z->sock, o->endpoint) != 0) {
            rc = bt_fail(e, -errno, "transport zmq: bind %s: %s", o->endpoint, zmq_strerror(errno));
            goto fail;
        }
        size_t len = sizeof t->bound;
        if (zmq_getsockopt(z->sock, ZMQ_LAST_ENDPOINT, t->bound, &len) != 0)
            snprintf(t->bound, sizeof t->bound, "%s", o->endpoint);
    } else {
        if (zmq_setsockopt(z->sock, ZMQ_ROUTING_ID, o->identity, strlen(o->identity)) != 0) {
            rc = bt_fail(e, -errno, "transport zmq %s: identity %s: %s", o->endpoint, o->identity,
                         zmq_strerror(errno));
            goto fail;
        }
        if ((rc = setopt_int(z->sock, ZMQ_RECONNECT_IVL, o->reconnect_ms, "RECONNECT_IVL", t, e)) ||
            (rc = setopt_int(z->sock, ZMQ_RECONNECT_IVL_MAX, o->reconnect_max_ms,
                             "RECONNECT_IVL_MAX", t, e)))
            goto fail;
        if (zmq_connect(z->sock, o->endpoint) != 0) {
            rc = bt_fail(e, -errno, "transport zmq: connect %s: %s", o->endpoint,
                         zmq_strerror(errno));
            goto fail;
        }
        snprintf(t->bound, sizeof t->bound, "%s", o->endpoint);
    }
    t->be = z;
    return 0;
fail:
    if (z->sock) zmq_close(z->sock);
    ctx_put();
    free(z);
    return rc;
}

static void zrelease(transport_t *t) {
    struct zbe *z = t->be;
    for (int i = 0; i < z->n_held; i++)
        zmq_msg_close(&z->held[i]);
    z->n_held = 0;
}

static void zclose(transport_t *t) {
    struct zbe *z = t->be;
    zrelease(t);
    zmq_close(z->sock);
    ctx_put();
    free(z);
}

static void free_owned(const struct tx_frame *f, int from, int n) {
    for (int i = from; i < n; i++)
        if (f[i].free_fn) f[i].free_fn((void *)(uintptr_t)f[i].data, f[i].hint);
}

static int send_errno(transport_t *t, const char *peer, int err, bt_err *e) {
    if (err == EHOSTUNREACH)
        return bt_fail(e, BT_EPEERLOST, "transport %s: peer %s not connected", t->bound, peer);
    if (err == EAGAIN)
        return bt_fail(e, BT_ETIMEDOUT, "transport %s: send queue to %s full", t->bound,
                       peer[0] ? peer : "(server)");
    return bt_fail(e, -err, "transport %s: send to %s: %s", t->bound, peer, zmq_strerror(err));
}

static int zsend(transport_t *t, const char *peer, const struct tx_frame *f, int n, int dontwait,
                 bt_err *e) {
    struct zbe *z = t->be;
    int flags = dontwait ? ZMQ_DONTWAIT : 0;
    if (t->o.role == TRANSPORT_SERVER &&
        zmq_send(z->sock, peer, strlen(peer), flags | ZMQ_SNDMORE) < 0) {
        int err = errno;
        free_owned(f, 0, n);
        return send_errno(t, peer, err, e);
    }
    for (int i = 0; i < n; i++) {
        zmq_msg_t m;
        int rc;
        if (f[i].free_fn) {
            /* zero copy: libzmq calls free_fn when the frame has left (or on close) */
            rc = zmq_msg_init_data(&m, (void *)(uintptr_t)f[i].data, f[i].len, f[i].free_fn,
                                   f[i].hint);
        } else {
            rc = zmq_msg_init_size(&m, f[i].len);
            if (rc == 0 && f[i].len) memcpy(zmq_msg_data(&m), f[i].data, f[i].len);
        }
        if (rc != 0) {
            int err = errno;
            free_owned(f, f[i].free_fn ? i : i + 1, n);
            return bt_fail(e, -err, "transport %s: frame %d of %zu bytes: %s", t->bound, i,
                           f[i].len, zmq_strerror(err));
        }
        /* later parts of a multipart never block: libzmq admits the message at its first part */
        if (zmq_msg_send(&m, z->sock, flags | (i + 1 < n ? ZMQ_SNDMORE : 0)) < 0) {
            int err = errno;
            zmq_msg_close(&m); /* calls free_fn for an unsent zero-copy frame */
            free_owned(f, i + 1, n);
            return send_errno(t, peer, err, e);
        }
    }
    return 0;
}

static int more(void *sock) {
    int m = 0;
    size_t len = sizeof m;
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &m, &len) == 0 && m;
}

static void drain_rest(void *sock) {
    while (more(sock)) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

static int zrecv_nowait(transport_t *t, struct tx_msg *out, bt_err *e) {
    struct zbe *z = t->be;
    out->peer[0] = 0;
    out->n_frames = 0;
    int first = 0;
    if (t->o.role == TRANSPORT_SERVER) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, z->sock, ZMQ_DONTWAIT) < 0) {
            int err = errno;
            zmq_msg_close(&id);
            return err == EAGAIN
                       ? BT_ETIMEDOUT
                       : bt_fail(e, -err, "transport %s: recv: %s", t->bound, zmq_strerror(err));
        }
        size_t n = zmq_msg_size(&id);
        const char *p = zmq_msg_data(&id);
        /* our clients always set a printable identity; libzmq's generated ids start with 0 */
        int ok = n > 0 && n <= TX_PEER_MAX && memchr(p, 0, n) == NULL;
        if (ok) {
            memcpy(out->peer, p, n);
            out->peer[n] = 0;
        }
        zmq_msg_close(&id);
        if (!ok) {
            drain_rest(z->sock);
            BT_LOG(DEBUG, "transport", "%s: dropped a message from an anonymous peer", t->bound);
            return BT_ETIMEDOUT;
        }
        if (!more(z->sock)) return BT_ETIMEDOUT; /* identity with no body: nothing to deliver */
    } else {
        first = 1;
    }
    for (int i = 0;; i++) {
        if (i == TX_MAX_FRAMES) {
            drain_rest(z->sock);
            zrelease(t);
            out->n_frames = 0;
            return bt_fail(e, BT_EPROTO, "transport %s: message from %s has more than %d frames",
                           t->bound, out->peer[0] ? out->peer : "(server)", TX_MAX_FRAMES);
        }
        zmq_msg_init(&z->held[i]);
        z->n_held = i + 1;
        /* the first part of a client's message may not be there yet; later parts always are */
        if (zmq_msg_recv(&z->held[i], z->sock, first && i == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int err = errno;
            zrelease(t);
            out->n_frames = 0;
            return err == EAGAIN
                       ? BT_ETIMEDOUT
                       : bt_fail(e, -err, "transport %s: recv: %s", t->bound, zmq_strerror(err));
        }
        out->data[i] = zmq_msg_data(&z->held[i]);
        out->len[i] = zmq_msg_size(&z->held[i]);
        out->n_frames = i + 1;
        if (!more(z->sock)) break;
    }
    if (out->len[0] == 0) { /* not ours to deliver: frame 0 must be an envelope or a ping */
        zrelease(t);
        out->n_frames = 0;
        return BT_ETIMEDOUT;
    }
    return 0;
}

static void zpollitem(transport_t *t, zmq_pollitem_t *item) {
    struct zbe *z = t->be;
    *item = (zmq_pollitem_t){.socket = z->sock, .fd = 0, .events = ZMQ_POLLIN};
}

const struct tx_backend_ops tx_zmq_ops = {
    .name = "zmq",
    .open = zopen,
    .close = zclose,
    .send = zsend,
    .recv_nowait = zrecv_nowait,
    .release = zrelease,
    .pollitem = zpollitem,
};
