/* engine/forward.c: the Qwen3.5 forward pass over a layer range, see forward.h. One helper per
 * block kind (spec §4 MLP, §5 gated attention, §6 Gated DeltaNet); each reads like the spec.
 * Threading: matrices through pool_matmul (rows split), per-sequence parts through pool_run
 * split over channels, heads or (token, head) pairs; never a split reduction. */
#include "engine/forward.h"

#include "common/assert.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shorthands for the hyperparameters, computed once. */
struct dims {
    int64_t H, I, V; /* hidden, ffn, vocabulary */
    int64_t n_head, n_kv, hd, QG, KVD, OD, n_rot;
    int64_t Hk, Hv, dk, dv, KD, VD, CD, K; /* GDN */
};

/* Per-phase timers (BT_PROFILE=1): wall ns per phase, logged at DEBUG after every pass and
 * in total when the context is freed; single-token passes (decode at batch 1) are also totalled
 * apart, with the weight bytes each matmul phase read and their GB/s, since that is the
 * memory-bound case. Off: one predictable branch per phase. */
enum prof_phase {
    P_EMBED,
    P_NORM,
    P_GDN_IN,
    P_GDN_CONV,
    P_GDN_HEADS,
    P_GDN_OUT,
    P_ATT_IN,
    P_ATT_PREP,
    P_ATT,
    P_ATT_OUT,
    P_MLP_IN,
    P_MLP_ACT,
    P_MLP_DOWN,
    P_HEAD,
    P_COUNT
};
static const char *const prof_name[P_COUNT] = {
    "embed",    "norm+add", "gdn_in",  "gdn_conv", "gdn_heads", "gdn_out",  "att_in",
    "att_prep", "att",      "att_out", "mlp_in",   "mlp_act",   "mlp_down", "head",
};
#define PROF(c, ph, stmt)                                                                          \
    do {                                                                                           \
        int64_t prof_t0_ = (c)->prof ? bt_now_ns() : 0;                                            \
        stmt;                                                                                      \
        if ((c)->prof) (c)->prof_ns[ph] += bt_now_ns() - prof_t0_;                                 \
    } while (0)

struct forward_ctx {
    const struct weights *w;
    const struct qwen35_hparams *hp;
    seqstate_pool_t *st;
    pool_t *pool;
    int nth;
    int max_tokens;
    struct dims d;
    /* per-token tables of the current batch */
    int *tok_seq;     /* [max_tokens] sequence index of each token */
    int64_t *tok_pos; /* [max_tokens] position of each token */
    int *seq_first;   /* [max_tokens] first token of each sequence */
    const struct fwd_batch *b;
    int64_t n_tokens; /* tokens in the current batch */
    /* activations, rows = tokens */
    float *x;             /* [n][H] residual stream */
    float *xb;            /* [n][H] normed input of a block; final-norm rows on the last range */
    float *hb;            /* [n][H] block output before the residual add */
    float *qkv;           /* [n][CD] GDN projection m (raw, what the conv state keeps) */
    float *mconv;         /* [n][CD] silu(conv(m)) */
    float *z;             /* [n][VD] GDN output gate */
    float *beta;          /* [n][Hv] raw b, then sigmoid */
    float *alpha;         /* [n][Hv] raw alpha */
    float *gdn_o;         /* [n][VD] delta rule output, then gated-normed */
    float *qg;            /* [n][QG] attention query|gate per head */
    float *kb, *vb;       /* [n][KVD] attention k, v */
    float *att;           /* [n][OD] attention output, gated */
    float *ffn_g, *ffn_u; /* [n][I] */
    void *qbuf;           /* quantized activations of one matmul input (pool_matmul_multi) */
    /* per-thread scratch */
    float *thr; /* [nth][thr_floats] */
    size_t thr_floats;
    void *mem[24];
    int n_mem;
    int layer; /* layer being run (for the pool_run callbacks) */
    int prof;  /* BT_PROFILE set: time the phases */
    int64_t prof_ns[P_COUNT], prof_total[P_COUNT], prof_passes, prof_tokens, prof_wall;
    int64_t prof_bytes[P_COUNT]; /* weight bytes, this pass */
    int64_t prof1_ns[P_COUNT], prof1_bytes[P_COUNT], prof1_passes, prof1_wall; /* n == 1 */
};

