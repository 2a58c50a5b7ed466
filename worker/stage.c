/* worker/stage.c: see stage.h. */
#include "worker/stage.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/forward.h"
#include "engine/gguf.h"
#include "engine/sampler.h"
#include "engine/seqstate.h"
#include "engine/tokenizer.h"
#include "ops/threadpool.h"
#include "proto/wire.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STOP 64 /* = MSG_MAX_STOP_TOKENS */

/* Per-slot sampling state (last stage only). */
struct slot_samp {
    sampler_t *s;
    Baton__SamplingParams p; /* the params s was built from (repeated fields not kept) */
    uint32_t stop[MAX_STOP];
    size_t n_stop;
    int32_t *hist; /* [max_ctx] token ids seen, for the penalties */
    int n_hist;
};

struct stage {
    struct stage_opts o;
    struct model_desc *m;
    struct weights *w;
    seqstate_pool_t *st;
    pool_t *pool;
    forward_ctx_t *fc;
    int lo, hi, H, V, n_real, n_slots, max_ctx, max_rows, fwd_tokens, is_first, is_last;
    double load_secs;
    uint64_t *slot_seq;     /* [n_slots] seq_id held by the slot */
    int *slot_used;         /* [n_slots] 1 if the slot belongs to slot_seq */
    struct slot_samp *samp; /* [n_slots], last stage */
    /* scratch, sized once */
    int32_t *tokens; /* [max_rows] */
    float *in;       /* [max_rows][H], later stages */
    float *out;      /* not last: [max_rows][H]; last: [n_slots][V] */
    void *act;       /* wire encoding of out, not last */
    size_t act_cap;
    int *seq_slot;          /* [MSG_MAX_SEQS] slot of each sequence of the Forward */
    struct fwd_seq *pieces; /* [fwd_tokens] */
    /* Result storage */
    Baton__Result res;
    Baton__SeqResult *sr;      /* [n_slots] */
    Baton__SeqResult **srp;    /* [n_slots] */
    Baton__TokenLogprob *tl;   /* [n_slots][MSG_MAX_LOGPROBS] */
    Baton__TokenLogprob **tlp; /* [n_slots][MSG_MAX_LOGPROBS] */
    float *logits_out;         /* [n_slots][V]: rows of the sequences with want_logits */
};

static int find_slot(const stage_t *s, uint64_t seq) {
    for (int i = 0; i < s->n_slots; i++)
        if (s->slot_used[i] && s->slot_seq[i] == seq) return i;
    return -1;
}

static void free_slot(stage_t *s, int slot) {
    if (!s->slot_used[slot]) return;
    s->slot_used[slot] = 0;
    seqstate_release(s->st, slot);
    if (s->samp) {
        sampler_free(s->samp[slot].s);
        s->samp[slot].s = NULL;
        s->samp[slot].n_hist = 0;
    }
}

void stage_close(stage_t *s) {
    if (!s) return;
    for (int i = 0; s->samp && i < s->n_slots; i++) {
        sampler_free(s->samp[i].s);
        free(s->samp[i].hist);
    }
    free(s->samp);
    free(s->slot_seq);
    free(s->slot_used);
    free(s->tokens);
    free(s->in);
    free(s->out);
    free(s->act);
    free(s->seq_slot);
    free(s->pieces);
    free(s->sr);
    free(s->srp);
    free(s->tl);
    free(s->tlp);
    free(s->logits_out);
    forward_ctx_free(s->fc);
    pool_close(s->pool);
    seqstate_pool_free(s->st);
    weights_free(s->w);
    model_close(s->m);
    free(s);
}

/* Real vocabulary from the GGUF's tokenizer (reads the head only). */
static int read_n_real(const char *path, int n_vocab) {
    gguf_t *g = NULL;
    tok_t *t = NULL;
    int n = n_vocab;
    if (!gguf_open(&g, path, NULL) && !tokenizer_open_gguf(&t, g, NULL)) {
        int32_t r = tokenizer_n_real(t);
        if (r > 0 && r < n_vocab) n = r;
    }
    tokenizer_free(t);
    gguf_free(g);
    return n;
}

/* Weight loads of large ranges take seconds: let the worker send its pings meanwhile. */
static void load_progress(void *ctx, uint64_t done, uint64_t total) {
    (void)done;
    (void)total;
    stage_t *s = ctx;
    s->o.tick(s->o.tick_ctx);
}

