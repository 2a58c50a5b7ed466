/* engine/gguf.c: see gguf.h. A single forward pass over the head bytes; everything the parsed
 * object keeps (names, strings, array elements) is copied into a chunked bump arena owned by the
 * gguf_t, so one free releases it and a 150k-token vocabulary costs a handful of mallocs.
 * Every count is bounded by the bytes that could hold it before anything is allocated, so a
 * hostile header can make us allocate at most a small multiple of the bytes we were given. */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAX_DEPTH     8 /* nesting of arrays inside a value; real files use 1 */
#define GGUF_DEFAULT_ALIGN 32
#define MIN_KV_BYTES       13 /* key length u64 + type u32 + a 1-byte value */
#define MIN_TENSOR_BYTES   32 /* name length u64 + n_dims u32 + one ne u64 + type u32 + offset u64 */
#define ARENA_CHUNK        (1024u * 1024u) /* largest arena chunk */

/* Size in bytes of a scalar value type; 0 for string/array/unknown. */
static const uint8_t type_size[GGUF_TYPE_COUNT] = {
    [GGUF_U8] = 1,  [GGUF_I8] = 1,   [GGUF_U16] = 2, [GGUF_I16] = 2, [GGUF_U32] = 4, [GGUF_I32] = 4,
    [GGUF_F32] = 4, [GGUF_BOOL] = 1, [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[]; /* aligned for any element type */
};

struct kv {
    const char *key;
    enum gguf_type type;
    uint8_t raw[8];  /* scalar value, little-endian as in the file */
    const char *str; /* GGUF_STRING: NUL-terminated copy */
    size_t str_len;
    struct gguf_arr arr; /* GGUF_ARRAY */
};

/* Open-addressing hash set of indices into an array of names (keys or tensor names). */
struct nameset {
    uint32_t cap;  /* power of two, > 2 x entries */
    int64_t *slot; /* index + 1; 0 = empty */
};

struct gguf {
    uint32_t version;
    uint64_t alignment, data_offset, file_size;
    int64_t n_kv, n_tensors;
    struct kv *kvs;
    struct gguf_tensor *tensors;
    struct nameset kv_set, tensor_set;
    struct chunk *arena;
    size_t chunk; /* arena chunk size, scaled to the input so small heads stay cheap */
};

/* ---- arena ---- */

static void *arena_alloc_aligned(gguf_t *g, size_t n, size_t align) {
    struct chunk *c = g->arena;
    size_t at = c ? (c->used + align - 1) & ~(align - 1) : 0;
    if (!c || at > c->cap || c->cap - at < n) {
        size_t cap = n > g->chunk ? n : g->chunk;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = g->arena;
        c->cap = cap;
        g->arena = c;
        at = 0;
    }
    c->used = at + n;
    return (char *)c->data + at;
}

static void *arena_alloc(gguf_t *g, size_t n) {
    return arena_alloc_aligned(g, n, 16);
}

/* ---- name hashing ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int nameset_init(struct nameset *ns, int64_t n) {
    uint32_t cap = 16;
    while ((int64_t)cap < 2 * n + 1)
        cap <<= 1;
    ns->cap = cap;
    ns->slot = calloc(cap, sizeof *ns->slot);
    return ns->slot ? 0 : -ENOMEM;
}

/* Finds name; names(i) gives the name of entry i. Returns the index or -1; when insert_idx >= 0
 * and the name is absent, inserts it. */
static int64_t nameset_find(const struct nameset *ns, const char *name, const void *base,
                            size_t stride, int64_t insert_idx) {
    if (!ns->slot) return -1;
    uint32_t mask = ns->cap - 1;
    for (uint32_t i = (uint32_t)hash_str(name) & mask;; i = (i + 1) & mask) {
        int64_t s = ns->slot[i];
        if (!s) {
            if (insert_idx >= 0) ns->slot[i] = insert_idx + 1;
            return -1;
        }
        const char *other = *(const char *const *)((const char *)base + (size_t)(s - 1) * stride);
        if (!strcmp(other, name)) return s - 1;
    }
}

/* ---- parser state ---- */

struct parser {
    gguf_t *g;
    const uint8_t *p;
    size_t len, pos;
    uint64_t file_size;
    size_t *need;
    bt_err *e;
    char ctx[112]; /* "key tokenizer.ggml.tokens", "tensor blk.0.attn_q.weight", "header" */
    /* string array being read, to extrapolate how much head is needed when it is cut */
    uint64_t sa_start, sa_i, sa_n;
};

/* Copies s into buf, replacing unprintable bytes and cutting long names, for messages. */
static void printable(char *buf, size_t n, const char *s) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[i] = 0;
    if (s[i] && n > 4) memcpy(buf + n - 4, "...", 4);
}

