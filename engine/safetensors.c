/* engine/safetensors.c: see safetensors.h. */
#include "engine/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct meta_kv {
    char *key, *val;
};

struct safetensors {
    uint64_t data_offset, file_size;
    int n;
    struct safetensors_tensor *t; /* ascending offset */
    int *by_name;                 /* indices into t, sorted by name */
    int n_meta;
    struct meta_kv *meta;
};

/* The largest integer a JSON number (a double in cJSON) holds exactly. */
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53 */

int safetensors_dtype(const char *s, enum dtype *out) {
    static const char *const unsupported[] = {"F64", "I64", "I32",     "I16",     "I8",
                                              "U8",  "U16", "U32",     "U64",     "BOOL",
                                              "C64", "F4",  "F6_E2M3", "F6_E3M2", "E8M0"};
    if (!strcmp(s, "F32"))
        *out = DT_F32;
    else if (!strcmp(s, "F16"))
        *out = DT_F16;
    else if (!strcmp(s, "BF16"))
        *out = DT_BF16;
    else {
        if (!strncmp(s, "F8_", 3)) return BT_EUNSUPPORTED;
        for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
            if (!strcmp(s, unsupported[i])) return BT_EUNSUPPORTED;
        return BT_EFORMAT;
    }
    return 0;
}

void safetensors_free(safetensors_t *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++)
        free((void *)(uintptr_t)st->t[i].name); /* strdup'd in parse */
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].val);
    }
    free(st->t);
    free(st->by_name);
    free(st->meta);
    free(st);
}

/* A JSON number that is an integer in [0, 2^53]; 0 on success. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > MAX_EXACT_INT || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(const cJSON *ent, struct safetensors_tensor *t, uint64_t data_size,
                       bt_err *e) {
    const char *name = ent->string;
    if (!cJSON_IsObject(ent))
        return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: entry is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(ent, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(ent, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(ent, "data_offsets");
    if (!cJSON_IsString(dt))
        return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: dtype missing or not a string",
                       name);
    int rc = safetensors_dtype(dt->valuestring, &t->dtype);
    if (rc == BT_EUNSUPPORTED)
        return bt_fail(e, rc, "safetensors: tensor %s: dtype %s not supported (F32/F16/BF16)", name,
                       dt->valuestring);
    if (rc)
        return bt_fail(e, rc, "safetensors: tensor %s: unknown dtype \"%.32s\"", name,
                       dt->valuestring);
    if (!cJSON_IsArray(sh))
        return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: shape missing or not an array",
                       name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: %d dims > %d", name, nd,
                       ST_MAX_DIMS);
    t->n_dims = nd;
    /* Element count with an overflow check at every step: shapes come from the file. */
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (json_uint(x, &v) || v > (uint64_t)INT64_MAX)
            return bt_fail(e, BT_EFORMAT,
                           "safetensors: tensor %s: shape[%d] is not a non-negative integer", name,
                           d);
        t->shape[d] = (int64_t)v;
        if (v && numel > UINT64_MAX / v)
            return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: element count overflows", name);
        numel *= v;
    }
    for (; d < ST_MAX_DIMS; d++)
        t->shape[d] = 1;
    size_t esz = dtype_traits[t->dtype].block_bytes;
    if (numel > UINT64_MAX / esz)
        return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: byte size overflows", name);
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_uint(off->child, &b) ||
        json_uint(off->child->next, &en))
        return bt_fail(e, BT_EFORMAT,
                       "safetensors: tensor %s: data_offsets is not [begin, end] of integers",
                       name);
    if (b > en)
        return bt_fail(e, BT_EFORMAT, "safetensors: tensor %s: data_offsets begin %llu > end %llu",
                       name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return bt_fail(e, BT_EFORMAT,
                       "safetensors: tensor %s: data ends at %llu, past the data size %llu", name,
                       (unsigned long long)en, (unsigned long long)data_size);
    if (numel * esz != en - b)
        return bt_fail(e, BT_EFORMAT,
                       "safetensors: tensor %s: %llu elements x %zu bytes != %llu bytes in "
                       "data_offsets",
                       name, (unsigned long long)numel, esz, (unsigned long long)(en - b));
    t->offset = b; /* relative here; made absolute once the header length is known */
    t->n_bytes = en - b;
    return 0;
}

