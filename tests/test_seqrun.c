/* tests/test_seqrun.c: engine/seqrun on tiny-a: a batch cut into forward() pieces gives the
 * logits of one call (and a two-range split, fed hidden states, the logits of one range),
 * logits rows land in batch order, tick runs between pieces, a failing batch changes nothing;
 * the sampling rules both the executor and the pipeline stage rely on: an unchanged resend
 * keeps the RNG stream, a change or a fresh start restarts it, 0 = off for top_p and
 * repetition_penalty, the penalty history, stop ids / max_ctx finishes, logprob flags. */
#include "engine/seqrun.h"
#include "fixtures.h"
#include "ops/ops.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CTX 128

static struct model_desc *g_m;
static int g_L, g_V, g_H;

static void setup(void) {
    bt_err e = {0};
    cr_assert_eq(ops_init(NULL, &e), 0, "%s", e.msg);
    cr_assert_eq(model_open(&g_m, fixture_path("tiny-a/gguf/model-f32.gguf"), &e), 0, "%s", e.msg);
    g_L = g_m->hp.n_layer;
    g_V = g_m->hp.n_vocab;
    g_H = g_m->hp.n_embd;
}

static void teardown(void) {
    model_close(g_m);
}

static seqrun_t *open_range(int lo, int hi, int n_slots, int fwd_tokens) {
    bt_err e = {0};
    seqrun_t *r = NULL;
    struct seqrun_opts o = {.lo = lo,
                            .hi = hi,
                            .n_slots = n_slots,
                            .max_ctx = MAX_CTX,
                            .fwd_tokens = fwd_tokens,
                            .threads = 1};
    cr_assert_eq(seqrun_open(&r, g_m, &o, &e), 0, "%s", e.msg);
    return r;
}

static int acquire(seqrun_t *r) {
    bt_err e = {0};
    int slot;
    cr_assert_eq(seqstate_acquire(seqrun_state(r), &slot, &e), 0, "%s", e.msg);
    return slot;
}

/* Token ids spread over the vocabulary (the model is random: any ids exercise it). */
static int make_ids(int32_t *ids, int n) {
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 37 + 11) % g_V);
    return n;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void count_tick(void *ctx) {
    ++*(int *)ctx;
}

TestSuite(seqrun, .init = setup, .fini = teardown);

Test(seqrun, open_rejects_bad_options) {
    bt_err e = {0};
    seqrun_t *r = (seqrun_t *)1;
    struct seqrun_opts o = {.lo = 2, .hi = 2, .n_slots = 1, .max_ctx = 8};
    cr_expect_eq(seqrun_open(&r, g_m, &o, &e), BT_ESHAPE);
    cr_expect_null(r);
    o.hi = g_L + 1;
    cr_expect_eq(seqrun_open(&r, g_m, &o, &e), BT_ESHAPE);
    o.hi = g_L;
    o.n_slots = 0;
    cr_expect_eq(seqrun_open(&r, g_m, &o, &e), BT_EINVAL);
    o.n_slots = 1;
    o.max_ctx = 0;
    cr_expect_eq(seqrun_open(&r, g_m, &o, &e), BT_EINVAL);
    seqrun_close(NULL);
}

/* Two sequences (40 and 7 rows) in pieces of 16 rows: the first spans three pieces, the third
 * piece holds the end of one and all of the other. Same logits as one call (only the chunking
 * of the prefill differs: 1e-4 as tests/test_forward.c), same greedy tokens, rows in batch
 * order, nothing written past them, two ticks. */
