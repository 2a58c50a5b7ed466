/* worker/model_cache.h: a local sparse copy of a model file the worker does not have, filled
 * piecewise with bytes the coordinator serves (ModelChunkRequest / ModelChunk).
 *
 * Files, under dir (default /var/tmp/baton-cache): "<name>-<header_xxh3 as 16 hex>" is the
 * cache file, created with the model's full size (sparse: holes read as zeros, so model_open
 * and the io_uring loader use it like the real file as long as only present bytes are read);
 * "<that>.idx" is the sidecar index of the byte ranges present, little-endian:
 *   u32 magic "BTMC", u32 version 1, u64 size, u64 header_xxh3, u32 n, then n x (u64 off,
 *   u64 end) sorted, disjoint, non-adjacent.
 * A chunk is written and fdatasync'ed before the index (rewritten to a temp file and renamed)
 * records it, so after a crash the index never claims bytes that are not on disk. A restart
 * with the same name and xxh3 reuses every recorded range; an index that does not parse or
 * names another size/xxh3 is discarded (the cache starts empty).
 * The caller drives the network: model_cache_missing lists what to fetch in chunks,
 * model_cache_put verifies (XXH3-64 of the chunk) and stores. One thread uses a cache. */
#ifndef BT_WORKER_MODEL_CACHE_H
#define BT_WORKER_MODEL_CACHE_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct model_cache model_cache_t;

struct mc_range {
    uint64_t off, len;
};

struct model_cache_opts {
    const char *dir;      /* NULL = /var/tmp/baton-cache; created (one level) if missing */
    const char *name;     /* model name; characters other than [A-Za-z0-9._-] become '_' */
    uint64_t size;        /* file size */
    uint64_t header_xxh3; /* ModelId.header_xxh3 */
};

/* Opens or creates the cache for one model. Negated errno naming the path. */
int model_cache_open(model_cache_t **out, const struct model_cache_opts *o, bt_err *e);
void model_cache_close(model_cache_t *c); /* NULL ok */

const char *model_cache_path(const model_cache_t *c);
uint64_t model_cache_present_bytes(const model_cache_t *c);

/* 1 if [off, off + len) is entirely present (len 0: 1). */
int model_cache_has(const model_cache_t *c, uint64_t off, uint64_t len);

/* The missing parts of the ranges want[0..n) (any order, may overlap), merged, clipped to the
 * file size and cut into pieces of at most chunk bytes, into out[0..max). Returns the number of
 * pieces (which may exceed max: only max are written; call again after fetching those). */
int model_cache_missing(const model_cache_t *c, const struct mc_range *want, int n, uint64_t chunk,
                        struct mc_range *out, int max);

/* Stores len bytes at off after checking XXH3-64(data) == xxh3 (BT_ECHECKSUM) and that the
 * range lies in the file (BT_EPROTO). Writes, syncs, records, rewrites the index. */
int model_cache_put(model_cache_t *c, uint64_t off, const void *data, size_t len, uint64_t xxh3,
                    bt_err *e);

/* Reads [off, off + len) (must be present: BT_EINVAL otherwise) into buf. */
int model_cache_read(const model_cache_t *c, uint64_t off, void *buf, size_t len, bt_err *e);

#endif
