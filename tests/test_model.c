/* tests/test_model.c: GGUF -> model_desc (hyperparameters, layer kinds, MTP skipping, shape
 * checks), layer ranges (globals on the end stages, tied embeddings listed once) and
 * weights_load, on tiny-a and on small synthetic GGUFs written by engine/gguf_write. */
#include "engine/gguf_write.h"
#include "engine/model.h"
#include "fixtures.h"
#include "ops/ops.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(model, tiny_a_gguf_hparams) {
    struct model_desc *m;
    bt_err e = {0};
    cr_assert_eq(model_open(&m, fixture_path("tiny-a/gguf/model-f32.gguf"), &e), 0, "%s", e.msg);
    const struct qwen35_hparams *hp = &m->hp;
    cr_expect_eq(m->format, MODEL_GGUF);
    cr_expect_eq(hp->n_block, 9);
    cr_expect_eq(hp->n_layer, 8, "MTP block is not a trunk layer");
    cr_expect_eq(hp->n_embd, 128);
    cr_expect_eq(hp->n_ff, 512);
    cr_expect_eq(hp->n_head, 4);
    cr_expect_eq(hp->n_head_kv, 2);
    cr_expect_eq(hp->head_dim, 64);
    cr_expect_eq(hp->n_rot, 16);
    cr_expect_eq(hp->ssm_n_group, 4);
    cr_expect_eq(hp->ssm_dt_rank, 8);
    cr_expect_eq(hp->ssm_d_state, 32);
    cr_expect_eq(hp->ssm_head_v_dim, 32);
    cr_expect_eq(hp->ssm_d_inner, 256);
    cr_expect_eq(hp->conv_kernel, 4);
    cr_expect_eq(hp->n_vocab, 1792);
    cr_expect_eq(hp->tied_embeddings, 0);
    cr_expect_float_eq(hp->attn_scale, 0.125f, 1e-7f);
    cr_expect_float_eq(hp->rope_theta, 1e7f, 1.0f);
    for (int l = 0; l < 8; l++)
        cr_expect_eq(hp->kind[l], l == 3 || l == 7 ? LAYER_FULL_ATTN : LAYER_LINEAR_ATTN, "%d", l);
    cr_expect_gt(m->n_skipped, 0, "blk.8 (MTP) tensors are skipped");
    for (int i = 0; i < m->n_tensors; i++)
        cr_expect_lt(m->tensors[i].layer, 8, "%s", m->tensors[i].name);
    cr_expect_not_null(model_find(m, "blk.3.attn_q.weight"));
    cr_expect_null(model_find(m, "blk.8.attn_norm.weight"));

    struct layer_range r;
    cr_assert_eq(model_range(m, 0, 8, &r, &e), 0);
    cr_expect_eq(r.n, m->n_tensors, "the whole trunk + globals");
    free(r.tensors);
    cr_assert_eq(model_range(m, 2, 5, &r, &e), 0);
    uint64_t bytes = 0;
    for (int i = 0; i < r.n; i++) {
        cr_expect(r.tensors[i]->layer >= 2 && r.tensors[i]->layer < 5, "%s", r.tensors[i]->name);
        bytes += r.tensors[i]->n_bytes;
    }
    cr_expect_eq(bytes, r.bytes);
    free(r.tensors);
    cr_assert_eq(model_range(m, 4, 8, &r, &e), 0);
    int has_out = 0, has_emb = 0;
    for (int i = 0; i < r.n; i++) {
        has_out += !strcmp(r.tensors[i]->name, "output.weight");
        has_out += !strcmp(r.tensors[i]->name, "output_norm.weight");
        has_emb += !strcmp(r.tensors[i]->name, "token_embd.weight");
    }
    cr_expect_eq(has_out, 2);
    cr_expect_eq(has_emb, 0, "untied: the last stage does not need token_embd");
    free(r.tensors);
    cr_expect_eq(model_range(m, 3, 9, &r, &e), BT_EINVAL);
    cr_expect_eq(model_range(m, 3, 3, &r, &e), BT_EINVAL);
    model_close(m);
}

Test(model, nomtp_file_has_the_same_trunk) {
    struct model_desc *a, *b;
    bt_err e = {0};
    cr_assert_eq(model_open(&a, fixture_path("tiny-a/gguf/model-q8_0.gguf"), &e), 0, "%s", e.msg);
    cr_assert_eq(model_open(&b, fixture_path("tiny-a/gguf/model-q8_0-nomtp.gguf"), &e), 0, "%s",
                 e.msg);
    cr_expect_eq(b->hp.n_block, 8);
    cr_expect_eq(b->n_skipped, 0);
    cr_expect_eq(a->n_tensors, b->n_tensors);
    cr_expect_eq(memcmp(a->hp.kind, b->hp.kind, sizeof a->hp.kind), 0);
    model_close(a);
    model_close(b);
}

