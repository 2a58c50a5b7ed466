/* coordinator/coord.c: see coord.h. One thread runs the event loop and owns the control
 * transport; every malformed message is answered with an Error and the loop keeps serving. */
#include "coordinator/coord.h"

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/admin.h"
#include "coordinator/api.h"
#include "coordinator/exec_local.h"
#include "coordinator/exec_pipeline.h"
#include "coordinator/http.h"
#include "coordinator/metrics.h"
#include "coordinator/model_server.h"
#include "coordinator/planner.h"
#include "coordinator/registry.h"
#include "coordinator/sched.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "engine/tokenizer.h"
#include "proto/msg.h"
#include "proto/transport.h"
#include "proto/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum phase { PH_WAIT, PH_LOADING, PH_SERVING };

struct coord {
    struct coord_opts o;
    int stop_fd[2]; /* self-pipe: coord_stop writes, the local mode waits on it */
    volatile sig_atomic_t stop;
    int shutdown_sent;
    struct model_desc *m;
    tok_t *tok;
    metrics_t *metrics;
    api_t *api;
    admin_t *admin;
    http_t *http;
    sched_t *sched;
    exec_t *ex;
    transport_t *t;
    registry_t *reg;
    model_server_t *ms;
    enum phase phase;
    uint64_t plan_id, next_req;
    struct plan plan;
    struct plan_model pm;
    struct reg_worker *stages[PLAN_MAX_STAGES];
    int64_t load_t0;
    int exit_code;
    /* Recovery: a stage was lost; re-plan over the workers present and resume. */
    int recovering, recover_failed;
    int64_t recover_t0;
    struct tx_peer peers_scratch[REG_MAX_WORKERS * 2];
};

static void wake_loop(void *ctx) {
    transport_wakeup((transport_t *)ctx);
}

static void free_bytes(void *data, void *hint) {
    (void)hint;
    free(data);
}

static int send_env(struct coord *c, const char *peer, const Baton__Envelope *env) {
    uint8_t *buf = NULL;
    size_t len = 0;
    bt_err e = {0};
    int rc = msg_pack(env, &buf, &len, &e);
    if (!rc) {
        struct tx_frame f = {.data = buf, .len = len, .free_fn = free_bytes};
        rc = transport_send(c->t, peer, &f, 1, &e);
    }
    if (rc)
        BT_LOG(WARN, "coord", "send %s to %s: %s", msg_body_name(env->body_case), peer,
               bt_errmsg(&e, rc));
    return rc;
}

static void reply_error(struct coord *c, const char *peer, uint64_t rid, int code,
                        const char *text) {
    Baton__Envelope env;
    Baton__Error em;
    msg_error_reply(&env, &em, rid, code, text);
    send_env(c, peer, &env);
}

static void send_shutdown(struct coord *c, const char *reason) {
    for (int i = 0; i < registry_n(c->reg); i++) {
        struct reg_worker *w = registry_at(c->reg, i);
        if (w->state == REG_LOST) continue;
        Baton__Envelope env;
        msg_init(&env, 0);
        Baton__Shutdown sd;
        baton__shutdown__init(&sd);
        sd.reason = (char *)(uintptr_t)reason;
        env.body_case = BATON__ENVELOPE__BODY_SHUTDOWN;
        env.shutdown = &sd;
        send_env(c, w->id, &env);
    }
}

static void fill_model_id(struct coord *c, Baton__ModelId *id) {
    baton__model_id__init(id);
    const struct model_ident_c *mi = model_server_ident(c->ms);
    id->name = (char *)(uintptr_t)mi->name;
    id->size = mi->size;
    id->header_xxh3 = mi->header_xxh3;
}

/* The workers a plan may use: joined ones, and with active also those idle or in the current
 * plan; never a drained one. */
static int plan_candidates(struct coord *c, int active, struct reg_worker **rw,
                           struct plan_worker *pw) {
    int n = 0;
    for (int i = 0; i < registry_n(c->reg) && n < PLAN_MAX_WORKERS; i++) {
        struct reg_worker *w = registry_at(c->reg, i);
        int ok =
            w->state == REG_JOINED || (active && (w->state == REG_IDLE || w->state == REG_SERVING));
        if (!ok || w->draining) continue;
        rw[n] = w;
        memset(&pw[n], 0, sizeof pw[n]);
        snprintf(pw[n].id, sizeof pw[n].id, "%s", w->id);
        pw[n].mem_bytes = w->mem_budget;
        pw[n].mem_bw_gbps = w->mem_bw_gbps;
        pw[n].gflops = w->gflops;
        if (c->o.uniform) { /* equal speeds: only memory shapes the split */
            pw[n].mem_bw_gbps = 10.0;
            pw[n].gflops = 0.0;
        }
        n++;
    }
    return n;
}

