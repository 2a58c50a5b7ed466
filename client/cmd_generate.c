/* client/cmd_generate.c: `baton generate`: continues a token sequence by N tokens and prints
 * the generated ids on one line. --greedy (the default without --temp) takes the first index of
 * the maximum, like the reference fixtures' greedy.txt; --layers splits the model into chained
 * in-process stages, which must not change the result. The decode loop is cli_generate
 * (client/cli_util); `generate --cluster` goes to client/cmd_cluster.c. */
#include "client/cli_util.h"
#include "client/commands.h"
#include "engine/sampler.h"

#include <argp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gen_args {
    const char *tokens;
    struct cli_flags f;
};

static const struct argp_option gen_opts[] = {
    {"model", CLI_KEY_MODEL, "FILE", 0, "model: .gguf file or HF checkpoint directory", 0},
    {"tokens", 't', "IDS", 0, "text file of prompt token ids", 0},
    {"n", CLI_KEY_N, "N", 0, "tokens to generate (default 32)", 0},
    {"greedy", CLI_KEY_GREEDY, 0, 0, "argmax decoding (default)", 0},
    {"temp", CLI_KEY_TEMP, "T", 0, "sample with temperature T (needs no --greedy)", 0},
    {"seed", 's', "S", 0, "sampling seed", 0},
    {"threads", CLI_KEY_THREADS, "N", 0, "threads (default: all CPUs)", 0},
    {"chunk", CLI_KEY_CHUNK, "N", 0, "prefill chunk in tokens (default 64)", 0},
    {"layers", CLI_KEY_LAYERS, "LO:HI,..", 0, "split into chained stages (must cover all layers)",
     0},
    {0}};

static error_t gen_parse(int key, char *arg, struct argp_state *st) {
    struct gen_args *a = st->input;
    switch (key) {
    case 't':
        a->tokens = arg;
        return 0;
    case 's': /* this command's short spelling of --seed */
        return cli_flags_parse(&a->f, CLI_KEY_SEED, arg, st);
    case ARGP_KEY_END:
        if (!a->f.l.model || !a->tokens) argp_error(st, "--model and --tokens are required");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

static int print_id(void *ctx, int32_t id, bt_err *e) {
    int *n_printed = ctx;
    (void)e;
    printf((*n_printed)++ ? " %d" : "%d", id);
    fflush(stdout);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    /* --cluster URL: generate on a running coordinator instead (client/cmd_cluster.c). */
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--cluster", 9)) return cmd_generate_cluster(argc, argv);
    struct gen_args a = {.f.l.chunk = 64, .f.s.n = 32};
    sampler_params_default(&a.f.s.sp);
    a.f.s.sp.temperature = 0.0f; /* greedy unless --temp */
    struct argp argp = {gen_opts, gen_parse, NULL, "Generates N token ids after a prompt.",
                        0,        0,         0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    int32_t *ids = NULL;
    int n = 0, n_printed = 0, rc;
    bt_err e = {0};
    struct sampler_params sp = a.f.s.sp;
    sp.temperature = cli_sampling_temp(&a.f.s);
    struct cli_gen_stats gs;
    /* n_real 0: the sampler may use the whole padded vocabulary here, as the fixtures' greedy
     * references are a plain argmax over every row. */
    if (!(rc = cli_read_ids(a.tokens, &ids, &n, &e)))
        rc = cli_generate(&a.f.l, ids, n, a.tokens, a.f.s.n, &sp, 0, print_id, &n_printed, &gs, &e);
    if (rc)
        fprintf(stderr, "baton generate: %s\n", bt_errmsg(&e, rc));
    else
        printf("\n");
    free(ids);
    return rc ? 1 : 0;
}
