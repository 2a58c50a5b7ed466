/* coordinator/exec_pipeline.c: see exec_pipeline.h. */
#include "coordinator/exec_pipeline.h"

#include "common/clock.h"
#include "common/log.h"
#include "proto/wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum bstate { B_FREE, B_QUEUED, B_SENT, B_DONE };

struct bitem {
    uint64_t seq_id;
    int slot, sample, pos;
};

/* Re-prefill batches sent while resuming carry ids in their own space, so their Results
 * (no sampled rows) are recognised and swallowed. */
#define REPLAY_ID_BIT (1ull << 63)

struct batch {
    enum bstate state;
    uint64_t batch_id;
    int n, n_sample, n_tokens;
    struct bitem *it;        /* [n_slots] */
    struct exec_result *res; /* [n_slots] */
    int n_res;
    int status;
    char msg[160];
    uint8_t *packed; /* the Forward; kept after sending, for a resend after a recovery */
    size_t packed_len, packed_cap;
    int64_t sent_ns;
    double stage_s[EXEC_MAX_STAGES];
};

struct exec_pipe {
    struct exec base; /* first */
    struct exec_pipeline_opts o;
    char ids[EXEC_MAX_STAGES][TX_PEER_MAX + 1];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct batch *b; /* ring of depth */
    int head, count;
    int broken, broken_code;
    char broken_msg[160];
    int down; /* suspended: a stage was lost; batches wait for exec_pipeline_resume */
    /* Every live sequence's known tokens (prompt + fed samples) per slot, for re-prefill. */
    int32_t **hist;
    int *hist_n, *hist_cap;
    uint64_t next_replay;
    uint8_t *rp_buf; /* packed re-prefill Forward scratch */
    size_t rp_cap;
    struct exec_sampling *sp; /* [n_slots]: the latest params of each slot */
    /* [n_slots]: samples the last stage drew for the slot's sequence (Results received); a
     * re-prefill asks the new last stage to skip them (SamplingParams.rng_skip). */
    uint64_t *n_drawn;
    struct exec_result *out_res; /* [n_slots]: what the last exec_poll returned */
    /* Wire scratch for building a Forward (sized once). */
    uint64_t *w_seq;
    uint32_t *w_pos, *w_ntok, *w_tok;
    protobuf_c_boolean *w_sample;
    Baton__SamplingParams *w_sp;
    Baton__SamplingParams **w_spp;
    /* Timing summary, logged every few seconds. */
    int64_t stat_t0;
    uint64_t stat_batches, stat_tokens;
    double stat_rtt_s, stat_stage_s[EXEC_MAX_STAGES];
    int stat_n_stage;
};

static void fail_locked(struct exec_pipe *x, int code, const char *msg) {
    if (!x->broken) {
        x->broken = 1;
        x->broken_code = code;
        snprintf(x->broken_msg, sizeof x->broken_msg, "%s", msg);
    }
    for (int k = 0; k < x->count; k++) {
        struct batch *b = &x->b[(x->head + k) % x->o.depth];
        if (b->state == B_DONE) continue;
        b->state = B_DONE;
        b->status = code;
        b->n_res = 0;
        snprintf(b->msg, sizeof b->msg, "%s", msg);
    }
    pthread_cond_broadcast(&x->cv);
}

void exec_pipeline_fail(exec_t *ex, int code, const char *msg) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    pthread_mutex_lock(&x->mu);
    fail_locked(x, code, msg);
    pthread_mutex_unlock(&x->mu);
}

int exec_pipeline_has_stage(const exec_t *ex, const char *peer) {
    const struct exec_pipe *x = (const struct exec_pipe *)ex;
    for (int s = 0; s < x->o.n_stages; s++)
        if (!strcmp(x->ids[s], peer)) return 1;
    return 0;
}

static void fill_sampling(Baton__SamplingParams *p, const struct exec_sampling *s) {
    baton__sampling_params__init(p);
    p->temperature = s->temperature;
    p->top_p = s->top_p;
    p->top_k = s->top_k > 0 ? (uint32_t)s->top_k : 0;
    p->min_p = s->min_p;
    p->repetition_penalty = s->repetition_penalty;
    p->presence_penalty = s->presence_penalty;
    p->frequency_penalty = s->frequency_penalty;
    p->seed = s->seed;
    p->want_logprob = s->want_logprob ? 1 : 0;
    p->logprobs = s->want_logprob && s->n_top > 0 ? (uint32_t)s->n_top : 0;
}