/* Plans over the joined workers, prints the plan, sends Plan + LoadLayers. */
static int start_plan(struct coord *c) {
    struct plan_worker pw[PLAN_MAX_WORKERS];
    struct reg_worker *rw[PLAN_MAX_WORKERS];
    int n = plan_candidates(c, 0, rw, pw);
    bt_err e = {0};
    int rc = planner_model_from_desc(&c->pm, c->m, c->o.max_seqs, c->o.max_ctx, c->o.max_batch, &e);
    struct plan_opts po = {.min_gain = c->o.min_gain};
    if (!rc) rc = planner_plan(&c->pm, pw, n, &po, &c->plan, &e);
    if (rc && c->recovering) {
        BT_LOG(WARN, "plan", "no plan for %s over the %d worker%s present (%s): waiting for more",
               c->m->name, n, n == 1 ? "" : "s", e.msg);
        return rc;
    }
    if (rc) {
        BT_LOG(ERROR, "plan", "cannot plan %s over %d worker%s: %s", c->m->name, n,
               n == 1 ? "" : "s", e.msg);
        fprintf(stderr, "baton-coordinator: no plan: %s\n", e.msg);
        send_shutdown(c, "no plan fits the workers");
        return rc;
    }
    char text[8192];
    planner_format(&c->plan, &c->pm, pw, n, text, sizeof text);
    printf("%s", text);
    fflush(stdout);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        BT_LOG(INFO, "plan", "%s", line);
    if (c->o.plan_only) {
        send_shutdown(c, "plan only");
        return 1;
    }
    c->plan_id = (uint64_t)bt_now_ns();
    int k = c->plan.n_stages;
    for (int i = 0; i < n; i++)
        rw[i]->state = REG_IDLE;
    for (int s = 0; s < k; s++) {
        struct reg_worker *w = rw[c->plan.stage[s].worker];
        c->stages[s] = w;
        w->stage = s;
        w->lo = c->plan.stage[s].lo;
        w->hi = c->plan.stage[s].hi;
        w->state = REG_LOADING;
        w->loaded = 0;
    }
    /* The whole plan first (informational), then each stage's assignment. */
    Baton__ModelId mid;
    fill_model_id(c, &mid);
    Baton__StageAssignment sa[PLAN_MAX_STAGES], *sap[PLAN_MAX_STAGES];
    for (int s = 0; s < k; s++) {
        baton__stage_assignment__init(&sa[s]);
        sa[s].worker_id = c->stages[s]->id;
        sa[s].lo = (uint32_t)c->stages[s]->lo;
        sa[s].hi = (uint32_t)c->stages[s]->hi;
        sa[s].data_endpoint = c->stages[s]->data_endpoint;
        sap[s] = &sa[s];
    }
    Baton__Plan pl;
    baton__plan__init(&pl);
    pl.plan_id = c->plan_id;
    pl.model = &mid;
    pl.n_layers = (uint32_t)c->m->hp.n_layer;
    pl.n_stages = (size_t)k;
    pl.stages = sap;
    pl.wire_dtype = (Baton__WireDtype)c->o.wire;
    pl.max_seqs = (uint32_t)c->o.max_seqs;
    pl.max_ctx = (uint32_t)c->o.max_ctx;
    for (int s = 0; s < k; s++) {
        Baton__Envelope env;
        msg_init(&env, 0);
        env.body_case = BATON__ENVELOPE__BODY_PLAN;
        env.plan = &pl;
        send_env(c, c->stages[s]->id, &env);
        Baton__LoadLayers ll;
        baton__load_layers__init(&ll);
        ll.plan_id = c->plan_id;
        ll.model = &mid;
        ll.n_layers = (uint32_t)c->m->hp.n_layer;
        ll.lo = (uint32_t)c->stages[s]->lo;
        ll.hi = (uint32_t)c->stages[s]->hi;
        ll.stage_index = (uint32_t)s;
        ll.n_stages = (uint32_t)k;
        ll.next_endpoint = s + 1 < k ? c->stages[s + 1]->data_endpoint : (char *)(uintptr_t) "";
        ll.prev_worker_id = s > 0 ? c->stages[s - 1]->id : (char *)(uintptr_t) "";
        ll.wire_dtype = (Baton__WireDtype)c->o.wire;
        ll.state_budget_bytes = 0; /* max_seqs slots: the planner already fitted them */
        ll.max_seqs = (uint32_t)c->o.max_seqs;
        ll.max_ctx = (uint32_t)c->o.max_ctx;
        ll.first_endpoint = s == k - 1 ? c->stages[0]->data_endpoint : (char *)(uintptr_t) "";
        c->stages[s]->load_req = ++c->next_req;
        msg_init(&env, c->stages[s]->load_req);
        env.body_case = BATON__ENVELOPE__BODY_LOAD_LAYERS;
        env.load_layers = &ll;
        if (send_env(c, c->stages[s]->id, &env)) return BT_EPEERLOST;
        BT_LOG(INFO, "plan", "LoadLayers stage=%d worker=%s layers=%d..%d next=%s", s,
               c->stages[s]->id, c->stages[s]->lo, c->stages[s]->hi - 1,
               ll.next_endpoint[0] ? ll.next_endpoint : "(coordinator)");
    }
    c->phase = PH_LOADING;
    c->load_t0 = bt_now_ns();
    return 0;
}

