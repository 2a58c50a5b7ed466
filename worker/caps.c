/* worker/caps.c: see caps.h. */
#include "worker/caps.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/gguf.h"
#include "ops/ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <xxhash.h>

/* Sums the buffer as u64 words with 4 independent accumulators (enough loads in flight to be
 * bandwidth bound, not latency bound); the result is returned so the compiler keeps the loop. */
static uint64_t sum_words(const uint64_t *p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++)
        a += p[i];
    return a + b + c + d;
}

/* Anonymous memory for the bandwidth buffer, huge pages asked for: first-touch page faults on
 * 4 KiB pages cost ~1 s per 128 MiB on some VMs, far more than the measurement itself. */
#define HUGE_2M ((size_t)2 << 20)
static void *bw_alloc(size_t bytes, void **base, size_t *base_len) {
    /* Over-allocate by 2 MiB so the buffer can start on a huge page boundary. */
    size_t len = bytes + HUGE_2M;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)p + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
    (void)madvise(a, bytes, MADV_HUGEPAGE); /* a hint: may be refused */
    *base = p;
    *base_len = len;
    return a;
}

static float measure_bw(uint64_t bytes, int bench_ms) {
    uint64_t *buf = NULL;
    void *base = NULL;
    size_t base_len = 0;
    while (bytes >= (16u << 20) && !(buf = bw_alloc(bytes, &base, &base_len)))
        bytes /= 2;
    if (!buf) return 0.0f;
    size_t n = bytes / sizeof *buf;
    /* Touch every page first: the first pass would otherwise measure page faults. */
    memset(buf, 1, bytes);
    volatile uint64_t sink = 0;
    double best = 0.0;
    int64_t t_end = bt_now_ns() + (int64_t)bench_ms * 1000000;
    for (int pass = 0; pass < 4; pass++) {
        int64_t t0 = bt_now_ns();
        sink += sum_words(buf, n);
        double s = (double)(bt_now_ns() - t0) * 1e-9;
        if (s > 0 && (double)bytes / s > best) best = (double)bytes / s;
        if (bt_now_ns() > t_end && pass >= 1) break;
    }
    (void)sink;
    munmap(base, base_len);
    return (float)(best / 1e9);
}

/* GFLOP/s of ops->matmul at a decode-like shape (n = 4 tokens against a 1024 x 1024 matrix)
 * in q8_0 (what real deployments mostly run), single thread: the planner scales by cores. */
static float measure_matmul(int bench_ms) {
    const int64_t rows = 1024, cols = 1024, n = 4;
    enum dtype dt = ops->quantize_row[DT_Q8_0] ? DT_Q8_0 : DT_F32;
    size_t rb = dtype_row_bytes(dt, cols);
    void *w = malloc((size_t)rows * rb);
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    float *y = malloc((size_t)(n * rows) * sizeof(float));
    float *row = malloc((size_t)cols * sizeof(float));
    float g = 0.0f;
    if (!w || !x || !y || !row) goto out;
    for (int64_t c = 0; c < n * cols; c++)
        x[c] = (float)((c * 7919) % 101) * 0.01f - 0.5f;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            row[c] = (float)(((r + 1) * (c + 3)) % 97) * 0.02f - 1.0f;
        if (dt == DT_F32)
            memcpy((char *)w + (size_t)r * rb, row, rb);
        else
            ops->quantize_row[dt](row, (char *)w + (size_t)r * rb, cols);
    }
    struct mat m = {.dt = dt, .data = w, .rows = rows, .cols = cols, .row_bytes = rb};
    int64_t t0 = bt_now_ns(), t_end = t0 + (int64_t)bench_ms * 1000000;
    long iters = 0;
    do {
        ops->matmul[dt](&m, x, cols, n, y, rows, 0, rows);
        iters++;
    } while (bt_now_ns() < t_end);
    double s = (double)(bt_now_ns() - t0) * 1e-9;
    g = (float)(2.0 * (double)rows * (double)cols * (double)n * (double)iters / s / 1e9);
