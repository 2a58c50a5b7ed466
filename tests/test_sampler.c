/* tests/test_sampler.c: engine/sampler: greedy, truncations, penalties, masking, seeding,
 * logprobs, stop strings. Distributions are checked against their closed forms. */
#include "engine/sampler.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sampler_t *mk(const struct sampler_params *p, int32_t n_vocab, int32_t n_real) {
    sampler_t *s;
    bt_err e = {0};
    int rc = sampler_new(&s, p, n_vocab, n_real, &e);
    cr_assert_eq(rc, 0, "%s", bt_errmsg(&e, rc));
    return s;
}

static void counts(sampler_t *s, const float *lg, int draws, int *cnt, int n) {
    memset(cnt, 0, (size_t)n * sizeof *cnt);
    for (int i = 0; i < draws; i++) {
        int32_t id = sampler_sample(s, lg, NULL, 0, NULL);
        cr_assert(id >= 0 && id < n);
        cnt[id]++;
    }
}

Test(sampler, greedy_first_max_and_padding_mask) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0.0f;
    /* ids 6, 7 are padding with the largest logits: never chosen */
    float lg[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 1.0f, 9.0f, 9.0f};
    sampler_t *s = mk(&p, 8, 6);
    cr_expect_eq(sampler_sample(s, lg, NULL, 0, NULL), 1);
    sampler_free(s);
    p.temperature = 1.0f;
    s = mk(&p, 8, 6);
    int cnt[8];
    counts(s, lg, 2000, cnt, 8);
    cr_expect_eq(cnt[6] + cnt[7], 0);
    sampler_free(s);
}

Test(sampler, distribution_matches_softmax_with_temperature) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.seed = 42;
    float lg[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    sampler_t *s = mk(&p, 3, 3);
    int cnt[3];
    counts(s, lg, 20000, cnt, 3);
    cr_expect(fabs(cnt[0] / 20000.0 - 0.5) < 0.02, "%d", cnt[0]);
    cr_expect(fabs(cnt[1] / 20000.0 - 0.3) < 0.02, "%d", cnt[1]);
    cr_expect(fabs(cnt[2] / 20000.0 - 0.2) < 0.02, "%d", cnt[2]);
    sampler_free(s);
    /* temperature 0.5 squares the odds: 25:9:4 */
    p.temperature = 0.5f;
    s = mk(&p, 3, 3);
    counts(s, lg, 20000, cnt, 3);
    cr_expect(fabs(cnt[0] / 20000.0 - 25.0 / 38) < 0.02, "%d", cnt[0]);
    cr_expect(fabs(cnt[2] / 20000.0 - 4.0 / 38) < 0.02, "%d", cnt[2]);
    sampler_free(s);
}

Test(sampler, top_k_top_p_min_p) {
    struct sampler_params p;
    sampler_params_default(&p);
    float lg[5] = {logf(0.05f), logf(0.5f), logf(0.3f), logf(0.1f), logf(0.05f)};
    int cnt[5];
    p.top_k = 1;
    sampler_t *s = mk(&p, 5, 5);
    counts(s, lg, 500, cnt, 5);
    cr_expect_eq(cnt[1], 500);
    sampler_free(s);
    sampler_params_default(&p);
    p.top_p = 0.7f; /* 0.5 < 0.7 <= 0.8: ids 1 and 2 */
    s = mk(&p, 5, 5);
    counts(s, lg, 5000, cnt, 5);
    cr_expect_eq(cnt[0] + cnt[3] + cnt[4], 0);
    cr_expect(fabs(cnt[1] / 5000.0 - 0.625) < 0.03, "%d", cnt[1]);
    sampler_free(s);
    sampler_params_default(&p);
    p.min_p = 0.25f; /* keep p >= 0.125: ids 1 and 2 */
    s = mk(&p, 5, 5);
    counts(s, lg, 5000, cnt, 5);
    cr_expect_eq(cnt[0] + cnt[3] + cnt[4], 0);
    cr_expect_gt(cnt[2], 1000);
    sampler_free(s);
    sampler_params_default(&p);
    p.top_k = 3;
    p.top_p = 0.95f; /* top 3 hold 0.9 < 0.95: top-p keeps all three */
    s = mk(&p, 5, 5);
    counts(s, lg, 5000, cnt, 5);
    cr_expect_eq(cnt[0] + cnt[4], 0);
    cr_expect_gt(cnt[3], 200);
    sampler_free(s);
}

