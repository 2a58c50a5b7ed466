/* engine/seqrun.c: see seqrun.h. */
#include "engine/seqrun.h"

#include "common/assert.h"
#include "engine/forward.h"
#include "ops/threadpool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Sampling state of one slot (last range only). */
struct slot_samp {
    sampler_t *s;
    struct seqrun_sampling key; /* the params s was built from, as given (key.stop unused) */
    uint32_t stop[SEQRUN_MAX_STOP];
    size_t n_stop;
    int32_t *hist; /* [max_ctx] token ids fed, for the penalties */
    int n_hist;
};

struct seqrun {
    struct weights *w;
    seqstate_pool_t *st;
    pool_t *pool;
    forward_ctx_t *fc;
    int n_embd, n_vocab, n_real, n_slots, max_ctx, fwd_tokens, is_last;
    struct fwd_seq *pieces; /* [fwd_tokens]: a piece never holds more sequences than rows */
    struct slot_samp *samp; /* [n_slots] on the last range, else NULL */
};

void seqrun_close(seqrun_t *r) {
    if (!r) return;
    for (int i = 0; r->samp && i < r->n_slots; i++) {
        sampler_free(r->samp[i].s);
        free(r->samp[i].hist);
    }
    free(r->samp);
    free(r->pieces);
    forward_ctx_free(r->fc);
    pool_close(r->pool);
    seqstate_pool_free(r->st);
    weights_free(r->w);
    free(r);
}

int seqrun_open(seqrun_t **out, const struct model_desc *m, const struct seqrun_opts *o,
                bt_err *e) {
    *out = NULL;
    const struct qwen35_hparams *hp = &m->hp;
    if (o->lo < 0 || o->hi > hp->n_layer || o->lo >= o->hi)
        return bt_fail(e, BT_ESHAPE, "seqrun: layers [%d, %d) of a %d-layer model", o->lo, o->hi,
                       hp->n_layer);
    if (o->n_slots < 1 || o->max_ctx < 1)
        return bt_fail(e, BT_EINVAL, "seqrun: n_slots %d max_ctx %d", o->n_slots, o->max_ctx);
    seqrun_t *r = calloc(1, sizeof *r);
    if (!r) return bt_fail(e, -ENOMEM, "seqrun");
    r->n_embd = hp->n_embd;
    r->n_vocab = hp->n_vocab;
    r->n_real = o->n_real > 0 && o->n_real <= hp->n_vocab ? o->n_real : hp->n_vocab;
    r->n_slots = o->n_slots;
    r->max_ctx = o->max_ctx;
    r->fwd_tokens = o->fwd_tokens > 0 ? o->fwd_tokens : 256;
    r->is_last = o->hi == hp->n_layer;
    struct weights_opts wo = {
        .use_io_uring = 1, .progress = o->progress, .progress_ctx = o->progress_ctx};
    int rc;
    if ((rc = weights_load(&r->w, m, o->lo, o->hi, &wo, e)) ||
        (rc = seqstate_pool_new(&r->st, hp, o->lo, o->hi, r->n_slots, r->max_ctx, e)) ||
        (rc = pool_open(&r->pool, o->threads, e)) ||
        (rc = forward_ctx_new(&r->fc, r->w, r->st, r->pool, r->fwd_tokens, e)))
        goto fail;
    int ok = (r->pieces = calloc((size_t)r->fwd_tokens, sizeof *r->pieces)) != NULL;
    if (ok && r->is_last) {
        ok = (r->samp = calloc((size_t)r->n_slots, sizeof *r->samp)) != NULL;
        for (int i = 0; ok && i < r->n_slots; i++)
            ok = (r->samp[i].hist = malloc((size_t)r->max_ctx * sizeof(int32_t))) != NULL;
    }
    if (!ok) {
        rc = bt_fail(e, -ENOMEM, "seqrun: %d slots of %d positions", r->n_slots, r->max_ctx);
        goto fail;
    }
    *out = r;
    return 0;
fail:
    seqrun_close(r);
    return rc;
}

seqstate_pool_t *seqrun_state(seqrun_t *r) {
    return r->st;
}

const struct weights *seqrun_weights(const seqrun_t *r) {
    return r->w;
}

int seqrun_is_last(const seqrun_t *r) {
    return r->is_last;
}