int stage_open(stage_t **out, const struct stage_opts *o, bt_err *e) {
    *out = NULL;
    stage_t *s = calloc(1, sizeof *s);
    if (!s) return bt_fail(e, -ENOMEM, "stage");
    s->o = *o;
    int rc = model_open(&s->m, o->model_path, e);
    if (rc) goto fail;
    const struct qwen35_hparams *hp = &s->m->hp;
    if (o->lo < 0 || o->hi > hp->n_layer || o->lo >= o->hi) {
        rc = bt_fail(e, BT_ESHAPE, "stage: layers [%d, %d) of a %d-layer model", o->lo, o->hi,
                     hp->n_layer);
        goto fail;
    }
    if (o->max_ctx < 1 || o->max_seqs < 1) {
        rc = bt_fail(e, BT_EINVAL, "stage: max_ctx %d max_seqs %d", o->max_ctx, o->max_seqs);
        goto fail;
    }
    s->lo = o->lo, s->hi = o->hi, s->H = hp->n_embd, s->V = hp->n_vocab;
    s->is_first = o->lo == 0, s->is_last = o->hi == hp->n_layer;
    s->max_ctx = o->max_ctx;
    s->max_rows = o->max_rows > 0 ? o->max_rows : 2048;
    s->fwd_tokens = o->fwd_tokens > 0 ? o->fwd_tokens : 256;
    if (s->fwd_tokens > s->max_rows) s->fwd_tokens = s->max_rows;
    size_t wb = 0;
    if (!s->is_last && (rc = wire_bytes(o->wire_dtype, 1, s->H, &wb, e))) {
        rc = bt_fail(e, BT_EUNSUPPORTED, "stage: wire dtype %s cannot carry hidden %d",
                     wire_dtype_name(o->wire_dtype), s->H);
        goto fail;
    }
    size_t per_slot = seqstate_bytes(hp, o->lo, o->hi, o->max_ctx);
    s->n_slots = o->max_seqs;
    if (o->state_budget && per_slot && (uint64_t)s->n_slots * per_slot > o->state_budget)
        s->n_slots = (int)(o->state_budget / per_slot);
    if (s->n_slots < 1) {
        rc = bt_fail(e, BT_ECAPACITY,
                     "stage: one sequence of %d positions needs %zu state bytes, budget %llu",
                     o->max_ctx, per_slot, (unsigned long long)o->state_budget);
        goto fail;
    }
    int64_t t0 = bt_now_ns();
    struct weights_opts wo = {.use_io_uring = 1};
    if (o->tick) {
        wo.progress = load_progress;
        wo.progress_ctx = s;
    }
    if ((rc = weights_load(&s->w, s->m, o->lo, o->hi, &wo, e)) ||
        (rc = seqstate_pool_new(&s->st, hp, o->lo, o->hi, s->n_slots, o->max_ctx, e)) ||
        (rc = pool_open(&s->pool, o->threads, e)) ||
        (rc = forward_ctx_new(&s->fc, s->w, s->st, s->pool, s->fwd_tokens, e)))
        goto fail;
    s->load_secs = (double)(bt_now_ns() - t0) * 1e-9;
    size_t R = (size_t)s->max_rows, Hs = (size_t)s->H, Vs = (size_t)s->V, N = (size_t)s->n_slots;
    s->slot_seq = calloc(N, sizeof *s->slot_seq);
    s->slot_used = calloc(N, sizeof *s->slot_used);
    s->seq_slot = calloc(MSG_MAX_SEQS, sizeof *s->seq_slot);
    s->pieces = calloc((size_t)s->fwd_tokens, sizeof *s->pieces);
    int ok = s->slot_seq && s->slot_used && s->seq_slot && s->pieces;
    if (s->is_first)
        ok = ok && (s->tokens = calloc(R, sizeof *s->tokens));
    else
        ok = ok && (s->in = malloc(R * Hs * sizeof(float)));
    if (!s->is_last) {
        /* The largest encoding is f32: 4 bytes per value. */
        s->act_cap = R * Hs * sizeof(float);
        ok = ok && (s->out = malloc(R * Hs * sizeof(float))) && (s->act = malloc(s->act_cap));
    } else {
        ok = ok && (s->out = malloc(N * Vs * sizeof(float))) &&
             (s->logits_out = malloc(N * Vs * sizeof(float))) &&
             (s->samp = calloc(N, sizeof *s->samp)) && (s->sr = calloc(N, sizeof *s->sr)) &&
             (s->srp = calloc(N, sizeof *s->srp)) &&
             (s->tl = calloc(N * MSG_MAX_LOGPROBS, sizeof *s->tl)) &&
             (s->tlp = calloc(N * MSG_MAX_LOGPROBS, sizeof *s->tlp));
        for (size_t i = 0; ok && i < N; i++)
            ok = (s->samp[i].hist = malloc((size_t)s->max_ctx * sizeof(int32_t))) != NULL;
        s->n_real =
            o->n_real > 0 && o->n_real <= s->V ? o->n_real : read_n_real(o->model_path, s->V);
    }
    if (!ok) {
        rc = bt_fail(e, -ENOMEM, "stage: scratch for %d rows x %d, %d slots", s->max_rows, s->H,
                     s->n_slots);
        goto fail;
    }
    BT_LOG(INFO, "stage",
           "open layers=%d..%d first=%d last=%d slots=%d ctx=%d weights=%llu "
           "state=%zu secs=%.2f",
           s->lo, s->hi, s->is_first, s->is_last, s->n_slots, s->max_ctx,
           (unsigned long long)s->w->bytes_read, per_slot * N, s->load_secs);
    *out = s;
    return 0;
fail:
    stage_close(s);
    return rc;
}

