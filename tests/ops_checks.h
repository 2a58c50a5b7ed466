/* tests/ops_checks.h: the kernel checks of one ops table against ops_ref, ISA-agnostic and
 * free of Criterion, shared by tests/test_ops.c (Criterion, every ISA of this CPU) and
 * tests/cross/test_ops_cross.c (plain C, the AArch64 tables under qemu-user).
 *
 * What they check: odd shapes, strides wider than the data, rows outside [r0, r1) untouched,
 * ops_ref against exact double sums of the dequantized operands, quantized against f32
 * activations, batch-independent matmul_q results (bit for bit), extreme quantized codes,
 * bit-exact activation quantizers, and the vector kernels of decode and prefill.
 *
 * A check fills a struct ops_check: its name, the number of failed comparisons and the first
 * few of them in msg; n_failed == 0 is a pass. Inputs come from one seeded generator
 * (ops_check_rand), so a run is reproducible. Single-threaded callers only. */
#ifndef BT_TESTS_OPS_CHECKS_H
#define BT_TESTS_OPS_CHECKS_H
#include "ops/ops.h"

#include <stddef.h>
#include <stdint.h>

struct ops_check {
    char name[128];
    int n_failed;
    char msg[640]; /* the first three failures, "; "-separated */
};

void ops_check_begin(struct ops_check *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ops_check_fail(struct ops_check *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The generator behind every input (LCG, seed 12345): next state, and uniform [-1, 1). */
uint32_t ops_check_rand(void);
float ops_check_frand(void);
void ops_check_fill(float *x, int64_t n, float scale); /* x[i] = frand() * scale */
float *ops_check_falloc(int64_t n); /* zeroed, 16 floats of slack; exits(2) when out of memory */

/* Weight types with a table slot for matmul / dequantize_row, and those with matmul_q. */
extern const enum dtype ops_check_types[];
extern const size_t ops_check_n_types;
extern const enum dtype ops_check_q_types[];
extern const size_t ops_check_n_q_types;

/* Each of these runs one kind of kernel of T against ops_ref over several shapes. */
void ops_check_matmul(const struct ops_table *T, enum dtype dt, struct ops_check *c);
void ops_check_matmul_q(const struct ops_table *T, enum dtype dt, struct ops_check *c);
void ops_check_matmul_q_extreme(const struct ops_table *T, struct ops_check *c);
/* DT_Q4_K_X16, DT_Q5_K_X16, DT_Q6_K_X16 (ops/repack.h): ref's kernels give the GGUF type's
 * bits, T's match within tolerance and do not depend on the batch or the row groups; repack
 * refuses what has no x16 layout. */
void ops_check_matmul_x16(const struct ops_table *T, struct ops_check *c);
void ops_check_quantize_act(const struct ops_table *T, enum dtype at, struct ops_check *c);
void ops_check_small_kernels(const struct ops_table *T, struct ops_check *c);
void ops_check_attention(const struct ops_table *T, struct ops_check *c);
void ops_check_conv1d(const struct ops_table *T, struct ops_check *c);
void ops_check_delta_rule_step(const struct ops_table *T, struct ops_check *c);
void ops_check_delta_rule_chunk(const struct ops_table *T, struct ops_check *c);
/* pool_matmul_multi with the table ops_init chose: mixed activation formats, 1-3 threads,
 * bit for bit each matrix's own kernel; in exact mode, the f32 matmul. */
void ops_check_matmul_multi(struct ops_check *c);

/* Runs every per-table check above on T (each dtype its own check), calling report after
 * each; returns the number of checks that failed. */
int ops_check_table(const struct ops_table *T, void (*report)(const struct ops_check *c, void *ctx),
                    void *ctx);

#endif
