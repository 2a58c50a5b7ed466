/* client/main.c: `baton SUBCOMMAND ...`, dispatching to client/cmd_*.c. */
#include "client/commands.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>

// clang-format off
const struct command commands[] = {
    {"tokenize",   cmd_tokenize,   "text on stdin -> token ids (--model FILE)"},
    {"detokenize", cmd_detokenize, "token ids on stdin -> text (--model FILE)"},
    {"eval",       cmd_eval,       "logits (or hidden states) of every position of token ids"},
    {"generate",   cmd_generate,   "N generated token ids after prompt ids (greedy by default)"},
    {"run",        cmd_run,        "generate text from a prompt locally, streaming"},
    {"mkmodel",    cmd_mkmodel,    "write a random-weight Qwen3.5 GGUF of any real size"},
    {"inspect",    cmd_inspect,    "what a model file holds: layers, tensors, memory per layer range, tokenizer"},
    {"chat",       cmd_chat,       "chat with a server, streaming (--url URL)"},
    {"complete",   cmd_complete,   "one completion or chat request to a server (--url URL -p TEXT)"},
    {"load",       cmd_load,       "load-test a server: concurrency, latency percentiles, tok/s"},
    {"admin",      cmd_admin,      "operator commands of a coordinator: workers, drain ID, replan"},
    {NULL, NULL, NULL},
};
// clang-format on

static void usage(FILE *f) {
    fprintf(f, "usage: baton COMMAND [OPTIONS]   (baton COMMAND --help for its options)\n\n");
    for (const struct command *c = commands; c->name; c++)
        fprintf(f, "  %-12s %s\n", c->name, c->summary);
}

int main(int argc, char **argv) {
    bt_log_set_name("baton");
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const struct command *c = commands; c->name; c++)
        if (!strcmp(c->name, argv[1])) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "baton: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
