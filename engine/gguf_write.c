/* engine/gguf_write.c: see gguf_write.h. KVs are encoded into a growing byte buffer as they
 * are added (so begin() is one fwrite); tensor infos keep their shape until begin(). */
#include "engine/gguf_write.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct wtensor {
    char *name;
    enum dtype dt;
    int n_dims;
    int64_t ne[4];
    uint64_t offset, n_bytes; /* offset relative to the data section */
};

struct gguf_writer {
    uint64_t alignment;
    uint8_t *kv; /* encoded KV pairs */
    size_t kv_len, kv_cap;
    int64_t n_kv;
    char **keys; /* copies, for the duplicate check */
    struct wtensor *t;
    int64_t n_t, cap_t;
    uint64_t data_len; /* aligned size of the data section so far */
    /* streaming state */
    FILE *f;
    int64_t cur;       /* tensor receiving data */
    uint64_t cur_done; /* its bytes written so far */
};

static const uint8_t scalar_size[GGUF_TYPE_COUNT] = {
    [GGUF_U8] = 1,  [GGUF_I8] = 1,   [GGUF_U16] = 2, [GGUF_I16] = 2, [GGUF_U32] = 4, [GGUF_I32] = 4,
    [GGUF_F32] = 4, [GGUF_BOOL] = 1, [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

static uint64_t align_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

static int kv_reserve(gguf_writer_t *w, size_t n) {
    if (w->kv_cap - w->kv_len >= n) return 0;
    size_t cap = w->kv_cap ? w->kv_cap : 4096;
    while (cap - w->kv_len < n)
        cap *= 2;
    uint8_t *p = realloc(w->kv, cap);
    if (!p) return -ENOMEM;
    w->kv = p;
    w->kv_cap = cap;
    return 0;
}

static int put(gguf_writer_t *w, const void *p, size_t n) {
    if (!n) return 0; /* p may be NULL for an empty array */
    if (kv_reserve(w, n)) return -ENOMEM;
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return 0;
}

static int put_le(gguf_writer_t *w, uint64_t v, int n) {
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return put(w, b, (size_t)n);
}

static int put_str(gguf_writer_t *w, const char *s, size_t len) {
    return put_le(w, len, 8) || put(w, s, len) ? -ENOMEM : 0;
}

int gguf_writer_new(gguf_writer_t **out, uint64_t alignment, bt_err *e) {
    *out = NULL;
    if (!alignment) alignment = 32;
    if (alignment & (alignment - 1) || alignment > UINT32_MAX)
        return bt_fail(e, BT_EINVAL, "gguf writer: alignment %llu is not a power of two",
                       (unsigned long long)alignment);
    gguf_writer_t *w = calloc(1, sizeof *w);
    if (!w) return bt_fail(e, -ENOMEM, "gguf writer: out of memory");
    w->alignment = alignment;
    w->cur = -1;
    if (alignment != 32) {
        int rc = gguf_writer_add_u32(w, "general.alignment", (uint32_t)alignment, e);
        if (rc) {
            gguf_writer_free(w);
            return rc;
        }
    }
    *out = w;
    return 0;
}

void gguf_writer_free(gguf_writer_t *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (int64_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->keys);
    free(w->t);
    free(w->kv);
    free(w);
}

/* Writes the key and type of a new KV after checking the key is new. */
static int begin_kv(gguf_writer_t *w, const char *key, enum gguf_type t, bt_err *e) {
    if (w->f) return bt_fail(e, BT_EINVAL, "key %s: added after gguf_writer_begin", key);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return bt_fail(e, BT_EINVAL, "key %s: duplicate", key);
    char **keys = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *keys);
    if (!keys) return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    w->keys = keys;
    if (!(keys[w->n_kv] = strdup(key))) return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    w->n_kv++;
    if (put_str(w, key, strlen(key)) || put_le(w, (uint64_t)t, 4))
        return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    return 0;
}

static int add_scalar(gguf_writer_t *w, const char *key, enum gguf_type t, uint64_t bits,
                      bt_err *e) {
    int rc = begin_kv(w, key, t, e);
    if (rc) return rc;
    if (put_le(w, bits, scalar_size[t])) return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    return 0;
}

int gguf_writer_add_u8(gguf_writer_t *w, const char *key, uint8_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_U8, v, e);
}
int gguf_writer_add_i8(gguf_writer_t *w, const char *key, int8_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_I8, (uint8_t)v, e);
}
int gguf_writer_add_u16(gguf_writer_t *w, const char *key, uint16_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_U16, v, e);
}
int gguf_writer_add_i16(gguf_writer_t *w, const char *key, int16_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_I16, (uint16_t)v, e);
}
int gguf_writer_add_u32(gguf_writer_t *w, const char *key, uint32_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_U32, v, e);
}
int gguf_writer_add_i32(gguf_writer_t *w, const char *key, int32_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_I32, (uint32_t)v, e);
}
int gguf_writer_add_u64(gguf_writer_t *w, const char *key, uint64_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_U64, v, e);
}
int gguf_writer_add_i64(gguf_writer_t *w, const char *key, int64_t v, bt_err *e) {
    return add_scalar(w, key, GGUF_I64, (uint64_t)v, e);
}
int gguf_writer_add_f32(gguf_writer_t *w, const char *key, float v, bt_err *e) {
    uint32_t b;
    memcpy(&b, &v, 4);
    return add_scalar(w, key, GGUF_F32, b, e);
}
int gguf_writer_add_f64(gguf_writer_t *w, const char *key, double v, bt_err *e) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return add_scalar(w, key, GGUF_F64, b, e);
}
int gguf_writer_add_bool(gguf_writer_t *w, const char *key, int v, bt_err *e) {
    return add_scalar(w, key, GGUF_BOOL, v != 0, e);
}

