/* engine/gguf_write.h: writes GGUF v3 files (layout in gguf.h), streaming the tensor data so
 * a model larger than RAM can be written.
 *
 * Use: gguf_writer_new(); add KVs (scalars, strings, arrays of scalars or strings) and tensor
 * infos (name, dtype, ne) in file order; gguf_writer_begin() writes the header, the tensor
 * infos and the padding to a FILE*; then gguf_writer_write() appends tensor data in tensor
 * order, in pieces of any size (the writer inserts the alignment padding between tensors);
 * gguf_writer_finish() checks that every tensor got exactly its bytes and flushes.
 * Offsets are assigned when a tensor is added (each one aligned to general.alignment, which
 * the writer also sets as a KV when it differs from the default 32). The writer copies every
 * key, name and value it is given. One thread at a time. */
#ifndef BT_ENGINE_GGUF_WRITE_H
#define BT_ENGINE_GGUF_WRITE_H
#include "common/err.h"
#include "engine/dtype.h"
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct gguf_writer gguf_writer_t;

/* alignment: 0 = 32; must be a power of two. BT_EINVAL / -ENOMEM. */
int gguf_writer_new(gguf_writer_t **out, uint64_t alignment, bt_err *e);
void gguf_writer_free(gguf_writer_t *w); /* NULL ok; does not close the FILE */

/* KVs. Keys must be unique (BT_EINVAL naming the key). Values are copied. */
int gguf_writer_add_u8(gguf_writer_t *w, const char *key, uint8_t v, bt_err *e);
int gguf_writer_add_i8(gguf_writer_t *w, const char *key, int8_t v, bt_err *e);
int gguf_writer_add_u16(gguf_writer_t *w, const char *key, uint16_t v, bt_err *e);
int gguf_writer_add_i16(gguf_writer_t *w, const char *key, int16_t v, bt_err *e);
int gguf_writer_add_u32(gguf_writer_t *w, const char *key, uint32_t v, bt_err *e);
int gguf_writer_add_i32(gguf_writer_t *w, const char *key, int32_t v, bt_err *e);
int gguf_writer_add_u64(gguf_writer_t *w, const char *key, uint64_t v, bt_err *e);
int gguf_writer_add_i64(gguf_writer_t *w, const char *key, int64_t v, bt_err *e);
int gguf_writer_add_f32(gguf_writer_t *w, const char *key, float v, bt_err *e);
int gguf_writer_add_f64(gguf_writer_t *w, const char *key, double v, bt_err *e);
int gguf_writer_add_bool(gguf_writer_t *w, const char *key, int v, bt_err *e);
/* String of len bytes (may contain NUL); gguf_writer_add_str uses strlen. */
int gguf_writer_add_strn(gguf_writer_t *w, const char *key, const char *s, size_t len, bt_err *e);
int gguf_writer_add_str(gguf_writer_t *w, const char *key, const char *s, bt_err *e);
/* Array of n scalars of type t (not string/array), packed little-endian as in the file
 * (bool: 1 byte each). */
int gguf_writer_add_arr(gguf_writer_t *w, const char *key, enum gguf_type t, const void *data,
                        uint64_t n, bt_err *e);
/* Array of n strings; lens may be NULL (then strlen). */
int gguf_writer_add_arr_str(gguf_writer_t *w, const char *key, const char *const *strs,
                            const size_t *lens, uint64_t n, bt_err *e);
/* Writes a value already encoded as GGUF bytes (type t, then exactly the value's bytes as they
 * appear after the type field): for nested arrays and for copying a KV from another file. */
int gguf_writer_add_raw(gguf_writer_t *w, const char *key, enum gguf_type t, const void *bytes,
                        size_t len, bt_err *e);

/* Tensor info. ne[0] must be a multiple of the dtype's block; n_dims 1..4. Returns the tensor
 * index (>= 0) or an error (BT_EINVAL naming the tensor for a duplicate or bad shape). */
int64_t gguf_writer_add_tensor(gguf_writer_t *w, const char *name, enum dtype dt, int n_dims,
                               const int64_t *ne, bt_err *e);
/* Bytes of tensor i's data (what gguf_writer_write must receive for it). */
uint64_t gguf_writer_tensor_bytes(const gguf_writer_t *w, int64_t i);
/* Total file size once all data is written. */
uint64_t gguf_writer_file_size(const gguf_writer_t *w);

/* Writes header, KVs, tensor infos and padding to f (positioned at the start of the file).
 * After begin, no more KVs or tensors can be added. Errors: negated errno from stdio. */
int gguf_writer_begin(gguf_writer_t *w, FILE *f, bt_err *e);
/* Appends n bytes of tensor data (tensors in index order, any split). BT_EINVAL if more bytes
 * than the remaining tensors hold. */
int gguf_writer_write(gguf_writer_t *w, const void *data, size_t n, bt_err *e);
/* Checks all tensor bytes were written and flushes f. BT_EINVAL if data is missing. */
int gguf_writer_finish(gguf_writer_t *w, bt_err *e);

/* Convenience for small files (tests, fuzz seeds): the whole file in one malloc'd buffer
 * (caller frees with free). data[i] holds tensor i's bytes (NULL = zeros). */
int gguf_writer_to_mem(gguf_writer_t *w, const void *const *data, void **out, size_t *len,
                       bt_err *e);

#endif