/* Every stage loaded: open the pipeline executor and the scheduler, switch the API on. */
static int start_serving(struct coord *c) {
    int k = c->plan.n_stages, slots = c->o.max_seqs, ctx = c->o.max_ctx;
    struct exec_pipeline_opts po = {.n_stages = k,
                                    .plan_id = c->plan_id,
                                    .wire_dtype = c->o.wire,
                                    .max_batch = c->o.max_batch,
                                    .n_vocab = c->m->hp.n_vocab,
                                    .wake = wake_loop,
                                    .wake_ctx = c->t};
    for (int s = 0; s < k; s++) {
        po.stage_ids[s] = c->stages[s]->id;
        c->stages[s]->state = REG_SERVING;
    }
    po.n_slots = slots;
    po.max_ctx = ctx;
    bt_err e = {0};
    int rc = exec_pipeline_open(&c->ex, &po, &e);
    struct sched_opts so = {.exec = c->ex,
                            .tok = c->tok,
                            .metrics = c->metrics,
                            .prefill_chunk = c->o.prefill_chunk,
                            .prefill_stall = c->o.prefill_stall};
    if (!rc) rc = sched_open(&c->sched, &so, &e);
    if (rc) {
        BT_LOG(ERROR, "coord", "cannot start serving: %s", bt_errmsg(&e, rc));
        return rc;
    }
    if (c->api) api_set_sched(c->api, c->sched);
    c->phase = PH_SERVING;
    c->recovering = 0;
    BT_LOG(INFO, "coord", "serving: stages=%d slots=%d ctx=%d wire=%s load_secs=%.2f", k, slots,
           ctx, wire_dtype_name(c->o.wire), (double)(bt_now_ns() - c->load_t0) * 1e-9);
    if (c->http) BT_LOG(INFO, "coord", "ready http_port=%d", http_port(c->http));
    return 0;
}

/* The new pipeline is loaded: the executor re-prefills every live sequence and resends
 * what was in flight; requests continue where they were. */
static void resume_serving(struct coord *c) {
    const char *ids[PLAN_MAX_STAGES];
    int k = c->plan.n_stages;
    for (int s = 0; s < k; s++) {
        ids[s] = c->stages[s]->id;
        c->stages[s]->state = REG_SERVING;
    }
    bt_err e = {0};
    int rc = exec_pipeline_resume(c->ex, c->t, k, ids, c->plan_id, &e);
    if (rc) BT_LOG(ERROR, "coord", "resume: %s (requests in flight failed)", bt_errmsg(&e, rc));
    c->phase = PH_SERVING;
    c->recovering = 0;
    if (c->api) api_set_status(c->api, NULL);
    BT_LOG(INFO, "coord", "recovered: stages=%d down_secs=%.2f", k,
           (double)(bt_now_ns() - c->recover_t0) * 1e-9);
}

/* Plans when enough workers are present: min_workers at start; during a recovery any number
 * the model fits on (start_plan logs and waits when it does not). */
static void try_plan(struct coord *c) {
    struct plan_worker pw[PLAN_MAX_WORKERS];
    struct reg_worker *rw[PLAN_MAX_WORKERS];
    int joined = plan_candidates(c, 0, rw, pw);
    BT_LOG(INFO, "coord", "workers joined=%d of min=%d%s", joined, c->o.min_workers,
           c->recovering ? " (recovering)" : "");
    if (joined < (c->recovering ? 1 : c->o.min_workers)) return;
    int rc = start_plan(c);
    if (rc > 0 || (rc < 0 && !c->recovering)) {
        c->exit_code = rc > 0 ? 0 : 1;
        c->stop = 1;
    }
}

/* The current (serving or loading) pipeline must be replaced (why: a stage was lost, or an
 * operator drained a worker or asked for a new plan): stop sending, keep the requests, put
 * every surviving worker back in the pool and plan again. status is what /health says. */
static void begin_replan(struct coord *c, const char *why, const char *status) {
    if (!c->recovering) {
        c->recovering = 1;
        c->recover_failed = 0;
        c->recover_t0 = bt_now_ns();
    }
    if (c->ex) {
        exec_pipeline_suspend(c->ex, why);
        if (c->api) api_set_status(c->api, status);
    }
    for (int i = 0; i < registry_n(c->reg); i++) {
        struct reg_worker *w = registry_at(c->reg, i);
        if (w->state == REG_LOST) continue;
        w->state = REG_JOINED;
        w->stage = -1;
        w->loaded = 0;
    }
    memset(c->stages, 0, sizeof c->stages);
    c->plan.n_stages = 0;
    c->phase = PH_WAIT;
    BT_LOG(INFO, "coord", "%s: re-planning over the workers present; requests wait up to %d s", why,
           c->o.recover_timeout_s);
    try_plan(c);
}

