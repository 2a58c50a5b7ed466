/* engine/dtype.h: storage types of weights, with ggml's type ids as values (they are what GGUF
 * files store, so the enum is append-only and sparse). Traits give the block geometry every
 * size computation uses: a row of n elements (n a multiple of block) takes
 * n / block * block_bytes bytes; rows never share a block. Spec: qwen35.md §12. */
#ifndef BT_ENGINE_DTYPE_H
#define BT_ENGINE_DTYPE_H
#include <stddef.h>
#include <stdint.h>

enum dtype {
    DT_F32 = 0,
    DT_F16 = 1,
    DT_Q4_0 = 2,
    DT_Q4_1 = 3,
    DT_Q5_0 = 6,
    DT_Q5_1 = 7,
    DT_Q8_0 = 8,
    DT_Q4_K = 12,
    DT_Q5_K = 13,
    DT_Q6_K = 14,
    DT_Q8_K = 15,
    DT_BF16 = 30,
    /* baton's own in-memory layouts, never in a file: K-quant rows interleaved 16 at a time
     * (ops/repack.h). Their traits give the GGUF type's sizes; dtype_supported() and
     * dtype_from_name() do not know them, so no file or option can claim them. */
    DT_Q4_K_X16 = 31,
    DT_Q5_K_X16 = 32,
    DT_Q6_K_X16 = 33,
    DT_COUNT = 34 /* size of tables indexed by dtype; unsupported ids have block == 0 */
};

struct dtype_traits {
    const char *name; /* "q4_k" */
    int block;        /* elements per block; 0 = not supported by baton */
    size_t block_bytes;
};

extern const struct dtype_traits dtype_traits[DT_COUNT];

/* 1 if id is a dtype baton can read (weights of that type can be dequantized and multiplied). */
int dtype_supported(uint32_t id);
/* Name for any id, "?" if unknown. */
const char *dtype_name(uint32_t id);
/* Parses "f32", "q4_k", ... (case-insensitive); -1 if unknown. */
int dtype_from_name(const char *name);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block (caller rejects). */
size_t dtype_row_bytes(enum dtype t, int64_t n);

#endif