/* Packs env into *buf (grown to fit, then reused: no allocation per batch once warm). */
static int pack_reuse(const Baton__Envelope *env, uint8_t **buf, size_t *cap, size_t *len,
                      bt_err *e) {
    size_t need = baton__envelope__get_packed_size(env);
    if (need > *cap) {
        size_t nc = *cap ? *cap : 1024;
        while (nc < need)
            nc *= 2;
        uint8_t *nb = realloc(*buf, nc);
        if (!nb) return bt_fail(e, -ENOMEM, "exec_pipeline: %zu bytes for a Forward", need);
        *buf = nb;
        *cap = nc;
    }
    return msg_pack_into(env, *buf, *cap, len, e);
}

/* Appends an item's tokens to its slot's history (pos 0 starts it afresh). */
static int hist_record(struct exec_pipe *x, const struct exec_seq_item *it, bt_err *e) {
    int s = it->slot, need = it->pos + it->n_tokens;
    if (it->pos > x->hist_n[s])
        return bt_fail(e, BT_EINVAL, "exec_pipeline: slot %d at pos %d skips past %d known tokens",
                       s, it->pos, x->hist_n[s]);
    if (need > x->hist_cap[s]) {
        int nc = x->hist_cap[s] ? x->hist_cap[s] : 256;
        while (nc < need)
            nc = nc > x->o.max_ctx / 2 ? x->o.max_ctx : nc * 2;
        int32_t *nh = realloc(x->hist[s], (size_t)nc * sizeof *nh);
        if (!nh) return bt_fail(e, -ENOMEM, "exec_pipeline: history of slot %d (%d tokens)", s, nc);
        x->hist[s] = nh;
        x->hist_cap[s] = nc;
    }
    memcpy(x->hist[s] + it->pos, it->tokens, (size_t)it->n_tokens * sizeof(int32_t));
    x->hist_n[s] = need;
    return 0;
}

