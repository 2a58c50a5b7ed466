/* worker/caps.h: what a worker measures about itself at start, for the Hello message and the
 * coordinator's planner: physical RAM (sysinfo), cores, the ops ISA (ops_init), memory read
 * bandwidth (summing a buffer of up to 128 MiB, ~100-200 ms) and matmul speed (f32 and q8_0
 * ops->matmul at a decode-like shape for ~100 ms), plus the identity of a local model file.
 *
 * ModelId (proto/baton.proto) as baton computes it everywhere: name = the file's base name,
 * size = file size in bytes, header_xxh3 = XXH3-64 of bytes [0, data section start) of the GGUF
 * (magic, KVs, tensor directory and the alignment padding). Workers compare size and
 * header_xxh3 only: the name is informational (a coordinator may use general.name).
 * Not thread-safe (caps_measure runs once, before serving). */
#ifndef BT_WORKER_CAPS_H
#define BT_WORKER_CAPS_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

struct model_ident {
    char name[256];
    uint64_t size;
    uint64_t header_xxh3;
    uint64_t data_offset; /* start of the GGUF data section (= bytes hashed) */
};

struct worker_caps {
    uint64_t ram_bytes;
    int cores;
    char isa[16];
    float mem_bw_gbps;
    float matmul_gflops;
    char hostname[256];
};

struct caps_opts {
    uint64_t bw_bytes; /* buffer summed for the bandwidth measurement; 0 = 128 MiB (capped at
                           RAM/8) */
    int bench_ms;      /* time spent per measurement; 0 = 100 */
};

/* Fills *c. ops_init must have run (the ISA comes from it). -ENOMEM if the bandwidth buffer
 * cannot be allocated (the measurement then retries with smaller buffers down to 16 MiB). */
int caps_measure(struct worker_caps *c, const struct caps_opts *o, bt_err *e);

/* ModelId of a local GGUF file: reads only its head (gguf_open). BT_EFORMAT & co from the
 * parser, negated errno naming the path. */
int caps_model_ident(struct model_ident *id, const char *path, bt_err *e);

/* The same over head bytes [0, len) of a file of file_size bytes (len must reach the data
 * section: BT_EMSGSIZE with *need otherwise, like gguf_parse). name is copied. */
int caps_model_ident_head(struct model_ident *id, const char *name, const void *head, size_t len,
                          uint64_t file_size, size_t *need, bt_err *e);

#endif