static void begin_recovery(struct coord *c, const struct reg_worker *lost) {
    char m[160];
    snprintf(m, sizeof m, "stage %d (worker %.60s, layers %d..%d) lost", lost->stage, lost->id,
             lost->lo, lost->hi - 1);
    BT_LOG(ERROR, "coord", "%s", m);
    begin_replan(c, m, "recovering");
}

/* force: the worker is certainly gone (it said Hello again), even if it was loading. */
static void on_peer_lost(struct coord *c, const char *peer, int force) {
    struct reg_worker *w = registry_find(c->reg, peer);
    if (!w || w->state == REG_LOST) return;
    enum reg_state was = w->state;
    if (was == REG_LOADING && !force && !c->recovering) {
        /* A worker busy reading weights may miss pings; it is back when LoadDone (or any
         * frame) arrives. The load timeout bounds the wait. */
        BT_LOG(WARN, "coord",
               "worker %s silent while loading layers %d..%d; still waiting "
               "(load timeout %d s)",
               peer, w->lo, w->hi - 1, c->o.load_timeout_s);
        return;
    }
    w->state = REG_LOST;
    if (was == REG_SERVING || was == REG_LOADING)
        begin_recovery(c, w);
    else
        BT_LOG(WARN, "coord", "worker %s lost (was %s); %d joined", peer, registry_state_name(was),
               registry_count(c->reg, REG_JOINED));
}

static void on_hello(struct coord *c, const char *peer, uint64_t rid, const Baton__Hello *h) {
    struct reg_worker *w = registry_find(c->reg, peer);
    bt_err e = {0};
    if (w && w->state != REG_LOST && h->protocol_version == MSG_PROTOCOL_VERSION) {
        /* The worker restarted or lost us: its old session (and any stage it held) is gone. */
        BT_LOG(WARN, "coord", "worker %s says Hello again: a new session (was %s)", peer,
               registry_state_name(w->state));
        on_peer_lost(c, peer, 1);
    }
    w = NULL;
    int rc = registry_hello(c->reg, peer, h, bt_now_ns(), &w, &e);
    if (rc) {
        BT_LOG(WARN, "coord", "rejected Hello from %s: %s", peer, e.msg);
        reply_error(c, peer, rid, rc, e.msg);
        return;
    }
    const struct model_ident_c *mi = model_server_ident(c->ms);
    int same = w->has_model && w->model_size == mi->size && w->model_xxh3 == mi->header_xxh3;
    BT_LOG(INFO, "coord",
           "joined worker=%s host=%s mem=%.2fGiB bw=%.1fGB/s gflops=%.1f cores=%u isa=%s data=%s "
           "model=%s",
           w->id, w->hostname, (double)w->mem_budget / (1024.0 * 1024.0 * 1024.0),
           (double)w->mem_bw_gbps, (double)w->gflops, w->cores, w->isa, w->data_endpoint,
           same           ? "local"
           : w->has_model ? "DIFFERENT (will be streamed)"
                          : "none (streamed)");
    Baton__Envelope env;
    msg_init(&env, rid);
    Baton__Welcome wm;
    baton__welcome__init(&wm);
    wm.protocol_version = MSG_PROTOCOL_VERSION;
    wm.coordinator_id = (char *)(uintptr_t) "coordinator";
    wm.heartbeat_ms = (uint32_t)c->o.heartbeat_ms;
    wm.heartbeat_liveness = (uint32_t)c->o.liveness;
    env.body_case = BATON__ENVELOPE__BODY_WELCOME;
    env.welcome = &wm;
    send_env(c, peer, &env);
    if (c->phase != PH_WAIT) {
        w->state = REG_IDLE;
        BT_LOG(INFO, "coord", "worker %s joined after the plan: kept idle", peer);
        return;
    }
    try_plan(c);
}

static void on_load_done(struct coord *c, const char *peer, uint64_t rid,
                         const Baton__LoadDone *d) {
    struct reg_worker *w = registry_find(c->reg, peer);
    if (!w || w->state != REG_LOADING || rid != w->load_req || d->plan_id != c->plan_id ||
        (int)d->lo != w->lo || (int)d->hi != w->hi) {
        reply_error(c, peer, rid, BT_EPROTO, "unexpected LoadDone (no such load in progress)");
        return;
    }
    if ((int)d->max_seqs < c->o.max_seqs || (int)d->max_ctx < c->o.max_ctx) {
        BT_LOG(ERROR, "coord",
               "worker %s loaded layers %d..%d but holds only %u slots x %u ctx "
               "(asked %d x %d): its memory budget is too small",
               peer, w->lo, w->hi - 1, d->max_seqs, d->max_ctx, c->o.max_seqs, c->o.max_ctx);
        c->exit_code = 1;
        c->stop = 1;
        return;
    }
    w->loaded = 1;
    w->weight_bytes = d->weight_bytes;
    w->state_bytes = d->state_bytes;
    w->load_secs = d->load_secs;
    BT_LOG(INFO, "coord",
           "loaded stage=%d worker=%s layers=%d..%d weights=%.1fMiB "
           "state=%.1fMiB secs=%.2f served=%.1fMiB (model bytes streamed to workers so far)",
           w->stage, peer, w->lo, w->hi - 1, (double)d->weight_bytes / 1048576.0,
           (double)d->state_bytes / 1048576.0, (double)d->load_secs,
           (double)model_server_bytes_served(c->ms) / 1048576.0);
    for (int s = 0; s < c->plan.n_stages; s++)
        if (!c->stages[s]->loaded) return;
    if (c->ex) {
        resume_serving(c);
        return;
    }
    if (start_serving(c)) {
        c->exit_code = 1;
        c->stop = 1;
    }
}