static int pipe_submit(exec_t *ex, uint64_t batch_id, const struct exec_seq_item *items, int n,
                       bt_err *e) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    const struct exec_caps *c = &ex->caps;
    if (n < 1 || n > c->n_slots)
        return bt_fail(e, BT_EINVAL, "exec_pipeline: batch of %d items (slots %d)", n, c->n_slots);
    int total = 0, fresh = 0;
    for (int i = 0; i < n; i++) {
        const struct exec_seq_item *it = &items[i];
        if (it->slot < 0 || it->slot >= c->n_slots || it->n_tokens < 1 || it->pos < 0 ||
            it->pos + it->n_tokens > c->max_ctx)
            return bt_fail(e, BT_EINVAL, "exec_pipeline: item %d slot=%d pos=%d n_tokens=%d", i,
                           it->slot, it->pos, it->n_tokens);
        if ((it->pos == 0) != (it->sp != NULL))
            return bt_fail(e, BT_EINVAL, "exec_pipeline: item %d: sampling params iff pos 0", i);
        total += it->n_tokens;
        fresh |= it->pos == 0;
    }
    if (total > c->max_batch)
        return bt_fail(e, BT_ECAPACITY, "exec_pipeline: %d tokens > batch limit %d", total,
                       c->max_batch);
    pthread_mutex_lock(&x->mu);
    int rc = 0;
    if (x->broken) {
        rc = bt_fail(e, x->broken_code, "pipeline down: %s", x->broken_msg);
        goto out;
    }
    if (x->count >= x->o.depth) {
        rc = bt_fail(e, BT_ECAPACITY, "exec_pipeline: %d batches in flight", x->count);
        goto out;
    }
    for (int i = 0; i < n; i++) /* first, so a failure changes nothing */
        if ((rc = hist_record(x, &items[i], e))) goto out;
    struct batch *b = &x->b[(x->head + x->count) % x->o.depth];
    int at = 0;
    for (int i = 0; i < n; i++) {
        const struct exec_seq_item *it = &items[i];
        if (it->sp) x->sp[it->slot] = *it->sp;
        if (it->pos == 0) x->n_drawn[it->slot] = 0;
        b->it[i] = (struct bitem){
            .seq_id = it->seq_id, .slot = it->slot, .sample = it->sample, .pos = it->pos};
        x->w_seq[i] = (uint64_t)it->slot; /* wire seq_id = slot (proto MESSAGE FLOW) */
        x->w_pos[i] = (uint32_t)it->pos;
        x->w_ntok[i] = (uint32_t)it->n_tokens;
        x->w_sample[i] = it->sample ? 1 : 0;
        for (int k = 0; k < it->n_tokens; k++)
            x->w_tok[at + k] = (uint32_t)it->tokens[k];
        at += it->n_tokens;
        if (fresh) {
            fill_sampling(&x->w_sp[i], &x->sp[it->slot]);
            x->w_spp[i] = &x->w_sp[i];
        }
    }
    Baton__Forward f;
    baton__forward__init(&f);
    f.batch_id = batch_id;
    f.n_seq_id = f.n_pos = f.n_n_tokens = f.n_sample = (size_t)n;
    f.seq_id = x->w_seq;
    f.pos = x->w_pos;
    f.n_tokens = x->w_ntok;
    f.sample = x->w_sample;
    f.wire_dtype = (Baton__WireDtype)x->o.wire_dtype;
    f.hidden = 0;
    f.n_token_ids = (size_t)total;
    f.token_ids = x->w_tok;
    f.n_sampling = fresh ? (size_t)n : 0;
    f.sampling = fresh ? x->w_spp : NULL;
    f.stage_index = 0;
    f.plan_id = x->o.plan_id;
    Baton__Envelope env;
    msg_init(&env, batch_id);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    if ((rc = pack_reuse(&env, &b->packed, &b->packed_cap, &b->packed_len, e))) goto out;
    b->state = B_QUEUED;
    b->batch_id = batch_id;
    b->n = n;
    b->n_tokens = total;
    b->n_sample = 0;
    for (int i = 0; i < n; i++)
        b->n_sample += items[i].sample != 0;
    b->n_res = 0;
    b->status = 0;
    b->msg[0] = 0;
    memset(b->stage_s, 0, sizeof b->stage_s);
    x->count++;
out:
    pthread_mutex_unlock(&x->mu);
    if (!rc && x->o.wake) x->o.wake(x->o.wake_ctx);
    return rc;
}

int exec_pipeline_flush(exec_t *ex, transport_t *t, bt_err *e) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    int rc = 0;
    pthread_mutex_lock(&x->mu);
    for (int k = 0; k < x->count && !rc && !x->down; k++) {
        struct batch *b = &x->b[(x->head + k) % x->o.depth];
        if (b->state != B_QUEUED) continue;
        /* Copied by the transport: the bytes stay here for a resend after a recovery. */
        struct tx_frame f = {.data = b->packed, .len = b->packed_len};
        b->state = B_SENT;
        b->sent_ns = bt_now_ns();
        rc = transport_send(t, x->ids[0], &f, 1, e);
        if (rc == BT_EPEERLOST) {
            /* Stage 0 went away before liveness noticed: the caller starts a recovery, which
             * resends this batch (still queued, its bytes kept) on the new pipeline. */
            b->state = B_QUEUED;
            break;
        }
        if (rc) {
            char m[160];
            snprintf(m, sizeof m, "send to stage 0 (%.50s): %.80s", x->ids[0], bt_errmsg(e, rc));
            BT_LOG(ERROR, "pipeline", "%s", m);
            fail_locked(x, rc == BT_ETIMEDOUT ? BT_ETIMEDOUT : BT_EPEERLOST, m);
        }
    }
    pthread_mutex_unlock(&x->mu);
    return rc;
}

/* Error code words from proto back to codes, for the scheduler's messages. */
static int code_of_word(const char *w) {
    if (!w) return BT_EPROTO;
    if (!strcmp(w, "capacity")) return BT_ECAPACITY;
    if (!strcmp(w, "shape")) return BT_ESHAPE;
    if (!strcmp(w, "version")) return BT_EVERSION;
    return BT_EPROTO;
}

