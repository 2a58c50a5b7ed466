/* engine/model.c: see model.h. GGUF metadata -> qwen35_hparams + tensor directory (spec §10,
 * §11); safetensors checkpoints are described by engine/hf. weights_load() reads one layer
 * range through engine/loader and builds the per-layer weight views forward() uses. */
#include "engine/model.h"

#include "common/log.h"
#include "engine/gguf.h"
#include "engine/hf.h"
#include "engine/loader.h"
#include "engine/xform.h"
#include "ops/repack.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- GGUF hyperparameters (spec §11) ---- */

static int get_int(const gguf_t *g, const char *key, int lo, int hi, int *out, bt_err *e) {
    int64_t v;
    int rc = gguf_get_i64(g, key, &v, e);
    if (rc) return rc;
    if (v < lo || v > hi)
        return bt_fail(e, BT_ESHAPE, "%s = %lld, expected %d..%d", key, (long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

static int get_int_opt(const gguf_t *g, const char *key, int lo, int hi, int def, int *out,
                       bt_err *e) {
    if (gguf_find_kv(g, key) < 0) {
        *out = def;
        return 0;
    }
    return get_int(g, key, lo, hi, out, e);
}

static int read_hparams(const gguf_t *g, struct qwen35_hparams *hp, bt_err *e) {
    const char *arch;
    size_t len;
    int rc = gguf_get_str(g, "general.architecture", &arch, &len, e);
    if (rc) return rc;
    if (len != 6 || memcmp(arch, "qwen35", 6))
        return bt_fail(e, BT_EUNSUPPORTED, "general.architecture = '%.*s', expected 'qwen35'",
                       (int)(len > 64 ? 64 : len), arch);

    int nextn = 0, kv_len = 0;
    /* Upper bounds only guard int arithmetic on hostile files; real values are far below. */
    if ((rc = get_int(g, "qwen35.block_count", 1, BT_MAX_LAYERS, &hp->n_block, e)) ||
        (rc = get_int_opt(g, "qwen35.nextn_predict_layers", 0, BT_MAX_LAYERS, 0, &nextn, e)) ||
        (rc = get_int(g, "qwen35.embedding_length", 1, 1 << 16, &hp->n_embd, e)) ||
        (rc = get_int(g, "qwen35.feed_forward_length", 1, 1 << 18, &hp->n_ff, e)) ||
        (rc = get_int(g, "qwen35.attention.head_count", 1, 1024, &hp->n_head, e)) ||
        (rc = get_int(g, "qwen35.attention.head_count_kv", 1, 1024, &hp->n_head_kv, e)) ||
        (rc = get_int(g, "qwen35.attention.key_length", 1, 4096, &hp->head_dim, e)) ||
        (rc = get_int_opt(g, "qwen35.attention.value_length", 1, 4096, hp->head_dim, &kv_len, e)) ||
        (rc = get_int(g, "qwen35.rope.dimension_count", 0, 4096, &hp->n_rot, e)) ||
        (rc = get_int(g, "qwen35.ssm.conv_kernel", 2, 64, &hp->conv_kernel, e)) ||
        (rc = get_int(g, "qwen35.ssm.state_size", 1, 4096, &hp->ssm_d_state, e)) ||
        (rc = get_int(g, "qwen35.ssm.group_count", 1, 1024, &hp->ssm_n_group, e)) ||
        (rc = get_int(g, "qwen35.ssm.time_step_rank", 1, 1024, &hp->ssm_dt_rank, e)) ||
        (rc = get_int(g, "qwen35.ssm.inner_size", 1, 1 << 18, &hp->ssm_d_inner, e)) ||
        (rc = get_int_opt(g, "qwen35.context_length", 0, 1 << 30, 0, &hp->n_ctx_train, e)))
        return rc;
    if (nextn >= hp->n_block)
        return bt_fail(e, BT_ESHAPE, "qwen35.nextn_predict_layers = %d >= block_count %d", nextn,
                       hp->n_block);
    hp->n_layer = hp->n_block - nextn; /* trap §16.14: MTP blocks are not trunk layers */
    if (kv_len != hp->head_dim)
        return bt_fail(e, BT_EUNSUPPORTED, "attention.value_length %d != key_length %d", kv_len,
                       hp->head_dim);
    if (hp->n_head % hp->n_head_kv)
        return bt_fail(e, BT_ESHAPE, "attention.head_count %d not a multiple of head_count_kv %d",
                       hp->n_head, hp->n_head_kv);
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return bt_fail(e, BT_ESHAPE, "rope.dimension_count %d: must be even and <= head_dim %d",
                       hp->n_rot, hp->head_dim);
    if (hp->ssm_d_inner % hp->ssm_dt_rank)
        return bt_fail(e, BT_ESHAPE, "ssm.inner_size %d not a multiple of ssm.time_step_rank %d",
                       hp->ssm_d_inner, hp->ssm_dt_rank);
    if (hp->ssm_dt_rank % hp->ssm_n_group)
        return bt_fail(e, BT_ESHAPE, "ssm.time_step_rank %d not a multiple of group_count %d",
                       hp->ssm_dt_rank, hp->ssm_n_group);
    hp->ssm_head_v_dim = hp->ssm_d_inner / hp->ssm_dt_rank;

    hp->rope_theta = 10000.0f;
    if (gguf_find_kv(g, "qwen35.rope.freq_base") >= 0 &&
        (rc = gguf_get_f32(g, "qwen35.rope.freq_base", &hp->rope_theta, e)))
        return rc;
    if ((rc = gguf_get_f32(g, "qwen35.attention.layer_norm_rms_epsilon", &hp->rms_eps, e)))
        return rc;
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f) || !(hp->rope_theta > 0.0f))
        return bt_fail(e, BT_ESHAPE, "layer_norm_rms_epsilon %g / rope.freq_base %g out of range",
                       (double)hp->rms_eps, (double)hp->rope_theta);
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (gguf_find_kv(g, "qwen35.attention.scale") >= 0) {
        if ((rc = gguf_get_f32(g, "qwen35.attention.scale", &hp->attn_scale, e))) return rc;
        if (!(hp->attn_scale > 0.0f) || !isfinite(hp->attn_scale))
            return bt_fail(e, BT_ESHAPE, "qwen35.attention.scale = %g", (double)hp->attn_scale);
    }

    /* Layer kinds: the per-layer array is authoritative, else the interval rule (§1.3). */
    if (gguf_find_kv(g, "qwen35.attention.recurrent_layers") >= 0) {
        const struct gguf_arr *a;
        if ((rc = gguf_get_arr(g, "qwen35.attention.recurrent_layers", &a, e))) return rc;
        if (a->n < (uint64_t)hp->n_layer)
            return bt_fail(e, BT_ESHAPE,
                           "qwen35.attention.recurrent_layers has %llu entries, "
                           "expected >= %d",
                           (unsigned long long)a->n, hp->n_layer);
        for (int l = 0; l < hp->n_layer; l++) {
            int64_t v;
            if (gguf_arr_i64(a, (uint64_t)l, &v))
                return bt_fail(e, BT_ETYPE, "qwen35.attention.recurrent_layers[%d]: not a bool", l);
            hp->kind[l] = v ? LAYER_LINEAR_ATTN : LAYER_FULL_ATTN;
        }
    } else {
        int interval;
        if ((rc = get_int_opt(g, "qwen35.full_attention_interval", 1, BT_MAX_LAYERS, 4, &interval,
                              e)))
            return rc;
        for (int l = 0; l < hp->n_layer; l++)
            hp->kind[l] = (l + 1) % interval == 0 ? LAYER_FULL_ATTN : LAYER_LINEAR_ATTN;
    }
    return 0;
}

/* ---- expected tensors per layer kind (GGUF names and ne, spec §10.1) ---- */

struct tensor_spec {
    const char *suffix;
    int n_dims;
    int64_t ne0, ne1;
};

/* Fills specs for one layer kind; returns the count. */
static int layer_specs(const struct qwen35_hparams *hp, enum layer_kind kind,
                       struct tensor_spec *s) {
    int64_t H = hp->n_embd, I = hp->n_ff, hd = hp->head_dim;
    int64_t KD = (int64_t)hp->ssm_d_state * hp->ssm_n_group, VD = hp->ssm_d_inner;
    int64_t CD = 2 * KD + VD, Hv = hp->ssm_dt_rank;
    int n = 0;
    s[n++] = (struct tensor_spec){"attn_norm.weight", 1, H, 1};
    s[n++] = (struct tensor_spec){"post_attention_norm.weight", 1, H, 1};
    s[n++] = (struct tensor_spec){"ffn_gate.weight", 2, H, I};
    s[n++] = (struct tensor_spec){"ffn_up.weight", 2, H, I};
    s[n++] = (struct tensor_spec){"ffn_down.weight", 2, I, H};
    if (kind == LAYER_FULL_ATTN) {
        s[n++] = (struct tensor_spec){"attn_q.weight", 2, H, 2 * hp->n_head * hd};
        s[n++] = (struct tensor_spec){"attn_k.weight", 2, H, hp->n_head_kv * hd};
        s[n++] = (struct tensor_spec){"attn_v.weight", 2, H, hp->n_head_kv * hd};
        s[n++] = (struct tensor_spec){"attn_output.weight", 2, hp->n_head * hd, H};
        s[n++] = (struct tensor_spec){"attn_q_norm.weight", 1, hd, 1};
        s[n++] = (struct tensor_spec){"attn_k_norm.weight", 1, hd, 1};
    } else {
        s[n++] = (struct tensor_spec){"attn_qkv.weight", 2, H, CD};
        s[n++] = (struct tensor_spec){"attn_gate.weight", 2, H, VD};
        s[n++] = (struct tensor_spec){"ssm_beta.weight", 2, H, Hv};
        s[n++] = (struct tensor_spec){"ssm_alpha.weight", 2, H, Hv};
        s[n++] = (struct tensor_spec){"ssm_conv1d.weight", 2, hp->conv_kernel, CD};
        s[n++] = (struct tensor_spec){"ssm_dt.bias", 1, Hv, 1};
        s[n++] = (struct tensor_spec){"ssm_a", 1, Hv, 1};
        s[n++] = (struct tensor_spec){"ssm_norm.weight", 1, hp->ssm_head_v_dim, 1};
        s[n++] = (struct tensor_spec){"ssm_out.weight", 2, VD, H};
    }
    return n;
}
#define MAX_LAYER_SPECS 16

static int check_shape(const struct tensor_desc *t, const struct tensor_spec *s, bt_err *e) {
    /* ne beyond n_dims must be 1; a 1-D tensor may be written as [n, 1] by some tools. */
    int64_t want[4] = {s->ne0, s->ne1, 1, 1};
    for (int d = 0; d < 4; d++) {
        int64_t have = d < t->n_dims ? t->ne[d] : 1;
        if (have != want[d])
            return bt_fail(
                e, BT_ESHAPE, "tensor %s: ne = [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                t->name, (long long)t->ne[0], (long long)(t->n_dims > 1 ? t->ne[1] : 1),
                (long long)(t->n_dims > 2 ? t->ne[2] : 1),
                (long long)(t->n_dims > 3 ? t->ne[3] : 1), (long long)s->ne0, (long long)s->ne1);
    }
    if (s->n_dims == 2 && dtype_row_bytes(t->dtype, t->ne[0]) == 0)
        return bt_fail(e, BT_ESHAPE, "tensor %s: row of %lld is not a multiple of the %s block",
                       t->name, (long long)t->ne[0], dtype_name(t->dtype));
    return 0;
}

const struct tensor_desc *model_find(const struct model_desc *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

/* Checks every required tensor of the trunk and the globals (shared by both formats). */
static int model_validate(struct model_desc *m, bt_err *e) {
    const struct qwen35_hparams *hp = &m->hp;
    struct tensor_spec specs[MAX_LAYER_SPECS];
    char name[96];
    for (int l = 0; l < hp->n_layer; l++) {
        int n = layer_specs(hp, hp->kind[l], specs);
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, specs[i].suffix);
            const struct tensor_desc *t = model_find(m, name);
            if (!t) {
                if (hp->kind[l] == LAYER_FULL_ATTN && !strcmp(specs[i].suffix, "attn_q.weight")) {
                    snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
                    if (model_find(m, name))
                        return bt_fail(e, BT_EUNSUPPORTED,
                                       "blk.%d: fused attention qkv "
                                       "(--fuse-qkv) files are not supported",
                                       l);
                }
                return bt_fail(e, BT_ENOKEY, "tensor %s missing (layer %d is %s attention)", name,
                               l, hp->kind[l] == LAYER_FULL_ATTN ? "full" : "linear");
            }
            int rc = check_shape(t, &specs[i], e);
            if (rc) return rc;
        }
    }
    const struct tensor_desc *emb = model_find(m, "token_embd.weight");
    if (!emb) return bt_fail(e, BT_ENOKEY, "tensor token_embd.weight missing");
    if (emb->n_dims < 2 || emb->ne[1] < 1 || emb->ne[1] > INT32_MAX)
        return bt_fail(e, BT_ESHAPE, "tensor token_embd.weight: n_dims = %d", emb->n_dims);
    m->hp.n_vocab = (int)emb->ne[1];
    struct tensor_spec s_emb = {"", 2, hp->n_embd, hp->n_vocab};
    struct tensor_spec s_norm = {"", 1, hp->n_embd, 1};
    int rc = check_shape(emb, &s_emb, e);
    if (rc) return rc;
    const struct tensor_desc *onorm = model_find(m, "output_norm.weight");
    if (!onorm) return bt_fail(e, BT_ENOKEY, "tensor output_norm.weight missing");
    if ((rc = check_shape(onorm, &s_norm, e))) return rc;
    const struct tensor_desc *out = model_find(m, "output.weight");
    m->hp.tied_embeddings = out == NULL; /* trap §16.15 */
    if (out && (rc = check_shape(out, &s_emb, e))) return rc;
    return 0;
}