static void on_error_msg(struct coord *c, const char *peer, const Baton__Envelope *env) {
    const Baton__Error *er = env->error;
    struct reg_worker *w = registry_find(c->reg, peer);
    if (c->phase == PH_LOADING && w && w->state == REG_LOADING && env->request_id == w->load_req) {
        BT_LOG(ERROR, "coord", "worker %s could not load layers %d..%d: %s: %s", peer, w->lo,
               w->hi - 1, er->code, er->message);
        fprintf(stderr, "baton-coordinator: worker %s failed to load layers %d..%d: %s\n", peer,
                w->lo, w->hi - 1, er->message);
        c->exit_code = 1;
        c->stop = 1;
        return;
    }
    if (c->ex && exec_pipeline_deliver(c->ex, peer, env, NULL) == 1) return;
    BT_LOG(WARN, "coord", "Error from %s (request %llu): %s: %s", peer,
           (unsigned long long)env->request_id, er->code, er->message);
}

static void on_message(struct coord *c, const struct tx_msg *m) {
    Baton__Envelope *env = NULL;
    uint64_t rid = 0;
    bt_err e = {0};
    registry_seen(c->reg, m->peer, bt_now_ns());
    int rc = msg_unpack(m->data[0], m->len[0], NULL, &env, &rid, &e);
    if (rc) {
        BT_LOG(WARN, "coord", "bad message from %s: %s", m->peer, e.msg);
        reply_error(c, m->peer, rid, rc, e.msg);
        return;
    }
    if ((rc = msg_check_payload(env, (size_t)(m->n_frames - 1), m->len + 1, &e))) {
        BT_LOG(WARN, "coord", "bad payload from %s: %s", m->peer, e.msg);
        if (env->body_case != BATON__ENVELOPE__BODY_ERROR)
            reply_error(c, m->peer, env->request_id, rc, e.msg);
        msg_free(env, NULL);
        return;
    }
    struct reg_worker *w = registry_find(c->reg, m->peer);
    int known = w && w->state != REG_LOST;
    switch (env->body_case) {
    case BATON__ENVELOPE__BODY_HELLO:
        on_hello(c, m->peer, env->request_id, env->hello);
        break;
    case BATON__ENVELOPE__BODY_LOAD_DONE:
        on_load_done(c, m->peer, env->request_id, env->load_done);
        break;
    case BATON__ENVELOPE__BODY_ERROR:
        on_error_msg(c, m->peer, env);
        break;
    case BATON__ENVELOPE__BODY_RESULT:
        if (!c->ex) {
            reply_error(c, m->peer, env->request_id, BT_EPROTO, "Result while not serving");
            break;
        }
        rc = exec_pipeline_deliver(c->ex, m->peer, env, &e);
        if (rc == 0)
            BT_LOG(WARN, "coord", "Result from %s for unknown batch %llu", m->peer,
                   (unsigned long long)env->result->batch_id);
        else if (rc < 0)
            BT_LOG(ERROR, "coord", "%s", e.msg);
        break;
    case BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST:
        if (!known) {
            reply_error(c, m->peer, env->request_id, BT_EPROTO, "send Hello first");
            break;
        }
        model_server_answer(c->ms, c->t, m->peer, env->request_id, env->model_chunk_request, &e);
        break;
    case BATON__ENVELOPE__BODY_HEARTBEAT:
        break;
    default: {
        char text[128];
        snprintf(text, sizeof text, "the coordinator does not accept %s",
                 msg_body_name(env->body_case));
        BT_LOG(WARN, "coord", "%s from %s", text, m->peer);
        reply_error(c, m->peer, env->request_id, BT_EPROTO, text);
    }
    }
    msg_free(env, NULL);
}

/* ---- operator commands (coordinator/admin.h), run on the loop thread ---- */

static const char *status_word(const struct coord *c) {
    if (c->phase == PH_SERVING) return "serving";
    if (c->phase == PH_LOADING) return c->recovering ? "replanning" : "loading";
    return "waiting for workers";
}

