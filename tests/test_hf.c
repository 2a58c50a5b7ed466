/* tests/test_hf.c: tiny-a's Hugging Face checkpoint described by engine/hf must be the model
 * llama.cpp's converter wrote to tiny-a/gguf/model-f32.gguf: same hyperparameters, same
 * tensors and ne, and engine/xform applied to the BF16 bytes gives the GGUF's F32 values
 * (exactly, except -exp() which may differ by an ulp from the converter's). Also config.json
 * variants and rejections, and xform on synthetic tensors (F16, permutations). */
#include "engine/gguf.h"
#include "engine/hf.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "engine/xform.h"
#include "tests/fixtures.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *read_range(const char *path, uint64_t off, uint64_t n) {
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open %s", path);
    void *buf = malloc(n ? n : 1);
    cr_assert_eq(pread(fd, buf, n, (off_t)off), (ssize_t)n, "read %s", path);
    close(fd);
    return buf;
}

static struct model_desc *open_tiny_hf(void) {
    struct model_desc *m = NULL;
    bt_err e = {0};
    int rc = hf_open(&m, fixture_path("tiny-a/hf"), &e);
    cr_assert_eq(rc, 0, "hf_open: %s", e.msg);
    return m;
}

static int json_int(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(v), "model.json: %s", k);
    return v->valueint;
}

Test(hf, hparams_match_model_json) {
    struct model_desc *m = open_tiny_hf();
    const char *mj = fixture_path("tiny-a/model.json");
    char *txt = read_range(mj, 0, 863);
    cJSON *j = cJSON_ParseWithLength(txt, 863);
    cr_assert_not_null(j);
    const struct qwen35_hparams *hp = &m->hp;
    cr_assert_eq(hp->n_embd, json_int(j, "hidden_size"));
    cr_assert_eq(hp->n_layer, json_int(j, "num_hidden_layers"));
    cr_assert_eq(hp->n_block, hp->n_layer);
    cr_assert_eq(hp->n_ff, json_int(j, "intermediate_size"));
    cr_assert_eq(hp->n_head, json_int(j, "num_attention_heads"));
    cr_assert_eq(hp->n_head_kv, json_int(j, "num_key_value_heads"));
    cr_assert_eq(hp->head_dim, json_int(j, "head_dim"));
    cr_assert_eq(hp->n_rot, 16);
    cr_assert_eq(hp->ssm_n_group, json_int(j, "linear_num_key_heads"));
    cr_assert_eq(hp->ssm_dt_rank, json_int(j, "linear_num_value_heads"));
    cr_assert_eq(hp->ssm_d_state, json_int(j, "linear_key_head_dim"));
    cr_assert_eq(hp->ssm_head_v_dim, json_int(j, "linear_value_head_dim"));
    cr_assert_eq(hp->ssm_d_inner, 8 * 32);
    cr_assert_eq(hp->conv_kernel, json_int(j, "linear_conv_kernel_dim"));
    cr_assert_eq(hp->n_vocab, json_int(j, "vocab_size"));
    cr_assert_eq(hp->n_ctx_train, json_int(j, "max_position_embeddings"));
    cr_assert_eq(hp->tied_embeddings, 0);
    cr_assert_float_eq(hp->rope_theta, 1e7f, 1.0f);
    cr_assert_float_eq(hp->rms_eps, 1e-6f, 1e-12f);
    cr_assert_float_eq(hp->attn_scale, 0.125f, 1e-9f);
    for (int l = 0; l < 8; l++)
        cr_assert_eq(hp->kind[l], l == 3 || l == 7 ? LAYER_FULL_ATTN : LAYER_LINEAR_ATTN);
    cr_assert_eq(m->format, MODEL_SAFETENSORS);
    cr_assert_eq(m->n_files, 1);
    cr_assert_eq(m->files[0][0], '/');
    cr_assert_str_eq(m->name, "hf");
    cr_assert_not_null(strstr(m->tokenizer_path, "/hf/tokenizer.json"));
    /* 124 stored tensors: 15 MTP skipped; 6 linear layers x 14 + 2 full x 11 + 3 globals. */
    cr_assert_eq(m->n_skipped, 15);
    cr_assert_eq(m->n_tensors, 6 * 14 + 2 * 11 + 3);
    free(txt);
    cJSON_Delete(j);
    hf_desc_free(m);
}

