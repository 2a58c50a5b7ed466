/* engine/loader.h: reads byte ranges of model files into aligned memory, fast.
 *
 * loader_read() takes a list of requests (file, offset, length), coalesces neighbours into
 * extents, allocates one 64-byte (4096 with O_DIRECT) aligned blob for all of them and reads
 * the extents with io_uring, several requests in flight (O_DIRECT when the file system allows
 * it, buffered otherwise). When io_uring is unavailable (ENOSYS/EPERM/ENOMEM on setup) it logs
 * one line and uses pread. Each request gets a pointer into the blob; a request with a known
 * XXH3-64 checksum is verified (BT_ECHECKSUM naming the request on mismatch). Reads nothing
 * outside the requested ranges except the alignment padding O_DIRECT needs (< 4 KiB per
 * extent end). Not thread-safe per call; calls on different blobs are independent. */
#ifndef BT_ENGINE_LOADER_H
#define BT_ENGINE_LOADER_H
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct load_req {
    int file;          /* index into paths[] */
    uint64_t offset;   /* absolute byte offset */
    uint64_t len;
    uint64_t xxh3;     /* expected XXH3-64 of the bytes; 0 = unknown, not checked */
    const char *what;  /* name for messages (tensor name), may be NULL */
    void *data;        /* out: where the bytes are, inside the blob */
};

struct loader_opts {
    int backend;       /* LOADER_AUTO (io_uring, pread fallback), LOADER_URING, LOADER_PREAD */
    int direct;        /* 1 = try O_DIRECT (falls back to buffered if open/reads refuse it) */
    int queue_depth;   /* requests in flight; 0 = 16 */
    size_t chunk;      /* bytes per read request; 0 = 1 MiB */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
};
enum { LOADER_AUTO = 0, LOADER_URING = 1, LOADER_PREAD = 2 };

struct loader_stats {
    uint64_t bytes_read;  /* bytes actually read from the files (incl. alignment padding) */
    uint64_t bytes_req;   /* bytes requested */
    int n_extents;
    int used_uring, used_direct;
    double seconds;
};

typedef struct loader_blob loader_blob_t;

int loader_read(loader_blob_t **out, const char *const *paths, int n_paths, struct load_req *reqs,
                int n_reqs, const struct loader_opts *o, struct loader_stats *st, bt_err *e);
void loader_blob_free(loader_blob_t *b); /* NULL ok; invalidates every req.data */

#endif