static void set_ctx(struct parser *ps, const char *kind, const char *name) {
    char nm[96];
    printable(nm, sizeof nm, name);
    snprintf(ps->ctx, sizeof ps->ctx, "%s %s", kind, nm);
}

__attribute__((format(printf, 3, 4))) static int pfail(struct parser *ps, int code, const char *fmt,
                                                       ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bt_fail(ps->e, code, "%s: %s", ps->ctx, msg);
}

/* The head ends before byte `end` that we need. If the file itself is that short it is
 * malformed; otherwise ask the caller for a longer head. */
static int truncated(struct parser *ps, uint64_t end) {
    if (end > ps->file_size || ps->len >= ps->file_size)
        return pfail(ps, BT_EFORMAT, "truncated: needs bytes up to %llu, file size %llu",
                     (unsigned long long)end, (unsigned long long)ps->file_size);
    if (ps->need) {
        uint64_t want = (uint64_t)ps->len * 4; /* each retry reparses: grow fast */
        if (want < end) want = end;
        if (ps->sa_i > 0 && ps->sa_n > ps->sa_i) {
            /* a cut vocabulary: ask for its rest at the average length so far, +25% */
            uint64_t avg = (ps->pos - ps->sa_start) / ps->sa_i + 1;
            uint64_t rest = ps->sa_n - ps->sa_i;
            if (rest < UINT64_MAX / (2 * avg) && want < ps->pos + rest * avg / 4 * 5 + 4096)
                want = ps->pos + rest * avg / 4 * 5 + 4096;
        }
        if (want < 4096) want = 4096;
        if (want > ps->file_size) want = ps->file_size;
        *ps->need = (size_t)want;
    }
    return bt_fail(ps->e, BT_EMSGSIZE, "%s: header continues past the %zu bytes read", ps->ctx,
                   ps->len);
}

