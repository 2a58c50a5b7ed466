/* tests/test_forward.c: the forward pass against the reference fixtures of tiny-a (logits,
 * hidden states, final norm, greedy tokens; F32, dequantized quant types, HF safetensors) and
 * its structural properties: chunked prefill vs token-by-token decode, stage splits, thread
 * count and batch composition. */
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "fixtures.h"
#include "ops/ops.h"
#include "ops/threadpool.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CTX 320

/* Kernel table for the stages of a test: NULL = the best for this CPU. Criterion runs each
 * test in its own process, so a test may pin another ISA. */
static const char *g_isa;
/* Activation path of the stages: 1 = exact f32 activations (compared with ref-dequant, the
 * float32 engine on dequantized weights), 0 = quantized activations like llama.cpp (the
 * default of the engine; compared with ref/<type>, llama.cpp's own outputs). */
static int g_exact;

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
    cr_assert_eq(ops_init(g_isa, &e), 0, "%s", e.msg);
    ops_set_exact(g_exact);
    s->m = m;
    struct weights_opts wo = {0};
    cr_assert_eq(weights_load(&s->w, m, lo, hi, &wo, &e), 0, "%s", e.msg);
    cr_assert_eq(seqstate_pool_new(&s->st, &m->hp, lo, hi, n_slots, MAX_CTX, &e), 0, "%s", e.msg);
    if (threads > 1) cr_assert_eq(pool_open(&s->pool, threads, &e), 0, "%s", e.msg);
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
    if (s->own_model) model_close(s->m);
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
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
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
        if (i + 1 == n_gen) break;
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
    g_exact = 1;
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
        fprintf(stderr, "forward: %s/%s greedy diverges at %d (documented near-tie)\n", ref, prompt,
                same);
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

/* Our engine dequantizes weights to f32: compare with ref-dequant (the float32 reference run
 * on the same dequantized weights). q4_k_m has documented near-ties (README): a greedy flip
 * there with logits inside the tolerance is not a bug, so only logits are strict for it. */
Test(forward, q8_0_matches_dequant_reference) {
    check_model("tiny-a/gguf/model-q8_0.gguf", "ref-dequant/q8_0", "chat", 2e-3f, 0);
    check_model("tiny-a/gguf/model-q8_0.gguf", "ref-dequant/q8_0", "story", 2e-3f, 0);
}
Test(forward, q4_0_matches_dequant_reference) {
    check_model("tiny-a/gguf/model-q4_0.gguf", "ref-dequant/q4_0", "chat", 2e-3f, 0);
    check_model("tiny-a/gguf/model-q4_0.gguf", "ref-dequant/q4_0", "story", 2e-3f, 0);
}
Test(forward, q6_k_matches_dequant_reference) {
    check_model("tiny-a/gguf/model-q6_k.gguf", "ref-dequant/q6_k", "chat", 2e-3f, 0);
    check_model("tiny-a/gguf/model-q6_k.gguf", "ref-dequant/q6_k", "story", 2e-3f, 0);
}
Test(forward, q4_k_m_matches_dequant_reference) {
    check_model("tiny-a/gguf/model-q4_k_m.gguf", "ref-dequant/q4_k_m", "chat", 2e-3f, 1);
    check_model("tiny-a/gguf/model-q4_k_m.gguf", "ref-dequant/q4_k_m", "story", 2e-3f, 1);
}
Test(forward, hf_safetensors_matches_f32_reference) {
    check_model("tiny-a/hf", "ref/f32", "chat", 2e-3f, 0);
    check_model("tiny-a/hf", "ref/f32", "story", 2e-3f, 0);
}

/* The quantized-activation path (the default) against llama.cpp's outputs on the same file
 * (ref/<type>), with the README's statistical tolerances: relative L2 of all prompt logits
 * <= 0.05, top-1 agreement >= 0.90, first greedy token equal. Prints the numbers, and the
 * same numbers against ref-dequant for orientation. */
