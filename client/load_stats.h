/* client/load_stats.h: the pure arithmetic of `baton load`: length distributions given on the
 * command line, a seeded PRNG to draw from them, and latency sample sets with percentiles.
 * No I/O, no globals; a sample set is used by one thread at a time (cmd_load keeps one per
 * client thread and merges them at the end). Unit-tested in tests/test_client.c. */
#ifndef BT_CLIENT_LOAD_STATS_H
#define BT_CLIENT_LOAD_STATS_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

/* "64" (fixed), "32:128" (uniform integers, both ends included), "normal:64:16" (mean 64,
 * standard deviation 16, rounded). Every draw is clamped to [1, LOAD_DIST_MAX]. */
#define LOAD_DIST_MAX 1000000

enum load_dist_kind { DIST_FIXED, DIST_UNIFORM, DIST_NORMAL };

struct load_dist {
    enum load_dist_kind kind;
    double a, b; /* fixed: a; uniform: [a, b]; normal: mean a, sd b */
};

/* BT_EINVAL naming s (bad number, lo > hi, values < 1, sd < 0). */
int load_dist_parse(const char *s, struct load_dist *d, bt_err *e);
/* Writes the canonical form ("64", "32:128", "normal:64:16") into out. */
void load_dist_format(const struct load_dist *d, char *out, size_t cap);
int load_dist_sample(const struct load_dist *d, uint64_t *rng);
double load_dist_mean(const struct load_dist *d); /* before clamping */

/* splitmix64: a small seeded generator; *state advances. */
uint64_t load_rng_next(uint64_t *state);
double load_rng_unit(uint64_t *state); /* uniform in [0, 1) */

struct load_samples {
    double *v;
    size_t n, cap;
    int sorted;
};

int load_samples_add(struct load_samples *s, double x);                           /* -ENOMEM */
int load_samples_merge(struct load_samples *dst, const struct load_samples *src); /* -ENOMEM */
void load_samples_free(struct load_samples *s);
/* Percentile p in [0, 100] by linear interpolation between the closest ranks (numpy's default:
 * rank = p/100 * (n-1)). Sorts the set on first use. NaN when empty. */
double load_percentile(struct load_samples *s, double p);
double load_mean(const struct load_samples *s); /* NaN when empty */

#endif
