/* tests/test_loader.c: engine/loader against files of known content: exact bytes for arbitrary
 * unaligned ranges on every backend and O_DIRECT setting, coalescing, EOF and checksum errors,
 * bytes actually read, progress, and injected read faults. Files live on a real file system
 * (/var/tmp, else the working directory) so O_DIRECT is really exercised. */
#include "engine/loader.h"
#include "tests/fixtures.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <xxhash.h>

#define FILE_SIZE ((3u << 20) + 123u) /* not a multiple of 4096: exercises the O_DIRECT tail */

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64*: reproducible content and ranges */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

struct tfile {
    char path[256];
    unsigned char *bytes;
    size_t size;
};

/* Writes size pseudo-random bytes (seeded) to a new file on a disk-backed directory. */
static void tfile_make(struct tfile *t, size_t size, uint64_t seed) {
    const char *dirs[] = {"/var/tmp", "."};
    int fd = -1;
    for (size_t i = 0; i < 2 && fd < 0; i++) {
        snprintf(t->path, sizeof t->path, "%s/bt_test_loader_XXXXXX", dirs[i]);
        fd = mkstemp(t->path);
    }
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    t->size = size;
    t->bytes = malloc(size ? size : 1);
    cr_assert(t->bytes);
    rng_state = seed | 1;
    for (size_t i = 0; i < size; i++)
        t->bytes[i] = (unsigned char)(rnd() >> 56);
    cr_assert_eq(write(fd, t->bytes, size), (ssize_t)size);
    close(fd);
}

static void tfile_free(struct tfile *t) {
    unlink(t->path);
    free(t->bytes);
}

static int on_tmpfs(const char *path) {
    struct statfs s;
    return statfs(path, &s) == 0 && s.f_type == 0x01021994; /* TMPFS_MAGIC */
}

/* Random requests over a file of size n: unaligned offsets/lengths, some zero-length. */
static void random_reqs(struct load_req *r, int n_reqs, int file, size_t n, uint64_t seed) {
    rng_state = seed | 1;
    for (int i = 0; i < n_reqs; i++) {
        uint64_t len = rnd() % 150000;
        if (i % 17 == 0) len = 0;
        if (len > n) len = n;
        uint64_t off = rnd() % (n - len + 1);
        r[i] = (struct load_req){.file = file, .offset = off, .len = len};
    }
}

static void check_bytes(const struct load_req *r, int n, const unsigned char *const *content) {
    for (int i = 0; i < n; i++) {
        cr_assert_not_null(r[i].data, "req %d has no data", i);
        cr_assert(memcmp(r[i].data, content[r[i].file] + r[i].offset, r[i].len) == 0,
                  "req %d (file %d, offset %llu, len %llu) differs", i, r[i].file,
                  (unsigned long long)r[i].offset, (unsigned long long)r[i].len);
    }
}

