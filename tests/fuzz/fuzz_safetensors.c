/* tests/fuzz/fuzz_safetensors.c: libFuzzer target for safetensors_parse(). Each input is parsed
 * as a whole file and as the head of a file twice its size (the need-more path); a parsed
 * result is checked against the parser's promises (in-file, non-overlapping, findable by
 * name). The bytes after the 8-byte length word are JSON in the seeds, so they are also fed to
 * the two other JSON parsers of HF checkpoints: safetensors_index_parse() and
 * hf_parse_config(). ASan reports leaks and out-of-bounds reads. */
#include "engine/hf.h"
#include "engine/safetensors.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const safetensors_t *st) {
    uint64_t end = safetensors_data_offset(st);
    for (int i = 0; i < safetensors_n_tensors(st); i++) {
        const struct safetensors_tensor *t = safetensors_tensor(st, i);
        if (t->offset < safetensors_data_offset(st) ||
            t->offset + t->n_bytes > safetensors_file_size(st))
            __builtin_trap(); /* every tensor lies inside the data section */
        if (t->n_bytes && t->offset < end)
            __builtin_trap(); /* sorted by offset and not overlapping */
        if (t->n_bytes) end = t->offset + t->n_bytes;
        if (safetensors_find(st, t->name) != t) __builtin_trap(); /* names are unique */
    }
    (void)safetensors_metadata(st, "format");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    safetensors_t *st = NULL;
    bt_err e;
    if (safetensors_parse(&st, data, size, size, NULL, &e) == 0) {
        check(st);
        safetensors_free(st);
    }
    size_t need = 0;
    int rc = safetensors_parse(&st, data, size, (uint64_t)size * 2, &need, &e);
    if (rc == 0)
        safetensors_free(st);
    else if (rc == BT_EMSGSIZE && (need <= size || need > (uint64_t)size * 2))
        __builtin_trap(); /* the need hint must make progress and stay within the file */

    if (size > 8) {
        struct safetensors_index *ix = NULL;
        if (safetensors_index_parse(&ix, data + 8, size - 8, &e) == 0) {
            for (int i = 0; i < ix->n_entries; i++)
                if (ix->shard_of[i] < 0 || ix->shard_of[i] >= ix->n_shards) __builtin_trap();
            safetensors_index_free(ix);
        }
        struct qwen35_hparams hp;
        int tied;
        (void)hf_parse_config(&hp, &tied, data + 8, size - 8, &e);
    }
    return 0;
}