static int64_t mat_bytes(const struct mat *m) {
    return m->data ? (int64_t)m->rows * (int64_t)m->row_bytes : 0;
}
/* Weight bytes of a phase's matrices, counted when profiling. */
static void prof_mats(forward_ctx_t *c, enum prof_phase ph, const struct pool_mm *mm, int n_mm) {
    if (!c->prof) return;
    for (int k = 0; k < n_mm; k++)
        c->prof_bytes[ph] += mat_bytes(mm[k].w);
}

static float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}
/* softplus, exactly x above 20 like both references (trap §16.22). */
static float softplusf(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}

/* Through pool_run even without a pool: jobs run in its floating-point mode (threadpool.h). */
static void run(forward_ctx_t *c, pool_fn fn) {
    pool_run(c->pool, fn, c);
}

/* One matrix; ph: the profile phase its weight bytes count to. */
static void matmul(forward_ctx_t *c, enum prof_phase ph, const struct mat *w, const float *x,
                   int64_t ldx, int64_t n, float *y, int64_t ldy) {
    struct pool_mm mm = {w, y, ldy};
    prof_mats(c, ph, &mm, 1);
    pool_matmul_multi(c->pool, &mm, 1, x, ldx, n, c->qbuf);
}

/* ---- Gated DeltaNet (spec §6) ---- */

/* Causal conv over the batch's tokens, channels split across threads (§6.2). */
static void gdn_conv_job(void *ctx, int ith, int nth) {
    forward_ctx_t *c = ctx;
    const struct dims *d = &c->d;
    const struct layer_weights *L = &c->w->layers[c->layer];
    int64_t c0, c1;
    pool_slice(d->CD, ith, nth, 16, &c0, &c1);
    if (c0 >= c1) return;
    for (int s = 0; s < c->b->n_seq; s++) {
        const struct fwd_seq *sq = &c->b->seq[s];
        int64_t t0 = c->seq_first[s];
        float *state = seqstate_conv(c->st, sq->slot, c->layer);
        ops->conv1d_seq(c->mconv + t0 * d->CD, d->CD, state, c->qkv + t0 * d->CD, d->CD,
                        sq->n_tokens, L->conv.data, d->K, c0, c1);
    }
}

/* q/k normalisation, gates and the delta rule, (sequence, value head) pairs split across
 * threads (§6.3-§6.6), then the gated norm (§6.8). */
