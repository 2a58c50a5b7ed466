/* engine/seqstate.c: see seqstate.h. One 64-byte aligned block per slot; inside it, per layer
 * of the range, the arrays of that layer's kind at fixed offsets computed once. */
#include "engine/seqstate.h"

#include "common/assert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "seqstate_save writes host floats as little-endian");

struct seqstate_pool {
    struct qwen35_hparams hp;
    int lo, hi, n_slots, max_ctx;
    size_t slot_floats;          /* floats per slot */
    size_t off_a[BT_MAX_LAYERS]; /* linear: conv; full: K (floats into the slot) */
    size_t off_b[BT_MAX_LAYERS]; /* linear: delta; full: V */
    float *mem;                  /* [n_slots][slot_floats] */
    int64_t *pos;                /* [n_slots] */
    unsigned char *used;         /* [n_slots] */
};

static size_t conv_floats(const struct qwen35_hparams *hp) {
    size_t cd = 2 * (size_t)hp->ssm_d_state * hp->ssm_n_group + (size_t)hp->ssm_d_inner;
    return cd * (size_t)(hp->conv_kernel - 1);
}
static size_t delta_floats(const struct qwen35_hparams *hp) {
    return (size_t)hp->ssm_dt_rank * hp->ssm_head_v_dim * hp->ssm_d_state;
}
static size_t kv_row(const struct qwen35_hparams *hp) {
    return (size_t)hp->n_head_kv * hp->head_dim;
}
/* Keep each array 64-byte aligned inside the slot. */
static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

static size_t layer_floats(const struct qwen35_hparams *hp, int l, int max_ctx) {
    if (hp->kind[l] == LAYER_LINEAR_ATTN)
        return round16(conv_floats(hp)) + round16(delta_floats(hp));
    return 2 * round16(kv_row(hp) * (size_t)max_ctx);
}

size_t seqstate_bytes(const struct qwen35_hparams *hp, int lo, int hi, int max_ctx) {
    size_t n = 0;
    for (int l = lo; l < hi; l++)
        n += layer_floats(hp, l, max_ctx);
    return n * sizeof(float);
}

int seqstate_pool_new(seqstate_pool_t **out, const struct qwen35_hparams *hp, int lo, int hi,
                      int n_slots, int max_ctx, bt_err *e) {
    *out = NULL;
    if (lo < 0 || hi > hp->n_layer || lo >= hi)
        return bt_fail(e, BT_EINVAL, "seqstate: layer range [%d, %d) not inside [0, %d)", lo, hi,
                       hp->n_layer);
    if (n_slots < 1 || max_ctx < 1)
        return bt_fail(e, BT_EINVAL, "seqstate: n_slots %d, max_ctx %d must be >= 1", n_slots,
                       max_ctx);
    seqstate_pool_t *p = calloc(1, sizeof *p);
    if (!p) return bt_fail(e, -ENOMEM, "seqstate: pool");
    p->hp = *hp;
    p->lo = lo;
    p->hi = hi;
    p->n_slots = n_slots;
    p->max_ctx = max_ctx;
    size_t off = 0;
    for (int l = lo; l < hi; l++) {
        p->off_a[l] = off;
        if (hp->kind[l] == LAYER_LINEAR_ATTN)
            p->off_b[l] = off + round16(conv_floats(hp));
        else
            p->off_b[l] = off + round16(kv_row(hp) * (size_t)max_ctx);
        off += layer_floats(hp, l, max_ctx);
    }
    p->slot_floats = off;
    size_t bytes = off * sizeof(float) * (size_t)n_slots;
    if (bytes / n_slots / sizeof(float) != off ||
        posix_memalign((void **)&p->mem, 64, bytes ? bytes : 64)) {
        free(p);
        return bt_fail(e, -ENOMEM, "seqstate: %d slots x %zu bytes", n_slots, off * sizeof(float));
    }
    p->pos = calloc((size_t)n_slots, sizeof *p->pos);
    p->used = calloc((size_t)n_slots, 1);
    if (!p->pos || !p->used) {
        seqstate_pool_free(p);
        return bt_fail(e, -ENOMEM, "seqstate: slot table");
    }
    *out = p;
    return 0;
}

void seqstate_pool_free(seqstate_pool_t *p) {
    if (!p) return;
    free(p->mem);
    free(p->pos);
    free(p->used);
    free(p);
}

int seqstate_n_slots(const seqstate_pool_t *p) {
    return p->n_slots;
}
int seqstate_max_ctx(const seqstate_pool_t *p) {
    return p->max_ctx;
}
void seqstate_range(const seqstate_pool_t *p, int *lo, int *hi) {
    *lo = p->lo;
    *hi = p->hi;
}

static float *slot_mem(const seqstate_pool_t *p, int slot) {
    BT_ASSERT(slot >= 0 && slot < p->n_slots);
    return p->mem + (size_t)slot * p->slot_floats;
}

