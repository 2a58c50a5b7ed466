/* proto/transport_impl.h: private to proto/transport*.c. The backend vtable and the shared
 * transport record. The generic layer (transport.c) owns waiting (zmq_poll over the backend's
 * poll item and the wakeup eventfd), pings and the peer table; a backend only moves frames. */
#ifndef BT_PROTO_TRANSPORT_IMPL_H
#define BT_PROTO_TRANSPORT_IMPL_H
#include "proto/transport.h"

#include <zmq.h>

struct tx_backend_ops {
    const char *name;
    /* Creates t->be from t->o (defaults filled, strings owned by t); sets t->bound. */
    int (*open)(transport_t *t, bt_err *e);
    void (*close)(transport_t *t);
    /* Same contract as transport_send (frames already checked); dontwait: fail with
     * BT_ETIMEDOUT at once instead of waiting send_timeout_ms. */
    int (*send)(transport_t *t, const char *peer, const struct tx_frame *f, int n, int dontwait,
                bt_err *e);
    /* One message without waiting: 0, BT_ETIMEDOUT (none), BT_EPROTO (too many frames, out->peer
     * set), or another negative code. Frames stay valid until release. */
    int (*recv_nowait)(transport_t *t, struct tx_msg *out, bt_err *e);
    void (*release)(transport_t *t); /* ends the loan of the last received frames */
    /* The item that polls readable (ZMQ_POLLIN) while a message may be waiting. */
    void (*pollitem)(transport_t *t, zmq_pollitem_t *item);
};

extern const struct tx_backend_ops tx_zmq_ops, tx_inproc_ops;
/* TRANSPORT_MPI: NULL unless the program links the MPI backend and registered it
 * (mpi/transport_mpi.c, in build/baton-mpi only), so libbaton.a needs no MPI library. */
extern const struct tx_backend_ops *tx_mpi_backend;

struct peer_state {
    struct tx_peer p;
    int lost; /* reported lost and not heard from since (clients only; servers forget) */
};

struct transport {
    const struct tx_backend_ops *ops;
    void *be;
    struct transport_opts o; /* defaults filled; endpoint and identity point into the copies */
    char endpoint_copy[512];
    char identity_copy[TX_PEER_MAX + 1];
    char bound[512]; /* endpoint actually bound / connected */
    int wake_fd;     /* eventfd: transport_wakeup writes, recv drains */
    struct peer_state *peers;
    int n_peers, cap_peers;
    int64_t next_ping_ns;
};

#endif
