/* coordinator/planner.c: see planner.h. */
#include "coordinator/planner.h"

#include "engine/seqstate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define GIB           (1024.0 * 1024.0 * 1024.0)
#define MIB           (1024.0 * 1024.0)
#define FULL_SEARCH_N 8 /* up to this many workers: every subset */
#define ALL_ORDERS_K  4 /* up to this many stages: every order */

int planner_model_from_desc(struct plan_model *pm, const struct model_desc *m, int max_seqs,
                            int max_ctx, int max_batch, bt_err *e) {
    const struct qwen35_hparams *hp = &m->hp;
    if (max_seqs < 1 || max_ctx < 1 || max_batch < 1)
        return bt_fail(e, BT_EINVAL, "planner: max_seqs=%d max_ctx=%d max_batch=%d", max_seqs,
                       max_ctx, max_batch);
    if (hp->n_layer < 1 || hp->n_layer > BT_MAX_LAYERS)
        return bt_fail(e, BT_EINVAL, "planner: n_layer=%d", hp->n_layer);
    memset(pm, 0, sizeof *pm);
    pm->n_layer = hp->n_layer;
    const struct tensor_desc *embd = NULL, *out = NULL;
    for (int i = 0; i < m->n_tensors; i++) {
        const struct tensor_desc *t = &m->tensors[i];
        double elems = t->n_dims >= 2 ? (double)t->ne[0] * (double)t->ne[1] : 0.0;
        if (t->layer >= 0 && t->layer < hp->n_layer) {
            pm->layer[t->layer].weight_bytes += t->n_bytes;
            pm->layer[t->layer].flops += 2.0 * elems;
        } else if (t->layer < 0 && !strcmp(t->name, "token_embd.weight")) {
            embd = t;
            pm->first_bytes += t->n_bytes;
        } else if (t->layer < 0 && !strcmp(t->name, "output.weight")) {
            out = t;
            pm->last_bytes += t->n_bytes;
        } else if (t->layer < 0 && !strcmp(t->name, "output_norm.weight")) {
            pm->last_bytes += t->n_bytes;
        }
    }
    if (!out && embd) { /* tied: the LM head is the embedding, held by both ends */
        out = embd;
        pm->last_bytes += embd->n_bytes;
        pm->shared_bytes = embd->n_bytes;
    }
    if (out) pm->last_flops = 2.0 * (double)out->ne[0] * (double)out->ne[1];
    for (int l = 0; l < hp->n_layer; l++)
        pm->layer[l].state_bytes = (uint64_t)max_seqs * seqstate_bytes(hp, l, l + 1, max_ctx);
    /* Activation scratch for max_batch rows (hidden, attention/delta projections, FFN) and
     * logits rows for every slot, plus a fixed allowance for the process itself. */
    uint64_t row = 4ull * (uint64_t)(6 * hp->n_embd + 3 * hp->n_ff + 2 * hp->ssm_d_inner +
                                     4 * hp->n_head * hp->head_dim);
    pm->stage_overhead_bytes =
        (uint64_t)max_batch * row + (uint64_t)max_seqs * (uint64_t)hp->n_vocab * 4u + (64u << 20);
    return 0;
}

/* Everything a DP over one worker order needs, prepared once per planner_plan call. */
struct ctx {
    const struct plan_model *pm;
    const struct plan_worker *w;
    int L;
    uint64_t wsum[BT_MAX_LAYERS + 1]; /* prefix sums over layers */
    uint64_t ssum[BT_MAX_LAYERS + 1];
    double fsum[BT_MAX_LAYERS + 1];
};

/* Bytes and time of worker wi running [lo, hi) as stage s of k; 0 if it fits, -1 if not. */
static int stage_cost(const struct ctx *c, int wi, int lo, int hi, int first, int last,
                      struct plan_stage *st) {
    const struct plan_model *pm = c->pm;
    uint64_t wb = c->wsum[hi] - c->wsum[lo];
    uint64_t read = wb;
    double flops = c->fsum[hi] - c->fsum[lo];
    if (first) wb += pm->first_bytes;
    if (last) {
        wb += pm->last_bytes;
        read += pm->last_bytes;
        flops += pm->last_flops;
    }
    if (first && last) wb -= pm->shared_bytes;
    uint64_t sb = c->ssum[hi] - c->ssum[lo];
    uint64_t total = wb + sb + pm->stage_overhead_bytes;
    const struct plan_worker *w = &c->w[wi];
    double t = (double)read / (w->mem_bw_gbps * 1e9);
    if (w->gflops > 0.0) {
        double tf = flops / (w->gflops * 1e9);
        if (tf > t) t = tf;
    }
    st->worker = wi;
    st->lo = lo;
    st->hi = hi;
    st->weight_bytes = wb;
    st->state_bytes = sb;
    st->total_bytes = total;
    st->ms_per_token = t * 1e3;
    return total <= w->mem_bytes ? 0 : -1;
}

