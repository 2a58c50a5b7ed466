/* coordinator/batch_cost.c: see batch_cost.h. */
#include "coordinator/batch_cost.h"

#include <math.h>

/* Weight of a batch after 30 more: 0.95^30 = 0.21, so the fit follows a change of speed within
 * a few dozen batches (seconds on a small model, a minute on a 9B one). */
#define DECAY 0.95
/* Least weighted spread of batch sizes (variance, tokens^2) that determines a slope. */
#define MIN_VAR 4.0
/* No more prompt tokens per batch than this, whatever the fit says (a wild slope). */
#define MAX_LIMIT (1 << 20)

void batch_cost_init(struct batch_cost *c) {
    *c = (struct batch_cost){0};
}

void batch_cost_observe(struct batch_cost *c, int n_tokens, double seconds) {
    if (n_tokens <= 0 || !(seconds > 0.0) || !isfinite(seconds)) return;
    double n = (double)n_tokens;
    c->w = c->w * DECAY + 1.0;
    c->wn = c->wn * DECAY + n;
    c->wnn = c->wnn * DECAY + n * n;
    c->wt = c->wt * DECAY + seconds;
    c->wnt = c->wnt * DECAY + n * seconds;
    double mean_n = c->wn / c->w, var_n = c->wnn / c->w - mean_n * mean_n;
    if (var_n < MIN_VAR) return; /* all alike lately: keep the last fit */
    double mean_t = c->wt / c->w, cov = c->wnt / c->w - mean_n * mean_t;
    double slope = cov / var_n;
    if (!(slope > 0.0)) return; /* noise: bigger batches cannot be cheaper */
    double fixed = mean_t - slope * mean_n;
    c->fixed_s = fixed > 0.0 ? fixed : 0.0;
    c->per_token_s = slope;
    c->fitted = 1;
}

int batch_cost_fit(const struct batch_cost *c, double *fixed_s, double *per_token_s) {
    if (!c->fitted) return 0;
    *fixed_s = c->fixed_s;
    *per_token_s = c->per_token_s;
    return 1;
}

int batch_cost_prefill_limit(const struct batch_cost *c, int n_dec, int ref_dec, double stall) {
    if (!c->fitted || !(stall > 0.0) || ref_dec < 1) return -1;
    double b = c->per_token_s, t_ref = c->fixed_s + b * ref_dec;
    /* t(n_dec + p) = (1 + stall) * t(ref_dec), solved for p */
    double p = ((1.0 + stall) * t_ref - (c->fixed_s + b * (n_dec > 0 ? n_dec : 0))) / b;
    if (!(p < MAX_LIMIT)) return MAX_LIMIT;
    return p >= 1.0 ? (int)p : 1;
}
