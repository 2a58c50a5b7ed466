/* engine/xform.c: see xform.h. */
#include "engine/xform.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Local converters: the format's definitions, exact for every input (f16 subnormals, inf and
 * NaN included). bf16 is the top half of an f32. */
static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t ex = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (ex == 0 && man == 0) {
        bits = sign;
    } else if (ex == 0) {
        /* Subnormal: man * 2^-24. Shift the leading 1 up to bit 10 to make it normal. */
        uint32_t k = 0;
        while (!(man & 0x400u)) {
            man <<= 1;
            k++;
        }
        bits = sign | (113u - k) << 23 | (man & 0x3ffu) << 13;
    } else if (ex == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (ex + 112u) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float load_f(enum dtype dt, const unsigned char *p, int64_t i) {
    uint16_t h;
    float f;
    switch (dt) {
    case DT_F16:
        memcpy(&h, p + 2 * i, 2);
        return f16_to_f32(h);
    case DT_BF16:
        memcpy(&h, p + 2 * i, 2);
        return bf16_to_f32(h);
    default: /* DT_F32: callers allow only these three */
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
}

static int is_conv(const struct tensor_desc *t) {
    size_t n = strlen(t->name);
    static const char suf[] = ".ssm_conv1d.weight";
    return n >= sizeof suf - 1 && !strcmp(t->name + n - (sizeof suf - 1), suf);
}

int xform_is_vector(const struct tensor_desc *t) {
    return t->n_dims == 1 || is_conv(t);
}

enum dtype xform_out_dtype(const struct tensor_desc *t) {
    return xform_is_vector(t) ? DT_F32 : t->dtype;
}

static int is_float(enum dtype dt) {
    return dt == DT_F32 || dt == DT_F16 || dt == DT_BF16;
}

/* Elements, or -1 if the shape is invalid or its size overflows. */
static int64_t numel_of(const struct tensor_desc *t) {
    if (t->n_dims < 1 || t->n_dims > 4) return -1;
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (t->ne[d] <= 0 || n > INT64_MAX / 4 / t->ne[d]) return -1;
        n *= t->ne[d];
    }
    return n;
}

size_t xform_out_bytes(const struct model_desc *m, const struct tensor_desc *t) {
    (void)m;
    int64_t n = numel_of(t);
    if (n < 0 || (unsigned)t->dtype >= DT_COUNT || !dtype_traits[t->dtype].block) return 0;
    if (xform_out_dtype(t) == DT_F32 && t->dtype != DT_F32) return (size_t)n * 4;
    return (size_t)(dtype_row_bytes(t->dtype, t->ne[0]) * (size_t)(n / t->ne[0]));
}

struct perm {
    int64_t first, span, d, hk, r; /* span = H_v * d; span 0 = identity */
};

/* Source index (HF order) of engine-form index i (GGUF order). */
static int64_t perm_src(const struct perm *p, int64_t i) {
    if (i < p->first || i >= p->first + p->span) return i;
    int64_t j = i - p->first, head = j / p->d, el = j % p->d;
    int64_t m = head / p->hk, g = head % p->hk;
    return p->first + (g * p->r + m) * p->d + el;
}

int xform_apply(const struct model_desc *m, const struct tensor_desc *t, const void *stored,
                void *out, bt_err *e) {
    const unsigned char *src = stored;
    unsigned char *dst = out;
    int64_t numel = numel_of(t);
    enum dtype sd = t->dtype;
    if (numel < 0)
        return bt_fail(e, BT_ESHAPE, "xform: tensor %s: invalid shape (n_dims=%d)", t->name,
                       t->n_dims);
    if ((unsigned)sd >= DT_COUNT || !dtype_supported(sd))
        return bt_fail(e, BT_EUNSUPPORTED, "xform: tensor %s: dtype %s", t->name, dtype_name(sd));
    uint64_t want = dtype_row_bytes(sd, t->ne[0]) * (uint64_t)(numel / t->ne[0]);
    if (!want || want != t->n_bytes)
        return bt_fail(e, BT_ESHAPE, "xform: tensor %s: %llu bytes stored, shape needs %llu",
                       t->name, (unsigned long long)t->n_bytes, (unsigned long long)want);
    enum dtype od = xform_out_dtype(t);
    unsigned vops = t->xform & (XF_ADD_ONE | XF_NEG_EXP);
    int convert = od != sd || vops;
    if (convert && (!is_float(sd) || od != DT_F32))
        return bt_fail(e, BT_EUNSUPPORTED,
                       "xform: tensor %s: value transform/conversion of a %s %s", t->name,
                       dtype_name(sd), xform_is_vector(t) ? "vector" : "matrix");
    unsigned pbits = t->xform & (XF_VHEAD_ROWS | XF_VHEAD_COLS);
    if (pbits == (XF_VHEAD_ROWS | XF_VHEAD_COLS))
        return bt_fail(e, BT_EINVAL, "xform: tensor %s: both row and column permutation", t->name);
    if ((pbits & XF_VHEAD_COLS) && !is_float(sd))
        return bt_fail(e, BT_EUNSUPPORTED, "xform: tensor %s: column permutation of %s", t->name,
                       dtype_name(sd));

    /* Units: a vector is rows of one element; otherwise rows of ne[0] elements. */
    int64_t cols = t->n_dims == 1 ? 1 : t->ne[0];
    int64_t rows = numel / cols;
    size_t in_row = t->n_dims == 1 ? dtype_traits[sd].block_bytes : dtype_row_bytes(sd, cols);
    size_t out_row = convert ? (size_t)cols * 4 : in_row;

    struct perm p = {0, 0, 1, 1, 1};
    if (pbits) {
        int hk = m->hp.ssm_n_group, hv = m->hp.ssm_dt_rank;
        int64_t extent = pbits == XF_VHEAD_ROWS ? rows : cols;
        if (hk <= 0 || hv <= 0 || hv % hk || t->perm_block <= 0 || t->perm_first < 0 ||
            t->perm_first + (int64_t)hv * t->perm_block > extent)
            return bt_fail(e, BT_ESHAPE,
                           "xform: tensor %s: value-head permutation first=%d block=%d H_v=%d "
                           "H_k=%d does not fit %lld %s",
                           t->name, t->perm_first, t->perm_block, hv, hk, (long long)extent,
                           pbits == XF_VHEAD_ROWS ? "rows" : "columns");
        p = (struct perm){t->perm_first, (int64_t)hv * t->perm_block, t->perm_block, hk, hv / hk};
    }

    for (int64_t o = 0; o < rows; o++) {
        int64_t s = pbits == XF_VHEAD_ROWS ? perm_src(&p, o) : o;
        const unsigned char *ir = src + (size_t)s * in_row;
        unsigned char *orow = dst + (size_t)o * out_row;
        if (!convert && pbits != XF_VHEAD_COLS) {
            memcpy(orow, ir, in_row);
            continue;
        }
        for (int64_t c = 0; c < cols; c++) {
            int64_t sc = pbits == XF_VHEAD_COLS ? perm_src(&p, c) : c;
            if (!convert) {
                size_t es = dtype_traits[sd].block_bytes;
                memcpy(orow + (size_t)c * es, ir + (size_t)sc * es, es);
                continue;
            }
            float v = load_f(sd, ir, sc);
            /* f32 arithmetic, as the converter does after upcasting (spec §10.4 step 2-3). */
            if (vops & XF_ADD_ONE) v = 1.0f + v;
            if (vops & XF_NEG_EXP) v = -expf(v);
            memcpy(orow + (size_t)c * 4, &v, 4);
        }
    }
    return 0;
}