/* "blk.17.attn_q.weight" -> 17; -1 for a global tensor (or a malformed index). */
static int block_index(const char *name) {
    if (strncmp(name, "blk.", 4)) return -1;
    char *end;
    long v = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || v < 0 || v > 1000000) return -1;
    return (int)v;
}

static int is_global_tensor(const char *name) {
    return !strcmp(name, "token_embd.weight") || !strcmp(name, "output_norm.weight") ||
           !strcmp(name, "output.weight");
}

static int is_gguf_path(const char *path) {
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".gguf")) return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char magic[4];
    ssize_t r = pread(fd, magic, 4, 0);
    close(fd);
    return r == 4 && !memcmp(magic, "GGUF", 4);
}

static int open_gguf(struct model_desc **out, const char *path, bt_err *e) {
    gguf_t *g = NULL;
    struct model_desc *m = NULL;
    int rc = gguf_open(&g, path, e);
    if (rc) return rc;
    rc = -ENOMEM;
    if (!(m = calloc(1, sizeof *m))) goto fail;
    m->format = MODEL_GGUF;
    m->n_files = 1;
    char abs[4096];
    if (!(m->files[0] = strdup(realpath(path, abs) ? abs : path)) ||
        !(m->tokenizer_path = strdup(m->files[0])))
        goto fail;
    const char *gname;
    size_t glen;
    if (gguf_find_kv(g, "general.name") >= 0 &&
        !gguf_get_str(g, "general.name", &gname, &glen, NULL))
        m->name = strndup(gname, glen);
    else {
        const char *slash = strrchr(m->files[0], '/');
        m->name = strdup(slash ? slash + 1 : m->files[0]);
    }
    if (!m->name) goto fail;
    if ((rc = read_hparams(g, &m->hp, e))) goto fail;

    int64_t nt = gguf_n_tensors(g);
    rc = -ENOMEM;
    if (!(m->tensors = calloc((size_t)(nt > 0 ? nt : 1), sizeof *m->tensors))) goto fail;
    for (int64_t i = 0; i < nt; i++) {
        const struct gguf_tensor *gt = gguf_tensor(g, i);
        int blk = block_index(gt->name);
        if (blk >= m->hp.n_layer || (blk < 0 && !is_global_tensor(gt->name))) {
            m->n_skipped++; /* MTP block (nextn) or something we never read */
            continue;
        }
        if (strlen(gt->name) >= sizeof m->tensors[0].name) {
            rc = bt_fail(e, BT_EFORMAT, "tensor name too long: %.60s...", gt->name);
            goto fail;
        }
        struct tensor_desc *t = &m->tensors[m->n_tensors++];
        snprintf(t->name, sizeof t->name, "%s", gt->name);
        t->dtype = gt->dtype;
        t->n_dims = gt->n_dims;
        memcpy(t->ne, gt->ne, sizeof t->ne);
        t->file = 0;
        t->offset = gt->offset;
        t->n_bytes = gt->n_bytes;
        t->layer = blk;
        m->total_bytes += t->n_bytes;
    }
    if ((rc = model_validate(m, e))) goto fail;
    gguf_free(g);
    *out = m;
    return 0;
fail:
    gguf_free(g);
    model_close(m);
    return rc;
}