static void admin_view_cb(void *ctx, struct admin_view *v) {
    struct coord *c = ctx;
    v->status = status_word(c);
    v->n_stages = c->plan.n_stages;
    v->plan_id = c->plan.n_stages ? c->plan_id : 0;
    v->n_workers = 0;
    for (int i = 0; i < registry_n(c->reg) && v->n_workers < ADMIN_MAX_WORKERS; i++) {
        const struct reg_worker *w = registry_at(c->reg, i);
        struct admin_worker *a = &v->w[v->n_workers++];
        snprintf(a->id, sizeof a->id, "%s", w->id);
        snprintf(a->host, sizeof a->host, "%s", w->hostname);
        a->stage = w->state == REG_LOST ? -1 : w->stage;
        a->lo = w->lo;
        a->hi = w->hi;
        a->mem_budget = w->mem_budget;
        a->has_model = w->has_model;
        if (w->draining && w->state != REG_LOST)
            a->state = a->stage >= 0 ? "draining" : "drained";
        else
            a->state = registry_state_name(w->state);
    }
}

static int admin_drain_cb(void *ctx, const char *id, char *msg, size_t cap) {
    struct coord *c = ctx;
    struct reg_worker *w = registry_find(c->reg, id);
    if (!w) {
        snprintf(msg, cap, "no worker with id %s", id);
        return 404;
    }
    if (w->state == REG_LOST) {
        snprintf(msg, cap, "worker %s is already gone", id);
        return 409;
    }
    if (w->draining) {
        snprintf(msg, cap, "already drained; it may stop");
        return 200;
    }
    w->draining = 1;
    if (w->stage < 0) {
        BT_LOG(INFO, "coord", "worker %s drained by the operator (it held no layers)", id);
        snprintf(msg, cap, "drained (it held no layers); it may stop");
        return 200;
    }
    char why[200];
    snprintf(why, sizeof why, "worker %.60s (stage %d, layers %d..%d) drained by the operator", id,
             w->stage, w->lo, w->hi - 1);
    begin_replan(c, why, "replanning");
    if (c->plan.n_stages)
        snprintf(msg, cap, "drained; loading a %d-stage plan without it; it may stop",
                 c->plan.n_stages);
    else
        snprintf(msg, cap,
                 "drained; the workers left cannot hold the model, so requests wait (up to %d s) "
                 "for a worker to join; it may stop",
                 c->o.recover_timeout_s);
    return 202;
}

static int admin_replan_cb(void *ctx, char *msg, size_t cap) {
    struct coord *c = ctx;
    if (c->phase != PH_SERVING) {
        snprintf(msg, cap, "not serving (%s): wait until the current plan is up", status_word(c));
        return 409;
    }
    struct plan_worker pw[PLAN_MAX_WORKERS];
    struct reg_worker *rw[PLAN_MAX_WORKERS];
    int n = plan_candidates(c, 1, rw, pw);
    struct plan cand;
    struct plan_opts po = {.min_gain = c->o.min_gain};
    bt_err e = {0};
    if (planner_plan(&c->pm, pw, n, &po, &cand, &e)) {
        snprintf(msg, cap, "no plan over the %d workers present: %s", n, e.msg);
        return 409;
    }
    int same = cand.n_stages == c->plan.n_stages;
    for (int s = 0; same && s < cand.n_stages; s++)
        same = rw[cand.stage[s].worker] == c->stages[s] && cand.stage[s].lo == c->stages[s]->lo &&
               cand.stage[s].hi == c->stages[s]->hi;
    if (same) {
        snprintf(msg, cap, "the plan over the %d workers present is the current one", n);
        return 200;
    }
    begin_replan(c, "new plan asked by the operator", "replanning");
    snprintf(msg, cap, "loading a %d-stage plan over %d workers", cand.n_stages, n);
    return 202;
}

static void wake_admin(void *ctx) {
    struct coord *c = ctx;
    if (c->t) transport_wakeup(c->t);
}

static int split_hostport(const char *s, char *host, size_t cap, int *port) {
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= cap) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    if (host[0] == '[') { /* [::1]:8080 */
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']') return -1;
        memmove(host, host + 1, n - 2);
        host[n - 2] = 0;
    }
    char *end;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || v < 0 || v > 65535) return -1;
    *port = (int)v;
    return 0;
}

static int open_http(struct coord *c, bt_err *e) {
    char host[128];
    int port;
    if (split_hostport(c->o.http, host, sizeof host, &port))
        return bt_fail(e, BT_EINVAL, "--http %s: expected HOST:PORT", c->o.http);
    struct api_opts ao = {.sched = NULL,
                          .tok = c->tok,
                          .metrics = c->metrics,
                          .model = c->o.model_name,
                          .limits = {.max_tokens = c->o.max_ctx}};
    int rc;
    if (!c->o.local) {
        struct admin_opts ad = {.ops = {.view = admin_view_cb,
                                        .drain = admin_drain_cb,
                                        .replan = admin_replan_cb,
                                        .ctx = c},
                                .wake = wake_admin,
                                .wake_ctx = c,
                                .allow_remote = c->o.admin_remote};
        if ((rc = admin_open(&c->admin, &ad, e))) return rc;
        ao.admin = c->admin;
    }
    if ((rc = api_open(&c->api, &ao, e))) return rc;
    struct http_opts ho = {
        .host = host, .port = port, .handler = api_handle, .ctx = c->api, .metrics = c->metrics};
    if ((rc = http_open(&c->http, &ho, e))) return rc;
    BT_LOG(INFO, "coord", "http listening on %s:%d model=%s", host, http_port(c->http),
           c->o.model_name);
    return 0;
}