Test(hf, hparams_equal_gguf_path) {
    struct model_desc *h = open_tiny_hf(), *g = NULL;
    bt_err e = {0};
    cr_assert_eq(model_open(&g, fixture_path("tiny-a/gguf/model-f32.gguf"), &e), 0, "%s", e.msg);
    struct qwen35_hparams a = h->hp, b = g->hp;
    cr_assert_eq(b.n_block, 9); /* GGUF counts the MTP block; HF describes no MTP tensors */
    a.n_block = b.n_block = 0;
    cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "HF and GGUF hyperparameters differ");
    model_close(g);
    hf_desc_free(h);
}

Test(hf, model_open_dispatches_to_hf) {
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(model_open(&m, fixture_path("tiny-a/hf"), &e), 0, "%s", e.msg);
    cr_assert_eq(m->format, MODEL_SAFETENSORS);
    cr_assert_not_null(model_find(m, "blk.0.ssm_a"));
    model_close(m);
}

/* The key check: every trunk tensor of the converted GGUF is described by hf with the same
 * shape, and xform(HF bytes) == GGUF bytes. */
Test(hf, xform_reproduces_gguf_f32) {
    struct model_desc *m = open_tiny_hf();
    gguf_t *g = NULL;
    bt_err e = {0};
    const char *gpath = fixture_path("tiny-a/gguf/model-f32.gguf");
    cr_assert_eq(gguf_open(&g, gpath, &e), 0, "%s", e.msg);
    int n_trunk = 0, n_exact = 0, n_negexp = 0, n_perm = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *gt = gguf_tensor(g, i);
        int blk;
        if (sscanf(gt->name, "blk.%d.", &blk) == 1 && blk >= m->hp.n_layer) {
            cr_assert_null(model_find(m, gt->name), "MTP tensor %s described", gt->name);
            continue;
        }
        n_trunk++;
        const struct tensor_desc *t = model_find(m, gt->name);
        cr_assert_not_null(t, "GGUF tensor %s not described by hf", gt->name);
        cr_assert_eq(t->n_dims, gt->n_dims, "%s", gt->name);
        for (int d = 0; d < 4; d++)
            cr_assert_eq(t->ne[d], gt->ne[d], "%s ne[%d]: hf %lld gguf %lld", gt->name, d,
                         (long long)t->ne[d], (long long)gt->ne[d]);
        cr_assert_eq(gt->dtype, DT_F32, "%s", gt->name);
        cr_assert_eq(t->dtype, DT_BF16, "%s", gt->name);
        cr_assert_eq(t->layer, sscanf(gt->name, "blk.%d.", &blk) == 1 ? blk : -1);

        void *stored = read_range(m->files[t->file], t->offset, t->n_bytes);
        size_t ob = xform_out_bytes(m, t);
        enum dtype od = xform_out_dtype(t);
        cr_assert(ob > 0, "%s", t->name);
        void *out = malloc(ob);
        cr_assert_eq(xform_apply(m, t, stored, out, &e), 0, "%s: %s", t->name, e.msg);
        float *want = read_range(gpath, gt->offset, gt->n_bytes);
        int64_t n = (int64_t)(gt->n_bytes / 4);
        if (t->xform & (XF_VHEAD_ROWS | XF_VHEAD_COLS)) n_perm++;
        if (od == DT_F32) {
            cr_assert_eq(ob, gt->n_bytes, "%s", t->name);
            const float *got = out;
            for (int64_t k = 0; k < n; k++) {
                float tol = t->xform & XF_NEG_EXP ? 1e-6f * fabsf(want[k]) : 0.0f;
                cr_assert(fabsf(got[k] - want[k]) <= tol, "%s[%lld]: xform %.9g gguf %.9g", t->name,
                          (long long)k, (double)got[k], (double)want[k]);
            }
            n_negexp += (t->xform & XF_NEG_EXP) != 0;
        } else {
            /* Matrices stay BF16; the GGUF holds them upcast, so compare bit for bit. */
            cr_assert_eq(od, DT_BF16);
            cr_assert_eq(ob * 2, gt->n_bytes, "%s", t->name);
            const uint16_t *got = out;
            for (int64_t k = 0; k < n; k++) {
                uint32_t bits = (uint32_t)got[k] << 16;
                float f;
                memcpy(&f, &bits, 4);
                cr_assert(f == want[k], "%s[%lld]: xform %.9g gguf %.9g", t->name, (long long)k,
                          (double)f, (double)want[k]);
            }
        }
        n_exact++;
        free(want);
        free(out);
        free(stored);
    }
    cr_assert_eq(n_trunk, m->n_tensors, "GGUF trunk tensors %d, hf tensors %d", n_trunk,
                 m->n_tensors);
    cr_assert_eq(n_exact, n_trunk);
    cr_assert_eq(n_negexp, 6); /* one ssm_a per linear layer */
    /* H_v != H_k: qkv, gate, beta, alpha, conv1d, dt, a, out permuted in each linear layer */
    cr_assert_eq(n_perm, 6 * 8);
    gguf_free(g);
    hf_desc_free(m);
}

