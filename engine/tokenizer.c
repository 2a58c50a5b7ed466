/* engine/tokenizer.c: byte-level BPE. See tokenizer.h for the contract, spec qwen35.md §13.
 *
 * BPE runs on token ids, not strings: each byte of a pre-token starts as its single-byte token,
 * and the merge table maps a pair of ids to (rank, merged id). Token texts are turned into their
 * raw bytes once at load, so encode never touches the GPT-2 character mapping. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer.h"

#include "common/assert.h"
#include "common/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* The pre-tokenizer regexes exactly as llama.cpp writes them (the HF originals use
 * (?i:'s|...) which PCRE2 with UCP would also let match e.g. U+017F for 's'). */
static const char RE_QWEN35[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]"
    "+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* The same two as they appear in an HF tokenizer.json Split pre-tokenizer. */
static const char HF_QWEN35[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char HF_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Open addressing, power-of-two capacity, load <= 1/2. */
struct vmap {      /* token raw bytes -> id */
    int32_t *slot; /* id + 1, 0 = empty */
    size_t cap;
};
struct mmap {      /* (left id, right id) -> rank, merged id */
    uint64_t *key; /* UINT64_MAX = empty */
    uint32_t *rank;
    int32_t *merged;
    size_t cap;
};

struct tok {
    int32_t n_vocab, n_real;
    enum tok_pre pre;
    uint8_t *type;                   /* (n_vocab) enum tok_type */
    uint32_t *text_off, *text_len;   /* (n_vocab) stored text in pool */
    uint32_t *bytes_off, *bytes_len; /* (n_vocab) raw bytes in pool */
    char *pool;
    size_t pool_len, pool_cap;
    size_t max_bytes; /* longest token in raw bytes */
    struct vmap vocab;
    struct mmap merges;
    int32_t byte_id[256];
    int32_t *special; /* control + user-defined ids, longest text first */
    size_t n_special;
    int32_t eog[8];
    size_t n_eog;
    int32_t eos, bos, pad;
    int add_bos;
    char *chat_template;
    pcre2_code *re;
    int jit;
};

/* ---- GPT-2 byte <-> code point table (spec §13 step 4) ---- */

static int byte_is_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}
/* cp_to_byte[cp] for cp < 324, -1 if cp is not the image of a byte. */
static void byte_tables(int cp_to_byte[324]) {
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        if (byte_is_printable(b))
            cp_to_byte[b] = b;
        else
            cp_to_byte[next++] = b;
    }
}

/* Decodes one UTF-8 sequence at s (n bytes left). Returns its length (1..4) and the code
 * point, or 0 when the bytes are not valid UTF-8 (overlong, surrogate, > U+10FFFF), or -k when
 * s holds a valid but incomplete prefix of k bytes that ends the buffer. */
static int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) {
            /* A truncated prefix is only "incomplete" if what we saw so far could still be
             * valid: check the second byte's range for E0/ED/F0/F4 leads. */
            if (i >= 2) {
                uint32_t partial = v << (6 * (len - i));
                if (len == 3 && (partial < 0x800 || (partial >= 0xD800 && partial < 0xE000)))
                    return 0;
                if (len == 4 && (partial < 0x10000 || partial > 0x10FFFF)) return 0;
            }
            return -i;
        }
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) return 0;
    *cp = v;
    return len;
}

/* Byte-level text -> raw bytes, into out (needs len bytes: decoding never grows). Code points
 * outside the table, and invalid UTF-8, are kept as they are (llama.cpp does the same rather
 * than failing on odd vocabularies). Returns the number of bytes written. */
static size_t bytelevel_decode(const char *text, size_t len, char *out) {
    static int cp_to_byte[324];
    static int ready;
    if (!ready) { /* idempotent; a benign race writes identical values */
        byte_tables(cp_to_byte);
        ready = 1;
    }
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0, o = 0;
    while (i < len) {
        uint32_t cp;
        int k = utf8_decode(s + i, len - i, &cp);
        if (k <= 0) {
            out[o++] = (char)s[i++];
            continue;
        }
        if (cp < 324 && cp_to_byte[cp] >= 0)
            out[o++] = (char)cp_to_byte[cp];
        else
            memcpy(out + o, s + i, (size_t)k), o += (size_t)k;
        i += (size_t)k;
    }
    return o;
}

/* ---- pool and maps ---- */

static int pool_add(struct tok *t, const char *s, size_t n, uint32_t *off) {
    if (t->pool_len + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
        while (cap < t->pool_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX) return -ENOMEM;
        char *p = realloc(t->pool, cap);
        if (!p) return -ENOMEM;
        t->pool = p, t->pool_cap = cap;
    }
    *off = (uint32_t)t->pool_len;
    if (n) memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = 0;
    t->pool_len += n + 1;
    return 0;
}

static const char *tok_bytes(const struct tok *t, int32_t id, size_t *len) {
    *len = t->bytes_len[id];
    return t->pool + t->bytes_off[id];
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

static int vmap_init(struct vmap *m, size_t n) {
    m->cap = pow2_at_least(2 * n + 1);
    m->slot = calloc(m->cap, sizeof *m->slot);
    return m->slot ? 0 : -ENOMEM;
}

/* Returns the slot holding bytes s, or the empty slot where it would go. */
static size_t vmap_slot(const struct tok *t, const struct vmap *m, const char *s, size_t n) {
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t v = m->slot[i];
        if (!v) return i;
        size_t bl;
        const char *b = tok_bytes(t, v - 1, &bl);
        if (bl == n && !memcmp(b, s, n)) return i;
    }
}

