/* engine/hf.c: see hf.h. Name map and transforms: spec qwen35.md §10.1 and §10.4. */
#include "engine/hf.h"

#include "common/log.h"
#include "engine/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_JSON_BYTES (64u << 20) /* config.json / index json larger than this is rejected */

/* ---- config.json ---- */

static const cJSON *item(const cJSON *o, const char *key) {
    return o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

/* Integer key of cfg in [lo, hi]. Absent: BT_ENOKEY if required, else *out = def. */
static int cfg_int(const cJSON *cfg, const char *key, int required, int def, int lo, int hi,
                   int *out, bt_err *e) {
    const cJSON *v = item(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return bt_fail(e, BT_ENOKEY, "config.json: %s missing", key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : (double)NAN;
    if (!(d >= lo && d <= hi) || d != (double)(long long)d)
        return bt_fail(e, BT_EFORMAT, "config.json: %s is not an integer in [%d, %d]", key, lo, hi);
    *out = (int)d;
    return 0;
}

/* Number from the first of objs[] that has key (NULL entries skipped). */
static const cJSON *first_of(const cJSON *const *objs, int n, const char *key) {
    for (int i = 0; i < n; i++) {
        const cJSON *v = item(objs[i], key);
        if (v && !cJSON_IsNull(v)) return v;
    }
    return NULL;
}

int hf_parse_config(struct qwen35_hparams *hp, int *tied, const void *json, size_t len, bt_err *e) {
    memset(hp, 0, sizeof *hp);
    *tied = -1;
    if (len > MAX_JSON_BYTES)
        return bt_fail(e, BT_EFORMAT, "config.json: %zu bytes is too large", len);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return bt_fail(e, BT_EFORMAT, "config.json: invalid JSON");
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = bt_fail(e, BT_EFORMAT, "config.json: not a JSON object");
        goto done;
    }
    /* Multimodal wrapper: text keys under text_config; text-only export: at the top. */
    const cJSON *cfg = item(root, "text_config");
    if (cfg && !cJSON_IsObject(cfg)) {
        rc = bt_fail(e, BT_EFORMAT, "config.json: text_config is not an object");
        goto done;
    }
    if (!cfg) cfg = root;
    static const char *const model_types[] = {"qwen3_5", "qwen3_5_text"};
    const cJSON *const where[] = {cfg, root};
    for (int w = 0; w < 2; w++) {
        const cJSON *mt = item(where[w], "model_type");
        if (!cJSON_IsString(mt)) continue;
        if (strcmp(mt->valuestring, model_types[0]) && strcmp(mt->valuestring, model_types[1])) {
            rc = bt_fail(e, BT_EUNSUPPORTED,
                         "config.json: model_type \"%.40s\" is not a Qwen3.5 dense model",
                         mt->valuestring);
            goto done;
        }
    }
    const int BIG = 1 << 24;
    int hk = 0, hv = 0, dk = 0, dv = 0, interval = 0;
    if ((rc = cfg_int(cfg, "hidden_size", 1, 0, 1, BIG, &hp->n_embd, e)) ||
        (rc = cfg_int(cfg, "num_hidden_layers", 1, 0, 1, BT_MAX_LAYERS, &hp->n_layer, e)) ||
        (rc = cfg_int(cfg, "intermediate_size", 1, 0, 1, BIG, &hp->n_ff, e)) ||
        (rc = cfg_int(cfg, "num_attention_heads", 1, 0, 1, 4096, &hp->n_head, e)) ||
        (rc = cfg_int(cfg, "num_key_value_heads", 1, 0, 1, 4096, &hp->n_head_kv, e)) ||
        (rc = cfg_int(cfg, "head_dim", 1, 0, 2, 65536, &hp->head_dim, e)) ||
        (rc = cfg_int(cfg, "linear_num_key_heads", 1, 0, 1, 4096, &hk, e)) ||
        (rc = cfg_int(cfg, "linear_num_value_heads", 1, 0, 1, 4096, &hv, e)) ||
        (rc = cfg_int(cfg, "linear_key_head_dim", 1, 0, 1, 65536, &dk, e)) ||
        (rc = cfg_int(cfg, "linear_value_head_dim", 1, 0, 1, 65536, &dv, e)) ||
        (rc = cfg_int(cfg, "linear_conv_kernel_dim", 1, 0, 1, 64, &hp->conv_kernel, e)) ||
        (rc = cfg_int(cfg, "full_attention_interval", 0, 4, 1, BT_MAX_LAYERS, &interval, e)) ||
        (rc = cfg_int(cfg, "vocab_size", 1, 0, 1, 1 << 30, &hp->n_vocab, e)) ||
        (rc = cfg_int(cfg, "max_position_embeddings", 1, 0, 1, INT_MAX, &hp->n_ctx_train, e)))
        goto done;
    hp->n_block = hp->n_layer; /* mtp.* tensors are skipped, so no extra block is described */
    hp->ssm_d_state = dk;
    hp->ssm_n_group = hk;
    hp->ssm_dt_rank = hv;
    hp->ssm_head_v_dim = dv;
    hp->ssm_d_inner = hv * dv;
    if (hp->n_head % hp->n_head_kv) {
        rc = bt_fail(e, BT_ESHAPE,
                     "config.json: num_attention_heads %d not a multiple of "
                     "num_key_value_heads %d",
                     hp->n_head, hp->n_head_kv);
        goto done;
    }
    if (hv % hk) {
        rc = bt_fail(e, BT_ESHAPE,
                     "config.json: linear_num_value_heads %d not a multiple of "
                     "linear_num_key_heads %d",
                     hv, hk);
        goto done;
    }
    if ((int64_t)hv * dv > BIG || (int64_t)hk * dk > BIG ||
        (int64_t)hp->n_head * hp->head_dim * 2 > BIG) {
        rc = bt_fail(e, BT_ESHAPE, "config.json: projection sizes exceed %d", BIG);
        goto done;
    }

    const cJSON *eps = item(cfg, "rms_norm_eps");
    if (!eps) {
        rc = bt_fail(e, BT_ENOKEY, "config.json: rms_norm_eps missing");
        goto done;
    }
    if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0.0 && eps->valuedouble < 1.0)) {
        rc = bt_fail(e, BT_EFORMAT, "config.json: rms_norm_eps is not a number in (0, 1)");
        goto done;
    }
    hp->rms_eps = (float)eps->valuedouble;

    /* RoPE: transformers 5 nests it in rope_parameters; older exports keep flat keys. */
    const cJSON *rp = item(cfg, "rope_parameters");
    if (rp && !cJSON_IsObject(rp)) rp = NULL;
    const cJSON *const rope_src[] = {rp, cfg, root};
    const cJSON *rt = first_of(rope_src, 3, "rope_type");
    if (rt && (!cJSON_IsString(rt) || strcmp(rt->valuestring, "default"))) {
        rc = bt_fail(e, BT_EUNSUPPORTED, "config.json: rope_type is not \"default\"");
        goto done;
    }
    const cJSON *theta = first_of(rope_src, 3, "rope_theta");
    const cJSON *factor = first_of(rope_src, 3, "partial_rotary_factor");
    if (!theta || !factor) {
        rc = bt_fail(e, BT_ENOKEY, "config.json: rope_parameters.%s missing",
                     theta ? "partial_rotary_factor" : "rope_theta");
        goto done;
    }
    if (!cJSON_IsNumber(theta) || !(theta->valuedouble > 0.0 && theta->valuedouble < 1e30)) {
        rc = bt_fail(e, BT_EFORMAT, "config.json: rope_theta is not a positive number");
        goto done;
    }
    hp->rope_theta = (float)theta->valuedouble;
    double nrot = cJSON_IsNumber(factor) ? factor->valuedouble * hp->head_dim : (double)NAN;
    if (!(nrot >= 2.0 && nrot <= hp->head_dim) || fabs(nrot - round(nrot)) > 1e-6 ||
        (long)round(nrot) % 2) {
        rc = bt_fail(e, BT_EFORMAT,
                     "config.json: partial_rotary_factor x head_dim %d is not an "
                     "even number of dims in [2, head_dim]",
                     hp->head_dim);
        goto done;
    }
    hp->n_rot = (int)round(nrot);
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);

    /* Features this engine does not implement must not be silently ignored. */
    const cJSON *gate = item(cfg, "attn_output_gate");
    const cJSON *bias = item(cfg, "attention_bias");
    if ((gate && cJSON_IsFalse(gate)) || (bias && cJSON_IsTrue(bias))) {
        rc =
            bt_fail(e, BT_EUNSUPPORTED, "config.json: %s",
                    gate && cJSON_IsFalse(gate) ? "attn_output_gate false" : "attention_bias true");
        goto done;
    }

    /* Layer kinds: layer_types is authoritative; otherwise every interval-th layer is full. */
    const cJSON *lt = item(cfg, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != hp->n_layer) {
            rc = bt_fail(e, BT_EFORMAT, "config.json: layer_types is not an array of %d strings",
                         hp->n_layer);
            goto done;
        }
        int i = 0;
        for (const cJSON *x = lt->child; x; x = x->next, i++) {
            if (cJSON_IsString(x) && !strcmp(x->valuestring, "linear_attention"))
                hp->kind[i] = LAYER_LINEAR_ATTN;
            else if (cJSON_IsString(x) && !strcmp(x->valuestring, "full_attention"))
                hp->kind[i] = LAYER_FULL_ATTN;
            else {
                rc = bt_fail(e, BT_EUNSUPPORTED,
                             "config.json: layer_types[%d] is not "
                             "linear_attention or full_attention",
                             i);
                goto done;
            }
        }
    } else {
        for (int i = 0; i < hp->n_layer; i++)
            hp->kind[i] = (i + 1) % interval == 0 ? LAYER_FULL_ATTN : LAYER_LINEAR_ATTN;
    }

    const cJSON *tw = first_of(where, 2, "tie_word_embeddings");
    if (tw) {
        if (!cJSON_IsBool(tw)) {
            rc = bt_fail(e, BT_EFORMAT, "config.json: tie_word_embeddings is not a boolean");
            goto done;
        }
        *tied = cJSON_IsTrue(tw);
    }
    hp->tied_embeddings = *tied == 1;
