/* engine/sampler.c: see sampler.h. Truncations work on a candidate array (id, logit) that
 * shrinks step by step; only top-p needs an order, and it sorts just the head it needs. */
#include "engine/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cand {
    int32_t id;
    float logit;
    float w; /* exp(logit - max), filled once the max is known */
};

struct sampler {
    struct sampler_params p;
    int32_t n_vocab, n_real;
    float *lg;         /* (n_real) penalised logits */
    int32_t *count;    /* (n_real) occurrences in the window; all zero between calls */
    struct cand *cand; /* (n_real) */
    uint64_t rng[4];   /* xoshiro256** state */
};

void sampler_params_default(struct sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->penalty_last_n = 64;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t s[4]) {
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

int sampler_new(sampler_t **out, const struct sampler_params *p, int32_t n_vocab, int32_t n_real,
                bt_err *e) {
    *out = NULL;
    if (n_vocab <= 0 || n_real <= 0 || n_real > n_vocab)
        return bt_fail(e, BT_EINVAL, "sampler: n_real %d / n_vocab %d", n_real, n_vocab);
    if (!(p->temperature >= 0.0f) || !(p->top_p >= 0.0f) || !(p->min_p >= 0.0f) ||
        !(p->min_p <= 1.0f) || !(p->repetition_penalty > 0.0f) || !isfinite(p->presence_penalty) ||
        !isfinite(p->frequency_penalty) || p->penalty_last_n < -1 || p->n_logprobs < 0 ||
        p->n_logprobs > SAMPLER_MAX_LOGPROBS || p->n_stop_ids < 0 ||
        p->n_stop_ids > SAMPLER_MAX_STOP_IDS)
        return bt_fail(e, BT_EINVAL,
                       "sampler: bad parameters (temperature %g top_p %g min_p %g "
                       "repetition_penalty %g last_n %d n_logprobs %d)",
                       (double)p->temperature, (double)p->top_p, (double)p->min_p,
                       (double)p->repetition_penalty, p->penalty_last_n, p->n_logprobs);
    sampler_t *s = calloc(1, sizeof *s);
    if (!s) return bt_fail(e, -ENOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab, s->n_real = n_real;
    s->lg = malloc((size_t)n_real * sizeof *s->lg);
    s->count = calloc((size_t)n_real, sizeof *s->count);
    s->cand = malloc((size_t)n_real * sizeof *s->cand);
    if (!s->lg || !s->count || !s->cand) {
        sampler_free(s);
        return bt_fail(e, -ENOMEM, "sampler: out of memory for %d candidates", n_real);
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
}

void sampler_skip(sampler_t *s, uint64_t n_samples) {
    if (s->p.temperature <= 0.0f) return; /* greedy draws nothing */
    for (uint64_t i = 0; i < n_samples; i++)
        (void)xoshiro_next(s->rng);
}

void sampler_free(sampler_t *s) {
    if (!s) return;
    free(s->lg);
    free(s->count);
    free(s->cand);
    free(s);
}

int sampler_is_stop_id(const sampler_t *s, int32_t id) {
    for (int32_t i = 0; i < s->p.n_stop_ids; i++)
        if (s->p.stop_ids[i] == id) return 1;
    return 0;
}

/* Orders by logit descending, then id ascending: a total order, so results never depend on
 * how the selection happened to partition. */
static int cand_before(const struct cand *a, const struct cand *b) {
    return a->logit != b->logit ? a->logit > b->logit : a->id < b->id;
}

static void cswap(struct cand *a, struct cand *b) {
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Moves the k best candidates of c[0..n) to the front (in no particular order). */
static void select_top(struct cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n; /* the k-th element lies in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        /* median of three as pivot, moved to hi - 1 */
        if (cand_before(&c[mid], &c[lo])) cswap(&c[mid], &c[lo]);
        if (cand_before(&c[hi - 1], &c[lo])) cswap(&c[hi - 1], &c[lo]);
        if (cand_before(&c[mid], &c[hi - 1])) cswap(&c[mid], &c[hi - 1]);
        struct cand piv = c[hi - 1];
        size_t store = lo;
        for (size_t i = lo; i < hi - 1; i++)
            if (cand_before(&c[i], &piv)) cswap(&c[i], &c[store++]);
        cswap(&c[store], &c[hi - 1]);
        if (store == k - 1 || store == k) return;
        if (store < k)
            lo = store + 1;
        else
            hi = store;
    }
}

/* Top-p without sorting: the smallest prefix of c in cand_before order whose mass
 * (sum of exp(logit - mx)) reaches target, found by quickselect on the mass (expected O(n)).
 * Moves those candidates to the front and returns their count (at least 1). */
static size_t top_p_prefix(struct cand *c, size_t n, double target) {
    size_t lo = 0, hi = n;
    double acc = 0.0; /* mass of c[0..lo): all kept, all better than c[lo..hi) */
    while (lo < hi) {
        if (hi - lo == 1) return lo + 1;
        size_t mid = lo + (hi - lo) / 2;
        if (cand_before(&c[mid], &c[lo])) cswap(&c[mid], &c[lo]);
        if (cand_before(&c[hi - 1], &c[lo])) cswap(&c[hi - 1], &c[lo]);
        if (cand_before(&c[mid], &c[hi - 1])) cswap(&c[mid], &c[hi - 1]);
        struct cand piv = c[hi - 1];
        size_t store = lo;
        double left = 0.0;
        for (size_t i = lo; i < hi - 1; i++)
            if (cand_before(&c[i], &piv)) {
                left += (double)c[i].w;
                cswap(&c[i], &c[store++]);
            }
        cswap(&c[store], &c[hi - 1]);
        if (acc + left >= target) {
            hi = store; /* the cut lies among the better ones (store > lo: left > 0) */
        } else {
            acc += left + (double)piv.w;
            if (acc >= target) return store + 1;
            lo = store + 1;
        }
    }
    return lo > 0 ? lo : 1;
}

/* Top-N of the raw logits and the chosen token's log-softmax, over the real vocabulary. */
static void fill_logprobs(const sampler_t *s, const float *logits, int32_t chosen,
                          struct sampler_result *res) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < s->n_real; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int32_t i = 0; i < s->n_real; i++)
        sum += (double)expf(logits[i] - mx);
    double lse = (double)mx + log(sum);
    res->id = chosen;
    res->logprob = (float)((double)logits[chosen] - lse);
    int32_t n = s->p.n_logprobs < s->n_real ? s->p.n_logprobs : s->n_real;
    res->n_top = 0;
    for (int32_t i = 0; i < s->n_real && n > 0; i++) { /* insertion into a short sorted list */
        struct cand c = {i, logits[i], 0.0f};
        int32_t k = res->n_top;
        if (k == n && !(logits[i] > logits[res->top[k - 1].id])) continue;
        if (k < n)
            res->n_top++;
        else
            k--;
        while (k > 0 && cand_before(&c, &(struct cand){res->top[k - 1].id,
                                                       logits[res->top[k - 1].id], 0.0f})) {
            res->top[k] = res->top[k - 1];
            k--;
        }
        res->top[k] = (struct sampler_logprob){i, 0.0f};
    }
    for (int32_t k = 0; k < res->n_top; k++)
        res->top[k].logprob = (float)((double)logits[res->top[k].id] - lse);
}

static void apply_penalties(sampler_t *s, const int32_t *hist, size_t n_hist) {
    const struct sampler_params *p = &s->p;
    if (p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
        p->frequency_penalty == 0.0f)
        return;
    size_t win = p->penalty_last_n < 0                ? n_hist
                 : (size_t)p->penalty_last_n < n_hist ? (size_t)p->penalty_last_n
                                                      : n_hist;
    const int32_t *h = hist + (n_hist - win);
    for (size_t i = 0; i < win; i++)
        if (h[i] >= 0 && h[i] < s->n_real) s->count[h[i]]++;
    /* each distinct token once; zeroing its count keeps the array clean for the next call */
    for (size_t i = 0; i < win; i++) {
        int32_t id = h[i];
        if (id < 0 || id >= s->n_real || !s->count[id]) continue;
        float v = s->lg[id];
        v = v > 0.0f ? v / p->repetition_penalty : v * p->repetition_penalty;
        v -= (float)s->count[id] * p->frequency_penalty + p->presence_penalty;
        s->lg[id] = v;
        s->count[id] = 0;
    }
}

int32_t sampler_sample(sampler_t *s, const float *logits, const int32_t *history, size_t n_history,
                       struct sampler_result *res) {
    const struct sampler_params *p = &s->p;
    int32_t n_real = s->n_real;
    memcpy(s->lg, logits, (size_t)n_real * sizeof *s->lg);
    if (n_history) apply_penalties(s, history, n_history);
    int32_t chosen = 0;
    if (p->temperature <= 0.0f) {
        for (int32_t i = 1; i < n_real; i++) /* strict >: the first index of the maximum */
            if (s->lg[i] > s->lg[chosen]) chosen = i;
        goto done;
    }
    struct cand *c = s->cand;
    size_t n = (size_t)n_real;
    for (size_t i = 0; i < n; i++)
        c[i] = (struct cand){(int32_t)i, s->lg[i], 0.0f};
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        select_top(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }
    /* probabilities at temperature 1 for the truncations (llama.cpp order) */
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit > mx) mx = c[i].logit;
    if (!isfinite(mx)) { /* every logit -inf or NaN: nothing to choose between */
        chosen = c[0].id;
        (void)xoshiro_next(s->rng); /* still one draw, so sampler_skip stays exact */
        goto done;
    }
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        c[i].w = expf(c[i].logit - mx);
        total += (double)c[i].w;
    }
    if (p->top_p < 1.0f) n = top_p_prefix(c, n, (double)p->top_p * total);
    if (p->min_p > 0.0f) {
        /* keep p_i >= min_p * p_max, i.e. logit >= max + log(min_p); the max always stays */
        float cut = mx + logf(p->min_p);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit >= cut) c[k++] = c[i];
        n = k;
    }
    /* temperature, then one draw */
    double sum = 0.0;
    float inv_t = 1.0f / p->temperature;
    for (size_t i = 0; i < n; i++) {
        c[i].w = inv_t == 1.0f ? c[i].w : expf((c[i].logit - mx) * inv_t);
        sum += (double)c[i].w;
    }
    double u = uniform01(s->rng) * sum, acc = 0.0;
    chosen = c[n - 1].id;
    for (size_t i = 0; i < n; i++) {
        acc += (double)c[i].w;
        if (u < acc) {
            chosen = c[i].id;
            break;
        }
    }
