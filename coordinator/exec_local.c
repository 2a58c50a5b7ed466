/* coordinator/exec_local.c: see exec_local.h. */
#include "coordinator/exec_local.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/seqstate.h"
#include "ops/ops.h"
#include "ops/threadpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct exec_local {
    struct exec base; /* first: exec_t * is a struct exec_local * */
    struct model_desc *m;
    struct weights *w;
    seqstate_pool_t *st;
    pool_t *pool;
    forward_ctx_t *fc;
    int n_vocab, n_real;
    int *pslot;       /* [n_slots]: seqstate slot behind each scheduler slot */
    sampler_t **samp; /* [n_slots] */
    int32_t **hist;   /* [n_slots][max_ctx]: tokens fed, for the penalties */
    int *n_hist;
    /* The stored batch (depth 1). */
    int pending;
    uint64_t batch_id;
    int n_items;
    struct exec_seq_item *items; /* [n_slots] (tokens point into toks) */
    int32_t *toks;               /* [max_batch] */
    struct fwd_seq *fseq;        /* [n_slots] */
    float *logits;               /* [n_slots][n_vocab] */
    struct exec_result *res;     /* [n_slots] */
};

static void local_close(exec_t *ex) {
    struct exec_local *x = (struct exec_local *)ex;
    if (!x) return;
    for (int i = 0; x->samp && i < x->base.caps.n_slots; i++)
        sampler_free(x->samp[i]);
    for (int i = 0; x->hist && i < x->base.caps.n_slots; i++)
        free(x->hist[i]);
    free(x->samp);
    free(x->hist);
    free(x->n_hist);
    free(x->pslot);
    free(x->items);
    free(x->toks);
    free(x->fseq);
    free(x->logits);
    free(x->res);
    forward_ctx_free(x->fc);
    pool_close(x->pool);
    seqstate_pool_free(x->st);
    weights_free(x->w);
    model_close(x->m);
    free(x);
}

static int local_submit(exec_t *ex, uint64_t batch_id, const struct exec_seq_item *items, int n,
                        bt_err *e) {
    struct exec_local *x = (struct exec_local *)ex;
    const struct exec_caps *c = &ex->caps;
    if (x->pending)
        return bt_fail(e, BT_ECAPACITY, "exec_local: a batch is already in flight (depth 1)");
    if (n < 1 || n > c->n_slots)
        return bt_fail(e, BT_EINVAL, "exec_local: batch of %d items (slots %d)", n, c->n_slots);
    int total = 0;
    for (int i = 0; i < n; i++) {
        const struct exec_seq_item *it = &items[i];
        if (it->slot < 0 || it->slot >= c->n_slots || it->n_tokens < 1)
            return bt_fail(e, BT_EINVAL, "exec_local: item %d slot=%d n_tokens=%d", i, it->slot,
                           it->n_tokens);
        if ((it->pos == 0) != (it->sp != NULL))
            return bt_fail(e, BT_EINVAL, "exec_local: item %d: sampling params iff pos 0", i);
        int64_t at = it->pos == 0 ? 0 : seqstate_pos(x->st, x->pslot[it->slot]);
        if (it->pos != at || it->pos + it->n_tokens > c->max_ctx)
            return bt_fail(e, BT_EINVAL, "exec_local: slot %d at %lld, item pos=%d n=%d ctx=%d",
                           it->slot, (long long)at, it->pos, it->n_tokens, c->max_ctx);
        total += it->n_tokens;
    }
    if (total > c->max_batch)
        return bt_fail(e, BT_ECAPACITY, "exec_local: %d tokens > batch limit %d", total,
                       c->max_batch);
    int at = 0;
    for (int i = 0; i < n; i++) {
        x->items[i] = items[i];
        memcpy(x->toks + at, items[i].tokens, (size_t)items[i].n_tokens * sizeof *x->toks);
        x->items[i].tokens = x->toks + at;
        at += items[i].n_tokens;
        /* A fresh sequence: zero state and a new sampler now, so a failure is the submitter's. */
        if (items[i].pos == 0) {
            const struct exec_sampling *sp = items[i].sp;
            struct sampler_params p;
            sampler_params_default(&p);
            p.temperature = sp->temperature;
            p.top_k = sp->top_k;
            p.top_p = sp->top_p;
            p.min_p = sp->min_p;
            p.repetition_penalty = sp->repetition_penalty;
            p.presence_penalty = sp->presence_penalty;
            p.frequency_penalty = sp->frequency_penalty;
            p.seed = sp->seed;
            p.n_logprobs = sp->want_logprob ? sp->n_top : 0;
            int s = items[i].slot;
            sampler_free(x->samp[s]);
            x->samp[s] = NULL;
            int rc = sampler_new(&x->samp[s], &p, x->n_vocab, x->n_real, e);
            if (rc < 0) return rc;
            seqstate_reset(x->st, x->pslot[s]);
            x->n_hist[s] = 0;
        }
        x->items[i].sp = NULL;
    }
    x->n_items = n;
    x->batch_id = batch_id;
    x->pending = 1;
    return 0;
}

