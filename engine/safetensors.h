/* engine/safetensors.h: the safetensors container (spec qwen35.md §9.1), parsed from bytes, and
 * the model.safetensors.index.json of sharded checkpoints.
 *
 * Layout: u64 little-endian header length N; N bytes of UTF-8 JSON, an object
 *   {"<tensor name>": {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
 *    ..., "__metadata__": {"<key>": "<string>", ...}}
 * (trailing spaces allowed); then the data: each tensor is row-major (last index fastest),
 * little-endian, at [8 + N + begin, 8 + N + end).
 *
 * safetensors_parse() does no I/O: it checks the header length against a cap and the file
 * size, the JSON, every entry (dtype known, shape of <= ST_MAX_DIMS non-negative integers,
 * element count x element size == end - begin without overflow, begin <= end <= data size),
 * that tensors do not overlap and that names are unique. Errors name the tensor. The parsed
 * object owns copies of everything: buf may be freed after parsing. Read-only afterwards: safe
 * to share between threads. */
#ifndef BT_ENGINE_SAFETENSORS_H
#define BT_ENGINE_SAFETENSORS_H
#include "common/err.h"
#include "engine/dtype.h"

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS         8
#define ST_MAX_HEADER_BYTES (100u << 20) /* larger headers are rejected (BT_EFORMAT) */

typedef struct safetensors safetensors_t;

struct safetensors_tensor {
    const char *name;
    enum dtype dtype;           /* DT_F32, DT_F16 or DT_BF16 */
    int n_dims;                 /* 0..ST_MAX_DIMS (0 = scalar) */
    int64_t shape[ST_MAX_DIMS]; /* PyTorch order, slowest first; unused dims are 1 */
    uint64_t offset;            /* absolute offset in the file (8 + N + begin) */
    uint64_t n_bytes;           /* end - begin */
};

/* Parses the head of a safetensors file: buf holds its first len bytes, the file has file_size
 * bytes. Returns 0; BT_EFORMAT (malformed; message names the tensor); BT_EUNSUPPORTED (a known
 * dtype baton cannot use: F64, I64, I32, I16, I8, U8..U64, BOOL, F8_*; names the tensor);
 * -ENOMEM. If the header is longer than buf while it fits in the file, returns BT_EMSGSIZE and
 * sets *need (if non-NULL) to the length to retry with. */
int safetensors_parse(safetensors_t **out, const void *buf, size_t len, uint64_t file_size,
                      size_t *need, bt_err *e);
/* Opens path, reads its header with pread and parses it. Same errors plus negated errno. */
int safetensors_open(safetensors_t **out, const char *path, bt_err *e);
void safetensors_free(safetensors_t *st); /* NULL ok */

uint64_t safetensors_data_offset(const safetensors_t *st); /* 8 + N */
uint64_t safetensors_file_size(const safetensors_t *st);
/* Tensors in file order (ascending offset). */
int safetensors_n_tensors(const safetensors_t *st);
const struct safetensors_tensor *safetensors_tensor(const safetensors_t *st, int i);
const struct safetensors_tensor *safetensors_find(const safetensors_t *st, const char *name);
/* "__metadata__" string value, or NULL if absent. */
const char *safetensors_metadata(const safetensors_t *st, const char *key);

/* DT_F32 / DT_F16 / DT_BF16 for "F32" / "F16" / "BF16"; BT_EUNSUPPORTED for the other
 * safetensors dtypes; BT_EFORMAT for unknown strings. */
int safetensors_dtype(const char *s, enum dtype *out);

/* model.safetensors.index.json: {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>"}}.
 * Parsed from bytes (no I/O). Shard names are plain file names in the index's directory: not
 * empty, no '/', no "..", at most 255 bytes; each distinct shard is listed once in shards[]
 * (first-seen order), and entry i lives in shards[shard_of[i]]. */
struct safetensors_index {
    int n_entries;
    char **names;  /* tensor names */
    int *shard_of; /* index into shards */
    int n_shards;
    char **shards;
};
/* 0; BT_EFORMAT naming the entry; -ENOMEM. Free with safetensors_index_free. */
int safetensors_index_parse(struct safetensors_index **out, const void *json, size_t len,
                            bt_err *e);
void safetensors_index_free(struct safetensors_index *ix); /* NULL ok */

#endif