Test(sampler, penalties) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0.0f;
    p.repetition_penalty = 1.2f;
    float lg[3] = {2.0f, 1.9f, -1.0f};
    int32_t hist[] = {0};
    sampler_t *s = mk(&p, 3, 3);
    cr_expect_eq(sampler_sample(s, lg, hist, 1, NULL), 1); /* 2/1.2 < 1.9 */
    cr_expect_eq(sampler_sample(s, lg, NULL, 0, NULL), 0);
    sampler_free(s);
    sampler_params_default(&p);
    p.temperature = 0.0f;
    p.frequency_penalty = 0.2f;
    float lg2[2] = {1.0f, 0.5f};
    int32_t h3[] = {0, 0, 0};
    s = mk(&p, 2, 2);
    cr_expect_eq(sampler_sample(s, lg2, h3, 3, NULL), 1); /* 1 - 0.6 < 0.5 */
    sampler_free(s);
    p.penalty_last_n = 2; /* 1 - 0.4 > 0.5 */
    s = mk(&p, 2, 2);
    cr_expect_eq(sampler_sample(s, lg2, h3, 3, NULL), 0);
    cr_expect_eq(sampler_sample(s, lg2, h3, 3, NULL), 0); /* counts were reset between calls */
    sampler_free(s);
    sampler_params_default(&p);
    p.temperature = 0.0f;
    p.presence_penalty = 0.6f; /* once, however often */
    s = mk(&p, 2, 2);
    cr_expect_eq(sampler_sample(s, lg2, h3, 3, NULL), 1);
    sampler_free(s);
}

Test(sampler, seeded_streams_are_reproducible) {
    struct sampler_params p;
    sampler_params_default(&p);
    float lg[16];
    for (int i = 0; i < 16; i++)
        lg[i] = (float)(i % 5) * 0.3f;
    int32_t a[64], b[64], c[64];
    p.seed = 7;
    sampler_t *s1 = mk(&p, 16, 16), *s2 = mk(&p, 16, 16);
    p.seed = 8;
    sampler_t *s3 = mk(&p, 16, 16);
    for (int i = 0; i < 64; i++) {
        a[i] = sampler_sample(s1, lg, NULL, 0, NULL);
        b[i] = sampler_sample(s2, lg, NULL, 0, NULL);
        c[i] = sampler_sample(s3, lg, NULL, 0, NULL);
    }
    cr_expect(!memcmp(a, b, sizeof a));
    cr_expect(memcmp(a, c, sizeof a) != 0);
    sampler_free(s1);
    sampler_free(s2);
    sampler_free(s3);
}

/* A sequence moved to a new sampler (a re-planned pipeline) skips the samples it drew: the
 * new sampler then draws what the old one would have, whatever the truncations, and even
 * after a draw over logits that are all -inf. Greedy samplers draw nothing. */
Test(sampler, skip_continues_the_stream) {
    const int V = 64;
    float lg[64], dead[64];
    for (int i = 0; i < V; i++)
        lg[i] = sinf((float)i * 0.7f), dead[i] = -INFINITY;
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.5f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.seed = 1234;
    for (int k = 0; k <= 9; k += 3) {
        sampler_t *a = mk(&p, V, V), *b = mk(&p, V, V);
        for (int i = 0; i < k; i++)
            (void)sampler_sample(a, i == 1 ? dead : lg, NULL, 0, NULL);
        sampler_skip(b, (uint64_t)k);
        for (int i = 0; i < 20; i++)
            cr_assert_eq(sampler_sample(b, lg, NULL, 0, NULL), sampler_sample(a, lg, NULL, 0, NULL),
                         "skip %d: draw %d", k, i);
        sampler_free(a);
        sampler_free(b);
    }
    /* without the skip the streams differ: the check above is not vacuous */
    sampler_t *a = mk(&p, V, V), *b = mk(&p, V, V);
    for (int i = 0; i < 5; i++)
        (void)sampler_sample(a, lg, NULL, 0, NULL);
    int same = 0;
    for (int i = 0; i < 20; i++)
        same += sampler_sample(a, lg, NULL, 0, NULL) == sampler_sample(b, lg, NULL, 0, NULL);
    cr_assert_lt(same, 20);
    sampler_free(a);
    sampler_free(b);
    p.temperature = 0.0f; /* greedy: skipping changes nothing */
    a = mk(&p, V, V);
    sampler_skip(a, 1000);
    cr_assert_eq(sampler_sample(a, lg, NULL, 0, NULL), 56); /* sin(39.2) is the largest */
    sampler_free(a);
}

