/* client/cmd_eval.c: `baton eval`: logits of every position of a token sequence, as raw
 * little-endian f32 [n][V] (the layout of the reference fixtures), evaluated as one sequence in
 * prefill chunks. With --layers covering only part of the model it reads/writes hidden states
 * [n][H] at the open ends, so a pipeline can be checked stage by stage. */
#include "client/cli_util.h"
#include "client/commands.h"
#include "common/log.h"

#include <argp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct eval_args {
    const char *tokens, *logits, *hidden_in, *hidden_out;
    struct cli_flags f;
};

static const struct argp_option eval_opts[] = {
    {"model", CLI_KEY_MODEL, "FILE", 0, "model: .gguf file or HF checkpoint directory", 0},
    {"tokens", 't', "IDS", 0, "text file of token ids (needed when the range starts at 0)", 0},
    {"logits", 'o', "OUT", 0, "write logits [n][V] f32 here (range ending at the last layer)", 0},
    {"threads", CLI_KEY_THREADS, "N", 0, "threads (default: all CPUs)", 0},
    {"chunk", CLI_KEY_CHUNK, "N", 0, "prefill chunk in tokens (default 64)", 0},
    {"layers", CLI_KEY_LAYERS, "LO:HI[,..]", 0, "run only these layers (chained ranges)", 0},
    {"hidden-in", 'i', "F", 0, "hidden states [n][H] f32 in (range not starting at 0)", 0},
    {"hidden-out", 'h', "F", 0, "hidden states [n][H] f32 out (range not ending at the end)", 0},
    {0}};

static error_t eval_parse(int key, char *arg, struct argp_state *st) {
    struct eval_args *a = st->input;
    switch (key) {
    case 't':
        a->tokens = arg;
        return 0;
    case 'o':
        a->logits = arg;
        return 0;
    case 'i':
        a->hidden_in = arg;
        return 0;
    case 'h':
        a->hidden_out = arg;
        return 0;
    case ARGP_KEY_END:
        if (!a->f.l.model) argp_error(st, "--model is required");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

int cmd_eval(int argc, char **argv) {
    struct eval_args a = {.f.l.chunk = 64};
    struct argp argp = {
        eval_opts, eval_parse, NULL, "Writes the logits of every position of a token sequence.",
        0,         0,          0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    struct cli_pipe p = {0};
    int32_t *ids = NULL;
    float *hin = NULL, *out = NULL;
    int n = 0, rc;
    bt_err e = {0};
    /* Metadata first: the input's size decides the context the stages are built for. */
    struct model_desc *m = NULL;
    if ((rc = model_open(&m, a.f.l.model, &e))) goto fail;
    int H = m->hp.n_embd, V = m->hp.n_vocab, L = m->hp.n_layer;
    model_close(m);
    int lo = 0, hi = L;
    if (a.f.l.layers) cli_layers_ends(a.f.l.layers, &lo, &hi);
    if (lo < 0 || hi > L || lo >= hi) {
        rc = bt_fail(&e, BT_EINVAL, "--layers '%s': not inside [0, %d)", a.f.l.layers, L);
        goto fail;
    }
    int at_end = hi == L;
    if (lo == 0) {
        if (!a.tokens) {
            rc = bt_fail(&e, BT_EINVAL, "--tokens is required when the range starts at layer 0");
            goto fail;
        }
        if ((rc = cli_read_ids(a.tokens, &ids, &n, &e))) goto fail;
    } else {
        size_t nf;
        if (!a.hidden_in) {
            rc = bt_fail(&e, BT_EINVAL, "--hidden-in is required for a range starting at %d", lo);
            goto fail;
        }
        if ((rc = cli_read_f32(a.hidden_in, &hin, &nf, &e))) goto fail;
        if (nf == 0 || nf % (size_t)H) {
            rc = bt_fail(&e, BT_EFORMAT, "%s: %zu floats is not [n][%d]", a.hidden_in, nf, H);
            goto fail;
        }
        n = (int)(nf / (size_t)H);
    }
    const char *dst_path = at_end ? a.logits : a.hidden_out;
    if (!dst_path) {
        rc = bt_fail(&e, BT_EINVAL, "%s is required", at_end ? "--logits" : "--hidden-out");
        goto fail;
    }
    if ((rc = cli_pipe_open(&p, a.f.l.model, a.f.l.layers, a.f.l.threads, a.f.l.chunk, n, &e)))
        goto fail;
    size_t n_out = (size_t)n * (at_end ? V : H);
    if (!(out = malloc(n_out * sizeof(float)))) {
        rc = bt_fail(&e, -ENOMEM, "output buffer");
        goto fail;
    }
    if ((rc = cli_pipe_run(&p, ids, hin, n, FWD_OUT_ALL, out, &e)) ||
        (rc = cli_write_f32(dst_path, out, n_out, &e)))
        goto fail;
    BT_LOG(INFO, "eval", "tokens=%d layers=%d..%d wrote=%s", n, p.lo, p.hi, dst_path);
    cli_pipe_close(&p);
    free(ids), free(hin), free(out);
    return 0;
fail:
    fprintf(stderr, "baton eval: %s\n", bt_errmsg(&e, rc));
    cli_pipe_close(&p);
    free(ids), free(hin), free(out);
    return 1;
}
