/* tests/test_mkmodel.c: `baton mkmodel` end to end: runs the built CLI ($BUILD/baton, as
 * tests/run.sh sets BUILD) on the tiny configuration, parses the file and checks metadata,
 * tensor shapes and dtypes against spec §10.1/§11, weight statistics, and that the output does
 * not depend on the thread count. */
#include "engine/gguf.h"
#include "ops/ops.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *baton_bin(void) {
    static char p[1024];
    const char *b = getenv("BUILD");
    snprintf(p, sizeof p, "%s/baton", b && *b ? b : "build");
    cr_assert_eq(access(p, X_OK), 0, "%s not built (run via make test / tests/run.sh)", p);
    return p;
}

static void mkmodel(const char *args, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s mkmodel %s -o %s 2>/dev/null", baton_bin(), args, out);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static uint32_t u32(const gguf_t *g, const char *k) {
    uint32_t v = 0;
    bt_err e = {0};
    cr_assert_eq(gguf_get_u32(g, k, &v, &e), 0, "%s", e.msg);
    return v;
}

static void expect_tensor(const gguf_t *g, const char *name, int64_t ne0, int64_t ne1,
                          enum dtype dt) {
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    cr_assert_not_null(t, "missing %s", name);
    cr_assert_eq(t->ne[0], ne0, "%s ne0 %lld", name, (long long)t->ne[0]);
    cr_assert_eq(t->ne[1], ne1, "%s ne1 %lld", name, (long long)t->ne[1]);
    cr_assert_eq(t->dtype, dt, "%s: %s", name, dtype_name(t->dtype));
}

/* Dequantized values of a tensor (caller frees). */
static float *read_tensor(const char *path, const struct gguf_tensor *t, int64_t *n) {
    *n = t->ne[0] * t->ne[1];
    uint8_t *raw = malloc(t->n_bytes);
    float *x = malloc((size_t)*n * sizeof *x);
    FILE *f = fopen(path, "rb");
    cr_assert(raw && x && f);
    fseek(f, (long)t->offset, SEEK_SET);
    cr_assert_eq(fread(raw, 1, t->n_bytes, f), t->n_bytes);
    fclose(f);
    size_t rb = t->n_bytes / (size_t)t->ne[1];
    for (int64_t r = 0; r < t->ne[1]; r++)
        ops->dequantize_row[t->dtype](raw + (size_t)r * rb, x + r * t->ne[0], t->ne[0]);
    free(raw);
    return x;
}

