/* mpi/main.c: baton-mpi, the whole cluster as one MPI job (docs/mpi.md).
 *
 *   mpirun -np N [--hostfile H] baton-mpi --model FILE --http HOST:PORT [options]
 *
 * Rank 0 runs the coordinator (coordinator/coord.h: HTTP API, scheduler, planner) bound on
 * "mpi:0:1"; ranks 1..N-1 run a worker each (worker/worker.h), joining "mpi:0:1" with
 * identity "rank<N>" and binding their data endpoint on "mpi:<rank>:2". The coordinator waits
 * for all N-1 workers, plans, and every worker loads its layer range from --model (or
 * --worker-model; "-" streams it from rank 0). Messages are the ZeroMQ mode's: the same
 * envelopes and frames, carried by the MPI backend (mpi/transport_mpi.h).
 *
 * Ending: SIGTERM/SIGINT (mpirun forwards them to every rank) stops each rank; the coordinator
 * sends Shutdown to the workers; each rank then finishes MPI (BYE to every rank, MPI_Finalize).
 * A worker rank that fails or is lost, or a lost coordinator, ends the job: an MPI job cannot
 * re-plan, so the coordinator stops (exit 1) and mpicomm_finish aborts the job with a message
 * naming the rank when it does not come back to say BYE. A worker rank that ends with exit 0
 * (it was sent SIGTERM, maybe before rank 0 got its own) ends the job with exit 0. */
#include "common/log.h"
#include "common/parse.h"
#include "common/signals.h"
#include "coordinator/coord.h"
#include "coordinator/registry.h"
#include "mpi/transport_mpi.h"
#include "ops/ops.h"
#include "proto/wire.h"
#include "worker/caps.h"
#include "worker/worker.h"

#include <argp.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTRL_EP "mpi:0:1"

struct args {
    struct coord_opts o;
    const char *worker_model, *cache_dir;
    unsigned long long mem;
    int worker_threads, max_rows, rank_liveness_ms, idle_us, finish_ms;
};

static const struct argp_option options[] = {
    {"model", 'm', "FILE", 0, "GGUF model file (rank 0's path; workers too unless --worker-model)",
     0},
    {"http", 'H', "HOST:PORT", 0, "serve the OpenAI API here, on rank 0 (port 0: ephemeral)", 0},
    {"worker-model", 'W', "FILE", 0,
     "the model path on the worker ranks (default: --model, e.g. on a shared file system; '-' "
     "streams it from rank 0)",
     0},
    {"cache-dir", 'D', "DIR", 0,
     "workers: a streamed model is kept in DIR/rank<N> (default /var/tmp/baton-cache)", 0},
    {"wire", 'w', "DTYPE", 0, "activation dtype between stages: f16 (default), f32, q8_0", 0},
    {"max-seqs", 's', "N", 0, "sequence slots (default 8)", 0},
    {"max-ctx", 'c', "N", 0, "tokens per sequence (default 4096)", 0},
    {"max-batch", 'B', "N", 0, "tokens per micro-batch (default 256)", 0},
    {"prefill-chunk", 'C', "N", 0, "most prompt tokens of one sequence per micro-batch", 0},
    {"prefill-stall", 'S', "F", 0,
     "while sequences decode, a micro-batch with prompt tokens may take at most 1+F times a "
     "batch of decodes alone (default 3; 0: no limit)",
     0},
    {"threads", 't', "N", 0, "compute threads per worker rank (default: all CPUs)", 0},
    {"mem", 'M', "BYTES", 0, "worker memory budget (default 80% of RAM)", 0},
    {"max-rows", 'r', "N", 0, "rows per Forward on a worker (default 2048)", 0},
    {"heartbeat-ms", 'h', "MS", 0, "coordinator/worker ping interval (default 1000)", 0},
    {"liveness", 'l', "N", 0, "missed pings before a worker counts as lost (default 3)", 0},
    {"rank-liveness-ms", 'R', "MS", 0,
     "comm threads: silence after which a rank is lost and the job ends (default 15000)", 0},
    {"idle-us", 'I', "US", 0, "comm threads: longest sleep between MPI polls (default 250)", 0},
    {"load-timeout", 'T', "SECS", 0, "give up when loading takes longer (default 900)", 0},
    {"model-name", 'N', "NAME", 0, "model id for the API (default: the file's general.name)", 0},
    {"uniform", 'U', NULL, 0, "plan as if every worker were equally fast", 0},
    {"min-gain", 'g', "FRACTION", 0, "planner: a further worker must cut the bottleneck this much",
     0},
    {"plan-only", 'P', NULL, 0, "print the plan once the workers joined, then end the job", 0},
    {0}};