/* a better than b: smaller bottleneck, then smaller latency (relative tolerance for ties). */
static int better(double amax, double asum, double bmax, double bsum) {
    double tol = 1e-9 * (bmax > 0 ? bmax : 1.0);
    if (amax < bmax - tol) return 1;
    if (amax > bmax + tol) return 0;
    return asum < bsum - 1e-9 * (bsum > 0 ? bsum : 1.0);
}

/* Best split of all layers over workers order[0..k) in that order, each with >= 1 layer.
 * Returns 0 and fills *p, or -1 if nothing fits. dp[s][j]: layers [0, j) on stages 0..s. */
static int split(const struct ctx *c, const int *order, int k, struct plan *p) {
    int L = c->L;
    if (k > L) return -1;
    static _Thread_local double dmax[PLAN_MAX_STAGES][BT_MAX_LAYERS + 1];
    static _Thread_local double dsum[PLAN_MAX_STAGES][BT_MAX_LAYERS + 1];
    static _Thread_local short from[PLAN_MAX_STAGES][BT_MAX_LAYERS + 1];
    struct plan_stage st;
    for (int s = 0; s < k; s++) {
        for (int j = 0; j <= L; j++) {
            dmax[s][j] = INFINITY;
            dsum[s][j] = INFINITY;
            from[s][j] = -1;
        }
        int last = s == k - 1;
        /* stage s ends at j; earlier stages need >= s layers, later ones >= k-1-s */
        int jlo = s + 1, jhi = last ? L : L - (k - 1 - s);
        for (int j = last ? L : jlo; j <= jhi; j++) {
            for (int i = s; i < j; i++) { /* stage s runs [i, j) */
                double pmax = 0, psum = 0;
                if (s > 0) {
                    if (from[s - 1][i] < 0) continue;
                    pmax = dmax[s - 1][i];
                    psum = dsum[s - 1][i];
                } else if (i != 0) {
                    continue;
                }
                if (stage_cost(c, order[s], i, j, s == 0, last, &st) < 0) continue;
                double m = pmax > st.ms_per_token ? pmax : st.ms_per_token;
                double sm = psum + st.ms_per_token;
                if (from[s][j] < 0 || better(m, sm, dmax[s][j], dsum[s][j])) {
                    dmax[s][j] = m;
                    dsum[s][j] = sm;
                    from[s][j] = (short)i;
                }
            }
        }
    }
    if (from[k - 1][L] < 0) return -1;
    memset(p, 0, sizeof *p);
    p->n_stages = k;
    p->bottleneck_ms = dmax[k - 1][L];
    p->latency_ms = dsum[k - 1][L];
    for (int s = k - 1, j = L; s >= 0; s--) {
        int i = from[s][j];
        stage_cost(c, order[s], i, j, s == 0, s == k - 1, &p->stage[s]);
        j = i;
    }
    return 0;
}

static void try_order(const struct ctx *c, const int *order, int k, struct plan *best, int *have) {
    struct plan p;
    if (split(c, order, k, &p) < 0) return;
    if (!*have || better(p.bottleneck_ms, p.latency_ms, best->bottleneck_ms, best->latency_ms)) {
        *best = p;
        *have = 1;
    }
}

static void permute(const struct ctx *c, int *a, int k, int at, struct plan *best, int *have) {
    if (at == k) {
        try_order(c, a, k, best, have);
        return;
    }
    for (int i = at; i < k; i++) {
        int t = a[at];
        a[at] = a[i];
        a[i] = t;
        permute(c, a, k, at + 1, best, have);
        a[i] = a[at];
        a[at] = t;
    }
}

/* Orders worth trying for a set of > ALL_ORDERS_K workers (given fastest first): as is, the
 * largest memory last (it holds the LM head), the largest memory first (the embedding). */