Test(seqrun, pieces_give_the_logits_of_one_call) {
    int32_t ids[64];
    make_ids(ids, 64);
    seqrun_t *whole = open_range(0, g_L, 2, 256), *cut = open_range(0, g_L, 2, 16);
    cr_assert(seqrun_is_last(whole) && seqrun_is_last(cut));
    float *a = malloc(3 * (size_t)g_V * sizeof(float)),
          *b = malloc(3 * (size_t)g_V * sizeof(float));
    for (size_t i = 0; i < 3 * (size_t)g_V; i++)
        a[i] = b[i] = -7.0f;
    struct seqrun_seq qa[2] = {{acquire(whole), 40, 1}, {acquire(whole), 7, 1}};
    struct seqrun_seq qb[2] = {{acquire(cut), 40, 1}, {acquire(cut), 7, 1}};
    struct seqrun_batch ba = {.n_seq = 2, .seq = qa, .tokens = ids, .out = a};
    struct seqrun_batch bb = {.n_seq = 2, .seq = qb, .tokens = ids, .out = b};
    bt_err e = {0};
    int ticks = 0;
    cr_assert_eq(seqrun_forward(whole, &ba, count_tick, &ticks, &e), 2, "%s", e.msg);
    cr_expect_eq(ticks, 0, "one piece: no tick");
    cr_assert_eq(seqrun_forward(cut, &bb, count_tick, &ticks, &e), 2, "%s", e.msg);
    cr_expect_eq(ticks, 2, "47 rows in pieces of 16: 3 pieces, 2 ticks (got %d)", ticks);
    for (int k = 0; k < 2; k++) {
        const float *ra = a + (size_t)k * g_V, *rb = b + (size_t)k * g_V;
        float d = 0.0f;
        for (int i = 0; i < g_V; i++)
            d = fmaxf(d, fabsf(ra[i] - rb[i]));
        cr_expect_leq(d, 1e-4f, "seq %d: pieces vs one call %g", k, (double)d);
        cr_expect_eq(argmax(ra, g_V), argmax(rb, g_V), "seq %d greedy token", k);
    }
    /* the 7-row sequence alone gives the second row: rows are in batch order */
    seqrun_t *alone = open_range(0, g_L, 1, 256);
    float *c = malloc((size_t)g_V * sizeof(float));
    struct seqrun_seq qc = {acquire(alone), 7, 1};
    struct seqrun_batch bc = {.n_seq = 1, .seq = &qc, .tokens = ids + 40, .out = c};
    cr_assert_eq(seqrun_forward(alone, &bc, NULL, NULL, &e), 1, "%s", e.msg);
    cr_expect_eq(memcmp(c, a + g_V, (size_t)g_V * sizeof(float)), 0, "row 1 is sequence 1");
    for (size_t i = 2 * (size_t)g_V; i < 3 * (size_t)g_V; i++)
        cr_assert(a[i] == -7.0f && b[i] == -7.0f, "written past the logits rows at %zu", i);
    cr_expect_eq(seqstate_pos(seqrun_state(cut), qb[0].slot), 40);
    cr_expect_eq(seqstate_pos(seqrun_state(cut), qb[1].slot), 7);
    free(a), free(b), free(c);
    seqrun_close(whole), seqrun_close(cut), seqrun_close(alone);
}

/* [0, 3) then [3, L) fed the hidden rows, both in pieces of 8: the logits of [0, L) in
 * pieces of 8, bit for bit (same chunking), including a row that does not want logits. */
Test(seqrun, two_ranges_equal_one) {
    int32_t ids[64];
    make_ids(ids, 64);
    seqrun_t *full = open_range(0, g_L, 3, 8), *r0 = open_range(0, 3, 3, 8),
             *r1 = open_range(3, g_L, 3, 8);
    cr_expect(!seqrun_is_last(r0) && seqrun_is_last(r1));
    float *want = calloc(2 * (size_t)g_V, sizeof(float)), *got = calloc(2 * (size_t)g_V, 4);
    float *h = malloc(30 * (size_t)g_H * sizeof(float));
    for (size_t i = 0; i < 30 * (size_t)g_H; i++)
        h[i] = NAN; /* every row must be written, each piece at its own offset */
    bt_err e = {0};
    struct seqrun_seq qf[3] = {{acquire(full), 13, 1}, {acquire(full), 5, 0}, {-1, 12, 1}};
    qf[2].slot = acquire(full);
    struct seqrun_seq q0[3] = {{acquire(r0), 13, 1}, {acquire(r0), 5, 0}, {-1, 12, 1}};
    q0[2].slot = acquire(r0);
    struct seqrun_seq q1[3] = {{acquire(r1), 13, 1}, {acquire(r1), 5, 0}, {-1, 12, 1}};
    q1[2].slot = acquire(r1);
    struct seqrun_batch bf = {.n_seq = 3, .seq = qf, .tokens = ids, .out = want};
    struct seqrun_batch b0 = {.n_seq = 3, .seq = q0, .tokens = ids, .out = h};
    struct seqrun_batch b1 = {.n_seq = 3, .seq = q1, .hidden = h, .out = got};
    cr_assert_eq(seqrun_forward(full, &bf, NULL, NULL, &e), 2, "%s", e.msg);
    cr_assert_eq(seqrun_forward(r0, &b0, NULL, NULL, &e), 0, "%s", e.msg);
    for (size_t i = 0; i < 30 * (size_t)g_H; i++)
        cr_assert(isfinite(h[i]), "hidden row %zu unset", i / (size_t)g_H);
    cr_assert_eq(seqrun_forward(r1, &b1, NULL, NULL, &e), 2, "%s", e.msg);
    cr_expect_eq(memcmp(got, want, 2 * (size_t)g_V * sizeof(float)), 0,
                 "two ranges differ from one");
    free(want), free(got), free(h);
    seqrun_close(full), seqrun_close(r0), seqrun_close(r1);
}