static void gdn_heads_job(void *ctx, int ith, int nth) {
    forward_ctx_t *c = ctx;
    const struct dims *d = &c->d;
    const struct layer_weights *L = &c->w->layers[c->layer];
    const float *ssm_a = L->ssm_a.data, *ssm_dt = L->ssm_dt.data, *norm_w = L->ssm_norm.data;
    float eps = c->hp->rms_eps, q_scale = 1.0f / sqrtf((float)d->dk);
    int64_t i0, i1;
    pool_slice((int64_t)c->b->n_seq * d->Hv, ith, nth, 1, &i0, &i1);
    float *scr = c->thr + (size_t)ith * c->thr_floats;
    for (int64_t item = i0; item < i1; item++) {
        int s = (int)(item / d->Hv);
        int64_t j = item % d->Hv;
        int64_t a = j % d->Hk; /* GGUF tiled order: value head j reads key head j mod H_k (§6.5) */
        const struct fwd_seq *sq = &c->b->seq[s];
        int64_t t0 = c->seq_first[s], n = sq->n_tokens;
        float *S = seqstate_delta(c->st, sq->slot, c->layer) + j * d->dv * d->dk;
        /* Per-token inputs of this head, contiguous: q [n][dk], k [n][dk], g [n], beta [n]. */
        float *q = scr, *k = q + n * d->dk, *g = k + n * d->dk, *bt = g + n;
        float *chunk_scratch = bt + n;
        for (int64_t t = 0; t < n; t++) {
            const float *m = c->mconv + (t0 + t) * d->CD;
            memcpy(q + t * d->dk, m + a * d->dk, (size_t)d->dk * sizeof(float));
            memcpy(k + t * d->dk, m + d->KD + a * d->dk, (size_t)d->dk * sizeof(float));
            ops->l2norm_scale(q + t * d->dk, d->dk, eps, q_scale); /* q scaled, k not (§16.10) */
            ops->l2norm_scale(k + t * d->dk, d->dk, eps, 1.0f);
            bt[t] = sigmoidf(c->beta[(t0 + t) * d->Hv + j]); /* β = σ(b) */
            g[t] = ssm_a[j] * softplusf(c->alpha[(t0 + t) * d->Hv + j] + ssm_dt[j]); /* §16.3 */
        }
        const float *v = c->mconv + t0 * d->CD + 2 * d->KD + j * d->dv;
        float *o = c->gdn_o + t0 * d->VD + j * d->dv;
        if (n >= DELTA_CHUNK / 2 && ops->delta_rule_chunk) {
            ops->delta_rule_chunk(S, q, d->dk, k, d->dk, v, d->CD, g, bt, o, d->VD, n, d->dk, d->dv,
                                  chunk_scratch);
        } else {
            for (int64_t t = 0; t < n; t++)
                ops->delta_rule_step(S, q + t * d->dk, k + t * d->dk, v + t * d->CD, expf(g[t]),
                                     bt[t], o + t * d->VD, d->dk, d->dv);
        }
        for (int64_t t = 0; t < n; t++) /* normalise, then gate with silu(z) (§3.2, §16.8) */
            ops->gated_rmsnorm(o + t * d->VD, o + t * d->VD, c->z + (t0 + t) * d->VD + j * d->dv,
                               norm_w, d->dv, eps);
    }
}

static void linear_attn_block(forward_ctx_t *c, const struct layer_weights *L, int64_t n) {
    const struct dims *d = &c->d;
    /* the four input projections in one pass, sharing one activation quantization */
    const struct pool_mm in[4] = {
        {&L->wqkv, c->qkv, d->CD},     /* m = [q | k | v] */
        {&L->wz, c->z, d->VD},         /* z: output gate */
        {&L->wbeta, c->beta, d->Hv},   /* b -> β */
        {&L->walpha, c->alpha, d->Hv}, /* α -> g */
    };
    prof_mats(c, P_GDN_IN, in, 4);
    PROF(c, P_GDN_IN, pool_matmul_multi(c->pool, in, 4, c->xb, d->H, n, c->qbuf));
    PROF(c, P_GDN_CONV, run(c, gdn_conv_job));   /* causal conv + silu on m */
    PROF(c, P_GDN_HEADS, run(c, gdn_heads_job)); /* delta rule per value head */
    PROF(c, P_GDN_OUT, matmul(c, P_GDN_OUT, &L->ssm_out, c->gdn_o, d->VD, n, c->hb, d->H));
}

/* ---- gated full attention (spec §5) ---- */

/* q/k RMSNorm, RoPE and the KV cache append, tokens split across threads. */
static void attn_prep_job(void *ctx, int ith, int nth) {
    forward_ctx_t *c = ctx;
    const struct dims *d = &c->d;
    const struct layer_weights *L = &c->w->layers[c->layer];
    float eps = c->hp->rms_eps, theta = c->hp->rope_theta;
    int64_t t0, t1;
    pool_slice(c->n_tokens, ith, nth, 1, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        int64_t pos = c->tok_pos[t];
        int slot = c->b->seq[c->tok_seq[t]].slot;
        for (int64_t h = 0; h < d->n_head; h++) {
            float *q = c->qg + t * d->QG + h * 2 * d->hd; /* per head [query | gate] (§16.7) */
            ops->rmsnorm(q, q, L->q_norm.data, d->hd, eps);
            ops->rope_neox(q, d->n_rot, pos, theta); /* after the norm (§16.9) */
        }
        float *kc = seqstate_k(c->st, slot, c->layer) + pos * d->KVD;
        float *vc = seqstate_v(c->st, slot, c->layer) + pos * d->KVD;
        for (int64_t g = 0; g < d->n_kv; g++) {
            float *k = c->kb + t * d->KVD + g * d->hd;
            ops->rmsnorm(k, k, L->k_norm.data, d->hd, eps);
            ops->rope_neox(k, d->n_rot, pos, theta);
        }
        memcpy(kc, c->kb + t * d->KVD, (size_t)d->KVD * sizeof(float));
        memcpy(vc, c->vb + t * d->KVD, (size_t)d->KVD * sizeof(float));
    }
}