int model_open(struct model_desc **out, const char *path, bt_err *e) {
    *out = NULL;
    if (is_gguf_path(path)) return open_gguf(out, path, e);
    int rc = hf_open(out, path, e);
    if (rc) return rc;
    if ((rc = model_validate(*out, e))) { /* same checks and derived fields for both formats */
        model_close(*out);
        *out = NULL;
    }
    return rc;
}

void model_close(struct model_desc *m) {
    if (!m) return;
    for (int i = 0; i < m->n_files; i++)
        free(m->files[i]);
    free(m->tokenizer_path);
    free(m->name);
    free(m->tensors);
    free(m);
}

/* ---- layer ranges ---- */

int model_range(const struct model_desc *m, int lo, int hi, struct layer_range *out, bt_err *e) {
    memset(out, 0, sizeof *out);
    if (lo < 0 || hi > m->hp.n_layer || lo >= hi)
        return bt_fail(e, BT_EINVAL, "layer range [%d, %d) not inside [0, %d)", lo, hi,
                       m->hp.n_layer);
    const struct tensor_desc **list = calloc((size_t)m->n_tensors + 1, sizeof *list);
    if (!list) return bt_fail(e, -ENOMEM, "layer range [%d, %d): tensor list", lo, hi);
    int n = 0;
    const struct tensor_desc *emb = model_find(m, "token_embd.weight");
    int last = hi == m->hp.n_layer;
    if (lo == 0 || (last && m->hp.tied_embeddings))
        list[n++] = emb; /* once, even when the first stage is also the last and tied */
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].layer >= lo && m->tensors[i].layer < hi) list[n++] = &m->tensors[i];
    if (last) {
        list[n++] = model_find(m, "output_norm.weight");
        if (!m->hp.tied_embeddings) list[n++] = model_find(m, "output.weight");
    }
    out->lo = lo;
    out->hi = hi;
    out->n = n;
    out->tensors = list;
    for (int i = 0; i < n; i++)
        out->bytes += list[i]->n_bytes;
    return 0;
}