static void exact_ranges(int backend, int direct) {
    struct tfile t;
    tfile_make(&t, FILE_SIZE, 42);
    struct load_req r[120];
    random_reqs(r, 120, 0, t.size, 7 + (uint64_t)backend * 2 + (uint64_t)direct);
    r[0] = (struct load_req){.offset = t.size - 50, .len = 50}; /* tail, past the last block */
    r[1] = (struct load_req){.offset = 1, .len = 4095};         /* inside the first block */
    const char *paths[] = {t.path};
    struct loader_opts o = {
        .backend = backend, .direct = direct, .chunk = 64 << 10, .queue_depth = 4};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    bt_err e = {0};
    int rc = loader_read(&b, paths, 1, r, 120, &o, &st, &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    const unsigned char *content[] = {t.bytes};
    check_bytes(r, 120, content);
    cr_assert_eq(st.used_uring, backend == LOADER_URING);
    cr_assert_eq(st.used_direct, direct && !on_tmpfs(t.path));
    uint64_t req = 0;
    for (int i = 0; i < 120; i++)
        req += r[i].len;
    cr_assert_eq(st.bytes_req, req);
    cr_assert(st.n_extents >= 1);
    /* 120 requests of up to 150 kB over 3 MiB: mostly one extent; never more than read. */
    cr_assert(st.bytes_read <= t.size, "read %llu of a %zu-byte file",
              (unsigned long long)st.bytes_read, t.size);
    loader_blob_free(b);
    tfile_free(&t);
}

Test(loader, exact_ranges_uring_buffered) {
    exact_ranges(LOADER_URING, 0);
}
Test(loader, exact_ranges_uring_direct) {
    exact_ranges(LOADER_URING, 1);
}
Test(loader, exact_ranges_pread_buffered) {
    exact_ranges(LOADER_PREAD, 0);
}
Test(loader, exact_ranges_pread_direct) {
    exact_ranges(LOADER_PREAD, 1);
}

Test(loader, auto_backend_uses_uring_here) {
    struct tfile t;
    tfile_make(&t, 100000, 3);
    struct load_req r = {.offset = 10, .len = 99000};
    const char *paths[] = {t.path};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    bt_err e = {0};
    cr_assert_eq(loader_read(&b, paths, 1, &r, 1, NULL, &st, &e), 0, "%s", e.msg);
    cr_assert(memcmp(r.data, t.bytes + 10, 99000) == 0);
    /* AUTO falls back to pread only when io_uring setup is refused; both are correct. */
    cr_assert(st.used_uring == 1 || st.used_uring == 0);
    cr_assert_eq(st.used_direct, 0, "direct was not asked for");
    loader_blob_free(b);
    tfile_free(&t);
}

/* The real GGUF fixture: arbitrary ranges and the whole file match pread. */
Test(loader, fixture_gguf_matches_pread) {
    const char *path = fixture_path("tiny-a/gguf/model-q8_0.gguf");
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    size_t n = (size_t)sb.st_size;
    unsigned char *ref = malloc(n);
    cr_assert(ref);
    cr_assert_eq(pread(fd, ref, n, 0), (ssize_t)n);
    close(fd);

    for (int direct = 0; direct <= 1; direct++) {
        for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
            struct load_req r[41];
            random_reqs(r, 40, 0, n, 99 + (uint64_t)direct);
            r[40] = (struct load_req){.offset = 0, .len = n, .what = "whole file"};
            const char *paths[] = {path};
            struct loader_opts o = {.backend = backend, .direct = direct};
            loader_blob_t *b = NULL;
            bt_err e = {0};
            cr_assert_eq(loader_read(&b, paths, 1, r, 41, &o, NULL, &e), 0, "%s", e.msg);
            const unsigned char *content[] = {ref};
            check_bytes(r, 41, content);
            loader_blob_free(b);
        }
    }
    free(ref);
}

Test(loader, several_files) {
    struct tfile t[3];
    for (int i = 0; i < 3; i++)
        tfile_make(&t[i], 500000 + (size_t)i * 77777, 100 + (uint64_t)i);
    struct load_req r[90];
    for (int i = 0; i < 3; i++)
        random_reqs(r + 30 * i, 30, i, t[i].size, 5 + (uint64_t)i);
    /* interleave files so sorting has work to do */
    for (int i = 0; i < 90; i += 2) {
        struct load_req tmp = r[i];
        r[i] = r[89 - i];
        r[89 - i] = tmp;
    }
    const char *paths[] = {t[0].path, t[1].path, t[2].path};
    const unsigned char *content[] = {t[0].bytes, t[1].bytes, t[2].bytes};
    for (int direct = 0; direct <= 1; direct++) {
        struct loader_opts o = {.backend = LOADER_URING, .direct = direct, .chunk = 32 << 10};
        struct loader_stats st;
        loader_blob_t *b = NULL;
        bt_err e = {0};
        cr_assert_eq(loader_read(&b, paths, 3, r, 90, &o, &st, &e), 0, "%s", e.msg);
        check_bytes(r, 90, content);
        cr_assert(st.n_extents >= 3, "extents never span files: %d", st.n_extents);
        loader_blob_free(b);
    }
    for (int i = 0; i < 3; i++)
        tfile_free(&t[i]);
}