void stage_info(const stage_t *s, struct stage_info *out) {
    memset(out, 0, sizeof *out);
    out->lo = s->lo, out->hi = s->hi, out->n_layer = s->m->hp.n_layer;
    out->hidden = s->H, out->n_vocab = s->V;
    out->is_first = s->is_first, out->is_last = s->is_last;
    out->n_slots = s->n_slots, out->max_ctx = s->max_ctx;
    out->weight_bytes = s->w->bytes_read;
    out->state_bytes = seqstate_bytes(&s->m->hp, s->lo, s->hi, s->max_ctx) * (size_t)s->n_slots;
    out->load_secs = s->load_secs;
}

int stage_active(const stage_t *s) {
    int n = 0;
    for (int i = 0; i < s->n_slots; i++)
        n += s->slot_used[i];
    return n;
}

int stage_has_seq(const stage_t *s, uint64_t seq_id) {
    return find_slot(s, seq_id) >= 0;
}

void stage_cancel(stage_t *s, const uint64_t *seq_ids, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int slot = find_slot(s, seq_ids[i]);
        if (slot >= 0) free_slot(s, slot);
    }
}

void stage_cancel_all(stage_t *s) {
    for (int i = 0; i < s->n_slots; i++)
        free_slot(s, i);
}

/* Builds (or keeps) the sampler of a slot from wire params. */
static int set_sampling(stage_t *s, int slot, const Baton__SamplingParams *wp, int fresh,
                        bt_err *e) {
    struct slot_samp *ss = &s->samp[slot];
    Baton__SamplingParams zero;
    baton__sampling_params__init(&zero);
    if (!wp) wp = &zero; /* proto3 defaults: greedy, nothing returned */
    Baton__SamplingParams key = zero;
    key.temperature = wp->temperature;
    key.top_p = wp->top_p;
    key.top_k = wp->top_k;
    key.min_p = wp->min_p;
    key.repetition_penalty = wp->repetition_penalty;
    key.presence_penalty = wp->presence_penalty;
    key.frequency_penalty = wp->frequency_penalty;
    key.seed = wp->seed;
    key.logprobs = wp->logprobs;
    key.want_logprob = wp->want_logprob;
    const Baton__SamplingParams *o = &ss->p;
    int same =
        ss->s && key.temperature == o->temperature && key.top_p == o->top_p &&
        key.top_k == o->top_k && key.min_p == o->min_p &&
        key.repetition_penalty == o->repetition_penalty &&
        key.presence_penalty == o->presence_penalty &&
        key.frequency_penalty == o->frequency_penalty && key.seed == o->seed &&
        key.logprobs == o->logprobs && key.want_logprob == o->want_logprob &&
        wp->n_stop_token_ids == ss->n_stop &&
        (!ss->n_stop || !memcmp(wp->stop_token_ids, ss->stop, ss->n_stop * sizeof(uint32_t)));
    if (same && !fresh) return 0;
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = wp->temperature;
    p.top_k = (int32_t)wp->top_k;
    p.top_p = wp->top_p > 0.0f ? wp->top_p : 1.0f;
    p.min_p = wp->min_p;
    p.repetition_penalty = wp->repetition_penalty > 0.0f ? wp->repetition_penalty : 1.0f;
    p.presence_penalty = wp->presence_penalty;
    p.frequency_penalty = wp->frequency_penalty;
    p.seed = wp->seed;
    p.n_logprobs = (int32_t)wp->logprobs;
    sampler_t *ns = NULL;
    int rc = sampler_new(&ns, &p, s->V, s->n_real, e);
    if (rc) return rc;
    sampler_free(ss->s);
    ss->s = ns;
    ss->p = key;
    ss->n_stop = wp->n_stop_token_ids < MAX_STOP ? wp->n_stop_token_ids : MAX_STOP;
    if (ss->n_stop) memcpy(ss->stop, wp->stop_token_ids, ss->n_stop * sizeof(uint32_t));
    return 0;
}