static void log_stats_locked(struct exec_pipe *x, int64_t now) {
    if (x->stat_batches == 0 || now - x->stat_t0 < 5000000000LL) return;
    char st[256] = "";
    size_t at = 0;
    for (int s = 0; s < x->stat_n_stage && at < sizeof st; s++) {
        int n = snprintf(st + at, sizeof st - at, "%s%.2f", s ? "," : "",
                         x->stat_stage_s[s] * 1e3 / (double)x->stat_batches);
        if (n > 0) at += (size_t)n;
    }
    BT_LOG(INFO, "pipeline",
           "batches=%llu tokens=%llu avg_batch_ms=%.2f stage_ms=[%s] (per forward, per stage)",
           (unsigned long long)x->stat_batches, (unsigned long long)x->stat_tokens,
           x->stat_rtt_s * 1e3 / (double)x->stat_batches, st);
    x->stat_t0 = now;
    x->stat_batches = x->stat_tokens = 0;
    x->stat_rtt_s = 0;
    memset(x->stat_stage_s, 0, sizeof x->stat_stage_s);
}

int exec_pipeline_deliver(exec_t *ex, const char *peer, const Baton__Envelope *env, bt_err *e) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    bt_err local = {0};
    if (!e) e = &local;
    uint64_t id =
        env->body_case == BATON__ENVELOPE__BODY_RESULT ? env->result->batch_id : env->request_id;
    pthread_mutex_lock(&x->mu);
    struct batch *b = NULL;
    int rc = 1;
    if (id & REPLAY_ID_BIT) {
        /* A re-prefill: its Result has no rows; an Error means the resumed state is wrong. */
        if (env->body_case == BATON__ENVELOPE__BODY_ERROR) {
            char m[160];
            snprintf(m, sizeof m, "re-prefill after recovery failed on %.40s: %.80s", peer,
                     env->error->message ? env->error->message : "");
            BT_LOG(ERROR, "pipeline", "%s", m);
            fail_locked(x, BT_EPEERLOST, m);
        }
        goto out;
    }
    if (env->body_case == BATON__ENVELOPE__BODY_RESULT && strcmp(peer, x->ids[x->o.n_stages - 1])) {
        /* A late Result of a pipeline replaced by a recovery: the batch was resent. */
        rc = 0;
        goto out;
    }
    for (int k = 0; k < x->count; k++) {
        struct batch *c = &x->b[(x->head + k) % x->o.depth];
        if (c->state == B_SENT && c->batch_id == id) {
            b = c;
            break;
        }
    }
    if (!b) {
        rc = 0;
        goto out;
    }
    int64_t now = bt_now_ns();
    if (env->body_case == BATON__ENVELOPE__BODY_ERROR) {
        const Baton__Error *er = env->error;
        b->status = code_of_word(er->code);
        snprintf(b->msg, sizeof b->msg, "stage %s: %s: %s", peer, er->code ? er->code : "?",
                 er->message ? er->message : "");
        b->state = B_DONE;
        BT_LOG(WARN, "pipeline", "batch=%llu failed: %s", (unsigned long long)id, b->msg);
        goto out;
    }
    if (env->body_case != BATON__ENVELOPE__BODY_RESULT) {
        rc = 0;
        goto out;
    }
    const Baton__Result *r = env->result;
    if (strcmp(peer, x->ids[x->o.n_stages - 1])) {
        rc = bt_fail(e, BT_EPROTO, "Result for batch %llu from %s, not the last stage %s",
                     (unsigned long long)id, peer, x->ids[x->o.n_stages - 1]);
        goto bad;
    }
    if ((int)r->n_seqs != b->n_sample) {
        rc = bt_fail(e, BT_EPROTO, "Result for batch %llu has %zu sequences, %d sampled",
                     (unsigned long long)id, r->n_seqs, b->n_sample);
        goto bad;
    }
    b->n_res = 0;
    for (size_t j = 0; j < r->n_seqs; j++) {
        const Baton__SeqResult *sr = r->seqs[j];
        int i;
        for (i = 0; i < b->n; i++)
            if (b->it[i].sample && (uint64_t)b->it[i].slot == sr->seq_id) break;
        if (i == b->n || sr->token >= (uint32_t)x->base.caps.n_vocab) {
            rc = bt_fail(e, BT_EPROTO, "Result for batch %llu: seq %llu token %u not expected",
                         (unsigned long long)id, (unsigned long long)sr->seq_id, sr->token);
            goto bad;
        }
        x->n_drawn[b->it[i].slot]++;
        struct exec_result *o = &b->res[b->n_res++];
        memset(o, 0, sizeof *o);
        o->seq_id = b->it[i].seq_id;
        o->token = (int32_t)sr->token;
        o->logprob = sr->has_logprob ? sr->logprob : 0.0f;
        o->n_top = sr->n_top < EXEC_MAX_TOP ? (int)sr->n_top : EXEC_MAX_TOP;
        for (int k = 0; k < o->n_top; k++) {
            o->top_ids[k] = (int32_t)sr->top[k]->token;
            o->top_logprobs[k] = sr->top[k]->logprob;
        }
    }
    int ns = (int)r->n_stage_ms < EXEC_MAX_STAGES ? (int)r->n_stage_ms : EXEC_MAX_STAGES;
    for (int s = 0; s < ns; s++) {
        b->stage_s[s] = (double)r->stage_ms[s] * 1e-3;
        x->stat_stage_s[s] += b->stage_s[s];
    }
    if (ns > x->stat_n_stage) x->stat_n_stage = ns;
    b->state = B_DONE;
    b->status = 0;
    if (!x->stat_t0) x->stat_t0 = now;
    x->stat_batches++;
    x->stat_tokens += (uint64_t)b->n_tokens;
    x->stat_rtt_s += (double)(now - b->sent_ns) * 1e-9;
    BT_LOG(DEBUG, "pipeline", "batch=%llu tokens=%d ms=%.2f", (unsigned long long)id, b->n_tokens,
           (double)(now - b->sent_ns) * 1e-6);
    log_stats_locked(x, now);
    goto out;
