/* client/cmd_mkmodel.c: `baton mkmodel` writes a random-weight Qwen3.5 GGUF of any real size
 * (spec qwen35.md §1.1, tensor shapes §10.1, metadata §11, tokenizer §13), streamed to disk
 * tensor by tensor so a 9B file never sits in memory.
 *
 * Weights follow the recipe of the shared fixtures (fixtures/README.md) so activations stay
 * sane: matrices N(0, 1/fan_in) (0.35^2/fan_in for attn_output, ssm_out, ffn_down), norms
 * 1 + N(0, 0.1) as stored, ssm_a = -exp(U(log 0.08, log 7.4)), dt_bias U(-1, 1), conv taps
 * N(0, 0.25), embeddings N(0, 1), LM head N(0, 16/H). Tied sizes (no output.weight) use the
 * embedding as LM head, so their embedding gets the LM head's std 4/sqrt(H) instead. Rows of
 * padding ids ([PAD<id>], type unused) are zero in both, so their logits are exactly 0.
 * Every row draws from its own xoshiro256** stream seeded from (seed, tensor, row), so the file
 * is identical for any thread count.
 *
 * Types: f32 f16 bf16 q8_0 q4_0 q6_k apply to every matrix; 1-D tensors and ssm_conv1d stay
 * F32. q4_k_m approximates llama-quantize's Q4_K_M: Q4_K for most matrices; Q6_K for
 * output.weight and for attn_v / ffn_down in the "more bits" layers (first and last eighth, and
 * every third layer between); Q5_K for the GDN attn_qkv. Rows that are not a multiple of 256
 * fall back to Q5_0 (for Q4_K/Q5_K) or Q8_0 (for Q6_K), as llama-quantize does.
 * Quantizers: ops->quantize_row[] (ops/quant.c). */
#include "client/cli_flags.h"
#include "client/commands.h"
#include "common/err.h"
#include "common/log.h"
#include "engine/dtype.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "ops/ops.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct cfg {
    const char *size;
    int layers, hidden, ffn, heads, kv_heads, head_dim;
    int lin_k_heads, lin_v_heads, lin_head_dim;
    int vocab, tied;
};

// clang-format off
static const struct cfg sizes[] = {
    /* size   L   H     I      nh nkv dh   Hk  Hv  dk   V       tied */
    {"tiny",  4,  256,  512,   4, 2,  64,  4,  8,  32,  4096,   0},
    {"0.8b",  24, 1024, 3584,  8, 2,  256, 16, 16, 128, 248320, 1},
    {"2b",    24, 2048, 6144,  8, 2,  256, 16, 16, 128, 248320, 1},
    {"4b",    32, 2560, 9216,  16, 4, 256, 16, 32, 128, 248320, 1},
    {"9b",    32, 4096, 12288, 16, 4, 256, 16, 32, 128, 248320, 0},
};
// clang-format on

#define REAL_VOCAB        248320
#define SPECIAL_BASE_REAL 248044 /* id of <|endoftext|> in the real vocabulary */

/* ---- PRNG: xoshiro256** seeded by splitmix64 ---- */

struct rng {
    uint64_t s[4];
};

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t x = seed ^ (a * 0xd1342543de82ef95ull) ^ (b * 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&x);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return out;
}