done:
    cJSON_Delete(root);
    return rc;
}

/* ---- tensor names ---- */

enum dimc { D_NONE, D_H, D_I, D_V, D_QG, D_KVD, D_OD, D_HD, D_CD, D_VD, D_HV, D_DV, D_K };
enum permc { P_NONE, P_ROWS_0, P_ROWS_2KD, P_COLS_0 };
enum kindc { K_ANY, K_FULL, K_LIN };

struct map_entry {
    const char *hf, *gguf;
    enum kindc kind;
    enum dimc ne0, ne1; /* GGUF order; ne1 D_NONE = 1-D */
    unsigned vops;      /* XF_ADD_ONE / XF_NEG_EXP */
    enum permc perm;
    int block_dv; /* permutation block: d_v (1) or one element (0) */
};

// clang-format off
static const struct map_entry layer_map[] = {
    {"input_layernorm.weight",          "attn_norm.weight",           K_ANY,  D_H,  D_NONE, XF_ADD_ONE, P_NONE, 0},
    {"post_attention_layernorm.weight", "post_attention_norm.weight", K_ANY,  D_H,  D_NONE, XF_ADD_ONE, P_NONE, 0},
    {"mlp.gate_proj.weight",            "ffn_gate.weight",            K_ANY,  D_H,  D_I,    0, P_NONE, 0},
    {"mlp.up_proj.weight",              "ffn_up.weight",              K_ANY,  D_H,  D_I,    0, P_NONE, 0},
    {"mlp.down_proj.weight",            "ffn_down.weight",            K_ANY,  D_I,  D_H,    0, P_NONE, 0},
    {"self_attn.q_proj.weight",         "attn_q.weight",              K_FULL, D_H,  D_QG,   0, P_NONE, 0},
    {"self_attn.k_proj.weight",         "attn_k.weight",              K_FULL, D_H,  D_KVD,  0, P_NONE, 0},
    {"self_attn.v_proj.weight",         "attn_v.weight",              K_FULL, D_H,  D_KVD,  0, P_NONE, 0},
    {"self_attn.o_proj.weight",         "attn_output.weight",         K_FULL, D_OD, D_H,    0, P_NONE, 0},
    {"self_attn.q_norm.weight",         "attn_q_norm.weight",         K_FULL, D_HD, D_NONE, XF_ADD_ONE, P_NONE, 0},
    {"self_attn.k_norm.weight",         "attn_k_norm.weight",         K_FULL, D_HD, D_NONE, XF_ADD_ONE, P_NONE, 0},
    {"linear_attn.in_proj_qkv.weight",  "attn_qkv.weight",            K_LIN,  D_H,  D_CD,   0, P_ROWS_2KD, 1},
    {"linear_attn.in_proj_z.weight",    "attn_gate.weight",           K_LIN,  D_H,  D_VD,   0, P_ROWS_0, 1},
    {"linear_attn.in_proj_b.weight",    "ssm_beta.weight",            K_LIN,  D_H,  D_HV,   0, P_ROWS_0, 0},
    {"linear_attn.in_proj_a.weight",    "ssm_alpha.weight",           K_LIN,  D_H,  D_HV,   0, P_ROWS_0, 0},
    {"linear_attn.conv1d.weight",       "ssm_conv1d.weight",          K_LIN,  D_K,  D_CD,   0, P_ROWS_2KD, 1},
    {"linear_attn.dt_bias",             "ssm_dt.bias",                K_LIN,  D_HV, D_NONE, 0, P_ROWS_0, 0},
    {"linear_attn.A_log",               "ssm_a",                      K_LIN,  D_HV, D_NONE, XF_NEG_EXP, P_ROWS_0, 0},
    {"linear_attn.norm.weight",         "ssm_norm.weight",            K_LIN,  D_DV, D_NONE, 0, P_NONE, 0},
    {"linear_attn.out_proj.weight",     "ssm_out.weight",             K_LIN,  D_VD, D_H,    0, P_COLS_0, 1},
};
// clang-format on
#define N_LAYER_MAP ((int)(sizeof layer_map / sizeof *layer_map))

