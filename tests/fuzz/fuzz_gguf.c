/* tests/fuzz/fuzz_gguf.c: libFuzzer target for gguf_parse(). Each input is parsed three ways:
 * as a whole file, as the head of a file twice its size (exercising the need-more path), and
 * (when parsing succeeds) every typed getter is run on every key, so lookups of parsed data
 * are covered too. ASan reports leaks and out-of-bounds reads. */
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch_all(const gguf_t *g) {
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i), *s;
        uint32_t u;
        int64_t v;
        float f;
        int b;
        size_t n;
        const struct gguf_arr *a;
        (void)gguf_get_u32(g, key, &u, NULL);
        (void)gguf_get_i64(g, key, &v, NULL);
        (void)gguf_get_f32(g, key, &f, NULL);
        (void)gguf_get_bool(g, key, &b, NULL);
        (void)gguf_get_str(g, key, &s, &n, NULL);
        if (gguf_get_arr(g, key, &a, NULL) == 0 && a->n) {
            double d;
            (void)gguf_arr_i64(a, a->n - 1, &v);
            (void)gguf_arr_f64(a, 0, &d);
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        if (gguf_find_tensor(g, t->name) != t)
            __builtin_trap(); /* names are unique, so lookup must find this entry */
        if (t->offset + t->n_bytes > gguf_file_size(g)) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_t *g = NULL;
    bt_err e;
    if (gguf_parse(&g, data, size, size, NULL, &e) == 0) {
        touch_all(g);
        gguf_free(g);
    }
    size_t need = 0;
    int rc = gguf_parse(&g, data, size, (uint64_t)size * 2, &need, &e);
    if (rc == 0)
        gguf_free(g);
    else if (rc == BT_EMSGSIZE && (need <= size || need > (uint64_t)size * 2))
        __builtin_trap(); /* the need hint must make progress and stay within the file */
    return 0;
}