/* uniform in (0, 1) */
static float rng_unif(struct rng *r) {
    return ((float)(rng_next(r) >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

/* n standard normals (Box-Muller, two per draw) */
static void rng_normals(struct rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 2) {
        float u = rng_unif(r), v = rng_unif(r);
        float rad = sqrtf(-2.0f * logf(u)), th = 6.28318530718f * v;
        x[i] = rad * cosf(th);
        if (i + 1 < n) x[i + 1] = rad * sinf(th);
    }
}

/* ---- tensors ---- */

enum init { INIT_NORMAL, INIT_NORM1, INIT_SSM_A, INIT_UNIF1 };

struct tdesc {
    char name[64];
    int n_dims;
    int64_t ne[2];
    enum dtype dt;
    enum init init;
    float std; /* INIT_NORMAL: std; INIT_NORM1: std of the offset from 1 */
    /* token_embd / output: token type per row; rows of unused (padding) ids are zero, so
     * their logits are exactly 0, as in the fixtures */
    const int32_t *row_type;
};

struct plan {
    struct tdesc *t;
    int n, cap;
};

static int plan_add(struct plan *p, const char *name, int n_dims, int64_t ne0, int64_t ne1,
                    enum init init, float std) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        struct tdesc *t = realloc(p->t, (size_t)cap * sizeof *t);
        if (!t) return -ENOMEM;
        p->t = t;
        p->cap = cap;
    }
    struct tdesc *d = &p->t[p->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n_dims = n_dims;
    d->ne[0] = ne0;
    d->ne[1] = n_dims > 1 ? ne1 : 1;
    d->init = init;
    d->std = std;
    return 0;
}

static int more_bits(int i, int n) { /* llama-quantize's use_more_bits() */
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* Storage type of a matrix under the requested file type. */
static enum dtype pick_dtype(const char *type, const char *name, int layer, int n_layers,
                             int64_t ne0) {
    enum dtype dt;
    if (!strcmp(type, "q4_k_m")) {
        dt = DT_Q4_K;
        if (!strcmp(name, "output.weight"))
            dt = DT_Q6_K;
        else if ((strstr(name, "attn_v.weight") || strstr(name, "ffn_down.weight")) &&
                 more_bits(layer, n_layers))
            dt = DT_Q6_K;
        else if (strstr(name, "attn_qkv.weight"))
            dt = DT_Q5_K;
    } else {
        dt = (enum dtype)dtype_from_name(type);
    }
    if (dtype_traits[dt].block == 256 && ne0 % 256) dt = dt == DT_Q6_K ? DT_Q8_0 : DT_Q5_0;
    if (ne0 % dtype_traits[dt].block) dt = DT_F32;
    return dt;
}

/* Builds the tensor list of spec §10.1 (no MTP block). */
static int build_plan(struct plan *p, const struct cfg *c, const char *type) {
    const int64_t H = c->hidden, I = c->ffn, V = c->vocab, dh = c->head_dim;
    const int64_t KD = (int64_t)c->lin_k_heads * c->lin_head_dim;
    const int64_t VD = (int64_t)c->lin_v_heads * c->lin_head_dim, CD = 2 * KD + VD;
    const int64_t QG = 2LL * c->heads * dh, KVD = (int64_t)c->kv_heads * dh, OD = c->heads * dh;
    const float sH = 1.0f / sqrtf((float)H);
    char nm[64];
    int rc = plan_add(p, "token_embd.weight", 2, H, V, INIT_NORMAL, c->tied ? 4.0f * sH : 1.0f);
#define ADD(suffix, nd, a, b, init, std)                                                           \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                           \
        rc = rc ? rc : plan_add(p, nm, nd, a, b, init, std);                                       \
    } while (0)
    for (int l = 0; l < c->layers; l++) {
        int full = (l + 1) % 4 == 0;
        ADD("attn_norm.weight", 1, H, 1, INIT_NORM1, 0.1f);
        if (full) {
            ADD("attn_q.weight", 2, H, QG, INIT_NORMAL, sH);
            ADD("attn_k.weight", 2, H, KVD, INIT_NORMAL, sH);
            ADD("attn_v.weight", 2, H, KVD, INIT_NORMAL, sH);
            ADD("attn_output.weight", 2, OD, H, INIT_NORMAL, 0.35f / sqrtf((float)OD));
            ADD("attn_q_norm.weight", 1, dh, 1, INIT_NORM1, 0.1f);
            ADD("attn_k_norm.weight", 1, dh, 1, INIT_NORM1, 0.1f);
        } else {
            ADD("attn_qkv.weight", 2, H, CD, INIT_NORMAL, sH);
            ADD("attn_gate.weight", 2, H, VD, INIT_NORMAL, sH);
            ADD("ssm_beta.weight", 2, H, c->lin_v_heads, INIT_NORMAL, sH);
            ADD("ssm_alpha.weight", 2, H, c->lin_v_heads, INIT_NORMAL, sH);
            ADD("ssm_conv1d.weight", 2, 4, CD, INIT_NORMAL, 0.5f);
            ADD("ssm_dt.bias", 1, c->lin_v_heads, 1, INIT_UNIF1, 0);
            ADD("ssm_a", 1, c->lin_v_heads, 1, INIT_SSM_A, 0);
            ADD("ssm_norm.weight", 1, c->lin_head_dim, 1, INIT_NORM1, 0.1f);
            ADD("ssm_out.weight", 2, VD, H, INIT_NORMAL, 0.35f / sqrtf((float)VD));
        }
        ADD("post_attention_norm.weight", 1, H, 1, INIT_NORM1, 0.1f);
        ADD("ffn_gate.weight", 2, H, I, INIT_NORMAL, sH);
        ADD("ffn_up.weight", 2, H, I, INIT_NORMAL, sH);
        ADD("ffn_down.weight", 2, I, H, INIT_NORMAL, 0.35f / sqrtf((float)I));
    }
#undef ADD
    rc = rc ? rc : plan_add(p, "output_norm.weight", 1, H, 1, INIT_NORM1, 0.1f);
    if (!c->tied) rc = rc ? rc : plan_add(p, "output.weight", 2, H, V, INIT_NORMAL, 4.0f * sH);
    if (rc) return rc;
    for (int i = 0; i < p->n; i++) {
        struct tdesc *t = &p->t[i];
        int layer = -1;
        sscanf(t->name, "blk.%d.", &layer);
        t->dt = t->n_dims == 1 || strstr(t->name, "ssm_conv1d")
                    ? DT_F32
                    : pick_dtype(type, t->name, layer, c->layers, t->ne[0]);
    }
    return 0;
}

/* ---- tokenizer ---- */

static const char TRAIN_TEXT[] =
    "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst "
    "of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of "
    "belief, it was the epoch of incredulity, it was the season of light, it was the season of "
    "darkness. In the beginning there was nothing but the sea and the sky, and the people who "
    "lived on the shore told stories about the things they could not see. They said that the "
    "wind was the breath of the world and that the stars were the fires of those who had gone "
    "before them. When the children asked where the river went, their mothers answered that "
    "it went to the place where all rivers meet, and that one day they would see it for "
    "themselves. The model reads the text one token at a time and predicts the next token. "
    "A token is a piece of a word: common words are single tokens, while rare words are split "
    "into several pieces. The server runs the layers of the model on different machines, "
    "passing the hidden state from one to the next like a baton in a relay race. Each worker "
    "holds a contiguous range of layers, and the coordinator schedules requests, batches them "
    "together and streams the generated text back to the client. Weights are stored in a "
    "compact quantized format, so a large model fits in the memory of ordinary computers. "
    "What is the capital of France? The capital of France is Paris. How many days are there in "
    "a week? There are seven days in a week. Please write a short poem about the morning. "
    "The morning light is soft and warm, it wakes the birds before the storm. Thank you for "
    "your help, I think that this is working well and the results are very good. Hello, world! "
    "def main():\n    print(\"hello\")\n    return 0\n\nint main(void) { return 0; }\n";

/* GPT-2 byte-to-unicode: printable bytes map to themselves, the other 68 to U+0100.. */
static int byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

static int put_utf8(char *o, int cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

struct vocab {
    char **tok;
    int32_t *type;
    char **merges;
    int n_tok, n_merges;
    int eos, pad;
};

static void vocab_free(struct vocab *v) {
    if (v->tok)
        for (int i = 0; i < v->n_tok; i++)
            free(v->tok[i]);
    for (int i = 0; i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tok);
    free(v->type);
    free(v->merges);
}

/* BPE training on TRAIN_TEXT: words are runs of letters (with their leading space) or single
 * other bytes; each step merges the most frequent adjacent pair (first seen on ties), down to
 * pairs seen once, so every word of the text ends up a single token. */
static int train_merges(char ***out, int max_merges, int *n_out) {
    enum { MAXW = 2048, MAXS = 48 };
    static short sym[MAXW][MAXS]; /* symbol ids per word */
    static int len[MAXW];
    int nw = 0, n_sym = 256;
    char **strs = calloc((size_t)(256 + max_merges), sizeof *strs);
    char **merges = calloc((size_t)max_merges + 1, sizeof *merges);
    if (!strs || !merges) goto oom;
    for (int b = 0; b < 256; b++) {
        char s[4] = {0};
        put_utf8(s, byte_cp(b));
        if (!(strs[b] = strdup(s))) goto oom;
    }
    for (const unsigned char *p = (const unsigned char *)TRAIN_TEXT; *p && nw < MAXW;) {
        int n = 0;
        if (*p == ' ' && ((p[1] | 32) >= 'a' && (p[1] | 32) <= 'z')) sym[nw][n++] = *p++;
        if ((*p | 32) >= 'a' && (*p | 32) <= 'z')
            while (((*p | 32) >= 'a' && (*p | 32) <= 'z') && n < MAXS)
                sym[nw][n++] = *p++;
        else
            sym[nw][n++] = *p++;
        len[nw++] = n;
    }
    int nm = 0;
    while (nm < max_merges) {
        /* count pairs with a small open hash keyed by (a, b) */
        enum { HS = 1 << 14 };
        static int hk[HS], hc[HS], hfirst[HS];
        memset(hc, 0, sizeof hc);
        int best = -1, order = 0;
        for (int w = 0; w < nw; w++)
            for (int i = 0; i + 1 < len[w]; i++) {
                int key = sym[w][i] * 65536 + sym[w][i + 1];
                unsigned h = (unsigned)key * 2654435761u >> 18;
                while (hc[h] && hk[h] != key)
                    h = (h + 1) & (HS - 1);
                if (!hc[h]) hk[h] = key, hfirst[h] = order++;
                hc[h]++;
                if (best < 0 || hc[h] > hc[best] || (hc[h] == hc[best] && hfirst[h] < hfirst[best]))
                    best = (int)h;
            }
        if (best < 0) /* every word is one symbol: the text is fully merged */
            break;
        int a = hk[best] >> 16, b = hk[best] & 0xffff;
        size_t la = strlen(strs[a]), lb = strlen(strs[b]);
        char *m = malloc(la + lb + 2), *t = malloc(la + lb + 1);
        if (!m || !t) {
            free(m), free(t);
            goto oom;
        }
        sprintf(m, "%s %s", strs[a], strs[b]);
        sprintf(t, "%s%s", strs[a], strs[b]);
        merges[nm++] = m;
        strs[n_sym] = t;
        for (int w = 0; w < nw; w++) {
            int k = 0;
            for (int i = 0; i < len[w]; i++) {
                if (i + 1 < len[w] && sym[w][i] == a && sym[w][i + 1] == b)
                    sym[w][k++] = (short)n_sym, i++;
                else
                    sym[w][k++] = sym[w][i];
            }
            len[w] = k;
        }
        n_sym++;
    }
    for (int i = 0; i < n_sym; i++)
        free(strs[i]);
    free(strs);
    *out = merges;
    *n_out = nm;
    return 0;
oom:
    if (strs)
        for (int i = 0; i < 256 + max_merges; i++)
            free(strs[i]);
    if (merges)
        for (int i = 0; i < max_merges; i++)
            free(merges[i]);
    free(strs);
    free(merges);
    return -ENOMEM;
}

struct special {
    const char *text;
    int type; /* 3 control, 4 user-defined */
};
// clang-format off
static const struct special SPECIALS[] = {
    {"<|endoftext|>", 3}, {"<|im_start|>", 3}, {"<|im_end|>", 3},
    {"<|object_ref_start|>", 3}, {"<|object_ref_end|>", 3}, {"<|box_start|>", 3},
    {"<|box_end|>", 3}, {"<|quad_start|>", 3}, {"<|quad_end|>", 3},
    {"<|vision_start|>", 3}, {"<|vision_end|>", 3}, {"<|vision_pad|>", 3},
    {"<|image_pad|>", 3}, {"<|video_pad|>", 3}, {"<tool_call>", 4}, {"</tool_call>", 4},
    {"<|fim_prefix|>", 3}, {"<|fim_middle|>", 3}, {"<|fim_suffix|>", 3}, {"<|fim_pad|>", 3},
    {"<|repo_name|>", 3}, {"<|file_sep|>", 3}, {"<tool_response>", 4}, {"</tool_response>", 4},
    {"<think>", 4}, {"</think>", 4},
    {"<|audio_start|>", 3}, {"<|audio_end|>", 3}, {"<|audio_pad|>", 3}, {"<tts_pad>", 3},
    {"<tts_text_bos>", 3}, {"<tts_text_eod>", 3}, {"<tts_text_bos_single>", 3},
};
// clang-format on
#define N_SPECIALS ((int)(sizeof SPECIALS / sizeof *SPECIALS))

/* 256 byte tokens (GPT-2 order: printable bytes first), then one token per merge (unless the
 * merged text already exists), then the specials (at the real ids when the vocabulary has the
 * real size, else right after the merges), padded with [PAD<id>] (type unused). */
static int build_vocab(struct vocab *v, int n_vocab, bt_err *e) {
    memset(v, 0, sizeof *v);
    int max_merges = n_vocab - 256 - N_SPECIALS;
    if (max_merges < 0)
        return bt_fail(e, BT_EINVAL, "mkmodel: --vocab %d is below the minimum %d", n_vocab,
                       256 + N_SPECIALS);
    if (max_merges > 4000) max_merges = 4000;
    int rc = train_merges(&v->merges, max_merges, &v->n_merges);
    if (rc) return bt_fail(e, rc, "mkmodel: out of memory training merges");
    v->tok = calloc((size_t)n_vocab, sizeof *v->tok);
    v->type = calloc((size_t)n_vocab, sizeof *v->type);
    if (!v->tok || !v->type)
        return bt_fail(e, -ENOMEM, "mkmodel: out of memory for %d tokens", n_vocab);
    v->n_tok = n_vocab;
    int n = 0;
    /* printable bytes first (pass 0), then the rest, like the GPT-2/Qwen vocabularies */
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < 256; b++) {
            int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
            if (printable != !pass) continue;
            char s[4] = {0};
            put_utf8(s, byte_cp(b));
            v->tok[n] = strdup(s);
            v->type[n++] = 1;
        }
    for (int i = 0; i < v->n_merges; i++) {
        char *t = strdup(v->merges[i]), *sp = strchr(t ? t : "", ' ');
        if (!t) return bt_fail(e, -ENOMEM, "mkmodel: out of memory");
        memmove(sp, sp + 1, strlen(sp)); /* "a b" -> "ab" */
        int dup = 0;
        for (int j = 256; j < n && !dup; j++)
            dup = !strcmp(v->tok[j], t);
        if (dup) {
            free(t);
            continue;
        }
        v->tok[n] = t;
        v->type[n++] = 1;
    }
    int special_base = n_vocab == REAL_VOCAB ? SPECIAL_BASE_REAL : n;
    for (; n < special_base; n++) {
        char s[32];
        snprintf(s, sizeof s, "[PAD%d]", n);
        v->tok[n] = strdup(s);
        v->type[n] = 5;
    }
    for (int i = 0; i < N_SPECIALS; i++, n++) {
        v->tok[n] = strdup(SPECIALS[i].text);
        v->type[n] = SPECIALS[i].type;
    }
    v->pad = special_base;     /* <|endoftext|> */
    v->eos = special_base + 2; /* <|im_end|> */
    for (; n < n_vocab; n++) {
        char s[32];
        snprintf(s, sizeof s, "[PAD%d]", n);
        v->tok[n] = strdup(s);
        v->type[n] = 5;
    }
    for (int i = 0; i < n_vocab; i++)
        if (!v->tok[i]) return bt_fail(e, -ENOMEM, "mkmodel: out of memory");
    return 0;
}

/* ChatML with Qwen3.5's thinking prefix and XML tool calls (simplified from §14). */
static const char CHAT_TEMPLATE[] =
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls is defined and message.tool_calls %}"
    "{{- '<|im_start|>assistant\\n' + (message.content | default('', true) | trim) }}"
    "{%- for tc in message.tool_calls %}"
    "{{- '\\n<tool_call>\\n<function=' + tc.function.name + '>\\n' }}"
    "{%- for k, val in tc.function.arguments | items %}"
    "{{- '<parameter=' + k + '>\\n' + (val | string) + '\\n</parameter>\\n' }}"
    "{%- endfor %}"
    "{{- '</function>\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + "
    "'\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content | trim) + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}"
    "{{- '<think>\\n' }}"
    "{%- endif %}"
    "{%- endif %}";