/* Causal GQA attention and the sigmoid output gate, (token, head) pairs split. */
static void attn_job(void *ctx, int ith, int nth) {
    forward_ctx_t *c = ctx;
    const struct dims *d = &c->d;
    int64_t i0, i1;
    pool_slice(c->n_tokens * d->n_head, ith, nth, 1, &i0, &i1);
    float *scores = c->thr + (size_t)ith * c->thr_floats;
    int64_t group = d->n_head / d->n_kv;
    for (int64_t item = i0; item < i1; item++) {
        int64_t t = item / d->n_head, h = item % d->n_head, g = h / group; /* ⌊h/group⌋ (§16.5) */
        int slot = c->b->seq[c->tok_seq[t]].slot;
        const float *q = c->qg + t * d->QG + h * 2 * d->hd, *gate = q + d->hd;
        const float *kc = seqstate_k(c->st, slot, c->layer) + g * d->hd;
        const float *vc = seqstate_v(c->st, slot, c->layer) + g * d->hd;
        float *o = c->att + t * d->OD + h * d->hd;
        ops->attention(o, q, kc, vc, d->KVD, c->tok_pos[t] + 1, d->hd, c->hp->attn_scale, scores);
        for (int64_t i = 0; i < d->hd; i++)
            o[i] *= sigmoidf(gate[i]); /* attention gate is a sigmoid (§16.8) */
    }
}

static void full_attn_block(forward_ctx_t *c, const struct layer_weights *L, int64_t n) {
    const struct dims *d = &c->d;
    const struct pool_mm in[3] = {
        {&L->wq, c->qg, d->QG}, /* query | gate, per head */
        {&L->wk, c->kb, d->KVD},
        {&L->wv, c->vb, d->KVD},
    };
    prof_mats(c, P_ATT_IN, in, 3);
    PROF(c, P_ATT_IN, pool_matmul_multi(c->pool, in, 3, c->xb, d->H, n, c->qbuf));
    PROF(c, P_ATT_PREP, run(c, attn_prep_job)); /* q/k norm, rope, append to cache */
    PROF(c, P_ATT, run(c, attn_job));           /* softmax(qK/√d)V ⊙ σ(gate) */
    PROF(c, P_ATT_OUT, matmul(c, P_ATT_OUT, &L->wo, c->att, d->OD, n, c->hb, d->H));
}

/* ---- MLP (spec §4) ---- */

/* silu(gate) * up over all tokens, in slices of 16 floats across threads */
static void mlp_act_job(void *ctx, int ith, int nth) {
    forward_ctx_t *c = ctx;
    int64_t i0, i1;
    pool_slice(c->n_tokens * c->d.I, ith, nth, 16, &i0, &i1);
    if (i0 < i1) ops->silu_mul(c->ffn_g + i0, c->ffn_g + i0, c->ffn_u + i0, i1 - i0);
}

static void mlp_block(forward_ctx_t *c, const struct layer_weights *L, int64_t n) {
    const struct dims *d = &c->d;
    const struct pool_mm in[2] = {{&L->ffn_gate, c->ffn_g, d->I}, {&L->ffn_up, c->ffn_u, d->I}};
    /* gate and up in one pass */
    prof_mats(c, P_MLP_IN, in, 2);
    PROF(c, P_MLP_IN, pool_matmul_multi(c->pool, in, 2, c->xb, d->H, n, c->qbuf));
    /* one token's 12288 values take a few microseconds: a hand-off would cost as much */
    if (n * d->I >= 65536)
        PROF(c, P_MLP_ACT, run(c, mlp_act_job));
    else
        PROF(c, P_MLP_ACT, ops->silu_mul(c->ffn_g, c->ffn_g, c->ffn_u, n * d->I));
    PROF(c, P_MLP_DOWN, matmul(c, P_MLP_DOWN, &L->ffn_down, c->ffn_g, d->I, n, c->hb, d->H));
}

