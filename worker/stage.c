/* worker/stage.c: see stage.h. */
#include "worker/stage.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/gguf.h"
#include "engine/seqrun.h"
#include "engine/tokenizer.h"
#include "proto/wire.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SEQRUN_MAX_STOP == MSG_MAX_STOP_TOKENS, "a stage keeps every stop id of the wire");

struct stage {
    struct stage_opts o;
    struct model_desc *m;
    seqrun_t *run;       /* weights [lo, hi), slots, forward; samplers on the last stage */
    seqstate_pool_t *st; /* = seqrun_state(run) */
    int lo, hi, H, V, n_real, n_slots, max_ctx, max_rows, fwd_tokens, is_first, is_last;
    double load_secs;
    uint64_t *slot_seq; /* [n_slots] seq_id held by the slot */
    int *slot_used;     /* [n_slots] 1 if the slot belongs to slot_seq */
    /* scratch, sized once */
    int32_t *tokens; /* [max_rows] */
    float *in;       /* [max_rows][H], later stages */
    float *out;      /* not last: [max_rows][H]; last: [n_slots][V] */
    void *act;       /* wire encoding of out, not last */
    size_t act_cap;
    int *seq_slot;           /* [MSG_MAX_SEQS] slot of each sequence of the Forward */
    struct seqrun_seq *seqs; /* [MSG_MAX_SEQS] */
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
    seqrun_clear_sampling(s->run, slot);
}

void stage_close(stage_t *s) {
    if (!s) return;
    free(s->slot_seq);
    free(s->slot_used);
    free(s->tokens);
    free(s->in);
    free(s->out);
    free(s->act);
    free(s->seq_slot);
    free(s->seqs);
    free(s->sr);
    free(s->srp);
    free(s->tl);
    free(s->tlp);
    free(s->logits_out);
    seqrun_close(s->run);
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
    if (s->is_last)
        s->n_real =
            o->n_real > 0 && o->n_real <= s->V ? o->n_real : read_n_real(o->model_path, s->V);
    int64_t t0 = bt_now_ns();
    struct seqrun_opts ro = {.lo = o->lo,
                             .hi = o->hi,
                             .n_slots = s->n_slots,
                             .max_ctx = o->max_ctx,
                             .fwd_tokens = s->fwd_tokens,
                             .threads = o->threads,
                             .n_real = s->n_real,
                             .progress = o->tick ? load_progress : NULL,
                             .progress_ctx = s};
    if ((rc = seqrun_open(&s->run, s->m, &ro, e))) goto fail;
    s->st = seqrun_state(s->run);
    s->load_secs = (double)(bt_now_ns() - t0) * 1e-9;
    size_t R = (size_t)s->max_rows, Hs = (size_t)s->H, Vs = (size_t)s->V, N = (size_t)s->n_slots;
    s->slot_seq = calloc(N, sizeof *s->slot_seq);
    s->slot_used = calloc(N, sizeof *s->slot_used);
    s->seq_slot = calloc(MSG_MAX_SEQS, sizeof *s->seq_slot);
    s->seqs = calloc(MSG_MAX_SEQS, sizeof *s->seqs);
    int ok = s->slot_seq && s->slot_used && s->seq_slot && s->seqs;
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
             (s->sr = calloc(N, sizeof *s->sr)) && (s->srp = calloc(N, sizeof *s->srp)) &&
             (s->tl = calloc(N * MSG_MAX_LOGPROBS, sizeof *s->tl)) &&
             (s->tlp = calloc(N * MSG_MAX_LOGPROBS, sizeof *s->tlp));
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
           (unsigned long long)seqrun_weights(s->run)->bytes_read, per_slot * N, s->load_secs);
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
    out->weight_bytes = seqrun_weights(s->run)->bytes_read;
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

/* Builds (or keeps, see seqrun_set_sampling) the sampler of a slot from wire params; NULL:
 * proto3 defaults (greedy, nothing returned). */