/* ---- weight generation ---- */

struct job {
    const struct tdesc *t;
    int t_idx;
    uint64_t seed;
    int64_t row0, rows; /* rows of this chunk */
    uint8_t *out;       /* rows * row_bytes */
    size_t row_bytes;
    int ith, nth;
};

static void gen_row(const struct tdesc *t, int t_idx, uint64_t seed, int64_t row, float *x) {
    struct rng r;
    rng_seed(&r, seed, (uint64_t)t_idx + 1, (uint64_t)row);
    int64_t n = t->ne[0];
    if (t->row_type && t->row_type[row] == 5) {
        memset(x, 0, (size_t)n * sizeof *x);
        return;
    }
    switch (t->init) {
    case INIT_NORMAL:
        rng_normals(&r, x, n);
        for (int64_t i = 0; i < n; i++)
            x[i] *= t->std;
        break;
    case INIT_NORM1:
        rng_normals(&r, x, n);
        for (int64_t i = 0; i < n; i++)
            x[i] = 1.0f + t->std * x[i];
        break;
    case INIT_SSM_A: /* A = exp(A_log) log-uniform over [0.08, 7.4]; stored as -A */
        for (int64_t i = 0; i < n; i++)
            x[i] = -expf(logf(0.08f) + (logf(7.4f) - logf(0.08f)) * rng_unif(&r));
        break;
    case INIT_UNIF1:
        for (int64_t i = 0; i < n; i++)
            x[i] = 2.0f * rng_unif(&r) - 1.0f;
        break;
    }
}

