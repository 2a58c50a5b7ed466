/* client/cli_util.h: what the local-inference commands (eval, generate, run) share: a
 * one-sequence in-process pipeline of stages over a model, the decode loop on top of it, and
 * the file helpers (token-id lists, raw f32) of every command.
 *
 * A pipeline is one or more stages whose layer ranges chain ("0:3,3:8"); a single range that
 * does not start at 0 takes hidden states in, one that does not end at n_layer gives hidden
 * states out. All stages share one thread pool and run one after the other, each with its own
 * weights, state pool (one slot) and forward ctx, exactly as pipeline workers would. */
#ifndef BT_CLIENT_CLI_UTIL_H
#define BT_CLIENT_CLI_UTIL_H
#include "client/cli_flags.h"
#include "common/err.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "ops/threadpool.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_MAX_STAGES 32

struct cli_stage {
    int lo, hi;
    struct weights *w;
    seqstate_pool_t *st;
    forward_ctx_t *fc;
    int slot;
};

struct cli_pipe {
    struct model_desc *m;
    pool_t *pool;
    int n_stages;
    struct cli_stage s[CLI_MAX_STAGES];
    int max_tokens; /* tokens per forward call (the prefill chunk) */
    float *hid[2];  /* [max_tokens][H] hand-over buffers between stages */
    int lo, hi;     /* the whole pipeline's range */
};

/* layers: NULL = "0:n_layer"; else "lo:hi[,lo:hi...]" with each range starting where the
 * previous ended. BT_EINVAL naming the flag value; errors of model_open/weights_load. */
int cli_pipe_open(struct cli_pipe *p, const char *model, const char *layers, int threads,
                  int max_tokens, int max_ctx, bt_err *e);
void cli_pipe_close(struct cli_pipe *p);

/* Runs n tokens of the sequence through every stage, in chunks of max_tokens. Input: ids when
 * the pipeline starts at layer 0, else hidden [n][H]. Output into dst: logits (out = ALL:
 * [n][V]; LAST: [1][V]; NONE: nothing) when it ends at n_layer, else hidden [n][H]. */
int cli_pipe_run(struct cli_pipe *p, const int32_t *ids, const float *hidden, int n,
                 enum fwd_out out, float *dst, bt_err *e);

/* First lo and last hi of a --layers value (unchecked; cli_pipe_open validates it). */
void cli_layers_ends(const char *layers, int *lo, int *hi);

/* Continues ids[0..n) by up to n_gen tokens on a pipeline over the whole model (built from l
 * with room for n + n_gen positions; BT_EINVAL when --layers leaves layers out). ids must be
 * below the vocabulary (BT_EINVAL naming src). Candidates are the ids below n_real (0 = every
 * row of the vocabulary). on_token gets each sampled id in order and returns 0 to go on, 1 to
 * stop after it, or a negative code, which is returned; a stop id of sp ends the loop before
 * on_token sees it. */
typedef int (*cli_token_fn)(void *ctx, int32_t id, bt_err *e);
struct cli_gen_stats {
    int n_gen;                   /* tokens sampled (one that stopped included) */
    uint64_t t_start, t_prefill; /* bt_now_ns() before and after the prompt */
};
int cli_generate(const struct cli_local *l, const int32_t *ids, int n, const char *src, int n_gen,
                 const struct sampler_params *sp, int32_t n_real, cli_token_fn on_token, void *ctx,
                 struct cli_gen_stats *st, bt_err *e);

/* All of f until end of file, NUL-terminated; *buf malloc'ed. -EIO naming what on a read
 * error. */
int cli_read_all(FILE *f, const char *what, char **buf, size_t *len, bt_err *e);
/* Token ids written as decimal numbers separated by white space or commas. limit > 0: ids must
 * be below it. BT_EINVAL "bad id 'TEXT'" (+ " (vocabulary size N)" with a limit). *ids
 * malloc'ed (also when *n is 0). */
int cli_parse_ids(const char *text, int32_t limit, int32_t **ids, size_t *n, bt_err *e);
/* cli_parse_ids of a file (without a limit) that must hold at least one id. */
int cli_read_ids(const char *path, int32_t **ids, int *n, bt_err *e);
/* Whole file of little-endian f32. *data malloc'ed, *n floats. */
int cli_read_f32(const char *path, float **data, size_t *n, bt_err *e);
int cli_write_f32(const char *path, const float *data, size_t n, bt_err *e);

#endif
