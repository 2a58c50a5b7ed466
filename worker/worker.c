/* worker/worker.c: see worker.h (state machine, protocol choices). */
#include "worker/worker.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/model.h"
#include "proto/msg.h"
#include "proto/wire.h"
#include "worker/model_cache.h"
#include "worker/stage.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define FETCH_STALL_NS (60LL * 1000000000)
#define FETCH_WINDOW   4
#define DRAIN_IDLE_NS  (1000LL * 1000000)
/* Unpacked messages of the serving path live in one arena, reset per message (no malloc per
 * Forward). Unpacked size stays within a small multiple of the 4 MiB packed cap. */
#define ARENA_BYTES ((size_t)16 << 20)

/* A message moving between the threads: a received Forward/Cancel/StateExport/StateImport
 * (kind JOB_*, all frames copied into buf) or an outgoing message packed by the compute thread
 * (kind DEST_*, frame 0 = packed Envelope, frame 1 = payload). Buffers are reused through a
 * free list, so steady serving allocates nothing. */
enum { JOB_MSG, JOB_CANCEL_ALL, DEST_COORD, DEST_NEXT };
struct wbuf {
    struct wbuf *next;
    int kind, from_coord;
    uint64_t batch_id;
    int n_frames;
    size_t len[TX_MAX_FRAMES];
    uint8_t *buf;
    size_t cap;
};

struct worker {
    struct worker_opts o;
    char id[TX_PEER_MAX + 1];
    char data_ep[512];
    transport_t *coord, *data, *next;
    unsigned next_gen; /* bumped whenever next is closed: a snapshot of it is then stale */
    volatile sig_atomic_t stop;
    int state; /* Baton__WorkerState */
    int welcomed;
    int hb_ms;
    int has_model;
    struct model_ident local;  /* the --model file, when has_model */
    struct model_ident loaded; /* the model the stage runs */
    stage_t *stage;
    struct stage_info si;
    int stage_index, n_stages, wire_dtype;
    uint64_t plan_id;
    model_cache_t *cache;
    uint64_t req_seq;
    int64_t last_hello_ns, last_hb_ns, lost_since_ns;
    int hello_due; /* send Hello once the coordinator shows a sign of life after hello_mark */
    int64_t hello_mark_ns;
    int draining, drain_reported;
    int64_t last_forward_ns;
    float stage_ms[MSG_MAX_STAGES + 1]; /* Forward/Result.stage_ms with ours appended */
    void *arena_buf;
    struct msg_arena arena;
    uint64_t drain_req;
    int64_t drain_deadline_ns;
    int liveness;        /* Welcome.heartbeat_liveness (for the next-stage transport) */
    int64_t load_end_ns; /* when the last LoadLayers (which blocks the comms thread) ended */
    uint32_t want_seqs, want_ctx; /* what the current stage's LoadLayers asked for */
    /* Hand-off between the comms thread (worker_run's: every transport) and the compute
     * thread (stage_forward and everything else touching the stage while serving). */
    pthread_t comms_tid, compute_tid;
    int comms_started; /* the first worker_turn ran (comms_tid is set) */
    int compute_started;
    pthread_mutex_t mu;
    pthread_cond_t cv_job, cv_idle;
    struct wbuf *in_head, *in_tail, *out_head, *out_tail, *free_bufs;
    int busy, quit;
    atomic_int active_pub; /* stage_active() as of the last job, for Heartbeat/drain */
    void *carena_buf;
    struct msg_arena carena; /* the compute thread's unpack arena */
};

static const char *state_name(int s) {
    static const char *const n[] = {"CONNECTING", "LOADING", "READY", "SERVING", "DRAINING"};
    return s >= 0 && s < 5 ? n[s] : "?";
}

static void set_state(worker_t *w, int s, const char *why) {
    if (w->state == s) return;
    BT_LOG(INFO, "worker", "state %s -> %s (%s)", state_name(w->state), state_name(s), why);
    w->state = s;
}

const char *worker_data_endpoint(const worker_t *w) {
    return w->data_ep;
}

void worker_stop(worker_t *w) {
    w->stop = 1;
    if (w->coord) transport_wakeup(w->coord);
}

/* 1 if the coordinator's transport heard anything (a ping at least) after time t. Hellos are
 * sent only then: ZeroMQ queues messages for an absent peer and would deliver a burst of
 * Hellos (duplicates) when the coordinator comes up. */
static int coord_seen_since(const worker_t *w, int64_t t) {
    struct tx_peer p[4];
    int n = transport_peers(w->coord, p, 4);
    for (int i = 0; i < n; i++)
        if (p[i].last_seen_ns > t) return 1;
    return 0;
}

/* ---- sending ---- */

static void free_cb(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* Packs env and sends it with extra payload frames (copied unless they carry free_fn). */
static int send_env(transport_t *t, const char *peer, const Baton__Envelope *env,
                    const struct tx_frame *extra, int n_extra, bt_err *e) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = msg_pack(env, &buf, &len, e);
    if (rc) {
        for (int i = 0; i < n_extra; i++)
            if (extra[i].free_fn) extra[i].free_fn((void *)(uintptr_t)extra[i].data, extra[i].hint);
        return rc;
    }
    struct tx_frame f[TX_MAX_FRAMES];
    f[0] = (struct tx_frame){.data = buf, .len = len, .free_fn = free_cb};
    for (int i = 0; i < n_extra && i + 1 < TX_MAX_FRAMES; i++)
        f[i + 1] = extra[i];
    return transport_send(t, peer, f, 1 + n_extra, e);
}

static void send_error_word(worker_t *w, transport_t *t, const char *peer, uint64_t rid,
                            const char *word, const char *text) {
    Baton__Envelope env;
    Baton__Error err;
    msg_error_reply(&env, &err, rid, BT_EPROTO, text);
    err.code = (char *)(uintptr_t)word;
    bt_err e = {0};
    int rc = send_env(t, peer, &env, NULL, 0, &e);
    if (rc)
        BT_LOG(WARN, "worker", "%s: error reply %s (request %llu) not sent: %s", w->id, word,
               (unsigned long long)rid, bt_errmsg(&e, rc));
}

static void send_error(worker_t *w, transport_t *t, const char *peer, uint64_t rid, int code,
                       const char *text) {
    send_error_word(w, t, peer, rid, msg_code_word(code), text);
}

/* ---- hand-off between the comms thread and the compute thread ---- */

/* A buffer of at least cap bytes from the free list (or a new one). NULL when out of memory. */
static struct wbuf *wbuf_get(worker_t *w, size_t cap) {
    pthread_mutex_lock(&w->mu);
    struct wbuf *b = w->free_bufs;
    if (b) w->free_bufs = b->next;
    pthread_mutex_unlock(&w->mu);
    if (!b && !(b = calloc(1, sizeof *b))) return NULL;
    b->next = NULL;
    if (b->cap < cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < cap)
            nc *= 2;
        uint8_t *nb = realloc(b->buf, nc);
        if (!nb) {
            free(b->buf);
            free(b);
            return NULL;
        }
        b->buf = nb;
        b->cap = nc;
    }
    return b;
}