static void check_fast(const char *type, const char *prompt) {
    char rel[256], model[128];
    int32_t ids[512], want[64];
    g_exact = 0;
    snprintf(model, sizeof model, "tiny-a/gguf/model-%s.gguf", type);
    snprintf(rel, sizeof rel, "tiny-a/prompts/%s.ids", prompt);
    int n = read_ids(rel, ids, 512);
    struct stage s;
    stage_open(&s, model, 0, -1, 2, 64);
    int V = s.m->hp.n_vocab;
    float *lg = malloc((size_t)n * V * sizeof(float));
    int slot;
    eval_all(&s, ids, n, 64, lg, &slot);
    double rl2[2] = {0, 0}, top1[2] = {0, 0};
    float maxd[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        size_t nref;
        snprintf(rel, sizeof rel, "tiny-a/%s/%s/%s/logits.f32", k ? "ref-dequant" : "ref", type,
                 prompt);
        float *rl = read_f32(rel, &nref);
        cr_assert_eq(nref, (size_t)n * V);
        double e2 = 0, r2 = 0;
        for (size_t i = 0; i < nref; i++) {
            double dd = (double)lg[i] - (double)rl[i];
            e2 += dd * dd;
            r2 += (double)rl[i] * (double)rl[i];
        }
        rl2[k] = sqrt(e2 / r2);
        maxd[k] = max_abs_diff(lg, rl, nref);
        for (int p = 0; p < n; p++)
            top1[k] += argmax(lg + (size_t)p * V, V) == argmax(rl + (size_t)p * V, V);
        top1[k] /= n;
        free(rl);
    }
    int32_t got[32];
    greedy(&s, slot, lg + (size_t)(n - 1) * V, 32, got);
    snprintf(rel, sizeof rel, "tiny-a/ref/%s/%s/greedy.txt", type, prompt);
    cr_assert_eq(read_ids(rel, want, 64), 32);
    int same = 0;
    while (same < 32 && got[same] == want[same])
        same++;
    fprintf(stderr,
            "forward: fast %s/%s (isa %s): vs llama.cpp rel L2 %.4f max %.3f top-1 %.3f greedy "
            "%d/32 | vs ref-dequant rel L2 %.4f max %.3f top-1 %.3f\n",
            type, prompt, ops->isa, rl2[0], (double)maxd[0], top1[0], same, rl2[1], (double)maxd[1],
            top1[1]);
    cr_expect_leq(rl2[0], 0.05, "%s/%s: rel L2 vs llama.cpp %g", type, prompt, rl2[0]);
    cr_expect_geq(top1[0], 0.90, "%s/%s: top-1 agreement %g", type, prompt, top1[0]);
    cr_expect_geq(same, 1, "%s/%s: first greedy token differs", type, prompt);
    free(lg);
    stage_close(&s);
}

Test(forward, fast_path_q8_0_matches_llama_cpp) {
    check_fast("q8_0", "chat");
    check_fast("q8_0", "story");
}
Test(forward, fast_path_q4_0_matches_llama_cpp) {
    check_fast("q4_0", "chat");
    check_fast("q4_0", "story");
}
Test(forward, fast_path_q6_k_matches_llama_cpp) {
    check_fast("q6_k", "chat");
    check_fast("q6_k", "story");
}
Test(forward, fast_path_q4_k_m_matches_llama_cpp) {
    check_fast("q4_k_m", "chat");
    check_fast("q4_k_m", "story");
}
/* The ref ISA's scalar matmul_q is the definition: it must agree as well. */
Test(forward, fast_path_ref_isa_matches_llama_cpp) {
    g_isa = "ref";
    check_fast("q4_k_m", "story");
}