static void few_orders(const struct ctx *c, const int *set, int k, struct plan *best, int *have) {
    int a[PLAN_MAX_WORKERS];
    memcpy(a, set, (size_t)k * sizeof *a);
    try_order(c, a, k, best, have);
    int big = 0;
    for (int i = 1; i < k; i++)
        if (c->w[set[i]].mem_bytes > c->w[set[big]].mem_bytes) big = i;
    memcpy(a, set, (size_t)k * sizeof *a);
    int t = a[big];
    memmove(a + big, a + big + 1, (size_t)(k - 1 - big) * sizeof *a);
    a[k - 1] = t;
    try_order(c, a, k, best, have);
    memcpy(a, set, (size_t)k * sizeof *a);
    memmove(a + 1, a, (size_t)big * sizeof *a);
    a[0] = t;
    try_order(c, a, k, best, have);
}

static void try_set(const struct ctx *c, const int *set, int k, struct plan *best, int *have) {
    int a[PLAN_MAX_WORKERS];
    memcpy(a, set, (size_t)k * sizeof *a);
    if (k <= ALL_ORDERS_K)
        permute(c, a, k, 0, best, have);
    else
        few_orders(c, a, k, best, have);
}

int planner_plan(const struct plan_model *pm, const struct plan_worker *w, int n_workers,
                 const struct plan_opts *o, struct plan *out, bt_err *e) {
    memset(out, 0, sizeof *out);
    if (n_workers < 1 || n_workers > PLAN_MAX_WORKERS)
        return bt_fail(e, BT_EINVAL, "planner: %d workers (1..%d)", n_workers, PLAN_MAX_WORKERS);
    if (pm->n_layer < 1 || pm->n_layer > BT_MAX_LAYERS)
        return bt_fail(e, BT_EINVAL, "planner: n_layer=%d", pm->n_layer);
    for (int i = 0; i < n_workers; i++)
        if (!(w[i].mem_bw_gbps > 0.0) || !isfinite(w[i].mem_bw_gbps) || w[i].gflops < 0.0)
            return bt_fail(e, BT_EINVAL, "planner: worker %s: bandwidth %.3g GB/s, %.3g GFLOP/s",
                           w[i].id, w[i].mem_bw_gbps, w[i].gflops);
    double min_gain = o && o->min_gain > 0.0 ? o->min_gain : 0.10;
    static _Thread_local struct ctx c;
    memset(&c, 0, sizeof c);
    c.pm = pm;
    c.w = w;
    c.L = pm->n_layer;
    for (int l = 0; l < c.L; l++) {
        c.wsum[l + 1] = c.wsum[l] + pm->layer[l].weight_bytes;
        c.ssum[l + 1] = c.ssum[l] + pm->layer[l].state_bytes;
        c.fsum[l + 1] = c.fsum[l] + pm->layer[l].flops;
    }
    /* Fastest first: the order prefixes are taken in when there are too many for subsets. */
    int by_speed[PLAN_MAX_WORKERS];
    for (int i = 0; i < n_workers; i++)
        by_speed[i] = i;
    for (int i = 1; i < n_workers; i++)
        for (int j = i; j > 0 && w[by_speed[j]].mem_bw_gbps > w[by_speed[j - 1]].mem_bw_gbps; j--) {
            int t = by_speed[j];
            by_speed[j] = by_speed[j - 1];
            by_speed[j - 1] = t;
        }
    int kmax = n_workers < c.L ? n_workers : c.L;
    if (kmax > PLAN_MAX_STAGES) kmax = PLAN_MAX_STAGES;
    static _Thread_local struct plan best[PLAN_MAX_STAGES + 1];
    int have[PLAN_MAX_STAGES + 1] = {0};
    if (n_workers <= FULL_SEARCH_N) {
        for (unsigned mask = 1; mask < (1u << n_workers); mask++) {
            int set[PLAN_MAX_WORKERS], k = 0;
            for (int i = 0; i < n_workers; i++) /* keep fastest-first order inside the set */
                if (mask & (1u << by_speed[i])) set[k++] = by_speed[i];
            if (k <= kmax) try_set(&c, set, k, &best[k], &have[k]);
        }
    } else {
        for (int k = 1; k <= kmax; k++)
            try_set(&c, by_speed, k, &best[k], &have[k]);
    }
    /* Fewest stages that fit, then a further stage only when it pays for itself. */
    int pick = 0;
    for (int k = 1; k <= kmax; k++) {
        if (!have[k]) continue;
        if (!pick || best[k].bottleneck_ms <= best[pick].bottleneck_ms * (1.0 - min_gain)) pick = k;
    }
    if (!pick) {
        uint64_t wsum = c.wsum[c.L] + pm->first_bytes + pm->last_bytes - pm->shared_bytes;
        uint64_t ssum = c.ssum[c.L], offer = 0, big = 0, biggest_layer = 0;
        for (int i = 0; i < n_workers; i++) {
            offer += w[i].mem_bytes;
            if (w[i].mem_bytes > big) big = w[i].mem_bytes;
        }
        for (int l = 0; l < c.L; l++) {
            uint64_t b = pm->layer[l].weight_bytes + pm->layer[l].state_bytes;
            if (b > biggest_layer) biggest_layer = b;
        }
        uint64_t need = wsum + ssum + pm->stage_overhead_bytes;
        if (need > offer)
            return bt_fail(e, BT_ECAPACITY,
                           "model needs %.1f GiB for weights + %.1f GiB state (+ %.1f GiB "
                           "overhead); %d worker%s offer %.1f GiB: add memory or workers",
                           (double)wsum / GIB, (double)ssum / GIB,
                           (double)pm->stage_overhead_bytes / GIB, n_workers,
                           n_workers == 1 ? "" : "s", (double)offer / GIB);
        return bt_fail(e, BT_ECAPACITY,
                       "no split of %d layers fits: model needs %.1f GiB for weights + %.1f GiB "
                       "state; workers offer %.1f GiB in all but %.2f GiB at most each (a layer "
                       "takes up to %.2f GiB, the ends also hold embedding %.2f / head %.2f GiB "
                       "and %.2f GiB overhead per stage): add memory or workers",
                       c.L, (double)wsum / GIB, (double)ssum / GIB, (double)offer / GIB,
                       (double)big / GIB, (double)biggest_layer / GIB,
                       (double)pm->first_bytes / GIB, (double)pm->last_bytes / GIB,
                       (double)pm->stage_overhead_bytes / GIB);
    }
    *out = best[pick];
    out->n_left_out = n_workers - pick;
    return 0;
}