/* 0 if n more bytes are available at pos, else the truncation error. */
static int avail(struct parser *ps, uint64_t n) {
    if (n <= ps->len - ps->pos) return 0;
    uint64_t end = (uint64_t)ps->pos + n;
    if (end < n) /* overflow: certainly beyond the file */
        end = UINT64_MAX;
    return truncated(ps, end);
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int rd_u32(struct parser *ps, uint32_t *v) {
    int rc = avail(ps, 4);
    if (rc) return rc;
    *v = (uint32_t)rd_le(ps->p + ps->pos, 4);
    ps->pos += 4;
    return 0;
}

static int rd_u64(struct parser *ps, uint64_t *v) {
    int rc = avail(ps, 8);
    if (rc) return rc;
    *v = rd_le(ps->p + ps->pos, 8);
    ps->pos += 8;
    return 0;
}

/* Checks that count items of at least min_bytes each can follow pos: BT_EFORMAT if not even
 * the file could hold them, a need-more if the head cannot. Called before allocating. */
static int bound_count(struct parser *ps, uint64_t count, uint64_t min_bytes, const char *what) {
    uint64_t file_rem = ps->file_size > ps->pos ? ps->file_size - ps->pos : 0;
    if (count > file_rem / min_bytes)
        return pfail(ps, BT_EFORMAT, "%s %llu exceeds what the remaining %llu bytes can hold", what,
                     (unsigned long long)count, (unsigned long long)file_rem);
    return avail(ps, count * min_bytes);
}

/* Reads a string into the arena (NUL-terminated). nul_ok = 0 rejects embedded NULs (names). */
static int rd_str(struct parser *ps, const char **out, size_t *out_len, int nul_ok,
                  const char *what) {
    uint64_t n;
    int rc = rd_u64(ps, &n);
    if (rc) return rc;
    uint64_t file_rem = ps->file_size > ps->pos ? ps->file_size - ps->pos : 0;
    if (n > file_rem)
        return pfail(ps, BT_EFORMAT, "%s length %llu exceeds the remaining %llu bytes", what,
                     (unsigned long long)n, (unsigned long long)file_rem);
    if ((rc = avail(ps, n))) return rc;
    const uint8_t *src = ps->p + ps->pos;
    if (!nul_ok && memchr(src, 0, (size_t)n))
        return pfail(ps, BT_EFORMAT, "%s contains a NUL byte", what);
    char *s = arena_alloc_aligned(ps->g, (size_t)n + 1, 1);
    if (!s) return bt_fail(ps->e, -ENOMEM, "%s: out of memory", ps->ctx);
    memcpy(s, src, (size_t)n);
    s[n] = 0;
    ps->pos += (size_t)n;
    *out = s;
    if (out_len) *out_len = (size_t)n;
    return 0;
}

static int rd_arr(struct parser *ps, struct gguf_arr *a, int depth) {
    if (depth > GGUF_MAX_DEPTH)
        return pfail(ps, BT_EFORMAT, "arrays nested deeper than %d", GGUF_MAX_DEPTH);
    uint32_t t;
    uint64_t n;
    int rc = rd_u32(ps, &t);
    if (rc) return rc;
    if (t >= GGUF_TYPE_COUNT) return pfail(ps, BT_EFORMAT, "unknown array element type %u", t);
    if ((rc = rd_u64(ps, &n))) return rc;
    memset(a, 0, sizeof *a);
    a->type = (enum gguf_type)t;
    a->n = n;
    if (type_size[t]) {
        if ((rc = bound_count(ps, n, type_size[t], "array count"))) return rc;
        size_t bytes = (size_t)n * type_size[t];
        void *d = arena_alloc(ps->g, bytes ? bytes : 1);
        if (!d) return bt_fail(ps->e, -ENOMEM, "%s: out of memory", ps->ctx);
        memcpy(d, ps->p + ps->pos, bytes);
        ps->pos += bytes;
        a->data = d;
        return 0;
    }
    if (t == GGUF_STRING) {
        if ((rc = bound_count(ps, n, 8, "string array count"))) return rc;
        const char **strs = arena_alloc(ps->g, (size_t)n * sizeof *strs + 1);
        size_t *lens = arena_alloc(ps->g, (size_t)n * sizeof *lens + 1);
        if (!strs || !lens) return bt_fail(ps->e, -ENOMEM, "%s: out of memory", ps->ctx);
        uint64_t start = ps->pos;
        for (uint64_t i = 0; i < n; i++) {
            ps->sa_start = start, ps->sa_i = i, ps->sa_n = n;
            if ((rc = rd_str(ps, &strs[i], &lens[i], 1, "string element"))) return rc;
        }
        ps->sa_i = ps->sa_n = 0;
        a->str = strs;
        a->str_len = lens;
        return 0;
    }
    /* nested arrays: each element is at least a u32 type and a u64 count */
    if ((rc = bound_count(ps, n, 12, "nested array count"))) return rc;
    struct gguf_arr *sub = arena_alloc(ps->g, (size_t)n * sizeof *sub + 1);
    if (!sub) return bt_fail(ps->e, -ENOMEM, "%s: out of memory", ps->ctx);
    for (uint64_t i = 0; i < n; i++)
        if ((rc = rd_arr(ps, &sub[i], depth + 1))) return rc;
    a->arr = sub;
    return 0;
}

static int rd_kv(struct parser *ps, struct kv *kv, int64_t idx) {
    snprintf(ps->ctx, sizeof ps->ctx, "kv %lld", (long long)idx);
    int rc = rd_str(ps, &kv->key, NULL, 0, "key");
    if (rc) return rc;
    set_ctx(ps, "key", kv->key);
    uint32_t t;
    if ((rc = rd_u32(ps, &t))) return rc;
    if (t >= GGUF_TYPE_COUNT) return pfail(ps, BT_EFORMAT, "unknown value type %u", t);
    kv->type = (enum gguf_type)t;
    if (type_size[t]) {
        if ((rc = avail(ps, type_size[t]))) return rc;
        memcpy(kv->raw, ps->p + ps->pos, type_size[t]);
        ps->pos += type_size[t];
        return 0;
    }
    if (t == GGUF_STRING) return rd_str(ps, &kv->str, &kv->str_len, 1, "string");
    return rd_arr(ps, &kv->arr, 1);
}

/* ---- scalar conversion ---- */

static int is_int_type(enum gguf_type t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 ||
           t == GGUF_I32 || t == GGUF_U64 || t == GGUF_I64 || t == GGUF_BOOL;
}

/* Integer value of a scalar: 0, BT_ETYPE if not an integer type, BT_EFORMAT if a u64 does not
 * fit in int64. */
static int scalar_i64(enum gguf_type t, const uint8_t *p, int64_t *out) {
    uint64_t u;
    switch (t) {
    case GGUF_U8:
    case GGUF_BOOL:
        *out = p[0];
        return 0;
    case GGUF_I8:
        *out = (int8_t)p[0];
        return 0;
    case GGUF_U16:
        *out = (uint16_t)rd_le(p, 2);
        return 0;
    case GGUF_I16:
        *out = (int16_t)(uint16_t)rd_le(p, 2);
        return 0;
    case GGUF_U32:
        *out = (uint32_t)rd_le(p, 4);
        return 0;
    case GGUF_I32:
        *out = (int32_t)(uint32_t)rd_le(p, 4);
        return 0;
    case GGUF_I64:
        *out = (int64_t)rd_le(p, 8);
        return 0;
    case GGUF_U64:
        u = rd_le(p, 8);
        if (u > (uint64_t)INT64_MAX) return BT_EFORMAT;
        *out = (int64_t)u;
        return 0;
    default:
        return BT_ETYPE;
    }
}

static int scalar_f64(enum gguf_type t, const uint8_t *p, double *out) {
    if (t == GGUF_F32) {
        uint32_t b = (uint32_t)rd_le(p, 4);
        float f;
        memcpy(&f, &b, 4);
        *out = (double)f;
        return 0;
    }
    if (t == GGUF_F64) {
        uint64_t b = rd_le(p, 8);
        memcpy(out, &b, 8);
        return 0;
    }
    if (t == GGUF_U64) {
        *out = (double)rd_le(p, 8);
        return 0;
    }
    int64_t i;
    int rc = scalar_i64(t, p, &i);
    if (rc) return rc;
    *out = (double)i;
    return 0;
}

/* ---- tensors ---- */

static int rd_tensor(struct parser *ps, struct gguf_tensor *t, int64_t idx) {
    snprintf(ps->ctx, sizeof ps->ctx, "tensor %lld", (long long)idx);
    int rc = rd_str(ps, &t->name, NULL, 0, "name");
    if (rc) return rc;
    set_ctx(ps, "tensor", t->name);
    uint32_t n_dims, type;
    if ((rc = rd_u32(ps, &n_dims))) return rc;
    if (n_dims < 1 || n_dims > 4) return pfail(ps, BT_EFORMAT, "n_dims=%u, expected 1..4", n_dims);
    t->n_dims = (int)n_dims;
    int64_t n_el = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if (d < (int)n_dims && (rc = rd_u64(ps, &ne))) return rc;
        if (ne > (uint64_t)INT64_MAX)
            return pfail(ps, BT_EFORMAT, "ne[%d]=%llu is too large", d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_el, t->ne[d], &n_el))
            return pfail(ps, BT_EFORMAT, "element count overflows at ne[%d]=%llu", d,
                         (unsigned long long)ne);
    }
    if ((rc = rd_u32(ps, &type))) return rc;
    if (!dtype_supported(type))
        return pfail(ps, BT_EUNSUPPORTED, "unsupported ggml type %u (%s)", type, dtype_name(type));
    t->dtype = (enum dtype)type;
    const struct dtype_traits *tr = &dtype_traits[type];
    if (t->ne[0] % tr->block)
        return pfail(ps, BT_EFORMAT, "ne[0]=%lld is not a multiple of the %s block of %d",
                     (long long)t->ne[0], tr->name, tr->block);
    uint64_t rows = (uint64_t)(n_el / (t->ne[0] ? t->ne[0] : 1)), bytes;
    if (t->ne[0] == 0) rows = 0;
    if (__builtin_mul_overflow((uint64_t)(t->ne[0] / tr->block), (uint64_t)tr->block_bytes,
                               &bytes) ||
        __builtin_mul_overflow(bytes, rows, &bytes))
        return pfail(ps, BT_EFORMAT, "byte size overflows");
    t->n_bytes = bytes;
    if ((rc = rd_u64(ps, &t->offset))) return rc;
    if (t->offset % ps->g->alignment)
        return pfail(ps, BT_EFORMAT, "offset %llu is not a multiple of the alignment %llu",
                     (unsigned long long)t->offset, (unsigned long long)ps->g->alignment);
    return 0;
}