/* A batch of at most fwd_tokens rows that forward() rejects (a slot never acquired) changes
 * no sequence. */
Test(seqrun, failed_batch_changes_nothing) {
    int32_t ids[16] = {1, 2, 3, 4, 5, 6};
    seqrun_t *r = open_range(0, g_L, 2, 16);
    float *out = malloc(2 * (size_t)g_V * sizeof(float));
    int s0 = acquire(r);
    struct seqrun_seq q[2] = {{s0, 3, 1}, {1 - s0, 3, 1}};
    struct seqrun_batch b = {.n_seq = 2, .seq = q, .tokens = ids, .out = out};
    bt_err e = {0};
    cr_expect_lt(seqrun_forward(r, &b, NULL, NULL, &e), 0);
    cr_expect_eq(seqstate_pos(seqrun_state(r), s0), 0);
    b.n_seq = 1;
    cr_expect_eq(seqrun_forward(r, &b, NULL, NULL, &e), 1, "%s", e.msg);
    cr_expect_eq(seqstate_pos(seqrun_state(r), s0), 3);
    free(out);
    seqrun_close(r);
}

/* ---- sampling ---------------------------------------------------------------------------- */

static struct seqrun_sampling sampling(float temperature, uint64_t seed) {
    struct seqrun_sampling sp = {0};
    sampler_params_default(&sp.p);
    sp.p.temperature = temperature;
    sp.p.seed = seed;
    return sp;
}

static void set(seqrun_t *r, int slot, const struct seqrun_sampling *sp, int fresh) {
    bt_err e = {0};
    cr_assert_eq(seqrun_set_sampling(r, slot, sp, fresh, &e), 0, "%s", e.msg);
}

/* Flat logits over the real vocabulary: every draw depends on the RNG. */
static float *flat_logits(void) {
    float *lg = malloc((size_t)g_V * sizeof(float));
    for (int i = 0; i < g_V; i++)
        lg[i] = (float)(i % 5) * 0.01f;
    return lg;
}

static void draws(seqrun_t *r, int slot, const float *lg, int n, int32_t *out) {
    for (int i = 0; i < n; i++)
        out[i] = seqrun_sample(r, slot, lg, NULL);
}

