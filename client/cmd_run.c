/* client/cmd_run.c: `baton run`: local text generation from a prompt. Tokenizes (engine/
 * tokenizer; special-token text is parsed), optionally wraps the prompt in the model's chat
 * template (engine/chat, thinking switch explicit), prefills in chunks, then samples and
 * streams the decoded text to stdout until N tokens or an end-of-generation token. Prompt and
 * generation speeds go to stderr. */
#include "client/cli_util.h"
#include "client/commands.h"
#include "common/clock.h"
#include "engine/chat.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <argp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run_args {
    const char *model, *prompt, *layers;
    int chat, think, threads, chunk, n_gen;
    struct sampler_params sp;
    bt_err e;
};

enum { OPT_THINK = 1000, OPT_NO_THINK, OPT_TOPK, OPT_TOPP, OPT_MINP, OPT_SEED, OPT_REP };

static const struct argp_option run_opts[] = {
    {"model", 'm', "FILE", 0, "model: .gguf file or HF checkpoint directory", 0},
    {"prompt", 'p', "TEXT", 0, "prompt text", 0},
    {"chat", 'C', 0, 0, "wrap the prompt as a user turn of the chat template", 0},
    {"think", OPT_THINK, 0, 0, "chat: let the model think first", 0},
    {"no-think", OPT_NO_THINK, 0, 0, "chat: empty think block (default)", 0},
    {"n", 'n', "N", 0, "max tokens to generate (default 128)", 0},
    {"temp", 'T', "T", 0, "temperature (default 0.7; 0 = greedy)", 0},
    {"top-k", OPT_TOPK, "K", 0, "top-k (default 20)", 0},
    {"top-p", OPT_TOPP, "P", 0, "top-p (default 0.95)", 0},
    {"min-p", OPT_MINP, "P", 0, "min-p (default 0)", 0},
    {"repeat-penalty", OPT_REP, "R", 0, "repetition penalty (default 1 = off)", 0},
    {"seed", OPT_SEED, "S", 0, "sampling seed (default 0)", 0},
    {"threads", 'j', "N", 0, "threads (default: all CPUs)", 0},
    {"chunk", 'c', "N", 0, "prefill chunk in tokens (default 64)", 0},
    {"layers", 'l', "LO:HI,..", 0, "split into chained in-process stages", 0},
    {0}};