static void wbuf_put_locked(worker_t *w, struct wbuf *b) {
    b->next = w->free_bufs;
    w->free_bufs = b;
}

static void wbuf_put(worker_t *w, struct wbuf *b) {
    pthread_mutex_lock(&w->mu);
    wbuf_put_locked(w, b);
    pthread_mutex_unlock(&w->mu);
}

static void wbuf_free_list(struct wbuf *b) {
    while (b) {
        struct wbuf *n = b->next;
        free(b->buf);
        free(b);
        b = n;
    }
}

/* Comms thread: queues a received message (all frames copied) for the compute thread. */
static int enqueue_job(worker_t *w, const struct tx_msg *m, int from_coord) {
    size_t total = 0;
    for (int i = 0; i < m->n_frames; i++)
        total += m->len[i];
    struct wbuf *b = wbuf_get(w, total);
    if (!b) return -ENOMEM;
    b->kind = JOB_MSG;
    b->from_coord = from_coord;
    b->n_frames = m->n_frames;
    size_t at = 0;
    for (int i = 0; i < m->n_frames; i++) {
        if (m->len[i]) memcpy(b->buf + at, m->data[i], m->len[i]);
        b->len[i] = m->len[i];
        at += m->len[i];
    }
    pthread_mutex_lock(&w->mu);
    if (w->in_tail)
        w->in_tail->next = b;
    else
        w->in_head = b;
    w->in_tail = b;
    pthread_cond_signal(&w->cv_job);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* Compute thread: packs env (+ n_payload = 0 or 1 payload frame, copied) for the comms thread
 * to send to dest, and wakes it. rid names the batch in logs and in the Error the comms
 * thread sends when the next stage cannot be reached. A failure here is logged; the
 * coordinator's batch timeout then fails the batch (nothing better can be done from here). */
static void post(worker_t *w, int dest, uint64_t rid, const Baton__Envelope *env,
                 const void *payload, size_t plen, int n_payload) {
    size_t need = baton__envelope__get_packed_size(env);
    struct wbuf *b = wbuf_get(w, need + plen);
    bt_err e = {0};
    size_t len0 = 0;
    int rc = b ? msg_pack_into(env, b->buf, b->cap, &len0, &e)
               : bt_fail(&e, -ENOMEM, "%zu bytes for an outgoing %s", need + plen,
                         msg_body_name(env->body_case));
    if (rc) {
        BT_LOG(ERROR, "worker", "request %llu: %s not queued: %s", (unsigned long long)rid,
               msg_body_name(env->body_case), bt_errmsg(&e, rc));
        if (b) wbuf_put(w, b);
        return;
    }
    if (n_payload && plen) memcpy(b->buf + len0, payload, plen);
    b->kind = dest;
    b->batch_id = rid;
    b->n_frames = 1 + (n_payload ? 1 : 0);
    b->len[0] = len0;
    b->len[1] = n_payload ? plen : 0;
    pthread_mutex_lock(&w->mu);
    if (w->out_tail)
        w->out_tail->next = b;
    else
        w->out_head = b;
    w->out_tail = b;
    pthread_mutex_unlock(&w->mu);
    transport_wakeup(w->coord); /* the comms thread polls w->coord: it sends at once */
}

static void post_error(worker_t *w, uint64_t rid, int code, const char *text) {
    Baton__Envelope env;
    Baton__Error err;
    msg_error_reply(&env, &err, rid, code, text);
    err.code = (char *)(uintptr_t)msg_code_word(code);
    post(w, DEST_COORD, rid, &env, NULL, 0, 0);
}

/* Comms thread: sends what the compute thread posted, in order. */
static void flush_outbox(worker_t *w) {
    pthread_mutex_lock(&w->mu);
    struct wbuf *b = w->out_head;
    w->out_head = w->out_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (b) {
        struct wbuf *nx = b->next;
        transport_t *t = b->kind == DEST_NEXT ? w->next : w->coord;
        struct tx_frame f[2] = {{.data = b->buf, .len = b->len[0]},
                                {.data = b->buf + b->len[0], .len = b->len[1]}};
        bt_err e = {0};
        int rc = t ? transport_send(t, NULL, f, b->n_frames, &e)
                   : bt_fail(&e, BT_EPEERLOST, "no next stage");
        if (rc && b->kind == DEST_NEXT) {
            char msg[300];
            snprintf(msg, sizeof msg, "batch %llu: next stage: %s", (unsigned long long)b->batch_id,
                     bt_errmsg(&e, rc));
            BT_LOG(WARN, "worker", "%s", msg);
            send_error(w, w->coord, NULL, b->batch_id, rc, msg);
        } else if (rc) {
            BT_LOG(WARN, "worker", "request %llu: reply not sent: %s",
                   (unsigned long long)b->batch_id, bt_errmsg(&e, rc));
        }
        wbuf_put(w, b);
        b = nx;
    }
}

/* Comms thread: waits until the compute thread is idle (drop: discarding queued jobs; else
 * after running them). Every change the comms thread makes to w->stage comes after this. */
static void quiesce(worker_t *w, int drop) {
    pthread_mutex_lock(&w->mu);
    if (drop) {
        while (w->in_head) {
            struct wbuf *b = w->in_head;
            w->in_head = b->next;
            wbuf_put_locked(w, b);
        }
        w->in_tail = NULL;
    }
    while (w->compute_started && (w->busy || w->in_head))
        pthread_cond_wait(&w->cv_idle, &w->mu);
    pthread_mutex_unlock(&w->mu);
    flush_outbox(w); /* what the old stage produced goes out before anything changes */
}

static void send_hello(worker_t *w) {
    const struct worker_caps *c = w->o.caps;
    Baton__Envelope env;
    Baton__Hello h;
    Baton__ModelId mid;
    msg_init(&env, 0);
    baton__hello__init(&h);
    baton__model_id__init(&mid);
    h.worker_id = w->id;
    h.ram_bytes = c ? c->ram_bytes : 0;
    h.mem_budget_bytes = w->o.mem_budget;
    if (!h.mem_budget_bytes && c) h.mem_budget_bytes = c->ram_bytes / 10 * 8;
    h.cores = c ? (uint32_t)c->cores : 0;
    h.isa = (char *)(uintptr_t)(c ? c->isa : "");
    h.mem_bw_gbps = c ? c->mem_bw_gbps : 0.0f;
    h.matmul_gflops = c ? c->matmul_gflops : 0.0f;
    h.has_model = w->has_model;
    if (w->has_model) {
        mid.name = w->local.name;
        mid.size = w->local.size;
        mid.header_xxh3 = w->local.header_xxh3;
        h.model = &mid;
    }
    h.protocol_version = MSG_PROTOCOL_VERSION;
    h.data_endpoint = w->data_ep;
    h.hostname = (char *)(uintptr_t)(c ? c->hostname : "");
    env.body_case = BATON__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    bt_err e = {0};
    int rc = send_env(w->coord, NULL, &env, NULL, 0, &e);
    w->last_hello_ns = bt_now_ns();
    if (rc)
        BT_LOG(WARN, "worker", "hello not sent: %s", bt_errmsg(&e, rc));
    else
        BT_LOG(DEBUG, "worker", "hello id=%s data=%s has_model=%d", w->id, w->data_ep,
               w->has_model);
}

static void send_heartbeat(worker_t *w, uint64_t rid) {
    Baton__Envelope env;
    Baton__Heartbeat hb;
    msg_init(&env, rid);
    baton__heartbeat__init(&hb);
    hb.sent_ns = (uint64_t)bt_now_ns();
    hb.state = (Baton__WorkerState)w->state;
    hb.active_seqs = w->stage ? (uint32_t)atomic_load(&w->active_pub) : 0;
    hb.mem_used_bytes = w->stage ? w->si.weight_bytes + w->si.state_bytes : 0;
    env.body_case = BATON__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    bt_err e = {0};
    int rc = send_env(w->coord, NULL, &env, NULL, 0, &e);
    w->last_hb_ns = bt_now_ns();
    if (rc) BT_LOG(DEBUG, "worker", "heartbeat not sent: %s", bt_errmsg(&e, rc));
}

/* Pings while a weight load holds the comms thread. Forward pieces on the compute thread
 * call it too: there it does nothing (the comms thread keeps polling). */
static void tick(void *ctx) {
    worker_t *w = ctx;
    if (!pthread_equal(pthread_self(), w->comms_tid)) return;
    transport_tick(w->coord, NULL);
    transport_tick(w->data, NULL);
    if (w->next) transport_tick(w->next, NULL);
}

static void drop_stage(worker_t *w) {
    quiesce(w, 1);
    stage_close(w->stage);
    atomic_store(&w->active_pub, 0);
    w->stage = NULL;
    transport_close(w->next);
    w->next = NULL;
    w->next_gen++;
    model_cache_close(w->cache);
    w->cache = NULL;
    memset(&w->si, 0, sizeof w->si);
}

/* ---- model streaming ---- */

struct pend {
    uint64_t rid, off, len;
};

/* Fetches the missing parts of want[0..n) from the coordinator into w->cache. */
static int fetch_ranges(worker_t *w, const Baton__ModelId *mid, const struct mc_range *want, int n,
                        bt_err *e) {
    struct pend pend[FETCH_WINDOW];
    int np = 0;
    int64_t last_progress = bt_now_ns();
    uint64_t got = 0, logged = 0;
    uint64_t chunk = w->o.chunk_bytes ? w->o.chunk_bytes : (16u << 20);
    if (chunk > MSG_MAX_CHUNK) chunk = MSG_MAX_CHUNK;
    for (;;) {
        if (w->stop) return bt_fail(e, BT_ECANCELED, "model fetch: stopping");
        if (np == 0) {
            struct mc_range pieces[FETCH_WINDOW];
            int k = model_cache_missing(w->cache, want, n, chunk, pieces, FETCH_WINDOW);
            if (k < 0) return bt_fail(e, k, "model fetch: range list");
            if (k == 0) return 0;
            for (int i = 0; i < k && i < FETCH_WINDOW; i++) {
                Baton__Envelope env;
                Baton__ModelChunkRequest rq;
                msg_init(&env, ++w->req_seq);
                baton__model_chunk_request__init(&rq);
                rq.model = (Baton__ModelId *)(uintptr_t)mid;
                rq.offset = pieces[i].off;
                rq.length = pieces[i].len;
                env.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST;
                env.model_chunk_request = &rq;
                int rc = send_env(w->coord, NULL, &env, NULL, 0, e);
                if (rc) return rc;
                pend[np++] = (struct pend){w->req_seq, pieces[i].off, pieces[i].len};
            }
        }
        struct tx_msg m;
        bt_err re = {0};
        int rc = transport_recv(w->coord, 1000, &m, &re);
        if (rc == BT_ETIMEDOUT || rc == -EINTR) {
            if (bt_now_ns() - last_progress > FETCH_STALL_NS)
                return bt_fail(e, BT_ETIMEDOUT, "model fetch: no chunk for 60 s");
            continue;
        }
        if (rc == BT_EPEERLOST) return bt_fail(e, BT_EPEERLOST, "model fetch: coordinator lost");
        if (rc == BT_EPROTO) continue;
        if (rc) return bt_fail(e, rc, "model fetch: %s", bt_errmsg(&re, rc));
        Baton__Envelope *env = NULL;
        uint64_t rid = 0;
        rc = msg_unpack(m.data[0], m.len[0], NULL, &env, &rid, &re);
        if (!rc) rc = msg_check_payload(env, (size_t)m.n_frames - 1, m.len + 1, &re);
        if (rc) {
            send_error(w, w->coord, NULL, rid, rc, re.msg);
            msg_free(env, NULL);
            continue;
        }
        int slot = -1;
        for (int i = 0; i < np; i++)
            if (pend[i].rid == env->request_id) slot = i;
        switch (env->body_case) {
        case BATON__ENVELOPE__BODY_MODEL_CHUNK: {
            const Baton__ModelChunk *c = env->model_chunk;
            if (slot < 0 || c->offset != pend[slot].off || c->length != pend[slot].len) {
                BT_LOG(WARN, "worker", "model chunk %llu at %llu: not requested",
                       (unsigned long long)env->request_id, (unsigned long long)c->offset);
                break;
            }
            rc = model_cache_put(w->cache, c->offset, m.data[1], m.len[1], c->xxh3, e);
            if (rc) {
                msg_free(env, NULL);
                return rc;
            }
            pend[slot] = pend[--np];
            got += c->length;
            last_progress = bt_now_ns();
            if (got - logged >= (256u << 20)) {
                BT_LOG(INFO, "worker", "model fetch bytes=%llu", (unsigned long long)got);
                logged = got;
            }
            break;
        }
        case BATON__ENVELOPE__BODY_ERROR:
            if (slot >= 0) {
                rc = bt_fail(e, BT_EPROTO, "model fetch at %llu: coordinator says %s: %s",
                             (unsigned long long)pend[slot].off, env->error->code,
                             env->error->message);
                msg_free(env, NULL);
                return rc;
            }
            BT_LOG(WARN, "worker", "coordinator error %s: %s", env->error->code,
                   env->error->message);
            break;
        case BATON__ENVELOPE__BODY_HEARTBEAT:
            send_heartbeat(w, env->request_id);
            break;
        case BATON__ENVELOPE__BODY_SHUTDOWN:
            w->stop = 1;
            break;
        case BATON__ENVELOPE__BODY_CANCEL:
        case BATON__ENVELOPE__BODY_PLAN:
            break; /* nothing loaded yet: nothing to cancel */
        default:
            send_error(w, w->coord, NULL, env->request_id, BT_EPROTO, "loading");
        }
        msg_free(env, NULL);
    }
}

/* Makes the cache hold the model's head and layers [lo, hi). */
static int stream_model(worker_t *w, const Baton__LoadLayers *L, bt_err *e) {
    const Baton__ModelId *mid = L->model;
    if (!mid || !mid->size)
        return bt_fail(e, BT_EPROTO, "load: no model named and no local model file");
    struct model_cache_opts co = {.dir = w->o.cache_dir,
                                  .name = mid->name,
                                  .size = mid->size,
                                  .header_xxh3 = mid->header_xxh3};
    int rc = model_cache_open(&w->cache, &co, e);
    if (rc) return rc;
    size_t head = mid->size < (1u << 20) ? (size_t)mid->size : (1u << 20);
    for (;;) {
        struct mc_range want = {0, head};
        if ((rc = fetch_ranges(w, mid, &want, 1, e))) return rc;
        unsigned char *buf = malloc(head);
        if (!buf) return bt_fail(e, -ENOMEM, "load: %zu head bytes", head);
        size_t need = 0;
        rc = model_cache_read(w->cache, 0, buf, head, e);
        if (!rc) rc = caps_model_ident_head(&w->loaded, mid->name, buf, head, mid->size, &need, e);
        free(buf);
        if (rc == BT_EMSGSIZE && need > head && need <= mid->size) {
            head = need;
            continue;
        }
        if (rc) return rc;
        break;
    }
    if (w->loaded.header_xxh3 != mid->header_xxh3)
        return bt_fail(e, BT_ECHECKSUM,
                       "load: model %s head xxh3 %016llx, coordinator says %016llx", mid->name,
                       (unsigned long long)w->loaded.header_xxh3,
                       (unsigned long long)mid->header_xxh3);
    return 0;
}

/* ---- LoadLayers ---- */

static int link_stage(worker_t *w, const Baton__LoadLayers *L, bt_err *e);

static int do_load(worker_t *w, const Baton__LoadLayers *L, bt_err *e) {
    const char *path = NULL;
    int rc;
    if (w->has_model && L->model && L->model->size == w->local.size &&
        L->model->header_xxh3 == w->local.header_xxh3) {
        path = w->o.model_path;
        w->loaded = w->local;
    } else {
        if (w->has_model)
            BT_LOG(WARN, "worker", "local model differs from %s: streaming it",
                   L->model ? L->model->name : "?");
        if ((rc = stream_model(w, L, e))) return rc;
        path = model_cache_path(w->cache);
    }
    struct model_desc *md = NULL;
    struct layer_range r = {0};
    if ((rc = model_open(&md, path, e))) return rc;
    if (md->hp.n_layer != (int)L->n_layers) {
        rc = bt_fail(e, BT_ESHAPE, "load: model has %d layers, LoadLayers says %u", md->hp.n_layer,
                     L->n_layers);
        goto out;
    }
    if ((rc = model_range(md, (int)L->lo, (int)L->hi, &r, e))) goto out;
    uint64_t state_budget = L->state_budget_bytes;
    if (w->o.mem_budget) {
        if (r.bytes >= w->o.mem_budget) {
            rc = bt_fail(e, BT_ECAPACITY,
                         "load: layers [%u, %u) need %llu weight bytes, budget %llu", L->lo, L->hi,
                         (unsigned long long)r.bytes, (unsigned long long)w->o.mem_budget);
            goto out;
        }
        if (!state_budget || state_budget > w->o.mem_budget - r.bytes)
            state_budget = w->o.mem_budget - r.bytes;
    }
    if (w->cache) {
        struct mc_range *want = calloc((size_t)(r.n > 0 ? r.n : 1), sizeof *want);
        if (!want) {
            rc = bt_fail(e, -ENOMEM, "load: %d ranges", r.n);
            goto out;
        }
        for (int i = 0; i < r.n; i++)
            want[i] = (struct mc_range){r.tensors[i]->offset, r.tensors[i]->n_bytes};
        rc = fetch_ranges(w, L->model, want, r.n, e);
        free(want);
        if (rc) goto out;
    }
    struct stage_opts so = {.model_path = path,
                            .lo = (int)L->lo,
                            .hi = (int)L->hi,
                            .wire_dtype = (int)L->wire_dtype,
                            .max_seqs = L->max_seqs ? (int)L->max_seqs : 8,
                            .max_ctx = L->max_ctx ? (int)L->max_ctx : 4096,
                            .state_budget = state_budget,
                            .threads = w->o.threads,
                            .max_rows = w->o.max_rows,
                            .tick = tick,
                            .tick_ctx = w};
    if ((rc = stage_open(&w->stage, &so, e))) goto out;
    stage_info(w->stage, &w->si);
    rc = link_stage(w, L, e);
out:
    free(r.tensors);
    model_close(md);
    return rc;
}

/* After the weights: checks the stage's place in the pipeline, connects to the next stage and
 * records the assignment. */
static int link_stage(worker_t *w, const Baton__LoadLayers *L, bt_err *e) {
    int rc;
    if (w->si.is_last != (L->stage_index + 1 == L->n_stages)) {
        return bt_fail(e, BT_EPROTO, "load: stage %u of %u but layers [%u, %u) of %u",
                       L->stage_index, L->n_stages, L->lo, L->hi, L->n_layers);
    }
    transport_close(w->next);
    w->next = NULL;
    w->next_gen++;
    if (!w->si.is_last) {
        if (!L->next_endpoint || !*L->next_endpoint)
            return bt_fail(e, BT_EPROTO, "load: stage %u is not last but has no next_endpoint",
                           L->stage_index);
        struct transport_opts to = {.kind = w->o.kind,
                                    .role = TRANSPORT_CLIENT,
                                    .endpoint = L->next_endpoint,
                                    .identity = w->id,
                                    .heartbeat_ms = w->hb_ms,
                                    .liveness = w->liveness};
        if ((rc = transport_open(&w->next, &to, e))) return rc;
    }
    w->stage_index = (int)L->stage_index;
    w->n_stages = (int)L->n_stages;
    w->wire_dtype = (int)L->wire_dtype;
    w->plan_id = L->plan_id;
    w->want_seqs = L->max_seqs;
    w->want_ctx = L->max_ctx;
    return 0;
}

static void on_load(worker_t *w, const Baton__Envelope *env) {
    const Baton__LoadLayers *L = env->load_layers;
    if (w->draining) {
        send_error_word(w, w->coord, NULL, env->request_id, "draining", "worker is draining");
        return;
    }
    /* A re-plan after a lost stage often gives this worker the same layers again: keeping the
     * weights turns the reload into a slot reset. Anything else loads from scratch. */
    quiesce(w, 1);
    int keep = w->stage && L->model && L->model->size == w->loaded.size &&
               L->model->header_xxh3 == w->loaded.header_xxh3 && (int)L->lo == w->si.lo &&
               (int)L->hi == w->si.hi && (int)L->wire_dtype == w->wire_dtype &&
               L->max_seqs == w->want_seqs && L->max_ctx == w->want_ctx;
    if (!keep) drop_stage(w);
    set_state(w, BATON__WORKER_STATE__WS_LOADING, "load_layers");
    BT_LOG(INFO, "worker",
           "load plan=%llu layers=%u..%u stage=%u/%u next=%s wire=%s seqs=%u ctx=%u",
           (unsigned long long)L->plan_id, L->lo, L->hi, L->stage_index, L->n_stages,
           L->next_endpoint && *L->next_endpoint ? L->next_endpoint : "-",
           wire_dtype_name((int)L->wire_dtype), L->max_seqs, L->max_ctx);
    bt_err e = {0};
    int rc;
    if (keep) {
        stage_cancel_all(w->stage); /* the compute thread is idle (quiesced above) */
        atomic_store(&w->active_pub, 0);
        w->si.load_secs = 0;
        rc = link_stage(w, L, &e);
        if (!rc)
            BT_LOG(INFO, "worker", "layers %u..%u already loaded: kept, slots reset", L->lo,
                   L->hi - 1);
    } else {
        rc = do_load(w, L, &e);
    }
    w->load_end_ns = bt_now_ns();
    if (rc) {
        BT_LOG(ERROR, "worker", "load failed: %s", bt_errmsg(&e, rc));
        drop_stage(w);
        send_error(w, w->coord, NULL, env->request_id, rc, bt_errmsg(&e, rc));
        set_state(w, BATON__WORKER_STATE__WS_CONNECTING, "load failed");
        return;
    }
    Baton__Envelope out;
    Baton__LoadDone d;
    msg_init(&out, env->request_id);
    baton__load_done__init(&d);
    d.plan_id = L->plan_id;
    d.lo = L->lo;
    d.hi = L->hi;
    d.weight_bytes = w->si.weight_bytes;
    d.state_bytes = w->si.state_bytes;
    d.load_secs = (float)w->si.load_secs;
    d.max_seqs = (uint32_t)w->si.n_slots;
    d.max_ctx = (uint32_t)w->si.max_ctx;
    out.body_case = BATON__ENVELOPE__BODY_LOAD_DONE;
    out.load_done = &d;
    if ((rc = send_env(w->coord, NULL, &out, NULL, 0, &e)))
        BT_LOG(WARN, "worker", "load_done not sent: %s", bt_errmsg(&e, rc));
    set_state(w, BATON__WORKER_STATE__WS_READY, "loaded");
}

/* ---- Forward ---- */

/* Comms thread: checks a Forward against this stage and queues it for the compute thread. */
static void on_forward(worker_t *w, Baton__Envelope *env, const struct tx_msg *m, int from_coord) {
    Baton__Forward *f = env->forward;
    uint64_t rid = env->request_id;
    char msg[300];
    if (!w->stage) {
        snprintf(msg, sizeof msg, "batch %llu: no layers loaded", (unsigned long long)f->batch_id);
        send_error(w, w->coord, NULL, rid, BT_EPROTO, msg);
        return;
    }
    if (f->plan_id && f->plan_id != w->plan_id) {
        /* In flight when the coordinator re-planned; it resent the batch under the new plan. */
        BT_LOG(INFO, "worker", "batch %llu of plan %llu dropped: this stage serves plan %llu",
               (unsigned long long)f->batch_id, (unsigned long long)f->plan_id,
               (unsigned long long)w->plan_id);
        return;
    }
    if ((int)f->stage_index != w->stage_index || from_coord != (w->stage_index == 0)) {
        snprintf(msg, sizeof msg, "batch %llu: for stage %u from the %s; this is stage %d",
                 (unsigned long long)f->batch_id, f->stage_index,
                 from_coord ? "coordinator" : "previous stage", w->stage_index);
        send_error(w, w->coord, NULL, rid, BT_EPROTO, msg);
        return;
    }
    w->last_forward_ns = bt_now_ns();
    if (w->draining) {
        /* seq_id is the coordinator's slot number, so a known id at pos 0 is a new sequence. */
        for (size_t i = 0; i < f->n_seq_id; i++)
            if (f->pos[i] == 0) {
                snprintf(msg, sizeof msg, "batch %llu: draining, seq %llu refused",
                         (unsigned long long)f->batch_id, (unsigned long long)f->seq_id[i]);
                send_error_word(w, w->coord, NULL, rid, "draining", msg);
                return;
            }
    }
    if (enqueue_job(w, m, from_coord)) {
        snprintf(msg, sizeof msg, "batch %llu: out of memory queueing it",
                 (unsigned long long)f->batch_id);
        send_error(w, w->coord, NULL, rid, -ENOMEM, msg);
        return;
    }
    if (w->state == BATON__WORKER_STATE__WS_READY)
        set_state(w, BATON__WORKER_STATE__WS_SERVING, "first forward");
}

/* Compute thread: runs a queued Forward and posts the activations or the Result. */
static void compute_forward(worker_t *w, Baton__Envelope *env, const struct tx_msg *m) {
    Baton__Forward *f = env->forward;
    uint64_t rid = env->request_id;
    char msg[300];
    if (!w->stage) return; /* dropped while queued: the coordinator fails the batch */
    struct stage_out so;
    bt_err e = {0};
    int64_t t0 = bt_now_ns();
    int rc = stage_forward(w->stage, f, m->n_frames > 1 ? m->data[1] : NULL,
                           m->n_frames > 1 ? m->len[1] : 0, &so, &e);
    /* Earlier stages' compute times plus ours (msg_unpack bounds the count). */
    size_t n_ms = f->n_stage_ms < MSG_MAX_STAGES ? f->n_stage_ms : MSG_MAX_STAGES;
    if (n_ms) memcpy(w->stage_ms, f->stage_ms, n_ms * sizeof(float));
    w->stage_ms[n_ms++] = (float)((double)(bt_now_ns() - t0) * 1e-6);
    if (rc) {
        snprintf(msg, sizeof msg, "batch %llu: %s", (unsigned long long)f->batch_id,
                 bt_errmsg(&e, rc));
        BT_LOG(WARN, "worker", "%s", msg);
        post_error(w, rid, rc, msg);
        return;
    }
    if (!w->si.is_last) {
        /* Same header, next stage, our activations. */
        f->stage_index++;
        f->wire_dtype = (Baton__WireDtype)so.act_dtype;
        f->hidden = (uint32_t)w->si.hidden;
        /* Borrow our array for the pack; msg_free must see the unpacked one again. */
        size_t in_n = f->n_stage_ms;
        float *in_ms = f->stage_ms;
        f->n_stage_ms = n_ms;
        f->stage_ms = w->stage_ms;
        post(w, DEST_NEXT, rid, env, so.act, so.act_len, 1);
        f->n_stage_ms = in_n;
        f->stage_ms = in_ms;
        return;
    }
    Baton__Envelope out;
    msg_init(&out, rid);
    out.body_case = BATON__ENVELOPE__BODY_RESULT;
    out.result = so.result;
    so.result->n_stage_ms = n_ms;
    so.result->stage_ms = w->stage_ms;
    post(w, DEST_COORD, rid, &out, so.logits, so.logits_len, so.logits ? 1 : 0);
}

/* ---- state moves ---- */

static void on_state_export(worker_t *w, const Baton__Envelope *env) {
    const Baton__StateExport *x = env->state_export;
    bt_err e = {0};
    if (!w->stage || (int)x->lo != w->si.lo || (int)x->hi != w->si.hi) {
        char msg[200];
        snprintf(msg, sizeof msg, "state_export [%u, %u): this stage has [%d, %d)", x->lo, x->hi,
                 w->si.lo, w->si.hi);
        post_error(w, env->request_id, BT_ESHAPE, msg);
        return;
    }
    void *buf = NULL;
    size_t len = 0;
    uint32_t n_pos = 0;
    int rc = stage_export(w->stage, x->seq_id, &buf, &len, &n_pos, &e);
    if (rc) {
        post_error(w, env->request_id, rc, bt_errmsg(&e, rc));
        return;
    }
    Baton__Envelope out;
    Baton__StateImport si;
    Baton__ModelId mid;
    uint64_t fb = len;
    msg_init(&out, env->request_id);
    baton__state_import__init(&si);
    baton__model_id__init(&mid);
    mid.name = w->loaded.name;
    mid.size = w->loaded.size;
    mid.header_xxh3 = w->loaded.header_xxh3;
    si.seq_id = x->seq_id;
    si.lo = x->lo;
    si.hi = x->hi;
    si.n_pos = n_pos;
    si.n_frame_bytes = 1;
    si.frame_bytes = &fb;
    si.xxh3 = XXH3_64bits(buf, len);
    si.model = &mid;
    out.body_case = BATON__ENVELOPE__BODY_STATE_IMPORT;
    out.state_import = &si;
    post(w, DEST_COORD, env->request_id, &out, buf, len, 1);
    free(buf);
}

static void on_state_import(worker_t *w, const Baton__Envelope *env, const struct tx_msg *m) {
    const Baton__StateImport *x = env->state_import;
    bt_err e = {0};
    int rc = 0;
    if (!w->stage || (int)x->lo != w->si.lo || (int)x->hi != w->si.hi)
        rc = bt_fail(&e, BT_ESHAPE, "state_import [%u, %u): this stage has [%d, %d)", x->lo, x->hi,
                     w->si.lo, w->si.hi);
    else if (x->model && x->model->size &&
             (x->model->size != w->loaded.size || x->model->header_xxh3 != w->loaded.header_xxh3))
        rc = bt_fail(&e, BT_ESHAPE, "state_import: state of model %s, this stage runs %s",
                     x->model->name, w->loaded.name);
    else if (x->n_frame_bytes != 1)
        rc = bt_fail(&e, BT_EUNSUPPORTED, "state_import: %zu frames (the worker writes one)",
                     x->n_frame_bytes);
    else if (XXH3_64bits(m->data[1], m->len[1]) != x->xxh3)
        rc = bt_fail(&e, BT_ECHECKSUM, "state_import: seq %llu frames do not match xxh3",
                     (unsigned long long)x->seq_id);
    else
        rc = stage_import(w->stage, x->seq_id, m->data[1], m->len[1], &e);
    if (rc) {
        post_error(w, env->request_id, rc, bt_errmsg(&e, rc));
        return;
    }
    Baton__Envelope out;
    Baton__StateImport ack;
    msg_init(&out, env->request_id);
    baton__state_import__init(&ack);
    ack.seq_id = x->seq_id;
    ack.lo = x->lo;
    ack.hi = x->hi;
    ack.n_pos = x->n_pos;
    out.body_case = BATON__ENVELOPE__BODY_STATE_IMPORT;
    out.state_import = &ack;
    post(w, DEST_COORD, env->request_id, &out, NULL, 0, 0);
}

/* ---- the compute thread ---- */

static void run_job(worker_t *w, struct wbuf *b) {
    struct tx_msg m;
    m.peer[0] = 0;
    m.n_frames = b->n_frames;
    size_t at = 0;
    for (int i = 0; i < b->n_frames; i++) {
        m.data[i] = b->buf + at;
        m.len[i] = b->len[i];
        at += b->len[i];
    }
    Baton__Envelope *env = NULL;
    uint64_t rid = 0;
    bt_err e = {0};
    msg_arena_reset(&w->carena);
    /* The comms thread validated these bytes already; a failure here is an arena overflow. */
    int rc = msg_unpack(m.data[0], m.len[0], &w->carena.alloc, &env, &rid, &e);
    if (rc) {
        post_error(w, rid, rc, bt_errmsg(&e, rc));
        return;
    }
    switch (env->body_case) {
    case BATON__ENVELOPE__BODY_FORWARD:
        compute_forward(w, env, &m);
        break;
    case BATON__ENVELOPE__BODY_STATE_EXPORT:
        on_state_export(w, env);
        break;
    case BATON__ENVELOPE__BODY_STATE_IMPORT:
        on_state_import(w, env, &m);
        break;
    case BATON__ENVELOPE__BODY_CANCEL:
        if (w->stage) stage_cancel(w->stage, env->cancel->seq_id, env->cancel->n_seq_id);
        break;
    default:
        break;
    }
    if (w->stage) atomic_store(&w->active_pub, stage_active(w->stage));
    msg_free(env, &w->carena.alloc);
}

static void *compute_main(void *arg) {
    worker_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->quit && !w->in_head)
            pthread_cond_wait(&w->cv_job, &w->mu);
        if (w->quit) break;
        struct wbuf *b = w->in_head;
        w->in_head = b->next;
        if (!w->in_head) w->in_tail = NULL;
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);
        run_job(w, b);
        pthread_mutex_lock(&w->mu);
        wbuf_put_locked(w, b);
        w->busy = 0;
        pthread_cond_broadcast(&w->cv_idle);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- dispatch ---- */

