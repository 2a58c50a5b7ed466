/* engine/sampler.h: choosing the next token from a row of logits, per sequence, and cutting
 * the generated text at stop strings.
 *
 * Pipeline (llama.cpp's default order): ids >= n_real are never candidates (padding rows,
 * spec §16 item 24) -> repetition/presence/frequency penalties over the last penalty_last_n
 * tokens of history -> greedy (temperature <= 0: first index of the maximum) or top-k ->
 * top-p -> min-p -> temperature -> a draw from a per-sampler xoshiro256** stream seeded by
 * `seed` (same seed, same logits, same history: same tokens).
 * Logprobs are the log-softmax of the raw logits over the real vocabulary (before penalties,
 * truncation and temperature): the model's own distribution, as OpenAI reports it.
 * All scratch (O(vocab)) is allocated in sampler_new: sampling allocates nothing.
 * A sampler_t belongs to one sequence and is used by one thread at a time. */
#ifndef BT_ENGINE_SAMPLER_H
#define BT_ENGINE_SAMPLER_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

#define SAMPLER_MAX_LOGPROBS 20
#define SAMPLER_MAX_STOP_IDS 16

struct sampler_params {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1: off; positive logits divided, negative multiplied */
    float presence_penalty;   /* 0: off; subtracted once per token present in the window */
    float frequency_penalty;  /* 0: off; subtracted once per occurrence in the window */
    int32_t penalty_last_n;   /* window of recent tokens; -1 = the whole history */
    uint64_t seed;
    int32_t n_logprobs;                     /* alternatives to report, 0..SAMPLER_MAX_LOGPROBS */
    int32_t stop_ids[SAMPLER_MAX_STOP_IDS]; /* extra stop tokens (besides EOG ones) */
    int32_t n_stop_ids;
};

/* temperature 1, top_k off, top_p 1, min_p 0, penalties off, last_n 64, seed 0. */
void sampler_params_default(struct sampler_params *p);

struct sampler_logprob {
    int32_t id;
    float logprob;
};
struct sampler_result {
    int32_t id;
    float logprob;                                    /* of id */
    int32_t n_top;                                    /* = min(n_logprobs, n_real) */
    struct sampler_logprob top[SAMPLER_MAX_LOGPROBS]; /* best first; ties: lower id first */
};

typedef struct sampler sampler_t;

/* n_vocab = logits per row; n_real <= n_vocab. BT_EINVAL for out-of-range parameters
 * (negative temperature/top_p/min_p, repetition_penalty <= 0, n_logprobs > max, ...). */
int sampler_new(sampler_t **out, const struct sampler_params *p, int32_t n_vocab, int32_t n_real,
                bt_err *e);
void sampler_free(sampler_t *s); /* NULL ok */
/* Picks a token from logits[n_vocab] (not modified). history: the sequence so far (prompt and
 * generated ids, oldest first) for the penalties; may be NULL when n_history is 0. res may be
 * NULL; it is filled (with n_top alternatives when n_logprobs > 0) otherwise. */
int32_t sampler_sample(sampler_t *s, const float *logits, const int32_t *history, size_t n_history,
                       struct sampler_result *res);
/* Advances the random stream as n_samples calls of sampler_sample would: a sample with
 * temperature > 0 takes exactly one draw, a greedy one none. A sequence that moves to a new
 * sampler (a re-planned pipeline) continues its stream where the old one left it. */
void sampler_skip(sampler_t *s, uint64_t n_samples);
/* 1 if id is one of the params' stop_ids. End-of-generation ids come from the tokenizer. */
int sampler_is_stop_id(const sampler_t *s, int32_t id);

/* Stop strings over streamed text. Text that could still be the start of a stop string is held
 * back until it is decided; once a stop string appears, the text before it is released and the
 * matcher reports the stop. */
typedef struct stopper stopper_t;
/* Empty strings in stops are ignored. -ENOMEM. */
int stopper_new(stopper_t **out, const char *const *stops, size_t n, bt_err *e);
void stopper_free(stopper_t *s); /* NULL ok */
/* Feeds text. *emit (borrowed until the next call) gets what may be sent now. Returns 1 when a
 * stop string was found (emit ends right before it; later feeds emit nothing), 0 otherwise,
 * -ENOMEM. */
int stopper_feed(stopper_t *s, const char *text, size_t len, const char **emit, size_t *emit_len);
/* End of generation: releases the held-back text. */
void stopper_flush(stopper_t *s, const char **emit, size_t *emit_len);

#endif