/* ---- config.json variants ---- */

/* A text-only (Qwen3_5ForCausalLM-style) config; %s takes extra keys. */
#define TINY_TEXT_CFG                                                                              \
    "{\"model_type\":\"qwen3_5_text\",\"hidden_size\":128,\"num_hidden_layers\":6,"                \
    "\"intermediate_size\":512,\"num_attention_heads\":4,\"num_key_value_heads\":2,"               \
    "\"head_dim\":64,\"linear_num_key_heads\":4,\"linear_num_value_heads\":4,"                     \
    "\"linear_key_head_dim\":32,\"linear_value_head_dim\":16,\"linear_conv_kernel_dim\":4,"        \
    "\"full_attention_interval\":3,\"vocab_size\":1000,\"max_position_embeddings\":4096,"          \
    "\"rms_norm_eps\":1e-5,\"rope_theta\":1000000.0,\"partial_rotary_factor\":0.5%s}"

static int parse_cfg(struct qwen35_hparams *hp, int *tied, const char *extra, bt_err *e) {
    char buf[2048];
    snprintf(buf, sizeof buf, TINY_TEXT_CFG, extra);
    return hf_parse_config(hp, tied, buf, strlen(buf), e);
}

Test(hf, text_only_config_top_level) {
    struct qwen35_hparams hp;
    int tied;
    bt_err e = {0};
    cr_assert_eq(parse_cfg(&hp, &tied, "", &e), 0, "%s", e.msg);
    cr_assert_eq(tied, -1); /* hf_open decides by lm_head.weight */
    cr_assert_eq(hp.n_layer, 6);
    cr_assert_eq(hp.n_rot, 32);
    cr_assert_eq(hp.ssm_d_inner, 64);
    cr_assert_float_eq(hp.rope_theta, 1e6f, 0.5f);
    cr_assert_float_eq(hp.rms_eps, 1e-5f, 1e-12f);
    /* interval 3: layers 2 and 5 are full attention */
    for (int l = 0; l < 6; l++)
        cr_assert_eq(hp.kind[l], l % 3 == 2 ? LAYER_FULL_ATTN : LAYER_LINEAR_ATTN, "layer %d", l);
    cr_assert_eq(parse_cfg(&hp, &tied, ",\"tie_word_embeddings\":true", &e), 0, "%s", e.msg);
    cr_assert(tied == 1 && hp.tied_embeddings == 1);
    /* layer_types overrides the interval */
    cr_assert_eq(parse_cfg(&hp, &tied,
                           ",\"layer_types\":[\"full_attention\",\"linear_attention\","
                           "\"linear_attention\",\"linear_attention\",\"linear_attention\","
                           "\"linear_attention\"]",
                           &e),
                 0, "%s", e.msg);
    cr_assert(hp.kind[0] == LAYER_FULL_ATTN && hp.kind[2] == LAYER_LINEAR_ATTN);
}