out:
    free(w);
    free(x);
    free(y);
    free(row);
    return g;
}

int caps_measure(struct worker_caps *c, const struct caps_opts *o, bt_err *e) {
    memset(c, 0, sizeof *c);
    struct sysinfo si;
    if (sysinfo(&si) != 0) return bt_fail(e, -errno, "sysinfo: %s", strerror(errno));
    c->ram_bytes = (uint64_t)si.totalram * si.mem_unit;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    c->cores = nc > 0 ? (int)nc : 1;
    snprintf(c->isa, sizeof c->isa, "%s", ops ? ops->isa : "?");
    if (gethostname(c->hostname, sizeof c->hostname - 1) != 0)
        snprintf(c->hostname, sizeof c->hostname, "unknown");
    int ms = o && o->bench_ms > 0 ? o->bench_ms : 100;
    uint64_t bw = o && o->bw_bytes ? o->bw_bytes : (128ull << 20);
    if (bw > c->ram_bytes / 8) bw = c->ram_bytes / 8;
    int64_t t0 = bt_now_ns();
    c->mem_bw_gbps = measure_bw(bw, ms);
    int64_t t1 = bt_now_ns();
    if (c->mem_bw_gbps <= 0.0f)
        return bt_fail(e, -ENOMEM, "caps: no memory for a bandwidth buffer of %llu bytes",
                       (unsigned long long)bw);
    c->matmul_gflops = ops ? measure_matmul(ms) : 0.0f;
    BT_LOG(DEBUG, "caps", "bw_secs=%.3f matmul_secs=%.3f bw_bytes=%llu", (double)(t1 - t0) * 1e-9,
           (double)(bt_now_ns() - t1) * 1e-9, (unsigned long long)bw);
    return 0;
}

int caps_model_ident_head(struct model_ident *id, const char *name, const void *head, size_t len,
                          uint64_t file_size, size_t *need, bt_err *e) {
    memset(id, 0, sizeof *id);
    gguf_t *g = NULL;
    int rc = gguf_parse(&g, head, len, file_size, need, e);
    if (rc) return rc;
    uint64_t off = gguf_data_offset(g);
    gguf_free(g);
    if (off > len) {
        /* The directory fits but its alignment padding does not: ask for the rest. */
        if (need) *need = (size_t)off;
        return bt_fail(e, BT_EMSGSIZE, "%s: head needs %llu bytes, have %zu", name,
                       (unsigned long long)off, len);
    }
    snprintf(id->name, sizeof id->name, "%s", name);
    id->size = file_size;
    id->data_offset = off;
    id->header_xxh3 = XXH3_64bits(head, (size_t)off);
    return 0;
}

int caps_model_ident(struct model_ident *id, const char *path, bt_err *e) {
    memset(id, 0, sizeof *id);
    gguf_t *g = NULL;
    int rc = gguf_open(&g, path, e);
    if (rc) return rc;
    uint64_t off = gguf_data_offset(g), size = gguf_file_size(g);
    gguf_free(g);
    unsigned char *buf = malloc(off ? (size_t)off : 1);
    if (!buf) return bt_fail(e, -ENOMEM, "%s: %llu header bytes", path, (unsigned long long)off);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = bt_fail(e, -errno, "%s: open: %s", path, strerror(errno));
        goto out;
    }
    for (size_t have = 0; have < off;) {
        ssize_t r = pread(fd, buf + have, (size_t)off - have, (off_t)have);
        if (r <= 0) {
            rc = bt_fail(e, r < 0 ? -errno : BT_EFORMAT, "%s: read of the head at %zu failed", path,
                         have);
            goto out;
        }
        have += (size_t)r;
    }
    const char *base = strrchr(path, '/');
    snprintf(id->name, sizeof id->name, "%s", base ? base + 1 : path);
    id->size = size;
    id->data_offset = off;
    id->header_xxh3 = XXH3_64bits(buf, (size_t)off);
out:
    if (fd >= 0) close(fd);
    free(buf);
    return rc;
}
