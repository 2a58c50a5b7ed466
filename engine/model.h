/* engine/model.h: a Qwen3.5 text model as described by its file(s), and the weights of a
 * contiguous layer range loaded into memory.
 *
 * model_open() reads only metadata: a GGUF file (engine/gguf) or a Hugging Face checkpoint
 * (a directory with config.json + model.safetensors or model.safetensors.index.json; engine/hf).
 * Hyperparameters and layer kinds come from the file, never from a table. Tensors are described
 * under their canonical GGUF names ("blk.3.attn_q.weight"), whichever format they came from; a
 * safetensors tensor carries the transforms of spec §10.4 (xform) that turn its stored values
 * into exactly what the GGUF form stores, applied when the weights are loaded. MTP blocks
 * (blk.n for n >= n_layer, mtp.*) and vision tensors are recognised and skipped.
 *
 * A layer range [lo, hi) is what one pipeline stage runs: its blocks' tensors, plus token_embd
 * on the stage with lo == 0 and output_norm + output (token_embd when tied) on the stage with
 * hi == n_layer. model_range() lists them with their byte ranges; weights_load() reads exactly
 * those bytes (engine/loader, io_uring) into aligned memory. Both objects are read-only after
 * creation and may be shared between threads. */
#ifndef BT_ENGINE_MODEL_H
#define BT_ENGINE_MODEL_H
#include "common/err.h"
#include "engine/dtype.h"
#include "ops/ops.h"

#include <stdint.h>

#define BT_MAX_LAYERS 256
#define BT_MAX_FILES  64

enum layer_kind { LAYER_LINEAR_ATTN = 0, LAYER_FULL_ATTN = 1 };
enum model_format { MODEL_GGUF = 0, MODEL_SAFETENSORS = 1 };

struct qwen35_hparams {
    int n_layer; /* trunk layers = block_count - nextn_predict_layers */
    int n_block; /* blocks in the file, MTP included */
    int n_embd;  /* H */
    int n_ff;    /* I */
    int n_head;  /* full attention query heads */
    int n_head_kv;
    int head_dim; /* attention.key_length (256 in real models; never H / n_head) */
    int n_rot;    /* rope.dimension_count: rotated dims per head */
    float rope_theta;
    float rms_eps;
    float attn_scale;   /* 1/sqrt(head_dim) unless the file says otherwise */
    int conv_kernel;    /* 4 */
    int ssm_d_state;    /* d_k, key head dim */
    int ssm_n_group;    /* H_k, key heads */
    int ssm_dt_rank;    /* H_v, value heads */
    int ssm_d_inner;    /* VD = H_v * d_v */
    int ssm_head_v_dim; /* d_v */
    int n_vocab;        /* rows of token_embd (padded vocabulary) */
    int n_ctx_train;
    int tied_embeddings; /* no output.weight: the LM head is token_embd */
    enum layer_kind kind[BT_MAX_LAYERS];
};

/* Transforms from stored values to GGUF-convention values (safetensors only; GGUF: none). */
enum tensor_xform {
    XF_ADD_ONE = 1 << 0,    /* zero-centred HF norm weight: 1 + w */
    XF_NEG_EXP = 1 << 1,    /* HF A_log: -exp(A_log) */
    XF_VHEAD_ROWS = 1 << 2, /* value heads from HF grouped to GGUF tiled order, on rows */
    XF_VHEAD_COLS = 1 << 3, /* the same on columns (ssm_out's inputs) */
};

struct tensor_desc {
    char name[80];    /* canonical GGUF name */
    enum dtype dtype; /* as stored */
    int n_dims;
    int64_t ne[4];   /* GGUF order, fastest first: ne[0] = cols, ne[1] = rows */
    int file;        /* index into model_desc.files */
    uint64_t offset; /* absolute byte offset in that file */
    uint64_t n_bytes;
    int layer;      /* block index, or -1 for global tensors */
    unsigned xform; /* XF_* bits */
    int perm_first; /* XF_VHEAD_*: first permuted row/column (e.g. 2*KD in attn_qkv) */
    int perm_block; /* XF_VHEAD_*: rows/columns per value head (d_v, or 1) */
};