/* ---- weights ---- */

/* The public struct plus what weights_free must release. */
struct weights_impl {
    struct weights w;
    loader_blob_t *blob;
    int n_owned;
    void **owned; /* converted tensors (xform / non-F32 vectors), 64-byte aligned */
};

static struct mat mat_of(const struct tensor_desc *t, const void *data, enum dtype dt) {
    struct mat m = {0};
    m.dt = dt;
    m.data = data;
    m.cols = t->ne[0];
    m.rows = 1;
    for (int d = 1; d < t->n_dims; d++)
        m.rows *= t->ne[d];
    m.row_bytes = dtype_row_bytes(dt, m.cols);
    return m;
}

/* Engine form of one tensor: stored bytes used in place when they already are (GGUF matrices,
 * F32 vectors); otherwise converted by engine/xform into an owned 64-byte aligned buffer
 * (safetensors transforms; vectors and conv taps always become F32). */
static int engine_form(struct weights_impl *wi, const struct model_desc *m,
                       const struct tensor_desc *t, const void *bytes, struct mat *out, bt_err *e) {
    enum dtype dt = xform_out_dtype(t);
    if (!t->xform && dt == t->dtype) {
        *out = mat_of(t, bytes, dt);
        return 0;
    }
    size_t n_out = xform_out_bytes(m, t);
    void *buf = NULL;
    if (posix_memalign(&buf, 64, n_out ? n_out : 64))
        return bt_fail(e, -ENOMEM, "tensor %s: %zu bytes", t->name, n_out);
    wi->owned[wi->n_owned++] = buf;
    int rc = xform_apply(m, t, bytes, buf, e);
    if (rc) return rc;
    *out = mat_of(t, buf, dt);
    return 0;
}

