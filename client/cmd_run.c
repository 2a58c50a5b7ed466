/* client/cmd_run.c: `baton run`: local text generation from a prompt. Tokenizes (engine/
 * tokenizer; special-token text is parsed), optionally wraps the prompt in the model's chat
 * template (engine/chat, thinking switch explicit), prefills in chunks, then samples and
 * streams the decoded text to stdout until N tokens or an end-of-generation token. Prompt and
 * generation speeds go to stderr. The decode loop is cli_generate (client/cli_util). */
#include "client/cli_util.h"
#include "client/commands.h"
#include "common/clock.h"
#include "engine/chat.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <argp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run_args {
    struct cli_flags f;
};

static const struct argp_option run_opts[] = {
    {"model", CLI_KEY_MODEL, "FILE", 0, "model: .gguf file or HF checkpoint directory", 0},
    {"prompt", CLI_KEY_PROMPT, "TEXT", 0, "prompt text", 0},
    {"chat", CLI_KEY_CHAT, 0, 0, "wrap the prompt as a user turn of the chat template", 0},
    {"think", CLI_KEY_THINK, 0, 0, "chat: let the model think first", 0},
    {"no-think", CLI_KEY_NO_THINK, 0, 0, "chat: empty think block (default)", 0},
    {"n", CLI_KEY_N, "N", 0, "max tokens to generate (default 128)", 0},
    {"temp", CLI_KEY_TEMP, "T", 0, "temperature (default 0.7; 0 = greedy)", 0},
    {"top-k", CLI_KEY_TOP_K, "K", 0, "top-k (default 20)", 0},
    {"top-p", CLI_KEY_TOP_P, "P", 0, "top-p (default 0.95)", 0},
    {"min-p", CLI_KEY_MIN_P, "P", 0, "min-p (default 0)", 0},
    {"repeat-penalty", CLI_KEY_REPEAT_PENALTY, "R", 0, "repetition penalty (default 1 = off)", 0},
    {"seed", CLI_KEY_SEED, "S", 0, "sampling seed (default 0)", 0},
    {"threads", CLI_KEY_THREADS, "N", 0, "threads (default: all CPUs)", 0},
    {"chunk", CLI_KEY_CHUNK, "N", 0, "prefill chunk in tokens (default 64)", 0},
    {"layers", CLI_KEY_LAYERS, "LO:HI,..", 0, "split into chained in-process stages", 0},
    {0}};

static error_t run_parse(int key, char *arg, struct argp_state *st) {
    struct run_args *a = st->input;
    switch (key) {
    case ARGP_KEY_END:
        if (!a->f.l.model || !a->f.p.prompt) argp_error(st, "--model and -p are required");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

/* Streams each token's text; stops (without showing it) at an end-of-generation token. */
struct run_view {
    tok_t *tok;
    tok_stream_t *ts;
};

static int show_token(void *ctx, int32_t t, bt_err *e) {
    struct run_view *v = ctx;
    if (tokenizer_is_eog(v->tok, t)) return 1;
    const char *piece;
    size_t plen;
    int rc = tok_stream_push(v->ts, t, &piece, &plen, e);
    if (rc) return rc;
    fwrite(piece, 1, plen, stdout);
    fflush(stdout);
    return 0;
}

int cmd_run(int argc, char **argv) {
    struct run_args a = {.f.l.chunk = 64, .f.s.n = 128};
    sampler_params_default(&a.f.s.sp);
    a.f.s.sp.temperature = 0.7f, a.f.s.sp.top_k = 20, a.f.s.sp.top_p = 0.95f;
    struct argp argp = {run_opts, run_parse, NULL, "Generates text from a prompt.", 0, 0, 0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    tok_t *tok = NULL;
    tok_stream_t *ts = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0, len;
    int rc;
    bt_err e = {0};
    struct model_desc *m = NULL;
    /* The tokenizer lives with the model's metadata (GGUF) or beside it (tokenizer.json). */
    if ((rc = model_open(&m, a.f.l.model, &e)) ||
        (rc = tokenizer_open(&tok, m->tokenizer_path, &e)))
        goto fail;
    model_close(m);
    m = NULL;
    const char *prompt = a.f.p.prompt;
    if (a.f.p.chat) {
        struct chat_msg msg = {.role = "user", .content = a.f.p.prompt};
        struct chat_opts co = {chat_detect(tokenizer_chat_template(tok)), 1, a.f.p.think, NULL};
        if ((rc = chat_render(&msg, 1, &co, &text, &len, &e))) goto fail;
        prompt = text;
    }
    if ((rc = tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n_ids, &e))) goto fail;
    if (n_ids == 0) {
        rc = bt_fail(&e, BT_EINVAL, "the prompt has no tokens");
        goto fail;
    }
    int n = (int)n_ids;
    struct run_view v = {tok, NULL};
    struct cli_gen_stats gs;
    if ((rc = tok_stream_new(&ts, tok, 0, &e))) goto fail;
    v.ts = ts;
    if ((rc = cli_generate(&a.f.l, ids, n, "prompt", a.f.s.n, &a.f.s.sp, tokenizer_n_real(tok),
                           show_token, &v, &gs, &e)))
        goto fail;
    const char *rest;
    size_t rlen;
    tok_stream_flush(ts, &rest, &rlen);
    fwrite(rest, 1, rlen, stdout);
    printf("\n");
    fflush(stdout); /* the text ends before the timing line on a shared terminal */
    uint64_t t2 = bt_now_ns();
    double ps = (double)(gs.t_prefill - gs.t_start) * 1e-9,
           gsec = (double)(t2 - gs.t_prefill) * 1e-9;
    fprintf(stderr,
            "prompt: %d tokens, %.2f s, %.1f tok/s | generation: %d tokens, %.2f s, "
            "%.1f tok/s\n",
            n, ps, ps > 0 ? n / ps : 0.0, gs.n_gen, gsec, gsec > 0 ? gs.n_gen / gsec : 0.0);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "baton run: %s\n", bt_errmsg(&e, rc));
    model_close(m);
    tok_stream_free(ts);
    tokenizer_free(tok);
    free(text), free(ids);
    return rc ? 1 : 0;
}