Test(seqrun, resend_keeps_the_stream_change_restarts_it) {
    seqrun_t *r = open_range(g_L - 1, g_L, 2, 16);
    float *lg = flat_logits();
    struct seqrun_sampling sp = sampling(1.0f, 42), other = sampling(1.0f, 43);
    int32_t ref[8], got[8], alt[8];
    set(r, 1, &sp, 1);
    draws(r, 1, lg, 8, ref); /* the stream of seed 42, unbroken */
    set(r, 1, &other, 1);
    draws(r, 1, lg, 8, alt);
    cr_assert(memcmp(ref, alt, sizeof ref), "seeds 42 and 43 draw the same 8 tokens");

    set(r, 0, &sp, 1);
    draws(r, 0, lg, 4, got);
    set(r, 0, &sp, 0); /* unchanged resend: same stream goes on */
    draws(r, 0, lg, 4, got + 4);
    cr_expect_eq(memcmp(got, ref, sizeof ref), 0, "an unchanged resend restarted the stream");

    set(r, 0, &sp, 1); /* fresh: restarts even when unchanged */
    draws(r, 0, lg, 4, got);
    cr_expect_eq(memcmp(got, ref, 4 * sizeof(int32_t)), 0, "fresh did not restart");
    set(r, 0, &other, 0); /* changed: rebuilt from the new params */
    draws(r, 0, lg, 8, got);
    cr_expect_eq(memcmp(got, alt, sizeof alt), 0, "a changed seed was not applied");

    /* a change in the stop list or the logprob flag alone also rebuilds */
    uint32_t stop[2] = {5, 9};
    struct seqrun_sampling with_stop = other;
    with_stop.stop = stop;
    with_stop.n_stop = 2;
    set(r, 0, &other, 1);
    draws(r, 0, lg, 2, got);
    set(r, 0, &with_stop, 0);
    draws(r, 0, lg, 2, got);
    cr_expect_eq(memcmp(got, alt, 2 * sizeof(int32_t)), 0, "a new stop list did not rebuild");
    stop[0] = 5; /* same values (the seqrun kept its own copy) */
    set(r, 0, &with_stop, 0);
    draws(r, 0, lg, 6, got + 2);
    cr_expect_eq(memcmp(got, alt, sizeof alt), 0, "the same stop list rebuilt the sampler");
    struct seqrun_sampling want_lp = with_stop;
    want_lp.want_logprob = 1;
    set(r, 0, &want_lp, 0);
    draws(r, 0, lg, 2, got);
    cr_expect_eq(memcmp(got, alt, 2 * sizeof(int32_t)), 0, "want_logprob did not rebuild");
    free(lg);
    seqrun_close(r);
}

/* A sequence re-prefilled on a new pipeline: a fresh sampler with rng_skip = k draws what the
 * old one drew after its k-th sample; an unchanged resend ignores rng_skip (the stream goes
 * on as it is). */
Test(seqrun, rng_skip_continues_a_moved_stream) {
    seqrun_t *r = open_range(g_L - 1, g_L, 2, 16);
    float *lg = flat_logits();
    struct seqrun_sampling sp = sampling(1.0f, 42);
    int32_t ref[10], got[7];
    set(r, 1, &sp, 1);
    draws(r, 1, lg, 10, ref);
    struct seqrun_sampling moved = sp;
    moved.rng_skip = 3;
    set(r, 0, &moved, 1);
    draws(r, 0, lg, 5, got);
    cr_expect_eq(memcmp(got, ref + 3, 5 * sizeof(int32_t)), 0, "rng_skip 3 did not go on at 3");
    set(r, 0, &moved, 0); /* unchanged resend: the stream goes on, no second skip */
    draws(r, 0, lg, 2, got + 5);
    cr_expect_eq(memcmp(got + 5, ref + 8, 2 * sizeof(int32_t)), 0, "a resend skipped again");
    free(lg);
    seqrun_close(r);
}

Test(seqrun, rejected_params_keep_the_old_sampler) {
    seqrun_t *r = open_range(g_L - 1, g_L, 1, 16);
    float *lg = flat_logits();
    struct seqrun_sampling sp = sampling(1.0f, 7), bad = sampling(-1.0f, 7);
    int32_t ref[6], got[6];
    set(r, 0, &sp, 1);
    draws(r, 0, lg, 6, ref);
    set(r, 0, &sp, 1);
    draws(r, 0, lg, 3, got);
    bt_err e = {0};
    cr_expect_eq(seqrun_set_sampling(r, 0, &bad, 0, &e), BT_EINVAL);
    draws(r, 0, lg, 3, got + 3);
    cr_expect_eq(memcmp(got, ref, sizeof ref), 0, "the old sampler's stream broke");
    free(lg);
    seqrun_close(r);
}

/* top_p 0 and repetition_penalty 0 read as "off" (an unset proto3 field), so they sample like
 * 1; sampler_new alone would reject a penalty of 0. */