int seqrun_forward(seqrun_t *r, const struct seqrun_batch *b, void (*tick)(void *), void *tick_ctx,
                   bt_err *e) {
    size_t row0 = 0, out_rows = 0, H = (size_t)r->n_embd, V = (size_t)r->n_vocab;
    int i = 0, done_in_seq = 0;
    while (i < b->n_seq) {
        int np = 0, rows = 0;
        size_t piece_row0 = row0;
        while (i < b->n_seq && rows < r->fwd_tokens) {
            const struct seqrun_seq *q = &b->seq[i];
            int left = q->n_tokens - done_in_seq, room = r->fwd_tokens - rows;
            int take = left < room ? left : room, ends = take == left;
            r->pieces[np++] =
                (struct fwd_seq){.slot = q->slot,
                                 .n_tokens = take,
                                 .out = ends && q->want_out ? FWD_OUT_LAST : FWD_OUT_NONE};
            rows += take;
            if (ends) {
                i++;
                done_in_seq = 0;
            } else {
                done_in_seq += take;
            }
        }
        struct fwd_batch fb = {.n_seq = np, .seq = r->pieces};
        if (b->tokens)
            fb.tokens = b->tokens + piece_row0;
        else
            fb.hidden = b->hidden + piece_row0 * H;
        fb.out = r->is_last ? b->out + out_rows * V : b->out + piece_row0 * H;
        int rc = forward(r->fc, &fb, e);
        if (rc) return rc;
        if (r->is_last) out_rows += (size_t)forward_n_out(&fb);
        row0 += (size_t)rows;
        if (i < b->n_seq && tick) tick(tick_ctx);
    }
    return (int)out_rows;
}

static int same_sampling(const struct slot_samp *ss, const struct seqrun_sampling *sp) {
    const struct sampler_params *a = &ss->key.p, *b = &sp->p;
    return ss->s && a->temperature == b->temperature && a->top_p == b->top_p &&
           a->top_k == b->top_k && a->min_p == b->min_p &&
           a->repetition_penalty == b->repetition_penalty &&
           a->presence_penalty == b->presence_penalty &&
           a->frequency_penalty == b->frequency_penalty && a->penalty_last_n == b->penalty_last_n &&
           a->seed == b->seed && a->n_logprobs == b->n_logprobs &&
           ss->key.want_logprob == sp->want_logprob && sp->n_stop == ss->n_stop &&
           (!ss->n_stop || !memcmp(sp->stop, ss->stop, ss->n_stop * sizeof(uint32_t)));
}

int seqrun_set_sampling(seqrun_t *r, int slot, const struct seqrun_sampling *sp, int fresh,
                        bt_err *e) {
    BT_ASSERT(r->samp && slot >= 0 && slot < r->n_slots);
    struct slot_samp *ss = &r->samp[slot];
    if (!fresh && same_sampling(ss, sp)) return 0;
    struct sampler_params p = sp->p;
    if (!(p.top_p > 0.0f)) p.top_p = 1.0f;
    if (!(p.repetition_penalty > 0.0f)) p.repetition_penalty = 1.0f;
    sampler_t *ns = NULL;
    int rc = sampler_new(&ns, &p, r->n_vocab, r->n_real, e);
    if (rc) return rc;
    sampler_skip(ns, sp->rng_skip);
    sampler_free(ss->s);
    ss->s = ns;
    ss->key = *sp;
    ss->key.stop = NULL;
    ss->n_stop = sp->n_stop < SEQRUN_MAX_STOP ? sp->n_stop : SEQRUN_MAX_STOP;
    if (ss->n_stop) memcpy(ss->stop, sp->stop, ss->n_stop * sizeof(uint32_t));
    return 0;
}

void seqrun_clear_sampling(seqrun_t *r, int slot) {
    if (!r->samp) return;
    sampler_free(r->samp[slot].s);
    r->samp[slot].s = NULL;
    r->samp[slot].n_hist = 0;
}

void seqrun_reset_history(seqrun_t *r, int slot) {
    if (r->samp) r->samp[slot].n_hist = 0;
}

void seqrun_add_history(seqrun_t *r, int slot, const int32_t *ids, int n) {
    struct slot_samp *ss = &r->samp[slot];
    BT_ASSERT(n >= 0 && ss->n_hist + n <= r->max_ctx);
    memcpy(ss->hist + ss->n_hist, ids, (size_t)n * sizeof(int32_t));
    ss->n_hist += n;
}

int32_t seqrun_sample(seqrun_t *r, int slot, const float *logits, struct sampler_result *res) {
    struct slot_samp *ss = &r->samp[slot];
    BT_ASSERT(ss->s);
    return sampler_sample(ss->s, logits, ss->hist, (size_t)ss->n_hist, res);
}

int seqrun_wants_logprob(const seqrun_t *r, int slot) {
    const struct slot_samp *ss = &r->samp[slot];
    return ss->key.want_logprob || ss->key.p.n_logprobs;
}

enum seqrun_finish seqrun_finish(const seqrun_t *r, int slot, int32_t tok, int64_t pos) {
    const struct slot_samp *ss = &r->samp[slot];
    for (size_t t = 0; t < ss->n_stop; t++)
        if (ss->stop[t] == (uint32_t)tok) return SEQRUN_FINISH_STOP;
    return pos + 1 > r->max_ctx ? SEQRUN_FINISH_LENGTH : SEQRUN_FINISH_NONE;
}
