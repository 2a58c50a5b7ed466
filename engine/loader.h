/* engine/loader.h: reads byte ranges of model files into aligned memory, fast.
 *
 * loader_read() takes a list of requests (file, offset, length), sorts them by (file, offset)
 * and coalesces neighbours (overlapping, adjacent, or less than 64 KiB apart) into extents,
 * allocates one 4096-aligned blob for all of them and reads the extents in chunks with
 * io_uring, queue_depth reads in flight (O_DIRECT when asked and the file system allows it:
 * a refused open or an EINVAL read falls back to buffered reads for that file). Short reads
 * are resumed; EOF is accepted only past the last requested byte. When io_uring is unavailable
 * (ENOSYS/EPERM/ENOMEM on setup) LOADER_AUTO logs one line and uses pread; LOADER_URING then
 * fails instead. Each request gets a pointer into the blob (zero-length requests: a valid
 * pointer to no bytes); a request with a known XXH3-64 checksum is verified (BT_ECHECKSUM
 * naming the request). Reads nothing outside the requested ranges except gaps < 64 KiB between
 * merged neighbours and the alignment padding O_DIRECT needs (< 4 KiB per extent end).
 * Errors: BT_EINVAL (bad file index / arguments), BT_EFORMAT (a range beyond the end of its
 * file, naming the request and file), BT_ECHECKSUM, negated errno from open/read naming the
 * file and offset. On failure every req.data is NULL and nothing is allocated.
 * The blob is read-only after loader_read returns and may be shared between threads; one call
 * is single-threaded. Debug builds (no NDEBUG): BT_FAULT_IO=n fails the nth read of a call
 * with -EIO (or -$BT_FAULT_IO_ERRNO); BT_FAULT_URING=1 fails io_uring setup with -ENOSYS.
 * Each call ends with one INFO log line (files, extents, bytes, secs, gbps, uring, direct). */
#ifndef BT_ENGINE_LOADER_H
#define BT_ENGINE_LOADER_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

struct load_req {
    int file;        /* index into paths[] */
    uint64_t offset; /* absolute byte offset */
    uint64_t len;
    uint64_t xxh3;    /* expected XXH3-64 of the bytes; 0 = unknown, not checked */
    const char *what; /* name for messages (tensor name), may be NULL */
    void *data;       /* out: where the bytes are, inside the blob */
};

struct loader_opts {
    int backend;     /* LOADER_AUTO (io_uring, pread fallback), LOADER_URING, LOADER_PREAD */
    int direct;      /* 1 = try O_DIRECT (falls back to buffered if open/reads refuse it) */
    int queue_depth; /* requests in flight; 0 = 16 (buffered reads: at most ~8 MiB in flight) */
    size_t chunk;    /* bytes per read request; 0 = 1 MiB (rounded up to 4 KiB, max 64 MiB) */
    /* Called with done <= total bytes of the planned reads, non-decreasing, at least every
     * 64 MiB (and about 32 times on small loads); the last call has done == total. */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
};
enum { LOADER_AUTO = 0, LOADER_URING = 1, LOADER_PREAD = 2 };

struct loader_stats {
    uint64_t bytes_read; /* bytes actually read from the files (incl. alignment padding) */
    uint64_t bytes_req;  /* bytes requested */
    int n_extents;
    int used_uring, used_direct; /* used_direct: every read used O_DIRECT (no fallback) */
    double seconds;
};

typedef struct loader_blob loader_blob_t;

int loader_read(loader_blob_t **out, const char *const *paths, int n_paths, struct load_req *reqs,
                int n_reqs, const struct loader_opts *o, struct loader_stats *st, bt_err *e);
void loader_blob_free(loader_blob_t *b); /* NULL ok; invalidates every req.data */

#endif