static void *job_run(void *arg) {
    struct job *j = arg;
    float *x = malloc((size_t)j->t->ne[0] * sizeof *x + 64);
    if (!x) return (void *)1;
    for (int64_t r = j->ith; r < j->rows; r += j->nth) {
        gen_row(j->t, j->t_idx, j->seed, j->row0 + r, x);
        ops->quantize_row[j->t->dt](x, j->out + (size_t)r * j->row_bytes, j->t->ne[0]);
    }
    free(x);
    return NULL;
}

/* Generates tensor t chunk by chunk on nth threads and streams it to the writer. */
static int write_tensor(gguf_writer_t *w, const struct tdesc *t, int t_idx, uint64_t seed, int nth,
                        uint8_t *buf, size_t buf_bytes, bt_err *e) {
    size_t row_bytes = dtype_row_bytes(t->dt, t->ne[0]);
    int64_t chunk = (int64_t)(buf_bytes / row_bytes);
    if (chunk < 1)
        return bt_fail(e, BT_EINVAL, "tensor %s: row of %zu bytes exceeds the buffer", t->name,
                       row_bytes);
    for (int64_t r0 = 0; r0 < t->ne[1]; r0 += chunk) {
        int64_t rows = t->ne[1] - r0 < chunk ? t->ne[1] - r0 : chunk;
        pthread_t th[64];
        struct job jobs[64];
        int n = rows < nth ? (int)rows : nth, started = 0, failed = 0;
        for (int i = 0; i < n; i++) {
            jobs[i] = (struct job){t, t_idx, seed, r0, rows, buf, row_bytes, i, n};
            if (i > 0 && pthread_create(&th[i], NULL, job_run, &jobs[i]) == 0)
                started |= 1 << (i & 31);
            else if (i > 0)
                failed |= job_run(&jobs[i]) != NULL;
        }
        failed |= job_run(&jobs[0]) != NULL;
        for (int i = 1; i < n; i++)
            if (started & (1 << (i & 31))) {
                void *ret;
                pthread_join(th[i], &ret);
                failed |= ret != NULL;
            }
        if (failed) return bt_fail(e, -ENOMEM, "tensor %s: out of memory", t->name);
        int rc = gguf_writer_write(w, buf, (size_t)rows * row_bytes, e);
        if (rc) return rc;
    }
    return 0;
}