bad:
    b->state = B_DONE;
    b->status = BT_EPROTO;
    b->n_res = 0;
    snprintf(b->msg, sizeof b->msg, "%.159s", e->msg);
out:
    if (b && b->state == B_DONE) pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return rc;
}

static int pipe_poll(exec_t *ex, int timeout_ms, struct exec_done *out, bt_err *e) {
    (void)e;
    struct exec_pipe *x = (struct exec_pipe *)ex;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : bt_now_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&x->mu);
    int rc = 0;
    for (;;) {
        if (x->count == 0) break;
        struct batch *b = &x->b[x->head];
        if (b->state == B_DONE) {
            memset(out, 0, sizeof *out);
            out->batch_id = b->batch_id;
            out->status = b->status;
            snprintf(out->msg, sizeof out->msg, "%s", b->msg);
            out->n_results = b->status < 0 ? 0 : b->n_res;
            memcpy(x->out_res, b->res, (size_t)out->n_results * sizeof *x->out_res);
            out->results = x->out_res;
            for (int s = 0; s < EXEC_MAX_STAGES; s++)
                out->stage_busy_s[s] = b->stage_s[s];
            b->state = B_FREE;
            x->head = (x->head + 1) % x->o.depth;
            x->count--;
            rc = 1;
            break;
        }
        int64_t now = bt_now_ns();
        if (b->state == B_SENT && now - b->sent_ns > (int64_t)x->o.batch_timeout_ms * 1000000) {
            char m[160];
            snprintf(m, sizeof m, "batch %llu: no Result within %d ms",
                     (unsigned long long)b->batch_id, x->o.batch_timeout_ms);
            BT_LOG(ERROR, "pipeline", "%s; failing the pipeline", m);
            fail_locked(x, BT_ETIMEDOUT, m);
            continue;
        }
        if (now >= deadline) break;
        /* Wake at the deadline or within 100 ms to check the batch timeout. */
        int64_t until = deadline < now + 100000000 ? deadline : now + 100000000;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t abs_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (until - now);
        ts.tv_sec = (time_t)(abs_ns / 1000000000);
        ts.tv_nsec = (long)(abs_ns % 1000000000);
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    pthread_mutex_unlock(&x->mu);
    return rc;
}