Test(hf, config_rejections) {
    struct qwen35_hparams hp;
    int tied;
    bt_err e = {0};
    static const struct {
        const char *extra;
        int code;
        const char *word;
    } cases[] = {
        {",\"layer_types\":[\"full_attention\"]", BT_EFORMAT, "layer_types"},
        {",\"layer_types\":[1,2,3,4,5,6]", BT_EUNSUPPORTED, "layer_types[0]"},
        {",\"rope_type\":\"yarn\"", BT_EUNSUPPORTED, "rope_type"},
        {",\"attn_output_gate\":false", BT_EUNSUPPORTED, "attn_output_gate"},
        {",\"attention_bias\":true", BT_EUNSUPPORTED, "attention_bias"},
        {",\"tie_word_embeddings\":1", BT_EFORMAT, "tie_word_embeddings"},
        {",\"text_config\":3", BT_EFORMAT, "text_config"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        e = (bt_err){0};
        cr_expect_eq(parse_cfg(&hp, &tied, cases[i].extra, &e), cases[i].code, "case %zu: %s", i,
                     e.msg);
        cr_expect_not_null(strstr(e.msg, cases[i].word), "case %zu: %s", i, e.msg);
    }
    /* Missing, malformed and inconsistent keys, by editing the base config. */
    static const struct {
        const char *from, *to;
        int code;
        const char *word;
    } edits[] = {
        {"\"head_dim\":64,", "", BT_ENOKEY, "head_dim"},
        {"\"hidden_size\":128", "\"hidden_size\":-1", BT_EFORMAT, "hidden_size"},
        {"\"hidden_size\":128", "\"hidden_size\":1.5", BT_EFORMAT, "hidden_size"},
        {"\"num_key_value_heads\":2", "\"num_key_value_heads\":3", BT_ESHAPE, "num_key_value"},
        {"\"linear_num_value_heads\":4", "\"linear_num_value_heads\":6", BT_ESHAPE, "linear"},
        {"\"partial_rotary_factor\":0.5", "\"partial_rotary_factor\":0.3", BT_EFORMAT, "partial"},
        {",\"partial_rotary_factor\":0.5", "", BT_ENOKEY, "partial_rotary_factor"},
        {"\"rope_theta\":1000000.0,", "", BT_ENOKEY, "rope_theta"},
        {"\"rms_norm_eps\":1e-5,", "", BT_ENOKEY, "rms_norm_eps"},
        {"\"qwen3_5_text\"", "\"qwen3_5_moe_text\"", BT_EUNSUPPORTED, "model_type"},
        {"\"num_hidden_layers\":6", "\"num_hidden_layers\":300", BT_EFORMAT, "num_hidden"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        char base[2048], buf[2048];
        snprintf(base, sizeof base, TINY_TEXT_CFG, "");
        char *p = strstr(base, edits[i].from);
        cr_assert_not_null(p, "edit %zu", i);
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - base), base, edits[i].to,
                 p + strlen(edits[i].from));
        e = (bt_err){0};
        cr_expect_eq(hf_parse_config(&hp, &tied, buf, strlen(buf), &e), edits[i].code,
                     "edit %zu: %s", i, e.msg);
        cr_expect_not_null(strstr(e.msg, edits[i].word), "edit %zu: %s", i, e.msg);
    }
    cr_assert_eq(hf_parse_config(&hp, &tied, "{", 1, &e), BT_EFORMAT);
    cr_assert_eq(hf_parse_config(&hp, &tied, "[]", 2, &e), BT_EFORMAT);
}

/* ---- hf_open on edited copies of tiny-a ---- */

static char *tmp_copy(const char *cfg_from, const char *cfg_to) {
    char tmpl[] = "/tmp/bt_hfXXXXXX";
    char *dir = strdup(mkdtemp(tmpl));
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(symlink(fixture_path("tiny-a/hf/model.safetensors"), path), 0);
    char *cfg = read_range(fixture_path("tiny-a/hf/config.json"), 0, 1818);
    char out[4096];
    char *c = calloc(1, 1819); /* NUL-terminated copy for strstr */
    memcpy(c, cfg, 1818);
    char *p = strstr(c, cfg_from);
    cr_assert_not_null(p, "config edit: %s", cfg_from);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(p - c), c, cfg_to, p + strlen(cfg_from));
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f && fputs(out, f) >= 0 && fclose(f) == 0);
    free(c);
    free(cfg);
    return dir;
}

static void rm_dir(char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    free(dir);
}

Test(hf, open_via_file_path) {
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&m, fixture_path("tiny-a/hf/model.safetensors"), &e), 0, "%s", e.msg);
    cr_assert_eq(m->n_tensors, 109);
    cr_assert_not_null(model_find(m, "output.weight"));
    hf_desc_free(m);
}

