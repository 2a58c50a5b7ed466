/* worker/model_cache.c: see model_cache.h. */
#include "worker/model_cache.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MC_MAGIC   0x434d5442u /* "BTMC" little-endian */
#define MC_VERSION 1u

struct model_cache {
    char path[1024], idx_path[1040];
    int fd;
    uint64_t size, xxh3;
    struct mc_range *r; /* present ranges: sorted, disjoint, non-adjacent */
    int n, cap;
};

const char *model_cache_path(const model_cache_t *c) {
    return c->path;
}

uint64_t model_cache_present_bytes(const model_cache_t *c) {
    uint64_t s = 0;
    for (int i = 0; i < c->n; i++)
        s += c->r[i].len;
    return s;
}

/* Inserts [off, off+len) and merges neighbours that overlap or touch. */
static int add_range(model_cache_t *c, uint64_t off, uint64_t len) {
    if (!len) return 0;
    if (c->n + 1 > c->cap) {
        int nc = c->cap ? c->cap * 2 : 16;
        struct mc_range *nr = realloc(c->r, (size_t)nc * sizeof *nr);
        if (!nr) return -ENOMEM;
        c->r = nr;
        c->cap = nc;
    }
    uint64_t lo = off, hi = off + len;
    int i = 0, w = 0;
    struct mc_range *r = c->r;
    /* Copy ranges entirely before, merge overlapping/touching ones, then the rest. */
    while (i < c->n && r[i].off + r[i].len < lo)
        r[w++] = r[i++];
    while (i < c->n && r[i].off <= hi) {
        if (r[i].off < lo) lo = r[i].off;
        if (r[i].off + r[i].len > hi) hi = r[i].off + r[i].len;
        i++;
    }
    int rest = c->n - i;
    memmove(&r[w + 1], &r[i], (size_t)rest * sizeof *r);
    r[w] = (struct mc_range){lo, hi - lo};
    c->n = w + 1 + rest;
    return 0;
}

int model_cache_has(const model_cache_t *c, uint64_t off, uint64_t len) {
    if (!len) return 1;
    for (int i = 0; i < c->n; i++)
        if (c->r[i].off <= off && off + len <= c->r[i].off + c->r[i].len) return 1;
    return 0;
}