Test(loader, overlapping_and_adjacent_share_one_extent) {
    struct tfile t;
    tfile_make(&t, 200000, 11);
    struct load_req r[] = {
        {.offset = 3000, .len = 6000},                              /* overlaps the next */
        {.offset = 100, .len = 4900},  {.offset = 9000, .len = 10}, /* adjacent to the first */
        {.offset = 100, .len = 4900},                               /* duplicate */
        {.offset = 9010, .len = 0},                                 /* zero-length, adjacent */
    };
    const char *paths[] = {t.path};
    struct loader_opts o = {.backend = LOADER_URING};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    bt_err e = {0};
    cr_assert_eq(loader_read(&b, paths, 1, r, 5, &o, &st, &e), 0, "%s", e.msg);
    const unsigned char *content[] = {t.bytes};
    check_bytes(r, 5, content);
    cr_assert_eq(st.n_extents, 1);
    cr_assert_eq((char *)r[0].data - (char *)r[1].data, 2900, "overlaps share bytes");
    cr_assert_eq(r[1].data, r[3].data);
    cr_assert_eq(st.bytes_read, 9010 - 100, "union of the ranges, read once");
    loader_blob_free(b);
    tfile_free(&t);
}

Test(loader, zero_length_requests) {
    struct tfile t;
    tfile_make(&t, 10000, 12);
    struct load_req r[] = {{.offset = 5, .len = 0}, {.offset = 10000, .len = 0}};
    const char *paths[] = {t.path};
    for (int backend = LOADER_AUTO; backend <= LOADER_PREAD; backend++) {
        struct loader_opts o = {.backend = backend, .direct = 1};
        struct loader_stats st;
        loader_blob_t *b = NULL;
        bt_err e = {0};
        cr_assert_eq(loader_read(&b, paths, 1, r, 2, &o, &st, &e), 0, "%s", e.msg);
        cr_assert_not_null(r[0].data);
        cr_assert_not_null(r[1].data);
        cr_assert_eq(st.bytes_read, 0);
        cr_assert_eq(st.bytes_req, 0);
        cr_assert_eq(st.n_extents, 0);
        loader_blob_free(b);
    }
    /* no requests at all */
    loader_blob_t *b = NULL;
    cr_assert_eq(loader_read(&b, paths, 1, NULL, 0, NULL, NULL, NULL), 0);
    cr_assert_not_null(b);
    loader_blob_free(b);
    tfile_free(&t);
}

Test(loader, range_beyond_eof_names_request) {
    struct tfile t;
    tfile_make(&t, 10000, 13);
    struct load_req r[] = {{.offset = 0, .len = 100, .what = "ok"},
                           {.offset = 9990, .len = 20, .what = "blk.9.ffn_up.weight"}};
    const char *paths[] = {t.path};
    for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
        loader_blob_t *b = (loader_blob_t *)&r; /* must be reset */
        bt_err e = {0};
        struct loader_opts o = {.backend = backend};
        int rc = loader_read(&b, paths, 1, r, 2, &o, NULL, &e);
        cr_assert_eq(rc, BT_EFORMAT);
        cr_assert_null(b);
        cr_assert_null(r[0].data);
        cr_assert(strstr(e.msg, "blk.9.ffn_up.weight") && strstr(e.msg, t.path), "%s", e.msg);
    }
    struct load_req z = {.offset = 10001, .len = 0, .what = "empty"};
    loader_blob_t *b = NULL;
    cr_assert_eq(loader_read(&b, paths, 1, &z, 1, NULL, NULL, NULL), BT_EFORMAT,
                 "a zero-length request past EOF is still a bad offset");
    tfile_free(&t);
}

Test(loader, bad_arguments_and_missing_file) {
    struct tfile t;
    tfile_make(&t, 1000, 14);
    struct load_req r = {.file = 1, .offset = 0, .len = 10, .what = "x"};
    const char *paths[] = {t.path, "/nonexistent/bt_loader_missing.gguf"};
    loader_blob_t *b = NULL;
    bt_err e = {0};
    cr_assert_eq(loader_read(&b, paths, 1, &r, 1, NULL, NULL, &e), BT_EINVAL);
    cr_assert(strstr(e.msg, "file index 1"), "%s", e.msg);
    cr_assert_eq(loader_read(&b, paths, 2, &r, 1, NULL, NULL, &e), -ENOENT);
    cr_assert(strstr(e.msg, "bt_loader_missing.gguf"), "%s", e.msg);
    r = (struct load_req){.offset = UINT64_MAX - 5, .len = 10, .what = "wrap"};
    cr_assert_eq(loader_read(&b, paths, 1, &r, 1, NULL, NULL, &e), BT_EINVAL);
    cr_assert_null(b);
    tfile_free(&t);
}