struct model_desc {
    enum model_format format;
    int n_files;
    char *files[BT_MAX_FILES]; /* absolute paths */
    char *tokenizer_path;      /* file holding the tokenizer: the GGUF, or tokenizer.json */
    char *name;                /* general.name or the directory name */
    struct qwen35_hparams hp;
    int n_tensors;
    struct tensor_desc *tensors; /* trunk + global tensors only (MTP/vision skipped) */
    int n_skipped;               /* MTP / vision tensors recognised and left out */
    uint64_t total_bytes;        /* bytes of all described tensors */
};

/* path: a .gguf file, or an HF directory / .safetensors file / .safetensors.index.json.
 * BT_EFORMAT / BT_ESHAPE / BT_ENOKEY / BT_EUNSUPPORTED with a message naming the key or tensor
 * when the file is not a Qwen3.5 text model baton can run. */
int model_open(struct model_desc **out, const char *path, bt_err *e);
void model_close(struct model_desc *m); /* NULL ok */
const struct tensor_desc *model_find(const struct model_desc *m, const char *name);

/* Tensors and bytes needed by the stage running layers [lo, hi). */
struct layer_range {
    int lo, hi;
    int n;                              /* tensors */
    const struct tensor_desc **tensors; /* caller frees the array with free() */
    uint64_t bytes;                     /* sum of n_bytes */
};
int model_range(const struct model_desc *m, int lo, int hi, struct layer_range *out, bt_err *e);

/* Weights of one block in engine form: matrices in their stored dtype (F32/F16/BF16/quant);
 * vectors (norms, ssm_a, ssm_dt, conv taps) always F32 with transforms applied. */
struct layer_weights {
    enum layer_kind kind;
    struct mat attn_norm, post_norm;       /* [H] */
    struct mat ffn_gate, ffn_up, ffn_down; /* [I,H] [I,H] [H,I] (rows, cols) */
    /* full attention */
    struct mat wq;             /* [2*n_head*head_dim, H]: per head [query|gate] */
    struct mat wk, wv;         /* [n_head_kv*head_dim, H] */
    struct mat wo;             /* [H, n_head*head_dim] */
    struct mat q_norm, k_norm; /* [head_dim] */
    /* gated delta net (GGUF head order: value head j uses key head j % H_k) */
    struct mat wqkv;          /* [2*KD + VD, H] */
    struct mat wz;            /* [VD, H] */
    struct mat wbeta, walpha; /* [H_v, H] */
    struct mat conv;          /* [CD, conv_kernel] f32, oldest tap first */
    struct mat ssm_a, ssm_dt; /* [H_v] f32: -exp(A_log), dt_bias */
    struct mat ssm_norm;      /* [d_v] f32 */
    struct mat ssm_out;       /* [H, VD] */
};

struct weights_opts {
    int use_io_uring; /* 1 = io_uring (pread fallback if unavailable), 0 = pread */
    int direct;       /* try O_DIRECT */
    int queue_depth;  /* requests in flight; 0 = default */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
};

struct weights {
    const struct model_desc *m;
    int lo, hi;
    struct mat tok_embd;    /* [V, H]; data NULL unless lo == 0 (or tied and hi == n_layer) */
    struct mat output_norm; /* [H] f32; last stage only */
    struct mat output;      /* [V, H]; last stage only (== tok_embd when tied) */
    struct layer_weights layers[BT_MAX_LAYERS]; /* valid for [lo, hi) */
    uint64_t bytes_read;
};

int weights_load(struct weights **out, const struct model_desc *m, int lo, int hi,
                 const struct weights_opts *o, bt_err *e);
void weights_free(struct weights *w); /* NULL ok */

#endif
