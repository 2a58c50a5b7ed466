/* coordinator/admin.h: the operator endpoints of the coordinator's HTTP server.
 *   GET  /admin/workers              the cluster status and every worker: state, stage, layers
 *   POST /admin/workers/{id}/drain   take a worker out of the pipeline: plan again without it
 *   POST /admin/replan               plan again over every worker present (a drained worker
 *                                    that came back, a worker that joined after the plan)
 * A drain or re-plan is graceful: the pipeline stops at the next batch, the new one loads, and
 * every live sequence is re-prefilled there (coordinator/exec_pipeline, Recovery), so requests
 * see a pause, not an error. When the workers left cannot hold the model, requests wait for a
 * worker to join (up to the coordinator's recover timeout). A drained worker holds nothing the
 * cluster needs: it can be stopped at once, and when it joins again it is a new worker.
 *
 * Threads: HTTP connection threads cannot touch the registry, which belongs to the event loop.
 * admin_handle() queues the command, wakes the loop and waits for the answer; the loop calls
 * admin_serve(), which runs queued commands through the admin_ops callbacks on its own thread.
 * Only loopback clients are served unless allow_remote is set: a drain pauses every request.
 *
 * Answers are JSON. Errors: 403 (not loopback), 404 (no such route or worker), 405 (method),
 * 409 (worker already lost), 503 (the coordinator is stopping or did not answer in time). */
#ifndef BT_COORDINATOR_ADMIN_H
#define BT_COORDINATOR_ADMIN_H
#include "common/err.h"
#include "coordinator/http.h"
#include "proto/transport.h"

#include <stdint.h>

#define ADMIN_MAX_WORKERS 64

/* One worker as the operator sees it; state is "joined", "loading", "serving", "idle",
 * "lost", "draining" (still a stage while a re-plan starts) or "drained" (safe to stop). */
struct admin_worker {
    char id[TX_PEER_MAX + 1];
    char host[128];
    const char *state; /* static string */
    int stage;         /* -1 when not in the plan */
    int lo, hi;        /* layers [lo, hi) when stage >= 0 */
    uint64_t mem_budget;
    int has_model;
};

struct admin_view {
    const char *status; /* "serving", "loading", "replanning", "waiting for workers", ... */
    uint64_t plan_id;
    int n_stages;
    int n_workers;
    struct admin_worker w[ADMIN_MAX_WORKERS];
};

/* Runs on the event loop thread. drain/replan return an HTTP status (200, 202, 404, 409) and
 * write a one-line explanation into msg. */
struct admin_ops {
    void (*view)(void *ctx, struct admin_view *out);
    int (*drain)(void *ctx, const char *worker_id, char *msg, size_t cap);
    int (*replan)(void *ctx, char *msg, size_t cap);
    void *ctx;
};

struct admin_opts {
    struct admin_ops ops;
    void (*wake)(void *ctx); /* makes the loop call admin_serve soon; any thread */
    void *wake_ctx;
    int allow_remote; /* serve clients other than loopback */
    int timeout_ms;   /* wait for the loop; 0 = 10000 */
};

typedef struct admin admin_t;

int admin_open(admin_t **out, const struct admin_opts *o, bt_err *e);
/* After admin_stop and after the HTTP server closed (no handler inside). NULL ok. */
void admin_close(admin_t *a);

/* 1 for paths under /admin/ (the API routes them here). */
int admin_is_route(const char *path);
/* The HTTP handler for those paths (connection threads). */
void admin_handle(admin_t *a, const struct http_req *rq, struct http_resp *rs);
/* Event loop: runs every queued command. */
void admin_serve(admin_t *a);
/* Event loop is ending: queued and later commands get 503. */
void admin_stop(admin_t *a);

#endif