static int32_t vmap_get(const struct tok *t, const char *s, size_t n) {
    int32_t v = t->vocab.slot[vmap_slot(t, &t->vocab, s, n)];
    return v - 1;
}

static int mmap_init(struct mmap *m, size_t n) {
    m->cap = pow2_at_least(2 * n + 1);
    m->key = malloc(m->cap * sizeof *m->key);
    m->rank = malloc(m->cap * sizeof *m->rank);
    m->merged = malloc(m->cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return -ENOMEM;
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
    return 0;
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static size_t mmap_slot(const struct mmap *m, uint64_t key) {
    size_t mask = m->cap - 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != key)
        i = (i + 1) & mask;
    return i;
}

/* ---- building ---- */

static int tok_alloc(struct tok **out, int32_t n_vocab, bt_err *e) {
    struct tok *t = calloc(1, sizeof *t);
    if (!t) return bt_fail(e, -ENOMEM, "tokenizer: out of memory");
    t->n_vocab = n_vocab;
    t->eos = t->bos = t->pad = -1;
    size_t n = (size_t)n_vocab;
    t->type = calloc(n ? n : 1, 1);
    t->text_off = calloc(n ? n : 1, sizeof(uint32_t));
    t->text_len = calloc(n ? n : 1, sizeof(uint32_t));
    t->bytes_off = calloc(n ? n : 1, sizeof(uint32_t));
    t->bytes_len = calloc(n ? n : 1, sizeof(uint32_t));
    *out = t;
    if (!t->type || !t->text_off || !t->text_len || !t->bytes_off || !t->bytes_len ||
        pool_add(t, "", 0, &t->text_off[0]) < 0)
        return bt_fail(e, -ENOMEM, "tokenizer: out of memory for %d tokens", n_vocab);
    /* Offset 0 is the shared empty string: ids nobody sets decode to nothing. */
    return 0;
}

static int set_token(struct tok *t, int32_t id, const char *text, size_t len, int type, bt_err *e) {
    if (len > UINT32_MAX / 2)
        return bt_fail(e, BT_EFORMAT, "tokenizer: token %d is %zu bytes long", id, len);
    t->type[id] = (uint8_t)type;
    if (pool_add(t, text, len, &t->text_off[id]) < 0)
        return bt_fail(e, -ENOMEM, "tokenizer: out of memory");
    t->text_len[id] = (uint32_t)len;
    if (type == TOK_CONTROL || type == TOK_USER_DEFINED || type == TOK_UNKNOWN) {
        t->bytes_off[id] = t->text_off[id]; /* added tokens are stored verbatim */
        t->bytes_len[id] = (uint32_t)len;
    } else if (type == TOK_UNUSED || type == TOK_UNDEFINED) {
        t->bytes_off[id] = 0, t->bytes_len[id] = 0;
    } else {
        /* pool may move in pool_add: decode into a scratch copy first */
        char stack[256];
        char *tmp = len <= sizeof stack ? stack : malloc(len);
        if (!tmp) return bt_fail(e, -ENOMEM, "tokenizer: out of memory");
        size_t bl = bytelevel_decode(t->pool + t->text_off[id], len, tmp);
        int rc = pool_add(t, tmp, bl, &t->bytes_off[id]);
        if (tmp != stack) free(tmp);
        if (rc < 0) return bt_fail(e, -ENOMEM, "tokenizer: out of memory");
        t->bytes_len[id] = (uint32_t)bl;
    }
    if (t->bytes_len[id] > t->max_bytes) t->max_bytes = t->bytes_len[id];
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const struct tok *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int32_t find_special_text(const struct tok *t, const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < t->n_special; i++) {
        int32_t id = t->special[i];
        if (t->text_len[id] == n && !memcmp(t->pool + t->text_off[id], s, n)) return id;
    }
    return -1;
}

static void eog_add(struct tok *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return;
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    if (t->n_eog < sizeof t->eog / sizeof *t->eog) t->eog[t->n_eog++] = id;
}

/* After tokens are set: vocab map, byte tokens, specials, n_real, regex. */
static int finish_vocab(struct tok *t, bt_err *e) {
    if (vmap_init(&t->vocab, (size_t)t->n_vocab) < 0)
        return bt_fail(e, -ENOMEM, "tokenizer: out of memory");
    size_t n_special = 0;
    t->n_real = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int ty = t->type[id];
        if (ty != TOK_UNUSED && ty != TOK_UNDEFINED) t->n_real = id + 1;
        if (ty == TOK_CONTROL || ty == TOK_USER_DEFINED || ty == TOK_UNKNOWN) {
            if (t->text_len[id]) n_special++;
            continue;
        }
        if (ty != TOK_NORMAL && ty != TOK_BYTE) continue;
        size_t bl;
        const char *b = tok_bytes(t, id, &bl);
        if (!bl) continue;
        size_t s = vmap_slot(t, &t->vocab, b, bl);
        if (!t->vocab.slot[s]) /* first id wins for duplicate byte strings */
            t->vocab.slot[s] = id + 1;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = vmap_get(t, &c, 1);
        if (t->byte_id[b] < 0)
            return bt_fail(e, BT_EFORMAT,
                           "tokenizer: no token for byte 0x%02x (not a byte-level "
                           "BPE vocabulary)",
                           b);
    }
    t->special = malloc((n_special ? n_special : 1) * sizeof *t->special);
    if (!t->special) return bt_fail(e, -ENOMEM, "tokenizer: out of memory");
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int ty = t->type[id];
        if ((ty == TOK_CONTROL || ty == TOK_USER_DEFINED || ty == TOK_UNKNOWN) && t->text_len[id])
            t->special[t->n_special++] = id;
    }
    qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);

    eog_add(t, t->eos);
    static const char *const eog_texts[] = {"<|im_end|>", "<|endoftext|>", "<|fim_pad|>",
                                            "<|repo_name|>", "<|file_sep|>"};
    for (size_t i = 0; i < sizeof eog_texts / sizeof *eog_texts; i++)
        eog_add(t, find_special_text(t, eog_texts[i]));

    int err;
    PCRE2_SIZE off;
    const char *re = t->pre == TOK_PRE_QWEN35 ? RE_QWEN35 : RE_QWEN2;
    /* MATCH_INVALID_UTF: arbitrary bytes are legal input; invalid sequences just never match. */
    t->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(err, msg, sizeof msg);
        return bt_fail(e, BT_EUNSUPPORTED, "tokenizer: pcre2 rejects the regex at %zu: %s",
                       (size_t)off, (const char *)msg);
    }
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

