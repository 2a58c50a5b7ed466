/* engine/dtype.c: see dtype.h. Block sizes follow ggml-common.h (spec §12.2). */
#include "engine/dtype.h"

#include <strings.h>

// clang-format off
const struct dtype_traits dtype_traits[DT_COUNT] = {
    [DT_F32]  = {"f32",  1,   4},
    [DT_F16]  = {"f16",  1,   2},
    [DT_BF16] = {"bf16", 1,   2},
    [DT_Q4_0] = {"q4_0", 32,  18},
    [DT_Q4_1] = {"q4_1", 32,  20},
    [DT_Q5_0] = {"q5_0", 32,  22},
    [DT_Q5_1] = {"q5_1", 32,  24},
    [DT_Q8_0] = {"q8_0", 32,  34},
    [DT_Q4_K] = {"q4_k", 256, 144},
    [DT_Q5_K] = {"q5_k", 256, 176},
    [DT_Q6_K] = {"q6_k", 256, 210},
    [DT_Q8_K] = {"q8_k", 256, 292},
    [DT_Q4_K_X16] = {"q4_k_x16", 256, 144},
    [DT_Q5_K_X16] = {"q5_k_x16", 256, 176},
    [DT_Q6_K_X16] = {"q6_k_x16", 256, 210},
};
// clang-format on

/* baton's in-memory layouts (dtype.h), which no file holds and no option names */
static int in_memory_layout(uint32_t id) {
    return id == DT_Q4_K_X16 || id == DT_Q5_K_X16 || id == DT_Q6_K_X16;
}

int dtype_supported(uint32_t id) {
    return id < DT_COUNT && dtype_traits[id].block > 0 && id != DT_Q8_K && !in_memory_layout(id);
}

const char *dtype_name(uint32_t id) {
    return id < DT_COUNT && dtype_traits[id].name ? dtype_traits[id].name : "?";
}

int dtype_from_name(const char *name) {
    for (int t = 0; t < DT_COUNT; t++)
        if (!in_memory_layout((uint32_t)t) && dtype_traits[t].name &&
            !strcasecmp(dtype_traits[t].name, name))
            return t;
    return -1;
}

size_t dtype_row_bytes(enum dtype t, int64_t n) {
    const struct dtype_traits *tr = &dtype_traits[t];
    if (tr->block <= 0 || n < 0 || n % tr->block) return 0;
    return (size_t)(n / tr->block) * tr->block_bytes;
}