static int set_sampling(stage_t *s, int slot, const Baton__SamplingParams *wp, int fresh,
                        bt_err *e) {
    Baton__SamplingParams zero;
    baton__sampling_params__init(&zero);
    if (!wp) wp = &zero;
    struct seqrun_sampling sp = {.want_logprob = wp->want_logprob,
                                 .stop = wp->stop_token_ids,
                                 .n_stop = wp->n_stop_token_ids};
    sampler_params_default(&sp.p);
    sp.p.temperature = wp->temperature;
    sp.p.top_k = (int32_t)wp->top_k;
    sp.p.top_p = wp->top_p; /* 0 (unset) = off, by seqrun's rule */
    sp.p.min_p = wp->min_p;
    sp.p.repetition_penalty = wp->repetition_penalty; /* likewise */
    sp.p.presence_penalty = wp->presence_penalty;
    sp.p.frequency_penalty = wp->frequency_penalty;
    sp.p.seed = wp->seed;
    sp.p.n_logprobs = (int32_t)wp->logprobs;
    sp.rng_skip = wp->rng_skip;
    return seqrun_set_sampling(s->run, slot, &sp, fresh, e);
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
            seqrun_reset_history(s->run, slot);
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
    /* ---- run (in pieces of at most fwd_tokens rows) ---- */
    for (size_t i = 0; i < n; i++) {
        int wants = (f->n_sample && f->sample[i]) || (f->n_want_logits && f->want_logits[i]);
        s->seqs[i] = (struct seqrun_seq){
            .slot = s->seq_slot[i], .n_tokens = (int)f->n_tokens[i], .want_out = wants};
    }
    struct seqrun_batch b = {.n_seq = (int)n,
                             .seq = s->seqs,
                             .tokens = s->is_first ? s->tokens : NULL,
                             .hidden = s->is_first ? NULL : s->in,
                             .out = s->out};
    int rc = seqrun_forward(s->run, &b, s->o.tick, s->o.tick_ctx, e);
    if (rc < 0) return rc;
    if (!s->is_last) {
        size_t len = 0;
        int dt = s->o.wire_dtype;
        if ((rc = wire_bytes(dt, (int64_t)T, s->H, &len, e))) return rc;
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
        if (f->n_token_ids) /* bounded by max_ctx: pos + n_tokens <= max_ctx was checked */
            seqrun_add_history(s->run, slot, (const int32_t *)(f->token_ids + tok_at),
                               (int)f->n_tokens[k]);
        tok_at += f->n_tokens[k];
        int smp = f->n_sample && f->sample[k];
        int wl = f->n_want_logits && f->want_logits[k];
        if (!smp && !wl) continue;
        const float *row = s->out + lrow++ * (size_t)s->V;
        if (wl) memcpy(s->logits_out + n_logit++ * (size_t)s->V, row, (size_t)s->V * sizeof(float));
        if (!smp) continue;
        struct sampler_result r;
        int32_t tok = seqrun_sample(s->run, slot, row, &r);
        size_t j = s->res.n_seqs++;
        Baton__SeqResult *q = &s->sr[j];
        baton__seq_result__init(q);
        s->srp[j] = q;
        q->seq_id = f->seq_id[k];
        q->token = (uint32_t)tok;
        q->pos = f->pos[k] + f->n_tokens[k];
        if (seqrun_wants_logprob(s->run, slot)) {
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
        switch (seqrun_finish(s->run, slot, tok, q->pos)) {
        case SEQRUN_FINISH_STOP:
            q->finish = BATON__FINISH_REASON__FINISH_STOP;
            break;
        case SEQRUN_FINISH_LENGTH:
            q->finish = BATON__FINISH_REASON__FINISH_LENGTH;
            break;
        case SEQRUN_FINISH_NONE:
            q->finish = BATON__FINISH_REASON__FINISH_NONE;
            break;
        }
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
        seqrun_reset_history(s->run, slot);
        if ((rc = set_sampling(s, slot, NULL, 1, e))) return rc;
    }
    return 0;
}