/* Adds merge "a b" given as two byte-level texts. Returns 1 if added, 0 if skipped. */
static int add_merge(struct tok *t, const char *a, size_t al, const char *b, size_t bl,
                     uint32_t rank, char **scratch, size_t *scap) {
    if (al + bl > *scap) {
        size_t cap = 2 * (al + bl) + 64;
        char *p = realloc(*scratch, cap);
        if (!p) return -ENOMEM;
        *scratch = p, *scap = cap;
    }
    char *buf = *scratch;
    size_t la = bytelevel_decode(a, al, buf);
    size_t lb = bytelevel_decode(b, bl, buf + la);
    int32_t ia = vmap_get(t, buf, la), ib = vmap_get(t, buf + la, lb);
    int32_t im = vmap_get(t, buf, la + lb);
    if (ia < 0 || ib < 0 || im < 0) return 0;
    size_t s = mmap_slot(&t->merges, pair_key(ia, ib));
    if (t->merges.key[s] != UINT64_MAX) return 0; /* duplicate: the lower rank (first seen) wins */
    t->merges.key[s] = pair_key(ia, ib);
    t->merges.rank[s] = rank;
    t->merges.merged[s] = im;
    return 1;
}

static int parse_pre(const char *pre, enum tok_pre *out, bt_err *e) {
    if (!strcmp(pre, "qwen35"))
        *out = TOK_PRE_QWEN35;
    else if (!strcmp(pre, "qwen2"))
        *out = TOK_PRE_QWEN2;
    else
        return bt_fail(e, BT_EUNSUPPORTED,
                       "tokenizer: tokenizer.ggml.pre '%s' (supported: qwen35, qwen2)", pre);
    return 0;
}

/* ---- GGUF ---- */

static int gguf_opt_id(const gguf_t *g, const char *key, int32_t n_vocab, int32_t *out, bt_err *e) {
    uint32_t v;
    int rc = gguf_get_u32(g, key, &v, e);
    if (rc == BT_ENOKEY) return 0;
    if (rc < 0) return rc;
    if (v >= (uint32_t)n_vocab)
        return bt_fail(e, BT_EFORMAT, "tokenizer: %s = %u >= vocab size %d", key, v, n_vocab);
    *out = (int32_t)v;
    return 0;
}