static void pipe_release(exec_t *ex, int slot) {
    /* Nothing to send: the next sequence in this slot starts at pos 0, which resets the
     * slot on every stage (proto MESSAGE FLOW, "Sequences"). A recovery re-prefills it no
     * more. */
    struct exec_pipe *x = (struct exec_pipe *)ex;
    pthread_mutex_lock(&x->mu);
    if (slot >= 0 && slot < x->o.n_slots) x->hist_n[slot] = 0, x->n_drawn[slot] = 0;
    pthread_mutex_unlock(&x->mu);
}

void exec_pipeline_suspend(exec_t *ex, const char *why) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    pthread_mutex_lock(&x->mu);
    x->down = 1;
    int n = 0;
    for (int k = 0; k < x->count; k++) {
        struct batch *b = &x->b[(x->head + k) % x->o.depth];
        if (b->state == B_SENT) {
            b->state = B_QUEUED; /* its bytes are kept: resent after the re-prefill */
            n++;
        }
    }
    BT_LOG(WARN, "pipeline", "suspended (%s): %d batches to resend, %d queued in all", why, n,
           x->count);
    pthread_mutex_unlock(&x->mu);
}

int exec_pipeline_is_down(const exec_t *ex) {
    struct exec_pipe *x = (struct exec_pipe *)(uintptr_t)ex;
    pthread_mutex_lock(&x->mu);
    int d = x->down;
    pthread_mutex_unlock(&x->mu);
    return d;
}

/* Sends one re-prefill Forward: tokens [pos, pos + n) of slot, no sampling. */
static int send_replay(struct exec_pipe *x, transport_t *t, int slot, int pos, int n, bt_err *e) {
    uint64_t seq = (uint64_t)slot;
    uint32_t upos = (uint32_t)pos, un = (uint32_t)n;
    protobuf_c_boolean no = 0;
    for (int k = 0; k < n; k++)
        x->w_tok[k] = (uint32_t)x->hist[slot][pos + k];
    Baton__SamplingParams sp, *spp = &sp;
    fill_sampling(&sp, &x->sp[slot]);
    sp.rng_skip = x->n_drawn[slot]; /* the new last stage goes on with the stream */
    Baton__Forward f;
    baton__forward__init(&f);
    f.batch_id = REPLAY_ID_BIT | ++x->next_replay;
    f.n_seq_id = f.n_pos = f.n_n_tokens = f.n_sample = 1;
    f.seq_id = &seq;
    f.pos = &upos;
    f.n_tokens = &un;
    f.sample = &no;
    f.wire_dtype = (Baton__WireDtype)x->o.wire_dtype;
    f.n_token_ids = (size_t)n;
    f.token_ids = x->w_tok;
    f.n_sampling = pos == 0 ? 1 : 0; /* a fresh start sets the sampler up again */
    f.sampling = pos == 0 ? &spp : NULL;
    f.plan_id = x->o.plan_id;
    Baton__Envelope env;
    msg_init(&env, f.batch_id);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    size_t len = 0;
    int rc = pack_reuse(&env, &x->rp_buf, &x->rp_cap, &len, e);
    struct tx_frame fr = {.data = x->rp_buf, .len = len};
    if (!rc) rc = transport_send(t, x->ids[0], &fr, 1, e);
    return rc;
}

/* A kept batch goes to the new pipeline: its packed Forward gets the new plan id. */
static int retag(struct batch *b, uint64_t plan_id, bt_err *e) {
    Baton__Envelope *env = baton__envelope__unpack(NULL, b->packed_len, b->packed);
    if (!env || env->body_case != BATON__ENVELOPE__BODY_FORWARD) {
        if (env) baton__envelope__free_unpacked(env, NULL);
        return bt_fail(e, BT_EPROTO, "exec_pipeline: batch %llu: kept Forward does not unpack",
                       (unsigned long long)b->batch_id);
    }
    env->forward->plan_id = plan_id;
    int rc = pack_reuse(env, &b->packed, &b->packed_cap, &b->packed_len, e);
    baton__envelope__free_unpacked(env, NULL);
    return rc;
}