static void rmsnorm_rows(float *y, const float *x, const struct mat *w, int64_t n, int64_t H,
                         float eps) {
    for (int64_t t = 0; t < n; t++)
        ops->rmsnorm(y + t * H, x + t * H, w->data, H, eps);
}

/* ---- the pass ---- */

static void prof_log(const char *what, const int64_t *ns, int64_t total, int64_t passes,
                     int64_t tokens) {
    char line[512];
    int len = snprintf(line, sizeof line, "%s passes=%lld tokens=%lld total_ms=%.2f", what,
                       (long long)passes, (long long)tokens, (double)total * 1e-6);
    int64_t sum = 0;
    for (int i = 0; i < P_COUNT && len > 0 && len < (int)sizeof line; i++) {
        sum += ns[i];
        len += snprintf(line + len, sizeof line - (size_t)len, " %s=%.2f", prof_name[i],
                        (double)ns[i] * 1e-6);
    }
    BT_LOG(DEBUG, "forward", "%s other=%.2f", line, (double)(total - sum) * 1e-6);
}

/* Adds this pass's phase times to the totals and logs them (BT_PROFILE only). */
static void prof_pass(forward_ctx_t *c, int64_t n, int64_t t_pass) {
    if (!c->prof) return;
    int64_t total = bt_now_ns() - t_pass;
    for (int i = 0; i < P_COUNT; i++)
        c->prof_total[i] += c->prof_ns[i];
    c->prof_passes++;
    c->prof_tokens += n;
    c->prof_wall += total;
    if (n == 1) {
        for (int i = 0; i < P_COUNT; i++)
            c->prof1_ns[i] += c->prof_ns[i], c->prof1_bytes[i] += c->prof_bytes[i];
        c->prof1_passes++;
        c->prof1_wall += total;
    }
    prof_log("profile pass:", c->prof_ns, total, 1, n);
}

/* Single-token totals: per matmul phase ms, share of the pass and GB/s of its weights. */
static void prof_log1(const forward_ctx_t *c) {
    char line[1024];
    int64_t bytes = 0;
    for (int i = 0; i < P_COUNT; i++)
        bytes += c->prof1_bytes[i];
    double wall = (double)c->prof1_wall;
    int len = snprintf(line, sizeof line, "passes=%lld ms_per_pass=%.2f weight_gbps=%.1f",
                       (long long)c->prof1_passes, wall * 1e-6 / (double)c->prof1_passes,
                       (double)bytes / wall);
    for (int i = 0; i < P_COUNT && len > 0 && len < (int)sizeof line; i++) {
        if (!c->prof1_ns[i]) continue;
        len += snprintf(line + len, sizeof line - (size_t)len, " %s=%.1f%%", prof_name[i],
                        100.0 * (double)c->prof1_ns[i] / wall);
        if (c->prof1_bytes[i] && len > 0 && len < (int)sizeof line)
            len += snprintf(line + len, sizeof line - (size_t)len, "@%.1fGB/s",
                            (double)c->prof1_bytes[i] / (double)c->prof1_ns[i]);
    }
    BT_LOG(DEBUG, "forward", "profile single-token: %s", line);
}

int forward_n_out(const struct fwd_batch *b) {
    int n = 0;
    for (int s = 0; s < b->n_seq; s++)
        n += b->seq[s].out == FWD_OUT_ALL ? b->seq[s].n_tokens : b->seq[s].out == FWD_OUT_LAST;
    return n;
}