static int local_poll(exec_t *ex, int timeout_ms, struct exec_done *out, bt_err *e) {
    (void)timeout_ms; /* the work happens here, so there is never anything to wait for */
    (void)e;
    struct exec_local *x = (struct exec_local *)ex;
    if (!x->pending) return 0;
    x->pending = 0;
    memset(out, 0, sizeof *out);
    out->batch_id = x->batch_id;
    for (int i = 0; i < x->n_items; i++) {
        const struct exec_seq_item *it = &x->items[i];
        x->fseq[i] = (struct fwd_seq){.slot = x->pslot[it->slot],
                                      .n_tokens = it->n_tokens,
                                      .out = it->sample ? FWD_OUT_LAST : FWD_OUT_NONE};
        memcpy(x->hist[it->slot] + x->n_hist[it->slot], it->tokens,
               (size_t)it->n_tokens * sizeof(int32_t));
        x->n_hist[it->slot] += it->n_tokens;
    }
    struct fwd_batch b = {.n_seq = x->n_items, .seq = x->fseq, .tokens = x->toks, .out = x->logits};
    bt_err fe = {0};
    int64_t t0 = bt_now_ns();
    int rc = forward(x->fc, &b, &fe);
    out->stage_busy_s[0] = (double)(bt_now_ns() - t0) * 1e-9;
    if (rc < 0) {
        /* forward() changed nothing; undo the history so the slots stay consistent. */
        for (int i = 0; i < x->n_items; i++)
            x->n_hist[x->items[i].slot] -= x->items[i].n_tokens;
        out->status = rc;
        snprintf(out->msg, sizeof out->msg, "%s", bt_errmsg(&fe, rc));
        return 1;
    }
    int row = 0;
    for (int i = 0; i < x->n_items; i++) {
        const struct exec_seq_item *it = &x->items[i];
        if (!it->sample) continue;
        int s = it->slot;
        struct sampler_result sr;
        sampler_sample(x->samp[s], x->logits + (size_t)row * (size_t)x->n_vocab, x->hist[s],
                       (size_t)x->n_hist[s], &sr);
        struct exec_result *r = &x->res[out->n_results++];
        r->seq_id = it->seq_id;
        r->token = sr.id;
        r->logprob = sr.logprob;
        r->n_top = sr.n_top < EXEC_MAX_TOP ? sr.n_top : EXEC_MAX_TOP;
        for (int k = 0; k < r->n_top; k++) {
            r->top_ids[k] = sr.top[k].id;
            r->top_logprobs[k] = sr.top[k].logprob;
        }
        row++;
    }
    out->results = x->res;
    return 1;
}

static void local_release(exec_t *ex, int slot) {
    struct exec_local *x = (struct exec_local *)ex;
    if (slot < 0 || slot >= ex->caps.n_slots) return;
    sampler_free(x->samp[slot]);
    x->samp[slot] = NULL;
    seqstate_reset(x->st, x->pslot[slot]);
    x->n_hist[slot] = 0;
}

static const struct exec_ops local_ops = {
    .submit = local_submit, .poll = local_poll, .release = local_release, .close = local_close};

