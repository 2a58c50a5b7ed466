/* client/cmd_generate.c: `baton generate`: continues a token sequence by N tokens and prints
 * the generated ids on one line. --greedy (the default without --temp) takes the first index of
 * the maximum, like the reference fixtures' greedy.txt; --layers splits the model into chained
 * in-process stages, which must not change the result. */
#include "client/cli_util.h"
#include "client/commands.h"
#include "engine/sampler.h"

#include <argp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gen_args {
    const char *model, *tokens, *layers;
    int threads, chunk, n_gen, greedy;
    float temp;
    unsigned long long seed;
    bt_err e;
};

static const struct argp_option gen_opts[] = {
    {"model", 'm', "FILE", 0, "model: .gguf file or HF checkpoint directory", 0},
    {"tokens", 't', "IDS", 0, "text file of prompt token ids", 0},
    {"n", 'n', "N", 0, "tokens to generate (default 32)", 0},
    {"greedy", 'g', 0, 0, "argmax decoding (default)", 0},
    {"temp", 'T', "T", 0, "sample with temperature T (needs no --greedy)", 0},
    {"seed", 's', "S", 0, "sampling seed", 0},
    {"threads", 'j', "N", 0, "threads (default: all CPUs)", 0},
    {"chunk", 'c', "N", 0, "prefill chunk in tokens (default 64)", 0},
    {"layers", 'l', "LO:HI,..", 0, "split into chained stages (must cover all layers)", 0},
    {0}};

static error_t gen_parse(int key, char *arg, struct argp_state *st) {
    struct gen_args *a = st->input;
    switch (key) {
    case 'm':
        a->model = arg;
        break;
    case 't':
        a->tokens = arg;
        break;
    case 'l':
        a->layers = arg;
        break;
    case 'g':
        a->greedy = 1;
        break;
    case 'T':
        a->temp = strtof(arg, NULL);
        break;
    case 's':
        a->seed = strtoull(arg, NULL, 10);
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
        if (!a->model || !a->tokens) argp_error(st, "--model and --tokens are required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

int cmd_generate(int argc, char **argv) {
    /* --cluster URL: generate on a running coordinator instead (client/cmd_cluster.c). */
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--cluster", 9))
            return cmd_generate_cluster(argc, argv);
    struct gen_args a = {.chunk = 64, .n_gen = 32};
    struct argp argp = {gen_opts, gen_parse, NULL, "Generates N token ids after a prompt.",
                        0,        0,         0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    struct cli_pipe p = {0};
    sampler_t *smp = NULL;
    int32_t *ids = NULL, *hist = NULL;
    float *lg = NULL;
    int n = 0, rc;
    bt_err e = {0};
    if ((rc = cli_read_ids(a.tokens, &ids, &n, &e)) ||
        (rc = cli_pipe_open(&p, a.model, a.layers, a.threads, a.chunk, n + a.n_gen, &e)))
        goto fail;
    if (p.lo != 0 || p.hi != p.m->hp.n_layer) {
        rc = bt_fail(&e, BT_EINVAL, "--layers must cover all %d layers", p.m->hp.n_layer);
        goto fail;
    }
    int V = p.m->hp.n_vocab;
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.temperature = a.greedy ? 0.0f : a.temp;
    sp.seed = a.seed;
    if (!(lg = malloc((size_t)V * sizeof(float))) ||
        !(hist = malloc((size_t)(n + a.n_gen + 1) * sizeof(int32_t)))) {
        rc = bt_fail(&e, -ENOMEM, "buffers");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (ids[i] >= V) {
            rc = bt_fail(&e, BT_EINVAL, "%s: token id %d >= vocabulary %d", a.tokens, ids[i], V);
            goto fail;
        }
        hist[i] = ids[i];
    }
    /* The sampler may use the whole padded vocabulary here: the fixtures' greedy references
     * are a plain argmax over every row. */
    if ((rc = sampler_new(&smp, &sp, V, V, &e)) ||
        (rc = cli_pipe_run(&p, ids, NULL, n, FWD_OUT_LAST, lg, &e)))
        goto fail;
    for (int i = 0; i < a.n_gen; i++) {
        int32_t tok = sampler_sample(smp, lg, hist, (size_t)(n + i), NULL);
        hist[n + i] = tok;
        printf(i ? " %d" : "%d", tok);
        fflush(stdout);
        if (i + 1 < a.n_gen && (rc = cli_pipe_run(&p, &tok, NULL, 1, FWD_OUT_LAST, lg, &e)))
            goto fail;
    }
    printf("\n");
    rc = 0;
fail:
    if (rc) fprintf(stderr, "baton generate: %s\n", bt_errmsg(&e, rc));
    sampler_free(smp);
    cli_pipe_close(&p);
    free(ids), free(hist), free(lg);
    return rc ? 1 : 0;
}