Test(hf, tied_config_skips_lm_head) {
    char *dir = tmp_copy("\"tie_word_embeddings\": false,\n    \"use_cache\"",
                         "\"tie_word_embeddings\": true,\n    \"use_cache\"");
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&m, dir, &e), 0, "%s", e.msg);
    cr_assert_eq(m->hp.tied_embeddings, 1);
    cr_assert_null(model_find(m, "output.weight"));
    cr_assert_eq(m->n_skipped, 16);
    cr_assert_eq(m->n_tensors, 108);
    hf_desc_free(m);
    rm_dir(dir);
}

Test(hf, shape_mismatch_names_tensor) {
    char *dir = tmp_copy("\"intermediate_size\": 512", "\"intermediate_size\": 256");
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&m, dir, &e), BT_ESHAPE, "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "layers.0.mlp.gate_proj.weight"), "%s", e.msg);
    cr_assert_null(m);
    rm_dir(dir);
}

Test(hf, wrong_layer_kind_rejected) {
    /* Layer 2 declared full attention: its linear_attn tensors do not belong, q_proj is absent. */
    char *dir = tmp_copy("\"linear_attention\",\n      \"full_attention\",\n      \"linear",
                         "\"full_attention\",\n      \"full_attention\",\n      \"linear");
    struct model_desc *m = NULL;
    bt_err e = {0};
    int rc = hf_open(&m, dir, &e);
    cr_assert(rc == BT_ENOKEY || rc == BT_EFORMAT, "rc %d: %s", rc, e.msg);
    cr_assert_not_null(strstr(e.msg, "layers.2."), "%s", e.msg);
    cr_assert_null(m);
    rm_dir(dir);
}

Test(hf, vocab_mismatch_rejected) {
    char *dir = tmp_copy("\"vocab_size\": 1792", "\"vocab_size\": 2048");
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&m, dir, &e), BT_ESHAPE, "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "embed_tokens"), "%s", e.msg);
    rm_dir(dir);
}

Test(hf, missing_paths) {
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&m, "/nonexistent/baton/model", &e), BT_ENOKEY);
    char tmpl[] = "/tmp/bt_hf_emptyXXXXXX";
    char *dir = strdup(mkdtemp(tmpl));
    cr_assert_eq(hf_open(&m, dir, &e), BT_ENOKEY);
    cr_assert_not_null(strstr(e.msg, "model.safetensors"), "%s", e.msg);
    rm_dir(dir);
}

/* ---- xform on synthetic tensors ---- */

static struct model_desc synth_model(int hk, int hv) {
    struct model_desc m;
    memset(&m, 0, sizeof m);
    m.hp.ssm_n_group = hk;
    m.hp.ssm_dt_rank = hv;
    return m;
}

Test(hf, xform_f16_vector_exact) {
    struct model_desc m = synth_model(1, 1);
    struct tensor_desc t = {.name = "blk.0.attn_norm.weight",
                            .dtype = DT_F16,
                            .n_dims = 1,
                            .ne = {6, 1, 1, 1},
                            .n_bytes = 12,
                            .xform = XF_ADD_ONE};
    /* 1.0, -2.0, 2^-24 (smallest subnormal), 2^-15 (subnormal), 65504, -0 */
    const uint16_t h[6] = {0x3c00, 0xc000, 0x0001, 0x0200, 0x7bff, 0x8000};
    const float want[6] = {2.0f, -1.0f, 1.0f + 0x1p-24f, 1.0f + 0x1p-15f, 65505.0f, 1.0f};
    float out[6];
    bt_err e = {0};
    cr_assert_eq(xform_out_bytes(&m, &t), 24);
    cr_assert_eq(xform_apply(&m, &t, h, out, &e), 0, "%s", e.msg);
    for (int i = 0; i < 6; i++)
        cr_assert(out[i] == want[i], "[%d] %.9g != %.9g", i, (double)out[i], (double)want[i]);
    t.xform = 0; /* plain conversion: check the subnormal decodes exactly */
    cr_assert_eq(xform_apply(&m, &t, h, out, &e), 0);
    cr_assert(out[2] == 0x1p-24f && out[3] == 0x1p-15f && out[4] == 65504.0f);
    cr_assert(out[5] == 0.0f && signbit(out[5]));
}