/* Unpacks into the arena (so the previous message unpacked here dies: the serving path
 * handles one message at a time; the model fetch loop, nested inside a LoadLayers, uses
 * malloc instead). Free with msg_free(env, &w->arena.alloc) (a no-op). */
static int unpack(worker_t *w, transport_t *t, const struct tx_msg *m, Baton__Envelope **env) {
    bt_err e = {0};
    uint64_t rid = 0;
    msg_arena_reset(&w->arena);
    int rc = msg_unpack(m->data[0], m->len[0], &w->arena.alloc, env, &rid, &e);
    if (!rc && (rc = msg_check_payload(*env, (size_t)m->n_frames - 1, m->len + 1, &e))) {
        rid = (*env)->request_id;
        *env = NULL;
    }
    if (rc) {
        BT_LOG(WARN, "worker", "bad message from %s: %s", *m->peer ? m->peer : "coordinator",
               bt_errmsg(&e, rc));
        send_error(w, t, m->peer, rid, rc, bt_errmsg(&e, rc));
    }
    return rc;
}

static void reset_to_connecting(worker_t *w, const char *why) {
    drop_stage(w);
    w->welcomed = 0;
    w->draining = 0;
    w->lost_since_ns = 0;
    set_state(w, BATON__WORKER_STATE__WS_CONNECTING, why);
    w->hello_due = 1;
    w->hello_mark_ns = bt_now_ns();
}