/* All logits of a prompt, chunked as asked, on a fresh stage. */
static float *prompt_logits(const char *model, const char *prompt, int threads, int chunk,
                            int *n_out, int *V_out) {
    char rel[128];
    int32_t ids[512];
    snprintf(rel, sizeof rel, "tiny-a/prompts/%s.ids", prompt);
    int n = read_ids(rel, ids, 512);
    struct stage s;
    stage_open(&s, model, 0, -1, threads, 64);
    int V = s.m->hp.n_vocab;
    float *lg = malloc((size_t)n * V * sizeof(float));
    eval_all(&s, ids, n, chunk, lg, NULL);
    stage_close(&s);
    *n_out = n;
    *V_out = V;
    return lg;
}

Test(forward, q8_0_nomtp_equals_q8_0) {
    int n1, n2, V1, V2;
    float *a = prompt_logits("tiny-a/gguf/model-q8_0.gguf", "story", 1, 64, &n1, &V1);
    float *b = prompt_logits("tiny-a/gguf/model-q8_0-nomtp.gguf", "story", 1, 64, &n2, &V2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(V1, V2);
    cr_expect_eq(memcmp(a, b, (size_t)n1 * V1 * sizeof(float)), 0, "not bit-identical");
    free(a);
    free(b);
}

Test(forward, token_by_token_decode_equals_chunked_prefill) {
    int n, V, n1, V1;
    float *chunked = prompt_logits("tiny-a/gguf/model-f32.gguf", "story", 1, 64, &n, &V);
    float *steps = prompt_logits("tiny-a/gguf/model-f32.gguf", "story", 1, 1, &n1, &V1);
    float *odd = prompt_logits("tiny-a/gguf/model-f32.gguf", "story", 1, 37, &n1, &V1);
    float d = max_abs_diff(chunked, steps, (size_t)n * V);
    float d2 = max_abs_diff(chunked, odd, (size_t)n * V);
    fprintf(stderr, "forward: chunk 64 vs 1: %.3g, vs 37: %.3g\n", (double)d, (double)d2);
    cr_expect_leq(d, 1e-4f, "decode vs prefill: %g", (double)d);
    cr_expect_leq(d2, 1e-4f, "chunk 37 vs 64: %g", (double)d2);
    free(chunked);
    free(steps);
    free(odd);
}

Test(forward, one_and_two_threads_bit_identical) {
    int n, V;
    float *a = prompt_logits("tiny-a/gguf/model-q4_k_m.gguf", "story", 1, 64, &n, &V);
    float *b = prompt_logits("tiny-a/gguf/model-q4_k_m.gguf", "story", 2, 64, &n, &V);
    float *c = prompt_logits("tiny-a/gguf/model-q4_k_m.gguf", "story", 3, 64, &n, &V);
    cr_expect_eq(memcmp(a, b, (size_t)n * V * sizeof(float)), 0, "1 vs 2 threads differ");
    cr_expect_eq(memcmp(a, c, (size_t)n * V * sizeof(float)), 0, "1 vs 3 threads differ");
    free(a);
    free(b);
    free(c);
}

/* Layers [0,k) then [k,L) equal [0,L) bit for bit; the hidden states after each layer and the
 * final norm match the reference. Stages [0,1), [1,2), ... give every layer's output. */
Test(forward, stages_split_and_hidden_states) {
    bt_err e = {0};
    struct model_desc *m;
    cr_assert_eq(model_open(&m, fixture_path("tiny-a/gguf/model-f32.gguf"), &e), 0, "%s", e.msg);
    int L = m->hp.n_layer, H = m->hp.n_embd, V = m->hp.n_vocab;
    int32_t ids[512];
    int n = read_ids("tiny-a/prompts/chat.ids", ids, 512);
    size_t nh, nf;
    float *ref_h = read_f32("tiny-a/ref/f32/chat/hidden.f32", &nh);
    float *ref_fn = read_f32("tiny-a/ref/f32/chat/final_norm.f32", &nf);
    cr_assert_eq(nh, (size_t)L * n * H);
    cr_assert_eq(nf, (size_t)n * H);

    struct stage full;
    stage_open_m(&full, m, 0, L, 1, 64, 1);
    float *want = malloc((size_t)n * V * sizeof(float));
    eval_all(&full, ids, n, 64, want, NULL);
    stage_close(&full);

    /* one layer per stage */
    float *h = malloc((size_t)n * H * sizeof(float)), *h2 = malloc((size_t)n * H * sizeof(float));
    float *lg = malloc((size_t)n * V * sizeof(float)), *fn = malloc((size_t)n * H * sizeof(float));
    for (int l = 0; l < L; l++) {
        struct stage s;
        stage_open_m(&s, m, l, l + 1, 1, 64, 1);
        int slot;
        cr_assert_eq(seqstate_acquire(s.st, &slot, &e), 0);
        struct fwd_seq sq = {slot, n, FWD_OUT_ALL};
        struct fwd_batch b = {1, &sq, ids, h, l + 1 < L ? h2 : lg, fn};
        cr_assert_eq(forward(s.fc, &b, &e), 0, "%s", e.msg);
        if (l + 1 < L) {
            const float *r = ref_h + (size_t)l * n * H;
            float mx = 0.0f;
            for (size_t i = 0; i < (size_t)n * H; i++)
                mx = fmaxf(mx, fabsf(r[i]));
            float d = max_abs_diff(h2, r, (size_t)n * H);
            cr_expect_leq(d, 1e-4f * mx, "layer %d hidden diff %g (max %g)", l, (double)d,
                          (double)mx);
            memcpy(h, h2, (size_t)n * H * sizeof(float));
        }
        stage_close(&s);
    }
    float dfn = max_abs_diff(fn, ref_fn, (size_t)n * H);
    cr_expect_leq(dfn, 1e-4f, "final norm diff %g", (double)dfn);
    cr_expect_eq(memcmp(lg, want, (size_t)n * V * sizeof(float)), 0,
                 "8 one-layer stages differ from one stage");

    /* every two-stage split */
    for (int k = 1; k < L; k++) {
        struct stage a, b2;
        stage_open_m(&a, m, 0, k, 1, 64, 1);
        stage_open_m(&b2, m, k, L, 1, 64, 1);
        int sa, sb;
        cr_assert_eq(seqstate_acquire(a.st, &sa, &e), 0);
        cr_assert_eq(seqstate_acquire(b2.st, &sb, &e), 0);
        for (int t = 0; t < n; t += 16) { /* in chunks, so state carries across calls */
            int c = n - t < 16 ? n - t : 16;
            struct fwd_seq qa = {sa, c, FWD_OUT_ALL}, qb = {sb, c, FWD_OUT_ALL};
            struct fwd_batch ba = {1, &qa, ids + t, NULL, h, NULL};
            struct fwd_batch bb = {1, &qb, NULL, h, lg + (size_t)t * V, NULL};
            cr_assert_eq(forward(a.fc, &ba, &e), 0, "%s", e.msg);
            cr_assert_eq(forward(b2.fc, &bb, &e), 0, "%s", e.msg);
        }
        float d = max_abs_diff(lg, want, (size_t)n * V);
        cr_expect_leq(d, 1e-4f, "split at %d: %g", k, (double)d); /* chunk 16 vs 64 */
        stage_close(&a);
        stage_close(&b2);
    }
    /* and bit-exact with the same chunking */
    for (int k = 1; k < L; k++) {
        struct stage a, b2;
        stage_open_m(&a, m, 0, k, 1, 64, 1);
        stage_open_m(&b2, m, k, L, 1, 64, 1);
        int sa, sb;
        cr_assert_eq(seqstate_acquire(a.st, &sa, &e), 0);
        cr_assert_eq(seqstate_acquire(b2.st, &sb, &e), 0);
        struct fwd_seq qa = {sa, n, FWD_OUT_ALL}, qb = {sb, n, FWD_OUT_ALL};
        struct fwd_batch ba = {1, &qa, ids, NULL, h, NULL};
        struct fwd_batch bb = {1, &qb, NULL, h, lg, NULL};
        cr_assert_eq(forward(a.fc, &ba, &e), 0, "%s", e.msg);
        cr_assert_eq(forward(b2.fc, &bb, &e), 0, "%s", e.msg);
        cr_expect_eq(memcmp(lg, want, (size_t)n * V * sizeof(float)), 0,
                     "split at %d not bit-exact", k);
        stage_close(&a);
        stage_close(&b2);
    }
    free(h);
    free(h2);
    free(lg);
    free(fn);
    free(want);
    free(ref_h);
    free(ref_fn);
    model_close(m);
}

/* Three sequences at different positions, one prefilling and two decoding, in one batch give
 * the logits each gets alone. */
Test(forward, mixed_batch_equals_sequences_alone) {
    bt_err e = {0};
    struct model_desc *m;
    cr_assert_eq(model_open(&m, fixture_path("tiny-a/gguf/model-q8_0.gguf"), &e), 0, "%s", e.msg);
    int V = m->hp.n_vocab;
    int32_t ids[512];
    int n = read_ids("tiny-a/prompts/story.ids", ids, 512);
    cr_assert(n >= 100);
    /* prefixes already consumed: seq0 40 tokens, seq1 0 (fresh), seq2 70; then the batch adds
     * 1 token to seq0, 30 to seq1 (prefill) and 1 to seq2 */
    const int pre[3] = {40, 0, 70}, add[3] = {1, 30, 1};
    const int32_t *src[3] = {ids, ids + 100, ids + 5};
    float *alone = malloc((size_t)32 * V * sizeof(float));
    float *lg = malloc((size_t)(n + 64) * V * sizeof(float));
    struct stage s;
    stage_open_m(&s, m, 0, m->hp.n_layer, 2, 128, 4);
    int slots[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(seqstate_acquire(s.st, &slots[i], &e), 0);
        if (pre[i]) {
            struct fwd_seq sq = {slots[i], pre[i], FWD_OUT_NONE};
            struct fwd_batch b = {1, &sq, src[i], NULL, lg, NULL};
            cr_assert_eq(forward(s.fc, &b, &e), 0, "%s", e.msg);
        }
    }
    /* save the state of every slot, run each alone, restore, then run the batch */
    size_t cap = 0;
    for (int i = 0; i < 3; i++)
        cap += seqstate_save_size(s.st, slots[i]);
    unsigned char *saved = malloc(cap);
    size_t off[4] = {0}, len;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(seqstate_save(s.st, slots[i], saved + off[i], cap - off[i], &len, &e), 0);
        off[i + 1] = off[i] + len;
    }
    int n_alone = 0;
    for (int i = 0; i < 3; i++) {
        struct fwd_seq sq = {slots[i], add[i], FWD_OUT_ALL};
        struct fwd_batch b = {1, &sq, src[i] + pre[i], NULL, alone + (size_t)n_alone * V, NULL};
        cr_assert_eq(forward(s.fc, &b, &e), 0, "%s", e.msg);
        n_alone += add[i];
        cr_assert_eq(seqstate_load(s.st, slots[i], saved + off[i], off[i + 1] - off[i], &e), 0,
                     "%s", e.msg);
    }
    int32_t toks[64];
    int nt = 0;
    struct fwd_seq sq[3];
    for (int i = 0; i < 3; i++) {
        memcpy(toks + nt, src[i] + pre[i], (size_t)add[i] * sizeof(int32_t));
        nt += add[i];
        sq[i] = (struct fwd_seq){slots[i], add[i], FWD_OUT_ALL};
    }
    struct fwd_batch b = {3, sq, toks, NULL, lg, NULL};
    cr_assert_eq(forward_n_out(&b), n_alone);
    cr_assert_eq(forward(s.fc, &b, &e), 0, "%s", e.msg);
    cr_expect_eq(memcmp(lg, alone, (size_t)n_alone * V * sizeof(float)), 0,
                 "batched logits differ from alone (max %g)",
                 (double)max_abs_diff(lg, alone, (size_t)n_alone * V));
    for (int i = 0; i < 3; i++)
        cr_expect_eq(seqstate_pos(s.st, slots[i]), pre[i] + add[i]);
    free(saved);
    free(alone);
    free(lg);
    stage_close(&s);
    model_close(m);
}