static int64_t dim_value(const struct qwen35_hparams *hp, enum dimc d) {
    int64_t kd = (int64_t)hp->ssm_n_group * hp->ssm_d_state;
    switch (d) {
    case D_H:
        return hp->n_embd;
    case D_I:
        return hp->n_ff;
    case D_V:
        return hp->n_vocab;
    case D_QG:
        return 2LL * hp->n_head * hp->head_dim;
    case D_KVD:
        return (int64_t)hp->n_head_kv * hp->head_dim;
    case D_OD:
        return (int64_t)hp->n_head * hp->head_dim;
    case D_HD:
        return hp->head_dim;
    case D_CD:
        return 2 * kd + hp->ssm_d_inner;
    case D_VD:
        return hp->ssm_d_inner;
    case D_HV:
        return hp->ssm_dt_rank;
    case D_DV:
        return hp->ssm_head_v_dim;
    case D_K:
        return hp->conv_kernel;
    default:
        return 1;
    }
}

/* Slots: 0 token_embd, 1 + l * N_LAYER_MAP + j for layer l entry j, then output_norm, output. */
#define SLOT_EMBD        0
#define SLOT_LAYER(l, j) (1 + (l)*N_LAYER_MAP + (j))
#define SLOT_NORM(nl)    (1 + (nl)*N_LAYER_MAP)
#define SLOT_OUT(nl)     (2 + (nl)*N_LAYER_MAP)