Test(seqrun, zero_top_p_and_penalty_mean_off) {
    seqrun_t *r = open_range(g_L - 1, g_L, 2, 16);
    float *lg = flat_logits();
    struct seqrun_sampling one = sampling(1.0f, 3), zero = one;
    zero.p.top_p = 0.0f;
    zero.p.repetition_penalty = 0.0f;
    int32_t a[8], b[8];
    set(r, 0, &one, 1);
    set(r, 1, &zero, 1);
    int32_t hist[3] = {0, 1, 2};
    seqrun_add_history(r, 0, hist, 3);
    seqrun_add_history(r, 1, hist, 3);
    draws(r, 0, lg, 8, a);
    draws(r, 1, lg, 8, b);
    cr_expect_eq(memcmp(a, b, sizeof a), 0, "0 did not mean off");
    free(lg);
    seqrun_close(r);
}

/* The history feeds the repetition penalty: a strong penalty moves greedy off a token once it
 * is in the history; emptying the history (fresh start, clear) brings it back. */
Test(seqrun, history_feeds_the_penalties) {
    seqrun_t *r = open_range(g_L - 1, g_L, 1, 16);
    float *lg = calloc((size_t)g_V, sizeof(float));
    lg[10] = 5.0f;
    lg[11] = 4.0f;
    struct seqrun_sampling sp = sampling(0.0f, 0);
    sp.p.repetition_penalty = 2.0f;
    set(r, 0, &sp, 1);
    cr_expect_eq(seqrun_sample(r, 0, lg, NULL), 10);
    int32_t fed[2] = {3, 10};
    seqrun_add_history(r, 0, fed, 2);
    cr_expect_eq(seqrun_sample(r, 0, lg, NULL), 11, "10 is in the history: 5/2 < 4");
    seqrun_reset_history(r, 0);
    cr_expect_eq(seqrun_sample(r, 0, lg, NULL), 10);
    seqrun_add_history(r, 0, fed, 2);
    seqrun_clear_sampling(r, 0); /* a released sequence: no sampler, no history */
    set(r, 0, &sp, 1);
    cr_expect_eq(seqrun_sample(r, 0, lg, NULL), 10, "history survived clear");
    /* the history may fill max_ctx */
    int32_t many[MAX_CTX];
    for (int i = 0; i < MAX_CTX; i++)
        many[i] = 10;
    seqrun_reset_history(r, 0);
    seqrun_add_history(r, 0, many, MAX_CTX);
    cr_expect_eq(seqrun_sample(r, 0, lg, NULL), 11);
    free(lg);
    seqrun_close(r);
}

Test(seqrun, finish_and_logprob_flags) {
    seqrun_t *r = open_range(g_L - 1, g_L, 1, 16);
    struct seqrun_sampling sp = sampling(0.0f, 0);
    uint32_t stop[SEQRUN_MAX_STOP + 1];
    for (int i = 0; i <= SEQRUN_MAX_STOP; i++)
        stop[i] = (uint32_t)(100 + i);
    sp.stop = stop;
    sp.n_stop = SEQRUN_MAX_STOP + 1; /* the last one is past the limit and not kept */
    set(r, 0, &sp, 1);
    cr_expect_eq(seqrun_finish(r, 0, 100, 0), SEQRUN_FINISH_STOP);
    cr_expect_eq(seqrun_finish(r, 0, 100 + SEQRUN_MAX_STOP - 1, 0), SEQRUN_FINISH_STOP);
    cr_expect_eq(seqrun_finish(r, 0, 100 + SEQRUN_MAX_STOP, 0), SEQRUN_FINISH_NONE);
    cr_expect_eq(seqrun_finish(r, 0, 7, MAX_CTX - 1), SEQRUN_FINISH_NONE, "the last position");
    cr_expect_eq(seqrun_finish(r, 0, 7, MAX_CTX), SEQRUN_FINISH_LENGTH, "past max_ctx");
    cr_expect_eq(seqrun_finish(r, 0, 100, MAX_CTX), SEQRUN_FINISH_STOP, "stop wins");
    cr_expect_not(seqrun_wants_logprob(r, 0));
    sp.want_logprob = 1;
    set(r, 0, &sp, 0);
    cr_expect(seqrun_wants_logprob(r, 0));
    sp.want_logprob = 0;
    sp.p.n_logprobs = 3;
    set(r, 0, &sp, 0);
    cr_expect(seqrun_wants_logprob(r, 0));
    float *lg = flat_logits();
    struct sampler_result res;
    seqrun_sample(r, 0, lg, &res);
    cr_expect_eq(res.n_top, 3);
    free(lg);
    seqrun_close(r);
}
