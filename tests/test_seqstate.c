/* tests/test_seqstate.c: slot pool, sizes, fork, save/load and its rejection paths. */
#include "engine/seqstate.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* A small hybrid layout: L L L F L L L F. */
static struct qwen35_hparams small_hp(void) {
    struct qwen35_hparams hp = {0};
    hp.n_layer = hp.n_block = 8;
    hp.n_embd = 64, hp.n_ff = 128, hp.n_head = 4, hp.n_head_kv = 2, hp.head_dim = 16;
    hp.n_rot = 8, hp.conv_kernel = 4, hp.ssm_d_state = 8, hp.ssm_n_group = 2;
    hp.ssm_dt_rank = 4, hp.ssm_d_inner = 32, hp.ssm_head_v_dim = 8, hp.n_vocab = 100;
    for (int l = 0; l < 8; l++)
        hp.kind[l] = (l + 1) % 4 ? LAYER_LINEAR_ATTN : LAYER_FULL_ATTN;
    return hp;
}

/* Fills the slot's arrays for positions [0, pos) with a pattern depending on seed. */
static void fill(seqstate_pool_t *p, const struct qwen35_hparams *hp, int slot, int lo, int hi,
                 int pos, float seed) {
    size_t cd = 2 * 8 * 2 + 32;
    for (int l = lo; l < hi; l++) {
        if (hp->kind[l] == LAYER_LINEAR_ATTN) {
            float *c = seqstate_conv(p, slot, l), *d = seqstate_delta(p, slot, l);
            for (size_t i = 0; i < cd * 3; i++)
                c[i] = seed + (float)i;
            for (size_t i = 0; i < 4 * 8 * 8; i++)
                d[i] = seed * 2.0f + (float)i;
        } else {
            float *k = seqstate_k(p, slot, l), *v = seqstate_v(p, slot, l);
            for (size_t i = 0; i < (size_t)pos * 32; i++)
                k[i] = seed - (float)i, v[i] = seed + 0.5f * (float)i;
        }
    }
    seqstate_set_pos(p, slot, pos);
}

Test(seqstate, bytes_match_layout) {
    struct qwen35_hparams hp = small_hp();
    /* linear layer: conv 3 x 64 = 192 floats, delta 4 x 8 x 8 = 256; full: 2 x ctx x 32 */
    cr_assert_eq(seqstate_bytes(&hp, 0, 3, 10), 3 * (192 + 256) * 4);
    cr_assert_eq(seqstate_bytes(&hp, 3, 4, 10), 2 * 10 * 32 * 4);
    cr_assert_eq(seqstate_bytes(&hp, 0, 8, 10), (6 * 448 + 2 * 640) * 4);
}

Test(seqstate, acquire_release_capacity) {
    struct qwen35_hparams hp = small_hp();
    seqstate_pool_t *p;
    bt_err e = {0};
    cr_assert_eq(seqstate_pool_new(&p, &hp, 0, 8, 2, 16, &e), 0, "%s", e.msg);
    int a, b, c;
    cr_assert_eq(seqstate_acquire(p, &a, &e), 0);
    cr_assert_eq(seqstate_acquire(p, &b, &e), 0);
    cr_assert_neq(a, b);
    cr_assert_eq(seqstate_acquire(p, &c, &e), BT_ECAPACITY);
    fill(p, &hp, a, 0, 8, 5, 1.0f);
    seqstate_release(p, a);
    cr_assert_eq(seqstate_acquire(p, &c, &e), 0);
    cr_assert_eq(c, a);
    cr_assert_eq(seqstate_pos(p, c), 0);
    cr_assert_eq(seqstate_conv(p, c, 0)[7], 0.0f, "a reused slot starts from zeros");
    cr_assert_eq(seqstate_delta(p, c, 6)[3], 0.0f);
    seqstate_pool_free(p);
    cr_assert_eq(seqstate_pool_new(&p, &hp, 3, 9, 1, 16, &e), BT_EINVAL);
    cr_assert_eq(seqstate_pool_new(&p, &hp, 0, 8, 0, 16, &e), BT_EINVAL);
}

