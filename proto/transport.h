/* proto/transport.h: framed multipart messages between named peers, with deadlines and
 * peer-loss detection. Backends: ZMQ (TCP between daemons), INPROC (one process: tests and
 * single-process pipelines), MPI (build/baton-mpi only: mpi/transport_mpi.h registers it).
 *
 * Roles: a SERVER binds (ZMQ ROUTER) and talks to many clients, addressed by their identity
 * string; a CLIENT connects (ZMQ DEALER with its identity) to one server, addressed as NULL/"".
 * A process may hold several transports (a worker: a SERVER for its previous stage, a CLIENT to
 * the coordinator and a CLIENT to its next stage) and wait on all of them with transport_poll.
 *
 * A message is 1..TX_MAX_FRAMES frames: frame 0 = packed Envelope (proto/msg.h), frames 1..k =
 * raw payloads. Frame 0 must be non-empty and must not start with byte 0x00: such frames are
 * the transport's own liveness pings, never shown to callers (a packed Envelope starts with a
 * field tag, never 0).
 *
 * Liveness (ZeroMQ guide, "paranoid pirate"): each side pings its peers every heartbeat_ms
 * while it is in transport_recv/transport_poll/transport_tick; any frame from a peer counts as
 * a sign of life. A peer silent for heartbeat_ms * liveness is reported once by transport_recv
 * as BT_EPEERLOST with out->peer naming it (a server then forgets it; a client keeps
 * reconnecting with backoff and reports it alive again implicitly when frames arrive). A thread
 * busy for longer than that window must call transport_tick() now and then. Pings queue
 * behind data on the same connection, so the window must also exceed the time the largest
 * message takes to transfer (8 MB at 1 Gbit/s: 70 ms; the 1 s x 3 default is ample).
 *
 * Threading: one thread uses a transport at a time; transport_wakeup() alone may be called
 * from any thread (or a signal handler: it writes an eventfd). */
#ifndef BT_PROTO_TRANSPORT_H
#define BT_PROTO_TRANSPORT_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct transport transport_t;

enum transport_kind { TRANSPORT_INPROC, TRANSPORT_ZMQ, TRANSPORT_MPI, TRANSPORT_KIND_COUNT };
enum transport_role { TRANSPORT_SERVER, TRANSPORT_CLIENT };

#define TX_MAX_FRAMES 16
#define TX_PEER_MAX   255 /* identity bytes (ZeroMQ routing id limit) */

struct transport_opts {
    enum transport_kind kind;
    enum transport_role role;
    /* ZMQ server: "tcp://127.0.0.1:*" (port chosen by the OS; see transport_endpoint) or
     * "tcp://0.0.0.0:7701"; ZMQ client: "tcp://10.0.0.5:7701". INPROC: any name; clients
     * connect to a server bound under the same name in this process. */
    const char *endpoint;
    const char *identity;   /* client: its id as the server sees it (1..255 bytes, required);
                                 server: optional, used in logs */
    size_t max_frame_bytes; /* larger frames are refused (BT_EMSGSIZE) / dropped by zmq;
                                 0 = 1 GiB */
    int heartbeat_ms;       /* ping interval; 0 = 1000 */
    int liveness;           /* missed intervals before a peer is lost; 0 = 3 */
    int send_timeout_ms;    /* a send blocked by a full queue gives up; 0 = 10000 */
    int reconnect_ms;       /* client: first reconnect delay; 0 = 100 */
    int reconnect_max_ms;   /* client: backoff cap; 0 = 5000 */
    int rank, n_ranks;      /* MPI only */
};

/* One outgoing frame. With free_fn NULL the transport copies data before transport_send
 * returns (ZMQ: zmq_msg_init_size + memcpy; INPROC: malloc + memcpy). With free_fn set,
 * ownership passes to the transport on every return path, success or failure: it sends data
 * without copying (ZMQ: zmq_msg_init_data) and calls free_fn(data, hint) exactly once when
 * done, possibly from a ZeroMQ I/O thread. */
struct tx_frame {
    const void *data;
    size_t len;
    void (*free_fn)(void *data, void *hint);
    void *hint;
};

/* A received message. Frames are lent: valid until the next transport_recv on this transport
 * or transport_close. peer: the sender's identity ("" for a client's server). */
struct tx_msg {
    char peer[TX_PEER_MAX + 1];
    int n_frames;
    const void *data[TX_MAX_FRAMES];
    size_t len[TX_MAX_FRAMES];
};

struct tx_peer {
    char id[TX_PEER_MAX + 1];
    int64_t last_seen_ns; /* bt_now_ns() of the last frame received from it */
};

int transport_open(transport_t **out, const struct transport_opts *o, bt_err *e);
void transport_close(transport_t *t); /* NULL ok; frames lent by recv die with it */

/* The endpoint actually bound (ZMQ: "tcp://127.0.0.1:41234" after binding port *). */
const char *transport_endpoint(const transport_t *t);

/* Sends frames[0..n) to peer (server: a client identity; client: NULL or ""). Errors:
 * BT_EINVAL (n out of 1..TX_MAX_FRAMES, frame 0 empty or starting with 0x00, peer missing),
 * BT_EMSGSIZE (a frame over max_frame_bytes), BT_EPEERLOST (server: no such client
 * connected), BT_ETIMEDOUT (queue full for send_timeout_ms). */
int transport_send(transport_t *t, const char *peer, const struct tx_frame *frames, int n,
                   bt_err *e);

/* Waits up to timeout_ms (0 = poll, -1 = forever) for a message. Returns 0 with *out filled,
 * BT_ETIMEDOUT, BT_EPEERLOST (out->peer = the lost peer; out->n_frames = 0), -EINTR when
 * transport_wakeup was called, BT_EPROTO for a message of more than TX_MAX_FRAMES frames
 * (dropped; out->peer = sender so the caller can answer). Sends due pings on the way. */
int transport_recv(transport_t *t, int timeout_ms, struct tx_msg *out, bt_err *e);

/* Sends due pings without receiving: for a thread busy in a long computation. */
int transport_tick(transport_t *t, bt_err *e);

/* Makes the current or next transport_recv/transport_poll on t return -EINTR. Any thread. */
void transport_wakeup(transport_t *t);

/* Waits up to timeout_ms for any of ts[0..n) (n <= 64) to need a transport_recv: a message,
 * a wakeup, a due ping or an overdue peer. *ready gets bit i for ts[i]. Returns 0 (ready may
 * be 0 after the timeout) or a negative code. Then call transport_recv(ts[i], 0, ...) on each
 * ready one; it may return BT_ETIMEDOUT when only a ping was due. Transports of different
 * kinds may be mixed. */
int transport_poll(transport_t *const *ts, int n, int timeout_ms, uint64_t *ready, bt_err *e);

/* Known peers with the time they were last heard from; returns the count (<= max). A server
 * learns a client at its first frame (clients ping on open). */
int transport_peers(const transport_t *t, struct tx_peer *out, int max);
/* Peers silent for more than silent_ms, into out[0..max); returns the count. */
int transport_silent_peers(const transport_t *t, int silent_ms, struct tx_peer *out, int max);

#endif