static error_t run_parse(int key, char *arg, struct argp_state *st) {
    struct run_args *a = st->input;
    switch (key) {
    case 'm':
        a->model = arg;
        break;
    case 'p':
        a->prompt = arg;
        break;
    case 'l':
        a->layers = arg;
        break;
    case 'C':
        a->chat = 1;
        break;
    case OPT_THINK:
        a->think = 1;
        break;
    case OPT_NO_THINK:
        a->think = 0;
        break;
    case 'T':
        a->sp.temperature = strtof(arg, NULL);
        break;
    case OPT_TOPK:
        a->sp.top_k = (int32_t)strtol(arg, NULL, 10);
        break;
    case OPT_TOPP:
        a->sp.top_p = strtof(arg, NULL);
        break;
    case OPT_MINP:
        a->sp.min_p = strtof(arg, NULL);
        break;
    case OPT_REP:
        a->sp.repetition_penalty = strtof(arg, NULL);
        break;
    case OPT_SEED:
        a->sp.seed = strtoull(arg, NULL, 10);
        break;
    case 'n':
        if (cli_parse_int("-n", arg, 0, 1 << 20, &a->n_gen, &a->e)) argp_error(st, "%s", a->e.msg);
        break;
    case 'j':
        if (cli_parse_int("--threads", arg, 1, 1024, &a->threads, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case 'c':
        if (cli_parse_int("--chunk", arg, 1, 1 << 16, &a->chunk, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case ARGP_KEY_END:
        if (!a->model || !a->prompt) argp_error(st, "--model and -p are required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    struct run_args a = {.chunk = 64, .n_gen = 128};
    sampler_params_default(&a.sp);
    a.sp.temperature = 0.7f, a.sp.top_k = 20, a.sp.top_p = 0.95f;
    struct argp argp = {run_opts, run_parse, NULL, "Generates text from a prompt.", 0, 0, 0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    struct cli_pipe p = {0};
    tok_t *tok = NULL;
    tok_stream_t *ts = NULL;
    sampler_t *smp = NULL;
    char *text = NULL;
    int32_t *ids = NULL, *hist = NULL;
    float *lg = NULL;
    size_t n_ids = 0, len;
    int rc;
    bt_err e = {0};
    struct model_desc *m = NULL;
    /* The tokenizer lives with the model's metadata (GGUF) or beside it (tokenizer.json). */
    if ((rc = model_open(&m, a.model, &e)) || (rc = tokenizer_open(&tok, m->tokenizer_path, &e)))
        goto fail;
    model_close(m);
    m = NULL;
    const char *prompt = a.prompt;
    if (a.chat) {
        struct chat_msg msg = {.role = "user", .content = a.prompt};
        struct chat_opts co = {chat_detect(tokenizer_chat_template(tok)), 1, a.think, NULL};
        if ((rc = chat_render(&msg, 1, &co, &text, &len, &e))) goto fail;
        prompt = text;
    }
    if ((rc = tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n_ids, &e))) goto fail;
    if (n_ids == 0) {
        rc = bt_fail(&e, BT_EINVAL, "the prompt has no tokens");
        goto fail;
    }
    int n = (int)n_ids;
    if ((rc = cli_pipe_open(&p, a.model, a.layers, a.threads, a.chunk, n + a.n_gen, &e))) goto fail;
    if (p.lo != 0 || p.hi != p.m->hp.n_layer) {
        rc = bt_fail(&e, BT_EINVAL, "--layers must cover all %d layers", p.m->hp.n_layer);
        goto fail;
    }
    int V = p.m->hp.n_vocab;
    int32_t n_real = tokenizer_n_real(tok);
    if (n_real > V) n_real = V;
    if (!(lg = malloc((size_t)V * sizeof(float))) ||
        !(hist = malloc((size_t)(n + a.n_gen + 1) * sizeof(int32_t)))) {
        rc = bt_fail(&e, -ENOMEM, "buffers");
        goto fail;
    }
    memcpy(hist, ids, (size_t)n * sizeof(int32_t));
    if ((rc = sampler_new(&smp, &a.sp, V, n_real, &e)) || (rc = tok_stream_new(&ts, tok, 0, &e)))
        goto fail;

    uint64_t t0 = bt_now_ns();
    if ((rc = cli_pipe_run(&p, ids, NULL, n, FWD_OUT_LAST, lg, &e))) goto fail;
    uint64_t t1 = bt_now_ns();
    int gen = 0;
    while (gen < a.n_gen) {
        int32_t t = sampler_sample(smp, lg, hist, (size_t)(n + gen), NULL);
        hist[n + gen++] = t;
        if (tokenizer_is_eog(tok, t) || sampler_is_stop_id(smp, t)) break;
        const char *piece;
        size_t plen;
        if ((rc = tok_stream_push(ts, t, &piece, &plen, &e))) goto fail;
        fwrite(piece, 1, plen, stdout);
        fflush(stdout);
        if (gen < a.n_gen && (rc = cli_pipe_run(&p, &t, NULL, 1, FWD_OUT_LAST, lg, &e))) goto fail;
    }
    const char *rest;
    size_t rlen;
    tok_stream_flush(ts, &rest, &rlen);
    fwrite(rest, 1, rlen, stdout);
    printf("\n");
    fflush(stdout); /* the text ends before the timing line on a shared terminal */
    uint64_t t2 = bt_now_ns();
    double ps = (double)(t1 - t0) * 1e-9, gs = (double)(t2 - t1) * 1e-9;
    fprintf(stderr,
            "prompt: %d tokens, %.2f s, %.1f tok/s | generation: %d tokens, %.2f s, "
            "%.1f tok/s\n",
            n, ps, ps > 0 ? n / ps : 0.0, gen, gs, gs > 0 ? gen / gs : 0.0);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "baton run: %s\n", bt_errmsg(&e, rc));
    model_close(m);
    tok_stream_free(ts);
    sampler_free(smp);
    tokenizer_free(tok);
    cli_pipe_close(&p);
    free(text), free(ids), free(hist), free(lg);
    return rc ? 1 : 0;
}