done:
    if (res) fill_logprobs(s, logits, chosen, res);
    return chosen;
}

/* ---- stop strings ---- */

struct stopper {
    char **stops;
    size_t *len, n, max_len;
    char *held; /* text that may begin a stop string */
    size_t n_held;
    char *out;
    size_t out_cap;
    int done;
};

int stopper_new(stopper_t **out, const char *const *stops, size_t n, bt_err *e) {
    *out = NULL;
    stopper_t *s = calloc(1, sizeof *s);
    if (!s) return bt_fail(e, -ENOMEM, "stopper: out of memory");
    s->stops = calloc(n ? n : 1, sizeof *s->stops);
    s->len = calloc(n ? n : 1, sizeof *s->len);
    if (!s->stops || !s->len) goto oom;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(stops[i]);
        if (!l) continue;
        if (!(s->stops[s->n] = strdup(stops[i]))) goto oom;
        s->len[s->n++] = l;
        if (l > s->max_len) s->max_len = l;
    }
    s->held = malloc(s->max_len + 1);
    s->out_cap = 2 * s->max_len + 256;
    s->out = malloc(s->out_cap);
    if (!s->held || !s->out) goto oom;
    *out = s;
    return 0;
oom:
    stopper_free(s);
    return bt_fail(e, -ENOMEM, "stopper: out of memory");
}