static int check_alignment(struct parser *ps) {
    gguf_t *g = ps->g;
    g->alignment = GGUF_DEFAULT_ALIGN;
    int64_t i = gguf_find_kv(g, "general.alignment");
    if (i < 0) return 0;
    snprintf(ps->ctx, sizeof ps->ctx, "key general.alignment");
    const struct kv *kv = &g->kvs[i];
    int64_t v;
    if (!is_int_type(kv->type) || kv->type == GGUF_BOOL)
        return pfail(ps, BT_EFORMAT, "type %s, expected an unsigned integer", type_names[kv->type]);
    if (scalar_i64(kv->type, kv->raw, &v) || v <= 0 || (v & (v - 1)))
        return pfail(ps, BT_EFORMAT, "value %lld is not a nonzero power of two", (long long)v);
    g->alignment = (uint64_t)v;
    return 0;
}

int gguf_parse(gguf_t **out, const void *buf, size_t len, uint64_t file_size, size_t *need,
               bt_err *e) {
    *out = NULL;
    gguf_t *g = calloc(1, sizeof *g);
    if (!g) return bt_fail(e, -ENOMEM, "gguf: out of memory");
    struct parser ps = {.g = g,
                        .p = buf,
                        .len = len,
                        .file_size = file_size,
                        .need = need,
                        .e = e,
                        .ctx = "header"};
    if (len > file_size) /* our caller's mistake, but never read past the file */
        ps.len = len = (size_t)file_size;
    g->file_size = file_size;
    g->chunk = len / 4 < 4096 ? 4096 : len / 4 > ARENA_CHUNK ? ARENA_CHUNK : len / 4;
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    int rc = rd_u32(&ps, &magic);
    if (rc) goto fail;
    if (magic != 0x46554747u) { /* "GGUF" read little-endian */
        rc = pfail(&ps, BT_EFORMAT, "bad magic 0x%08x, expected \"GGUF\"", magic);
        goto fail;
    }
    if ((rc = rd_u32(&ps, &g->version))) goto fail;
    if (g->version != 2 && g->version != 3) {
        rc = pfail(&ps, BT_EVERSION, "version %u unsupported (expected 2 or 3)", g->version);
        goto fail;
    }
    if ((rc = rd_u64(&ps, &n_tensors)) || (rc = rd_u64(&ps, &n_kv))) goto fail;
    if ((rc = bound_count(&ps, n_kv, MIN_KV_BYTES, "kv count"))) goto fail;
    g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    if (!g->kvs || (rc = nameset_init(&g->kv_set, (int64_t)n_kv))) {
        rc = bt_fail(e, -ENOMEM, "gguf: out of memory for %llu keys", (unsigned long long)n_kv);
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((rc = rd_kv(&ps, &g->kvs[i], (int64_t)i))) goto fail;
        if (nameset_find(&g->kv_set, g->kvs[i].key, g->kvs, sizeof *g->kvs, (int64_t)i) >= 0) {
            rc = pfail(&ps, BT_EFORMAT, "duplicate key");
            goto fail;
        }
        g->n_kv++;
    }
    if ((rc = check_alignment(&ps))) goto fail;

    snprintf(ps.ctx, sizeof ps.ctx, "header");
    if ((rc = bound_count(&ps, n_tensors, MIN_TENSOR_BYTES, "tensor count"))) goto fail;
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors || (rc = nameset_init(&g->tensor_set, (int64_t)n_tensors))) {
        rc = bt_fail(e, -ENOMEM, "gguf: out of memory for %llu tensors",
                     (unsigned long long)n_tensors);
        goto fail;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        if ((rc = rd_tensor(&ps, t, (int64_t)i))) goto fail;
        if (nameset_find(&g->tensor_set, t->name, g->tensors, sizeof *t, (int64_t)i) >= 0) {
            rc = pfail(&ps, BT_EFORMAT, "duplicate tensor name");
            goto fail;
        }
        g->n_tensors++;
    }
    /* The data section starts at the next multiple of the alignment after the infos. */
    g->data_offset = ((uint64_t)ps.pos + g->alignment - 1) / g->alignment * g->alignment;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        uint64_t abs, end;
        set_ctx(&ps, "tensor", t->name);
        if (__builtin_add_overflow(g->data_offset, t->offset, &abs) ||
            __builtin_add_overflow(abs, t->n_bytes, &end) || end > file_size) {
            rc = pfail(&ps, BT_EFORMAT, "data ends at %llu beyond file size %llu",
                       (unsigned long long)(g->data_offset + t->offset + t->n_bytes),
                       (unsigned long long)file_size);
            goto fail;
        }
        t->offset = abs;
    }
    *out = g;
    return 0;