int exec_pipeline_resume(exec_t *ex, transport_t *t, int n_stages, const char *const *stage_ids,
                         uint64_t plan_id, bt_err *e) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    if (n_stages < 1 || n_stages > EXEC_MAX_STAGES)
        return bt_fail(e, BT_EINVAL, "exec_pipeline: resume over %d stages", n_stages);
    pthread_mutex_lock(&x->mu);
    x->o.n_stages = n_stages;
    x->o.plan_id = plan_id;
    x->base.caps.n_stages = n_stages;
    for (int s = 0; s < n_stages; s++) {
        snprintf(x->ids[s], sizeof x->ids[s], "%s", stage_ids[s]);
        x->o.stage_ids[s] = x->ids[s];
    }
    /* Each live slot's state is rebuilt up to the first position an unfinished batch feeds
     * (that batch is resent next); DONE batches already hold their sampled tokens. */
    int rc = 0, n_seqs = 0;
    long n_tok = 0;
    for (int k = 0; k < x->count && !rc; k++) {
        struct batch *b = &x->b[(x->head + k) % x->o.depth];
        if (b->state != B_DONE) rc = retag(b, plan_id, e);
    }
    for (int slot = 0; slot < x->o.n_slots && !rc; slot++) {
        int upto = x->hist_n[slot];
        for (int k = 0; k < x->count; k++) {
            const struct batch *b = &x->b[(x->head + k) % x->o.depth];
            if (b->state == B_DONE) continue;
            for (int i = 0; i < b->n; i++)
                if (b->it[i].slot == slot && b->it[i].pos < upto) upto = b->it[i].pos;
        }
        if (upto <= 0) continue;
        n_seqs++;
        n_tok += upto;
        for (int pos = 0; pos < upto && !rc; pos += x->o.max_batch) {
            int n = upto - pos < x->o.max_batch ? upto - pos : x->o.max_batch;
            rc = send_replay(x, t, slot, pos, n, e);
        }
    }
    if (rc) {
        char m[160];
        snprintf(m, sizeof m, "re-prefill send to stage 0 (%.40s): %.80s", x->ids[0],
                 bt_errmsg(e, rc));
        fail_locked(x, BT_EPEERLOST, m);
    } else {
        x->down = 0;
        x->broken = 0; /* a timeout while down failed the old requests; new ones may run */
        int64_t now = bt_now_ns();
        for (int k = 0; k < x->count; k++)
            x->b[(x->head + k) % x->o.depth].sent_ns = now;
        BT_LOG(INFO, "pipeline", "resumed over %d stages: re-prefilled %d sequences (%ld tokens)",
               n_stages, n_seqs, n_tok);
    }
    pthread_mutex_unlock(&x->mu);
    return rc;
}

static void pipe_close(exec_t *ex) {
    struct exec_pipe *x = (struct exec_pipe *)ex;
    if (!x) return;
    for (int i = 0; x->b && i < x->o.depth; i++) {
        free(x->b[i].it);
        free(x->b[i].res);
        free(x->b[i].packed);
    }
    free(x->b);
    for (int i = 0; x->hist && i < x->o.n_slots; i++)
        free(x->hist[i]);
    free(x->hist);
    free(x->hist_n);
    free(x->hist_cap);
    free(x->rp_buf);
    free(x->sp);
    free(x->n_drawn);
    free(x->out_res);
    free(x->w_seq);
    free(x->w_pos);
    free(x->w_ntok);
    free(x->w_tok);
    free(x->w_sample);
    free(x->w_sp);
    free(x->w_spp);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x);
}

static const struct exec_ops pipe_ops = {
    .submit = pipe_submit, .poll = pipe_poll, .release = pipe_release, .close = pipe_close};

