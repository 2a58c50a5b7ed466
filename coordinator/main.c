/* coordinator/main.c: the baton-coordinator daemon's command line (argp -> struct coord_opts,
 * coordinator/coord.h does the rest).
 *
 *   baton-coordinator --model FILE --bind tcp://HOST:PORT --min-workers N [--http HOST:PORT]
 *                     [--wire f16|f32|q8_0] [--max-seqs N] [--max-ctx N] [--plan-only]
 *   baton-coordinator --model FILE --local --http HOST:PORT [--threads N]
 *
 * Signals only call coord_stop (a self-pipe write and a transport wakeup). */
#include "common/log.h"
#include "common/parse.h"
#include "common/signals.h"
#include "coordinator/coord.h"
#include "coordinator/registry.h"
#include "proto/wire.h"

#include <argp.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct args {
    struct coord_opts o;
};

static const struct argp_option options[] = {
    {"model", 'm', "FILE", 0, "GGUF model file (the coordinator's copy)", 0},
    {"bind", 'b', "ENDPOINT", 0, "control endpoint workers join, e.g. tcp://0.0.0.0:7700", 0},
    {"min-workers", 'n', "N", 0, "workers to wait for before planning (default 1)", 0},
    {"http", 'H', "HOST:PORT", 0, "serve the OpenAI API here (port 0: ephemeral)", 0},
    {"wire", 'w', "DTYPE", 0, "activation dtype between stages: f16 (default), f32, q8_0", 0},
    {"max-seqs", 's', "N", 0, "sequence slots (default 8)", 0},
    {"max-ctx", 'c', "N", 0, "tokens per sequence (default 4096)", 0},
    {"max-batch", 'B', "N", 0, "tokens per micro-batch (default 256, at most 2048)", 0},
    {"plan-only", 'P', NULL, 0, "print the plan once the workers joined, then exit", 0},
    {"local", 'L', NULL, 0, "no workers: run the whole model in this process", 0},
    {"threads", 't', "N", 0, "compute threads with --local (default: all CPUs)", 0},
    {"heartbeat-ms", 'h', "MS", 0, "transport ping interval (default 1000)", 0},
    {"liveness", 'l', "N", 0,
     "missed pings before a worker counts as lost (default 3; raise it for workers whose "
     "forward passes take seconds)",
     0},
    {"prefill-chunk", 'C', "N", 0, "most prompt tokens of one sequence per micro-batch", 0},
    {"prefill-stall", 'S', "F", 0,
     "while sequences decode, a micro-batch with prompt tokens may take at most 1+F times a "
     "batch of decodes alone (default 3: streams keep a quarter of their speed during a long "
     "prefill; 0: no limit)",
     0},
    {"recover-timeout", 'R', "SECS", 0,
     "after losing a stage, requests wait this long for a new pipeline, then fail (default 60)", 0},
    {"load-timeout", 'T', "SECS", 0, "give up when loading takes longer (default 900)", 0},
    {"model-name", 'M', "NAME", 0, "model id for the API (default: the file's general.name)", 0},
    {"uniform", 'U', NULL, 0,
     "plan as if every worker were equally fast (identical machines, noisy measurements, tests)",
     0},
    {"min-gain", 'g', "FRACTION", 0, "planner: a further worker must cut the bottleneck this much",
     0},
    {"admin-remote", 'A', NULL, 0,
     "answer /admin/ requests (drain, replan, workers) from any address, not only loopback", 0},
    {0}};