Test(hf, xform_permutations_follow_formula) {
    /* H_k = 2, H_v = 6 (r = 3), d = 2: rows [first + (m*H_k + g)*d + e] = HF[(g*r + m)*d + e] */
    struct model_desc m = synth_model(2, 6);
    enum { FIRST = 3, D = 2, ROWS = FIRST + 12, COLS = 5 };
    float src[ROWS * COLS], out[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        src[i] = (float)i;
    struct tensor_desc t = {.name = "blk.0.attn_qkv.weight",
                            .dtype = DT_F32,
                            .n_dims = 2,
                            .ne = {COLS, ROWS, 1, 1},
                            .n_bytes = sizeof src,
                            .xform = XF_VHEAD_ROWS,
                            .perm_first = FIRST,
                            .perm_block = D};
    bt_err e = {0};
    cr_assert_eq(xform_apply(&m, &t, src, out, &e), 0, "%s", e.msg);
    for (int r = 0; r < ROWS; r++) {
        int s = r;
        if (r >= FIRST) {
            int j = r - FIRST, head = j / D, el = j % D, mm = head / 2, g = head % 2;
            s = FIRST + (g * 3 + mm) * D + el;
        }
        for (int c = 0; c < COLS; c++)
            cr_assert(out[r * COLS + c] == src[s * COLS + c], "row %d col %d", r, c);
    }
    /* The same permutation on columns (ssm_out), first = 0, block 2: 12 columns. */
    float a[3 * 12], b[3 * 12];
    for (int i = 0; i < 36; i++)
        a[i] = (float)i;
    struct tensor_desc tc = {.name = "blk.0.ssm_out.weight",
                             .dtype = DT_F32,
                             .n_dims = 2,
                             .ne = {12, 3, 1, 1},
                             .n_bytes = sizeof a,
                             .xform = XF_VHEAD_COLS,
                             .perm_first = 0,
                             .perm_block = D};
    cr_assert_eq(xform_apply(&m, &tc, a, b, &e), 0, "%s", e.msg);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 12; c++) {
            int head = c / D, el = c % D, s = ((head % 2) * 3 + head / 2) * D + el;
            cr_assert(b[r * 12 + c] == a[r * 12 + s], "row %d col %d", r, c);
        }
    /* A range that does not fit is BT_ESHAPE, naming the tensor. */
    t.perm_first = FIRST + 1;
    cr_assert_eq(xform_apply(&m, &t, src, out, &e), BT_ESHAPE);
    cr_assert_not_null(strstr(e.msg, "blk.0.attn_qkv.weight"));
    /* Stored size that does not match the shape. */
    t.perm_first = FIRST;
    t.n_bytes -= 4;
    cr_assert_eq(xform_apply(&m, &t, src, out, &e), BT_ESHAPE);
}

Test(hf, xform_conv_is_f32_and_quant_vectors_rejected) {
    struct model_desc m = synth_model(1, 1);
    struct tensor_desc conv = {.name = "blk.1.ssm_conv1d.weight",
                               .dtype = DT_BF16,
                               .n_dims = 2,
                               .ne = {4, 3, 1, 1},
                               .n_bytes = 24};
    cr_assert_eq(xform_out_dtype(&conv), DT_F32);
    cr_assert_eq(xform_out_bytes(&m, &conv), 48);
    struct tensor_desc mat = conv;
    snprintf(mat.name, sizeof mat.name, "blk.1.ffn_up.weight");
    cr_assert_eq(xform_out_dtype(&mat), DT_BF16);
    cr_assert_eq(xform_out_bytes(&m, &mat), 24);
    struct tensor_desc q = {.name = "blk.0.attn_norm.weight",
                            .dtype = DT_Q8_0,
                            .n_dims = 1,
                            .ne = {32, 1, 1, 1},
                            .n_bytes = 34};
    unsigned char in[34] = {0};
    float out[32];
    bt_err e = {0};
    cr_assert_eq(xform_apply(&m, &q, in, out, &e), BT_EUNSUPPORTED);
    cr_assert_not_null(strstr(e.msg, "attn_norm"));
}