int exec_local_open(exec_t **out, const struct exec_local_opts *o, bt_err *e) {
    *out = NULL;
    int n_slots = o->n_slots > 0 ? o->n_slots : 8;
    int max_ctx = o->max_ctx > 0 ? o->max_ctx : 4096;
    int max_batch = o->max_batch > 0 ? o->max_batch : 256;
    struct exec_local *x = calloc(1, sizeof *x);
    if (!x) return bt_fail(e, -ENOMEM, "exec_local: out of memory");
    x->base.ops = &local_ops;
    int rc = ops_init(NULL, e);
    if (!rc) rc = model_open(&x->m, o->model_path, e);
    if (rc) goto fail;
    const struct qwen35_hparams *hp = &x->m->hp;
    struct weights_opts wo = {.use_io_uring = 1};
    if ((rc = weights_load(&x->w, x->m, 0, hp->n_layer, &wo, e)) ||
        (rc = seqstate_pool_new(&x->st, hp, 0, hp->n_layer, n_slots, max_ctx, e)) ||
        (rc = pool_open(&x->pool, o->n_threads, e)) ||
        (rc = forward_ctx_new(&x->fc, x->w, x->st, x->pool, max_batch, e)))
        goto fail;
    x->n_vocab = hp->n_vocab;
    x->n_real = o->tok ? tokenizer_n_real(o->tok) : hp->n_vocab;
    if (x->n_real > x->n_vocab) x->n_real = x->n_vocab;
    x->base.caps.n_slots = n_slots; /* set early: local_close walks the per-slot arrays */
    x->pslot = calloc((size_t)n_slots, sizeof *x->pslot);
    x->samp = calloc((size_t)n_slots, sizeof *x->samp);
    x->hist = calloc((size_t)n_slots, sizeof *x->hist);
    x->n_hist = calloc((size_t)n_slots, sizeof *x->n_hist);
    x->items = calloc((size_t)n_slots, sizeof *x->items);
    x->toks = calloc((size_t)max_batch, sizeof *x->toks);
    x->fseq = calloc((size_t)n_slots, sizeof *x->fseq);
    x->logits = calloc((size_t)n_slots * (size_t)x->n_vocab, sizeof *x->logits);
    x->res = calloc((size_t)n_slots, sizeof *x->res);
    rc = (x->pslot && x->samp && x->hist && x->n_hist && x->items && x->toks && x->fseq &&
          x->logits && x->res)
             ? 0
             : -ENOMEM;
    for (int i = 0; !rc && i < n_slots; i++)
        if (!(x->hist[i] = malloc((size_t)max_ctx * sizeof **x->hist))) rc = -ENOMEM;
    if (rc) {
        bt_fail(e, rc, "exec_local: out of memory for %d slots", n_slots);
        goto fail;
    }
    /* The scheduler numbers slots itself: hold every pool slot for the executor's lifetime. */
    for (int i = 0; i < n_slots; i++)
        if ((rc = seqstate_acquire(x->st, &x->pslot[i], e))) goto fail;
    struct exec_caps *c = &x->base.caps;
    c->n_stages = 1;
    c->depth = 1;
    c->max_ctx = max_ctx;
    c->max_batch = max_batch;
    c->n_vocab = x->n_vocab;
    /* The exact state of one sequence: recurrent state (a context of 0) plus the KV per token
     * (rounded up: the pool pads each layer's block to 16 floats). */
    size_t fixed = seqstate_bytes(hp, 0, hp->n_layer, 0);
    size_t full = seqstate_bytes(hp, 0, hp->n_layer, max_ctx);
    c->stage[0].seq_bytes = fixed;
    c->stage[0].token_bytes = (full - fixed + (size_t)max_ctx - 1) / (size_t)max_ctx;
    c->stage[0].budget_bytes = o->state_budget_bytes;
    BT_LOG(INFO, "exec", "local model=%s layers=%d slots=%d ctx=%d batch=%d", o->model_path,
           hp->n_layer, n_slots, max_ctx, max_batch);
    *out = &x->base;
    return 0;
fail:
    local_close(&x->base);
    return rc;
}