void stopper_free(stopper_t *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++)
        free(s->stops[i]);
    free(s->stops);
    free(s->len);
    free(s->held);
    free(s->out);
    free(s);
}

int stopper_feed(stopper_t *s, const char *text, size_t len, const char **emit, size_t *emit_len) {
    *emit = s->out, *emit_len = 0;
    if (s->done) return 1;
    size_t total = s->n_held + len;
    if (total + 1 > s->out_cap) {
        size_t cap = 2 * total + 1;
        char *p = realloc(s->out, cap);
        if (!p) return -ENOMEM;
        s->out = p, s->out_cap = cap;
    }
    /* out = held + text; emit a prefix of it, keep the undecided tail in held */
    memcpy(s->out, s->held, s->n_held);
    memcpy(s->out + s->n_held, text, len);
    *emit = s->out;
    size_t first = total;
    for (size_t i = 0; i < s->n; i++) {
        const char *hit = memmem(s->out, total, s->stops[i], s->len[i]);
        if (hit && (size_t)(hit - s->out) < first) first = (size_t)(hit - s->out);
    }
    if (first < total) {
        s->done = 1, s->n_held = 0;
        *emit_len = first;
        return 1;
    }
    /* longest suffix that is a proper prefix of some stop string */
    size_t hold = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t maxk = s->len[i] - 1 < total ? s->len[i] - 1 : total;
        for (size_t k = maxk; k > hold; k--)
            if (!memcmp(s->out + total - k, s->stops[i], k)) {
                hold = k;
                break;
            }
    }
    memcpy(s->held, s->out + total - hold, hold);
    s->n_held = hold;
    *emit_len = total - hold;
    return 0;
}

void stopper_flush(stopper_t *s, const char **emit, size_t *emit_len) {
    memcpy(s->out, s->held, s->n_held); /* out_cap > max_len >= n_held */
    *emit = s->out;
    *emit_len = s->done ? 0 : s->n_held;
    s->n_held = 0;
}