static const struct map_entry global_map[] = {
    {"embed_tokens.weight", "token_embd.weight", K_ANY, D_H, D_V, 0, P_NONE, 0},
    {"norm.weight", "output_norm.weight", K_ANY, D_H, D_NONE, XF_ADD_ONE, P_NONE, 0},
    {"lm_head.weight", "output.weight", K_ANY, D_H, D_V, 0, P_NONE, 0},
};

enum map_result { MAP_OK, MAP_SKIP, MAP_UNKNOWN };

/* Finds the slot of an HF name; *ent its map entry, *layer its block (-1 global). */
static enum map_result map_name(const char *name, const struct qwen35_hparams *hp, int *slot,
                                const struct map_entry **ent, int *layer) {
    static const char lm[] = "model.language_model.", mdl[] = "model.";
    const char *rest;
    *layer = -1;
    if (!strcmp(name, "lm_head.weight")) {
        *slot = SLOT_OUT(hp->n_layer);
        *ent = &global_map[2];
        return MAP_OK;
    }
    if (!strncmp(name, "mtp.", 4) || !strncmp(name, "model.visual.", 13)) return MAP_SKIP;
    if (!strncmp(name, lm, sizeof lm - 1))
        rest = name + sizeof lm - 1;
    else if (!strncmp(name, mdl, sizeof mdl - 1))
        rest = name + sizeof mdl - 1;
    else
        return MAP_UNKNOWN;
    if (!strcmp(rest, "embed_tokens.weight")) {
        *slot = SLOT_EMBD;
        *ent = &global_map[0];
        return MAP_OK;
    }
    if (!strcmp(rest, "norm.weight")) {
        *slot = SLOT_NORM(hp->n_layer);
        *ent = &global_map[1];
        return MAP_OK;
    }
    if (strncmp(rest, "layers.", 7)) return MAP_UNKNOWN;
    rest += 7;
    /* A plain decimal layer index: no sign, no leading zeros, below n_layer. */
    long l = 0;
    const char *p = rest;
    while (*p >= '0' && *p <= '9' && p - rest < 4)
        l = l * 10 + (*p++ - '0');
    if (p == rest || *p != '.' || (p - rest > 1 && *rest == '0') || l >= hp->n_layer)
        return MAP_UNKNOWN;
    for (int j = 0; j < N_LAYER_MAP; j++)
        if (!strcmp(p + 1, layer_map[j].hf)) {
            *slot = SLOT_LAYER((int)l, j);
            *ent = &layer_map[j];
            *layer = (int)l;
            return MAP_OK;
        }
    return MAP_UNKNOWN;
}