/* Which layer_weights field a block tensor suffix fills, and whether it is a vector. */
static struct mat *layer_field(struct layer_weights *L, const char *suffix) {
    static const struct {
        const char *suffix;
        size_t off;
    } map[] = {
        {"attn_norm.weight", offsetof(struct layer_weights, attn_norm)},
        {"post_attention_norm.weight", offsetof(struct layer_weights, post_norm)},
        {"ffn_gate.weight", offsetof(struct layer_weights, ffn_gate)},
        {"ffn_up.weight", offsetof(struct layer_weights, ffn_up)},
        {"ffn_down.weight", offsetof(struct layer_weights, ffn_down)},
        {"attn_q.weight", offsetof(struct layer_weights, wq)},
        {"attn_k.weight", offsetof(struct layer_weights, wk)},
        {"attn_v.weight", offsetof(struct layer_weights, wv)},
        {"attn_output.weight", offsetof(struct layer_weights, wo)},
        {"attn_q_norm.weight", offsetof(struct layer_weights, q_norm)},
        {"attn_k_norm.weight", offsetof(struct layer_weights, k_norm)},
        {"attn_qkv.weight", offsetof(struct layer_weights, wqkv)},
        {"attn_gate.weight", offsetof(struct layer_weights, wz)},
        {"ssm_beta.weight", offsetof(struct layer_weights, wbeta)},
        {"ssm_alpha.weight", offsetof(struct layer_weights, walpha)},
        {"ssm_conv1d.weight", offsetof(struct layer_weights, conv)},
        {"ssm_dt.bias", offsetof(struct layer_weights, ssm_dt)},
        {"ssm_a", offsetof(struct layer_weights, ssm_a)},
        {"ssm_norm.weight", offsetof(struct layer_weights, ssm_norm)},
        {"ssm_out.weight", offsetof(struct layer_weights, ssm_out)},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(suffix, map[i].suffix)) return (struct mat *)((char *)L + map[i].off);
    return NULL;
}

