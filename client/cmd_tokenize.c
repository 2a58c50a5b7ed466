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

/* One direction: the bytes of stdin in, stdout out; 0 or a negative code with e set. */
typedef int (*tk_fn)(tok_t *t, int special, const char *in, size_t len, bt_err *e);

static int tk_main(int argc, char **argv, const char *doc, tk_fn fn) {
    struct tk_args a = {0};
    struct argp ap = {tk_options, tk_parse, NULL, doc, NULL, NULL, NULL};
    if (argp_parse(&ap, argc, argv, 0, NULL, &a) != 0) return 2;
    tok_t *t = NULL;
    char *in = NULL;
    size_t len;
    bt_err e = {0};
    int rc = tokenizer_open(&t, a.model, &e);
    if (!rc && cli_read_all(stdin, "stdin", &in, &len, &e) < 0)
        rc = bt_fail(&e, -EIO, "reading stdin failed");
    if (!rc) rc = fn(t, !a.no_special, in, len, &e);
    if (!rc && fflush(stdout)) rc = bt_fail(&e, -EIO, "writing stdout failed");
    if (rc) fprintf(stderr, "baton %s: %s\n", argv[0], bt_errmsg(&e, rc));
    free(in);
    tokenizer_free(t);
    return rc ? 1 : 0;
}

static int tokenize(tok_t *t, int special, const char *in, size_t len, bt_err *e) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenizer_encode(t, in, len, special, &ids, &n, e);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    return 0;
}

static int detokenize(tok_t *t, int special, const char *in, size_t len, bt_err *e) {
    int32_t *ids = NULL;
    char *out = NULL;
    size_t n = 0, ol;
    (void)len;
    int rc = cli_parse_ids(in, tokenizer_n_vocab(t), &ids, &n, e);
    if (!rc) rc = tokenizer_decode(t, ids, n, special, &out, &ol, e);
    if (!rc && fwrite(out, 1, ol, stdout) != ol) rc = bt_fail(e, -EIO, "writing stdout failed");
    free(out);
    free(ids);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    return tk_main(argc, argv, "Reads UTF-8 text on stdin, prints its token ids on one line.",
                   tokenize);
}

int cmd_detokenize(int argc, char **argv) {
    return tk_main(argc, argv,
                   "Reads token ids (whitespace separated) on stdin, writes the text they decode "
                   "to.",
                   detokenize);
}