int gguf_writer_add_strn(gguf_writer_t *w, const char *key, const char *s, size_t len, bt_err *e) {
    int rc = begin_kv(w, key, GGUF_STRING, e);
    if (rc) return rc;
    if (put_str(w, s, len)) return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    return 0;
}

int gguf_writer_add_str(gguf_writer_t *w, const char *key, const char *s, bt_err *e) {
    return gguf_writer_add_strn(w, key, s, strlen(s), e);
}

int gguf_writer_add_arr(gguf_writer_t *w, const char *key, enum gguf_type t, const void *data,
                        uint64_t n, bt_err *e) {
    if ((unsigned)t >= GGUF_TYPE_COUNT || !scalar_size[t])
        return bt_fail(e, BT_EINVAL, "key %s: array element type %d is not a scalar", key, t);
    int rc = begin_kv(w, key, GGUF_ARRAY, e);
    if (rc) return rc;
    /* The caller's elements are already little-endian (all our targets are). */
    if (put_le(w, (uint64_t)t, 4) || put_le(w, n, 8) || put(w, data, (size_t)n * scalar_size[t]))
        return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    return 0;
}

int gguf_writer_add_arr_str(gguf_writer_t *w, const char *key, const char *const *strs,
                            const size_t *lens, uint64_t n, bt_err *e) {
    int rc = begin_kv(w, key, GGUF_ARRAY, e);
    if (rc) return rc;
    if (put_le(w, GGUF_STRING, 4) || put_le(w, n, 8))
        return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    for (uint64_t i = 0; i < n; i++)
        if (put_str(w, strs[i], lens ? lens[i] : strlen(strs[i])))
            return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    return 0;
}

int gguf_writer_add_raw(gguf_writer_t *w, const char *key, enum gguf_type t, const void *bytes,
                        size_t len, bt_err *e) {
    if ((unsigned)t >= GGUF_TYPE_COUNT)
        return bt_fail(e, BT_EINVAL, "key %s: unknown value type %d", key, t);
    int rc = begin_kv(w, key, t, e);
    if (rc) return rc;
    if (put(w, bytes, len)) return bt_fail(e, -ENOMEM, "key %s: out of memory", key);
    return 0;
}

