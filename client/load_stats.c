/* client/load_stats.c: the arithmetic of `baton load`: length distributions parsed from flags, a
 * seeded PRNG to draw from them, latency sample sets and their percentiles. Contracts in
 * load_stats.h. */
#include "client/load_stats.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A whole decimal number (no sign, no junk); -1 on anything else. */
static double parse_num(const char *s, const char *end) {
    if (s == end) return -1;
    char tmp[64];
    size_t n = (size_t)(end - s);
    if (n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (tmp[0] == '-' || tmp[0] == '+' || tmp[0] == ' ') return -1;
    char *ep;
    errno = 0;
    double v = strtod(tmp, &ep);
    if (errno || *ep || !isfinite(v)) return -1;
    return v;
}

int load_dist_parse(const char *s, struct load_dist *d, bt_err *e) {
    if (!s) return bt_fail(e, BT_EINVAL, "length distribution: missing");
    memset(d, 0, sizeof *d);
    const char *p = s;
    int normal = 0;
    if (!strncmp(p, "normal:", 7)) normal = 1, p += 7;
    const char *colon = strchr(p, ':');
    const char *end = p + strlen(p);
    double a = parse_num(p, colon ? colon : end);
    double b = colon ? parse_num(colon + 1, end) : 0;
    if (a < 0 || b < 0 || (colon && strchr(colon + 1, ':')))
        return bt_fail(e, BT_EINVAL,
                       "length distribution '%s': expected N, LO:HI or normal:MEAN:SD", s);
    if (normal) {
        if (!colon) return bt_fail(e, BT_EINVAL, "length distribution '%s': normal:MEAN:SD", s);
        if (a < 1 || a > LOAD_DIST_MAX)
            return bt_fail(e, BT_EINVAL, "length distribution '%s': mean in 1..%d", s,
                           LOAD_DIST_MAX);
        d->kind = DIST_NORMAL, d->a = a, d->b = b;
        return 0;
    }
    if (a < 1 || a > LOAD_DIST_MAX || a != floor(a) ||
        (colon && (b < 1 || b > LOAD_DIST_MAX || b != floor(b))))
        return bt_fail(e, BT_EINVAL, "length distribution '%s': whole numbers in 1..%d", s,
                       LOAD_DIST_MAX);
    if (colon && b < a) return bt_fail(e, BT_EINVAL, "length distribution '%s': LO > HI", s);
    d->kind = colon ? DIST_UNIFORM : DIST_FIXED;
    d->a = a, d->b = colon ? b : a;
    return 0;
}

void load_dist_format(const struct load_dist *d, char *out, size_t cap) {
    switch (d->kind) {
    case DIST_FIXED:
        snprintf(out, cap, "%.0f", d->a);
        break;
    case DIST_UNIFORM:
        snprintf(out, cap, "%.0f:%.0f", d->a, d->b);
        break;
    case DIST_NORMAL:
        snprintf(out, cap, "normal:%g:%g", d->a, d->b);
        break;
    }
}

uint64_t load_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double load_rng_unit(uint64_t *state) {
    return (double)(load_rng_next(state) >> 11) * (1.0 / 9007199254740992.0); /* 53 bits */
}

static int clamp_len(double v) {
    if (!(v >= 1)) /* also NaN */
        return 1;
    if (v > LOAD_DIST_MAX) return LOAD_DIST_MAX;
    return (int)v;
}

int load_dist_sample(const struct load_dist *d, uint64_t *rng) {
    switch (d->kind) {
    case DIST_FIXED:
        return clamp_len(d->a);
    case DIST_UNIFORM: {
        uint64_t span = (uint64_t)(d->b - d->a) + 1;
        return clamp_len(d->a + (double)(load_rng_next(rng) % span));
    }
    case DIST_NORMAL: { /* Box-Muller; 1 - u keeps the log argument in (0, 1] */
        double u1 = 1.0 - load_rng_unit(rng), u2 = load_rng_unit(rng);
        double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        return clamp_len(floor(d->a + d->b * z + 0.5));
    }
    }
    return 1;
}

double load_dist_mean(const struct load_dist *d) {
    return d->kind == DIST_UNIFORM ? (d->a + d->b) / 2 : d->a;
}

int load_samples_add(struct load_samples *s, double x) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        double *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return -ENOMEM;
        s->v = nv, s->cap = nc;
    }
    s->v[s->n++] = x;
    s->sorted = 0;
    return 0;
}

int load_samples_merge(struct load_samples *dst, const struct load_samples *src) {
    for (size_t i = 0; i < src->n; i++)
        if (load_samples_add(dst, src->v[i])) return -ENOMEM;
    return 0;
}

void load_samples_free(struct load_samples *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double load_percentile(struct load_samples *s, double p) {
    if (!s->n) return NAN;
    if (!s->sorted) {
        qsort(s->v, s->n, sizeof *s->v, cmp_double);
        s->sorted = 1;
    }
    if (p <= 0) return s->v[0];
    if (p >= 100) return s->v[s->n - 1];
    double rank = p / 100.0 * (double)(s->n - 1);
    size_t lo = (size_t)rank;
    double frac = rank - (double)lo;
    if (lo + 1 >= s->n) return s->v[s->n - 1];
    return s->v[lo] + (s->v[lo + 1] - s->v[lo]) * frac;
}

double load_mean(const struct load_samples *s) {
    if (!s->n) return NAN;
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    return sum / (double)s->n;
}