static int check_batch(forward_ctx_t *c, const struct fwd_batch *b, int *n_tokens, bt_err *e) {
    const struct weights *w = c->w;
    int n = 0;
    if (b->n_seq < 1 || !b->seq) return bt_fail(e, BT_EINVAL, "forward: empty batch");
    for (int s = 0; s < b->n_seq; s++) {
        const struct fwd_seq *sq = &b->seq[s];
        if (sq->n_tokens < 1 || sq->n_tokens > c->max_tokens - n)
            return bt_fail(e, BT_EINVAL, "forward: sequence %d has %d tokens; batch limit %d", s,
                           sq->n_tokens, c->max_tokens);
        if (!seqstate_in_use(c->st, sq->slot))
            return bt_fail(e, BT_EINVAL, "forward: sequence %d: slot %d not acquired", s, sq->slot);
        for (int r = 0; r < s; r++)
            if (b->seq[r].slot == sq->slot)
                return bt_fail(e, BT_EINVAL, "forward: slot %d appears twice in the batch",
                               sq->slot);
        int64_t pos = seqstate_pos(c->st, sq->slot);
        if (pos + sq->n_tokens > seqstate_max_ctx(c->st))
            return bt_fail(e, BT_ECAPACITY,
                           "forward: slot %d at position %lld + %d tokens "
                           "exceeds the context of %d",
                           sq->slot, (long long)pos, sq->n_tokens, seqstate_max_ctx(c->st));
        if ((unsigned)sq->out > FWD_OUT_NONE)
            return bt_fail(e, BT_EINVAL, "forward: sequence %d: bad output mode %d", s,
                           (int)sq->out);
        n += sq->n_tokens;
    }
    if (w->lo == 0) {
        if (!b->tokens) return bt_fail(e, BT_EINVAL, "forward: first stage needs token ids");
        for (int t = 0; t < n; t++)
            if (b->tokens[t] < 0 || b->tokens[t] >= c->hp->n_vocab)
                return bt_fail(e, BT_EINVAL, "forward: token %d = %d outside [0, %d)", t,
                               b->tokens[t], c->hp->n_vocab);
    } else if (!b->hidden) {
        return bt_fail(e, BT_EINVAL, "forward: stage [%d, %d) needs hidden states", w->lo, w->hi);
    }
    if (!b->out) return bt_fail(e, BT_EINVAL, "forward: no output buffer");
    *n_tokens = n;
    return 0;
}

