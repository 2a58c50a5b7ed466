/* coordinator/exec_local.c: see exec_local.h. */
#include "coordinator/exec_local.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/model.h"
#include "engine/seqrun.h"
#include "ops/ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct exec_local {
    struct exec base; /* first: exec_t * is a struct exec_local * */
    struct model_desc *m;
    seqrun_t *run; /* all layers: weights, state slots, samplers and histories */
    int n_vocab;
    int *pslot; /* [n_slots]: seqstate slot behind each scheduler slot */
    /* The stored batch (depth 1). */
    int pending;
    uint64_t batch_id;
    int n_items;
    struct exec_seq_item *items; /* [n_slots] (tokens point into toks) */
    int32_t *toks;               /* [max_batch] */
    struct seqrun_seq *seqs;     /* [n_slots] */
    float *logits;               /* [n_slots][n_vocab] */
    struct exec_result *res;     /* [n_slots] */
};

static void local_close(exec_t *ex) {
    struct exec_local *x = (struct exec_local *)ex;
    if (!x) return;
    free(x->pslot);
    free(x->items);
    free(x->toks);
    free(x->seqs);
    free(x->logits);
    free(x->res);
    seqrun_close(x->run);
    model_close(x->m);
    free(x);
}

/* The request's settings as the sampler takes them (exec_sampling is already validated). */
static void to_seqrun_sampling(const struct exec_sampling *sp, struct seqrun_sampling *out) {
    memset(out, 0, sizeof *out);
    struct sampler_params *p = &out->p;
    sampler_params_default(p);
    p->temperature = sp->temperature;
    p->top_k = sp->top_k;
    p->top_p = sp->top_p;
    p->min_p = sp->min_p;
    p->repetition_penalty = sp->repetition_penalty;
    p->presence_penalty = sp->presence_penalty;
    p->frequency_penalty = sp->frequency_penalty;
    p->seed = sp->seed;
    p->n_logprobs = sp->want_logprob ? sp->n_top : 0;
    out->want_logprob = sp->want_logprob;
}

static int local_submit(exec_t *ex, uint64_t batch_id, const struct exec_seq_item *items, int n,
                        bt_err *e) {
    struct exec_local *x = (struct exec_local *)ex;
    const struct exec_caps *c = &ex->caps;
    seqstate_pool_t *st = seqrun_state(x->run);
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
        int64_t at = it->pos == 0 ? 0 : seqstate_pos(st, x->pslot[it->slot]);
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
            int ps = x->pslot[items[i].slot];
            struct seqrun_sampling sp;
            to_seqrun_sampling(items[i].sp, &sp);
            int rc = seqrun_set_sampling(x->run, ps, &sp, 1, e);
            if (rc < 0) return rc;
            seqstate_reset(st, ps);
            seqrun_reset_history(x->run, ps);
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
        x->seqs[i] = (struct seqrun_seq){
            .slot = x->pslot[it->slot], .n_tokens = it->n_tokens, .want_out = it->sample};
    }
    /* At most max_batch tokens = the forward scratch: one forward() call, so a failure
     * changes no sequence and no history (history is added only after the rows ran). */
    struct seqrun_batch b = {
        .n_seq = x->n_items, .seq = x->seqs, .tokens = x->toks, .out = x->logits};
    bt_err fe = {0};
    int64_t t0 = bt_now_ns();
    int rc = seqrun_forward(x->run, &b, NULL, NULL, &fe);
    out->stage_busy_s[0] = (double)(bt_now_ns() - t0) * 1e-9;
    if (rc < 0) {
        out->status = rc;
        snprintf(out->msg, sizeof out->msg, "%s", bt_errmsg(&fe, rc));
        return 1;
    }
    int row = 0;
    for (int i = 0; i < x->n_items; i++) {
        const struct exec_seq_item *it = &x->items[i];
        int ps = x->pslot[it->slot];
        seqrun_add_history(x->run, ps, it->tokens, it->n_tokens);
        if (!it->sample) continue;
        struct sampler_result sr;
        seqrun_sample(x->run, ps, x->logits + (size_t)row * (size_t)x->n_vocab, &sr);
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
    seqrun_clear_sampling(x->run, x->pslot[slot]);
    seqstate_reset(seqrun_state(x->run), x->pslot[slot]);
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
    /* forward scratch = the batch limit: a submitted batch runs in one forward() call */
    struct seqrun_opts ro = {.lo = 0,
                             .hi = hp->n_layer,
                             .n_slots = n_slots,
                             .max_ctx = max_ctx,
                             .fwd_tokens = max_batch,
                             .threads = o->n_threads,
                             .n_real = o->tok ? tokenizer_n_real(o->tok) : hp->n_vocab};
    if ((rc = seqrun_open(&x->run, x->m, &ro, e))) goto fail;
    seqstate_pool_t *st = seqrun_state(x->run);
    x->n_vocab = hp->n_vocab;
    x->base.caps.n_slots = n_slots;
    x->pslot = calloc((size_t)n_slots, sizeof *x->pslot);
    x->items = calloc((size_t)n_slots, sizeof *x->items);
    x->toks = calloc((size_t)max_batch, sizeof *x->toks);
    x->seqs = calloc((size_t)n_slots, sizeof *x->seqs);
    x->logits = calloc((size_t)n_slots * (size_t)x->n_vocab, sizeof *x->logits);
    x->res = calloc((size_t)n_slots, sizeof *x->res);
    if (!(x->pslot && x->items && x->toks && x->seqs && x->logits && x->res)) {
        rc = bt_fail(e, -ENOMEM, "exec_local: out of memory for %d slots", n_slots);
        goto fail;
    }
    /* The scheduler numbers slots itself: hold every pool slot for the executor's lifetime. */
    for (int i = 0; i < n_slots; i++)
        if ((rc = seqstate_acquire(st, &x->pslot[i], e))) goto fail;
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
