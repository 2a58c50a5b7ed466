/* tests/bench/bench_loader.c: cold-cache read throughput of engine/loader vs a pread loop and
 * dd, on (a) a whole file and (b) a middle range: the exact tensor bytes of layers [8,16) when
 * the file is a model engine/model understands, else the middle quarter of the file.
 *
 * usage: bench_loader [FILE]   default: the largest *.gguf under build/bench/ or /work/models/,
 * else a generated file build/bench/loader-<N>g.bin (N = $BENCH_GEN_GIB, default 2).
 * Before each run: posix_fadvise(DONTNEED) on the file and, when writable,
 * `echo 1 > /proc/sys/vm/drop_caches`. Each figure is the median of $BENCH_REPS runs (default 3;
 * the methods take turns so drift on a shared machine hits all alike). One line per range;
 * GB = 1e9 bytes. For a GGUF file also the time gguf_open takes to parse its metadata (a
 * Qwen3.5 vocabulary is 248k strings and as many merges), page cache warm, median of reps. */
#include "common/clock.h"
#include "common/log.h"
#include "engine/gguf.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "tests/bench/bench_stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int g_dropped; /* drop_caches was writable */

static void cold_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    int d = open("/proc/sys/vm/drop_caches", O_WRONLY);
    g_dropped = 0;
    if (d >= 0) {
        g_dropped = write(d, "1", 1) == 1;
        close(d);
    }
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Largest *.gguf directly in dir (or one level below) into best/best_size. */
static void scan_gguf(const char *dir, int depth, char *best, size_t cap, uint64_t *best_size) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode) && depth > 0) {
            scan_gguf(p, depth - 1, best, cap, best_size);
            continue;
        }
        size_t n = strlen(de->d_name);
        if (S_ISREG(st.st_mode) && n > 5 && strcmp(de->d_name + n - 5, ".gguf") == 0 &&
            (uint64_t)st.st_size > *best_size) {
            *best_size = (uint64_t)st.st_size;
            snprintf(best, cap, "%s", p);
        }
    }
    closedir(d);
}