/* Fills t from the stored tensor st and the map entry; checks kind and shape. */
static int fill_tensor(struct tensor_desc *t, const struct qwen35_hparams *hp,
                       const struct map_entry *me, int layer, int file,
                       const struct safetensors_tensor *st, bt_err *e) {
    memset(t, 0, sizeof *t);
    if (layer >= 0)
        snprintf(t->name, sizeof t->name, "blk.%d.%s", layer, me->gguf);
    else
        snprintf(t->name, sizeof t->name, "%s", me->gguf);
    if (layer >= 0 && me->kind != K_ANY &&
        (me->kind == K_FULL) != (hp->kind[layer] == LAYER_FULL_ATTN))
        return bt_fail(e, BT_EFORMAT, "hf: tensor %s: layer %d is %s attention", st->name, layer,
                       hp->kind[layer] == LAYER_FULL_ATTN ? "full" : "linear");
    /* HF conv1d is [CD, 1, K]: squeeze the middle dim (spec §10.4 step 4). */
    int64_t shape[ST_MAX_DIMS];
    int nd = st->n_dims;
    memcpy(shape, st->shape, sizeof shape);
    if (me->ne0 == D_K && nd == 3 && shape[1] == 1) {
        shape[1] = shape[2];
        nd = 2;
    }
    int want_nd = me->ne1 == D_NONE ? 1 : 2;
    int64_t want[2] = {dim_value(hp, me->ne0), dim_value(hp, me->ne1)};
    if (nd != want_nd || shape[nd - 1] != want[0] || (nd == 2 && shape[0] != want[1])) {
        char got[96] = "";
        for (int d = 0, o = 0; d < st->n_dims && o < (int)sizeof got - 24; d++)
            o += snprintf(got + o, sizeof got - (size_t)o, "%s%lld", d ? ", " : "",
                          (long long)st->shape[d]);
        if (want_nd == 1)
            return bt_fail(e, BT_ESHAPE, "hf: tensor %s: shape [%s], config wants [%lld]", st->name,
                           got, (long long)want[0]);
        return bt_fail(e, BT_ESHAPE, "hf: tensor %s: shape [%s], config wants [%lld, %lld]%s",
                       st->name, got, (long long)want[1], (long long)want[0],
                       me->ne0 == D_K ? " (or [CD, 1, K])" : "");
    }
    t->dtype = st->dtype;
    t->n_dims = nd;
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (int d = 0; d < nd; d++)
        t->ne[d] = shape[nd - 1 - d]; /* GGUF lists dims fastest first (spec §0) */
    t->file = file;
    t->offset = st->offset;
    t->n_bytes = st->n_bytes;
    t->layer = layer;
    t->xform = me->vops;
    /* The value-head permutation exists only when value heads outnumber key heads (§10.3). */
    if (me->perm != P_NONE && hp->ssm_dt_rank != hp->ssm_n_group) {
        t->xform |= me->perm == P_COLS_0 ? XF_VHEAD_COLS : XF_VHEAD_ROWS;
        t->perm_first = me->perm == P_ROWS_2KD ? 2 * hp->ssm_n_group * hp->ssm_d_state : 0;
        t->perm_block = me->block_dv ? hp->ssm_head_v_dim : 1;
    }
    return 0;
}

