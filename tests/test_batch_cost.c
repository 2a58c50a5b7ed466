/* tests/test_batch_cost.c: coordinator/batch_cost, the micro-batch cost model and the prefill
 * limit next to decodes: the fit recovers a line, follows a change of speed, keeps its last
 * fit while every batch is alike, ignores nonsense, and the limit holds a batch to
 * (1 + stall) times a decode batch. */
#include "coordinator/batch_cost.h"

#include <criterion/criterion.h>
#include <math.h>

/* t(n) = 0.070 + 0.051 n: a 9B model on 2 cores (70 ms to read the weights, 51 ms a row) */
static double t9b(int n) {
    return 0.070 + 0.051 * n;
}

Test(batch_cost, no_fit_no_limit) {
    struct batch_cost c;
    batch_cost_init(&c);
    double f, b;
    cr_assert_eq(batch_cost_fit(&c, &f, &b), 0);
    cr_assert_eq(batch_cost_prefill_limit(&c, 4, 4, 1.0), -1);
    batch_cost_observe(&c, 8, t9b(8)); /* one size only: no slope */
    batch_cost_observe(&c, 8, t9b(8));
    cr_assert_eq(batch_cost_fit(&c, &f, &b), 0);
    cr_assert_eq(batch_cost_prefill_limit(&c, 8, 8, 1.0), -1);
}

Test(batch_cost, fit_recovers_the_line) {
    struct batch_cost c;
    batch_cost_init(&c);
    int sizes[] = {100, 1, 1, 1, 37, 1, 1, 8, 8, 256, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        batch_cost_observe(&c, sizes[i], t9b(sizes[i]));
    double f, b;
    cr_assert_eq(batch_cost_fit(&c, &f, &b), 1);
    cr_assert_float_eq(f, 0.070, 1e-9);
    cr_assert_float_eq(b, 0.051, 1e-9);
}

Test(batch_cost, limit_holds_the_batch_to_the_bound) {
    struct batch_cost c;
    batch_cost_init(&c);
    for (int i = 0; i < 10; i++)
        batch_cost_observe(&c, i % 2 ? 1 : 64, t9b(i % 2 ? 1 : 64));
    for (int ref = 1; ref <= 16; ref *= 2)
        for (int n_dec = 0; n_dec <= ref; n_dec++)
            for (double stall = 0.25; stall <= 4.0; stall *= 2) {
                int p = batch_cost_prefill_limit(&c, n_dec, ref, stall);
                double bound = (1.0 + stall) * t9b(ref);
                cr_assert_geq(p, 1);
                if (p > 1 || n_dec == 0) /* the floor of 1 token may exceed the bound */
                    cr_assert_leq(t9b(n_dec + p), bound + 1e-9, "ref=%d n_dec=%d stall=%g p=%d",
                                  ref, n_dec, stall, p);
                /* the largest such p: one more token would pass the bound */
                cr_assert_gt(t9b(n_dec + p + 1), bound - 1e-9, "ref=%d n_dec=%d stall=%g p=%d", ref,
                             n_dec, stall, p);
            }
    /* the 9B case: 8 decodes, stall 1 -> 8 + 70/51 = 9 prompt tokens ride along */
    cr_assert_eq(batch_cost_prefill_limit(&c, 8, 8, 1.0), 9);
}

Test(batch_cost, off_when_stall_not_positive) {
    struct batch_cost c;
    batch_cost_init(&c);
    batch_cost_observe(&c, 1, t9b(1));
    batch_cost_observe(&c, 64, t9b(64));
    cr_assert_eq(batch_cost_prefill_limit(&c, 1, 1, 0.0), -1);
    cr_assert_eq(batch_cost_prefill_limit(&c, 1, 1, -1.0), -1);
    cr_assert_eq(batch_cost_prefill_limit(&c, 1, 0, 1.0), -1);
    cr_assert_geq(batch_cost_prefill_limit(&c, 1, 1, 1.0), 1);
}

Test(batch_cost, keeps_the_last_fit_while_batches_are_alike) {
    struct batch_cost c;
    batch_cost_init(&c);
    batch_cost_observe(&c, 1, t9b(1));
    batch_cost_observe(&c, 64, t9b(64));
    int before = batch_cost_prefill_limit(&c, 8, 8, 1.0);
    for (int i = 0; i < 500; i++) /* steady decoding: the spread decays away */
        batch_cost_observe(&c, 8, t9b(8));
    cr_assert_eq(batch_cost_prefill_limit(&c, 8, 8, 1.0), before);
}

Test(batch_cost, follows_a_change_of_speed) {
    struct batch_cost c;
    batch_cost_init(&c);
    for (int i = 0; i < 40; i++)
        batch_cost_observe(&c, i % 2 ? 1 : 32, t9b(i % 2 ? 1 : 32));
    for (int i = 0; i < 200; i++) /* the machine got 3x slower (other load) */
        batch_cost_observe(&c, i % 2 ? 1 : 32, 3.0 * t9b(i % 2 ? 1 : 32));
    double f, b;
    cr_assert_eq(batch_cost_fit(&c, &f, &b), 1);
    cr_assert_float_eq(f, 0.210, 1e-3);
    cr_assert_float_eq(b, 0.153, 1e-3);
}

Test(batch_cost, ignores_nonsense) {
    struct batch_cost c;
    batch_cost_init(&c);
    batch_cost_observe(&c, 0, 1.0);
    batch_cost_observe(&c, -3, 1.0);
    batch_cost_observe(&c, 5, 0.0);
    batch_cost_observe(&c, 5, -1.0);
    batch_cost_observe(&c, 5, NAN);
    batch_cost_observe(&c, 5, INFINITY);
    double f, b;
    cr_assert_eq(batch_cost_fit(&c, &f, &b), 0);
    /* bigger batches measured cheaper (noise): no fit rather than a negative slope */
    batch_cost_observe(&c, 1, 0.5);
    batch_cost_observe(&c, 64, 0.1);
    cr_assert_eq(batch_cost_fit(&c, &f, &b), 0);
}