#define APPEND(...)                                                                                \
    do {                                                                                           \
        int n_ = snprintf(buf ? buf + (at < cap ? at : cap) : NULL, at < cap ? cap - at : 0,       \
                          __VA_ARGS__);                                                            \
        if (n_ > 0) at += (size_t)n_;                                                              \
    } while (0)

size_t planner_format(const struct plan *p, const struct plan_model *pm,
                      const struct plan_worker *w, int n_workers, char *buf, size_t cap) {
    size_t at = 0;
    uint64_t tw = 0, ts = 0, tt = 0;
    int used[PLAN_MAX_WORKERS] = {0};
    for (int s = 0; s < p->n_stages; s++) {
        const struct plan_stage *st = &p->stage[s];
        const struct plan_worker *pw = &w[st->worker];
        used[st->worker] = 1;
        APPEND("stage %d: worker=%s layers=%d..%d (%d)%s%s weights=%.1fMiB state=%.1fMiB "
               "total=%.1fMiB of %.1fMiB bw=%.1fGB/s ms/token=%.2f\n",
               s, pw->id, st->lo, st->hi - 1, st->hi - st->lo, s == 0 ? " +embd" : "",
               s == p->n_stages - 1 ? " +head" : "", (double)st->weight_bytes / MIB,
               (double)st->state_bytes / MIB, (double)st->total_bytes / MIB,
               (double)pw->mem_bytes / MIB, pw->mem_bw_gbps, st->ms_per_token);
        tw += st->weight_bytes;
        ts += st->state_bytes;
        tt += st->total_bytes;
    }
    for (int i = 0; i < n_workers; i++)
        if (!used[i])
            APPEND("left out: worker=%s mem=%.1fMiB bw=%.1fGB/s (would not speed up the "
                   "pipeline)\n",
                   w[i].id, (double)w[i].mem_bytes / MIB, w[i].mem_bw_gbps);
    APPEND("totals: stages=%d layers=%d weights=%.1fMiB state=%.1fMiB total=%.1fMiB "
           "bottleneck_ms=%.2f latency_ms=%.2f est_tok_s=%.1f\n",
           p->n_stages, pm->n_layer, (double)tw / MIB, (double)ts / MIB, (double)tt / MIB,
           p->bottleneck_ms, p->latency_ms, p->latency_ms > 0 ? 1e3 / p->latency_ms : 0.0);
    return at;
}