int stage_forward(stage_t *s, const Baton__Forward *f, const void *frame, size_t frame_len,
                  struct stage_out *out, bt_err *e) {
    memset(out, 0, sizeof *out);
    size_t n = f->n_seq_id;
    /* ---- validate everything before touching any state ---- */
    if (n == 0)
        return bt_fail(e, BT_EPROTO, "forward %llu: no sequences", (unsigned long long)f->batch_id);
    if (f->n_pos != n || f->n_n_tokens != n || (f->n_sample && f->n_sample != n) ||
        (f->n_want_logits && f->n_want_logits != n) || (f->n_sampling && f->n_sampling != n))
        return bt_fail(e, BT_EPROTO, "forward %llu: per-sequence field counts differ",
                       (unsigned long long)f->batch_id);
    if (n > (size_t)s->n_slots)
        return bt_fail(e, BT_ECAPACITY, "forward %llu: %zu sequences, %d slots",
                       (unsigned long long)f->batch_id, n, s->n_slots);
    uint64_t T = 0;
    for (size_t i = 0; i < n; i++)
        T += f->n_tokens[i];
    if (T == 0 || T > (uint64_t)s->max_rows)
        return bt_fail(e, BT_ECAPACITY, "forward %llu: %llu rows (limit %d)",
                       (unsigned long long)f->batch_id, (unsigned long long)T, s->max_rows);
    if (s->is_first) {
        if (f->n_token_ids != T)
            return bt_fail(e, BT_EPROTO, "forward %llu: %zu token ids for %llu rows",
                           (unsigned long long)f->batch_id, f->n_token_ids, (unsigned long long)T);
        for (size_t t = 0; t < T; t++) {
            if (f->token_ids[t] >= (uint32_t)s->V)
                return bt_fail(e, BT_EPROTO, "forward %llu: token id %u >= vocab %d",
                               (unsigned long long)f->batch_id, f->token_ids[t], s->V);
        }
    } else {
        if (f->hidden != (uint32_t)s->H)
            return bt_fail(e, BT_ESHAPE, "forward %llu: hidden %u, model has %d",
                           (unsigned long long)f->batch_id, f->hidden, s->H);
        if (f->n_token_ids && f->n_token_ids != T)
            return bt_fail(e, BT_EPROTO, "forward %llu: %zu token ids for %llu rows",
                           (unsigned long long)f->batch_id, f->n_token_ids, (unsigned long long)T);
    }
    int n_free = 0;
    for (int i = 0; i < s->n_slots; i++)
        n_free += !s->slot_used[i];
    for (size_t i = 0; i < n; i++) {
        uint64_t id = f->seq_id[i];
        for (size_t k = 0; k < i; k++)
            if (f->seq_id[k] == id)
                return bt_fail(e, BT_EPROTO, "forward %llu: seq %llu twice",
                               (unsigned long long)f->batch_id, (unsigned long long)id);
        int slot = find_slot(s, id);
        if (f->n_tokens[i] == 0)
            return bt_fail(e, BT_EPROTO, "forward %llu: seq %llu has no tokens",
                           (unsigned long long)f->batch_id, (unsigned long long)id);
        if ((uint64_t)f->pos[i] + f->n_tokens[i] > (uint64_t)s->max_ctx)
            return bt_fail(e, BT_ECAPACITY, "forward %llu: seq %llu pos %u + %u past max_ctx %d",
                           (unsigned long long)f->batch_id, (unsigned long long)id, f->pos[i],
                           f->n_tokens[i], s->max_ctx);
        if (f->pos[i] == 0) {
            if (slot < 0 && n_free-- <= 0)
                return bt_fail(e, BT_ECAPACITY, "forward %llu: no free slot for seq %llu (%d/%d)",
                               (unsigned long long)f->batch_id, (unsigned long long)id, s->n_slots,
                               s->n_slots);
        } else if (slot < 0) {
            return bt_fail(e, BT_EPROTO, "forward %llu: seq %llu at pos %u has no state here",
                           (unsigned long long)f->batch_id, (unsigned long long)id, f->pos[i]);
        } else if (seqstate_pos(s->st, slot) != (int64_t)f->pos[i]) {
            return bt_fail(e, BT_EPROTO, "forward %llu: seq %llu at pos %u, stage has %lld",
                           (unsigned long long)f->batch_id, (unsigned long long)id, f->pos[i],
                           (long long)seqstate_pos(s->st, slot));
        }
    }
    if (!s->is_first) {
        int rc = wire_decode(f->wire_dtype, frame, frame_len, (int64_t)T, s->H, s->in, e);
        if (rc) return rc;
    }
    /* ---- take slots, set samplers ---- */
    for (size_t i = 0; i < n; i++) {
        int slot = find_slot(s, f->seq_id[i]);
        if (f->pos[i] == 0) {
            if (slot < 0) {
                int rc = seqstate_acquire(s->st, &slot, e);
                if (rc) return rc; /* counted above: cannot happen */
                s->slot_used[slot] = 1;
                s->slot_seq[slot] = f->seq_id[i];
            } else {
                seqstate_reset(s->st, slot);
            }
            if (s->is_last) s->samp[slot].n_hist = 0;
        }
        if (s->is_last && (f->pos[i] == 0 || f->n_sampling)) {
            int rc =
                set_sampling(s, slot, f->n_sampling ? f->sampling[i] : NULL, f->pos[i] == 0, e);
            if (rc) return rc;
        }
        s->seq_slot[i] = slot;
    }
    if (s->is_first)
        for (size_t t = 0; t < T; t++)
            s->tokens[t] = (int32_t)f->token_ids[t];
    /* ---- run in pieces of at most fwd_tokens rows ---- */
    size_t row0 = 0, out_rows = 0;
    size_t i = 0;
    uint32_t done_in_seq = 0;
    while (i < n) {
        int np = 0, rows = 0;
        size_t piece_row0 = row0;
        while (i < n && rows < s->fwd_tokens) {
            uint32_t left = f->n_tokens[i] - done_in_seq;
            int take =
                (int)(left < (uint32_t)(s->fwd_tokens - rows) ? left
                                                              : (uint32_t)(s->fwd_tokens - rows));
            int wants = (f->n_sample && f->sample[i]) || (f->n_want_logits && f->want_logits[i]);
            int ends = (uint32_t)take == left;
            s->pieces[np++] = (struct fwd_seq){.slot = s->seq_slot[i],
                                               .n_tokens = take,
                                               .out = ends && wants ? FWD_OUT_LAST : FWD_OUT_NONE};
            rows += take;
            if (ends) {
                i++;
                done_in_seq = 0;
            } else {
                done_in_seq += (uint32_t)take;
            }
        }
        struct fwd_batch b = {.n_seq = np, .seq = s->pieces};
        if (s->is_first)
            b.tokens = s->tokens + piece_row0;
        else
            b.hidden = s->in + piece_row0 * (size_t)s->H;
        b.out = s->is_last ? s->out + out_rows * (size_t)s->V : s->out + piece_row0 * (size_t)s->H;
        int rc = forward(s->fc, &b, e);
        if (rc) return rc;
        if (s->is_last) out_rows += (size_t)forward_n_out(&b);
        row0 += (size_t)rows;
        if (i < n && s->o.tick) s->o.tick(s->o.tick_ctx);
    }
    if (!s->is_last) {
        size_t len = 0;
        int dt = s->o.wire_dtype;
        int rc = wire_bytes(dt, (int64_t)T, s->H, &len, e);
        if (rc) return rc;
        wire_encode(dt, s->out, (int64_t)T, s->H, s->act);
        out->act = s->act;
        out->act_len = len;
        out->act_dtype = dt;
        return 0;
    }
    /* ---- last stage: history, sampling, Result ---- */
    baton__result__init(&s->res);
    s->res.batch_id = f->batch_id;
    s->res.seqs = s->srp;
    s->res.n_seqs = 0;
    size_t lrow = 0, n_logit = 0, tok_at = 0;
    for (size_t k = 0; k < n; k++) {
        int slot = s->seq_slot[k];
        struct slot_samp *ss = &s->samp[slot];
        if (f->n_token_ids) {
            /* Bounded by max_ctx: pos + n_tokens <= max_ctx was checked. */
            memcpy(ss->hist + ss->n_hist, f->token_ids + tok_at, f->n_tokens[k] * sizeof(int32_t));
            ss->n_hist += (int)f->n_tokens[k];
        }
        tok_at += f->n_tokens[k];
        int smp = f->n_sample && f->sample[k];
        int wl = f->n_want_logits && f->want_logits[k];
        if (!smp && !wl) continue;
        const float *row = s->out + lrow++ * (size_t)s->V;
        if (wl) memcpy(s->logits_out + n_logit++ * (size_t)s->V, row, (size_t)s->V * sizeof(float));
        if (!smp) continue;
        struct sampler_result r;
        int32_t tok = sampler_sample(ss->s, row, ss->hist, (size_t)ss->n_hist, &r);
        size_t j = s->res.n_seqs++;
        Baton__SeqResult *q = &s->sr[j];
        baton__seq_result__init(q);
        s->srp[j] = q;
        q->seq_id = f->seq_id[k];
        q->token = (uint32_t)tok;
        q->pos = f->pos[k] + f->n_tokens[k];
        if (ss->p.want_logprob || ss->p.logprobs) {
            q->has_logprob = 1;
            q->logprob = r.logprob;
        }
        q->n_top = (size_t)(r.n_top > 0 ? r.n_top : 0);
        q->top = s->tlp + j * MSG_MAX_LOGPROBS;
        for (size_t t = 0; t < q->n_top; t++) {
            Baton__TokenLogprob *tl = &s->tl[j * MSG_MAX_LOGPROBS + t];
            baton__token_logprob__init(tl);
            tl->token = (uint32_t)r.top[t].id;
            tl->logprob = r.top[t].logprob;
            q->top[t] = tl;
        }
        q->finish = BATON__FINISH_REASON__FINISH_NONE;
        for (size_t t = 0; t < ss->n_stop; t++)
            if (ss->stop[t] == (uint32_t)tok) q->finish = BATON__FINISH_REASON__FINISH_STOP;
        if (q->finish == BATON__FINISH_REASON__FINISH_NONE && q->pos + 1 > (uint32_t)s->max_ctx)
            q->finish = BATON__FINISH_REASON__FINISH_LENGTH;
    }
    if (n_logit) {
        s->res.n_logit_rows = (uint32_t)n_logit;
        s->res.vocab = (uint32_t)s->V;
        out->logits = s->logits_out;
        out->logits_len = n_logit * (size_t)s->V * sizeof(float);
    }
    out->result = &s->res;
    return 0;
}

