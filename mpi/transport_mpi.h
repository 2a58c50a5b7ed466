/* mpi/transport_mpi.h: the MPI backend of proto/transport.h and the one thread per rank that
 * talks MPI (compiled into build/baton-mpi and its self-test only; libbaton.a has no MPI).
 *
 * mpicomm_start() starts the communication thread, which calls MPI_Init_thread(FUNNELED) and
 * from then on is the only thread making MPI calls; it registers TRANSPORT_MPI with the
 * transport layer. Any thread may then open MPI transports and use them as the contract of
 * proto/transport.h says (one thread per transport at a time):
 *
 *   endpoint "mpi:RANK:PORT": a SERVER binds "mpi:*:PORT" (its own rank; PORT "*" = a free
 *   one, see transport_endpoint), a CLIENT connects to "mpi:RANK:PORT" with its identity.
 *   PORT is 1..30000 ("mpi:RANK" means port 1) and is the MPI tag of the channel; tag 0 is
 *   the comm threads' own control channel (pings, BYE).
 *
 * Wire: one MPI message per transport message (MPI_BYTE on a duplicate of MPI_COMM_WORLD):
 *   u32 magic "BTM1" | u8 dir (0 client->server, 1 server->client) | u8 n_frames | u16 id_len |
 *   u32 reserved | u64 len[n_frames] | id bytes (the client's identity) | frame bytes...
 * little-endian (all ranks of one job share a byte order). A message is at most INT_MAX bytes.
 * Received messages are validated (sizes, magic, identity) and dropped with a warning when
 * malformed; more than TX_MAX_FRAMES frames reach the server as BT_EPROTO naming the sender.
 * Ranks start in any order, so a client may send before its server binds (as a ZeroMQ client
 * may connect first): such a message is parked and handed to the server when it binds the
 * port, in arrival order. The park holds TX_MPI_PARK_BYTES at most, each message for
 * liveness_ms at most; beyond either it is dropped with a warning. A reply to a client that has
 * closed is dropped (a debug line), as ZeroMQ drops one to a peer that has gone.
 *
 * transport_send packs the frames into one buffer (a copy: free_fn frames are released at
 * once) and queues it to the comm thread (at most TX_MPI_HWM messages in flight per transport,
 * then it waits send_timeout_ms: BT_ETIMEDOUT). The comm thread posts MPI_Isend and completes
 * it with MPI_Test; it receives with MPI_Iprobe + MPI_Get_count + MPI_Irecv + MPI_Test, queues
 * the message on its transport and signals that transport's eventfd, so transport_recv and
 * transport_poll wait on MPI transports mixed with ZMQ and inproc ones without any polling on
 * the caller's side. MPI itself has no descriptor to sleep on: the comm thread polls, sleeping
 * from 10 us up to idle_us (default 250 us) while idle and at most 20 us while a transfer is in
 * flight, so an idle rank wakes ~4000 times a second and a message waits at most ~idle_us.
 *
 * Liveness: the comm threads ping every other rank each heartbeat_ms on tag 0. A rank silent
 * for liveness_ms, an MPI error (the communicator uses MPI_ERRORS_RETURN), or an MPI transfer
 * not completed within its deadline makes the rank LOST: on_event is called, sends to it fail
 * with BT_EPEERLOST, and mpicomm_finish ends the job with MPI_Abort (an MPI job cannot go on
 * without a rank). A rank that ends calls mpicomm_finish, which sends BYE and its exit code to
 * every rank (on_event BYE there), waits for the BYE of every other rank, then MPI_Finalize. */
#ifndef BT_MPI_TRANSPORT_MPI_H
#define BT_MPI_TRANSPORT_MPI_H
#include "common/err.h"

#include <stddef.h>

#define TX_MPI_HWM        1000        /* queued + in-flight messages per transport */
#define TX_MPI_MAX_PORT   30000       /* below MPI's guaranteed MPI_TAG_UB of 32767 */
#define TX_MPI_PARK_BYTES (64u << 20) /* held for ports not bound yet, all ports together */

enum mpicomm_event { MPICOMM_BYE, MPICOMM_LOST };

struct mpicomm_opts {
    int heartbeat_ms; /* rank-to-rank pings; 0 = 1000 */
    int liveness_ms;  /* silence that makes a rank LOST; 0 = 15000 */
    int idle_us;      /* longest sleep of an idle comm thread; 0 = 250 */
    /* Called on the comm thread when a rank said BYE or was lost: must be quick and must not
     * use MPI transports synchronously (coord_stop / worker_stop are fine). code: for BYE the
     * exit code that rank passed to mpicomm_finish (255 for codes outside 0..255), -1 for
     * LOST. why: detail. */
    void (*on_event)(enum mpicomm_event ev, int rank, int code, const char *why, void *arg);
    void *arg;
};

/* Starts the comm thread and MPI (MPI_THREAD_FUNNELED), registers TRANSPORT_MPI; sets this
 * process's rank and the job size. Signals are blocked on the comm thread. Once per process. */
int mpicomm_start(const struct mpicomm_opts *o, int *rank, int *size, bt_err *e);

/* Ends MPI: finishes queued sends, sends BYE, waits up to timeout_ms for every other live
 * rank's BYE, then MPI_Finalize and returns 0. When a rank was lost or did not say BYE in
 * time, logs why and calls MPI_Abort(exit_code or 1), which ends the whole job (does not
 * return). MPI transports must be closed first. */
int mpicomm_finish(int timeout_ms, int exit_code);

/* Logs msg as an error and ends the job (MPI_Abort with code) through the comm thread. */
void mpicomm_abort(int code, const char *msg) __attribute__((noreturn));

/* For tests of malformed input: queues raw bytes to rank on tag (no header added). */
int mpicomm_send_raw(int rank, int tag, const void *buf, size_t len, bt_err *e);

#endif