Test(forward, rejects_bad_batches_without_touching_state) {
    bt_err e = {0};
    struct stage s;
    stage_open(&s, "tiny-a/gguf/model-f32.gguf", 0, -1, 1, 8);
    int a, b2;
    cr_assert_eq(seqstate_acquire(s.st, &a, &e), 0);
    cr_assert_eq(seqstate_acquire(s.st, &b2, &e), 0);
    float *lg = malloc((size_t)16 * s.m->hp.n_vocab * sizeof(float));
    int32_t toks[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    struct fwd_seq big = {a, 9, FWD_OUT_ALL};
    struct fwd_batch b = {1, &big, toks, NULL, lg, NULL};
    cr_expect_eq(forward(s.fc, &b, &e), BT_EINVAL, "over max_tokens");
    struct fwd_seq dup[2] = {{a, 1, FWD_OUT_LAST}, {a, 1, FWD_OUT_LAST}};
    b = (struct fwd_batch){2, dup, toks, NULL, lg, NULL};
    cr_expect_eq(forward(s.fc, &b, &e), BT_EINVAL, "slot twice");
    toks[1] = s.m->hp.n_vocab;
    struct fwd_seq two = {a, 2, FWD_OUT_LAST};
    b = (struct fwd_batch){1, &two, toks, NULL, lg, NULL};
    cr_expect_eq(forward(s.fc, &b, &e), BT_EINVAL, "token id out of range");
    struct fwd_seq free_slot = {3, 1, FWD_OUT_LAST};
    b = (struct fwd_batch){1, &free_slot, toks, NULL, lg, NULL};
    cr_expect_eq(forward(s.fc, &b, &e), BT_EINVAL, "slot not acquired");
    seqstate_set_pos(s.st, b2, MAX_CTX);
    struct fwd_seq full = {b2, 1, FWD_OUT_LAST};
    b = (struct fwd_batch){1, &full, toks, NULL, lg, NULL};
    cr_expect_eq(forward(s.fc, &b, &e), BT_ECAPACITY, "past max_ctx");
    cr_expect_eq(seqstate_pos(s.st, a), 0);
    free(lg);
    stage_close(&s);
}

/* The scalar reference table runs long prefill chunks through the chunked delta rule (spec
 * §6.7), which must agree with the token-by-token recurrence and with the reference. */
Test(forward, ref_isa_chunked_delta_rule_equals_steps) {
    g_isa = "ref";
    int n, V, n1, V1;
    float *chunked = prompt_logits("tiny-a/gguf/model-f32.gguf", "story", 2, 64, &n, &V);
    float *steps = prompt_logits("tiny-a/gguf/model-f32.gguf", "story", 1, 1, &n1, &V1);
    cr_assert_str_eq(ops->isa, "ref");
    size_t nref;
    float *ref = read_f32("tiny-a/ref/f32/story/logits.f32", &nref);
    cr_assert_eq(nref, (size_t)n * V);
    float d = max_abs_diff(chunked, steps, (size_t)n * V);
    float dr = max_abs_diff(chunked, ref, nref);
    fprintf(stderr, "forward: ref isa: chunk 64 vs 1: %.3g, vs llama.cpp: %.3g\n", (double)d,
            (double)dr);
    cr_expect_gt(d, 0.0f, "the chunked form was not used (identical to steps)");
    cr_expect_leq(d, 1e-4f, "chunked vs steps: %g", (double)d);
    cr_expect_leq(dr, 2e-3f, "vs reference: %g", (double)dr);
    free(chunked);
    free(steps);
    free(ref);
}