fail:
    gguf_free(g);
    return rc;
}

/* Reads [off, off+n) fully, retrying short reads. */
static int pread_full(int fd, void *buf, size_t n, uint64_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return -EIO; /* file shrank under us */
        done += (size_t)r;
    }
    return 0;
}

int gguf_open(gguf_t **out, const char *path, bt_err *e) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bt_fail(e, -errno, "%s: open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        close(fd);
        return bt_fail(e, rc, "%s: stat: %s", path, strerror(-rc));
    }
    uint64_t size = (uint64_t)st.st_size;
    /* 1 MiB holds the header of every model file except big vocabularies; grow as told. */
    size_t len = size < (1u << 20) ? (size_t)size : (1u << 20), have = 0;
    uint8_t *buf = NULL;
    int rc;
    bt_err pe = {0};
    for (;;) {
        uint8_t *nb = realloc(buf, len ? len : 1);
        if (!nb) {
            rc = bt_fail(e, -ENOMEM, "%s: out of memory reading %zu header bytes", path, len);
            break;
        }
        buf = nb;
        if ((rc = pread_full(fd, buf + have, len - have, have))) {
            bt_fail(e, rc, "%s: read: %s", path, strerror(-rc));
            break;
        }
        have = len;
        size_t need = 0;
        rc = gguf_parse(out, buf, len, size, &need, &pe);
        if (getenv("BT_GGUF_DEBUG"))
            fprintf(stderr, "gguf_open: parsed %zu bytes rc=%d need=%zu\n", len, rc, need);
        if (rc == BT_EMSGSIZE && need > len) {
            len = need;
            continue;
        }
        if (rc) bt_fail(e, rc, "%s: %s", path, pe.msg);
        break;
    }
    free(buf);
    close(fd);
    return rc;
}

