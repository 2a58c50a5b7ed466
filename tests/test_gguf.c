/* tests/test_gguf.c: the GGUF parser on the reference fixtures, on one malformed file per
 * rejection path (tests/fixtures/bad/, written by make_bad_gguf.py), on every truncation of a
 * small file, and the writer by round trip. */
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "tests/fixtures.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static gguf_t *open_ok(const char *path) {
    gguf_t *g = NULL;
    bt_err e = {0};
    int rc = gguf_open(&g, path, &e);
    cr_assert_eq(rc, 0, "%s: rc=%d %s", path, rc, e.msg);
    return g;
}

static uint32_t u32_of(const gguf_t *g, const char *key) {
    uint32_t v = 0;
    bt_err e = {0};
    cr_assert_eq(gguf_get_u32(g, key, &v, &e), 0, "%s", e.msg);
    return v;
}

static const struct gguf_arr *arr_of(const gguf_t *g, const char *key) {
    const struct gguf_arr *a = NULL;
    bt_err e = {0};
    cr_assert_eq(gguf_get_arr(g, key, &a, &e), 0, "%s", e.msg);
    return a;
}

Test(gguf, tiny_f32_metadata_and_tensors) {
    gguf_t *g = open_ok(fixture_path("tiny-a/gguf/model-f32.gguf"));
    cr_assert_eq(gguf_version(g), 3);
    cr_assert_eq(gguf_alignment(g), 32);
    cr_assert_eq(u32_of(g, "qwen35.block_count"), 9);
    cr_assert_eq(u32_of(g, "qwen35.embedding_length"), 128);
    cr_assert_eq(u32_of(g, "qwen35.nextn_predict_layers"), 1);
    const char *s;
    size_t n;
    cr_assert_eq(gguf_get_str(g, "general.architecture", &s, &n, NULL), 0);
    cr_assert_str_eq(s, "qwen35");
    cr_assert_eq(n, 6);
    float eps = 0, theta = 0;
    cr_assert_eq(gguf_get_f32(g, "qwen35.attention.layer_norm_rms_epsilon", &eps, NULL), 0);
    cr_assert_float_eq(eps, 1e-6f, 1e-12f);
    cr_assert_eq(gguf_get_f32(g, "qwen35.rope.freq_base", &theta, NULL), 0);
    cr_assert_float_eq(theta, 1e7f, 1.0f);
    int add_bos = -1;
    cr_assert_eq(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, NULL), 0);
    cr_assert_eq(add_bos, 0);

    const struct gguf_arr *tok = arr_of(g, "tokenizer.ggml.tokens");
    cr_assert_eq(tok->type, GGUF_STRING);
    cr_assert_eq(tok->n, 1792);
    cr_assert_str_eq(tok->str[1756], "<|endoftext|>");
    cr_assert_str_eq(tok->str[1759], "<think>");
    cr_assert_eq(tok->str_len[1760], strlen("</think>"));
    const struct gguf_arr *merges = arr_of(g, "tokenizer.ggml.merges");
    cr_assert_eq(merges->type, GGUF_STRING);
    cr_assert_eq(merges->n, 1500);
    cr_assert_str_eq(merges->str[0], "\xc4\xa0 \xc4\xa0"); /* "Ġ Ġ": Qwen's first merge */
    const struct gguf_arr *tt = arr_of(g, "tokenizer.ggml.token_type");
    cr_assert_eq(tt->type, GGUF_I32);
    int64_t v;
    cr_assert_eq(gguf_arr_i64(tt, 0, &v), 0);
    cr_assert_eq(v, 1); /* normal */
    cr_assert_eq(gguf_arr_i64(tt, 1757, &v), 0);
    cr_assert_eq(v, 3); /* <|im_start|> is control */
    cr_assert_eq(gguf_arr_i64(tt, 1792, &v), BT_EINVAL);

    const struct gguf_arr *sec = arr_of(g, "qwen35.rope.dimension_sections");
    const int64_t want_sec[4] = {3, 3, 2, 0};
    cr_assert_eq(sec->n, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(gguf_arr_i64(sec, (uint64_t)i, &v), 0);
        cr_assert_eq(v, want_sec[i]);
    }
    const struct gguf_arr *rec = arr_of(g, "qwen35.attention.recurrent_layers");
    cr_assert_eq(rec->type, GGUF_BOOL);
    cr_assert_eq(rec->n, 9);
    for (int i = 0; i < 9; i++) {
        cr_assert_eq(gguf_arr_i64(rec, (uint64_t)i, &v), 0);
        cr_assert_eq(v, i < 8 && (i + 1) % 4 != 0, "layer %d", i);
    }

    cr_assert_eq(gguf_n_tensors(g), 124);
    const struct gguf_tensor *t = gguf_find_tensor(g, "blk.0.attn_qkv.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, DT_F32);
    cr_assert_eq(t->n_dims, 2);
    cr_assert_eq(t->ne[0], 128);
    cr_assert_eq(t->ne[1], 512); /* 2 * 4 key heads * 32 + 8 value heads * 32 */
    cr_assert_eq(t->ne[2], 1);
    cr_assert_eq(t->n_bytes, 128 * 512 * 4);
    cr_assert_eq(t->offset % 32, 0);
    cr_assert_geq(t->offset, gguf_data_offset(g));
    t = gguf_find_tensor(g, "blk.0.ssm_conv1d.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->ne[0], 4);
    cr_assert_eq(t->ne[1], 512);
    t = gguf_find_tensor(g, "blk.3.attn_q.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->ne[1], 2 * 4 * 64);                         /* query + gate rows per head */
    cr_assert_null(gguf_find_tensor(g, "blk.0.attn_q.weight")); /* layer 0 is linear attention */
    cr_assert_null(gguf_find_tensor(g, "nope"));
    gguf_free(g);
}

Test(gguf, every_fixture_parses_within_file) {
    const char *files[] = {"model-f32",    "model-q8_0", "model-q4_0",
                           "model-q4_k_m", "model-q6_k", "model-q8_0-nomtp"};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tiny-a/gguf/%s.gguf", files[f]);
        gguf_t *g = open_ok(fixture_path(rel));
        int64_t nt = gguf_n_tensors(g);
        cr_assert_geq(nt, 109, "%s", rel);
        for (int64_t i = 0; i < nt; i++) {
            const struct gguf_tensor *t = gguf_tensor(g, i);
            cr_assert_leq(t->offset + t->n_bytes, gguf_file_size(g));
            cr_assert_eq(gguf_find_tensor(g, t->name), t);
            cr_assert_eq(t->n_bytes, dtype_row_bytes(t->dtype, t->ne[0]) * (uint64_t)t->ne[1] *
                                         (uint64_t)t->ne[2] * (uint64_t)t->ne[3]);
        }
        gguf_free(g);
    }
}

Test(gguf, q4_k_m_dtype_mix) {
    gguf_t *g = open_ok(fixture_path("tiny-a/gguf/model-q4_k_m.gguf"));
    int count[DT_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        count[t->dtype]++;
        if (t->n_dims == 1 || strstr(t->name, "ssm_conv1d"))
            cr_assert_eq(t->dtype, DT_F32, "%s", t->name);
    }
    cr_assert_eq(count[DT_F32], 52);
    cr_assert_eq(count[DT_Q4_K], 14);
    cr_assert_eq(count[DT_Q6_K], 5);
    cr_assert_eq(count[DT_Q5_0], 47);
    cr_assert_eq(count[DT_Q8_0], 6);
    const struct gguf_tensor *t = gguf_find_tensor(g, "blk.0.ffn_down.weight");
    cr_assert_eq(t->dtype, DT_Q6_K);
    cr_assert_eq(t->n_bytes, 512 / 256 * 210 * 128);
    gguf_free(g);
}

/* A 151936-token vocabulary with its merges parses. How fast is bench_loader's "metadata"
 * figure: a time limit here failed the suite whenever the machine was busy. */
Test(gguf, big_vocab_opens) {
    gguf_t *g = open_ok(fixture_path("qwen3-vocab/qwen3-vocab-qwen35.gguf"));
    cr_assert_eq(gguf_n_tensors(g), 0);
    const struct gguf_arr *tok = arr_of(g, "tokenizer.ggml.tokens");
    cr_assert_eq(tok->n, 151936);
    cr_assert_str_eq(tok->str[151643], "<|endoftext|>");
    cr_assert_gt(arr_of(g, "tokenizer.ggml.merges")->n, 100000);
    gguf_free(g);
}

Test(gguf, getters_check_types) {
    gguf_t *g = open_ok(fixture_path("tiny-a/gguf/model-q8_0.gguf"));
    bt_err e = {0};
    uint32_t u;
    const char *s;
    float f;
    int64_t i64;
    cr_assert_eq(gguf_get_u32(g, "no.such.key", &u, &e), BT_ENOKEY);
    cr_assert(strstr(e.msg, "no.such.key"));
    cr_assert_eq(gguf_get_u32(g, "general.architecture", &u, &e), BT_ETYPE);
    cr_assert(strstr(e.msg, "general.architecture"));
    cr_assert_eq(gguf_get_str(g, "qwen35.block_count", &s, NULL, &e), BT_ETYPE);
    cr_assert_eq(gguf_get_f32(g, "qwen35.block_count", &f, &e), 0); /* integers widen */
    cr_assert_float_eq(f, 9.0f, 0.0f);
    cr_assert_eq(gguf_get_i64(g, "qwen35.rope.freq_base", &i64, &e), BT_ETYPE);
    const struct gguf_arr *a;
    cr_assert_eq(gguf_get_arr(g, "general.name", &a, &e), BT_ETYPE);
    cr_assert_eq(gguf_find_kv(g, "general.name"), 2);
    cr_assert_str_eq(gguf_kv_key(g, 2), "general.name");
    cr_assert_eq(gguf_kv_type(g, 2), GGUF_STRING);
    gguf_free(g);
}

/* ---- rejection paths: one file each ---- */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static const char *bad_path(const char *name) {
    static char p[1024];
    /* tests run from the repository root (tests/run.sh); fall back to this file's folder */
    snprintf(p, sizeof p, "tests/fixtures/bad/%s.gguf", name);
    if (access(p, R_OK) != 0)
        snprintf(p, sizeof p, "%s/../tests/fixtures/bad/%s.gguf",
                 getenv("PWD") ? getenv("PWD") : ".", name);
    return p;
}

/* Parses the bad file both from memory and through gguf_open; both must give code and name
 * the object. */
static void expect_bad(const char *name, int code, const char *object) {
    size_t len;
    const char *path = bad_path(name);
    char *buf = slurp(path, &len);
    gguf_t *g = NULL;
    bt_err e = {0};
    int rc = gguf_parse(&g, buf, len, len, NULL, &e);
    cr_assert_eq(rc, code, "%s: rc=%d (%s), want %d", name, rc, e.msg, code);
    cr_assert_null(g);
    cr_assert(strstr(e.msg, object), "%s: message '%s' does not name '%s'", name, e.msg, object);
    cr_assert_null(strchr(e.msg, '\n'));
    bt_err e2 = {0};
    cr_assert_eq(gguf_open(&g, path, &e2), code, "%s via open: %s", name, e2.msg);
    cr_assert(strstr(e2.msg, object), "%s via open: '%s'", name, e2.msg);
    free(buf);
}

#define BAD(name, code, object)                                                                    \
    Test(gguf_bad, name) {                                                                         \
        expect_bad(#name, code, object);                                                           \
    }

BAD(bad_magic, BT_EFORMAT, "magic")
BAD(bad_version, BT_EVERSION, "version 1")
BAD(trunc_header, BT_EFORMAT, "header: truncated")
BAD(trunc_kv, BT_EFORMAT, "key general.architecture")
BAD(trunc_tensor_info, BT_EFORMAT, "tensor blk.0.attn_norm.weight: truncated")
BAD(data_beyond_eof, BT_EFORMAT,
    "tensor blk.0.attn_norm.weight: data ends at 192 beyond file size 176")
BAD(huge_kv_count, BT_EFORMAT, "kv count 1152921504606846976")
BAD(huge_tensor_count, BT_EFORMAT, "tensor count")
BAD(huge_array_count, BT_EFORMAT, "key tokenizer.ggml.tokens: string array count")
BAD(string_len_overflow, BT_EFORMAT, "key general.name: string length")
BAD(unknown_value_type, BT_EFORMAT, "key general.weird: unknown value type 13")
BAD(unknown_array_type, BT_EFORMAT, "key general.weird_arr: unknown array element type 42")
BAD(nested_too_deep, BT_EFORMAT, "key general.deep: arrays nested deeper than 8")
BAD(unknown_dtype, BT_EUNSUPPORTED, "tensor blk.0.attn_q.weight: unsupported ggml type 16")
BAD(misaligned_offset, BT_EFORMAT, "tensor blk.0.ffn_norm.weight: offset 36")
BAD(bad_alignment, BT_EFORMAT, "key general.alignment: value 24")
BAD(zero_alignment, BT_EFORMAT, "key general.alignment: value 0")
BAD(dup_key, BT_EFORMAT, "key qwen35.block_count: duplicate")
BAD(dup_tensor, BT_EFORMAT, "tensor blk.0.attn_norm.weight: duplicate")
BAD(ndims_5, BT_EFORMAT, "tensor blk.0.big.weight: n_dims=5")
BAD(ne_not_block, BT_EFORMAT, "tensor blk.0.ffn_up.weight: ne[0]=33")
BAD(ne_overflow, BT_EFORMAT, "tensor blk.0.ffn_gate.weight: element count overflows")
BAD(nul_in_key, BT_EFORMAT, "kv 2: key contains a NUL")

/* ---- writer ---- */

/* A small file with every KV type, a nested array and tensors of several dtypes. */
static gguf_writer_t *sample_writer(uint64_t align) {
    gguf_writer_t *w;
    bt_err e = {0};
    cr_assert_eq(gguf_writer_new(&w, align, &e), 0, "%s", e.msg);
    cr_assert_eq(gguf_writer_add_u8(w, "t.u8", 200, &e), 0);
    cr_assert_eq(gguf_writer_add_i8(w, "t.i8", -100, &e), 0);
    cr_assert_eq(gguf_writer_add_u16(w, "t.u16", 60000, &e), 0);
    cr_assert_eq(gguf_writer_add_i16(w, "t.i16", -30000, &e), 0);
    cr_assert_eq(gguf_writer_add_u32(w, "t.u32", 4000000000u, &e), 0);
    cr_assert_eq(gguf_writer_add_i32(w, "t.i32", -2000000000, &e), 0);
    cr_assert_eq(gguf_writer_add_u64(w, "t.u64", 1ull << 40, &e), 0);
    cr_assert_eq(gguf_writer_add_i64(w, "t.i64", -(1ll << 40), &e), 0);
    cr_assert_eq(gguf_writer_add_f32(w, "t.f32", 0.25f, &e), 0);
    cr_assert_eq(gguf_writer_add_f64(w, "t.f64", -1.5, &e), 0);
    cr_assert_eq(gguf_writer_add_bool(w, "t.bool", 1, &e), 0);
    cr_assert_eq(gguf_writer_add_str(w, "t.str", "héllo", &e), 0);
    cr_assert_eq(gguf_writer_add_strn(w, "t.strnul", "a\0b", 3, &e), 0);
    const int32_t ai[4] = {11, 11, 10, 0};
    cr_assert_eq(gguf_writer_add_arr(w, "t.arr_i32", GGUF_I32, ai, 4, &e), 0);
    const uint8_t ab[3] = {1, 0, 1};
    cr_assert_eq(gguf_writer_add_arr(w, "t.arr_bool", GGUF_BOOL, ab, 3, &e), 0);
    const float af[2] = {1.0f, -2.0f};
    cr_assert_eq(gguf_writer_add_arr(w, "t.arr_f32", GGUF_F32, af, 2, &e), 0);
    const char *as[3] = {"a", "", "Ġ Ġ"};
    cr_assert_eq(gguf_writer_add_arr_str(w, "t.arr_str", as, NULL, 3, &e), 0);
    cr_assert_eq(gguf_writer_add_arr(w, "t.arr_empty", GGUF_U8, NULL, 0, &e), 0);
    /* [[7], [8, 9]] as array of array of u16, encoded by hand */
    const uint8_t nested[] = {2, 0, 0, 0, 0, 0, 0, 0,                          /* 2 elements */
                              2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0,        /* u16 x1: 7 */
                              2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 9, 0}; /* u16 x2 */
    uint8_t raw[4 + sizeof nested];
    raw[0] = GGUF_ARRAY, raw[1] = raw[2] = raw[3] = 0;
    memcpy(raw + 4, nested, sizeof nested);
    cr_assert_eq(gguf_writer_add_raw(w, "t.nested", GGUF_ARRAY, raw, sizeof raw, &e), 0);
    cr_assert_eq(gguf_writer_add_u32(w, "t.u32", 1, &e), BT_EINVAL); /* duplicate */
    cr_assert(strstr(e.msg, "t.u32"));

    const int64_t ne_a[2] = {64, 3}, ne_b[1] = {5}, ne_c[2] = {256, 2}, ne_d[3] = {32, 2, 2};
    cr_assert_eq(gguf_writer_add_tensor(w, "a.q8_0", DT_Q8_0, 2, ne_a, &e), 0);
    cr_assert_eq(gguf_writer_add_tensor(w, "b.f32", DT_F32, 1, ne_b, &e), 1);
    cr_assert_eq(gguf_writer_add_tensor(w, "c.q4_k", DT_Q4_K, 2, ne_c, &e), 2);
    cr_assert_eq(gguf_writer_add_tensor(w, "d.bf16", DT_BF16, 3, ne_d, &e), 3);
    cr_assert_eq(gguf_writer_add_tensor(w, "b.f32", DT_F32, 1, ne_b, &e), BT_EINVAL);
    const int64_t bad_ne[1] = {33};
    cr_assert_eq(gguf_writer_add_tensor(w, "e.q8_0", DT_Q8_0, 1, bad_ne, &e), BT_EINVAL);
    return w;
}

static void check_sample(const gguf_t *g, uint64_t align) {
    int64_t v;
    uint32_t u;
    float f;
    const char *s;
    size_t n;
    cr_assert_eq(gguf_alignment(g), align);
    cr_assert_eq(gguf_get_i64(g, "t.u8", &v, NULL), 0);
    cr_assert_eq(v, 200);
    cr_assert_eq(gguf_get_i64(g, "t.i8", &v, NULL), 0);
    cr_assert_eq(v, -100);
    cr_assert_eq(gguf_get_i64(g, "t.u16", &v, NULL), 0);
    cr_assert_eq(v, 60000);
    cr_assert_eq(gguf_get_i64(g, "t.i16", &v, NULL), 0);
    cr_assert_eq(v, -30000);
    cr_assert_eq(gguf_get_u32(g, "t.u32", &u, NULL), 0);
    cr_assert_eq(u, 4000000000u);
    cr_assert_eq(gguf_get_i64(g, "t.i32", &v, NULL), 0);
    cr_assert_eq(v, -2000000000);
    cr_assert_eq(gguf_get_u32(g, "t.i32", &u, NULL), BT_ETYPE); /* negative */
    cr_assert_eq(gguf_get_i64(g, "t.u64", &v, NULL), 0);
    cr_assert_eq(v, 1ll << 40);
    cr_assert_eq(gguf_get_u32(g, "t.u64", &u, NULL), BT_ETYPE); /* too big */
    cr_assert_eq(gguf_get_i64(g, "t.i64", &v, NULL), 0);
    cr_assert_eq(v, -(1ll << 40));
    cr_assert_eq(gguf_get_f32(g, "t.f32", &f, NULL), 0);
    cr_assert_eq(f, 0.25f);
    cr_assert_eq(gguf_get_f32(g, "t.f64", &f, NULL), 0);
    cr_assert_eq(f, -1.5f);
    int b = 0;
    cr_assert_eq(gguf_get_bool(g, "t.bool", &b, NULL), 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(gguf_get_str(g, "t.str", &s, &n, NULL), 0);
    cr_assert_str_eq(s, "héllo");
    cr_assert_eq(gguf_get_str(g, "t.strnul", &s, &n, NULL), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(memcmp(s, "a\0b", 3), 0);
    const struct gguf_arr *a;
    cr_assert_eq(gguf_get_arr(g, "t.arr_i32", &a, NULL), 0);
    cr_assert_eq(a->type, GGUF_I32);
    cr_assert_eq(a->n, 4);
    cr_assert_eq(gguf_arr_i64(a, 2, &v), 0);
    cr_assert_eq(v, 10);
    cr_assert_eq(gguf_get_arr(g, "t.arr_bool", &a, NULL), 0);
    cr_assert_eq(gguf_arr_i64(a, 1, &v), 0);
    cr_assert_eq(v, 0);
    double d;
    cr_assert_eq(gguf_get_arr(g, "t.arr_f32", &a, NULL), 0);
    cr_assert_eq(gguf_arr_f64(a, 1, &d), 0);
    cr_assert_eq(d, -2.0);
    cr_assert_eq(gguf_arr_i64(a, 1, &v), BT_ETYPE);
    cr_assert_eq(gguf_get_arr(g, "t.arr_str", &a, NULL), 0);
    cr_assert_eq(a->n, 3);
    cr_assert_str_eq(a->str[0], "a");
    cr_assert_str_eq(a->str[1], "");
    cr_assert_str_eq(a->str[2], "Ġ Ġ");
    cr_assert_eq(gguf_get_arr(g, "t.arr_empty", &a, NULL), 0);
    cr_assert_eq(a->n, 0);
    cr_assert_eq(gguf_get_arr(g, "t.nested", &a, NULL), 0);
    cr_assert_eq(a->type, GGUF_ARRAY);
    cr_assert_eq(a->n, 2);
    cr_assert_eq(a->arr[1].type, GGUF_U16);
    cr_assert_eq(a->arr[1].n, 2);
    cr_assert_eq(gguf_arr_i64(&a->arr[1], 1, &v), 0);
    cr_assert_eq(v, 9);
    cr_assert_eq(gguf_arr_i64(&a->arr[0], 0, &v), 0);
    cr_assert_eq(v, 7);

    cr_assert_eq(gguf_n_tensors(g), 4);
    const char *names[4] = {"a.q8_0", "b.f32", "c.q4_k", "d.bf16"};
    const uint64_t bytes[4] = {2 * 34 * 3, 20, 144 * 2, 32 * 2 * 2 * 2};
    for (int i = 0; i < 4; i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        cr_assert_str_eq(t->name, names[i]);
        cr_assert_eq(t->n_bytes, bytes[i]);
        cr_assert_eq(t->offset % align, 0);
    }
    cr_assert_eq(gguf_find_tensor(g, "d.bf16")->ne[2], 2);
    cr_assert_eq(gguf_find_tensor(g, "d.bf16")->n_dims, 3);
}

/* Tensor i's data: bytes (i * 37 + k) & 0xff. */
static void fill(uint8_t *p, int i, uint64_t n) {
    for (uint64_t k = 0; k < n; k++)
        p[k] = (uint8_t)(i * 37 + (int)k);
}

Test(gguf_write, round_trip_memory) {
    const uint64_t aligns[] = {32, 64, 1};
    for (size_t ai = 0; ai < 3; ai++) {
        gguf_writer_t *w = sample_writer(aligns[ai]);
        uint8_t data[4][1024];
        const void *ptrs[4];
        for (int i = 0; i < 4; i++) {
            fill(data[i], i, gguf_writer_tensor_bytes(w, i));
            ptrs[i] = data[i];
        }
        void *buf;
        size_t len;
        bt_err e = {0};
        cr_assert_eq(gguf_writer_to_mem(w, ptrs, &buf, &len, &e), 0, "%s", e.msg);
        cr_assert_eq(len, gguf_writer_file_size(w));
        gguf_t *g;
        cr_assert_eq(gguf_parse(&g, buf, len, len, NULL, &e), 0, "%s", e.msg);
        check_sample(g, aligns[ai]);
        for (int i = 0; i < 4; i++) {
            const struct gguf_tensor *t = gguf_tensor(g, i);
            cr_assert_eq(memcmp((uint8_t *)buf + t->offset, data[i], t->n_bytes), 0);
        }
        gguf_free(g);
        free(buf);
        gguf_writer_free(w);
    }
}

Test(gguf_write, streamed_file_in_odd_pieces) {
    gguf_writer_t *w = sample_writer(32);
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "wb");
    bt_err e = {0};
    cr_assert_eq(gguf_writer_begin(w, f, &e), 0, "%s", e.msg);
    /* all tensors' bytes as one stream, written 7 bytes at a time across tensor borders */
    uint8_t all[4096];
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) {
        fill(all + total, i, gguf_writer_tensor_bytes(w, i));
        total += gguf_writer_tensor_bytes(w, i);
    }
    cr_assert_eq(gguf_writer_finish(w, &e), BT_EINVAL); /* nothing written yet */
    cr_assert(strstr(e.msg, "a.q8_0"));
    for (uint64_t k = 0; k < total; k += 7)
        cr_assert_eq(gguf_writer_write(w, all + k, total - k < 7 ? total - k : 7, &e), 0);
    cr_assert_eq(gguf_writer_write(w, all, 1, &e), BT_EINVAL); /* one byte too many */
    cr_assert_eq(gguf_writer_finish(w, &e), 0, "%s", e.msg);
    fclose(f);
    gguf_t *g = open_ok(path);
    check_sample(g, 32);
    cr_assert_eq(gguf_file_size(g), gguf_writer_file_size(w));
    gguf_free(g);
    gguf_writer_free(w);
    unlink(path);
}

/* Every prefix of a valid file: with the prefix as the whole file it is malformed (never a
 * crash); as a head of the full file it asks for more, and retrying with *need converges. */
Test(gguf, every_truncation) {
    gguf_writer_t *w = sample_writer(32);
    void *buf;
    size_t len;
    bt_err e = {0};
    cr_assert_eq(gguf_writer_to_mem(w, NULL, &buf, &len, &e), 0);
    gguf_t *g0;
    cr_assert_eq(gguf_parse(&g0, buf, len, len, NULL, &e), 0);
    size_t head = (size_t)gguf_data_offset(g0);
    gguf_free(g0);
    for (size_t n = 0; n < len; n++) {
        gguf_t *g = NULL;
        int rc = gguf_parse(&g, buf, n, n, NULL, &e);
        cr_assert_eq(rc, BT_EFORMAT, "prefix %zu: rc=%d %s", n, rc, e.msg);
        cr_assert_null(g);
        size_t need = 0;
        rc = gguf_parse(&g, buf, n, len, &need, &e);
        if (n + 31 < head) { /* the infos end within the padding before the data */
            cr_assert_eq(rc, BT_EMSGSIZE, "head %zu: rc=%d %s", n, rc, e.msg);
            cr_assert_gt(need, n);
            cr_assert_leq(need, len);
        } else if (rc == 0) {
            gguf_free(g);
        }
    }
    free(buf);
    gguf_writer_free(w);
}

Test(gguf, short_head_grows) {
    size_t len = 0, n = 100;
    const char *path = fixture_path("tiny-a/gguf/model-f32.gguf");
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    uint64_t size = (uint64_t)ftell(f);
    char *buf = malloc(1 << 17);
    fseek(f, 0, SEEK_SET);
    len = fread(buf, 1, 1 << 17, f);
    fclose(f);
    gguf_t *g = NULL;
    bt_err e = {0};
    int rc, tries = 0;
    while ((rc = gguf_parse(&g, buf, n, size, &n, &e)) == BT_EMSGSIZE) {
        cr_assert_leq(n, len);
        tries++;
    }
    cr_assert_eq(rc, 0, "%s", e.msg);
    cr_assert_gt(tries, 2);
    cr_assert_eq(gguf_n_tensors(g), 124);
    gguf_free(g);
    free(buf);
}