/* Every matrix forward() multiplies must have a kernel for its dtype. */
static int check_kernel(const struct mat *w, const char *name, bt_err *e) {
    if (!w->data) return bt_fail(e, BT_ENOKEY, "tensor %s not loaded", name);
    if (!ops) return bt_fail(e, BT_EINVAL, "ops_init() has not been called");
    if (!ops->matmul[w->dt] || !ops->dequantize_row[w->dt])
        return bt_fail(e, BT_EUNSUPPORTED, "tensor %s: no kernel for dtype %s", name,
                       dtype_name(w->dt));
    return 0;
}

/* K-quant matrices (Q4_K, Q5_K, Q6_K) take the x16 layouts (ops/repack.h) where the active
 * kernels multiply them faster: on AVX-512, batches of 8 tokens 1.4-2x as fast and single
 * tokens at the read bandwidth. Only matrices nothing but matmul reads: the layers' and an
 * untied LM head (output.weight); token_embd (read row by row for the embedding lookup, and
 * the LM head when tied) keeps its GGUF layout. The loaded bytes are this process's own copy,
 * so the regrouping is in place. BT_REPACK=0 keeps every matrix as stored (for comparisons). */
static int repack_one(struct mat *m, int *n_repacked, bt_err *e) {
    if (!m->data || !repack_x16_wanted(m->dt) || !repack_x16_fits(m)) return 0;
    int rc = repack_x16(m, e);
    if (!rc) (*n_repacked)++;
    return rc;
}

static int repack_matrices(struct weights *w, int lo, int hi, bt_err *e) {
    const char *env = getenv("BT_REPACK");
    if (env && !strcmp(env, "0")) return 0;
    int n_repacked = 0, rc;
    for (int l = lo; l < hi; l++) {
        struct layer_weights *L = &w->layers[l];
        struct mat *mats[] = {&L->ffn_gate, &L->ffn_up, &L->ffn_down, &L->wq,
                              &L->wk,       &L->wv,     &L->wo,       &L->wqkv,
                              &L->wz,       &L->wbeta,  &L->walpha,   &L->ssm_out};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            if ((rc = repack_one(mats[i], &n_repacked, e))) return rc;
    }
    if (hi == w->m->hp.n_layer && !w->m->hp.tied_embeddings &&
        (rc = repack_one(&w->output, &n_repacked, e)))
        return rc;
    BT_LOG(DEBUG, "model", "layers %d..%d: %d matrices in an x16 layout", lo, hi, n_repacked);
    return 0;
}