Test(sampler, logprobs) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0.0f;
    p.n_logprobs = 3;
    float lg[6] = {1.0f, 3.0f, 2.0f, 3.0f, 0.0f, 50.0f};
    sampler_t *s = mk(&p, 6, 5);
    struct sampler_result r;
    cr_assert_eq(sampler_sample(s, lg, NULL, 0, &r), 1);
    double lse = log(exp(1.0) + exp(3.0) + exp(2.0) + exp(3.0) + exp(0.0));
    cr_expect_eq(r.id, 1);
    cr_expect(fabs((double)r.logprob - (3.0 - lse)) < 1e-5);
    cr_assert_eq(r.n_top, 3);
    cr_expect_eq(r.top[0].id, 1);
    cr_expect_eq(r.top[1].id, 3); /* tie: lower id first */
    cr_expect_eq(r.top[2].id, 2);
    cr_expect(fabs((double)r.top[2].logprob - (2.0 - lse)) < 1e-5);
    sampler_free(s);
}

Test(sampler, rejects_bad_params) {
    struct sampler_params p;
    sampler_t *s;
    bt_err e = {0};
    sampler_params_default(&p);
    p.temperature = -1.0f;
    cr_expect_eq(sampler_new(&s, &p, 10, 10, &e), BT_EINVAL);
    sampler_params_default(&p);
    p.repetition_penalty = 0.0f;
    cr_expect_eq(sampler_new(&s, &p, 10, 10, &e), BT_EINVAL);
    sampler_params_default(&p);
    p.n_logprobs = SAMPLER_MAX_LOGPROBS + 1;
    cr_expect_eq(sampler_new(&s, &p, 10, 10, &e), BT_EINVAL);
    sampler_params_default(&p);
    cr_expect_eq(sampler_new(&s, &p, 10, 11, &e), BT_EINVAL);
    p.top_p = NAN;
    cr_expect_eq(sampler_new(&s, &p, 10, 10, &e), BT_EINVAL);
    cr_expect_null(s);
}

/* Real vocabulary size, top-p over a flat-ish distribution (the slow case: many candidates
 * survive): every id is in range. Its cost per token is part of the served tok/s the benches
 * measure; a time limit here would fail on a busy machine. */
Test(sampler, big_vocab_top_p) {
    enum { V = 248320, R = 248077 };
    float *lg = malloc(V * sizeof *lg);
    uint64_t x = 1;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        lg[i] = (float)((x >> 40) % 1000) / 250.0f;
    }
    struct sampler_params p;
    sampler_params_default(&p);
    p.top_p = 0.9f;
    p.min_p = 0.01f;
    p.repetition_penalty = 1.1f;
    p.n_logprobs = 5;
    sampler_t *s = mk(&p, V, R);
    int32_t hist[256];
    for (int i = 0; i < 256; i++)
        hist[i] = i * 97;
    for (int i = 0; i < 20; i++) {
        struct sampler_result r;
        int32_t id = sampler_sample(s, lg, hist, 256, &r);
        cr_assert(id >= 0 && id < R);
    }
    sampler_free(s);
    free(lg);
}

Test(sampler, stop_ids) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.stop_ids[0] = 5;
    p.n_stop_ids = 1;
    sampler_t *s = mk(&p, 10, 10);
    cr_expect(sampler_is_stop_id(s, 5));
    cr_expect(!sampler_is_stop_id(s, 4));
    sampler_free(s);
}

Test(stopper, holds_partial_matches) {
    const char *stops[] = {"STOP", "", "\n\n"};
    stopper_t *st;
    cr_assert_eq(stopper_new(&st, stops, 3, NULL), 0);
    const char *out;
    size_t n;
    cr_expect_eq(stopper_feed(st, "Hel", 3, &out, &n), 0);
    cr_expect(n == 3 && !memcmp(out, "Hel", 3));
    cr_expect_eq(stopper_feed(st, "lo ST", 5, &out, &n), 0);
    cr_expect(n == 3 && !memcmp(out, "lo ", 3));
    cr_expect_eq(stopper_feed(st, "Ox", 2, &out, &n), 0); /* not a stop after all */
    cr_expect(n == 4 && !memcmp(out, "STOx", 4));
    cr_expect_eq(stopper_feed(st, "a\n", 2, &out, &n), 0);
    cr_expect(n == 1 && out[0] == 'a');
    cr_expect_eq(stopper_feed(st, "\nrest", 5, &out, &n), 1);
    cr_expect_eq(n, 0);
    cr_expect_eq(stopper_feed(st, "more", 4, &out, &n), 1);
    cr_expect_eq(n, 0);
    stopper_free(st);

    cr_assert_eq(stopper_new(&st, stops, 1, NULL), 0);
    cr_expect_eq(stopper_feed(st, "abc STO", 7, &out, &n), 0);
    cr_expect_eq(n, 4);
    stopper_flush(st, &out, &n);
    cr_expect(n == 3 && !memcmp(out, "STO", 3));
    cr_expect_eq(stopper_feed(st, "xxSTOPyy", 8, &out, &n), 1);
    cr_expect(n == 2 && !memcmp(out, "xx", 2));
    stopper_free(st);
}