/* The coordinator answers again after a loss. Not yet welcomed: Hello now. Welcomed: Hello
 * again too, since a restarted coordinator does not know us (one that does answers
 * Error "protocol" for the duplicate, which is only logged). */
static void coord_regained(worker_t *w) {
    BT_LOG(INFO, "worker", "coordinator back after %.1f s",
           (double)(bt_now_ns() - w->lost_since_ns) * 1e-9);
    int after_load = w->load_end_ns && w->lost_since_ns >= w->load_end_ns &&
                     w->lost_since_ns - w->load_end_ns < 2000000000LL;
    w->lost_since_ns = 0;
    if (!w->welcomed) {
        w->hello_due = 1;
        w->hello_mark_ns = 0;
    } else if (after_load) {
        /* Reported right after a weight load held this thread: the coordinator's pings only
         * waited unread. A Hello now would be taken as a restart of this worker. */
        BT_LOG(INFO, "worker", "coordinator was only unread during the load: no new Hello");
    } else {
        send_hello(w);
    }
}

static void on_coord(worker_t *w, const struct tx_msg *m) {
    Baton__Envelope *env = NULL;
    if (unpack(w, w->coord, m, &env)) return;
    switch (env->body_case) {
    case BATON__ENVELOPE__BODY_WELCOME: {
        const Baton__Welcome *wl = env->welcome;
        if (wl->protocol_version != MSG_PROTOCOL_VERSION) {
            send_error(w, w->coord, NULL, env->request_id, BT_EVERSION, "protocol version");
            break;
        }
        w->welcomed = 1;
        w->hb_ms = wl->heartbeat_ms ? (int)wl->heartbeat_ms : 1000;
        w->liveness = wl->heartbeat_liveness ? (int)wl->heartbeat_liveness : 3;
        BT_LOG(INFO, "worker", "welcomed by %s heartbeat_ms=%d liveness=%d",
               wl->coordinator_id && *wl->coordinator_id ? wl->coordinator_id : "coordinator",
               w->hb_ms, w->liveness);
        break;
    }
    case BATON__ENVELOPE__BODY_PLAN:
        BT_LOG(INFO, "worker", "plan %llu: %zu stages", (unsigned long long)env->plan->plan_id,
               env->plan->n_stages);
        break;
    case BATON__ENVELOPE__BODY_LOAD_LAYERS:
        on_load(w, env);
        break;
    case BATON__ENVELOPE__BODY_FORWARD:
        on_forward(w, env, m, 1);
        break;
    case BATON__ENVELOPE__BODY_STATE_EXPORT:
    case BATON__ENVELOPE__BODY_STATE_IMPORT:
    case BATON__ENVELOPE__BODY_CANCEL:
        /* They touch the stage: the compute thread runs them in order with the Forwards. */
        if (enqueue_job(w, m, 1))
            send_error(w, w->coord, NULL, env->request_id, -ENOMEM, "out of memory queueing it");
        break;
    case BATON__ENVELOPE__BODY_HEARTBEAT:
        send_heartbeat(w, env->request_id);
        break;
    case BATON__ENVELOPE__BODY_DRAIN:
        w->draining = 1;
        w->drain_reported = 0;
        w->drain_req = env->request_id;
        w->drain_deadline_ns =
            env->drain->deadline_ms ? bt_now_ns() + (int64_t)env->drain->deadline_ms * 1000000 : 0;
        set_state(w, BATON__WORKER_STATE__WS_DRAINING, "drain");
        break;
    case BATON__ENVELOPE__BODY_SHUTDOWN:
        BT_LOG(INFO, "worker", "shutdown: %s", env->shutdown->reason ? env->shutdown->reason : "");
        w->stop = 1;
        break;
    case BATON__ENVELOPE__BODY_ERROR:
        BT_LOG(WARN, "worker", "coordinator error (request %llu) %s: %s",
               (unsigned long long)env->error->request_id, env->error->code, env->error->message);
        break;
    case BATON__ENVELOPE__BODY_MODEL_CHUNK:
        BT_LOG(DEBUG, "worker", "late model chunk %llu ignored",
               (unsigned long long)env->request_id);
        break;
    default: {
        char msg[100];
        snprintf(msg, sizeof msg, "unexpected %s from the coordinator",
                 msg_body_name(env->body_case));
        send_error(w, w->coord, NULL, env->request_id, BT_EPROTO, msg);
    }
    }
    msg_free(env, &w->arena.alloc);
}