int forward(forward_ctx_t *c, const struct fwd_batch *b, bt_err *e) {
    const struct weights *w = c->w;
    const struct dims *d = &c->d;
    float eps = c->hp->rms_eps;
    int n = 0;
    int rc = check_batch(c, b, &n, e);
    if (rc) return rc;
    c->b = b;
    c->n_tokens = n;
    for (int s = 0, t = 0; s < b->n_seq; s++) {
        int slot = b->seq[s].slot;
        c->seq_first[s] = t;
        for (int i = 0; i < b->seq[s].n_tokens; i++, t++) {
            c->tok_seq[t] = s;
            c->tok_pos[t] = seqstate_pos(c->st, slot) + i;
        }
    }

    if (c->prof) {
        memset(c->prof_ns, 0, sizeof c->prof_ns);
        memset(c->prof_bytes, 0, sizeof c->prof_bytes);
    }
    int64_t t_pass = c->prof ? bt_now_ns() : 0;
    /* input: embedding rows (no scaling, §2) or the previous stage's hidden states */
    int64_t t_embed = t_pass;
    if (w->lo == 0) {
        for (int t = 0; t < n; t++)
            ops->dequantize_row[w->tok_embd.dt]((const char *)w->tok_embd.data +
                                                    (size_t)b->tokens[t] * w->tok_embd.row_bytes,
                                                c->x + (size_t)t * d->H, d->H);
    } else {
        memcpy(c->x, b->hidden, (size_t)n * d->H * sizeof(float));
    }
    if (c->prof) c->prof_ns[P_EMBED] += bt_now_ns() - t_embed;

    for (int l = w->lo; l < w->hi; l++) {
        const struct layer_weights *L = &w->layers[l];
        c->layer = l;
        PROF(c, P_NORM, rmsnorm_rows(c->xb, c->x, &L->attn_norm, n, d->H, eps)); /* pre-norm */
        if (L->kind == LAYER_LINEAR_ATTN)
            linear_attn_block(c, L, n); /* conv1d + gated delta rule */
        else
            full_attn_block(c, L, n); /* rope + KV cache + gated attention */
        PROF(c, P_NORM, {
            ops->add(c->x, c->hb, (int64_t)n * d->H);               /* residual */
            rmsnorm_rows(c->xb, c->x, &L->post_norm, n, d->H, eps); /* post-attention norm */
        });
        mlp_block(c, L, n);                                        /* SwiGLU */
        PROF(c, P_NORM, ops->add(c->x, c->hb, (int64_t)n * d->H)); /* residual */
    }

    for (int s = 0; s < b->n_seq; s++) /* every stage counts the tokens it consumed */
        seqstate_set_pos(c->st, b->seq[s].slot,
                         seqstate_pos(c->st, b->seq[s].slot) + b->seq[s].n_tokens);

    if (w->hi < c->hp->n_layer) {
        memcpy(b->out, c->x, (size_t)n * d->H * sizeof(float));
        prof_pass(c, n, t_pass);
        return 0;
    }
    int64_t t_head = c->prof ? bt_now_ns() : 0;
    /* last stage: final norm of the requested rows, then the LM head (§7) */
    int n_out = 0;
    for (int s = 0; s < b->n_seq; s++) {
        const struct fwd_seq *sq = &b->seq[s];
        int first = sq->out == FWD_OUT_ALL    ? 0
                    : sq->out == FWD_OUT_LAST ? sq->n_tokens - 1
                                              : sq->n_tokens;
        for (int i = first; i < sq->n_tokens; i++, n_out++)
            ops->rmsnorm(c->xb + (size_t)n_out * d->H, c->x + (size_t)(c->seq_first[s] + i) * d->H,
                         w->output_norm.data, d->H, eps);
    }
    if (b->final_norm) memcpy(b->final_norm, c->xb, (size_t)n_out * d->H * sizeof(float));
    if (n_out) matmul(c, P_HEAD, &w->output, c->xb, d->H, n_out, b->out, d->V);
    if (c->prof) c->prof_ns[P_HEAD] += bt_now_ns() - t_head;
    prof_pass(c, n, t_pass);
    return 0;
}

/* ---- setup ---- */

static float *scratch(forward_ctx_t *c, size_t floats, int need) {
    if (!need || !floats) return NULL;
    void *p = NULL;
    BT_ASSERT(c->n_mem < (int)(sizeof c->mem / sizeof *c->mem));
    if (posix_memalign(&p, 64, floats * sizeof(float))) return NULL;
    c->mem[c->n_mem++] = p;
    return p;
}

