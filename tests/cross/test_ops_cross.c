/* tests/cross/test_ops_cross.c: the AArch64 kernel tables ("neon", "neon-dotprod") against
 * ops_ref, cross-compiled and run under qemu-user by `make test-cross` (Criterion has no arm64
 * build here, so this is a plain driver: one line per check, exit status 1 if any failed).
 * The checks are tests/test_ops.c's, from tests/ops_checks.c: odd shapes, strides wider than
 * the data, rows outside [r0, r1) untouched, batch-independent matmul_q results (bit for
 * bit), extreme quantized codes, bit-exact activation quantizers, the vector kernels of decode
 * and prefill, and pool_matmul_multi with the table ops_init chose.
 *
 * Usage: test_ops_cross [--expect ISA] — ISA is the table ops_init must choose on this CPU
 * (qemu -cpu max: neon-dotprod; -cpu cortex-a53: neon, and neon-dotprod must be absent). */
#include "ops/ops.h"
#include "tests/ops_checks.h"

#include <stdio.h>
#include <string.h>

static int n_checks, n_failed;

static void report(const struct ops_check *c, void *ctx) {
    (void)ctx;
    n_checks++;
    if (c->n_failed) {
        n_failed++;
        printf("  FAIL %s: %s\n", c->name, c->msg);
    }
    printf("%s %s\n", c->n_failed ? "FAIL" : "ok  ", c->name);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *expect = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--expect") && i + 1 < argc)
            expect = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--expect ISA]\n", argv[0]);
            return 2;
        }
    }
    const char *const *isas = ops_available_isas();
    char list[128] = "";
    for (int i = 0; isas[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? " " : "", isas[i]);
    bt_err e = {0};
    struct ops_check c;
    ops_check_begin(&c, "ops_init picks %s (available: %s)", expect ? expect : "the best", list);
    if (ops_init(NULL, &e))
        ops_check_fail(&c, "ops_init: %s", e.msg);
    else if (strcmp(ops->isa, isas[0]))
        ops_check_fail(&c, "chose %s, best is %s", ops->isa, isas[0]);
    if (expect && strcmp(isas[0], expect))
        ops_check_fail(&c, "best is %s, expected %s", isas[0], expect);
    if (expect && !strcmp(expect, "neon") && ops_table_for("neon-dotprod"))
        ops_check_fail(&c, "neon-dotprod offered on a CPU without dot products");
    if (!ops_table_for("neon")) ops_check_fail(&c, "no neon table");
    report(&c, NULL);
    for (int i = 0; isas[i]; i++) /* ref is the yardstick; tests/test_ops.c checks it */
        if (strcmp(isas[i], "ref")) ops_check_table(ops_table_for(isas[i]), report, NULL);
    ops_check_matmul_multi(&c);
    report(&c, NULL);
    printf("cross: %s: %d checks, %d failed\n", isas[0], n_checks, n_failed);
    return n_failed ? 1 : 0;
}