void gguf_free(gguf_t *g) {
    if (!g) return;
    for (struct chunk *c = g->arena, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(g->kv_set.slot);
    free(g->tensor_set.slot);
    free(g->kvs);
    free(g->tensors);
    free(g);
}

uint32_t gguf_version(const gguf_t *g) {
    return g->version;
}
uint64_t gguf_alignment(const gguf_t *g) {
    return g->alignment;
}
uint64_t gguf_data_offset(const gguf_t *g) {
    return g->data_offset;
}
uint64_t gguf_file_size(const gguf_t *g) {
    return g->file_size;
}
int64_t gguf_n_tensors(const gguf_t *g) {
    return g->n_tensors;
}
const struct gguf_tensor *gguf_tensor(const gguf_t *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}
const struct gguf_tensor *gguf_find_tensor(const gguf_t *g, const char *name) {
    int64_t i = nameset_find(&g->tensor_set, name, g->tensors, sizeof *g->tensors, -1);
    return i >= 0 ? &g->tensors[i] : NULL;
}
int64_t gguf_n_kv(const gguf_t *g) {
    return g->n_kv;
}
const char *gguf_kv_key(const gguf_t *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL;
}
enum gguf_type gguf_kv_type(const gguf_t *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].type : GGUF_TYPE_COUNT;
}
int64_t gguf_find_kv(const gguf_t *g, const char *key) {
    return nameset_find(&g->kv_set, key, g->kvs, sizeof *g->kvs, -1);
}