/* A loading worker the transport lost and has not heard again for 2 minutes is taken as dead
 * (a busy one misses pings for a while, but its frames bring it back). */
static int loading_worker_gone(struct coord *c) {
    struct tx_peer *known = c->peers_scratch;
    int n = transport_peers(c->t, known, REG_MAX_WORKERS * 2);
    int64_t now = bt_now_ns();
    for (int s = 0; s < c->plan.n_stages; s++) {
        struct reg_worker *w = c->stages[s];
        if (!w || w->state != REG_LOADING) continue;
        int alive = 0;
        for (int i = 0; i < n && !alive; i++)
            alive = !strcmp(known[i].id, w->id);
        if (!alive && now - w->last_seen_ns > 120 * (int64_t)1000000000) {
            BT_LOG(ERROR, "coord",
                   "worker %s gone for 120 s while loading layers %d..%d: "
                   "giving up",
                   w->id, w->lo, w->hi - 1);
            c->exit_code = 1;
            return 1;
        }
    }
    return 0;
}

void coord_stop(coord_t *c) {
    if (!c) return;
    c->stop = 1;
    /* Both calls are async-signal-safe: write(2) on a pipe and an eventfd write. */
    if (c->stop_fd[1] >= 0) {
        ssize_t r = write(c->stop_fd[1], "x", 1);
        (void)r;
    }
    if (c->t) transport_wakeup(c->t);
}

int coord_open(coord_t **out, const struct coord_opts *o, bt_err *e) {
    *out = NULL;
    if (!o->model) return bt_fail(e, BT_EINVAL, "coordinator: no model file");
    if (!o->local && !o->bind && o->kind == TRANSPORT_ZMQ)
        return bt_fail(e, BT_EINVAL, "coordinator: no control endpoint (bind)");
    if (o->local && !o->http) return bt_fail(e, BT_EINVAL, "coordinator: local mode needs http");
    struct coord *c = calloc(1, sizeof *c); /* large (plan, registry pointers): not on the stack */
    if (!c) return bt_fail(e, -ENOMEM, "coordinator");
    c->o = *o;
    c->stop_fd[0] = c->stop_fd[1] = -1;
    if (!c->o.min_workers) c->o.min_workers = 1;
    if (!c->o.max_seqs) c->o.max_seqs = 8;
    if (!c->o.max_ctx) c->o.max_ctx = 4096;
    if (!c->o.max_batch) c->o.max_batch = 256;
    if (!c->o.heartbeat_ms) c->o.heartbeat_ms = 1000;
    if (!c->o.liveness) c->o.liveness = 3;
    if (!c->o.load_timeout_s) c->o.load_timeout_s = 900;
    if (!c->o.recover_timeout_s) c->o.recover_timeout_s = 60;
    int rc;
    if (pipe2(c->stop_fd, O_CLOEXEC | O_NONBLOCK)) {
        rc = bt_fail(e, -errno, "coordinator: pipe: %s", strerror(errno));
        goto fail;
    }
    if ((rc = model_open(&c->m, c->o.model, e)) ||
        (rc = tokenizer_open(&c->tok, c->m->tokenizer_path, e)) ||
        (rc = metrics_open(&c->metrics, e)))
        goto fail;
    if (!c->o.model_name) c->o.model_name = c->m->name;
    if (c->o.max_ctx > c->m->hp.n_ctx_train && c->m->hp.n_ctx_train > 0)
        BT_LOG(WARN, "coord", "max_ctx=%d exceeds the model's training context %d", c->o.max_ctx,
               c->m->hp.n_ctx_train);
    if (c->o.http && (rc = open_http(c, e))) goto fail;
    if (c->o.local) {
        struct exec_local_opts lo = {.model_path = c->o.model,
                                     .tok = c->tok,
                                     .n_slots = c->o.max_seqs,
                                     .max_ctx = c->o.max_ctx,
                                     .max_batch = c->o.max_batch,
                                     .n_threads = c->o.threads};
        struct sched_opts so = {.metrics = c->metrics,
                                .tok = c->tok,
                                .prefill_chunk = c->o.prefill_chunk,
                                .prefill_stall = c->o.prefill_stall};
        if ((rc = exec_local_open(&c->ex, &lo, e))) goto fail;
        so.exec = c->ex;
        if ((rc = sched_open(&c->sched, &so, e))) goto fail;
        api_set_sched(c->api, c->sched);
        *out = c;
        return 0;
    }
    if ((rc = registry_open(&c->reg, e)) || (rc = model_server_open(&c->ms, c->o.model, e)))
        goto fail;
    struct transport_opts to = {.kind = c->o.kind,
                                .role = TRANSPORT_SERVER,
                                .endpoint = c->o.bind,
                                .identity = "coordinator",
                                .heartbeat_ms = c->o.heartbeat_ms,
                                .liveness = c->o.liveness,
                                .rank = c->o.rank,
                                .n_ranks = c->o.n_ranks};
    if ((rc = transport_open(&c->t, &to, e))) {
        bt_fail(e, rc, "bind %s: %s", c->o.bind ? c->o.bind : "(mpi)", bt_errmsg(e, rc));
        goto fail;
    }
    *out = c;
    return 0;
fail:
    coord_close(c);
    return rc;
}