int forward_ctx_new(forward_ctx_t **out, const struct weights *w, seqstate_pool_t *st, pool_t *pool,
                    int max_tokens, bt_err *e) {
    *out = NULL;
    if (max_tokens < 1) return bt_fail(e, BT_EINVAL, "forward: max_tokens %d", max_tokens);
    if (!ops) return bt_fail(e, BT_EINVAL, "forward: ops_init() has not been called");
    int st_lo, st_hi;
    seqstate_range(st, &st_lo, &st_hi);
    if (st_lo != w->lo || st_hi != w->hi)
        return bt_fail(e, BT_EINVAL, "forward: state pool covers layers [%d, %d), weights [%d, %d)",
                       st_lo, st_hi, w->lo, w->hi);
    forward_ctx_t *c = calloc(1, sizeof *c);
    if (!c) return bt_fail(e, -ENOMEM, "forward ctx");
    const struct qwen35_hparams *hp = &w->m->hp;
    c->w = w;
    c->hp = hp;
    c->st = st;
    c->pool = pool;
    c->nth = pool ? pool_size(pool) : 1;
    c->max_tokens = max_tokens;
    const char *prof = getenv("BT_PROFILE");
    c->prof = prof && *prof && strcmp(prof, "0");
    struct dims *d = &c->d;
    d->H = hp->n_embd, d->I = hp->n_ff, d->V = hp->n_vocab;
    d->n_head = hp->n_head, d->n_kv = hp->n_head_kv, d->hd = hp->head_dim, d->n_rot = hp->n_rot;
    d->QG = 2 * d->n_head * d->hd, d->KVD = d->n_kv * d->hd, d->OD = d->n_head * d->hd;
    d->Hk = hp->ssm_n_group, d->Hv = hp->ssm_dt_rank, d->dk = hp->ssm_d_state;
    d->dv = hp->ssm_head_v_dim, d->KD = d->Hk * d->dk, d->VD = hp->ssm_d_inner;
    d->CD = 2 * d->KD + d->VD, d->K = hp->conv_kernel;

    int has_lin = 0, has_full = 0;
    for (int l = w->lo; l < w->hi; l++)
        has_lin |= hp->kind[l] == LAYER_LINEAR_ATTN, has_full |= hp->kind[l] == LAYER_FULL_ATTN;
    size_t n = (size_t)max_tokens;
    /* per thread: attention scores over the context, or a head's q, k, g, β for the batch
     * plus the chunked delta rule's scratch */
    size_t thr_attn = has_full ? (size_t)seqstate_max_ctx(st) : 0;
    size_t thr_gdn =
        has_lin ? n * (size_t)(2 * d->dk + 2) + delta_rule_chunk_scratch(d->dk, d->dv) : 0;
    c->thr_floats = (thr_attn > thr_gdn ? thr_attn : thr_gdn) + 16;
    c->thr_floats = (c->thr_floats + 15) & ~(size_t)15;

    int ok = (c->tok_seq = calloc(n, sizeof *c->tok_seq)) &&
             (c->tok_pos = calloc(n, sizeof *c->tok_pos)) &&
             (c->seq_first = calloc(n, sizeof *c->seq_first)) && (c->x = scratch(c, n * d->H, 1)) &&
             (c->xb = scratch(c, n * d->H, 1)) && (c->hb = scratch(c, n * d->H, 1)) &&
             (c->ffn_g = scratch(c, n * d->I, 1)) && (c->ffn_u = scratch(c, n * d->I, 1)) &&
             (c->thr = scratch(c, (size_t)c->nth * c->thr_floats, 1));
    int64_t max_cols = d->H > d->I ? d->H : d->I; /* widest matmul input */
    if (d->VD > max_cols) max_cols = d->VD;
    if (d->OD > max_cols) max_cols = d->OD;
    if (ok)
        ok = (c->qbuf = scratch(c, pool_matmul_qbuf_bytes(n, max_cols) / sizeof(float) + 1, 1)) !=
             NULL;
    if (ok && has_lin)
        ok = (c->qkv = scratch(c, n * d->CD, 1)) && (c->mconv = scratch(c, n * d->CD, 1)) &&
             (c->z = scratch(c, n * d->VD, 1)) && (c->beta = scratch(c, n * d->Hv, 1)) &&
             (c->alpha = scratch(c, n * d->Hv, 1)) && (c->gdn_o = scratch(c, n * d->VD, 1));
    if (ok && has_full)
        ok = (c->qg = scratch(c, n * d->QG, 1)) && (c->kb = scratch(c, n * d->KVD, 1)) &&
             (c->vb = scratch(c, n * d->KVD, 1)) && (c->att = scratch(c, n * d->OD, 1));
    if (!ok) {
        forward_ctx_free(c);
        return bt_fail(e, -ENOMEM, "forward: scratch for %d tokens", max_tokens);
    }
    *out = c;
    return 0;
}

void forward_ctx_free(forward_ctx_t *c) {
    if (!c) return;
    if (c->prof && c->prof_passes)
        prof_log("profile total:", c->prof_total, c->prof_wall, c->prof_passes, c->prof_tokens);
    if (c->prof && c->prof1_passes) prof_log1(c);
    for (int i = 0; i < c->n_mem; i++)
        free(c->mem[i]);
    free(c->tok_seq);
    free(c->tok_pos);
    free(c->seq_first);
    free(c);
}