static error_t parse_opt(int key, char *arg, struct argp_state *st) {
    struct args *a = st->input;
    struct {
        int key, lo, hi;
        int *dst;
        const char *name;
    } ints[] = {
        {'s', 1, 1024, &a->o.max_seqs, "--max-seqs"},
        {'c', 2, 1 << 20, &a->o.max_ctx, "--max-ctx"},
        {'B', 1, 2048, &a->o.max_batch, "--max-batch"},
        {'C', 1, 1 << 20, &a->o.prefill_chunk, "--prefill-chunk"},
        {'t', 1, 4096, &a->worker_threads, "--threads"},
        {'r', 1, 1 << 20, &a->max_rows, "--max-rows"},
        {'h', 10, 600000, &a->o.heartbeat_ms, "--heartbeat-ms"},
        {'l', 1, 1000, &a->o.liveness, "--liveness"},
        {'R', 100, 3600000, &a->rank_liveness_ms, "--rank-liveness-ms"},
        {'I', 1, 100000, &a->idle_us, "--idle-us"},
        {'T', 1, 86400, &a->o.load_timeout_s, "--load-timeout"},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (key == ints[i].key) {
            if (bt_parse_int(ints[i].name, arg, ints[i].lo, ints[i].hi, ints[i].dst, NULL))
                argp_error(st, "%s: %d..%d", ints[i].name, ints[i].lo, ints[i].hi);
            return 0;
        }
    char *end;
    switch (key) {
    case 'm':
        a->o.model = arg;
        break;
    case 'H':
        a->o.http = arg;
        break;
    case 'W':
        a->worker_model = arg;
        break;
    case 'D':
        a->cache_dir = arg;
        break;
    case 'N':
        a->o.model_name = arg;
        break;
    case 'U':
        a->o.uniform = 1;
        break;
    case 'P':
        a->o.plan_only = 1;
        break;
    case 'w':
        if ((a->o.wire = wire_dtype_from_name(arg)) < 0)
            argp_error(st, "--wire: f16, f32 or q8_0, not '%s'", arg);
        break;
    case 'M':
        errno = 0;
        a->mem = strtoull(arg, &end, 10);
        if (errno || *end || end == arg) argp_error(st, "--mem: a byte count");
        break;
    case 'S':
        if (bt_parse_double("--prefill-stall", arg, 0.0, 1000.0, &a->o.prefill_stall, NULL))
            argp_error(st, "--prefill-stall: a number in [0, 1000]");
        if (a->o.prefill_stall == 0.0) a->o.prefill_stall = -1.0; /* 0: off */
        break;
    case 'g':
        a->o.min_gain = strtod(arg, &end);
        if (*end || !(a->o.min_gain > 0.0 && a->o.min_gain < 1.0))
            argp_error(st, "--min-gain: a fraction in (0, 1)");
        break;
    case ARGP_KEY_END:
        if (!a->o.model) argp_error(st, "--model is required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

/* What runs on this rank; signal handlers and the comm thread stop it. */
static coord_t *volatile g_coord;
static worker_t *volatile g_worker;
static volatile sig_atomic_t g_stop, g_failed;
static int g_rank;

static void stop_all(void) {
    g_stop = 1;
    coord_t *c = g_coord;
    worker_t *w = g_worker;
    if (c) coord_stop(c); /* both async-signal-safe */
    if (w) worker_stop(w);
}

static void on_signal(int sig) {
    (void)sig;
    stop_all();
}

/* On the comm thread: a rank said BYE (code: its exit code) or was lost (code -1). */
static void on_rank_event(enum mpicomm_event ev, int r, int code, const char *why, void *arg) {
    (void)arg;
    if (ev == MPICOMM_BYE && g_rank != 0 && r != 0)
        return; /* another worker finishing: the coordinator decides what happens */
    if (ev == MPICOMM_BYE && g_stop) return; /* ending anyway */
    if (ev == MPICOMM_BYE && g_rank != 0) {
        BT_LOG(INFO, "mpi", "the coordinator (rank 0) finished: stopping");
        stop_all();
        return;
    }
    if (ev == MPICOMM_BYE && code == 0) {
        /* A worker rank that was told to stop (a signal; mpirun forwards SIGTERM to every rank
         * and that rank may get there first): the job ends, cleanly, as asked. */
        BT_LOG(INFO, "mpi", "worker rank %d finished (exit 0): ending the job", r);
        stop_all();
        return;
    }
    /* a worker rank that failed while we serve, or any lost rank */
    char what[64];
    if (ev == MPICOMM_LOST)
        snprintf(what, sizeof what, "lost");
    else
        snprintf(what, sizeof what, "ended with exit %d", code);
    BT_LOG(ERROR, "mpi", "%s rank %d %s (%s); an MPI job cannot re-plan: ending the job",
           r == 0 ? "coordinator" : "worker", r, what, why);
    g_failed = 1;
    stop_all();
}

static int run_coordinator(struct args *a, int size) {
    a->o.kind = TRANSPORT_MPI;
    a->o.bind = CTRL_EP;
    a->o.rank = 0;
    a->o.n_ranks = size;
    a->o.min_workers = size - 1;
    if (size - 1 > REG_MAX_WORKERS) {
        BT_LOG(ERROR, "mpi", "%d worker ranks > %d", size - 1, REG_MAX_WORKERS);
        return 1;
    }
    coord_t *c = NULL;
    bt_err e = {0};
    int rc = coord_open(&c, &a->o, &e);
    if (rc) {
        BT_LOG(ERROR, "mpi", "rank 0 coordinator: %s", bt_errmsg(&e, rc));
        return 1;
    }
    g_coord = c;
    if (g_stop) /* a signal before g_coord was set */
        coord_stop(c);
    int code = coord_run(c);
    g_coord = NULL;
    coord_close(c);
    return code ? code : g_failed ? 1 : 0;
}

static int run_worker(struct args *a, int rank, int size) {
    bt_err e = {0};
    int rc = ops_init(NULL, &e);
    struct worker_caps caps;
    if (!rc) rc = caps_measure(&caps, NULL, &e);
    if (rc) {
        BT_LOG(ERROR, "mpi", "rank %d: %s", rank, bt_errmsg(&e, rc));
        return 1;
    }
    char id[32], bind[32];
    snprintf(id, sizeof id, "rank%d", rank);
    snprintf(bind, sizeof bind, "mpi:%d:2", rank);
    /* one cache per rank: ranks sharing a host (or a shared file system) must not write the
     * same cache files at once */
    const char *cache_parent = a->cache_dir ? a->cache_dir : "/var/tmp/baton-cache";
    char cache[4096];
    snprintf(cache, sizeof cache, "%s/rank%d", cache_parent, rank);
    if (mkdir(cache_parent, 0755) != 0 && errno != EEXIST) /* the worker makes the last level */
        BT_LOG(WARN, "mpi", "rank %d: mkdir %s: %s", rank, cache_parent, strerror(errno));
    const char *model = a->worker_model ? a->worker_model : a->o.model;
    if (strcmp(model, "-") == 0) model = NULL;
    struct worker_opts o = {.kind = TRANSPORT_MPI,
                            .join = CTRL_EP,
                            .bind = bind,
                            .id = id,
                            .model_path = model,
                            .cache_dir = cache,
                            .mem_budget = a->mem,
                            .threads = a->worker_threads,
                            .max_rows = a->max_rows,
                            .heartbeat_ms = a->o.heartbeat_ms,
                            .caps = &caps};
    BT_LOG(INFO, "mpi", "rank %d of %d: worker %s on %s, model %s", rank, size, id, caps.hostname,
           model ? model : "(streamed from rank 0)");
    worker_t *w = NULL;
    if ((rc = worker_open(&w, &o, &e))) {
        BT_LOG(ERROR, "mpi", "rank %d worker: %s", rank, bt_errmsg(&e, rc));
        return 1;
    }
    g_worker = w;
    if (g_stop) worker_stop(w);
    rc = worker_run(w, &e);
    if (rc) BT_LOG(ERROR, "mpi", "rank %d worker: %s", rank, bt_errmsg(&e, rc));
    g_worker = NULL;
    worker_close(w);
    return rc || g_failed ? 1 : 0;
}

int main(int argc, char **argv) {
    struct args a = {.o = {.wire = WIRE_F16}, .finish_ms = 15000};
    struct argp ap = {options,
                      parse_opt,
                      NULL,
                      "baton-mpi: a baton cluster as one MPI job (rank 0 coordinator, ranks "
                      "1..N-1 workers)",
                      NULL,
                      NULL,
                      NULL};
    argp_parse(&ap, argc, argv, 0, NULL, &a);
    bt_log_set_name("baton-mpi");

    bt_signals_install(on_signal);

    struct mpicomm_opts mo = {.heartbeat_ms = 1000,
                              .liveness_ms = a.rank_liveness_ms,
                              .idle_us = a.idle_us,
                              .on_event = on_rank_event};
    int rank = 0, size = 0;
    bt_err e = {0};
    int rc = mpicomm_start(&mo, &rank, &size, &e);
    if (rc) {
        BT_LOG(ERROR, "mpi", "%s (run under mpirun)", bt_errmsg(&e, rc));
        return 1;
    }
    g_rank = rank;
    char name[32];
    snprintf(name, sizeof name, "baton-mpi.%d", rank);
    bt_log_set_name(name);
    int code;
    if (size < 2) {
        BT_LOG(ERROR, "mpi", "needs at least 2 ranks (a coordinator and a worker), got %d", size);
        code = 2;
    } else {
        code = rank == 0 ? run_coordinator(&a, size) : run_worker(&a, rank, size);
    }
    BT_LOG(INFO, "mpi", "rank %d done (exit %d)", rank, code);
    mpicomm_finish(a.finish_ms, code); /* aborts the job if a rank is lost or stays silent */
    return code;
}