int coord_run(coord_t *c) {
    bt_err e = {0};
    int rc;
    if (c->o.local) {
        BT_LOG(INFO, "coord", "ready local http_port=%d", http_port(c->http));
        struct pollfd pf = {.fd = c->stop_fd[0], .events = POLLIN};
        while (!c->stop)
            poll(&pf, 1, 1000);
        return c->exit_code;
    }
    BT_LOG(INFO, "coord", "listening control=%s model=%s layers=%d min_workers=%d wire=%s",
           transport_endpoint(c->t), c->m->name, c->m->hp.n_layer, c->o.min_workers,
           wire_dtype_name(c->o.wire));
    while (!c->stop) {
        if (c->phase == PH_SERVING && exec_pipeline_flush(c->ex, c->t, &e) == BT_EPEERLOST &&
            c->stages[0]) {
            /* Stage 0 vanished between pings: recover now rather than fail the batch. */
            char id[TX_PEER_MAX + 1];
            snprintf(id, sizeof id, "%s", c->stages[0]->id);
            BT_LOG(WARN, "coord", "stage 0 (%s) is not connected: %s", id, e.msg);
            on_peer_lost(c, id, 1);
        }
        if (c->phase == PH_LOADING &&
            bt_now_ns() - c->load_t0 > (int64_t)c->o.load_timeout_s * 1000000000) {
            BT_LOG(ERROR, "coord", "loading took more than %d s: giving up", c->o.load_timeout_s);
            c->exit_code = 1;
            break;
        }
        if (c->phase == PH_LOADING && loading_worker_gone(c)) break;
        if (c->recovering && c->ex && !c->recover_failed &&
            bt_now_ns() - c->recover_t0 > (int64_t)c->o.recover_timeout_s * 1000000000) {
            char m[160];
            snprintf(m, sizeof m,
                     "no pipeline: a stage was lost and the workers present could not replace "
                     "it within %d s",
                     c->o.recover_timeout_s);
            BT_LOG(ERROR, "coord", "%s; failing requests until workers join", m);
            exec_pipeline_fail(c->ex, BT_EPEERLOST, m);
            c->recover_failed = 1;
        }
        admin_serve(c->admin);
        struct tx_msg m;
        rc = transport_recv(c->t, 200, &m, &e);
        if (rc == 0)
            on_message(c, &m);
        else if (rc == BT_EPEERLOST)
            on_peer_lost(c, m.peer, 0);
        else if (rc == BT_EPROTO) {
            BT_LOG(WARN, "coord", "from %s: %s", m.peer, e.msg);
            reply_error(c, m.peer, 0, BT_EPROTO, e.msg);
        } else if (rc != BT_ETIMEDOUT && rc != -EINTR) {
            BT_LOG(ERROR, "coord", "transport: %s", bt_errmsg(&e, rc));
            c->exit_code = 1;
            break;
        }
    }
    BT_LOG(INFO, "coord", "stopping (exit %d)", c->exit_code);
    admin_stop(c->admin);
    if (c->reg && !c->shutdown_sent) {
        send_shutdown(c, "coordinator stopping");
        c->shutdown_sent = 1;
    }
    return c->exit_code;
}

void coord_close(coord_t *c) {
    if (!c) return;
    if (c->reg && c->t && !c->shutdown_sent) send_shutdown(c, "coordinator stopping");
    http_close(c->http); /* first: no handler runs after this */
    if (c->ex && !c->o.local)
        exec_pipeline_fail(c->ex, BT_ECANCELED, "the coordinator is stopping");
    sched_close(c->sched);
    api_close(c->api);
    admin_close(c->admin);
    exec_close(c->ex);
    transport_close(c->t);
    model_server_close(c->ms);
    registry_close(c->reg);
    metrics_close(c->metrics);
    tokenizer_free(c->tok);
    model_close(c->m);
    if (c->stop_fd[0] >= 0) close(c->stop_fd[0]);
    if (c->stop_fd[1] >= 0) close(c->stop_fd[1]);
    free(c);
}