Test(loader, checksums) {
    struct tfile t;
    tfile_make(&t, 300000, 15);
    struct load_req r[] = {
        {.offset = 1000, .len = 5000, .what = "blk.0.attn_q.weight"},
        {.offset = 200000, .len = 7000, .what = "blk.1.ffn_down.weight"},
    };
    r[0].xxh3 = XXH3_64bits(t.bytes + 1000, 5000);
    r[1].xxh3 = XXH3_64bits(t.bytes + 200000, 7000);
    const char *paths[] = {t.path};
    for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
        struct loader_opts o = {.backend = backend, .direct = 1};
        loader_blob_t *b = NULL;
        bt_err e = {0};
        cr_assert_eq(loader_read(&b, paths, 1, r, 2, &o, NULL, &e), 0, "%s", e.msg);
        loader_blob_free(b);
        r[1].xxh3 ^= 1;
        cr_assert_eq(loader_read(&b, paths, 1, r, 2, &o, NULL, &e), BT_ECHECKSUM);
        cr_assert(strstr(e.msg, "blk.1.ffn_down.weight"), "%s", e.msg);
        cr_assert_null(b);
        r[1].xxh3 ^= 1;
    }
    tfile_free(&t);
}

/* "Reads only those bytes": far-apart requests read exactly their bytes when buffered, and
 * at most one 4 KiB block more per extent end with O_DIRECT; a small gap is read through. */
Test(loader, reads_only_requested_bytes) {
    struct tfile t;
    tfile_make(&t, FILE_SIZE, 16);
    struct load_req r[] = {
        {.offset = 12345, .len = 100000},
        {.offset = 1000000, .len = 333333},
        {.offset = 2500001, .len = 17},
        {.offset = FILE_SIZE - 99, .len = 99},
    };
    uint64_t req = 0;
    for (int i = 0; i < 4; i++)
        req += r[i].len;
    const char *paths[] = {t.path};
    const unsigned char *content[] = {t.bytes};
    for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
        for (int direct = 0; direct <= 1; direct++) {
            struct loader_opts o = {.backend = backend, .direct = direct};
            struct loader_stats st;
            loader_blob_t *b = NULL;
            bt_err e = {0};
            cr_assert_eq(loader_read(&b, paths, 1, r, 4, &o, &st, &e), 0, "%s", e.msg);
            check_bytes(r, 4, content);
            cr_assert_eq(st.n_extents, 4);
            cr_assert_eq(st.bytes_req, req);
            if (!st.used_direct)
                cr_assert_eq(st.bytes_read, req, "buffered reads exactly the requested bytes");
            cr_assert(st.bytes_read >= req && st.bytes_read <= req + 4 * 2 * 4096,
                      "read %llu for %llu requested", (unsigned long long)st.bytes_read,
                      (unsigned long long)req);
            loader_blob_free(b);
        }
    }
    /* Two requests 1000 bytes apart: one extent, the gap read through. */
    struct load_req g[] = {{.offset = 0, .len = 5000}, {.offset = 6000, .len = 5000}};
    struct loader_opts o = {.backend = LOADER_URING};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    cr_assert_eq(loader_read(&b, paths, 1, g, 2, &o, &st, NULL), 0);
    check_bytes(g, 2, content);
    cr_assert_eq(st.n_extents, 1);
    cr_assert_eq(st.bytes_read, 11000);
    loader_blob_free(b);
    tfile_free(&t);
}

struct prog {
    uint64_t last, total;
    int calls, monotonic;
};
static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    struct prog *p = ctx;
    if (done < p->last || done > total || (p->calls && total != p->total)) p->monotonic = 0;
    p->last = done;
    p->total = total;
    p->calls++;
}