static int parse_metadata(safetensors_t *st, const cJSON *m, bt_err *e) {
    if (!cJSON_IsObject(m))
        return bt_fail(e, BT_EFORMAT, "safetensors: __metadata__ is not an object");
    int n = cJSON_GetArraySize(m);
    st->meta = calloc(n > 0 ? (size_t)n : 1, sizeof *st->meta);
    if (!st->meta) return bt_fail(e, -ENOMEM, "safetensors: metadata: out of memory");
    for (const cJSON *x = m->child; x; x = x->next) {
        if (!cJSON_IsString(x))
            return bt_fail(e, BT_EFORMAT, "safetensors: __metadata__.%s is not a string",
                           x->string);
        struct meta_kv *kv = &st->meta[st->n_meta++];
        kv->key = strdup(x->string);
        kv->val = strdup(x->valuestring);
        if (!kv->key || !kv->val)
            return bt_fail(e, -ENOMEM, "safetensors: metadata: out of memory");
    }
    return 0;
}

static int cmp_offset(const void *a, const void *b) {
    const struct safetensors_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    /* Empty tensors first at equal offsets, so only non-empty neighbours are compared. */
    return (x->n_bytes > y->n_bytes) - (x->n_bytes < y->n_bytes);
}

/* Fills by_name with tensor indices sorted by name (a bottom-up merge sort: qsort has no
 * context argument). 0 or -ENOMEM. */
static int sort_by_name(safetensors_t *st) {
    int n = st->n;
    for (int i = 0; i < n; i++)
        st->by_name[i] = i;
    int *tmp = malloc((n > 0 ? (size_t)n : 1) * sizeof *tmp);
    if (!tmp) return -ENOMEM;
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = strcmp(st->t[st->by_name[i]].name, st->t[st->by_name[j]].name) <= 0
                               ? st->by_name[i++]
                               : st->by_name[j++];
            while (i < mid)
                tmp[k++] = st->by_name[i++];
            while (j < hi)
                tmp[k++] = st->by_name[j++];
        }
        memcpy(st->by_name, tmp, (size_t)n * sizeof *tmp);
    }
    free(tmp);
    return 0;
}