/* ---- command ---- */

static void usage(FILE *f) {
    fprintf(f, "usage: baton mkmodel --size tiny|0.8b|2b|4b|9b --type T -o FILE [options]\n"
               "  -s, --size S         base configuration (spec 1.1; tiny = 4 layers, hidden 256)\n"
               "  -t, --type T         f32 f16 bf16 q8_0 q4_0 q4_k_m q6_k (default q8_0)\n"
               "  -o, --output FILE    GGUF to write\n"
               "      --seed N         PRNG seed (default 1)\n"
               "      --threads N      generator threads (default 2)\n"
               "  overrides: --layers --hidden --ffn --heads --kv-heads --head-dim\n"
               "             --lin-k-heads --lin-v-heads --lin-head-dim --vocab --tied 0|1\n");
}

static const char *file_type_id(const char *type, uint32_t *ft) {
    // clang-format off
    static const struct { const char *n; uint32_t ft; } m[] = {
        {"f32", 0}, {"f16", 1}, {"q4_0", 2}, {"q8_0", 7}, {"q4_k_m", 15}, {"q6_k", 18},
        {"bf16", 32},
    };
    // clang-format on
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        if (!strcmp(m[i].n, type)) return *ft = m[i].ft, m[i].n;
    return NULL;
}

static int write_metadata(gguf_writer_t *w, const struct cfg *c, const char *type,
                          const struct vocab *v, bt_err *e) {
    char name[96];
    uint32_t ft = 0;
    file_type_id(type, &ft);
    snprintf(name, sizeof name, "baton-random-%s-%s", c->size, type);
    const int64_t n_rot = c->head_dim / 4; /* partial_rotary_factor 0.25 */
    /* M-RoPE sections in the 11:11:10 ratio of the real models, summing to n_rot/2 */
    int32_t sec[4];
    sec[0] = sec[1] = (int32_t)((n_rot / 2 * 11 + 16) / 32);
    sec[2] = (int32_t)(n_rot / 2) - 2 * sec[0];
    sec[3] = 0;
    uint8_t *rec = calloc((size_t)c->layers, 1);
    if (!rec) return bt_fail(e, -ENOMEM, "mkmodel: out of memory");
    for (int l = 0; l < c->layers; l++)
        rec[l] = (l + 1) % 4 != 0;
    int rc = 0;
#define P(call)                                                                                    \
    do {                                                                                           \
        if (!rc) rc = call;                                                                        \
    } while (0)
    P(gguf_writer_add_str(w, "general.architecture", "qwen35", e));
    P(gguf_writer_add_str(w, "general.type", "model", e));
    P(gguf_writer_add_str(w, "general.name", name, e));
    P(gguf_writer_add_str(w, "general.size_label", c->size, e));
    P(gguf_writer_add_u32(w, "general.file_type", ft, e));
    if (ft != 0 && ft != 1 && ft != 32)
        P(gguf_writer_add_u32(w, "general.quantization_version", 2, e));
    P(gguf_writer_add_u32(w, "qwen35.block_count", (uint32_t)c->layers, e));
    P(gguf_writer_add_u32(w, "qwen35.context_length", 262144, e));
    P(gguf_writer_add_u32(w, "qwen35.embedding_length", (uint32_t)c->hidden, e));
    P(gguf_writer_add_u32(w, "qwen35.feed_forward_length", (uint32_t)c->ffn, e));
    P(gguf_writer_add_u32(w, "qwen35.attention.head_count", (uint32_t)c->heads, e));
    P(gguf_writer_add_u32(w, "qwen35.attention.head_count_kv", (uint32_t)c->kv_heads, e));
    P(gguf_writer_add_u32(w, "qwen35.attention.key_length", (uint32_t)c->head_dim, e));
    P(gguf_writer_add_u32(w, "qwen35.attention.value_length", (uint32_t)c->head_dim, e));
    P(gguf_writer_add_f32(w, "qwen35.attention.layer_norm_rms_epsilon", 1e-6f, e));
    P(gguf_writer_add_arr(w, "qwen35.attention.recurrent_layers", GGUF_BOOL, rec,
                          (uint64_t)c->layers, e));
    P(gguf_writer_add_u32(w, "qwen35.full_attention_interval", 4, e));
    P(gguf_writer_add_u32(w, "qwen35.rope.dimension_count", (uint32_t)n_rot, e));
    P(gguf_writer_add_f32(w, "qwen35.rope.freq_base", 1e7f, e));
    P(gguf_writer_add_arr(w, "qwen35.rope.dimension_sections", GGUF_I32, sec, 4, e));
    P(gguf_writer_add_u32(w, "qwen35.ssm.conv_kernel", 4, e));
    P(gguf_writer_add_u32(w, "qwen35.ssm.state_size", (uint32_t)c->lin_head_dim, e));
    P(gguf_writer_add_u32(w, "qwen35.ssm.group_count", (uint32_t)c->lin_k_heads, e));
    P(gguf_writer_add_u32(w, "qwen35.ssm.time_step_rank", (uint32_t)c->lin_v_heads, e));
    P(gguf_writer_add_u32(w, "qwen35.ssm.inner_size", (uint32_t)(c->lin_v_heads * c->lin_head_dim),
                          e));
    P(gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2", e));
    P(gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen35", e));
    P(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok, NULL,
                              (uint64_t)v->n_tok, e));
    P(gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_I32, v->type, (uint64_t)v->n_tok,
                          e));
    P(gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, NULL,
                              (uint64_t)v->n_merges, e));
    P(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos, e));
    P(gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad, e));
    P(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->pad, e));
    P(gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 0, e));
    P(gguf_writer_add_str(w, "tokenizer.chat_template", CHAT_TEMPLATE, e));