/* ---- files ---- */

static int read_all(const char *path, char **out, size_t *len, bt_err *e) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bt_fail(e, errno == ENOENT ? BT_ENOKEY : -errno, "hf: open %s: %s", path,
                       strerror(errno));
    int rc = 0;
    struct stat sb;
    char *buf = NULL;
    if (fstat(fd, &sb) < 0) {
        rc = bt_fail(e, -errno, "hf: stat %s: %s", path, strerror(errno));
        goto done;
    }
    if (sb.st_size > (off_t)MAX_JSON_BYTES) {
        rc = bt_fail(e, BT_EFORMAT, "hf: %s: %lld bytes is too large", path, (long long)sb.st_size);
        goto done;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    if (!(buf = malloc(n + 1))) {
        rc = bt_fail(e, -ENOMEM, "hf: %s: out of memory", path);
        goto done;
    }
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = bt_fail(e, r < 0 ? -errno : BT_EFORMAT, "hf: read %s: %s", path,
                         r < 0 ? strerror(errno) : "file shrank");
            goto done;
        }
        got += (size_t)r;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return rc;
}

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, file);
    return s;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

void hf_desc_free(struct model_desc *m) {
    if (!m) return;
    for (int i = 0; i < m->n_files; i++)
        free(m->files[i]);
    free(m->tokenizer_path);
    free(m->name);
    free(m->tensors);
    free(m);
}

struct src {
    const char *name; /* HF name, owned by the safetensors object */
    int file;
    const struct safetensors_tensor *st;
};