int safetensors_parse(safetensors_t **out, const void *buf, size_t len, uint64_t file_size,
                      size_t *need, bt_err *e) {
    *out = NULL;
    const unsigned char *p = buf;
    if (file_size < 8 || len < 8)
        return bt_fail(e, BT_EFORMAT, "safetensors: file of %llu bytes has no header length",
                       (unsigned long long)file_size);
    if (len > file_size)
        return bt_fail(e, BT_EINVAL, "safetensors: buffer (%zu) larger than the file (%llu)", len,
                       (unsigned long long)file_size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | p[i];
    if (n < 2 || n > ST_MAX_HEADER_BYTES)
        return bt_fail(e, BT_EFORMAT, "safetensors: header length %llu outside [2, %u]",
                       (unsigned long long)n, ST_MAX_HEADER_BYTES);
    if (n > file_size - 8)
        return bt_fail(e, BT_EFORMAT,
                       "safetensors: header length %llu past the end of a %llu-byte "
                       "file",
                       (unsigned long long)n, (unsigned long long)file_size);
    if (8 + n > len) {
        if (need) *need = (size_t)(8 + n);
        return bt_fail(e, BT_EMSGSIZE, "safetensors: header needs %llu bytes, have %zu",
                       (unsigned long long)(8 + n), len);
    }
    const char *js = (const char *)p + 8;
    if (js[0] != '{') return bt_fail(e, BT_EFORMAT, "safetensors: header does not start with '{'");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(js, (size_t)n, &end, 0);
    if (!root)
        return bt_fail(e, BT_EFORMAT, "safetensors: header JSON invalid near byte %lld",
                       end ? (long long)(end - js) : -1LL);
    int rc = 0;
    safetensors_t *st = NULL;
    /* The format allows padding the header with spaces; anything else after the JSON (a NUL
     * included, which would hide a truncated object from a C-string parser) is rejected. */
    for (const char *q = end; q < js + n; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            rc = bt_fail(e, BT_EFORMAT, "safetensors: bytes after the header JSON at %lld",
                         (long long)(q - js));
            goto fail;
        }
    if (!cJSON_IsObject(root)) {
        rc = bt_fail(e, BT_EFORMAT, "safetensors: header is not a JSON object");
        goto fail;
    }
    st = calloc(1, sizeof *st);
    int cap = cJSON_GetArraySize(root);
    size_t ncap = cap > 0 ? (size_t)cap : 1;
    if (!st || !(st->t = calloc(ncap, sizeof *st->t)) ||
        !(st->by_name = calloc(ncap, sizeof *st->by_name))) {
        rc = bt_fail(e, -ENOMEM, "safetensors: out of memory for %d tensors", cap);
        goto fail;
    }
    st->data_offset = 8 + n;
    st->file_size = file_size;
    uint64_t data_size = file_size - st->data_offset;
    int seen_meta = 0;
    for (const cJSON *x = root->child; x; x = x->next) {
        if (!strcmp(x->string, "__metadata__")) {
            if (seen_meta++) {
                rc = bt_fail(e, BT_EFORMAT, "safetensors: __metadata__ appears twice");
                goto fail;
            }
            if ((rc = parse_metadata(st, x, e))) goto fail;
            continue;
        }
        struct safetensors_tensor *t = &st->t[st->n];
        if ((rc = parse_entry(x, t, data_size, e))) goto fail;
        if (!(t->name = strdup(x->string))) {
            rc = bt_fail(e, -ENOMEM, "safetensors: out of memory");
            goto fail;
        }
        st->n++;
    }
    qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_offset);
    for (int i = 1; i < st->n; i++) {
        const struct safetensors_tensor *a = &st->t[i - 1], *b = &st->t[i];
        if (a->n_bytes && a->offset + a->n_bytes > b->offset) {
            rc = bt_fail(e, BT_EFORMAT, "safetensors: tensors %s and %s overlap", a->name, b->name);
            goto fail;
        }
    }
    for (int i = 0; i < st->n; i++)
        st->t[i].offset += st->data_offset;
    if (sort_by_name(st)) {
        rc = bt_fail(e, -ENOMEM, "safetensors: out of memory sorting %d names", st->n);
        goto fail;
    }
    for (int i = 1; i < st->n; i++)
        if (!strcmp(st->t[st->by_name[i - 1]].name, st->t[st->by_name[i]].name)) {
            rc = bt_fail(e, BT_EFORMAT, "safetensors: tensor %s appears twice",
                         st->t[st->by_name[i]].name);
            goto fail;
        }
    cJSON_Delete(root);
    *out = st;
    return 0;
fail:
    cJSON_Delete(root);
    safetensors_free(st);
    return rc;
}

int safetensors_open(safetensors_t **out, const char *path, bt_err *e) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bt_fail(e, -errno, "safetensors: open %s: %s", path, strerror(errno));
    int rc;
    unsigned char *buf = NULL;
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        rc = bt_fail(e, -errno, "safetensors: stat %s: %s", path, strerror(errno));
        goto done;
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    /* Read the length word, then exactly the header: its size is known up front. */
    size_t want = fsize < 8 ? (size_t)fsize : 8;
    for (int attempt = 0; attempt < 2; attempt++) {
        unsigned char *nb = realloc(buf, want ? want : 1);
        if (!nb) {
            rc = bt_fail(e, -ENOMEM, "safetensors: %s: out of memory for %zu header bytes", path,
                         want);
            goto done;
        }
        buf = nb;
        size_t got = 0;
        while (got < want) {
            ssize_t r = pread(fd, buf + got, want - got, (off_t)got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                rc = bt_fail(e, -errno, "safetensors: read %s: %s", path, strerror(errno));
                goto done;
            }
            if (r == 0) {
                rc = bt_fail(e, BT_EFORMAT, "safetensors: %s shrank while reading", path);
                goto done;
            }
            got += (size_t)r;
        }
        size_t need = 0;
        rc = safetensors_parse(out, buf, want, fsize, &need, e);
        if (rc != BT_EMSGSIZE || need <= want) break;
        want = need;
    }
    if (rc && e && !strstr(e->msg, path)) {
        /* Prefix the path so a message about a shard says which one. */
        char m[sizeof e->msg];
        if (snprintf(m, sizeof m, "%s: %s", path, e->msg) >= (int)sizeof m)
            m[sizeof m - 2] = '~'; /* mark the cut */
        memcpy(e->msg, m, sizeof m);
    }