int exec_pipeline_open(exec_t **out, const struct exec_pipeline_opts *o, bt_err *e) {
    *out = NULL;
    if (o->n_stages < 1 || o->n_stages > EXEC_MAX_STAGES || o->n_slots < 1 ||
        o->n_slots > (int)MSG_MAX_SEQS || o->max_ctx < 2 || o->max_batch < 1 ||
        o->max_batch > 2048 || o->n_vocab < 1 || o->wire_dtype < 0 ||
        o->wire_dtype >= WIRE_DTYPE_COUNT)
        return bt_fail(
            e, BT_EINVAL, "exec_pipeline: stages=%d slots=%d ctx=%d batch=%d vocab=%d wire=%d",
            o->n_stages, o->n_slots, o->max_ctx, o->max_batch, o->n_vocab, o->wire_dtype);
    struct exec_pipe *x = calloc(1, sizeof *x);
    if (!x) return bt_fail(e, -ENOMEM, "exec_pipeline: out of memory");
    x->base.ops = &pipe_ops;
    x->o = *o;
    /* One batch per stage keeps every stage busy; more would split the sequences into smaller
     * batches, each a full pass over the weights (the scheduler balances decodes over
     * n_stages batches). The coordinator's round trip between a batch's last and first stage
     * is about 1% of a stage's time (bench_pipeline), too little to need a spare batch. */
    if (x->o.depth <= 0) x->o.depth = o->n_stages;
    if (x->o.depth < o->n_stages) x->o.depth = o->n_stages;
    if (x->o.batch_timeout_ms <= 0) x->o.batch_timeout_ms = 120000;
    for (int s = 0; s < o->n_stages; s++) {
        snprintf(x->ids[s], sizeof x->ids[s], "%s", o->stage_ids[s] ? o->stage_ids[s] : "");
        x->o.stage_ids[s] = x->ids[s];
    }
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    size_t ns = (size_t)o->n_slots;
    x->b = calloc((size_t)x->o.depth, sizeof *x->b);
    x->sp = calloc(ns, sizeof *x->sp);
    x->n_drawn = calloc(ns, sizeof *x->n_drawn);
    x->out_res = calloc(ns, sizeof *x->out_res);
    x->w_seq = calloc(ns, sizeof *x->w_seq);
    x->w_pos = calloc(ns, sizeof *x->w_pos);
    x->w_ntok = calloc(ns, sizeof *x->w_ntok);
    x->w_sample = calloc(ns, sizeof *x->w_sample);
    x->w_sp = calloc(ns, sizeof *x->w_sp);
    x->w_spp = calloc(ns, sizeof *x->w_spp);
    x->w_tok = calloc((size_t)o->max_batch, sizeof *x->w_tok);
    x->hist = calloc(ns, sizeof *x->hist);
    x->hist_n = calloc(ns, sizeof *x->hist_n);
    x->hist_cap = calloc(ns, sizeof *x->hist_cap);
    int ok = x->b && x->sp && x->n_drawn && x->out_res && x->w_seq && x->w_pos && x->w_ntok &&
             x->w_sample && x->w_sp && x->w_spp && x->w_tok && x->hist && x->hist_n && x->hist_cap;
    for (int i = 0; ok && i < x->o.depth; i++) {
        x->b[i].it = calloc(ns, sizeof *x->b[i].it);
        x->b[i].res = calloc(ns, sizeof *x->b[i].res);
        ok = x->b[i].it && x->b[i].res;
    }
    if (!ok) {
        pipe_close(&x->base);
        return bt_fail(e, -ENOMEM, "exec_pipeline: out of memory for %d slots", o->n_slots);
    }
    struct exec_caps *c = &x->base.caps;
    c->n_stages = o->n_stages;
    c->depth = x->o.depth;
    c->n_slots = o->n_slots;
    c->max_ctx = o->max_ctx;
    c->max_batch = o->max_batch;
    c->n_vocab = o->n_vocab;
    /* Workers preallocate max_seqs slots at full context: slots alone limit admission. */
    BT_LOG(INFO, "pipeline", "stages=%d depth=%d slots=%d ctx=%d batch=%d wire=%s", o->n_stages,
           c->depth, o->n_slots, o->max_ctx, o->max_batch, wire_dtype_name(o->wire_dtype));
    *out = &x->base;
    return 0;
}