static void on_data(worker_t *w, const struct tx_msg *m) {
    Baton__Envelope *env = NULL;
    if (unpack(w, w->data, m, &env)) return;
    if (env->body_case == BATON__ENVELOPE__BODY_FORWARD) {
        on_forward(w, env, m, 0);
    } else {
        char msg[100];
        snprintf(msg, sizeof msg, "unexpected %s on the data endpoint",
                 msg_body_name(env->body_case));
        send_error(w, w->data, m->peer, env->request_id, BT_EPROTO, msg);
    }
    msg_free(env, &w->arena.alloc);
}

static void on_next(const struct tx_msg *m) {
    Baton__Envelope *env = NULL;
    bt_err e = {0};
    int rc = msg_unpack(m->data[0], m->len[0], NULL, &env, NULL, &e);
    if (rc)
        BT_LOG(WARN, "worker", "bad message from the next stage: %s", bt_errmsg(&e, rc));
    else if (env->body_case == BATON__ENVELOPE__BODY_ERROR)
        BT_LOG(WARN, "worker", "next stage error %s: %s", env->error->code, env->error->message);
    else
        BT_LOG(WARN, "worker", "unexpected %s from the next stage", msg_body_name(env->body_case));
    msg_free(env, NULL);
}

/* Receives everything pending on t. */
static void drain_transport(worker_t *w, transport_t *t, int which) {
    for (int k = 0; k < 64 && !w->stop; k++) {
        struct tx_msg m;
        bt_err e = {0};
        int rc = transport_recv(t, 0, &m, &e);
        if (rc == BT_ETIMEDOUT || rc == -EINTR) return;
        if (rc == BT_EPEERLOST) {
            if (which == 0) {
                if (!w->lost_since_ns) {
                    BT_LOG(WARN, "worker", "coordinator lost: reconnecting");
                    w->lost_since_ns = bt_now_ns();
                }
                if (!w->welcomed) {
                    w->hello_due = 1;
                    w->hello_mark_ns = bt_now_ns();
                }
            } else {
                BT_LOG(WARN, "worker", "%s stage %s lost", which == 1 ? "previous" : "next",
                       m.peer);
            }
            continue;
        }
        if (rc == BT_EPROTO) {
            send_error(w, t, m.peer, 0, BT_EPROTO, "too many frames");
            continue;
        }
        if (rc) {
            BT_LOG(WARN, "worker", "recv: %s", bt_errmsg(&e, rc));
            return;
        }
        if (which == 0) {
            if (w->lost_since_ns) coord_regained(w);
            on_coord(w, &m);
        } else if (which == 1) {
            on_data(w, &m);
        } else {
            on_next(&m);
        }
    }
}

