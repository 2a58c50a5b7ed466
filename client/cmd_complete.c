/* client/cmd_complete.c: `baton complete --url URL -p PROMPT`: one request to a baton (or any
 * OpenAI-compatible) server. /v1/completions by default, or /v1/chat/completions with the
 * prompt as one user message (--chat). Prints the answer on stdout (as it arrives with
 * --stream) and one line of figures on stderr: tokens, time to first token, generation speed. */
#include "client/cli_flags.h"
#include "client/commands.h"
#include "client/oai_client.h"

#include <argp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct complete_args {
    int stream, ids;
    struct cli_flags f;
};

enum { OPT_IDS = 1000 };

static const struct argp_option complete_opts[] = {
    {"url", CLI_KEY_URL, "URL", 0, "server, e.g. http://127.0.0.1:8080 (required)", 0},
    {"prompt", CLI_KEY_PROMPT, "TEXT", 0, "prompt text (required)", 0},
    {"n", CLI_KEY_N, "N", 0, "max tokens to generate (default 128)", 0},
    {"temp", CLI_KEY_TEMP, "T", 0, "temperature (default: the server's; 0 = greedy)", 0},
    {"stream", 's', 0, 0, "stream the answer as it is generated", 0},
    {"chat", CLI_KEY_CHAT, 0, 0, "send the prompt as a user message to /v1/chat/completions", 0},
    {"system", CLI_KEY_SYSTEM, "TEXT", 0, "chat: a system message first", 0},
    {"think", CLI_KEY_THINK, 0, 0, "chat: let the model think first", 0},
    {"no-think", CLI_KEY_NO_THINK, 0, 0, "chat: no thinking (default)", 0},
    {"model", CLI_KEY_SERVER_MODEL, "NAME", 0, "model id (default: the server's first)", 0},
    {"ids", OPT_IDS, 0, 0, "also print the generated token ids (stderr)", 0},
    {"timeout", CLI_KEY_TIMEOUT, "SECS", 0, "give up when the server is silent this long (60)", 0},
    {0}};

static error_t complete_parse(int key, char *arg, struct argp_state *st) {
    struct complete_args *a = st->input;
    switch (key) {
    case 's':
        a->stream = 1;
        return 0;
    case OPT_IDS:
        a->ids = 1;
        return 0;
    case ARGP_KEY_END:
        if (!a->f.v.url || !a->f.p.prompt) argp_error(st, "--url and -p are required");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

static int print_delta(void *ctx, const struct oai_delta *d, int64_t t_ns) {
    (void)ctx, (void)t_ns;
    if (d->reasoning) fputs(d->reasoning, stdout);
    if (d->content) fputs(d->content, stdout);
    fflush(stdout);
    return 0;
}

int cmd_complete(int argc, char **argv) {
    struct complete_args a = {.f.v.timeout_s = 60, .f.s.n = 128, .f.s.n_min = 1};
    struct argp argp = {complete_opts,
                        complete_parse,
                        NULL,
                        "Sends one completion (or chat) request to a server.",
                        0,
                        0,
                        0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    bt_err e = {0};
    struct oai_target tg;
    int rc =
        oai_target_resolve(&tg, a.f.v.url, a.f.p.chat ? "/v1/chat/completions" : "/v1/completions",
                           a.f.v.model, a.f.v.timeout_s * 1000, &e);
    if (rc) {
        fprintf(stderr, "baton complete: %s\n", bt_errmsg(&e, rc));
        return 1;
    }
    struct oai_body b = {.model = tg.model,
                         .system = a.f.p.chat ? a.f.p.system : NULL,
                         .user = a.f.p.chat ? a.f.p.prompt : NULL,
                         .prompt = a.f.p.chat ? NULL : a.f.p.prompt,
                         .max_tokens = a.f.s.n,
                         .has_temp = a.f.s.temp_given,
                         .temp = a.f.s.sp.temperature,
                         .has_stream = 1,
                         .stream = a.stream,
                         .think = a.f.p.think,
                         .want_ids = 1};
    char *body = oai_body_json(&b);
    if (!body) {
        fprintf(stderr, "baton complete: out of memory\n");
        return 1;
    }

    struct oai_result r;
    rc = oai_request(&tg.u, tg.path, body, a.f.v.timeout_s * 1000, a.stream ? print_delta : NULL,
                     NULL, &r, &e);
    free(body);
    int status = 0;
    if (rc) {
        fprintf(stderr, "\nbaton complete: %s\n", bt_errmsg(&e, rc));
        status = 1;
    } else if (r.status != 200 || r.error[0]) {
        fprintf(stderr, "baton complete: HTTP %d: %s\n", r.status, r.error);
        status = 1;
    } else {
        if (!a.stream) {
            if (r.reasoning && *r.reasoning) printf("%s\n--\n", r.reasoning);
            fputs(r.text, stdout);
        }
        printf("\n");
        fflush(stdout);
        int ntok;
        double ttft, e2e;
        oai_result_figures(&r, &ntok, &ttft, &e2e);
        /* decode speed counts the tokens after the first over the time after it; without a
         * stream everything arrives at once, so only the end-to-end rate means anything */
        double gen = e2e - ttft;
        fprintf(stderr,
                "complete: model=%s prompt_tokens=%d completion_tokens=%d finish=%s "
                "ttft_ms=%.1f e2e_ms=%.1f tok_s=%.1f",
                tg.model, r.prompt_tokens, ntok, r.finish_reason[0] ? r.finish_reason : "-",
                ttft * 1e3, e2e * 1e3, e2e > 0 ? ntok / e2e : 0.0);
        if (a.stream && ntok > 1 && gen > 0)
            fprintf(stderr, " decode_tok_s=%.1f", (ntok - 1) / gen);
        fprintf(stderr, "\n");
        if (a.ids) {
            fprintf(stderr, "ids:");
            for (int i = 0; i < r.n_ids; i++)
                fprintf(stderr, " %d", r.ids[i]);
            fprintf(stderr, "\n");
        }
    }
    oai_result_free(&r);
    return status;
}