int tokenizer_open_gguf(tok_t **out, const gguf_t *g, bt_err *e) {
    *out = NULL;
    struct tok *t = NULL;
    char *scratch = NULL;
    size_t scap = 0, skipped = 0;
    const char *s;
    size_t sl;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &s, &sl, e);
    if (rc < 0) return rc;
    if (strcmp(s, "gpt2"))
        return bt_fail(e, BT_EUNSUPPORTED, "tokenizer: tokenizer.ggml.model '%s' (want gpt2)", s);
    enum tok_pre pre = TOK_PRE_QWEN35;
    rc = gguf_get_str(g, "tokenizer.ggml.pre", &s, &sl, e);
    if (rc < 0) return rc;
    if ((rc = parse_pre(s, &pre, e)) < 0) return rc;
    const struct gguf_arr *toks, *types = NULL, *merges;
    if ((rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, e)) < 0) return rc;
    if (toks->type != GGUF_STRING || toks->n == 0 || toks->n > INT32_MAX / 2)
        return bt_fail(e, BT_EFORMAT,
                       "tokenizer: tokenizer.ggml.tokens: not a non-empty "
                       "string array (type %d, n %llu)",
                       (int)toks->type, (unsigned long long)toks->n);
    rc = gguf_get_arr(g, "tokenizer.ggml.token_type", &types, e);
    if (rc == BT_ENOKEY)
        types = NULL;
    else if (rc < 0)
        return rc;
    if (types && types->n != toks->n)
        return bt_fail(e, BT_EFORMAT, "tokenizer: token_type has %llu entries, tokens %llu",
                       (unsigned long long)types->n, (unsigned long long)toks->n);
    if ((rc = gguf_get_arr(g, "tokenizer.ggml.merges", &merges, e)) < 0) return rc;
    if (merges->type != GGUF_STRING || merges->n > UINT32_MAX / 4)
        return bt_fail(e, BT_EFORMAT, "tokenizer: tokenizer.ggml.merges: not a string array");

    int32_t n_vocab = (int32_t)toks->n;
    if ((rc = tok_alloc(&t, n_vocab, e)) < 0) goto fail;
    t->pre = pre;
    for (int32_t id = 0; id < n_vocab; id++) {
        int64_t ty = TOK_NORMAL;
        if (types && (rc = gguf_arr_i64(types, (uint64_t)id, &ty)) < 0) {
            rc = bt_fail(e, BT_EFORMAT, "tokenizer: token_type[%d] is not an integer", id);
            goto fail;
        }
        if (ty < TOK_UNDEFINED || ty > TOK_BYTE) {
            rc = bt_fail(e, BT_EFORMAT, "tokenizer: token_type[%d] = %lld (want 0..6)", id,
                         (long long)ty);
            goto fail;
        }
        if ((rc = set_token(t, id, toks->str[id], toks->str_len[id], (int)ty, e)) < 0) goto fail;
    }
    if ((rc = gguf_opt_id(g, "tokenizer.ggml.eos_token_id", n_vocab, &t->eos, e)) < 0 ||
        (rc = gguf_opt_id(g, "tokenizer.ggml.bos_token_id", n_vocab, &t->bos, e)) < 0 ||
        (rc = gguf_opt_id(g, "tokenizer.ggml.padding_token_id", n_vocab, &t->pad, e)) < 0)
        goto fail;
    rc = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, e);
    if (rc < 0 && rc != BT_ENOKEY) goto fail;
    if (gguf_get_str(g, "tokenizer.chat_template", &s, &sl, NULL) == 0) {
        t->chat_template = strndup(s, sl);
        if (!t->chat_template) {
            rc = bt_fail(e, -ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
    }
    if ((rc = finish_vocab(t, e)) < 0) goto fail;
    if (mmap_init(&t->merges, merges->n) < 0) {
        rc = bt_fail(e, -ENOMEM, "tokenizer: out of memory for %llu merges",
                     (unsigned long long)merges->n);
        goto fail;
    }
    for (uint64_t i = 0; i < merges->n; i++) {
        const char *m = merges->str[i];
        size_t ml = merges->str_len[i];
        const char *sp = memchr(m, ' ', ml);
        /* byte-level texts never hold a literal space, so the first space separates the pair */
        if (!sp || sp == m || sp + 1 == m + ml) {
            rc = bt_fail(e, BT_EFORMAT, "tokenizer: merge %llu '%.*s' is not 'a b'",
                         (unsigned long long)i, (int)(ml > 64 ? 64 : ml), m);
            goto fail;
        }
        rc = add_merge(t, m, (size_t)(sp - m), sp + 1, (size_t)(m + ml - sp - 1), (uint32_t)i,
                       &scratch, &scap);
        if (rc < 0) {
            rc = bt_fail(e, -ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        skipped += rc == 0;
    }
    if (skipped)
        BT_LOG(WARN, "tokenizer", "merges_skipped=%zu (parts or result not in vocabulary)",
               skipped);
    free(scratch);
    BT_LOG(DEBUG, "tokenizer", "gguf vocab=%d real=%d merges=%llu specials=%zu jit=%d", n_vocab,
           t->n_real, (unsigned long long)merges->n, t->n_special, t->jit);
    *out = t;
    return 0;
fail:
    free(scratch);
    tokenizer_free(t);
    return rc;
}

/* ---- HF tokenizer.json ---- */

static int read_file(const char *path, char **buf, size_t *len, bt_err *e) {
    *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bt_fail(e, -errno, "tokenizer: open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size > (1ull << 31)) {
        close(fd);
        return bt_fail(e, BT_EFORMAT, "tokenizer: %s: not a regular file under 2 GiB", path);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *b = malloc(n + 1);
    if (!b) {
        close(fd);
        return bt_fail(e, -ENOMEM, "tokenizer: out of memory reading %s", path);
    }
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int err = r < 0 ? -errno : BT_EFORMAT;
            free(b);
            close(fd);
            return bt_fail(e, err, "tokenizer: read %s: short read", path);
        }
        got += (size_t)r;
    }
    close(fd);
    b[n] = 0;
    *buf = b, *len = n;
    return 0;
}

/* eos_token etc. in tokenizer_config.json: a string or {"content": string}. */
static const char *cfg_token_text(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int32_t hf_lookup(const struct tok *t, const char *text) {
    int32_t id = find_special_text(t, text);
    if (id >= 0) return id;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->text_len[i] == strlen(text) && !strcmp(t->pool + t->text_off[i], text)) return i;
    return -1;
}

/* Reads tokenizer_config.json next to the tokenizer.json, if any: special ids, add_bos,
 * chat template. Missing file is fine; a malformed one is an error. */
static int hf_config(struct tok *t, const char *json_path, bt_err *e) {
    char path[4096];
    const char *slash = strrchr(json_path, '/');
    int dl = slash ? (int)(slash - json_path + 1) : 0;
    if (snprintf(path, sizeof path, "%.*stokenizer_config.json", dl, json_path) >= (int)sizeof path)
        return 0;
    if (access(path, R_OK) != 0) return 0;
    char *buf;
    size_t len;
    int rc = read_file(path, &buf, &len, e);
    if (rc < 0) return rc;
    cJSON *cfg = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return bt_fail(e, BT_EFORMAT, "tokenizer: %s: not a JSON object", path);
    }
    const char *s;
    if ((s = cfg_token_text(cfg, "eos_token"))) t->eos = hf_lookup(t, s);
    if ((s = cfg_token_text(cfg, "bos_token"))) t->bos = hf_lookup(t, s);
    if ((s = cfg_token_text(cfg, "pad_token"))) t->pad = hf_lookup(t, s);
    t->add_bos = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token"));
    const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    rc = 0;
    if (cJSON_IsString(tmpl) && !(t->chat_template = strdup(tmpl->valuestring)))
        rc = bt_fail(e, -ENOMEM, "tokenizer: out of memory");
    cJSON_Delete(cfg);
    return rc;
}

static int hf_pre(const cJSON *root, enum tok_pre *pre, bt_err *e) {
    /* Find the Split regex anywhere in pre_tokenizer (directly or inside a Sequence). */
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    const cJSON *items[64];
    int n = 0;
    if (cJSON_IsArray(list)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, list) if (n < 64) items[n++] = it;
    } else if (p) {
        items[n++] = p;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(items[i], "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "Split")) continue;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(items[i], "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        if (!cJSON_IsString(re)) break;
        if (!strcmp(re->valuestring, HF_QWEN35)) {
            *pre = TOK_PRE_QWEN35;
            return 0;
        }
        if (!strcmp(re->valuestring, HF_QWEN2)) {
            *pre = TOK_PRE_QWEN2;
            return 0;
        }
        return bt_fail(e, BT_EUNSUPPORTED,
                       "tokenizer: pre-tokenizer regex is neither Qwen3.5's "
                       "nor Qwen2's: %.80s",
                       re->valuestring);
    }
    return bt_fail(e, BT_EUNSUPPORTED, "tokenizer: no Split pre-tokenizer regex found");
}

int tokenizer_open_json(tok_t **out, const char *path, bt_err *e) {
    *out = NULL;
    struct tok *t = NULL;
    char *buf = NULL, *scratch = NULL;
    size_t len, scap = 0, skipped = 0;
    cJSON *root = NULL;
    int rc = read_file(path, &buf, &len, e);
    if (rc < 0) return rc;
    root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        rc = bt_fail(e, BT_EFORMAT, "tokenizer: %s: no model.vocab object / model.merges array",
                     path);
        goto fail;
    }
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE")) {
        rc = bt_fail(e, BT_EUNSUPPORTED, "tokenizer: %s: model.type is not BPE", path);
        goto fail;
    }
    enum tok_pre pre = TOK_PRE_QWEN35;
    if ((rc = hf_pre(root, &pre, e)) < 0) goto fail;
    /* Vocabulary size = 1 + the largest id anyone names. */
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX / 4 ||
            it->valuedouble != (double)it->valueint) {
            rc = bt_fail(e, BT_EFORMAT,
                         "tokenizer: vocab entry '%.64s': id is not a small "
                         "non-negative integer",
                         it->string);
            goto fail;
        }
        if (it->valueint > max_id) max_id = it->valueint;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > INT32_MAX / 4 ||
            !cJSON_IsString(content)) {
            rc = bt_fail(e, BT_EFORMAT, "tokenizer: added_tokens entry without id/content");
            goto fail;
        }
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) {
        rc = bt_fail(e, BT_EFORMAT, "tokenizer: %s: empty vocabulary", path);
        goto fail;
    }
    if ((rc = tok_alloc(&t, (int32_t)(max_id + 1), e)) < 0) goto fail;
    t->pre = pre;
    cJSON_ArrayForEach(it, vocab) {
        if ((rc = set_token(t, it->valueint, it->string, strlen(it->string), TOK_NORMAL, e)) < 0)
            goto fail;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
        /* llama.cpp's converter also makes any <|...|> text a control token */
        const char *c = content->valuestring;
        size_t cl = strlen(c);
        int looks_ctl = cl >= 4 && !strncmp(c, "<|", 2) && !strcmp(c + cl - 2, "|>");
        int ty = special || looks_ctl ? TOK_CONTROL : TOK_USER_DEFINED;
        if ((rc = set_token(t, id->valueint, c, cl, ty, e)) < 0) goto fail;
    }
    if ((rc = hf_config(t, path, e)) < 0) goto fail;
    if ((rc = finish_vocab(t, e)) < 0) goto fail;
    if (mmap_init(&t->merges, (size_t)cJSON_GetArraySize(merges)) < 0) {
        rc = bt_fail(e, -ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    uint32_t rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(it)) {
            const char *m = it->valuestring, *sp = strchr(m, ' ');
            if (!sp || sp == m || !sp[1]) {
                rc = bt_fail(e, BT_EFORMAT, "tokenizer: merge %u '%.64s' is not 'a b'", rank, m);
                goto fail;
            }
            a = m, al = (size_t)(sp - m), b = sp + 1, bl = strlen(sp + 1);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring, al = strlen(a);
            b = cJSON_GetArrayItem(it, 1)->valuestring, bl = strlen(b);
        } else {
            rc = bt_fail(e, BT_EFORMAT, "tokenizer: merge %u is neither 'a b' nor [a, b]", rank);
            goto fail;
        }
        rc = add_merge(t, a, al, b, bl, rank++, &scratch, &scap);
        if (rc < 0) {
            rc = bt_fail(e, -ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        skipped += rc == 0;
    }
    if (skipped)
        BT_LOG(WARN, "tokenizer", "merges_skipped=%zu (parts or result not in vocabulary)",
               skipped);
    free(scratch);
    cJSON_Delete(root);
    *out = t;
    return 0;
fail:
    free(scratch);
    cJSON_Delete(root);
    tokenizer_free(t);
    return rc;
}

int tokenizer_open(tok_t **out, const char *path, bt_err *e) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) < 0) return bt_fail(e, -errno, "tokenizer: %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/tokenizer.json", path) >= (int)sizeof p)
            return bt_fail(e, BT_EINVAL, "tokenizer: path too long");
        return tokenizer_open_json(out, p, e);
    }
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json")) return tokenizer_open_json(out, path, e);
    gguf_t *g;
    int rc = gguf_open(&g, path, e);
    if (rc < 0) return rc;
    rc = tokenizer_open_gguf(out, g, e);
    gguf_free(g);
    return rc;
}

