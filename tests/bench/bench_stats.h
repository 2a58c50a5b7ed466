/* tests/bench/bench_stats.h: the median the benches report, of up to BENCH_MEDIAN_MAX values
 * (more are ignored); v is left as it was (a copy is sorted), and n <= 0 gives 0. */
#ifndef BT_TESTS_BENCH_STATS_H
#define BT_TESTS_BENCH_STATS_H
#include <stdlib.h>
#include <string.h>

#define BENCH_MEDIAN_MAX 64

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median(const double *v, int n) {
    if (n <= 0) return 0.0;
    if (n > BENCH_MEDIAN_MAX) n = BENCH_MEDIAN_MAX;
    double s[BENCH_MEDIAN_MAX];
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

#endif