static void check_drain(worker_t *w) {
    if (!w->draining || w->drain_reported) return;
    int active = w->stage ? atomic_load(&w->active_pub) : 0;
    /* The coordinator reuses slots without Cancel, so a finished sequence still holds its
     * slot: a pipeline with no Forward for DRAIN_IDLE_NS counts as finished. */
    if (active && bt_now_ns() - w->last_forward_ns > DRAIN_IDLE_NS) active = 0;
    if (active && w->drain_deadline_ns && bt_now_ns() > w->drain_deadline_ns) {
        BT_LOG(WARN, "worker", "drain deadline: dropping %d sequences", active);
        quiesce(w, 1);
        stage_cancel_all(w->stage);
        atomic_store(&w->active_pub, 0);
        active = 0;
    }
    if (!active) {
        send_heartbeat(w, w->drain_req);
        w->drain_reported = 1;
        BT_LOG(INFO, "worker", "drained");
    }
}

/* The first turn: this thread owns every transport from now on. */
static void comms_start(worker_t *w) {
    w->comms_tid = pthread_self();
    w->comms_started = 1;
    set_state(w, BATON__WORKER_STATE__WS_CONNECTING, "start");
    w->hello_due = 1;
    w->hello_mark_ns = bt_now_ns(); /* wait for the coordinator's first ping */
}

