/* engine/loader.c: coalesced, aligned, asynchronous reads of byte ranges (engine/loader.h).
 *
 * Plan: sort requests by (file, offset), merge neighbours closer than MERGE_GAP into extents
 * (with O_DIRECT, on their 4 KiB-aligned supersets), give each extent a 4 KiB-aligned slot in
 * one anonymous mapping, then read every extent in chunks of opts.chunk bytes: io_uring with
 * queue_depth reads in flight, or a pread loop. Short reads resubmit the remainder; reading 0
 * bytes (EOF) is fine only past the last requested byte of the extent (O_DIRECT tails).
 * Checksums are verified extent by extent as soon as an extent is complete, so hashing
 * overlaps the reads still in flight.
 *
 * Fault injection: unless built with NDEBUG, BT_FAULT_IO=n makes the nth read issued by one
 * loader_read() call fail with -EIO (or -BT_FAULT_IO_ERRNO, e.g. 22 to exercise the EINVAL
 * fallback from O_DIRECT to buffered reads) without touching the file; BT_FAULT_URING=1 makes
 * io_uring setup fail with -ENOSYS. */
#include "engine/loader.h"

#include "common/assert.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define ALIGN         4096u       /* O_DIRECT granularity, and blob slot alignment */
#define MERGE_GAP     (64u << 10) /* read through gaps smaller than this: one I/O, not two */
#define DEFAULT_CHUNK (1u << 20)
#define MAX_CHUNK     (64u << 20) /* well under the 2 GiB a single read may return */
#define DEFAULT_QD    16
/* Buffered io_uring reads with more than ~8 MiB in flight collapsed to 0.2-0.7 GB/s here
 * (io-wq workers defeating readahead), against 2.5-2.9 GB/s at 4-8 MiB: cap them. */
#define BUFFERED_INFLIGHT (8u << 20)
#define MAX_QD            1024
#define PROGRESS_EVERY    (64ull << 20)

struct loader_blob {
    void *base;
    size_t size; /* mapping length */
};

struct file_state {
    const char *path;
    int fd_direct;   /* -1 when not opened with O_DIRECT (not asked, or refused) */
    int fd_buffered; /* opened lazily when O_DIRECT is refused or not asked for */
    uint64_t size;
};

struct extent {
    int file;
    uint64_t lo, hi;  /* file range read: [lo, hi), aligned when direct */
    uint64_t need;    /* last requested byte + 1: EOF before this is an error */
    size_t blob_off;  /* where lo lands in the blob */
    int r0, r1;       /* its requests: order[r0..r1) */
    uint64_t pending; /* bytes of [lo, hi) not yet complete */
};

/* One read in flight: [off + done, off + len) of a file into dst + done. */
struct chunk {
    int ext;
    uint64_t off;
    uint32_t len, done;
    char *dst;
    int direct; /* issued on fd_direct */
};

struct ctx {
    const char *const *paths;
    struct load_req *reqs;
    int n_reqs;
    int *order; /* request indices sorted by (file, offset), zero-length ones excluded */
    int n_order;
    struct file_state *files;
    int n_files;
    struct extent *ext;
    int n_ext;
    char *blob;
    uint64_t chunk;
    int qd;
    int want_direct;
    int fell_back; /* some file refused O_DIRECT */
    /* cursor: next chunk to issue */
    int cur_ext;
    uint64_t cur_off;
    /* accounting */
    uint64_t bytes_read, total, done, reported;
    void (*progress)(void *, uint64_t, uint64_t);
    void *progress_ctx;
    /* fault injection */
    long fault_at, n_issued;
    int fault_errno;
    bt_err *e;
};

static int cmp_req(const void *a, const void *b, void *arg) {
    const struct load_req *r = arg;
    const struct load_req *x = &r[*(const int *)a], *y = &r[*(const int *)b];
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return 0;
}

static uint64_t align_down(uint64_t x) {
    return x & ~(uint64_t)(ALIGN - 1);
}

