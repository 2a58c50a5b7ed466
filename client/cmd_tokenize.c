/* client/cmd_tokenize.c: `baton tokenize --model FILE [--no-special]` (stdin text -> ids on one
 * line) and `baton detokenize --model FILE [--no-special]` (stdin ids -> text on stdout).
 * FILE is a GGUF, an HF checkpoint directory or a tokenizer.json (engine/tokenizer). Ids are
 * read by cli_parse_ids (client/cli_util), as token-id files are everywhere. */
#include "client/cli_util.h"
#include "client/commands.h"
#include "engine/tokenizer.h"

#include <argp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tk_args {
    const char *model;
    int no_special;
};

static const struct argp_option tk_options[] = {
    {"model", 'm', "FILE", 0, "GGUF file, HF checkpoint directory or tokenizer.json", 0},
    {"no-special", 'n', NULL, 0,
     "tokenize: treat control-token text as plain text; detokenize: omit control tokens", 0},
    {0},
};

static error_t tk_parse(int key, char *arg, struct argp_state *st) {
    struct tk_args *a = st->input;
    switch (key) {
    case 'm':
        a->model = arg;
        break;
    case 'n':
        a->no_special = 1;
        break;
    case ARGP_KEY_ARG:
        argp_error(st, "unexpected argument '%s'", arg);
        break;
    case ARGP_KEY_END:
        if (!a->model) argp_error(st, "--model is required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

static int tk_setup(int argc, char **argv, const char *doc, struct tk_args *a, tok_t **t) {
    struct argp ap = {tk_options, tk_parse, NULL, doc, NULL, NULL, NULL};
    memset(a, 0, sizeof *a);
    if (argp_parse(&ap, argc, argv, 0, NULL, a) != 0) return 2;
    bt_err e = {0};
    int rc = tokenizer_open(t, a->model, &e);
    if (rc < 0) {
        fprintf(stderr, "baton %s: %s\n", argv[0], bt_errmsg(&e, rc));
        return 1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    struct tk_args a;
    tok_t *t;
    int rc = tk_setup(argc, argv, "Reads UTF-8 text on stdin, prints its token ids on one line.",
                      &a, &t);
    if (rc) return rc;
    size_t len, n = 0;
    char *text = NULL;
    int32_t *ids = NULL;
    bt_err e = {0};
    if ((rc = cli_read_all(stdin, "stdin", &text, &len, &e)) < 0) {
        fprintf(stderr, "baton tokenize: reading stdin failed\n");
        rc = 1;
    } else if ((rc = tokenizer_encode(t, text, len, !a.no_special, &ids, &n, &e)) < 0) {
        fprintf(stderr, "baton tokenize: %s\n", bt_errmsg(&e, rc));
        rc = 1;
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        rc = fflush(stdout) == 0 ? 0 : 1;
    }
    free(ids);
    free(text);
    tokenizer_free(t);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    struct tk_args a;
    tok_t *t;
    int rc = tk_setup(argc, argv,
                      "Reads token ids (whitespace separated) on stdin, writes the "
                      "text they decode to.",
                      &a, &t);
    if (rc) return rc;
    size_t len, n = 0;
    char *in = NULL;
    int32_t *ids = NULL;
    bt_err e = {0};
    if ((rc = cli_read_all(stdin, "stdin", &in, &len, &e)) < 0) {
        fprintf(stderr, "baton detokenize: reading stdin failed\n");
        rc = 1;
    } else if ((rc = cli_parse_ids(in, tokenizer_n_vocab(t), &ids, &n, &e)) < 0) {
        fprintf(stderr, "baton detokenize: %s\n", bt_errmsg(&e, rc));
        rc = 1;
    }
    if (!rc) {
        char *out;
        size_t ol;
        int r = tokenizer_decode(t, ids, n, !a.no_special, &out, &ol, &e);
        if (r < 0) {
            fprintf(stderr, "baton detokenize: %s\n", bt_errmsg(&e, r));
            rc = 1;
        } else {
            rc = fwrite(out, 1, ol, stdout) == ol && fflush(stdout) == 0 ? 0 : 1;
            free(out);
        }
    }
    free(ids);
    free(in);
    tokenizer_free(t);
    return rc;
}
