/* tests/bench/bench_forward.c: whole-model speed of baton against llama.cpp on the same file
 * and thread count, in one run (issue 8). Per model (default: the mkmodel 9B q4_k_m and q8_0
 * files cached in build/bench/; written by tests/bench/run.sh via `baton mkmodel` if absent):
 *   decode tokens/s at batch 1 (one sequence) and batch B (B sequences, one token each per
 *   step; BENCH_BATCH, 8), prefill tokens/s of a 512-token prompt, effective GB/s = weight
 *   bytes read per decode step / step time, and that as a fraction of a STREAM-style triad;
 *   then llama-bench (-p 512 -n DECODE) and the ratio baton / llama.cpp per figure.
 * The host's memory bandwidth drifts by 2x between minutes, so a triad measured once at start
 * says little about a decode run minutes later: every baton run measures a triad right before
 * and right after its batch-1 decode (model loaded, same pool; triad_pre=, triad_post=), takes
 * their mean as the run's triad (triad_gbps=) and prints the run's fraction (frac=); the
 * median line gives the median of the per-run fractions
 * (triad_frac=) beside the median triad (triad_gbps_median=). The header's triad_gbps= is the
 * one taken at start, before any model is loaded. Next to each triad the run also reads the
 * step's own weight bytes once with plain loads (tests/bench/bench_read.h; read_gbps=, the
 * mean of both): read_frac= is decode's GB/s over that, the share of the memory's pace for
 * these very bytes that the decode step reaches (the triad is best of 5 passes and counts
 * writes, so it can sit above or below what a read of the weights gets).
 * Runs are interleaved (baton, llama.cpp, baton, ...) because the machine is shared, and
 * medians are printed. Environment: BENCH_MODELS (space-separated paths), BENCH_THREADS
 * (default: all CPUs), BENCH_RUNS (3), BENCH_DECODE (decode steps, 16: a 9B decodes at a few
 * tokens/s on 2 cores), BENCH_PREFILL (512), BENCH_BATCH (8, at most 16), LLAMA_BIN
 * (directory with llama-bench; default build/llama.cpp/bin). Output: one `bench_forward:`
 * line per figure, key=value. */
#include "common/clock.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "ops/ops.h"
#include "ops/threadpool.h"
#include "tests/bench/bench_read.h"
#include "tests/bench/bench_stats.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXR 16
#define MAXB 16 /* BENCH_BATCH */