Test(seqstate, save_load_roundtrip_and_fork_independence) {
    struct qwen35_hparams hp = small_hp();
    seqstate_pool_t *p;
    bt_err e = {0};
    cr_assert_eq(seqstate_pool_new(&p, &hp, 2, 8, 3, 16, &e), 0, "%s", e.msg);
    int a, b, c;
    seqstate_acquire(p, &a, &e), seqstate_acquire(p, &b, &e), seqstate_acquire(p, &c, &e);
    fill(p, &hp, a, 2, 8, 7, 3.0f);
    size_t n = seqstate_save_size(p, a), len;
    cr_assert_eq(n, 32 + (4 * 448 + 2 * 2 * 7 * 32) * 4, "KV only up to the used positions");
    unsigned char *buf = malloc(n), *buf2 = malloc(n);
    cr_assert_eq(seqstate_save(p, a, buf, n - 1, &len, &e), BT_EMSGSIZE);
    cr_assert_eq(seqstate_save(p, a, buf, n, &len, &e), 0, "%s", e.msg);
    cr_assert_eq(len, n);
    cr_assert_eq(seqstate_load(p, b, buf, len, &e), 0, "%s", e.msg);
    cr_assert_eq(seqstate_pos(p, b), 7);
    cr_assert_eq(seqstate_save(p, b, buf2, n, &len, &e), 0);
    cr_assert_eq(memcmp(buf, buf2, n), 0, "roundtrip changes nothing");
    cr_assert_eq(memcmp(seqstate_k(p, a, 3), seqstate_k(p, b, 3), 7 * 32 * 4), 0);

    seqstate_fork(p, a, c);
    cr_assert_eq(seqstate_pos(p, c), 7);
    seqstate_conv(p, c, 2)[0] = -99.0f;
    seqstate_k(p, c, 7)[5] = -99.0f;
    seqstate_delta(p, c, 4)[1] = -99.0f;
    cr_assert_eq(seqstate_conv(p, a, 2)[0], 3.0f, "fork shares no memory");
    cr_assert_eq(seqstate_k(p, a, 7)[5], 3.0f - 5.0f);
    cr_assert_eq(seqstate_delta(p, a, 4)[1], 7.0f);
    free(buf);
    free(buf2);
    seqstate_pool_free(p);
}

Test(seqstate, load_rejects_mismatches) {
    struct qwen35_hparams hp = small_hp();
    seqstate_pool_t *p, *other, *small;
    bt_err e = {0};
    cr_assert_eq(seqstate_pool_new(&p, &hp, 0, 8, 2, 16, &e), 0);
    cr_assert_eq(seqstate_pool_new(&other, &hp, 0, 4, 1, 16, &e), 0);
    cr_assert_eq(seqstate_pool_new(&small, &hp, 0, 8, 1, 4, &e), 0);
    int a, b, o, s;
    seqstate_acquire(p, &a, &e), seqstate_acquire(p, &b, &e);
    seqstate_acquire(other, &o, &e), seqstate_acquire(small, &s, &e);
    fill(p, &hp, a, 0, 8, 6, 1.0f);
    fill(p, &hp, b, 0, 8, 2, 9.0f);
    size_t n = seqstate_save_size(p, a), len;
    unsigned char *buf = malloc(n + 8), *bad = malloc(n + 8);
    cr_assert_eq(seqstate_save(p, a, buf, n, &len, &e), 0);

    memcpy(bad, buf, n);
    bad[0] ^= 1;
    cr_expect_eq(seqstate_load(p, b, bad, n, &e), BT_EFORMAT, "bad magic");
    memcpy(bad, buf, n);
    bad[4] = 2;
    cr_expect_eq(seqstate_load(p, b, bad, n, &e), BT_EVERSION, "wrong version");
    cr_expect(strstr(e.msg, "version 2") != NULL, "%s", e.msg);
    cr_expect_eq(seqstate_load(other, o, buf, n, &e), BT_ESHAPE, "other layer range");
    cr_expect(strstr(e.msg, "[0, 8)") != NULL, "%s", e.msg);
    cr_expect_eq(seqstate_load(p, b, buf, n - 1, &e), BT_EFORMAT, "truncated");
    cr_expect_eq(seqstate_load(p, b, buf, 10, &e), BT_EFORMAT, "truncated header");
    memset(buf + n, 0, 8);
    cr_expect_eq(seqstate_load(p, b, buf, n + 4, &e), BT_EFORMAT, "trailing bytes");
    cr_expect_eq(seqstate_load(small, s, buf, n, &e), BT_ECAPACITY, "position beyond max_ctx");
    struct qwen35_hparams hp2 = hp;
    hp2.ssm_d_state = 16;
    uint64_t fp2 = seqstate_fingerprint(&hp2);
    memcpy(bad, buf, n);
    memcpy(bad + 16, &fp2, 8);
    cr_expect_eq(seqstate_load(p, b, bad, n, &e), BT_ESHAPE, "other model");
    /* failed loads left b unchanged */
    cr_expect_eq(seqstate_pos(p, b), 2);
    cr_expect_eq(seqstate_conv(p, b, 0)[0], 9.0f);
    free(buf);
    free(bad);
    seqstate_pool_free(p);
    seqstate_pool_free(other);
    seqstate_pool_free(small);
}
