/* tests/test_forward.c: the forward pass against the reference fixtures of tiny-a (logits,
 * hidden states, final norm, greedy tokens; F32, dequantized quant types, HF safetensors) and
 * its structural properties: chunked prefill vs token-by-token decode, stage splits, thread
 * count and batch composition. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "fixtures.h"
#include "ops/ops.h"
#include "ops/threadpool.h"

#define MAX_CTX 320

/* One stage: weights [lo, hi), its state pool, a forward ctx. */
struct stage {
    struct model_desc *m;
    struct weights *w;
    seqstate_pool_t *st;
    pool_t *pool;
    forward_ctx_t *fc;
    int own_model;
};

static void stage_open_m(struct stage *s, struct model_desc *m, int lo, int hi, int threads,
                         int max_tokens, int n_slots) {
    bt_err e = {0};
    memset(s, 0, sizeof *s);
    cr_assert_eq(ops_init(NULL, &e), 0, "%s", e.msg);
    s->m = m;
    struct weights_opts wo = {0};
    cr_assert_eq(weights_load(&s->w, m, lo, hi, &wo, &e), 0, "%s", e.msg);
    cr_assert_eq(seqstate_pool_new(&s->st, &m->hp, lo, hi, n_slots, MAX_CTX, &e), 0, "%s", e.msg);
    if (threads > 1)
        cr_assert_eq(pool_open(&s->pool, threads, &e), 0, "%s", e.msg);
    cr_assert_eq(forward_ctx_new(&s->fc, s->w, s->st, s->pool, max_tokens, &e), 0, "%s", e.msg);
}

static void stage_open(struct stage *s, const char *rel, int lo, int hi, int threads,
                       int max_tokens) {
    bt_err e = {0};
    struct model_desc *m;
    cr_assert_eq(model_open(&m, fixture_path(rel), &e), 0, "%s: %s", rel, e.msg);
    int hi_ = hi < 0 ? m->hp.n_layer : hi;
    stage_open_m(s, m, lo, hi_, threads, max_tokens, 4);
    s->own_model = 1;
}

static void stage_close(struct stage *s) {
    forward_ctx_free(s->fc);
    pool_close(s->pool);
    seqstate_pool_free(s->st);
    weights_free(s->w);
    if (s->own_model)
        model_close(s->m);
}

static float *read_f32(const char *rel, size_t *n) {
    FILE *f = fopen(fixture_path(rel), "rb");
    cr_assert(f, "open %s", rel);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *p = malloc((size_t)len);
    cr_assert(p && fread(p, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len / sizeof(float);
    return p;
}

static int read_ids(const char *rel, int32_t *ids, int cap) {
    FILE *f = fopen(fixture_path(rel), "r");
    cr_assert(f, "open %s", rel);
    int n = 0, v;
    while (n < cap && fscanf(f, "%d", &v) == 1)
        ids[n++] = v;
    fclose(f);
    return n;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m))
            m = d; /* NaN propagates as a failure */
    }
    return m;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Prefill ids[0..n) in chunks on a fresh slot of a single full-range stage; all logits. */
static void eval_all(struct stage *s, const int32_t *ids, int n, int chunk, float *logits,
                     int *slot_out) {
    bt_err e = {0};
    int slot;
    cr_assert_eq(seqstate_acquire(s->st, &slot, &e), 0, "%s", e.msg);
    int V = s->m->hp.n_vocab;
    for (int t = 0; t < n; t += chunk) {
        int k = n - t < chunk ? n - t : chunk;
        struct fwd_seq sq = {slot, k, FWD_OUT_ALL};
        struct fwd_batch b = {1, &sq, ids + t, NULL, logits + (size_t)t * V, NULL};
        cr_assert_eq(forward(s->fc, &b, &e), 0, "%s", e.msg);
    }
    if (slot_out)
        *slot_out = slot;
    else
        seqstate_release(s->st, slot);
}

/* Greedy continuation of a slot whose last logits row is `last`. */
static void greedy(struct stage *s, int slot, const float *last, int n_gen, int32_t *out) {
    bt_err e = {0};
    int V = s->m->hp.n_vocab;
    float *lg = malloc((size_t)V * sizeof(float));
    int32_t tok = argmax(last, V);
    for (int i = 0; i < n_gen; i++) {
        out[i] = tok;
        if (i + 1 == n_gen)
            break;
        struct fwd_seq sq = {slot, 1, FWD_OUT_LAST};
        struct fwd_batch b = {1, &sq, &tok, NULL, lg, NULL};
        cr_assert_eq(forward(s->fc, &b, &e), 0, "%s", e.msg);
        tok = argmax(lg, V);
    }
    free(lg);
}

/* Compares logits and greedy tokens of one model file with a reference folder. */
static void check_model(const char *model, const char *ref, const char *prompt, float tol,
                        int allow_greedy_flip) {
    char rel[256];
    int32_t ids[512], want[64];
    snprintf(rel, sizeof rel, "tiny-a/prompts/%s.ids", prompt);
    int n = read_ids(rel, ids, 512);
    struct stage s;
    stage_open(&s, model, 0, -1, 1, 64);
    int V = s.m->hp.n_vocab;
    float *lg = malloc((size_t)n * V * sizeof(float));
    int slot;
    eval_all(&s, ids, n, 64, lg, &slot);
    size_t nref;
    snprintf(rel, sizeof rel, "tiny-a/%s/%s/logits.f32", ref, prompt);
    float *rl = read_f32(rel, &nref);
    cr_assert_eq(nref, (size_t)n * V, "%s: %zu reference logits, have %d x %d", rel, nref, n, V);
    float d = max_abs_diff(lg, rl, nref);
    cr_log_info("%s vs %s/%s: max abs logit diff %.3g", model, ref, prompt, (double)d);
    fprintf(stderr, "forward: %s vs %s/%s: max abs logit diff %.3g\n", model, ref, prompt,
            (double)d);
    cr_expect_leq(d, tol, "%s vs %s/%s: max abs logit diff %g", model, ref, prompt, (double)d);
    int32_t got[32];
    greedy(&s, slot, lg + (size_t)(n - 1) * V, 32, got);
    snprintf(rel, sizeof rel, "tiny-a/%s/%s/greedy.txt", ref, prompt);
    cr_assert_eq(read_ids(rel, want, 64), 32);
    int same = 0;
    while (same < 32 && got[same] == want[same])
        same++;
    if (!allow_greedy_flip)
        cr_expect_eq(same, 32, "%s/%s: greedy tokens agree for %d of 32", ref, prompt, same);
    else if (same < 32)
        fprintf(stderr, "forward: %s/%s greedy diverges at %d (documented near-tie)\n", ref,
                prompt, same);
    free(rl);
    free(lg);
    stage_close(&s);
}

Test(forward, f32_chat_logits_and_greedy) {
    check_model("tiny-a/gguf/model-f32.gguf", "ref/f32", "chat", 2e-3f, 0);
}
Test(forward, f32_story_logits_and_greedy) {
    check_model("tiny-a/gguf/model-f32.gguf", "ref/f32", "story", 2e-3f, 0);
}