/* Writes gib GiB of non-repeating bytes (incompressible, not sparse) and syncs them. */
static int generate(const char *path, int gib) {
    if (file_size(path) == (uint64_t)gib << 30) return 0;
    fprintf(stderr, "bench_loader: writing %d GiB to %s\n", gib, path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -errno;
    size_t n = 8u << 20;
    uint64_t *buf = malloc(n);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int rc = buf ? 0 : -ENOMEM;
    for (uint64_t done = 0; rc == 0 && done < (uint64_t)gib << 30; done += n) {
        for (size_t i = 0; i < n / 8; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = x;
        }
        if (write(fd, buf, n) != (ssize_t)n) rc = -EIO;
    }
    if (rc == 0 && fsync(fd) != 0) /* clean pages, so drop_caches can really drop them */
        rc = -errno;
    free(buf);
    close(fd);
    return rc;
}

struct range {
    const char *const *paths;
    int n_paths;
    struct load_req *reqs;
    int n_reqs;
    uint64_t lo, hi; /* span covered in file 0 (for pread and dd) */
};

static double run_loader(const struct range *r, int direct, uint64_t *bytes_read) {
    cold_cache(r->paths[0]);
    struct loader_opts o = {.backend = LOADER_URING, .direct = direct};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    bt_err e = {0};
    double t0 = bt_now_s();
    int rc = loader_read(&b, r->paths, r->n_paths, r->reqs, r->n_reqs, &o, &st, &e);
    double t = bt_now_s() - t0;
    if (rc) {
        fprintf(stderr, "bench_loader: %s\n", bt_errmsg(&e, rc));
        exit(1);
    }
    if (direct && !st.used_direct)
        fprintf(stderr, "bench_loader: note: O_DIRECT fell back to buffered reads\n");
    *bytes_read = st.bytes_read;
    loader_blob_free(b);
    return (double)st.bytes_read / t * 1e-9;
}

static double run_pread(const struct range *r) {
    cold_cache(r->paths[0]);
    int fd = open(r->paths[0], O_RDONLY);
    size_t n = 1u << 20;
    char *buf = malloc(n);
    if (fd < 0 || !buf) {
        perror("bench_loader: pread");
        exit(1);
    }
    double t0 = bt_now_s();
    uint64_t got = 0;
    for (uint64_t off = r->lo; off < r->hi;) {
        size_t want = r->hi - off < n ? (size_t)(r->hi - off) : n;
        ssize_t k = pread(fd, buf, want, (off_t)off);
        if (k <= 0) break;
        off += (uint64_t)k;
        got += (uint64_t)k;
    }
    double t = bt_now_s() - t0;
    close(fd);
    free(buf);
    return (double)got / t * 1e-9;
}

/* dd with O_DIRECT over the 4 KiB-aligned span of the range (what O_DIRECT must read). The
 * count stays a whole number of blocks even past EOF: dd's direct reads must be aligned, and
 * the read at EOF just comes back short. */
static double run_dd(const struct range *r, uint64_t size) {
    cold_cache(r->paths[0]);
    uint64_t lo = r->lo & ~4095ull, hi = (r->hi + 4095) & ~4095ull;
    char cmd[4600];
    snprintf(cmd, sizeof cmd,
             "dd if='%s' of=/dev/null bs=1M iflag=direct,skip_bytes,count_bytes skip=%" PRIu64
             " count=%" PRIu64 " 2>&1",
             r->paths[0], lo, hi - lo);
    double t0 = bt_now_s();
    FILE *p = popen(cmd, "r");
    if (!p) {
        perror("bench_loader: popen dd");
        return 0;
    }
    char line[512], last[512] = "";
    while (fgets(line, sizeof line, p))
        snprintf(last, sizeof last, "%s", line);
    int st = pclose(p);
    double t = bt_now_s() - t0;
    if (st != 0) {
        fprintf(stderr, "bench_loader: dd failed: %s", last);
        return 0;
    }
    return (double)((hi < size ? hi : size) - lo) / t * 1e-9;
}

#define MAX_REPS 15

static void bench(const char *label, const struct range *r, uint64_t size, int reps) {
    uint64_t req = 0, rd_direct = 0, rd_buf = 0;
    for (int i = 0; i < r->n_reqs; i++)
        req += r->reqs[i].len;
    double v[4][MAX_REPS];
    for (int k = 0; k < reps; k++) {
        v[0][k] = run_loader(r, 1, &rd_direct);
        v[1][k] = run_loader(r, 0, &rd_buf);
        v[2][k] = run_pread(r);
        v[3][k] = run_dd(r, size);
    }
    double ud = bench_median(v[0], reps), ub = bench_median(v[1], reps),
           pr = bench_median(v[2], reps), dd = bench_median(v[3], reps);
    printf("loader %s: uring+direct %.2f GB/s | uring %.2f | pread %.2f | dd %.2f (ratio %.2f) "
           "bytes_req=%" PRIu64 " bytes_read=%" PRIu64 " (direct) %" PRIu64
           " (buffered) file=%" PRIu64 " (%.1f%%) tensors=%d\n",
           label, ud, ub, pr, dd, dd > 0 ? ud / dd : 0.0, req, rd_direct, rd_buf, size,
           100.0 * (double)rd_direct / (double)size, r->n_reqs);
    printf("  runs (GB/s): uring+direct");
    for (int k = 0; k < reps; k++)
        printf(" %.2f", v[0][k]);
    printf(" | dd");
    for (int k = 0; k < reps; k++)
        printf(" %.2f", v[3][k]);
    printf("\n");
    fflush(stdout);
}

/* (c) gguf_open alone: header, key-values (the vocabulary) and tensor table. */
static void bench_metadata(const char *path, int reps) {
    double ms[MAX_REPS];
    int64_t n_tensors = 0;
    for (int r = 0; r < reps; r++) {
        gguf_t *g = NULL;
        bt_err e = {0};
        double t0 = bt_now_s();
        int rc = gguf_open(&g, path, &e);
        ms[r] = (bt_now_s() - t0) * 1e3;
        if (rc) {
            fprintf(stderr, "bench_loader: gguf_open: %s\n", bt_errmsg(&e, rc));
            return;
        }
        n_tensors = gguf_n_tensors(g);
        gguf_free(g);
    }
    for (int i = 1; i < reps; i++) /* insertion sort: a handful of values */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            double t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    printf("bench_loader: metadata gguf_open ms=%.1f (median of %d, warm cache) tensors=%" PRId64
           "\n",
           ms[reps / 2], reps, n_tensors);
}

int main(int argc, char **argv) {
    bt_log_set_level(BT_WARN); /* the loader's per-call INFO line would interleave */
    const char *rs = getenv("BENCH_REPS");
    int reps = rs ? atoi(rs) : 3;
    reps = reps < 1 ? 1 : reps > MAX_REPS ? MAX_REPS : reps;
    char path[4096] = "";
    if (argc > 1) {
        snprintf(path, sizeof path, "%s", argv[1]);
    } else {
        uint64_t best = 0;
        scan_gguf("build/bench", 1, path, sizeof path, &best);
        scan_gguf("/work/models", 1, path, sizeof path, &best);
        if (!best) {
            const char *g = getenv("BENCH_GEN_GIB");
            int gib = g ? atoi(g) : 2;
            if (gib < 1) gib = 1;
            if (mkdir("build", 0755) != 0 && errno != EEXIST) perror("mkdir build");
            if (mkdir("build/bench", 0755) != 0 && errno != EEXIST) perror("mkdir build/bench");
            snprintf(path, sizeof path, "build/bench/loader-%dg.bin", gib);
            int rc = generate(path, gib);
            if (rc) {
                fprintf(stderr, "bench_loader: cannot write %s: %s\n", path, strerror(-rc));
                return 1;
            }
        }
    }
    uint64_t size = file_size(path);
    if (!size) {
        fprintf(stderr, "bench_loader: %s: missing or empty\n", path);
        return 1;
    }
    const char *paths[] = {path};

    /* (a) the whole file */
    struct load_req whole = {.offset = 0, .len = size, .what = "whole file"};
    struct range ra = {paths, 1, &whole, 1, 0, size};
    bench("whole", &ra, size, reps);
    printf("file=%s size=%" PRIu64 " reps=%d cold cache: fadvise DONTNEED + drop_caches=%s\n", path,
           size, reps, g_dropped ? "yes" : "no (not writable)");

    /* (b) layers [8,16) from the model description, else the middle quarter */
    struct model_desc *m = NULL;
    bt_err e = {0};
    struct layer_range lr = {0};
    char label[64];
    struct range rb = {paths, 1, NULL, 0, 0, 0};
    struct load_req mid = {.offset = size / 8 * 3, .len = size / 4, .what = "middle quarter"};
    if (model_open(&m, path, &e) == 0) {
        int n = m->hp.n_layer, lo = 8, hi = 16;
        if (n < 16) lo = n / 4, hi = n / 2 > lo ? n / 2 : lo + 1;
        if (model_range(m, lo, hi, &lr, &e) == 0 && m->n_files == 1) {
            rb.reqs = calloc((size_t)lr.n, sizeof *rb.reqs);
            rb.n_reqs = lr.n;
            rb.lo = UINT64_MAX;
            for (int i = 0; i < lr.n; i++) {
                const struct tensor_desc *t = lr.tensors[i];
                rb.reqs[i] = (struct load_req){
                    .file = 0, .offset = t->offset, .len = t->n_bytes, .what = t->name};
                if (t->offset < rb.lo) rb.lo = t->offset;
                if (t->offset + t->n_bytes > rb.hi) rb.hi = t->offset + t->n_bytes;
            }
            snprintf(label, sizeof label, "layers[%d,%d)", lo, hi);
        } else {
            fprintf(stderr, "bench_loader: model_range: %s\n", e.msg);
        }
    } else {
        fprintf(stderr, "bench_loader: not a model engine/model reads (%s): middle quarter\n",
                e.msg);
    }
    if (!rb.reqs) {
        rb.reqs = &mid;
        rb.n_reqs = 1;
        rb.lo = mid.offset;
        rb.hi = mid.offset + mid.len;
        snprintf(label, sizeof label, "middle-quarter");
    }
    bench(label, &rb, size, reps);
    if (rb.reqs != &mid) free(rb.reqs);
    free(lr.tensors);
    model_close(m);
    bench_metadata(path, reps);
    return 0;
}