Test(loader, progress_monotonic_to_total) {
    struct tfile t;
    tfile_make(&t, FILE_SIZE, 17);
    struct load_req r[] = {{.offset = 0, .len = 1 << 20},
                           {.offset = 2 << 20, .len = FILE_SIZE - (2 << 20)}};
    const char *paths[] = {t.path};
    for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
        struct prog p = {.monotonic = 1};
        struct loader_opts o = {
            .backend = backend, .chunk = 16 << 10, .progress = on_progress, .progress_ctx = &p};
        struct loader_stats st;
        loader_blob_t *b = NULL;
        cr_assert_eq(loader_read(&b, paths, 1, r, 2, &o, &st, NULL), 0);
        cr_assert(p.monotonic);
        cr_assert(p.calls >= 16, "only %d progress calls", p.calls);
        cr_assert_eq(p.last, p.total);
        cr_assert_eq(p.total, st.bytes_read);
        loader_blob_free(b);
    }
    tfile_free(&t);
}

#ifndef NDEBUG
/* Step the failing read up until the load succeeds: every failure is clean (-EIO naming the
 * file, no blob, no data pointers), and the success is exact. */
Test(loader, fault_injection_every_read) {
    struct tfile t;
    tfile_make(&t, 300000, 18);
    struct load_req r[3];
    random_reqs(r, 3, 0, t.size, 19);
    r[0] = (struct load_req){.offset = 0, .len = 100000};
    const char *paths[] = {t.path};
    const unsigned char *content[] = {t.bytes};
    for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
        for (int direct = 0; direct <= 1; direct++) {
            int n = 1, rc;
            for (;; n++) {
                char v[16];
                snprintf(v, sizeof v, "%d", n);
                setenv("BT_FAULT_IO", v, 1);
                struct loader_opts o = {
                    .backend = backend, .direct = direct, .chunk = 8192, .queue_depth = 3};
                loader_blob_t *b = NULL;
                bt_err e = {0};
                rc = loader_read(&b, paths, 1, r, 3, &o, NULL, &e);
                if (rc == 0) {
                    check_bytes(r, 3, content);
                    loader_blob_free(b);
                    break;
                }
                cr_assert_eq(rc, -EIO, "read %d: %s", n, e.msg);
                cr_assert(strstr(e.msg, t.path) && strstr(e.msg, "offset"), "%s", e.msg);
                cr_assert_null(b);
                cr_assert_null(r[0].data);
                cr_assert(n < 1000, "never succeeded");
            }
            cr_assert(n > 10, "only %d reads for ~40 chunks?", n);
        }
    }
    unsetenv("BT_FAULT_IO");
    tfile_free(&t);
}

/* An O_DIRECT read refused with EINVAL switches the file to buffered reads and still loads. */
Test(loader, direct_einval_falls_back_to_buffered) {
    struct tfile t;
    tfile_make(&t, 300000, 20);
    struct load_req r[] = {{.offset = 777, .len = 250000}};
    const char *paths[] = {t.path};
    const unsigned char *content[] = {t.bytes};
    setenv("BT_FAULT_IO_ERRNO", "22", 1);
    for (int backend = LOADER_URING; backend <= LOADER_PREAD; backend++) {
        setenv("BT_FAULT_IO", "2", 1);
        struct loader_opts o = {.backend = backend, .direct = 1, .chunk = 65536};
        struct loader_stats st;
        loader_blob_t *b = NULL;
        bt_err e = {0};
        cr_assert_eq(loader_read(&b, paths, 1, r, 1, &o, &st, &e), 0, "%s", e.msg);
        check_bytes(r, 1, content);
        cr_assert_eq(st.used_direct, 0, "fell back");
        loader_blob_free(b);
    }
    unsetenv("BT_FAULT_IO");
    unsetenv("BT_FAULT_IO_ERRNO");
    tfile_free(&t);
}
#endif

/* tmpfs may refuse O_DIRECT at open (older kernels) or accept it (6.6+): either way the bytes
 * are right and used_direct says which happened. */