done:
    free(buf);
    close(fd);
    return rc;
}

uint64_t safetensors_data_offset(const safetensors_t *st) {
    return st->data_offset;
}

uint64_t safetensors_file_size(const safetensors_t *st) {
    return st->file_size;
}

int safetensors_n_tensors(const safetensors_t *st) {
    return st->n;
}

const struct safetensors_tensor *safetensors_tensor(const safetensors_t *st, int i) {
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const struct safetensors_tensor *safetensors_find(const safetensors_t *st, const char *name) {
    int lo = 0, hi = st->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[st->by_name[mid]].name, name);
        if (!c) return &st->t[st->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *safetensors_metadata(const safetensors_t *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[i].key, key)) return st->meta[i].val;
    return NULL;
}

/* ---- model.safetensors.index.json ---- */

void safetensors_index_free(struct safetensors_index *ix) {
    if (!ix) return;
    for (int i = 0; i < ix->n_entries; i++)
        free(ix->names[i]);
    for (int i = 0; i < ix->n_shards; i++)
        free(ix->shards[i]);
    free(ix->names);
    free(ix->shard_of);
    free(ix->shards);
    free(ix);
}

static int shard_name_ok(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n <= 255 && !strchr(s, '/') && !strstr(s, "..") && strcmp(s, ".");
}

int safetensors_index_parse(struct safetensors_index **out, const void *json, size_t len,
                            bt_err *e) {
    *out = NULL;
    if (len > ST_MAX_HEADER_BYTES)
        return bt_fail(e, BT_EFORMAT, "safetensors index: %zu bytes > %u", len,
                       ST_MAX_HEADER_BYTES);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return bt_fail(e, BT_EFORMAT, "safetensors index: invalid JSON");
    int rc = 0;
    struct safetensors_index *ix = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        rc = bt_fail(e, BT_EFORMAT, "safetensors index: weight_map missing or not an object");
        goto fail;
    }
    int cap = cJSON_GetArraySize(wm);
    size_t c = cap > 0 ? (size_t)cap : 1;
    ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->names = calloc(c, sizeof *ix->names)) ||
        !(ix->shard_of = calloc(c, sizeof *ix->shard_of)) ||
        !(ix->shards = calloc(c, sizeof *ix->shards))) {
        rc = bt_fail(e, -ENOMEM, "safetensors index: out of memory for %d entries", cap);
        goto fail;
    }
    for (const cJSON *x = wm->child; x; x = x->next) {
        if (!cJSON_IsString(x) || !shard_name_ok(x->valuestring)) {
            rc = bt_fail(e, BT_EFORMAT,
                         "safetensors index: tensor %s: shard is not a plain file name", x->string);
            goto fail;
        }
        for (int i = 0; i < ix->n_entries; i++)
            if (!strcmp(ix->names[i], x->string)) {
                rc = bt_fail(e, BT_EFORMAT, "safetensors index: tensor %s listed twice", x->string);
                goto fail;
            }
        int s = 0;
        while (s < ix->n_shards && strcmp(ix->shards[s], x->valuestring))
            s++;
        if (s == ix->n_shards && !(ix->shards[ix->n_shards++] = strdup(x->valuestring))) {
            rc = bt_fail(e, -ENOMEM, "safetensors index: out of memory");
            goto fail;
        }
        if (!(ix->names[ix->n_entries] = strdup(x->string))) {
            rc = bt_fail(e, -ENOMEM, "safetensors index: out of memory");
            goto fail;
        }
        ix->shard_of[ix->n_entries++] = s;
    }
    cJSON_Delete(root);
    *out = ix;
    return 0;
fail:
    cJSON_Delete(root);
    safetensors_index_free(ix);
    return rc;
}