Test(model, weights_load_range) {
    struct model_desc *m;
    struct weights *w;
    bt_err e = {0};
    cr_assert_eq(ops_init(NULL, &e), 0);
    cr_assert_eq(model_open(&m, fixture_path("tiny-a/gguf/model-q4_k_m.gguf"), &e), 0, "%s", e.msg);
    cr_assert_eq(weights_load(&w, m, 3, 8, NULL, &e), 0, "%s", e.msg);
    cr_expect_null(w->tok_embd.data, "middle/last stage without tied embeddings");
    cr_expect_not_null(w->output.data);
    cr_expect_eq(w->output.rows, 1792);
    cr_expect_eq(w->output_norm.dt, DT_F32);
    const struct layer_weights *L3 = &w->layers[3], *L4 = &w->layers[4];
    cr_expect_eq(L3->kind, LAYER_FULL_ATTN);
    cr_expect_eq(L3->wq.rows, 2 * 4 * 64);
    cr_expect_eq(L3->wq.cols, 128);
    cr_expect_eq(L3->q_norm.cols, 64);
    cr_expect_eq(L4->kind, LAYER_LINEAR_ATTN);
    cr_expect_eq(L4->wqkv.rows, 2 * 128 + 256);
    cr_expect_eq(L4->conv.rows, 2 * 128 + 256);
    cr_expect_eq(L4->conv.cols, 4);
    cr_expect_eq(L4->conv.dt, DT_F32);
    cr_expect_eq(L4->ssm_norm.cols, 32);
    cr_expect_lt(((const float *)L4->ssm_a.data)[0], 0.0f, "GGUF stores -exp(A_log)");
    cr_expect_eq(L4->ffn_down.rows, 128);
    cr_expect_eq(L4->ffn_down.cols, 512);
    cr_expect_null(w->layers[2].wqkv.data, "outside the range");
    cr_expect_gt(w->bytes_read, 0);
    weights_free(w);
    model_close(m);
}

/* ---- synthetic files ---- */

enum { SYN_TIED = 1, SYN_DROP_SSM_A = 2, SYN_BAD_QKV = 4, SYN_INTERVAL = 8, SYN_FUSED = 16 };

/* A 4-layer model (L L L F) with H 32, zero weights, optional defects. */
static const char *write_syn(unsigned flags) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/bt-test-model-%d-%u.gguf", (int)getpid(), flags);
    gguf_writer_t *w;
    bt_err e = {0};
    cr_assert_eq(gguf_writer_new(&w, 0, &e), 0);
    gguf_writer_add_str(w, "general.architecture", "qwen35", &e);
    gguf_writer_add_u32(w, "qwen35.block_count", 4, &e);
    gguf_writer_add_u32(w, "qwen35.embedding_length", 32, &e);
    gguf_writer_add_u32(w, "qwen35.feed_forward_length", 64, &e);
    gguf_writer_add_u32(w, "qwen35.attention.head_count", 2, &e);
    gguf_writer_add_u32(w, "qwen35.attention.head_count_kv", 1, &e);
    gguf_writer_add_u32(w, "qwen35.attention.key_length", 32, &e);
    gguf_writer_add_u32(w, "qwen35.attention.value_length", 32, &e);
    gguf_writer_add_f32(w, "qwen35.attention.layer_norm_rms_epsilon", 1e-6f, &e);
    gguf_writer_add_u32(w, "qwen35.rope.dimension_count", 8, &e);
    gguf_writer_add_f32(w, "qwen35.rope.freq_base", 1e7f, &e);
    gguf_writer_add_u32(w, "qwen35.ssm.conv_kernel", 4, &e);
    gguf_writer_add_u32(w, "qwen35.ssm.state_size", 8, &e);
    gguf_writer_add_u32(w, "qwen35.ssm.group_count", 2, &e);
    gguf_writer_add_u32(w, "qwen35.ssm.time_step_rank", 4, &e);
    gguf_writer_add_u32(w, "qwen35.ssm.inner_size", 32, &e);
    if (flags & SYN_INTERVAL) {
        gguf_writer_add_u32(w, "qwen35.full_attention_interval", 2, &e);
    } else {
        const uint8_t rec[4] = {1, 1, 1, 0};
        gguf_writer_add_arr(w, "qwen35.attention.recurrent_layers", GGUF_BOOL, rec, 4, &e);
    }
    int64_t ne[2];
#define T2(name, a, b)                                                                             \
    (ne[0] = (a), ne[1] = (b), gguf_writer_add_tensor(w, name, DT_F32, 2, ne, &e))