const char *gguf_type_name(enum gguf_type t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? type_names[t] : "?";
}

static const struct kv *get_kv(const gguf_t *g, const char *key, bt_err *e) {
    int64_t i = gguf_find_kv(g, key);
    if (i < 0) {
        bt_fail(e, BT_ENOKEY, "key %s: absent", key);
        return NULL;
    }
    return &g->kvs[i];
}

int gguf_get_i64(const gguf_t *g, const char *key, int64_t *out, bt_err *e) {
    const struct kv *kv = get_kv(g, key, e);
    if (!kv) return BT_ENOKEY;
    int rc = scalar_i64(kv->type, kv->raw, out);
    if (rc == BT_ETYPE)
        return bt_fail(e, BT_ETYPE, "key %s: type %s, expected an integer", key,
                       type_names[kv->type]);
    if (rc) return bt_fail(e, BT_ETYPE, "key %s: value does not fit in int64", key);
    return 0;
}

int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out, bt_err *e) {
    int64_t v;
    int rc = gguf_get_i64(g, key, &v, e);
    if (rc) return rc;
    if (v < 0 || v > (int64_t)UINT32_MAX)
        return bt_fail(e, BT_ETYPE, "key %s: value %lld does not fit in u32", key, (long long)v);
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const gguf_t *g, const char *key, float *out, bt_err *e) {
    const struct kv *kv = get_kv(g, key, e);
    if (!kv) return BT_ENOKEY;
    double d;
    if (kv->type == GGUF_BOOL || scalar_f64(kv->type, kv->raw, &d))
        return bt_fail(e, BT_ETYPE, "key %s: type %s, expected a number", key,
                       type_names[kv->type]);
    *out = (float)d;
    return 0;
}

int gguf_get_bool(const gguf_t *g, const char *key, int *out, bt_err *e) {
    int64_t v;
    int rc = gguf_get_i64(g, key, &v, e);
    if (rc) return rc;
    *out = v != 0;
    return 0;
}

int gguf_get_str(const gguf_t *g, const char *key, const char **out, size_t *len, bt_err *e) {
    const struct kv *kv = get_kv(g, key, e);
    if (!kv) return BT_ENOKEY;
    if (kv->type != GGUF_STRING)
        return bt_fail(e, BT_ETYPE, "key %s: type %s, expected string", key, type_names[kv->type]);
    *out = kv->str;
    if (len) *len = kv->str_len;
    return 0;
}

int gguf_get_arr(const gguf_t *g, const char *key, const struct gguf_arr **out, bt_err *e) {
    const struct kv *kv = get_kv(g, key, e);
    if (!kv) return BT_ENOKEY;
    if (kv->type != GGUF_ARRAY)
        return bt_fail(e, BT_ETYPE, "key %s: type %s, expected array", key, type_names[kv->type]);
    *out = &kv->arr;
    return 0;
}

int gguf_arr_i64(const struct gguf_arr *a, uint64_t i, int64_t *out) {
    if (i >= a->n || !type_size[a->type]) return i >= a->n ? BT_EINVAL : BT_ETYPE;
    const uint8_t *p = (const uint8_t *)a->data + i * type_size[a->type];
    int rc = scalar_i64(a->type, p, out);
    return rc == BT_EFORMAT ? BT_ETYPE : rc;
}

int gguf_arr_f64(const struct gguf_arr *a, uint64_t i, double *out) {
    if (i >= a->n || !type_size[a->type]) return i >= a->n ? BT_EINVAL : BT_ETYPE;
    if (a->type == GGUF_BOOL) return BT_ETYPE;
    const uint8_t *p = (const uint8_t *)a->data + i * type_size[a->type];
    return scalar_f64(a->type, p, out);
}