static uint64_t align_up(uint64_t x) {
    return (x + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
}

static const char *req_name(const struct load_req *r) {
    return r->what ? r->what : "(unnamed)";
}

/* Buffered reads: whole extents are read front to back, so ask for the larger readahead. */
static int open_buffered(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return fd;
}

static int open_files(struct ctx *c) {
    for (int i = 0; i < c->n_files; i++) {
        struct file_state *f = &c->files[i];
        f->path = c->paths[i];
        f->fd_direct = f->fd_buffered = -1;
        if (!f->path) return bt_fail(c->e, BT_EINVAL, "loader: paths[%d] is NULL", i);
        if (c->want_direct) {
            f->fd_direct = open(f->path, O_RDONLY | O_CLOEXEC | O_DIRECT);
            if (f->fd_direct < 0 && errno != EINVAL)
                return bt_fail(c->e, -errno, "loader: open %s: %s", f->path, strerror(errno));
            if (f->fd_direct < 0) {
                BT_LOG(WARN, "loader", "%s refuses O_DIRECT, using buffered reads", f->path);
                c->fell_back = 1;
            }
        }
        if (f->fd_direct < 0) {
            f->fd_buffered = open_buffered(f->path);
            if (f->fd_buffered < 0)
                return bt_fail(c->e, -errno, "loader: open %s: %s", f->path, strerror(errno));
        }
        struct stat st;
        if (fstat(f->fd_direct >= 0 ? f->fd_direct : f->fd_buffered, &st) != 0)
            return bt_fail(c->e, -errno, "loader: stat %s: %s", f->path, strerror(errno));
        f->size = (uint64_t)st.st_size;
    }
    return 0;
}

static void close_files(struct ctx *c) {
    if (!c->files) return;
    for (int i = 0; i < c->n_files; i++) {
        if (c->files[i].fd_direct >= 0) close(c->files[i].fd_direct);
        if (c->files[i].fd_buffered >= 0) close(c->files[i].fd_buffered);
    }
}

/* A read on fd_direct came back EINVAL (the file system accepted the open flag but not the
 * read): switch this file to buffered reads for the rest of the call. */
static int fall_back(struct ctx *c, int file) {
    struct file_state *f = &c->files[file];
    if (f->fd_buffered < 0) {
        f->fd_buffered = open_buffered(f->path);
        if (f->fd_buffered < 0)
            return bt_fail(c->e, -errno, "loader: open %s: %s", f->path, strerror(errno));
        BT_LOG(WARN, "loader", "%s: O_DIRECT read refused (EINVAL), using buffered reads", f->path);
    }
    if (f->fd_direct >= 0) {
        close(f->fd_direct);
        f->fd_direct = -1;
    }
    c->fell_back = 1;
    return 0;
}

/* Validates requests, sorts them and merges them into extents laid out in the blob. */
static int plan(struct ctx *c, uint64_t *bytes_req) {
    *bytes_req = 0;
    for (int i = 0; i < c->n_reqs; i++) {
        struct load_req *r = &c->reqs[i];
        r->data = NULL;
        if (r->file < 0 || r->file >= c->n_files)
            return bt_fail(c->e, BT_EINVAL, "loader: request %s: file index %d not in [0,%d)",
                           req_name(r), r->file, c->n_files);
        if (r->len > UINT64_MAX - r->offset)
            return bt_fail(c->e, BT_EINVAL,
                           "loader: request %s: offset %" PRIu64 " + len %" PRIu64 " overflows",
                           req_name(r), r->offset, r->len);
        const struct file_state *f = &c->files[r->file];
        if (r->offset + r->len > f->size)
            return bt_fail(c->e, BT_EFORMAT,
                           "loader: request %s: bytes [%" PRIu64 ", %" PRIu64
                           ") beyond the end of %s (size %" PRIu64 ")",
                           req_name(r), r->offset, r->offset + r->len, f->path, f->size);
        if (r->len == 0) continue;
        c->order[c->n_order++] = i;
        *bytes_req += r->len;
    }
    qsort_r(c->order, (size_t)c->n_order, sizeof *c->order, cmp_req, c->reqs);

    size_t blob_off = 0;
    for (int k = 0; k < c->n_order; k++) {
        const struct load_req *r = &c->reqs[c->order[k]];
        uint64_t lo = r->offset, hi = r->offset + r->len;
        if (c->want_direct) {
            lo = align_down(lo);
            hi = align_up(hi);
        }
        struct extent *x = c->n_ext ? &c->ext[c->n_ext - 1] : NULL;
        if (x && x->file == r->file && lo <= x->hi + MERGE_GAP) {
            if (hi > x->hi) {
                blob_off += align_up(hi - x->lo) - align_up(x->hi - x->lo);
                x->hi = hi;
            }
            if (r->offset + r->len > x->need) x->need = r->offset + r->len;
            x->r1 = k + 1;
            continue;
        }
        x = &c->ext[c->n_ext++];
        *x = (struct extent){.file = r->file,
                             .lo = lo,
                             .hi = hi,
                             .need = r->offset + r->len,
                             .blob_off = blob_off,
                             .r0 = k,
                             .r1 = k + 1};
        blob_off += align_up(hi - lo);
    }
    for (int i = 0; i < c->n_ext; i++) {
        c->ext[i].pending = c->ext[i].hi - c->ext[i].lo;
        c->total += c->ext[i].pending;
    }
    return 0;
}

static int alloc_blob(loader_blob_t *b, size_t size, bt_err *e) {
    b->size = size ? size : ALIGN; /* zero-length requests still get a valid pointer */
    void *p = mmap(NULL, b->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return bt_fail(e, -errno, "loader: cannot map %zu bytes for the blob: %s", b->size,
                       strerror(errno));
    /* Huge pages cut the page-fault cost of touching gigabytes once; advisory only. */
    if (b->size >= (2u << 20)) (void)madvise(p, b->size, MADV_HUGEPAGE);
    b->base = p;
    return 0;
}

/* An extent is complete: point its requests into the blob and verify their checksums. */
static int finish_extent(struct ctx *c, int xi) {
    const struct extent *x = &c->ext[xi];
    for (int k = x->r0; k < x->r1; k++) {
        struct load_req *r = &c->reqs[c->order[k]];
        r->data = c->blob + x->blob_off + (r->offset - x->lo);
        if (r->xxh3) {
            uint64_t h = XXH3_64bits(r->data, (size_t)r->len);
            if (h != r->xxh3)
                return bt_fail(c->e, BT_ECHECKSUM,
                               "loader: request %s (%s at offset %" PRIu64 ", %" PRIu64
                               " bytes): xxh3 %016" PRIx64 ", expected %016" PRIx64,
                               req_name(r), c->files[x->file].path, r->offset, r->len, h, r->xxh3);
        }
    }
    return 0;
}

static void report(struct ctx *c, uint64_t n) {
    c->done += n;
    /* Every 64 MiB at most, and in ~32 steps on small loads so a progress bar still moves. */
    uint64_t step = c->total / 32 < PROGRESS_EVERY ? c->total / 32 : PROGRESS_EVERY;
    if (c->progress && (c->done - c->reported >= step || c->done == c->total)) {
        c->reported = c->done;
        c->progress(c->progress_ctx, c->done, c->total);
    }
}

/* Next chunk to issue from the cursor; 0 when every extent is issued. */
static int next_chunk(struct ctx *c, struct chunk *k) {
    if (c->cur_ext >= c->n_ext) return 0;
    const struct extent *x = &c->ext[c->cur_ext];
    uint64_t off = x->lo + c->cur_off, left = x->hi - off;
    uint64_t len = left < c->chunk ? left : c->chunk;
    *k = (struct chunk){.ext = c->cur_ext,
                        .off = off,
                        .len = (uint32_t)len,
                        .dst = c->blob + x->blob_off + c->cur_off};
    c->cur_off += len;
    if (c->cur_off >= x->hi - x->lo) {
        c->cur_ext++;
        c->cur_off = 0;
    }
    return 1;
}

/* Fault injection: 0, or the negated errno the nth read should fail with. */
static int fault_hit(struct ctx *c) {
    c->n_issued++;
#ifndef NDEBUG
    if (c->fault_at > 0 && c->n_issued == c->fault_at) return -c->fault_errno;
#endif
    return 0;
}

static int chunk_fd(struct ctx *c, struct chunk *k) {
    const struct file_state *f = &c->files[c->ext[k->ext].file];
    k->direct = f->fd_direct >= 0;
    return k->direct ? f->fd_direct : f->fd_buffered;
}

/* Outcome of one read of chunk k that returned res (bytes, or negated errno).
 * Returns 1 when the chunk is complete, 0 when the remainder must be issued again,
 * or a negative error. */
static int chunk_result(struct ctx *c, struct chunk *k, int res) {
    const struct extent *x = &c->ext[k->ext];
    const struct file_state *f = &c->files[x->file];
    uint64_t at = k->off + k->done;
    if (res == -EINVAL && k->direct) {
        int rc = fall_back(c, x->file);
        return rc < 0 ? rc : 0; /* same bytes again, buffered */
    }
    if (res == -EINTR || res == -EAGAIN) return 0;
    if (res < 0)
        return bt_fail(c->e, res, "loader: read %s at offset %" PRIu64 " (%u bytes): %s", f->path,
                       at, k->len - k->done, strerror(-res));
    if (res == 0) {
        /* EOF: fine only where nothing requested remains (the O_DIRECT tail). */
        if (at >= x->need) {
            k->done = k->len;
            return 1;
        }
        return bt_fail(c->e, -EIO,
                       "loader: read %s at offset %" PRIu64 ": unexpected end of file (needed "
                       "bytes up to %" PRIu64 "; did the file shrink?)",
                       f->path, at, x->need);
    }
    k->done += (uint32_t)res;
    c->bytes_read += (uint64_t)res;
    return k->done >= k->len;
}

/* Bookkeeping after chunk k completed: progress, and the extent's checksums once it is whole. */
static int chunk_done(struct ctx *c, const struct chunk *k) {
    struct extent *x = &c->ext[k->ext];
    x->pending -= k->len;
    report(c, k->len);
    return x->pending == 0 ? finish_extent(c, k->ext) : 0;
}

static int read_pread(struct ctx *c) {
    struct chunk k;
    while (next_chunk(c, &k)) {
        for (;;) {
            int fd = chunk_fd(c, &k);
            int res = fault_hit(c);
            if (res == 0) {
                ssize_t n = pread(fd, k.dst + k.done, k.len - k.done, (off_t)(k.off + k.done));
                res = n < 0 ? -errno : (int)n;
            }
            int rc = chunk_result(c, &k, res);
            if (rc < 0) return rc;
            if (rc == 1) break;
        }
        int rc = chunk_done(c, &k);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Queues the rest of chunk slots[s]. User data: the slot index in the low 32 bits and, for an
 * injected fault, the errno in the high 32 (a NOP is queued so the failure takes the real
 * completion path). */
static void prep(struct ctx *c, struct io_uring *ring, struct chunk *slots, int s) {
    struct chunk *k = &slots[s];
    int fd = chunk_fd(c, k);
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    BT_ASSERT(sqe); /* the ring has an entry per slot and each slot queues at most one sqe */
    int f = fault_hit(c);
    if (f)
        io_uring_prep_nop(sqe);
    else
        io_uring_prep_read(sqe, fd, k->dst + k->done, k->len - k->done, k->off + k->done);
    io_uring_sqe_set_data64(sqe, ((uint64_t)(uint32_t)-f << 32) | (uint64_t)s);
}

/* Reads allowed in flight before issuing the next chunk: all slots for O_DIRECT, about
 * BUFFERED_INFLIGHT bytes (at least 2 reads) when the next chunk's file is read buffered. */
static int inflight_limit(const struct ctx *c) {
    if (c->cur_ext >= c->n_ext || c->files[c->ext[c->cur_ext].file].fd_direct >= 0) return c->qd;
    uint64_t n = BUFFERED_INFLIGHT / c->chunk;
    return n < 2 ? 2 : n < (uint64_t)c->qd ? (int)n : c->qd;
}

static int read_uring(struct ctx *c, struct io_uring *ring) {
    struct chunk *slots = calloc((size_t)c->qd, sizeof *slots);
    int *free_slots = malloc((size_t)c->qd * sizeof *free_slots);
    int rc = 0, n_free = c->qd, inflight = 0;
    if (!slots || !free_slots) {
        rc = bt_fail(c->e, -ENOMEM, "loader: no memory for %d read slots", c->qd);
        goto out;
    }
    for (int i = 0; i < c->qd; i++)
        free_slots[i] = c->qd - 1 - i;

    for (;;) {
        /* Fill the queue unless a failure stopped new reads. */
        while (rc == 0 && n_free > 0 && inflight < inflight_limit(c)) {
            struct chunk k;
            if (!next_chunk(c, &k)) break;
            int s = free_slots[--n_free];
            slots[s] = k;
            prep(c, ring, slots, s);
            inflight++;
        }
        if (inflight == 0) break;
        int sr = io_uring_submit_and_wait(ring, 1);
        if (sr < 0 && sr != -EINTR) {
            if (rc == 0) rc = bt_fail(c->e, sr, "loader: io_uring submit: %s", strerror(-sr));
            /* Nothing more can be reaped safely if submission itself broke; the ring teardown
             * cancels what is left before the blob is unmapped. */
            break;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(ring, head, cqe) {
            seen++;
            uint64_t ud = cqe->user_data;
            int s = (int)(ud & 0xffffffffu);
            int res = (ud >> 32) ? -(int)(ud >> 32) : cqe->res;
            struct chunk *k = &slots[s];
            inflight--;
            if (rc != 0) { /* draining after a failure: only wait for what is in flight */
                free_slots[n_free++] = s;
                continue;
            }
            int r = chunk_result(c, k, res);
            if (r == 0) { /* remainder again */
                prep(c, ring, slots, s);
                inflight++;
                continue;
            }
            if (r == 1) r = chunk_done(c, k);
            free_slots[n_free++] = s;
            if (r < 0) rc = r;
        }
        io_uring_cq_advance(ring, seen);
    }
out:
    free(slots);
    free(free_slots);
    return rc;
}

/* Page faults on fresh memory can cost more than the reads themselves (measured on a VM:
 * 0.2-1 GB/s for first-touch faults against 2-6 GB/s of reads into reused memory), and with
 * O_DIRECT they are taken one by one in our thread at submission. A helper thread prefaults
 * the blob front to back with MADV_POPULATE_WRITE (bulk, huge pages where possible) on the
 * other core while the reads proceed. It never writes the bytes, so it cannot clobber data
 * already read; pages the reader reaches first are simply present when it gets there. */
#define POPULATE_MIN  (64ull << 20)
#define POPULATE_STEP (8ull << 20)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct populater {
    char *base;
    size_t size;
    int stop; /* atomic: the reads are done */
    pthread_t th;
    int running;
};

static void *populate_main(void *arg) {
    struct populater *p = arg;
    for (size_t off = 0; off < p->size; off += POPULATE_STEP) {
        if (__atomic_load_n(&p->stop, __ATOMIC_RELAXED)) break;
        size_t n = p->size - off < POPULATE_STEP ? p->size - off : POPULATE_STEP;
        if (madvise(p->base + off, n, MADV_POPULATE_WRITE) != 0) break; /* old kernel: skip */
    }
    return NULL;
}

static void populate_start(struct populater *p, char *base, size_t size) {
    *p = (struct populater){.base = base, .size = size};
    if (size >= POPULATE_MIN) p->running = pthread_create(&p->th, NULL, populate_main, p) == 0;
}

static void populate_stop(struct populater *p) {
    if (!p->running) return;
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
    pthread_join(p->th, NULL);
    p->running = 0;
}

static int g_uring_warned;

int loader_read(loader_blob_t **out, const char *const *paths, int n_paths, struct load_req *reqs,
                int n_reqs, const struct loader_opts *o, struct loader_stats *st, bt_err *e) {
    static const struct loader_opts defaults = {0};
    if (!o) o = &defaults;
    double t0 = bt_now_s();
    if (!out || n_paths < 0 || n_reqs < 0 || (n_paths > 0 && !paths) || (n_reqs > 0 && !reqs))
        return bt_fail(e, BT_EINVAL, "loader: bad arguments (n_paths=%d n_reqs=%d)", n_paths,
                       n_reqs);
    *out = NULL;
    struct ctx c = {.paths = paths,
                    .reqs = reqs,
                    .n_reqs = n_reqs,
                    .n_files = n_paths,
                    .want_direct = o->direct != 0,
                    .progress = o->progress,
                    .progress_ctx = o->progress_ctx,
                    .e = e};
    c.chunk = o->chunk ? o->chunk : DEFAULT_CHUNK;
    if (c.chunk > MAX_CHUNK) c.chunk = MAX_CHUNK;
    c.chunk = align_up(c.chunk); /* O_DIRECT needs whole blocks; harmless otherwise */
    c.qd = o->queue_depth > 0 ? o->queue_depth : DEFAULT_QD;
    if (c.qd > MAX_QD) c.qd = MAX_QD;
#ifndef NDEBUG
    const char *fe = getenv("BT_FAULT_IO");
    c.fault_at = fe ? strtol(fe, NULL, 10) : 0;
    const char *fn = getenv("BT_FAULT_IO_ERRNO");
    c.fault_errno = fn ? (int)strtol(fn, NULL, 10) : EIO;
    if (c.fault_errno <= 0) c.fault_errno = EIO;
#endif

    loader_blob_t *b = calloc(1, sizeof *b);
    struct io_uring ring;
    int have_ring = 0, rc;
    c.files = calloc((size_t)(n_paths ? n_paths : 1), sizeof *c.files);
    c.order = malloc((size_t)(n_reqs ? n_reqs : 1) * sizeof *c.order);
    c.ext = malloc((size_t)(n_reqs ? n_reqs : 1) * sizeof *c.ext);
    if (!b || !c.files || !c.order || !c.ext) {
        rc = bt_fail(e, -ENOMEM, "loader: no memory for %d requests", n_reqs);
        goto fail;
    }
    for (int i = 0; i < n_paths; i++)
        c.files[i].fd_direct = c.files[i].fd_buffered = -1;
    if ((rc = open_files(&c)) < 0) goto fail;
    uint64_t bytes_req;
    if ((rc = plan(&c, &bytes_req)) < 0) goto fail;
    size_t blob_size = 0;
    for (int i = 0; i < c.n_ext; i++)
        blob_size = c.ext[i].blob_off + align_up(c.ext[i].hi - c.ext[i].lo);
    if ((rc = alloc_blob(b, blob_size, e)) < 0) goto fail;
    c.blob = b->base;

    int use_uring = o->backend != LOADER_PREAD && c.n_ext > 0;
    if (use_uring) {
        int r = -ENOSYS;
#ifndef NDEBUG
        /* BT_FAULT_URING=1: behave as a kernel without io_uring, to test the fallback. */
        const char *fu = getenv("BT_FAULT_URING");
        if (!fu || strcmp(fu, "1") != 0)
#endif
            r = io_uring_queue_init((unsigned)c.qd, &ring, 0);
        if (r == 0) {
            have_ring = 1;
        } else if (o->backend == LOADER_AUTO && (r == -ENOSYS || r == -EPERM || r == -ENOMEM)) {
            if (!__atomic_exchange_n(&g_uring_warned, 1, __ATOMIC_RELAXED))
                BT_LOG(WARN, "loader", "io_uring unavailable (%s), using pread", strerror(-r));
            use_uring = 0;
        } else {
            rc = bt_fail(e, r, "loader: io_uring_queue_init(%d): %s", c.qd, strerror(-r));
            goto fail;
        }
    }
    struct populater pop;
    populate_start(&pop, c.blob, b->size);
    rc = use_uring ? read_uring(&c, &ring) : read_pread(&c);
    populate_stop(&pop);
    if (have_ring) {
        io_uring_queue_exit(&ring);
        have_ring = 0;
    }
    if (rc < 0) goto fail;
    for (int i = 0; i < n_reqs; i++) /* zero-length requests: a valid pointer, no bytes */
        if (!reqs[i].data) reqs[i].data = c.blob;

    double secs = bt_now_s() - t0;
    if (st) {
        *st = (struct loader_stats){.bytes_read = c.bytes_read,
                                    .bytes_req = bytes_req,
                                    .n_extents = c.n_ext,
                                    .used_uring = use_uring,
                                    .used_direct = c.want_direct && !c.fell_back,
                                    .seconds = secs};
    }
    BT_LOG(INFO, "loader",
           "files=%d extents=%d bytes=%" PRIu64 " req=%" PRIu64
           " secs=%.3f gbps=%.2f uring=%d direct=%d",
           n_paths, c.n_ext, c.bytes_read, bytes_req, secs,
           secs > 0 ? (double)c.bytes_read / secs * 1e-9 : 0.0, use_uring,
           c.want_direct && !c.fell_back);
    close_files(&c);
    free(c.files);
    free(c.order);
    free(c.ext);
    *out = b;
    return 0;

fail:
    if (have_ring) io_uring_queue_exit(&ring);
    close_files(&c);
    free(c.files);
    free(c.order);
    free(c.ext);
    for (int i = 0; i < n_reqs && reqs; i++)
        reqs[i].data = NULL;
    loader_blob_free(b);
    return rc;
}

void loader_blob_free(loader_blob_t *b) {
    if (!b) return;
    if (b->base) munmap(b->base, b->size);
    free(b);
}
