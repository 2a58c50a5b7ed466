/* worker/worker.h: the baton worker daemon's core: one pipeline stage serving a coordinator.
 *
 * States (logged one line per change): CONNECTING (Hello sent once the coordinator answers
 * pings, and again whenever it comes back after a loss) -> READY-to-load after Welcome (reported as CONNECTING until a LoadLayers comes)
 * -> LOADING (model fetch if needed, weights of [lo, hi), slots) -> READY (LoadDone sent) ->
 * SERVING (first Forward seen) -> DRAINING (Drain received) ... Shutdown or a signal ends
 * worker_run. Transports: a CLIENT to the coordinator (identity = worker id), a SERVER bound on
 * the data endpoint (the previous stage connects to it) and, when not last, a CLIENT to the
 * next stage's data endpoint. Two threads: the comms thread (the one in worker_run) owns every
 * transport: it polls them, answers pings and Heartbeats, and queues each Forward, Cancel,
 * StateExport and StateImport (frames copied into reused buffers) for the compute thread,
 * which runs them in order (forward() on the thread pool) and posts its replies (packed)
 * back, waking the comms thread through transport_wakeup; so a forward taking seconds never
 * silences the pings. LoadLayers runs on the comms thread once the compute thread is idle
 * (pings between pieces of the weight load). The split maps onto MPI_THREAD_FUNNELED.
 *  - LoadLayers for the layers, model, wire dtype, slots and context this worker already
 *    holds keeps the weights: slots are reset and the next-stage link is made again (a
 *    re-plan after a lost stage).
 *  - Welcome.heartbeat_ms sets the Heartbeat period; heartbeat_ms and heartbeat_liveness set
 *    the next-stage transport's window (the coordinator and data transports keep the worker's
 *    --heartbeat-ms, opened before Welcome).
 *
 * Protocol choices where proto/baton.proto leaves room (mirrored in docs/protocol.md, section
 * "Worker side"):
 *  - ModelId: size + header_xxh3 decide identity (name is informational); header_xxh3 =
 *    XXH3-64 of GGUF bytes [0, data section start) (worker/caps.h).
 *  - Forward envelopes: request_id is copied unchanged hop to hop and onto the Result; a
 *    Forward that fails on any stage is answered to the COORDINATOR with Error{request_id =
 *    the envelope's request_id (the coordinator should set it to batch_id), code word, message
 *    "batch <id>: ..."}; the batch goes no further.
 *  - The last stage answers every Forward with exactly one Result, even when no sequence had
 *    sample set (seqs empty), so the coordinator can complete every batch.
 *  - Result goes to the coordinator only; LoadLayers.first_endpoint (the ring) is ignored.
 *  - Slots: seq_id is the coordinator's slot number; a pos == 0 chunk takes a slot (or resets
 *    the sequence's slot); Cancel frees (optional for the coordinator: slots are reused by a
 *    pos == 0 chunk). The worker never frees a slot on its own, not even on FINISH_*.
 *  - Draining: Forwards with any pos == 0 chunk (a new sequence) fail with Error code
 *    "draining"; when no sequence holds a slot, or no Forward came for 1 s (finished sequences
 *    keep their slots, see above), or Drain.deadline_ms passed (the rest are dropped), the
 *    worker sends Heartbeat{state = WS_DRAINING, active_seqs = 0} with the Drain's request_id.
 *  - stage_ms: each stage appends its stage_forward time to Forward.stage_ms; the last stage
 *    puts the list into Result.stage_ms.
 *  - Heartbeat: a coordinator Heartbeat is answered with one (same request_id); the worker also
 *    sends one unsolicited every Welcome.heartbeat_ms (request_id 0).
 *  - StateExport -> reply StateImport (same request_id) with one frame (seqstate_save bytes);
 *    a received StateImport is acknowledged by a StateImport with the same seq_id/lo/hi/n_pos
 *    and no frames (or an Error).
 *  - Model streaming: ModelChunkRequest per piece of <= chunk_bytes (default 16 MiB), up to 4
 *    in flight, each with its own request_id; a reply is ModelChunk with that request_id or an
 *    Error with it. Messages other than Heartbeat/Shutdown/Cancel arriving while LOADING get
 *    Error code "protocol" ("loading").
 *  - A coordinator silent for lost_secs (default 30) makes the worker drop its stage and all
 *    sequences and return to CONNECTING (fresh Hello).
 *  - The worker accepts Forwards of up to max_rows (default 2048) rows; more: Error
 *    "capacity".
 */
#ifndef BT_WORKER_WORKER_H
#define BT_WORKER_WORKER_H
#include "common/err.h"
#include "proto/transport.h"
#include "worker/caps.h"

#include <stdint.h>

typedef struct worker worker_t;

struct worker_opts {
    enum transport_kind kind; /* TRANSPORT_ZMQ (daemon) or TRANSPORT_INPROC (tests) */
    const char *join;         /* coordinator endpoint */
    const char *bind;         /* data endpoint to bind (zmq: "tcp://10.0.0.7:*"; inproc: a name) */
    const char *id;           /* worker id = transport identity */
    const char *model_path;   /* local GGUF, or NULL: stream from the coordinator */
    const char *cache_dir;    /* NULL = /var/tmp/baton-cache */
    uint64_t mem_budget;      /* bytes for weights + state; 0 = 80% of RAM */
    int threads;              /* <= 0: all cores */
    int max_rows;             /* rows per Forward; 0 = 2048 */
    uint64_t chunk_bytes;     /* model streaming piece; 0 = 16 MiB */
    int lost_secs;            /* 0 = 30 */
    int heartbeat_ms;         /* transport ping interval; 0 = 1000 */
    const struct worker_caps *caps; /* measured by the caller (caps_measure) */
};

/* Opens the transports (binds the data endpoint) and identifies the local model file, if any.
 * Errors from transport_open / caps_model_ident. */
int worker_open(worker_t **out, const struct worker_opts *o, bt_err *e);
void worker_close(worker_t *w); /* NULL ok */
/* The bound data endpoint as reported in Hello. */
const char *worker_data_endpoint(const worker_t *w);

/* Serves until Shutdown (returns 0) or worker_stop (returns 0). Errors only when a transport
 * breaks beyond repair. */
int worker_run(worker_t *w, bt_err *e);

/* One turn of the loop worker_run repeats: waits up to timeout_ms for messages on any link,
 * handles every message then waiting, then the timed duties (Hello, heartbeats, drain
 * reports, a lost coordinator). The first turn makes the calling thread the one that owns the
 * transports. Tests call it directly to queue messages on several links before the worker
 * looks at any of them. */
void worker_turn(worker_t *w, int timeout_ms);

/* Makes worker_run return soon. Async-signal-safe and callable from any thread. */
void worker_stop(worker_t *w);

#endif