int weights_load(struct weights **out, const struct model_desc *m, int lo, int hi,
                 const struct weights_opts *o, bt_err *e) {
    *out = NULL;
    struct layer_range r;
    int rc = model_range(m, lo, hi, &r, e);
    if (rc) return rc;
    struct load_req *reqs = NULL;
    struct weights_impl *wi = calloc(1, sizeof *wi);
    rc = -ENOMEM;
    if (!wi || !(reqs = calloc((size_t)r.n, sizeof *reqs)) ||
        !(wi->owned = calloc((size_t)r.n, sizeof *wi->owned))) {
        bt_fail(e, rc, "weights [%d, %d): bookkeeping", lo, hi);
        goto fail;
    }
    struct weights *w = &wi->w;
    w->m = m;
    w->lo = lo;
    w->hi = hi;
    for (int i = 0; i < r.n; i++) {
        reqs[i].file = r.tensors[i]->file;
        reqs[i].offset = r.tensors[i]->offset;
        reqs[i].len = r.tensors[i]->n_bytes;
        reqs[i].what = r.tensors[i]->name;
    }
    struct loader_opts lo_opts = {0};
    if (o) {
        lo_opts.backend = o->use_io_uring ? LOADER_AUTO : LOADER_PREAD;
        lo_opts.direct = o->direct;
        lo_opts.queue_depth = o->queue_depth;
        lo_opts.progress = o->progress;
        lo_opts.progress_ctx = o->progress_ctx;
    }
    struct loader_stats st = {0};
    if ((rc = loader_read(&wi->blob, (const char *const *)m->files, m->n_files, reqs, r.n, &lo_opts,
                          &st, e)))
        goto fail;
    w->bytes_read = st.bytes_read;

    for (int l = lo; l < hi; l++)
        w->layers[l].kind = m->hp.kind[l];
    for (int i = 0; i < r.n; i++) {
        const struct tensor_desc *t = r.tensors[i];
        struct mat *dst;
        if (t->layer >= 0) {
            const char *suffix = strchr(t->name + 4, '.') + 1; /* "blk.N." checked at open */
            if (!(dst = layer_field(&w->layers[t->layer], suffix)))
                continue; /* a tensor this engine does not use */
        } else if (!strcmp(t->name, "token_embd.weight")) {
            dst = &w->tok_embd;
        } else if (!strcmp(t->name, "output_norm.weight")) {
            dst = &w->output_norm;
        } else if (!strcmp(t->name, "output.weight")) {
            dst = &w->output;
        } else {
            continue;
        }
        if ((rc = engine_form(wi, m, t, reqs[i].data, dst, e))) goto fail;
    }
    if (hi == m->hp.n_layer) {
        if (m->hp.tied_embeddings) w->output = w->tok_embd;
        if ((rc = check_kernel(&w->output, "output.weight", e))) goto fail;
    }
    if (lo == 0 && (rc = check_kernel(&w->tok_embd, "token_embd.weight", e))) goto fail;
    for (int l = lo; l < hi; l++) {
        const struct layer_weights *L = &w->layers[l];
        const struct mat *mats[9];
        int n = 0;
        mats[n++] = &L->ffn_gate, mats[n++] = &L->ffn_up, mats[n++] = &L->ffn_down;
        if (L->kind == LAYER_FULL_ATTN)
            mats[n++] = &L->wq, mats[n++] = &L->wk, mats[n++] = &L->wv, mats[n++] = &L->wo;
        else
            mats[n++] = &L->wqkv, mats[n++] = &L->wz, mats[n++] = &L->wbeta, mats[n++] = &L->walpha,
            mats[n++] = &L->ssm_out;
        for (int i = 0; i < n; i++) {
            char name[48];
            snprintf(name, sizeof name, "blk.%d matrix %d", l, i);
            if ((rc = check_kernel(mats[i], name, e))) goto fail;
        }
    }
    if ((rc = repack_matrices(w, lo, hi, e))) goto fail;
    BT_LOG(DEBUG, "model", "weights layers=%d..%d tensors=%d bytes=%llu converted=%d", lo, hi, r.n,
           (unsigned long long)r.bytes, wi->n_owned);
    free(reqs);
    free(r.tensors);
    *out = w;
    return 0;
fail:
    free(reqs);
    free(r.tensors);
    weights_free(wi ? &wi->w : NULL);
    return rc;
}

void weights_free(struct weights *w) {
    if (!w) return;
    struct weights_impl *wi = (struct weights_impl *)w; /* w is the first member */
    for (int i = 0; i < wi->n_owned; i++)
        free(wi->owned[i]);
    free(wi->owned);
    loader_blob_free(wi->blob);
    free(wi);
}
