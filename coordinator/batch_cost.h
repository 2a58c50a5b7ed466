/* coordinator/batch_cost.h: what a micro-batch costs, learned from the batches that ran, and
 * how many prompt tokens a micro-batch may carry while sequences are decoding.
 *
 * Model: a batch of n tokens keeps the slowest stage busy t(n) = fixed + per_token * n seconds
 * (fixed: reading the layer weights once, the hops; per_token: the arithmetic of one row). It is
 * fitted by least squares over the batches seen so far, each weighted by decay^age, so it
 * follows a machine whose speed changes (other load, a re-plan). A fit needs batches of
 * different sizes (a weighted spread of at least 2 tokens); while the recent batches are all
 * alike (steady decoding) the last good fit is kept. Before the first fit there is no limit.
 *
 * Policy: while sequences decode, no micro-batch may take longer than (1 + stall) times a batch
 * of ref_dec decodes alone, ref_dec being the decode batch size the scheduler aims at. A batch
 * that carries ref_dec decodes may then add stall * t(ref_dec) / per_token prompt tokens, so
 * when prompts and decodes compete the decodes keep 1/(1+stall) of their speed and prefill
 * gets stall/(1+stall) of its full rate. Without the limit one 512-token chunk holds every
 * stream for the time of 512 rows (about 26 s for a 9B model on 2 cores).
 *
 * Pure arithmetic, no locking: the scheduler thread owns its batch_cost. */
#ifndef BT_COORDINATOR_BATCH_COST_H
#define BT_COORDINATOR_BATCH_COST_H

struct batch_cost {
    double w, wn, wnn, wt, wnt;  /* decayed sums of 1, n, n^2, t, n*t */
    double fixed_s, per_token_s; /* the last good fit */
    int fitted;
};

void batch_cost_init(struct batch_cost *c);
/* One completed batch: n_tokens rows (> 0) kept the slowest stage busy seconds (> 0); other
 * values are ignored. Refits. */
void batch_cost_observe(struct batch_cost *c, int n_tokens, double seconds);
/* 1 with the fit's terms when there is one, else 0. */
int batch_cost_fit(const struct batch_cost *c, double *fixed_s, double *per_token_s);
/* The most prompt tokens a batch with n_dec decodes may carry so that it takes at most
 * (1 + stall) * t(ref_dec): -1 = no limit (no fit yet, stall <= 0, or ref_dec < 1), else at
 * least 1, so prompts always progress. */
int batch_cost_prefill_limit(const struct batch_cost *c, int n_dec, int ref_dec, double stall);

#endif