void worker_turn(worker_t *w, int timeout_ms) {
    if (!w->comms_started) comms_start(w);
    int64_t lost_ns = (int64_t)(w->o.lost_secs > 0 ? w->o.lost_secs : 30) * 1000000000;
    transport_t *ts[3] = {w->coord, w->data, w->next};
    int n = w->next ? 3 : 2;
    unsigned next_gen = w->next_gen;
    uint64_t ready = 0;
    bt_err pe = {0};
    int rc = transport_poll(ts, n, timeout_ms, &ready, &pe);
    if (rc && rc != -EINTR) BT_LOG(WARN, "worker", "poll: %s", bt_errmsg(&pe, rc));
    for (int i = 0; i < n && !w->stop; i++) {
        /* A Load drained from the coordinator above closes the next-stage link (and may open
         * another): ts[2] then points at freed memory, and the new link waits for the next
         * turn (tests/test_worker.c, worker::reload_with_mail_from_the_next_stage). */
        if (i == 2 && w->next_gen != next_gen) break;
        if (ready & (1ull << i)) drain_transport(w, ts[i], i);
    }
    flush_outbox(w);
    int64_t now = bt_now_ns();
    if (w->lost_since_ns && coord_seen_since(w, w->lost_since_ns)) coord_regained(w);
    if (w->hello_due && coord_seen_since(w, w->hello_mark_ns)) {
        w->hello_due = 0;
        send_hello(w);
    }
    if (w->welcomed && !w->lost_since_ns && now - w->last_hb_ns > (int64_t)w->hb_ms * 1000000)
        send_heartbeat(w, 0);
    if (w->lost_since_ns && now - w->lost_since_ns > lost_ns)
        reset_to_connecting(w, "coordinator lost");
    check_drain(w);
}