int hf_open(struct model_desc **out, const char *path, bt_err *e) {
    *out = NULL;
    int rc = 0;
    char *dir = NULL, *cfg_path = NULL, *cfg = NULL, *ixbuf = NULL, *ixpath = NULL;
    struct safetensors_index *ix = NULL;
    safetensors_t *shard[BT_MAX_FILES] = {0};
    struct src *srcs = NULL;
    int *slot_of = NULL;
    struct model_desc *m = calloc(1, sizeof *m);
    if (!m) return bt_fail(e, -ENOMEM, "hf: out of memory");
    m->format = MODEL_SAFETENSORS;

    /* Where are config.json and the weights? */
    char *abs = realpath(path, NULL);
    if (!abs) {
        rc = bt_fail(e, errno == ENOENT ? BT_ENOKEY : -errno, "hf: %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (stat(abs, &sb) < 0) {
        rc = bt_fail(e, -errno, "hf: stat %s: %s", abs, strerror(errno));
        free(abs);
        goto fail;
    }
    char *weights = NULL; /* a .safetensors file, or NULL with ixpath set */
    if (S_ISDIR(sb.st_mode)) {
        dir = abs;
        ixpath = join(dir, "model.safetensors.index.json");
        if (ixpath && access(ixpath, F_OK)) {
            free(ixpath);
            ixpath = NULL;
            weights = join(dir, "model.safetensors");
            if (!weights) {
                rc = bt_fail(e, -ENOMEM, "hf: out of memory");
                goto fail;
            }
            if (access(weights, F_OK)) {
                rc = bt_fail(e, BT_ENOKEY,
                             "hf: %s has neither model.safetensors.index.json "
                             "nor model.safetensors",
                             dir);
                free(weights);
                goto fail;
            }
        }
    } else {
        if (ends_with(abs, ".json"))
            ixpath = strdup(abs);
        else
            weights = strdup(abs);
        char *slash = strrchr(abs, '/');
        *slash = 0; /* realpath gives an absolute path: there is a '/' */
        dir = abs[0] ? abs : strdup("/");
        if (!abs[0]) free(abs);
    }
    if (!dir || (!ixpath && !weights)) {
        free(weights);
        rc = bt_fail(e, -ENOMEM, "hf: out of memory");
        goto fail;
    }
    if (weights) {
        m->files[0] = weights;
        m->n_files = 1;
    }

    /* Hyperparameters. */
    size_t len;
    int tied;
    if (!(cfg_path = join(dir, "config.json"))) {
        rc = bt_fail(e, -ENOMEM, "hf: out of memory");
        goto fail;
    }
    if ((rc = read_all(cfg_path, &cfg, &len, e))) goto fail;
    if ((rc = hf_parse_config(&m->hp, &tied, cfg, len, e))) goto fail;

    /* Shards. */
    if (ixpath) {
        if ((rc = read_all(ixpath, &ixbuf, &len, e)) ||
            (rc = safetensors_index_parse(&ix, ixbuf, len, e)))
            goto fail;
        if (ix->n_shards > BT_MAX_FILES) {
            rc = bt_fail(e, BT_ECAPACITY, "hf: %s lists %d shards > %d", ixpath, ix->n_shards,
                         BT_MAX_FILES);
            goto fail;
        }
        for (int s = 0; s < ix->n_shards; s++) {
            if (!(m->files[s] = join(dir, ix->shards[s]))) {
                rc = bt_fail(e, -ENOMEM, "hf: out of memory");
                goto fail;
            }
            m->n_files = s + 1;
        }
    }
    int n_src = 0;
    for (int f = 0; f < m->n_files; f++) {
        if ((rc = safetensors_open(&shard[f], m->files[f], e))) goto fail;
        n_src += safetensors_n_tensors(shard[f]);
    }
    if (!(srcs = calloc(n_src ? (size_t)n_src : 1, sizeof *srcs))) {
        rc = bt_fail(e, -ENOMEM, "hf: out of memory");
        goto fail;
    }
    n_src = 0;
    if (ix) {
        /* The index decides which tensors exist; each must be in the shard it names. */
        for (int i = 0; i < ix->n_entries; i++) {
            int f = ix->shard_of[i];
            const struct safetensors_tensor *st = safetensors_find(shard[f], ix->names[i]);
            if (!st) {
                rc = bt_fail(e, BT_ENOKEY, "hf: tensor %s: not in shard %s", ix->names[i],
                             ix->shards[f]);
                goto fail;
            }
            srcs[n_src++] = (struct src){st->name, f, st};
        }
    } else {
        for (int i = 0; i < safetensors_n_tensors(shard[0]); i++) {
            const struct safetensors_tensor *st = safetensors_tensor(shard[0], i);
            srcs[n_src++] = (struct src){st->name, 0, st};
        }
    }

    /* Map names to slots. */
    struct qwen35_hparams *hp = &m->hp;
    int n_slots = SLOT_OUT(hp->n_layer) + 1;
    if (!(slot_of = malloc((size_t)n_slots * sizeof *slot_of))) {
        rc = bt_fail(e, -ENOMEM, "hf: out of memory");
        goto fail;
    }
    for (int s = 0; s < n_slots; s++)
        slot_of[s] = -1;
    int n_unknown = 0;
    for (int i = 0; i < n_src; i++) {
        int slot, layer;
        const struct map_entry *me;
        enum map_result r = map_name(srcs[i].name, hp, &slot, &me, &layer);
        if (r == MAP_OK && slot == SLOT_OUT(hp->n_layer) && tied == 1)
            r = MAP_SKIP; /* tied: the LM head is token_embd, a stored copy is not used */
        if (r == MAP_SKIP) {
            m->n_skipped++;
            continue;
        }
        if (r == MAP_UNKNOWN) {
            if (n_unknown++ < 8) BT_LOG(WARN, "hf", "unknown tensor skipped: %s", srcs[i].name);
            continue;
        }
        if (slot_of[slot] >= 0) {
            rc = bt_fail(e, BT_EFORMAT, "hf: tensors %s and %s both map to %s",
                         srcs[slot_of[slot]].name, srcs[i].name, me->gguf);
            goto fail;
        }
        slot_of[slot] = i;
    }
    if (n_unknown > 8) BT_LOG(WARN, "hf", "unknown tensors skipped: %d in all", n_unknown);
    if (tied == -1) tied = slot_of[SLOT_OUT(hp->n_layer)] < 0;
    hp->tied_embeddings = tied;

    /* The vocabulary is what the embedding has; the config must agree. */
    if (slot_of[SLOT_EMBD] < 0) {
        rc = bt_fail(e, BT_ENOKEY,
                     "hf: required tensor model.language_model.embed_tokens."
                     "weight (token_embd.weight) missing");
        goto fail;
    }
    const struct safetensors_tensor *emb = srcs[slot_of[SLOT_EMBD]].st;
    if (emb->n_dims == 2 && emb->shape[0] != hp->n_vocab) {
        rc = bt_fail(e, BT_ESHAPE, "hf: tensor %s has %lld rows, config vocab_size is %d",
                     emb->name, (long long)emb->shape[0], hp->n_vocab);
        goto fail;
    }

    /* Required tensors, in slot order (embedding, layer by layer, final norm, head). */
    if (!(m->tensors = calloc((size_t)n_slots, sizeof *m->tensors))) {
        rc = bt_fail(e, -ENOMEM, "hf: out of memory");
        goto fail;
    }
    for (int s = 0; s < n_slots; s++) {
        const struct map_entry *me;
        int layer = -1;
        if (s == SLOT_EMBD)
            me = &global_map[0];
        else if (s == SLOT_NORM(hp->n_layer))
            me = &global_map[1];
        else if (s == SLOT_OUT(hp->n_layer))
            me = &global_map[2];
        else {
            layer = (s - 1) / N_LAYER_MAP;
            me = &layer_map[(s - 1) % N_LAYER_MAP];
        }
        int needed = s == SLOT_OUT(hp->n_layer)
                         ? !tied
                         : layer < 0 || me->kind == K_ANY ||
                               (me->kind == K_FULL) == (hp->kind[layer] == LAYER_FULL_ATTN);
        if (slot_of[s] < 0) {
            if (!needed) continue;
            if (layer >= 0)
                rc = bt_fail(e, BT_ENOKEY, "hf: required tensor layers.%d.%s (blk.%d.%s) missing",
                             layer, me->hf, layer, me->gguf);
            else
                rc = bt_fail(e, BT_ENOKEY, "hf: required tensor %s (%s) missing", me->hf, me->gguf);
            goto fail;
        }
        const struct src *sr = &srcs[slot_of[s]];
        struct tensor_desc *t = &m->tensors[m->n_tensors];
        if ((rc = fill_tensor(t, hp, me, layer, sr->file, sr->st, e))) goto fail;
        m->total_bytes += t->n_bytes;
        m->n_tensors++;
    }

    const char *base = strrchr(dir, '/');
    m->name = strdup(base && base[1] ? base + 1 : dir);
    m->tokenizer_path = join(dir, "tokenizer.json");
    if (!m->name || !m->tokenizer_path) {
        rc = bt_fail(e, -ENOMEM, "hf: out of memory");
        goto fail;
    }
    BT_LOG(DEBUG, "hf", "opened %s: files=%d tensors=%d skipped=%d bytes=%llu", dir, m->n_files,
           m->n_tensors, m->n_skipped, (unsigned long long)m->total_bytes);
    *out = m;
    m = NULL;
fail:
    for (int f = 0; f < BT_MAX_FILES; f++)
        safetensors_free(shard[f]);
    safetensors_index_free(ix);
    free(slot_of);
    free(srcs);
    free(ixbuf);
    free(ixpath);
    free(cfg);
    free(cfg_path);
    free(dir);
    hf_desc_free(m);
    return rc;
}