Test(loader, direct_on_tmpfs) {
    if (access("/dev/shm", W_OK) != 0 || !on_tmpfs("/dev/shm"))
        cr_skip_test("no writable tmpfs at /dev/shm");
    struct tfile t;
    snprintf(t.path, sizeof t.path, "/dev/shm/bt_test_loader_XXXXXX");
    int fd = mkstemp(t.path);
    cr_assert(fd >= 0);
    t.size = 100000;
    t.bytes = malloc(t.size);
    rng_state = 21;
    for (size_t i = 0; i < t.size; i++)
        t.bytes[i] = (unsigned char)(rnd() >> 56);
    cr_assert_eq(write(fd, t.bytes, t.size), (ssize_t)t.size);
    close(fd);
    int probe = open(t.path, O_RDONLY | O_DIRECT);
    int accepts = probe >= 0;
    if (probe >= 0) close(probe);
    struct load_req r[] = {{.offset = 3, .len = 99990}};
    const char *paths[] = {t.path};
    const unsigned char *content[] = {t.bytes};
    struct loader_opts o = {.backend = LOADER_URING, .direct = 1};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    bt_err e = {0};
    cr_assert_eq(loader_read(&b, paths, 1, r, 1, &o, &st, &e), 0, "%s", e.msg);
    check_bytes(r, 1, content);
    if (!accepts) cr_assert_eq(st.used_direct, 0);
    loader_blob_free(b);
    tfile_free(&t);
}

#ifndef NDEBUG
/* Without io_uring, AUTO uses pread (one log line) and URING reports the setup error. */
Test(loader, no_uring_falls_back_to_pread) {
    struct tfile t;
    tfile_make(&t, 200000, 22);
    struct load_req r[] = {{.offset = 10, .len = 150000}};
    const char *paths[] = {t.path};
    const unsigned char *content[] = {t.bytes};
    setenv("BT_FAULT_URING", "1", 1);
    struct loader_opts o = {.backend = LOADER_AUTO, .direct = 1};
    struct loader_stats st;
    loader_blob_t *b = NULL;
    bt_err e = {0};
    cr_assert_eq(loader_read(&b, paths, 1, r, 1, &o, &st, &e), 0, "%s", e.msg);
    check_bytes(r, 1, content);
    cr_assert_eq(st.used_uring, 0);
    loader_blob_free(b);
    o.backend = LOADER_URING;
    cr_assert_eq(loader_read(&b, paths, 1, r, 1, &o, &st, &e), -ENOSYS);
    cr_assert_null(b);
    unsetenv("BT_FAULT_URING");
    tfile_free(&t);
}
#endif

/* A load over 64 MiB prefaults the blob from a helper thread while reading: the bytes must
 * still be exactly the file's. A sparse file keeps this fast: zeros plus written islands. */
Test(loader, large_blob_with_prefault_thread) {
    struct tfile t;
    tfile_make(&t, 1 << 20, 23);
    size_t big = 80u << 20;
    int fd = open(t.path, O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(ftruncate(fd, (off_t)big), 0);
    unsigned char *ref = calloc(big, 1);
    cr_assert(ref);
    memcpy(ref, t.bytes, 1 << 20);
    for (size_t off = 9u << 20; off < big; off += 13u << 20) { /* islands further in */
        cr_assert_eq(pwrite(fd, t.bytes, 1 << 20, (off_t)off), 1 << 20);
        memcpy(ref + off, t.bytes, 1 << 20);
    }
    close(fd);
    struct load_req r[] = {{.offset = 0, .len = big - 5}, {.offset = 70u << 20, .len = 12345}};
    const char *paths[] = {t.path};
    const unsigned char *content[] = {ref};
    for (int direct = 0; direct <= 1; direct++) {
        struct loader_opts o = {.backend = LOADER_URING, .direct = direct};
        loader_blob_t *b = NULL;
        bt_err e = {0};
        cr_assert_eq(loader_read(&b, paths, 1, r, 2, &o, NULL, &e), 0, "%s", e.msg);
        check_bytes(r, 2, content);
        loader_blob_free(b);
    }
    free(ref);
    tfile_free(&t);
}