int worker_run(worker_t *w, bt_err *e) {
    (void)e;
    while (!w->stop)
        worker_turn(w, 200);
    BT_LOG(INFO, "worker", "stopping (state %s)", state_name(w->state));
    return 0;
}

int worker_open(worker_t **out, const struct worker_opts *o, bt_err *e) {
    *out = NULL;
    worker_t *w = calloc(1, sizeof *w);
    if (!w) return bt_fail(e, -ENOMEM, "worker");
    w->o = *o;
    w->hb_ms = 1000;
    w->liveness = 3;
    w->state = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_job, NULL);
    pthread_cond_init(&w->cv_idle, NULL);
    snprintf(w->id, sizeof w->id, "%s", o->id && *o->id ? o->id : "worker");
    int rc = 0;
    if (!(w->arena_buf = malloc(ARENA_BYTES))) {
        rc = bt_fail(e, -ENOMEM, "worker: message arena of %zu bytes", ARENA_BYTES);
        goto fail;
    }
    msg_arena_init(&w->arena, w->arena_buf, ARENA_BYTES);
    if (!(w->carena_buf = malloc(ARENA_BYTES))) {
        rc = bt_fail(e, -ENOMEM, "worker: compute arena of %zu bytes", ARENA_BYTES);
        goto fail;
    }
    msg_arena_init(&w->carena, w->carena_buf, ARENA_BYTES);
    if ((rc = -pthread_create(&w->compute_tid, NULL, compute_main, w))) {
        bt_fail(e, rc, "worker: compute thread: %s", strerror(-rc));
        goto fail;
    }
    w->compute_started = 1;
    if (o->model_path) {
        if ((rc = caps_model_ident(&w->local, o->model_path, e))) goto fail;
        w->has_model = 1;
        BT_LOG(INFO, "worker", "model %s size=%llu xxh3=%016llx", o->model_path,
               (unsigned long long)w->local.size, (unsigned long long)w->local.header_xxh3);
    }
    struct transport_opts co = {.kind = o->kind,
                                .role = TRANSPORT_CLIENT,
                                .endpoint = o->join,
                                .identity = w->id,
                                .heartbeat_ms = o->heartbeat_ms};
    struct transport_opts dopt = {.kind = o->kind,
                                  .role = TRANSPORT_SERVER,
                                  .endpoint = o->bind,
                                  .identity = w->id,
                                  .heartbeat_ms = o->heartbeat_ms};
    if ((rc = transport_open(&w->data, &dopt, e)) || (rc = transport_open(&w->coord, &co, e)))
        goto fail;
    snprintf(w->data_ep, sizeof w->data_ep, "%s",
             o->kind == TRANSPORT_INPROC ? o->bind : transport_endpoint(w->data));
    BT_LOG(INFO, "worker", "id=%s join=%s data=%s", w->id, o->join, w->data_ep);
    *out = w;
    return 0;
fail:
    worker_close(w);
    return rc;
}

void worker_close(worker_t *w) {
    if (!w) return;
    drop_stage(w);
    if (w->compute_started) {
        pthread_mutex_lock(&w->mu);
        w->quit = 1;
        pthread_cond_signal(&w->cv_job);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->compute_tid, NULL);
    }
    wbuf_free_list(w->in_head);
    wbuf_free_list(w->out_head);
    wbuf_free_list(w->free_bufs);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv_job);
    pthread_cond_destroy(&w->cv_idle);
    free(w->carena_buf);
    transport_close(w->coord);
    transport_close(w->data);
    free(w->arena_buf);
    free(w);
}