static double now_s(void) {
    return (double)bt_now_ns() * 1e-9;
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* ---- STREAM triad: a[i] = b[i] + s * c[i], rows split across the pool ---- */

struct triad {
    float *a, *b, *c;
    int64_t n;
};

static void triad_job(void *ctx, int ith, int nth) {
    struct triad *t = ctx;
    int64_t i0, i1;
    pool_slice(t->n, ith, nth, 1024, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        t->a[i] = t->b[i] + 3.0f * t->c[i];
}

static void init_job(void *ctx, int ith, int nth) { /* first touch on the thread that uses it */
    struct triad *t = ctx;
    int64_t i0, i1;
    pool_slice(t->n, ith, nth, 1024, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        t->a[i] = 0.0f, t->b[i] = 1.0f, t->c[i] = 2.0f;
}

/* Best of 5 passes over 3 arrays of 256 MiB total, GB/s counting 3 streams (STREAM's rule). */
static double triad_gbps(pool_t *pool) {
    struct triad t = {.n = (int64_t)(256 << 20) / 3 / (int64_t)sizeof(float)};
    if (posix_memalign((void **)&t.a, 64, (size_t)t.n * 4) ||
        posix_memalign((void **)&t.b, 64, (size_t)t.n * 4) ||
        posix_memalign((void **)&t.c, 64, (size_t)t.n * 4))
        return 0.0;
    pool_run(pool, init_job, &t);
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        pool_run(pool, triad_job, &t);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    free(t.a), free(t.b), free(t.c);
    return 3.0 * (double)t.n * 4.0 / best * 1e-9;
}

/* ---- baton ---- */

static uint64_t mat_bytes(const struct mat *m) {
    return m->data ? (uint64_t)m->rows * m->row_bytes : 0;
}

/* The matrices a decode step reads: every matrix of every layer plus the LM head. Fills
 * out[] (up to max) and returns their bytes. */
#define MAXMATS 1024
static uint64_t step_mats(const struct weights *w, const struct mat **out, int *n_out) {
    int n = 0;
    uint64_t b = 0;
    if (w->output.data) out[n++] = &w->output;
    for (int l = w->lo; l < w->hi; l++) {
        const struct layer_weights *L = &w->layers[l];
        const struct mat *ms[] = {&L->ffn_gate, &L->ffn_up, &L->ffn_down, &L->wq,
                                  &L->wk,       &L->wv,     &L->wo,       &L->wqkv,
                                  &L->wz,       &L->wbeta,  &L->walpha,   &L->ssm_out};
        for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
            if (ms[i]->data && n < MAXMATS) out[n++] = ms[i];
    }
    for (int i = 0; i < n; i++)
        b += mat_bytes(out[i]);
    *n_out = n;
    return b;
}

struct figures {
    double tg1, tgb, pp, gbps1;          /* tgb: decode tok/s at batch B */
    double triad_pre, triad_post, triad; /* GB/s right before / after the b1 decode; mean */
    double read;                         /* GB/s of a plain read of the step's weights */
};

static int baton_run(const char *path, pool_t *pool, int B, int decode, int prefill,
                     struct figures *f, uint64_t *bytes_out) {
    bt_err e = {0};
    struct model_desc *m = NULL;
    struct weights *w = NULL;
    seqstate_pool_t *st = NULL;
    forward_ctx_t *fc = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    int rc = -1, pre = 16;
    struct weights_opts wo = {.use_io_uring = 1};
    if (model_open(&m, path, &e) || weights_load(&w, m, 0, m->hp.n_layer, &wo, &e) ||
        seqstate_pool_new(&st, &m->hp, 0, m->hp.n_layer, B + 1, prefill + decode + pre + 8, &e) ||
        forward_ctx_new(&fc, w, st, pool, prefill > B * pre ? prefill : B * pre, &e)) {
        fprintf(stderr, "bench_forward: %s: %s\n", path, e.msg);
        goto out;
    }
    static const struct mat *mats[MAXMATS];
    int n_mats = 0;
    *bytes_out = step_mats(w, mats, &n_mats);
    int V = m->hp.n_vocab;
    ids = malloc((size_t)(prefill + B * pre) * sizeof *ids);
    logits = malloc((size_t)B * V * sizeof *logits);
    if (!ids || !logits) goto out;
    for (int i = 0; i < prefill + B * pre; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % (V < 1000 ? V : 1000));

    int slot[MAXB + 1];
    for (int s = 0; s < B + 1; s++)
        if (seqstate_acquire(st, &slot[s], &e)) goto out;

    /* prefill: one batch of `prefill` tokens on slot B */
    struct fwd_seq sq = {slot[B], prefill, FWD_OUT_LAST};
    struct fwd_batch b = {1, &sq, ids, NULL, logits, NULL};
    double t0 = now_s();
    if (forward(fc, &b, &e)) goto fail;
    f->pp = prefill / (now_s() - t0);

    /* batch B: prefill B sequences of `pre` tokens together, then `decode` / 2 steps of B */
    struct fwd_seq sqs[MAXB];
    for (int s = 0; s < B; s++)
        sqs[s] = (struct fwd_seq){slot[s], pre, FWD_OUT_LAST};
    b = (struct fwd_batch){B, sqs, ids, NULL, logits, NULL};
    if (forward(fc, &b, &e)) goto fail;
    for (int s = 0; s < B; s++)
        sqs[s].n_tokens = 1;
    int32_t tok[MAXB];
    t0 = now_s();
    for (int i = 0; i < decode / 2; i++) { /* half the steps: B times the tokens */
        for (int s = 0; s < B; s++)
            tok[s] = ids[(i + s) % 64];
        b = (struct fwd_batch){B, sqs, tok, NULL, logits, NULL};
        if (forward(fc, &b, &e)) goto fail;
    }
    f->tgb = B * (decode / 2) / (now_s() - t0);

    /* batch 1: `decode` steps of one sequence after its 16-token prompt (slot 0's context) */
    seqstate_reset(st, slot[0]);
    sq = (struct fwd_seq){slot[0], pre, FWD_OUT_LAST};
    b = (struct fwd_batch){1, &sq, ids, NULL, logits, NULL};
    if (forward(fc, &b, &e)) goto fail;
    sq.n_tokens = 1;
    f->triad_pre = triad_gbps(pool);
    double rd = bench_read_s(pool, mats, n_mats);
    t0 = now_s();
    for (int i = 0; i < decode; i++) {
        b = (struct fwd_batch){1, &sq, &ids[i % 64], NULL, logits, NULL};
        if (forward(fc, &b, &e)) goto fail;
    }
    double dt = (now_s() - t0) / decode;
    rd += bench_read_s(pool, mats, n_mats);
    f->read = 2.0 * (double)*bytes_out / rd * 1e-9;
    f->triad_post = triad_gbps(pool);
    f->triad = 0.5 * (f->triad_pre + f->triad_post);
    f->tg1 = 1.0 / dt;
    f->gbps1 = (double)*bytes_out / dt * 1e-9;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_forward: forward: %s\n", e.msg);
out:
    free(ids);
    free(logits);
    forward_ctx_free(fc);
    seqstate_pool_free(st);
    weights_free(w);
    model_close(m);
    return rc;
}

/* ---- llama.cpp ---- */

/* Runs llama-bench once; fills tg1 (n_gen test) and pp (n_prompt test). 0 on success. */
static int llama_run(const char *bin, const char *path, int threads, int decode, int prefill,
                     struct figures *f) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/llama-bench' -m '%s' -t %d -p %d -n %d -r 1 -o json 2>/dev/null",
             bin, path, threads, prefill, decode);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        pclose(p);
        return -1;
    }
    size_t k;
    while (len + 1 < cap && (k = fread(buf + len, 1, cap - 1 - len, p)) > 0)
        len += k;
    buf[len] = 0;
    int st = pclose(p);
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (st != 0 || !cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        const cJSON *np = cJSON_GetObjectItem(it, "n_prompt");
        const cJSON *ng = cJSON_GetObjectItem(it, "n_gen");
        const cJSON *ts = cJSON_GetObjectItem(it, "avg_ts");
        if (!cJSON_IsNumber(np) || !cJSON_IsNumber(ng) || !cJSON_IsNumber(ts)) continue;
        if (ng->valuedouble > 0) f->tg1 = ts->valuedouble;
        if (np->valuedouble > 0) f->pp = ts->valuedouble;
    }
    cJSON_Delete(j);
    return 0;
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    bt_err e = {0};
    if (ops_init(NULL, &e)) {
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    int threads = env_int("BENCH_THREADS", 0);
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int runs = env_int("BENCH_RUNS", 3), decode = env_int("BENCH_DECODE", 16);
    int prefill = env_int("BENCH_PREFILL", 512), B = env_int("BENCH_BATCH", 8);
    if (B < 2 || B > MAXB) {
        fprintf(stderr, "bench_forward: BENCH_BATCH=%d: must be 2..%d\n", B, MAXB);
        return 1;
    }
    if (runs < 1) runs = 1;
    if (runs > MAXR) runs = MAXR;
    if (decode < 2) decode = 2;
    const char *llama = getenv("LLAMA_BIN");
    if (!llama || !*llama) llama = "build/llama.cpp/bin";
    char lb[1024];
    snprintf(lb, sizeof lb, "%s/llama-bench", llama);
    int have_llama = access(lb, X_OK) == 0;
    const char *models = getenv("BENCH_MODELS");
    if (!models || !*models) models = "build/bench/9b-q4_k_m.gguf build/bench/9b-q8_0.gguf";

    pool_t *pool = NULL;
    if (pool_open(&pool, threads, &e)) {
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    double triad = triad_gbps(pool);
    printf("bench_forward: isa=%s act=%s threads=%d triad_gbps=%.1f runs=%d decode_steps=%d "
           "prefill=%d llama=%s\n",
           ops->isa, ops_exact() ? "f32" : "quantized", threads, triad, runs, decode, prefill,
           have_llama ? llama : "absent");
    fflush(stdout);

    int failed = 0;
    char list[4096];
    snprintf(list, sizeof list, "%s", models);
    for (char *save = NULL, *path = strtok_r(list, " ", &save); path;
         path = strtok_r(NULL, " ", &save)) {
        if (access(path, R_OK)) {
            printf("bench_forward: model=%s missing (tests/bench/run.sh writes it with baton "
                   "mkmodel)\n",
                   path);
            continue;
        }
        double tg1[MAXR], tgb[MAXR], pp[MAXR], gb[MAXR], tr[MAXR], fr[MAXR], ltg[MAXR], lpp[MAXR];
        double rg[MAXR], rf[MAXR];
        int nb = 0, nl = 0;
        uint64_t bytes = 0;
        for (int r = 0; r < runs; r++) { /* interleaved: baton, then llama.cpp */
            struct figures f = {0};
            if (baton_run(path, pool, B, decode, prefill, &f, &bytes) == 0) {
                tg1[nb] = f.tg1, tgb[nb] = f.tgb, pp[nb] = f.pp, gb[nb] = f.gbps1;
                tr[nb] = f.triad, fr[nb] = f.triad > 0 ? f.gbps1 / f.triad : 0.0;
                rg[nb] = f.read, rf[nb] = f.read > 0 ? f.gbps1 / f.read : 0.0;
                printf("bench_forward: model=%s run=%d baton tg1=%.3f tg%d=%.3f pp%d=%.2f "
                       "gbps=%.1f triad_gbps=%.1f frac=%.3f triad_pre=%.1f triad_post=%.1f "
                       "read_gbps=%.1f read_frac=%.3f\n",
                       path, r, f.tg1, B, f.tgb, prefill, f.pp, f.gbps1, f.triad, fr[nb],
                       f.triad_pre, f.triad_post, f.read, rf[nb]);
                nb++;
            } else {
                failed = 1;
            }
            fflush(stdout);
            if (have_llama) {
                struct figures g = {0};
                if (llama_run(llama, path, threads, decode, prefill, &g) == 0) {
                    ltg[nl] = g.tg1, lpp[nl] = g.pp;
                    nl++;
                    printf("bench_forward: model=%s run=%d llama.cpp tg%d=%.3f pp%d=%.2f\n", path,
                           r, decode, g.tg1, prefill, g.pp);
                } else {
                    printf("bench_forward: model=%s run=%d llama-bench failed\n", path, r);
                }
                fflush(stdout);
            }
        }
        if (!nb) continue;
        double mtg1 = bench_median(tg1, nb), mtgb = bench_median(tgb, nb),
               mpp = bench_median(pp, nb);
        double mgb = bench_median(gb, nb), mtr = bench_median(tr, nb), mfr = bench_median(fr, nb);
        double mrg = bench_median(rg, nb), mrf = bench_median(rf, nb);
        printf("bench_forward: model=%s weights_per_token=%.2fGB baton median of %d: "
               "decode_b1=%.3f tok/s decode_b%d=%.3f tok/s prefill%d=%.2f tok/s "
               "eff_gbps=%.1f triad_frac=%.3f triad_gbps_median=%.1f triad_frac_start=%.3f "
               "read_gbps_median=%.1f read_frac=%.3f\n",
               path, (double)bytes * 1e-9, nb, mtg1, B, mtgb, prefill, mpp, mgb, mfr, mtr,
               triad > 0 ? mgb / triad : 0.0, mrg, mrf);
        if (nl) {
            double ltg1 = bench_median(ltg, nl), lpp1 = bench_median(lpp, nl);
            printf("bench_forward: model=%s llama.cpp median of %d: tg%d=%.3f tok/s pp%d=%.2f "
                   "tok/s eff_gbps=%.1f | ratio baton/llama.cpp: decode_b1=%.2f decode_b%d=%.2f "
                   "(vs llama tg at batch 1) prefill=%.2f\n",
                   path, nl, decode, ltg1, prefill, lpp1, (double)bytes * ltg1 * 1e-9,
                   ltg1 > 0 ? mtg1 / ltg1 : 0.0, B, ltg1 > 0 ? mtgb / ltg1 : 0.0,
                   lpp1 > 0 ? mpp / lpp1 : 0.0);
        }
        fflush(stdout);
    }
    pool_close(pool);
    return failed;
}