int seqstate_acquire(seqstate_pool_t *p, int *slot, bt_err *e) {
    for (int i = 0; i < p->n_slots; i++)
        if (!p->used[i]) {
            p->used[i] = 1;
            seqstate_reset(p, i);
            *slot = i;
            return 0;
        }
    return bt_fail(e, BT_ECAPACITY, "no free sequence slot (%d/%d)", p->n_slots, p->n_slots);
}

void seqstate_release(seqstate_pool_t *p, int slot) {
    BT_ASSERT(slot >= 0 && slot < p->n_slots && p->used[slot]);
    p->used[slot] = 0;
}

int seqstate_in_use(const seqstate_pool_t *p, int slot) {
    return slot >= 0 && slot < p->n_slots && p->used[slot];
}

void seqstate_reset(seqstate_pool_t *p, int slot) {
    float *s = slot_mem(p, slot);
    /* KV rows past pos are never read, so only the recurrent arrays need zeros; still, a full
     * clear keeps fresh slots byte-identical, which save/load tests rely on. */
    memset(s, 0, p->slot_floats * sizeof(float));
    p->pos[slot] = 0;
}

void seqstate_fork(seqstate_pool_t *p, int src, int dst) {
    if (src == dst) return;
    const float *s = slot_mem(p, src);
    float *d = slot_mem(p, dst);
    size_t used = (size_t)p->pos[src] * kv_row(&p->hp);
    for (int l = p->lo; l < p->hi; l++) {
        if (p->hp.kind[l] == LAYER_LINEAR_ATTN) {
            memcpy(d + p->off_a[l], s + p->off_a[l], conv_floats(&p->hp) * sizeof(float));
            memcpy(d + p->off_b[l], s + p->off_b[l], delta_floats(&p->hp) * sizeof(float));
        } else { /* only the positions in use */
            memcpy(d + p->off_a[l], s + p->off_a[l], used * sizeof(float));
            memcpy(d + p->off_b[l], s + p->off_b[l], used * sizeof(float));
        }
    }
    p->pos[dst] = p->pos[src];
}

int64_t seqstate_pos(const seqstate_pool_t *p, int slot) {
    BT_ASSERT(slot >= 0 && slot < p->n_slots);
    return p->pos[slot];
}

void seqstate_set_pos(seqstate_pool_t *p, int slot, int64_t pos) {
    BT_ASSERT(slot >= 0 && slot < p->n_slots && pos >= 0 && pos <= p->max_ctx);
    p->pos[slot] = pos;
}

static float *layer_arr(seqstate_pool_t *p, int slot, int l, enum layer_kind kind, int b) {
    BT_ASSERT(l >= p->lo && l < p->hi && p->hp.kind[l] == kind);
    return slot_mem(p, slot) + (b ? p->off_b[l] : p->off_a[l]);
}
float *seqstate_conv(seqstate_pool_t *p, int slot, int l) {
    return layer_arr(p, slot, l, LAYER_LINEAR_ATTN, 0);
}
float *seqstate_delta(seqstate_pool_t *p, int slot, int l) {
    return layer_arr(p, slot, l, LAYER_LINEAR_ATTN, 1);
}
float *seqstate_k(seqstate_pool_t *p, int slot, int l) {
    return layer_arr(p, slot, l, LAYER_FULL_ATTN, 0);
}
float *seqstate_v(seqstate_pool_t *p, int slot, int l) {
    return layer_arr(p, slot, l, LAYER_FULL_ATTN, 1);
}