static void stats(const float *x, int64_t n, double *mean, double *sd, float *mn, float *mx) {
    double s = 0, s2 = 0;
    *mn = x[0], *mx = x[0];
    for (int64_t i = 0; i < n; i++) {
        s += (double)x[i], s2 += (double)x[i] * (double)x[i];
        *mn = fminf(*mn, x[i]), *mx = fmaxf(*mx, x[i]);
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

Test(mkmodel, tiny_q4_k_m_follows_spec) {
    char path[] = "/tmp/test_mkmodel_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    mkmodel("--size tiny --type q4_k_m --seed 7", path);
    gguf_t *g = NULL;
    bt_err e = {0};
    cr_assert_eq(gguf_open(&g, path, &e), 0, "%s", e.msg);
    cr_assert_eq(ops_init("ref", &e), 0, "%s", e.msg);

    /* tiny: L 4, H 256, I 512, 4 q heads / 2 kv heads of 64, GDN 4 k / 8 v heads of 32 */
    const int64_t H = 256, I = 512, dh = 64, KD = 4 * 32, VD = 8 * 32, CD = 2 * KD + VD;
    const int64_t V = 4096;
    const char *s;
    cr_assert_eq(gguf_get_str(g, "general.architecture", &s, NULL, NULL), 0);
    cr_assert_str_eq(s, "qwen35");
    cr_assert_eq(u32(g, "qwen35.block_count"), 4);
    cr_assert_eq(u32(g, "qwen35.embedding_length"), H);
    cr_assert_eq(u32(g, "qwen35.feed_forward_length"), I);
    cr_assert_eq(u32(g, "qwen35.attention.head_count"), 4);
    cr_assert_eq(u32(g, "qwen35.attention.head_count_kv"), 2);
    cr_assert_eq(u32(g, "qwen35.attention.key_length"), dh);
    cr_assert_eq(u32(g, "qwen35.ssm.group_count"), 4);
    cr_assert_eq(u32(g, "qwen35.ssm.time_step_rank"), 8);
    cr_assert_eq(u32(g, "qwen35.ssm.inner_size"), VD);
    cr_assert_eq(u32(g, "qwen35.ssm.state_size"), 32);
    cr_assert_eq(u32(g, "qwen35.rope.dimension_count"), dh / 4);
    cr_assert_eq(u32(g, "qwen35.full_attention_interval"), 4);
    const struct gguf_arr *a;
    int64_t v;
    cr_assert_eq(gguf_get_arr(g, "qwen35.rope.dimension_sections", &a, NULL), 0);
    cr_assert_eq(a->n, 4);
    int64_t sum = 0;
    for (uint64_t i = 0; i < 4; i++) {
        cr_assert_eq(gguf_arr_i64(a, i, &v), 0);
        sum += v;
    }
    cr_assert_eq(sum, dh / 4 / 2); /* sections cover the rotated pairs */
    cr_assert_eq(gguf_get_arr(g, "qwen35.attention.recurrent_layers", &a, NULL), 0);
    cr_assert_eq(a->n, 4);
    for (uint64_t i = 0; i < 4; i++) {
        cr_assert_eq(gguf_arr_i64(a, i, &v), 0);
        cr_assert_eq(v, i != 3);
    }

    /* tokenizer: 256 byte tokens, merges whose results are tokens, specials, padding */
    const struct gguf_arr *tok, *tt, *merges;
    cr_assert_eq(gguf_get_arr(g, "tokenizer.ggml.tokens", &tok, NULL), 0);
    cr_assert_eq(gguf_get_arr(g, "tokenizer.ggml.token_type", &tt, NULL), 0);
    cr_assert_eq(gguf_get_arr(g, "tokenizer.ggml.merges", &merges, NULL), 0);
    cr_assert_eq(tok->n, V);
    cr_assert_eq(tt->n, V);
    cr_assert_gt(merges->n, 200);
    cr_assert_str_eq(tok->str[0], "!");
    cr_assert_eq(gguf_get_str(g, "tokenizer.ggml.model", &s, NULL, NULL), 0);
    cr_assert_str_eq(s, "gpt2");
    uint32_t eos = u32(g, "tokenizer.ggml.eos_token_id"),
             pad = u32(g, "tokenizer.ggml.padding_token_id");
    cr_assert_str_eq(tok->str[eos], "<|im_end|>");
    cr_assert_str_eq(tok->str[pad], "<|endoftext|>");
    cr_assert_str_eq(tok->str[pad + 1], "<|im_start|>");
    cr_assert_eq(gguf_arr_i64(tt, pad + 1, &v), 0);
    cr_assert_eq(v, 3);
    int found_think = 0;
    for (uint64_t i = 0; i < tok->n; i++)
        if (!strcmp(tok->str[i], "<think>")) {
            found_think = 1;
            cr_assert_eq(gguf_arr_i64(tt, i, &v), 0);
            cr_assert_eq(v, 4);
        }
    cr_assert(found_think);
    char padname[32];
    snprintf(padname, sizeof padname, "[PAD%d]", (int)V - 1);
    cr_assert_str_eq(tok->str[V - 1], padname);
    /* merge "a b" -> token "ab" exists for the first merge */
    char m0[64];
    snprintf(m0, sizeof m0, "%s", merges->str[0]);
    char *sp = strchr(m0, ' ');
    cr_assert_not_null(sp);
    memmove(sp, sp + 1, strlen(sp));
    int found = 0;
    for (uint64_t i = 256; i < tok->n && !found; i++)
        found = !strcmp(tok->str[i], m0);
    cr_assert(found, "first merge result %s is not a token", m0);
    cr_assert_eq(gguf_get_str(g, "tokenizer.chat_template", &s, NULL, NULL), 0);
    cr_assert(strstr(s, "<|im_start|>") && strstr(s, "<think>"));

    /* shapes (spec §10.1) and dtypes (Q4_K_M approximation) */
    expect_tensor(g, "token_embd.weight", H, V, DT_Q4_K);
    expect_tensor(g, "output.weight", H, V, DT_Q6_K);
    expect_tensor(g, "output_norm.weight", H, 1, DT_F32);
    for (int l = 0; l < 4; l++) {
        char n[96];
#define T(suffix, a0, a1, dt)                                                                      \
    snprintf(n, sizeof n, "blk.%d.%s", l, suffix), expect_tensor(g, n, a0, a1, dt)
        T("attn_norm.weight", H, 1, DT_F32);
        T("post_attention_norm.weight", H, 1, DT_F32);
        T("ffn_gate.weight", H, I, DT_Q4_K);
        T("ffn_up.weight", H, I, DT_Q4_K);
        T("ffn_down.weight", I, H, l >= 2 ? DT_Q6_K : DT_Q4_K); /* more_bits: 2, 3 of 4 */
        if (l == 3) {
            T("attn_q.weight", H, 2 * 4 * dh, DT_Q4_K);
            T("attn_k.weight", H, 2 * dh, DT_Q4_K);
            T("attn_v.weight", H, 2 * dh, DT_Q6_K);
            T("attn_output.weight", 4 * dh, H, DT_Q4_K);
            T("attn_q_norm.weight", dh, 1, DT_F32);
            T("attn_k_norm.weight", dh, 1, DT_F32);
        } else {
            T("attn_qkv.weight", H, CD, DT_Q5_K);
            T("attn_gate.weight", H, VD, DT_Q4_K);
            T("ssm_beta.weight", H, 8, DT_Q4_K);
            T("ssm_alpha.weight", H, 8, DT_Q4_K);
            T("ssm_conv1d.weight", 4, CD, DT_F32);
            T("ssm_dt.bias", 8, 1, DT_F32);
            T("ssm_a", 8, 1, DT_F32);
            T("ssm_norm.weight", 32, 1, DT_F32);
            T("ssm_out.weight", VD, H, DT_Q4_K);
            snprintf(n, sizeof n, "blk.%d.attn_q.weight", l);
            cr_assert_null(gguf_find_tensor(g, n));
        }
#undef T
    }
    cr_assert_eq(gguf_n_tensors(g), 3 + 3 * 14 + 11);

    /* weight statistics follow the fixture recipe */
    int64_t n;
    double mean, sd;
    float mn, mx;
    float *x = read_tensor(path, gguf_find_tensor(g, "token_embd.weight"), &n);
    stats(x, 256 * H, &mean, &sd, &mn, &mx); /* the byte tokens' rows */
    for (int64_t i = 0; i < H; i++) /* a padding id's row is zero: its logit is exactly 0 */
        cr_assert_eq(x[(V - 1) * H + i], 0.0f);
    cr_assert(fabs(mean) < 0.02 && fabs(sd - 1.0) < 0.05, "embd mean %g sd %g", mean, sd);
    free(x);
    x = read_tensor(path, gguf_find_tensor(g, "output.weight"), &n);
    stats(x, 256 * H, &mean, &sd, &mn, &mx);
    cr_assert(fabs(sd - 4.0 / sqrt((double)H)) < 0.01, "lm head sd %g", sd);
    for (int64_t i = 0; i < H; i++)
        cr_assert_eq(x[(V - 1) * H + i], 0.0f);
    free(x);
    x = read_tensor(path, gguf_find_tensor(g, "blk.0.ffn_down.weight"), &n);
    stats(x, n, &mean, &sd, &mn, &mx);
    cr_assert(fabs(sd - 0.35 / sqrt((double)I)) < 0.002, "ffn_down sd %g", sd);
    free(x);
    x = read_tensor(path, gguf_find_tensor(g, "blk.1.ssm_a"), &n);
    stats(x, n, &mean, &sd, &mn, &mx);
    cr_assert(mx < -0.079f && mn > -7.41f, "ssm_a in [%g, %g]", (double)mn, (double)mx);
    free(x);
    x = read_tensor(path, gguf_find_tensor(g, "blk.2.attn_norm.weight"), &n);
    stats(x, n, &mean, &sd, &mn, &mx);
    cr_assert(fabs(mean - 1.0) < 0.03 && fabs(sd - 0.1) < 0.02, "norm mean %g sd %g", mean, sd);
    free(x);
    gguf_free(g);
    unlink(path);
}

Test(mkmodel, same_file_for_any_thread_count) {
    char p1[] = "/tmp/test_mkmodel_a_XXXXXX", p2[] = "/tmp/test_mkmodel_b_XXXXXX";
    close(mkstemp(p1));
    close(mkstemp(p2));
    mkmodel("--size tiny --layers 4 --vocab 1024 --type q8_0 --seed 3 --threads 1", p1);
    mkmodel("--size tiny --layers 4 --vocab 1024 --type q8_0 --seed 3 --threads 3", p2);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", p1, p2);
    cr_assert_eq(system(cmd), 0, "files differ between 1 and 3 threads");
    mkmodel("--size tiny --layers 4 --vocab 1024 --type q8_0 --seed 4 --threads 1", p2);
    cr_assert_neq(system(cmd), 0, "seed has no effect");
    unlink(p1);
    unlink(p2);
}

Test(mkmodel, rejects_bad_flags) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s mkmodel --size 3b -o /tmp/x.gguf 2>/dev/null", baton_bin());
    cr_assert_neq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s mkmodel --size tiny --type q3_k -o /tmp/x.gguf 2>/dev/null",
             baton_bin());
    cr_assert_neq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s mkmodel --size tiny --vocab 100 -o /tmp/x.gguf 2>/dev/null",
             baton_bin());
    cr_assert_neq(system(cmd), 0);
}