int64_t gguf_writer_add_tensor(gguf_writer_t *w, const char *name, enum dtype dt, int n_dims,
                               const int64_t *ne, bt_err *e) {
    if (w->f) return bt_fail(e, BT_EINVAL, "tensor %s: added after gguf_writer_begin", name);
    if (n_dims < 1 || n_dims > 4)
        return bt_fail(e, BT_EINVAL, "tensor %s: n_dims=%d, expected 1..4", name, n_dims);
    if (!dtype_supported((uint32_t)dt))
        return bt_fail(e, BT_EINVAL, "tensor %s: unsupported dtype %d", name, (int)dt);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return bt_fail(e, BT_EINVAL, "tensor %s: duplicate", name);
    struct wtensor t = {.dt = dt, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    int64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || (d > 0 && __builtin_mul_overflow(rows, ne[d], &rows)))
            return bt_fail(e, BT_EINVAL, "tensor %s: bad ne[%d]=%lld", name, d, (long long)ne[d]);
        t.ne[d] = ne[d];
    }
    size_t row = dtype_row_bytes(dt, ne[0]);
    if (!row && ne[0])
        return bt_fail(e, BT_EINVAL, "tensor %s: ne[0]=%lld is not a multiple of the %s block",
                       name, (long long)ne[0], dtype_name(dt));
    if (__builtin_mul_overflow((uint64_t)row, (uint64_t)rows, &t.n_bytes))
        return bt_fail(e, BT_EINVAL, "tensor %s: size overflows", name);
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        struct wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) return bt_fail(e, -ENOMEM, "tensor %s: out of memory", name);
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name))) return bt_fail(e, -ENOMEM, "tensor %s: out of memory", name);
    t.offset = w->data_len;
    w->data_len += align_up(t.n_bytes, w->alignment);
    w->t[w->n_t] = t;
    return w->n_t++;
}

uint64_t gguf_writer_tensor_bytes(const gguf_writer_t *w, int64_t i) {
    return i >= 0 && i < w->n_t ? w->t[i].n_bytes : 0;
}

static uint64_t head_bytes(const gguf_writer_t *w) {
    uint64_t n = 4 + 4 + 8 + 8 + w->kv_len;
    for (int64_t i = 0; i < w->n_t; i++)
        n += 8 + strlen(w->t[i].name) + 4 + 8 * (uint64_t)w->t[i].n_dims + 4 + 8;
    return align_up(n, w->alignment);
}

uint64_t gguf_writer_file_size(const gguf_writer_t *w) {
    return head_bytes(w) + w->data_len;
}

static int fput(gguf_writer_t *w, const void *p, size_t n, bt_err *e) {
    if (n && fwrite(p, 1, n, w->f) != n)
        return bt_fail(e, errno ? -errno : -EIO, "gguf writer: write failed: %s",
                       strerror(errno ? errno : EIO));
    return 0;
}

static int fput_le(gguf_writer_t *w, uint64_t v, int n, bt_err *e) {
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return fput(w, b, (size_t)n, e);
}

static int fpad(gguf_writer_t *w, uint64_t n, bt_err *e) {
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        int rc = fput(w, zeros, k, e);
        if (rc) return rc;
        n -= k;
    }
    return 0;
}