/* FNV-1a over the fields that define the layout and meaning of the state. */
uint64_t seqstate_fingerprint(const struct qwen35_hparams *hp) {
    int32_t f[12 + BT_MAX_LAYERS];
    int n = 0;
    f[n++] = hp->n_layer, f[n++] = hp->n_embd, f[n++] = hp->n_head_kv, f[n++] = hp->head_dim;
    f[n++] = hp->n_rot, f[n++] = hp->conv_kernel, f[n++] = hp->ssm_d_state;
    f[n++] = hp->ssm_n_group, f[n++] = hp->ssm_dt_rank, f[n++] = hp->ssm_d_inner;
    f[n++] = hp->n_head;
    for (int l = 0; l < hp->n_layer && l < BT_MAX_LAYERS; l++)
        f[n++] = (int32_t)hp->kind[l];
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)f;
    for (size_t i = 0; i < (size_t)n * sizeof *f; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

#define HEADER_BYTES (4 + 4 + 4 + 4 + 8 + 8)

static size_t payload_floats(const seqstate_pool_t *p, int64_t pos) {
    size_t n = 0;
    for (int l = p->lo; l < p->hi; l++)
        n += p->hp.kind[l] == LAYER_LINEAR_ATTN ? conv_floats(&p->hp) + delta_floats(&p->hp)
                                                : 2 * (size_t)pos * kv_row(&p->hp);
    return n;
}

size_t seqstate_save_size(const seqstate_pool_t *p, int slot) {
    return HEADER_BYTES + payload_floats(p, seqstate_pos(p, slot)) * sizeof(float);
}

static unsigned char *put(unsigned char *o, const void *src, size_t n) {
    memcpy(o, src, n);
    return o + n;
}

int seqstate_save(const seqstate_pool_t *p, int slot, void *buf, size_t cap, size_t *len,
                  bt_err *e) {
    size_t need = seqstate_save_size(p, slot);
    if (cap < need)
        return bt_fail(e, BT_EMSGSIZE, "seqstate save: %zu bytes needed, buffer has %zu", need,
                       cap);
    const float *s = slot_mem(p, slot);
    uint32_t magic = SEQSTATE_MAGIC, version = SEQSTATE_VERSION;
    int32_t lo = p->lo, hi = p->hi;
    uint64_t fp = seqstate_fingerprint(&p->hp);
    int64_t pos = p->pos[slot];
    unsigned char *o = buf;
    o = put(o, &magic, 4), o = put(o, &version, 4), o = put(o, &lo, 4), o = put(o, &hi, 4);
    o = put(o, &fp, 8), o = put(o, &pos, 8);
    size_t used = (size_t)pos * kv_row(&p->hp);
    for (int l = p->lo; l < p->hi; l++) {
        if (p->hp.kind[l] == LAYER_LINEAR_ATTN) {
            o = put(o, s + p->off_a[l], conv_floats(&p->hp) * sizeof(float));
            o = put(o, s + p->off_b[l], delta_floats(&p->hp) * sizeof(float));
        } else {
            o = put(o, s + p->off_a[l], used * sizeof(float));
            o = put(o, s + p->off_b[l], used * sizeof(float));
        }
    }
    BT_ASSERT((size_t)(o - (unsigned char *)buf) == need);
    *len = need;
    return 0;
}

int seqstate_load(seqstate_pool_t *p, int slot, const void *buf, size_t len, bt_err *e) {
    const unsigned char *b = buf;
    if (len < HEADER_BYTES)
        return bt_fail(e, BT_EFORMAT, "seqstate: %zu bytes, shorter than the %d-byte header", len,
                       HEADER_BYTES);
    uint32_t magic, version;
    int32_t lo, hi;
    uint64_t fp;
    int64_t pos;
    memcpy(&magic, b, 4), memcpy(&version, b + 4, 4), memcpy(&lo, b + 8, 4);
    memcpy(&hi, b + 12, 4), memcpy(&fp, b + 16, 8), memcpy(&pos, b + 24, 8);
    if (magic != SEQSTATE_MAGIC) return bt_fail(e, BT_EFORMAT, "seqstate: bad magic 0x%08x", magic);
    if (version != SEQSTATE_VERSION)
        return bt_fail(e, BT_EVERSION, "seqstate: version %u, expected %u", version,
                       SEQSTATE_VERSION);
    if (lo != p->lo || hi != p->hi)
        return bt_fail(e, BT_ESHAPE, "seqstate: layers [%d, %d), this stage has [%d, %d)", lo, hi,
                       p->lo, p->hi);
    if (fp != seqstate_fingerprint(&p->hp))
        return bt_fail(e, BT_ESHAPE,
                       "seqstate: hyperparameter fingerprint %016llx, expected "
                       "%016llx (another model)",
                       (unsigned long long)fp, (unsigned long long)seqstate_fingerprint(&p->hp));
    if (pos < 0 || pos > p->max_ctx)
        return bt_fail(e, pos < 0 ? BT_EFORMAT : BT_ECAPACITY,
                       "seqstate: position %lld, pool holds %d", (long long)pos, p->max_ctx);
    size_t need = HEADER_BYTES + payload_floats(p, pos) * sizeof(float);
    if (len != need)
        return bt_fail(e, BT_EFORMAT, "seqstate: %zu bytes, expected %zu for position %lld", len,
                       need, (long long)pos);
    float *s = slot_mem(p, slot);
    const unsigned char *in = b + HEADER_BYTES;
    size_t used = (size_t)pos * kv_row(&p->hp);
    for (int l = p->lo; l < p->hi; l++) {
        size_t na, nb;
        if (p->hp.kind[l] == LAYER_LINEAR_ATTN)
            na = conv_floats(&p->hp), nb = delta_floats(&p->hp);
        else
            na = nb = used;
        memcpy(s + p->off_a[l], in, na * sizeof(float));
        in += na * sizeof(float);
        memcpy(s + p->off_b[l], in, nb * sizeof(float));
        in += nb * sizeof(float);
    }
    p->pos[slot] = pos;
    return 0;
}