#undef P
    free(rec);
    return rc;
}

int cmd_mkmodel(int argc, char **argv) {
    enum {
        O_SEED = 256,
        O_THREADS,
        O_LAYERS,
        O_HIDDEN,
        O_FFN,
        O_HEADS,
        O_KVH,
        O_HD,
        O_LKH,
        O_LVH,
        O_LHD,
        O_VOCAB,
        O_TIED
    };
    static const struct option opts[] = {
        {"size", required_argument, NULL, 's'},
        {"type", required_argument, NULL, 't'},
        {"output", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, O_SEED},
        {"threads", required_argument, NULL, O_THREADS},
        {"layers", required_argument, NULL, O_LAYERS},
        {"hidden", required_argument, NULL, O_HIDDEN},
        {"ffn", required_argument, NULL, O_FFN},
        {"heads", required_argument, NULL, O_HEADS},
        {"kv-heads", required_argument, NULL, O_KVH},
        {"head-dim", required_argument, NULL, O_HD},
        {"lin-k-heads", required_argument, NULL, O_LKH},
        {"lin-v-heads", required_argument, NULL, O_LVH},
        {"lin-head-dim", required_argument, NULL, O_LHD},
        {"vocab", required_argument, NULL, O_VOCAB},
        {"tied", required_argument, NULL, O_TIED},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *size = NULL, *type = "q8_0", *out = NULL;
    unsigned long long seed = 1;
    int threads = 2, ov[O_TIED - O_LAYERS + 1];
    for (int i = 0; i <= O_TIED - O_LAYERS; i++)
        ov[i] = -1;
    optind = 1;
    for (int o; (o = getopt_long(argc, argv, "s:t:o:h", opts, NULL)) != -1;) {
        switch (o) {
        case 's':
            size = optarg;
            break;
        case 't':
            type = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case O_SEED:
            seed = strtoull(optarg, NULL, 0);
            break;
        case O_THREADS:
            if (cli_parse_int("--threads", optarg, 1, 64, &threads, NULL)) {
                fprintf(stderr, "mkmodel: --threads %s: expected 1..64\n", optarg);
                return 2;
            }
            break;
        default:
            if (o >= O_LAYERS && o <= O_TIED) {
                if (cli_parse_int(opts[o - O_LAYERS + 5].name, optarg, o == O_TIED ? 0 : 1, 1 << 20,
                                  &ov[o - O_LAYERS], NULL)) {
                    fprintf(stderr, "mkmodel: --%s %s: bad value\n", opts[o - O_LAYERS + 5].name,
                            optarg);
                    return 2;
                }
                break;
            }
            usage(stderr);
            return 2;
        }
    }
    if (!size || !out) {
        usage(stderr);
        return 2;
    }
    struct cfg c;
    size_t si = 0;
    while (si < sizeof sizes / sizeof *sizes && strcasecmp(sizes[si].size, size))
        si++;
    if (si == sizeof sizes / sizeof *sizes) {
        fprintf(stderr, "mkmodel: unknown --size %s (tiny 0.8b 2b 4b 9b)\n", size);
        return 2;
    }
    c = sizes[si];
    int *fields[] = {&c.layers,       &c.hidden,   &c.ffn,         &c.heads,
                     &c.kv_heads,     &c.head_dim, &c.lin_k_heads, &c.lin_v_heads,
                     &c.lin_head_dim, &c.vocab,    &c.tied};
    for (int i = 0; i <= O_TIED - O_LAYERS; i++)
        if (ov[i] >= 0) *fields[i] = ov[i];
    uint32_t ft;
    if (!file_type_id(type, &ft)) {
        fprintf(stderr, "mkmodel: unknown --type %s (f32 f16 bf16 q8_0 q4_0 q4_k_m q6_k)\n", type);
        return 2;
    }
    if (c.heads % c.kv_heads || c.lin_v_heads % c.lin_k_heads || c.head_dim % 4) {
        fprintf(stderr, "mkmodel: heads must be a multiple of kv-heads, lin-v-heads of "
                        "lin-k-heads, head-dim of 4\n");
        return 2;
    }

    bt_err e = {0};
    int rc = ops_init(NULL, &e);
    struct plan plan = {0};
    struct vocab voc = {0};
    gguf_writer_t *w = NULL;
    FILE *f = NULL;
    char tmp[4096];
    uint8_t *buf = NULL;
    const size_t buf_bytes = 64u << 20;
    struct timespec ts0, ts1;
    clock_gettime(CLOCK_MONOTONIC, &ts0);
    if (rc) goto fail;
    if ((rc = build_plan(&plan, &c, type))) {
        bt_fail(&e, rc, "mkmodel: out of memory");
        goto fail;
    }
    for (int i = 0; i < plan.n; i++)
        if (!ops->quantize_row[plan.t[i].dt]) {
            rc = bt_fail(&e, BT_EUNSUPPORTED, "tensor %s: no quantizer for %s", plan.t[i].name,
                         dtype_name(plan.t[i].dt));
            goto fail;
        }
    if ((rc = build_vocab(&voc, c.vocab, &e))) goto fail;
    for (int i = 0; i < plan.n; i++)
        if (!strcmp(plan.t[i].name, "token_embd.weight") ||
            !strcmp(plan.t[i].name, "output.weight"))
            plan.t[i].row_type = voc.type;
    if ((rc = gguf_writer_new(&w, 32, &e)) || (rc = write_metadata(w, &c, type, &voc, &e)))
        goto fail;
    for (int i = 0; i < plan.n; i++) {
        int64_t r = gguf_writer_add_tensor(w, plan.t[i].name, plan.t[i].dt, plan.t[i].n_dims,
                                           plan.t[i].ne, &e);
        if (r < 0) {
            rc = (int)r;
            goto fail;
        }
    }
    if (!(buf = malloc(buf_bytes))) {
        rc = bt_fail(&e, -ENOMEM, "mkmodel: out of memory");
        goto fail;
    }
    /* written as OUT.part and renamed at the end: readers never see a half-written model */
    snprintf(tmp, sizeof tmp, "%s.part", out);
    if (!(f = fopen(tmp, "wb"))) {
        rc = bt_fail(&e, -errno, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    setvbuf(f, NULL, _IOFBF, 4u << 20);
    BT_LOG(INFO, "mkmodel",
           "size=%s type=%s layers=%d hidden=%d vocab=%d merges=%d tensors=%d bytes=%.2fGiB "
           "out=%s",
           c.size, type, c.layers, c.hidden, c.vocab, voc.n_merges, plan.n,
           (double)gguf_writer_file_size(w) / 1073741824.0, out);
    if ((rc = gguf_writer_begin(w, f, &e))) goto fail;
    for (int i = 0; i < plan.n; i++)
        if ((rc = write_tensor(w, &plan.t[i], i, seed, threads, buf, buf_bytes, &e))) goto fail;
    if ((rc = gguf_writer_finish(w, &e))) goto fail;
    if (fclose(f)) {
        f = NULL;
        rc = bt_fail(&e, -errno, "%s: close: %s", tmp, strerror(errno));
        remove(tmp);
        goto fail;
    }
    f = NULL;
    if (rename(tmp, out)) {
        rc = bt_fail(&e, -errno, "%s: rename to %s: %s", tmp, out, strerror(errno));
        remove(tmp);
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts1);
    BT_LOG(INFO, "mkmodel", "wrote %s bytes=%llu secs=%.1f", out,
           (unsigned long long)gguf_writer_file_size(w),
           (double)(ts1.tv_sec - ts0.tv_sec) + (double)(ts1.tv_nsec - ts0.tv_nsec) * 1e-9);
fail:
    if (f) {
        fclose(f);
        remove(tmp);
    }
    if (rc) fprintf(stderr, "%s\n", bt_errmsg(&e, rc));
    free(buf);
    gguf_writer_free(w);
    vocab_free(&voc);
    free(plan.t);
    return rc ? 1 : 0;
}