static error_t parse_opt(int key, char *arg, struct argp_state *st) {
    struct coord_opts *a = &((struct args *)st->input)->o;
    switch (key) {
    case 'm':
        a->model = arg;
        break;
    case 'b':
        a->bind = arg;
        break;
    case 'H':
        a->http = arg;
        break;
    case 'M':
        a->model_name = arg;
        break;
    case 'P':
        a->plan_only = 1;
        break;
    case 'L':
        a->local = 1;
        break;
    case 'U':
        a->uniform = 1;
        break;
    case 'A':
        a->admin_remote = 1;
        break;
    case 'n':
        if (bt_parse_int("--min-workers", arg, 1, REG_MAX_WORKERS, &a->min_workers, NULL))
            argp_error(st, "--min-workers: 1..%d", REG_MAX_WORKERS);
        break;
    case 'w':
        if ((a->wire = wire_dtype_from_name(arg)) < 0)
            argp_error(st, "--wire: f16, f32 or q8_0, not '%s'", arg);
        break;
    case 's':
        if (bt_parse_int("--max-seqs", arg, 1, 1024, &a->max_seqs, NULL))
            argp_error(st, "--max-seqs: 1..1024");
        break;
    case 'c':
        if (bt_parse_int("--max-ctx", arg, 2, 1 << 20, &a->max_ctx, NULL))
            argp_error(st, "--max-ctx: 2..1048576");
        break;
    case 'B':
        if (bt_parse_int("--max-batch", arg, 1, 2048, &a->max_batch, NULL))
            argp_error(st, "--max-batch: 1..2048");
        break;
    case 't':
        if (bt_parse_int("--threads", arg, 1, 1024, &a->threads, NULL))
            argp_error(st, "--threads: 1..1024");
        break;
    case 'h':
        if (bt_parse_int("--heartbeat-ms", arg, 10, 60000, &a->heartbeat_ms, NULL))
            argp_error(st, "--heartbeat-ms: 10..60000");
        break;
    case 'l':
        if (bt_parse_int("--liveness", arg, 1, 10000, &a->liveness, NULL))
            argp_error(st, "--liveness: 1..10000");
        break;
    case 'C':
        if (bt_parse_int("--prefill-chunk", arg, 1, 2048, &a->prefill_chunk, NULL))
            argp_error(st, "--prefill-chunk: 1..2048");
        break;
    case 'S':
        if (bt_parse_double("--prefill-stall", arg, 0.0, 1000.0, &a->prefill_stall, NULL))
            argp_error(st, "--prefill-stall: a number in [0, 1000]");
        if (a->prefill_stall == 0.0) a->prefill_stall = -1.0; /* 0 on the command line: off */
        break;
    case 'R':
        if (bt_parse_int("--recover-timeout", arg, 1, 86400, &a->recover_timeout_s, NULL))
            argp_error(st, "--recover-timeout: 1..86400");
        break;
    case 'T':
        if (bt_parse_int("--load-timeout", arg, 1, 86400, &a->load_timeout_s, NULL))
            argp_error(st, "--load-timeout: 1..86400");
        break;
    case 'g': {
        char *end;
        a->min_gain = strtod(arg, &end);
        if (*end || !(a->min_gain > 0.0 && a->min_gain < 1.0))
            argp_error(st, "--min-gain: a fraction in (0, 1)");
        break;
    }
    case ARGP_KEY_END:
        if (!a->model) argp_error(st, "--model is required");
        if (!a->local && !a->bind) argp_error(st, "--bind is required (or --local)");
        if (a->local && !a->http) argp_error(st, "--local needs --http");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

static coord_t *volatile g_coord;

static void on_signal(int sig) {
    (void)sig;
    if (g_coord) coord_stop(g_coord); /* async-signal-safe */
}

int main(int argc, char **argv) {
    struct args a = {.o = {.kind = TRANSPORT_ZMQ,
                           .min_workers = 1,
                           .wire = WIRE_F16,
                           .max_seqs = 8,
                           .max_ctx = 4096,
                           .max_batch = 256,
                           .heartbeat_ms = 1000,
                           .liveness = 3,
                           .load_timeout_s = 900,
                           .recover_timeout_s = 60}};
    struct argp ap = {
        options, parse_opt,
        NULL,    "baton coordinator: plans layers over workers and serves the OpenAI API",
        NULL,    NULL,
        NULL};
    argp_parse(&ap, argc, argv, 0, NULL, &a);
    bt_log_set_name("coordinator");

    bt_signals_install(on_signal);

    coord_t *c = NULL;
    bt_err e = {0};
    int rc = coord_open(&c, &a.o, &e);
    if (rc) {
        fprintf(stderr, "baton-coordinator: %s\n", bt_errmsg(&e, rc));
        return 1;
    }
    g_coord = c;
    int code = coord_run(c);
    g_coord = NULL;
    coord_close(c);
    return code;
}