#define T1(name, a) (ne[0] = (a), gguf_writer_add_tensor(w, name, DT_F32, 1, ne, &e))
    T2("token_embd.weight", 32, 50);
    T1("output_norm.weight", 32);
    if (!(flags & SYN_TIED)) T2("output.weight", 32, 50);
    char n[64];
    for (int l = 0; l < 4; l++) {
        int full = flags & SYN_INTERVAL ? l % 2 == 1 : l == 3;
#define NM(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
        T1(NM("attn_norm.weight"), 32);
        T1(NM("post_attention_norm.weight"), 32);
        T2(NM("ffn_gate.weight"), 32, 64);
        T2(NM("ffn_up.weight"), 32, 64);
        T2(NM("ffn_down.weight"), 64, 32);
        if (full) {
            if (flags & SYN_FUSED) {
                T2(NM("attn_qkv.weight"), 32, 128 + 64);
            } else {
                T2(NM("attn_q.weight"), 32, 128);
                T2(NM("attn_k.weight"), 32, 32);
                T2(NM("attn_v.weight"), 32, 32);
            }
            T2(NM("attn_output.weight"), 64, 32);
            T1(NM("attn_q_norm.weight"), 32);
            T1(NM("attn_k_norm.weight"), 32);
        } else {
            T2(NM("attn_qkv.weight"), 32, flags & SYN_BAD_QKV && l == 1 ? 63 : 64);
            T2(NM("attn_gate.weight"), 32, 32);
            T2(NM("ssm_beta.weight"), 32, 4);
            T2(NM("ssm_alpha.weight"), 32, 4);
            T2(NM("ssm_conv1d.weight"), 4, 64);
            T1(NM("ssm_dt.bias"), 4);
            if (!(flags & SYN_DROP_SSM_A) || l != 2) T1(NM("ssm_a"), 4);
            T1(NM("ssm_norm.weight"), 8);
            T2(NM("ssm_out.weight"), 32, 32);
        }
    }
    void *buf;
    size_t len;
    cr_assert_eq(gguf_writer_to_mem(w, NULL, &buf, &len, &e), 0, "%s", e.msg);
    gguf_writer_free(w);
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(buf, 1, len, f) == len);
    fclose(f);
    free(buf);
    return path;
}

Test(model, synthetic_tied_and_ranges) {
    struct model_desc *m;
    struct weights *w;
    bt_err e = {0};
    cr_assert_eq(ops_init(NULL, &e), 0);
    const char *p = write_syn(SYN_TIED);
    cr_assert_eq(model_open(&m, p, &e), 0, "%s", e.msg);
    cr_expect_eq(m->hp.tied_embeddings, 1);
    cr_expect_eq(m->hp.n_vocab, 50);
    cr_expect_eq(m->hp.kind[3], LAYER_FULL_ATTN);
    struct layer_range r;
    cr_assert_eq(model_range(m, 0, 4, &r, &e), 0);
    int emb = 0;
    for (int i = 0; i < r.n; i++)
        emb += !strcmp(r.tensors[i]->name, "token_embd.weight");
    cr_expect_eq(emb, 1, "tied and single stage: token_embd listed once");
    cr_expect_eq(r.n, m->n_tensors);
    free(r.tensors);
    cr_assert_eq(model_range(m, 2, 4, &r, &e), 0);
    emb = 0;
    for (int i = 0; i < r.n; i++)
        emb += !strcmp(r.tensors[i]->name, "token_embd.weight");
    cr_expect_eq(emb, 1, "tied: the last stage reads token_embd as its LM head");
    free(r.tensors);
    cr_assert_eq(weights_load(&w, m, 2, 4, NULL, &e), 0, "%s", e.msg);
    cr_expect_eq(w->output.data, w->tok_embd.data);
    cr_expect_not_null(w->output.data);
    weights_free(w);
    model_close(m);
    unlink(p);

    p = write_syn(SYN_INTERVAL);
    cr_assert_eq(model_open(&m, p, &e), 0, "%s", e.msg);
    cr_expect_eq(m->hp.kind[1], LAYER_FULL_ATTN, "interval rule without recurrent_layers");
    cr_expect_eq(m->hp.kind[2], LAYER_LINEAR_ATTN);
    cr_expect_eq(m->hp.tied_embeddings, 0);
    model_close(m);
    unlink(p);
}

Test(model, synthetic_rejections_name_the_tensor) {
    struct model_desc *m;
    bt_err e = {0};
    const char *p = write_syn(SYN_DROP_SSM_A);
    cr_expect_eq(model_open(&m, p, &e), BT_ENOKEY);
    cr_expect(strstr(e.msg, "blk.2.ssm_a") != NULL, "%s", e.msg);
    unlink(p);
    p = write_syn(SYN_BAD_QKV);
    cr_expect_eq(model_open(&m, p, &e), BT_ESHAPE);
    cr_expect(strstr(e.msg, "blk.1.attn_qkv.weight") && strstr(e.msg, "63") && strstr(e.msg, "64"),
              "%s", e.msg);
    unlink(p);
    p = write_syn(SYN_FUSED);
    cr_expect_eq(model_open(&m, p, &e), BT_EUNSUPPORTED);
    cr_expect(strstr(e.msg, "blk.3") != NULL, "%s", e.msg);
    unlink(p);
    cr_expect_lt(model_open(&m, "/nonexistent/model.gguf", &e), 0);
}