int gguf_writer_begin(gguf_writer_t *w, FILE *f, bt_err *e) {
    if (w->f) return bt_fail(e, BT_EINVAL, "gguf writer: begin called twice");
    w->f = f;
    uint64_t n = 4 + 4 + 8 + 8 + w->kv_len;
    int rc;
    if ((rc = fput(w, "GGUF", 4, e)) || (rc = fput_le(w, 3, 4, e)) ||
        (rc = fput_le(w, (uint64_t)w->n_t, 8, e)) || (rc = fput_le(w, (uint64_t)w->n_kv, 8, e)) ||
        (rc = fput(w, w->kv, w->kv_len, e)))
        return rc;
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        if ((rc = fput_le(w, nl, 8, e)) || (rc = fput(w, t->name, nl, e)) ||
            (rc = fput_le(w, (uint64_t)t->n_dims, 4, e)))
            return rc;
        for (int d = 0; d < t->n_dims; d++)
            if ((rc = fput_le(w, (uint64_t)t->ne[d], 8, e))) return rc;
        if ((rc = fput_le(w, (uint64_t)t->dt, 4, e)) || (rc = fput_le(w, t->offset, 8, e)))
            return rc;
        n += 8 + nl + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    w->cur = 0;
    w->cur_done = 0;
    return fpad(w, align_up(n, w->alignment) - n, e);
}

int gguf_writer_write(gguf_writer_t *w, const void *data, size_t n, bt_err *e) {
    const uint8_t *p = data;
    if (!w->f) return bt_fail(e, BT_EINVAL, "gguf writer: write before begin");
    while (n) {
        /* skip zero-byte tensors, padding each finished one */
        while (w->cur < w->n_t && w->cur_done == w->t[w->cur].n_bytes) {
            uint64_t sz = w->t[w->cur].n_bytes;
            int rc = fpad(w, align_up(sz, w->alignment) - sz, e);
            if (rc) return rc;
            w->cur++;
            w->cur_done = 0;
        }
        if (w->cur >= w->n_t)
            return bt_fail(e, BT_EINVAL, "gguf writer: %zu bytes beyond the last tensor", n);
        const struct wtensor *t = &w->t[w->cur];
        uint64_t room = t->n_bytes - w->cur_done;
        size_t k = n < room ? n : (size_t)room;
        int rc = fput(w, p, k, e);
        if (rc) return rc;
        w->cur_done += k;
        p += k;
        n -= k;
    }
    return 0;
}

int gguf_writer_finish(gguf_writer_t *w, bt_err *e) {
    if (!w->f) return bt_fail(e, BT_EINVAL, "gguf writer: finish before begin");
    while (w->cur < w->n_t && w->cur_done == w->t[w->cur].n_bytes) {
        uint64_t sz = w->t[w->cur].n_bytes;
        int rc = fpad(w, align_up(sz, w->alignment) - sz, e);
        if (rc) return rc;
        w->cur++;
        w->cur_done = 0;
    }
    if (w->cur < w->n_t)
        return bt_fail(e, BT_EINVAL, "tensor %s: %llu of %llu data bytes written",
                       w->t[w->cur].name, (unsigned long long)w->cur_done,
                       (unsigned long long)w->t[w->cur].n_bytes);
    if (fflush(w->f)) return bt_fail(e, -errno, "gguf writer: flush failed: %s", strerror(errno));
    return 0;
}

int gguf_writer_to_mem(gguf_writer_t *w, const void *const *data, void **out, size_t *len,
                       bt_err *e) {
    char *buf = NULL;
    size_t sz = 0;
    *out = NULL;
    FILE *f = open_memstream(&buf, &sz);
    if (!f) return bt_fail(e, -errno, "gguf writer: open_memstream: %s", strerror(errno));
    int rc = gguf_writer_begin(w, f, e);
    for (int64_t i = 0; !rc && i < w->n_t; i++) {
        uint64_t nb = w->t[i].n_bytes;
        if (data && data[i]) {
            rc = gguf_writer_write(w, data[i], (size_t)nb, e);
            continue;
        }
        static const uint8_t zeros[4096];
        while (!rc && nb) {
            size_t k = nb < sizeof zeros ? (size_t)nb : sizeof zeros;
            rc = gguf_writer_write(w, zeros, k, e);
            nb -= k;
        }
    }
    if (!rc) rc = gguf_writer_finish(w, e);
    w->f = NULL;
    if (fclose(f) && !rc) rc = bt_fail(e, -ENOMEM, "gguf writer: memstream failed");
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = sz;
    return 0;
}