void tokenizer_free(tok_t *t) {
    if (!t) return;
    free(t->type);
    free(t->text_off);
    free(t->text_len);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->pool);
    free(t->vocab.slot);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.merged);
    free(t->special);
    free(t->chat_template);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

/* ---- encode ---- */

struct ids {
    int32_t *v;
    size_t n, cap;
};

static int ids_push(struct ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        int32_t *p = realloc(a->v, cap * sizeof *p);
        if (!p) return -ENOMEM;
        a->v = p, a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* Per-call scratch for BPE over one pre-token. */
struct bpe_work {
    int32_t *id, *prev, *next; /* (n) symbol list; id < 0 = merged away */
    struct cand {
        uint32_t rank;
        int32_t left, right, left_id, right_id;
    } * heap;
    size_t cap, heap_cap, heap_n;
};

static int work_reserve(struct bpe_work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t cap = n < 64 ? 64 : n * 2;
    int32_t *a = realloc(w->id, cap * sizeof *a);
    if (!a) return -ENOMEM;
    w->id = a;
    if (!(a = realloc(w->prev, cap * sizeof *a))) return -ENOMEM;
    w->prev = a;
    if (!(a = realloc(w->next, cap * sizeof *a))) return -ENOMEM;
    w->next = a;
    struct cand *h = realloc(w->heap, 3 * cap * sizeof *h);
    if (!h) return -ENOMEM;
    w->heap = h, w->heap_cap = 3 * cap, w->cap = cap;
    return 0;
}

/* Lower rank first; on ties the leftmost pair (spec §13 step 5). */
static int cand_less(const struct cand *a, const struct cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(struct bpe_work *w, struct cand c) {
    BT_ASSERT(w->heap_n < w->heap_cap);
    size_t i = w->heap_n++;
    /* heap_cap = 3 * n: n - 1 initial pairs plus at most 2 per merge (n - 1 merges) */
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static struct cand heap_pop(struct bpe_work *w) {
    struct cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct cand *best = &last;
        if (l < n && cand_less(&w->heap[l], best)) m = l, best = &w->heap[l];
        if (r < n && cand_less(&w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void try_pair(const struct tok *t, struct bpe_work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    uint64_t key = pair_key(w->id[left], w->id[right]);
    size_t s = mmap_slot(&t->merges, key);
    if (t->merges.key[s] == UINT64_MAX) return;
    struct cand c = {t->merges.rank[s], left, right, w->id[left], w->id[right]};
    heap_push(w, c);
}

static int bpe_piece(const tok_t *t, struct bpe_work *w, const uint8_t *s, size_t n,
                     struct ids *out) {
    if (n == 1) return ids_push(out, t->byte_id[s[0]]);
    /* A whole piece that is itself a token and needs no merging is common (words). It is not
     * a shortcut BPE may take in general, so only the full merge path below decides. */
    if (work_reserve(w, n) < 0) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        w->id[i] = t->byte_id[s[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        try_pair(t, w, (int32_t)i, (int32_t)i + 1);
    while (w->heap_n) {
        struct cand c = heap_pop(w);
        /* stale if either side changed since the candidate was pushed */
        if (w->id[c.left] != c.left_id || w->next[c.left] != c.right ||
            w->id[c.right] != c.right_id)
            continue;
        size_t s2 = mmap_slot(&t->merges, pair_key(c.left_id, c.right_id));
        w->id[c.left] = t->merges.merged[s2];
        int32_t nn = w->next[c.right];
        w->id[c.right] = -1;
        w->next[c.left] = nn;
        if (nn >= 0) w->prev[nn] = c.left;
        try_pair(t, w, w->prev[c.left], c.left);
        try_pair(t, w, c.left, nn);
    }
    for (int32_t i = 0; i >= 0; i = w->next[i])
        if (ids_push(out, w->id[i]) < 0) return -ENOMEM;
    return 0;
}

/* Pre-tokenizes and BPE-encodes one fragment without special tokens. */
static int encode_text(const tok_t *t, const char *text, size_t len, pcre2_match_data *md,
                       struct bpe_work *w, struct ids *out) {
    const uint8_t *s = (const uint8_t *)text;
    size_t pos = 0;
    while (pos < len) {
        int rc = t->jit ? pcre2_jit_match(t->re, s, len, pos, 0, md, NULL)
                        : pcre2_match(t->re, s, len, pos, 0, md, NULL);
        size_t ms = len, me = len;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0], me = ov[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            /* e.g. resource limits: fall back to byte pieces rather than dropping text */
            ms = me = len;
        }
        if (ms > pos) { /* text the regex skipped (only invalid UTF-8 in practice) */
            if (bpe_piece(t, w, s + pos, ms - pos, out) < 0) return -ENOMEM;
        }
        if (me > ms && bpe_piece(t, w, s + ms, me - ms, out) < 0) return -ENOMEM;
        /* no alternative matches empty, so me > pos; if that ever fails, stop rather than loop */
        pos = me > pos ? me : len;
    }
    return 0;
}

struct frag {
    size_t off, len;
    int32_t special; /* -1 for text */
};

int tokenizer_encode(const tok_t *t, const char *text, size_t len, int parse_special, int32_t **ids,
                     size_t *n, bt_err *e) {
    *ids = NULL, *n = 0;
    struct ids out = {0};
    struct bpe_work w = {0};
    struct frag *fr = NULL;
    size_t nfr = 1, fcap = 16;
    int rc = -ENOMEM;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    fr = malloc(fcap * sizeof *fr);
    if (!md || !fr) goto fail;
    fr[0] = (struct frag){0, len, -1};
    if (t->add_bos && t->bos >= 0 && ids_push(&out, t->bos) < 0) goto fail;
    /* Special tokens, longest first; each one splits every remaining text fragment at all of
     * its occurrences (llama.cpp's partition order, so overlaps resolve the same way). */
    for (size_t k = 0; k < t->n_special && len; k++) {
        int32_t sid = t->special[k];
        if (!parse_special && t->type[sid] != TOK_USER_DEFINED) continue;
        const char *st = t->pool + t->text_off[sid];
        size_t sl = t->text_len[sid];
        for (size_t i = 0; i < nfr; i++) {
            if (fr[i].special >= 0 || fr[i].len < sl) continue;
            const char *base = text + fr[i].off;
            const char *hit = memmem(base, fr[i].len, st, sl);
            if (!hit) continue;
            if (nfr + 2 > fcap) {
                fcap *= 2;
                struct frag *p = realloc(fr, fcap * sizeof *p);
                if (!p) goto fail;
                fr = p;
            }
            /* [left text][special][right text]: left may be empty (then dropped), right is
             * examined again by the next iteration of i. */
            size_t left = (size_t)(hit - base), off = fr[i].off, flen = fr[i].len;
            struct frag parts[3];
            int np = 0;
            if (left) parts[np++] = (struct frag){off, left, -1};
            parts[np++] = (struct frag){off + left, sl, sid};
            if (flen > left + sl)
                parts[np++] = (struct frag){off + left + sl, flen - left - sl, -1};
            memmove(&fr[i + (size_t)np], &fr[i + 1], (nfr - i - 1) * sizeof *fr);
            memcpy(&fr[i], parts, (size_t)np * sizeof *fr);
            nfr += (size_t)np - 1;
            i += left ? 1 : 0; /* now at the special; loop ++ moves to the right part */
        }
    }
    for (size_t i = 0; i < nfr; i++) {
        if (fr[i].special >= 0) {
            if (ids_push(&out, fr[i].special) < 0) goto fail;
        } else if (fr[i].len && encode_text(t, text + fr[i].off, fr[i].len, md, &w, &out) < 0) {
            goto fail;
        }
    }
    *ids = out.v, *n = out.n;
    out.v = NULL;
    rc = 0;
fail:
    if (rc < 0) bt_fail(e, rc, "tokenizer: out of memory encoding %zu bytes", len);
    free(out.v);
    free(w.id);
    free(w.prev);
    free(w.next);
    free(w.heap);
    free(fr);
    pcre2_match_data_free(md);
    return rc;
}

/* ---- decode and accessors ---- */

const char *tokenizer_token_bytes(const tok_t *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    return tok_bytes(t, id, len);
}

const char *tokenizer_token_text(const tok_t *t, int32_t id) {
    return id < 0 || id >= t->n_vocab ? NULL : t->pool + t->text_off[id];
}

enum tok_type tokenizer_token_type(const tok_t *t, int32_t id) {
    return id < 0 || id >= t->n_vocab ? TOK_UNDEFINED : (enum tok_type)t->type[id];
}

/* Bytes a decode emits for id: control/unknown tokens only when render_special. */
static const char *piece(const tok_t *t, int32_t id, int render_special, size_t *len) {
    int ty = t->type[id];
    if (!render_special && (ty == TOK_CONTROL || ty == TOK_UNKNOWN)) {
        *len = 0;
        return "";
    }
    return tok_bytes(t, id, len);
}

int tokenizer_decode(const tok_t *t, const int32_t *ids, size_t n, int render_special, char **out,
                     size_t *len, bt_err *e) {
    *out = NULL, *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return bt_fail(e, BT_EINVAL, "tokenizer: decode: id %d at %zu outside [0, %d)", ids[i],
                           i, t->n_vocab);
        size_t pl;
        piece(t, ids[i], render_special, &pl);
        total += pl;
    }
    char *b = malloc(total + 1);
    if (!b) return bt_fail(e, -ENOMEM, "tokenizer: out of memory decoding %zu ids", n);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = piece(t, ids[i], render_special, &pl);
        memcpy(b + o, p, pl);
        o += pl;
    }
    b[o] = 0;
    *out = b, *len = o;
    return 0;
}

int32_t tokenizer_n_vocab(const tok_t *t) {
    return t->n_vocab;
}
int32_t tokenizer_n_real(const tok_t *t) {
    return t->n_real;
}
int32_t tokenizer_eos(const tok_t *t) {
    return t->eos;
}
int32_t tokenizer_bos(const tok_t *t) {
    return t->bos;
}
int32_t tokenizer_pad(const tok_t *t) {
    return t->pad;
}
int tokenizer_add_bos(const tok_t *t) {
    return t->add_bos;
}
enum tok_pre tokenizer_pre(const tok_t *t) {
    return t->pre;
}
const int32_t *tokenizer_eog_ids(const tok_t *t, size_t *n) {
    *n = t->n_eog;
    return t->eog;
}
int tokenizer_is_eog(const tok_t *t, int32_t id) {
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}
int32_t tokenizer_find(const tok_t *t, const char *text) {
    int32_t id = find_special_text(t, text);
    if (id >= 0 || !*text) return id;
    return vmap_get(t, text, strlen(text));
}
const char *tokenizer_chat_template(const tok_t *t) {
    return t->chat_template;
}

/* ---- streaming decode ---- */

struct tok_stream {
    const tok_t *t;
    int render_special;
    uint8_t held[4]; /* incomplete UTF-8 tail */
    size_t n_held;
    char *buf; /* output: held + token bytes, worst case x3 for U+FFFD expansion */
    size_t cap;
};

int tok_stream_new(tok_stream_t **out, const tok_t *t, int render_special, bt_err *e) {
    *out = NULL;
    tok_stream_t *s = calloc(1, sizeof *s);
    if (!s) return bt_fail(e, -ENOMEM, "tok_stream: out of memory");
    s->t = t, s->render_special = render_special;
    s->cap = 3 * (t->max_bytes + 4) + 16;
    s->buf = malloc(s->cap);
    if (!s->buf) {
        free(s);
        return bt_fail(e, -ENOMEM, "tok_stream: out of memory");
    }
    *out = s;
    return 0;
}

void tok_stream_free(tok_stream_t *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

int tok_stream_push_bytes(tok_stream_t *s, const char *bytes, size_t n, const char **text,
                          size_t *len, bt_err *e) {
    size_t need = 3 * (s->n_held + n) + 16;
    if (need > s->cap) { /* only for push_bytes with long input; tokens fit the initial cap */
        char *p = realloc(s->buf, need);
        if (!p) return bt_fail(e, -ENOMEM, "tok_stream: out of memory");
        s->buf = p, s->cap = need;
    }
    /* Work on held + bytes without copying bytes twice: small tail first. */
    uint8_t tmp[8];
    size_t o = 0, i = 0, nh = s->n_held;
    size_t total = nh + n;
#define AT(k) ((k) < nh ? s->held[(k)] : (uint8_t)bytes[(k)-nh])
    while (i < total) {
        uint8_t c = AT(i);
        if (c < 0x80) {
            s->buf[o++] = (char)c, i++;
            continue;
        }
        size_t k = 0;
        for (; k < 4 && i + k < total; k++)
            tmp[k] = AT(i + k);
        uint32_t cp;
        int r = utf8_decode(tmp, k, &cp);
        if (r > 0) {
            memcpy(s->buf + o, tmp, (size_t)r);
            o += (size_t)r, i += (size_t)r;
        } else if (r < 0) { /* valid prefix up to the end: hold it */
            break;
        } else {
            memcpy(s->buf + o, REPLACEMENT, 3);
            o += 3, i++;
        }
    }
#undef AT
    size_t rest = total - i;
    uint8_t nh2[4];
    for (size_t k = 0; k < rest; k++)
        nh2[k] = k + i < nh ? s->held[k + i] : (uint8_t)bytes[k + i - nh];
    memcpy(s->held, nh2, rest);
    s->n_held = rest;
    *text = s->buf, *len = o;
    return 0;
}

int tok_stream_push(tok_stream_t *s, int32_t id, const char **text, size_t *len, bt_err *e) {
    if (id < 0 || id >= s->t->n_vocab)
        return bt_fail(e, BT_EINVAL, "tok_stream: id %d outside [0, %d)", id, s->t->n_vocab);
    size_t pl;
    const char *p = piece(s->t, id, s->render_special, &pl);
    return tok_stream_push_bytes(s, p, pl, text, len, e);
}

void tok_stream_flush(tok_stream_t *s, const char **text, size_t *len) {
    size_t o = 0;
    /* an incomplete sequence is one maximal invalid subpart: one U+FFFD */
    if (s->n_held) {
        memcpy(s->buf, REPLACEMENT, 3);
        o = 3;
    }
    s->n_held = 0;
    *text = s->buf, *len = o;
}