static int cmp_range(const void *a, const void *b) {
    const struct mc_range *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

int model_cache_missing(const model_cache_t *c, const struct mc_range *want, int n, uint64_t chunk,
                        struct mc_range *out, int max) {
    if (!chunk) chunk = 16u << 20;
    struct mc_range *w = malloc((size_t)(n > 0 ? n : 1) * sizeof *w);
    if (!w) return -ENOMEM;
    int m = 0;
    for (int i = 0; i < n; i++) {
        uint64_t lo = want[i].off, hi = want[i].off + want[i].len;
        if (lo >= c->size || hi <= lo) continue;
        if (hi > c->size) hi = c->size;
        w[m++] = (struct mc_range){lo, hi - lo};
    }
    qsort(w, (size_t)m, sizeof *w, cmp_range);
    int count = 0;
    uint64_t done = 0; /* everything below this is already emitted or present */
    for (int i = 0; i < m; i++) {
        uint64_t lo = w[i].off > done ? w[i].off : done, hi = w[i].off + w[i].len;
        while (lo < hi) {
            /* skip the present range covering lo, or find where the next one starts */
            uint64_t gap_end = hi;
            int covered = 0;
            for (int k = 0; k < c->n; k++) {
                uint64_t ro = c->r[k].off, re = ro + c->r[k].len;
                if (ro <= lo && lo < re) {
                    lo = re;
                    covered = 1;
                    break;
                }
                if (ro > lo && ro < gap_end) gap_end = ro;
            }
            if (covered) continue;
            uint64_t piece = gap_end - lo < chunk ? gap_end - lo : chunk;
            if (count < max) out[count] = (struct mc_range){lo, piece};
            count++;
            lo += piece;
        }
        if (hi > done) done = hi;
    }
    free(w);
    return count;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int write_index(model_cache_t *c, bt_err *e) {
    size_t len = 28 + (size_t)c->n * 16;
    unsigned char *b = malloc(len);
    if (!b) return bt_fail(e, -ENOMEM, "%s: index of %d ranges", c->idx_path, c->n);
    put_u32(b, MC_MAGIC);
    put_u32(b + 4, MC_VERSION);
    put_u64(b + 8, c->size);
    put_u64(b + 16, c->xxh3);
    put_u32(b + 24, (uint32_t)c->n);
    for (int i = 0; i < c->n; i++) {
        put_u64(b + 28 + 16 * (size_t)i, c->r[i].off);
        put_u64(b + 36 + 16 * (size_t)i, c->r[i].off + c->r[i].len);
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", c->idx_path);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = bt_fail(e, -errno, "%s: open: %s", tmp, strerror(errno));
        goto out;
    }
    ssize_t wr = write(fd, b, len);
    if (wr != (ssize_t)len || fdatasync(fd) != 0) {
        rc = bt_fail(e, wr < 0 ? -errno : -EIO, "%s: write: %s", tmp, strerror(errno));
        close(fd);
        goto out;
    }
    close(fd);
    if (rename(tmp, c->idx_path) != 0)
        rc = bt_fail(e, -errno, "%s: rename: %s", c->idx_path, strerror(errno));
out:
    free(b);
    return rc;
}

/* Loads the sidecar index if it is ours; anything else leaves the cache empty. */
static void read_index(model_cache_t *c) {
    FILE *f = fopen(c->idx_path, "rb");
    if (!f) return;
    unsigned char h[28];
    if (fread(h, 1, sizeof h, f) != sizeof h || get_u32(h) != MC_MAGIC ||
        get_u32(h + 4) != MC_VERSION || get_u64(h + 8) != c->size || get_u64(h + 16) != c->xxh3) {
        BT_LOG(WARN, "cache", "%s: index not for this model: ignored", c->idx_path);
        fclose(f);
        return;
    }
    uint32_t n = get_u32(h + 24);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char p[16];
        if (fread(p, 1, 16, f) != 16) break;
        uint64_t off = get_u64(p), end = get_u64(p + 8);
        if (end <= off || end > c->size || add_range(c, off, end - off)) break;
    }
    fclose(f);
}

int model_cache_open(model_cache_t **out, const struct model_cache_opts *o, bt_err *e) {
    *out = NULL;
    const char *dir = o->dir && *o->dir ? o->dir : "/var/tmp/baton-cache";
    model_cache_t *c = calloc(1, sizeof *c);
    if (!c) return bt_fail(e, -ENOMEM, "model cache");
    c->fd = -1;
    c->size = o->size;
    c->xxh3 = o->header_xxh3;
    char name[200];
    snprintf(name, sizeof name, "%s", o->name && *o->name ? o->name : "model");
    for (char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            *p = '_';
    snprintf(c->path, sizeof c->path, "%s/%s-%016llx", dir, name,
             (unsigned long long)o->header_xxh3);
    snprintf(c->idx_path, sizeof c->idx_path, "%s.idx", c->path);
    int rc;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = bt_fail(e, -errno, "%s: mkdir: %s", dir, strerror(errno));
        goto fail;
    }
    c->fd = open(c->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->fd < 0) {
        rc = bt_fail(e, -errno, "%s: open: %s", c->path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(c->fd, &st) != 0) {
        rc = bt_fail(e, -errno, "%s: stat: %s", c->path, strerror(errno));
        goto fail;
    }
    if ((uint64_t)st.st_size == c->size) read_index(c);
    /* A file of another size cannot be ours (even partially): start over, sparse. */
    if ((uint64_t)st.st_size != c->size && ftruncate(c->fd, 0) != 0) {
        rc = bt_fail(e, -errno, "%s: truncate: %s", c->path, strerror(errno));
        goto fail;
    }
    if (ftruncate(c->fd, (off_t)c->size) != 0) {
        rc = bt_fail(e, -errno, "%s: truncate to %llu: %s", c->path, (unsigned long long)c->size,
                     strerror(errno));
        goto fail;
    }
    BT_LOG(INFO, "cache", "open path=%s size=%llu present=%llu ranges=%d", c->path,
           (unsigned long long)c->size, (unsigned long long)model_cache_present_bytes(c), c->n);
    *out = c;
    return 0;
fail:
    model_cache_close(c);
    return rc;
}

void model_cache_close(model_cache_t *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->r);
    free(c);
}

int model_cache_put(model_cache_t *c, uint64_t off, const void *data, size_t len, uint64_t xxh3,
                    bt_err *e) {
    if (off > c->size || len > c->size - off)
        return bt_fail(e, BT_EPROTO, "%s: chunk [%llu, +%zu) outside the file (%llu bytes)",
                       c->path, (unsigned long long)off, len, (unsigned long long)c->size);
    uint64_t h = XXH3_64bits(data, len);
    if (h != xxh3)
        return bt_fail(e, BT_ECHECKSUM, "%s: chunk at %llu len %zu: xxh3 %016llx, expected %016llx",
                       c->path, (unsigned long long)off, len, (unsigned long long)h,
                       (unsigned long long)xxh3);
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(c->fd, (const char *)data + done, len - done, (off_t)(off + done));
        if (w <= 0)
            return bt_fail(e, w < 0 ? -errno : -EIO, "%s: write at %llu: %s", c->path,
                           (unsigned long long)(off + done), strerror(errno));
        done += (size_t)w;
    }
    if (fdatasync(c->fd) != 0)
        return bt_fail(e, -errno, "%s: fdatasync: %s", c->path, strerror(errno));
    if (add_range(c, off, len)) return bt_fail(e, -ENOMEM, "%s: range list", c->path);
    return write_index(c, e);
}

int model_cache_read(const model_cache_t *c, uint64_t off, void *buf, size_t len, bt_err *e) {
    if (!model_cache_has(c, off, len))
        return bt_fail(e, BT_EINVAL, "%s: [%llu, +%zu) not in the cache", c->path,
                       (unsigned long long)off, len);
    for (size_t done = 0; done < len;) {
        ssize_t r = pread(c->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (r <= 0)
            return bt_fail(e, r < 0 ? -errno : -EIO, "%s: read at %llu", c->path,
                           (unsigned long long)(off + done));
        done += (size_t)r;
    }
    return 0;
}
