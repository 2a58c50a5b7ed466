/* engine/gguf.h: the GGUF v3 container (spec qwen35.md §12.1), parsed from bytes.
 *
 * Layout, little-endian: "GGUF" magic, u32 version (2 or 3), u64 tensor count, u64 KV count;
 * KV pairs (string key, u32 value type, value); tensor infos (string name, u32 n_dims, n_dims x
 * u64 ne, u32 ggml type, u64 offset relative to the data section); padding to
 * general.alignment (default 32); the data section. Strings are u64 length + bytes, no NUL.
 * Value types: 0 u8 1 i8 2 u16 3 i16 4 u32 5 i32 6 f32 7 bool 8 string 9 array 10 u64 11 i64
 * 12 f64; arrays are u32 element type + u64 count + elements, and may nest (at most 8 deep).
 * Rejected: keys or tensor names containing NUL, duplicate keys or tensor names, n_dims
 * outside 1..4, ne[0] not a multiple of the dtype's block, element/byte counts that overflow,
 * offsets not a multiple of general.alignment (an integer, nonzero power of two).
 *
 * gguf_parse() does no I/O: it reads only the bytes it is given (the file's head) and checks
 * every count, length, offset and overflow against them and against file_size. Errors name the
 * key or tensor. The parsed object copies what it needs: buf may be freed after parsing.
 * gguf_open() reads a file's head with pread (growing the read until the header fits) and
 * parses it. Read-only after parsing: safe to share between threads. */
#ifndef BT_ENGINE_GGUF_H
#define BT_ENGINE_GGUF_H
#include "common/err.h"
#include "engine/dtype.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gguf gguf_t;

enum gguf_type {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_TYPE_COUNT
};

struct gguf_tensor {
    const char *name;
    enum dtype dtype; /* checked: dtype_supported() */
    int n_dims;       /* 1..4 */
    int64_t ne[4];    /* fastest first; unused dims are 1 */
    uint64_t offset;  /* absolute offset in the file (data section start + relative offset) */
    uint64_t n_bytes; /* checked: offset + n_bytes <= file_size */
};

/* Parses the head of a GGUF file. buf holds the first len bytes of a file of file_size bytes.
 * Returns 0, BT_EFORMAT (malformed or truncated; message names the key/tensor), BT_EVERSION,
 * BT_EUNSUPPORTED (unknown tensor dtype, naming the tensor), -ENOMEM.
 * If buf ends inside the header while len < file_size, returns BT_EMSGSIZE and sets *need (if
 * non-NULL) to a larger length worth retrying with. */
int gguf_parse(gguf_t **out, const void *buf, size_t len, uint64_t file_size, size_t *need,
               bt_err *e);
/* Opens path and parses its head. Same errors plus negated errno from open/pread. */
int gguf_open(gguf_t **out, const char *path, bt_err *e);
void gguf_free(gguf_t *g); /* NULL ok */

uint32_t gguf_version(const gguf_t *g);
uint64_t gguf_alignment(const gguf_t *g);
uint64_t gguf_data_offset(const gguf_t *g); /* absolute start of the data section */
uint64_t gguf_file_size(const gguf_t *g);

int64_t gguf_n_tensors(const gguf_t *g);
const struct gguf_tensor *gguf_tensor(const gguf_t *g, int64_t i);
const struct gguf_tensor *gguf_find_tensor(const gguf_t *g, const char *name); /* NULL if absent */

int64_t gguf_n_kv(const gguf_t *g);
const char *gguf_kv_key(const gguf_t *g, int64_t i);
enum gguf_type gguf_kv_type(const gguf_t *g, int64_t i);
int64_t gguf_find_kv(const gguf_t *g, const char *key); /* -1 if absent */

/* Typed getters: 0, BT_ENOKEY (absent), BT_ETYPE (wrong type; integer getters accept any
 * integer or bool type whose value fits, float getters any float or integer type). */
int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out, bt_err *e);
int gguf_get_i64(const gguf_t *g, const char *key, int64_t *out, bt_err *e);
int gguf_get_f32(const gguf_t *g, const char *key, float *out, bt_err *e);
int gguf_get_bool(const gguf_t *g, const char *key, int *out, bt_err *e);
/* String value; *out valid until gguf_free. */
int gguf_get_str(const gguf_t *g, const char *key, const char **out, size_t *len, bt_err *e);

/* Arrays. gguf_get_arr gives the element type and count; for scalar element types *data points
 * at the packed little-endian elements (valid until gguf_free). For string arrays use
 * gguf_get_arr_str; for nested arrays gguf_get_arr_arr gives an opaque handle per element. */
struct gguf_arr {
    enum gguf_type type;
    uint64_t n;
    const void *data;           /* scalar elements, packed; NULL for string/array elements */
    const char *const *str;     /* string elements (NUL-terminated copies), else NULL */
    const size_t *str_len;      /* their byte lengths (strings may contain NUL) */
    const struct gguf_arr *arr; /* nested array elements, else NULL */
};
int gguf_get_arr(const gguf_t *g, const char *key, const struct gguf_arr **out, bt_err *e);
/* Element i of an integer/bool/float array as int64 / double; BT_ETYPE / BT_EINVAL on misuse. */
int gguf_arr_i64(const struct gguf_arr *a, uint64_t i, int64_t *out);
/* Element i of a numeric array as double (integers converted; bool is BT_ETYPE). */
int gguf_arr_f64(const struct gguf_arr *a, uint64_t i, double *out);
/* "u32", "string", ... ; "?" for an unknown type. */
const char *gguf_type_name(enum gguf_type t);

#endif