int stage_export(stage_t *s, uint64_t seq_id, void **buf, size_t *len, uint32_t *n_pos, bt_err *e) {
    *buf = NULL;
    *len = 0;
    int slot = find_slot(s, seq_id);
    if (slot < 0)
        return bt_fail(e, BT_ENOKEY, "export: seq %llu has no state here",
                       (unsigned long long)seq_id);
    size_t cap = seqstate_save_size(s->st, slot);
    void *b = malloc(cap ? cap : 1);
    if (!b) return bt_fail(e, -ENOMEM, "export: %zu bytes", cap);
    int rc = seqstate_save(s->st, slot, b, cap, len, e);
    if (rc) {
        free(b);
        return rc;
    }
    *buf = b;
    *n_pos = (uint32_t)seqstate_pos(s->st, slot);
    return 0;
}

int stage_import(stage_t *s, uint64_t seq_id, const void *buf, size_t len, bt_err *e) {
    int slot = find_slot(s, seq_id), fresh = 0;
    if (slot < 0) {
        int rc = seqstate_acquire(s->st, &slot, e);
        if (rc) return rc;
        fresh = 1;
    }
    int rc = seqstate_load(s->st, slot, buf, len, e);
    if (rc) {
        if (fresh) seqstate_release(s->st, slot);
        return rc;
    }
    s->slot_used[slot] = 1;
    s->slot_seq[slot] = seq_id;
    if (s->is_last) {
        s->samp[slot].n_hist = 0;
        if ((rc = set_sampling(s, slot, NULL, 1, e))) return rc;
    }
    return 0;
}
