/* client/cmd_chat.c: `baton chat --url URL`: an interactive chat with a server over
 * /v1/chat/completions, streaming each answer as it is generated and keeping the history
 * (system message, then alternating user/assistant turns; reasoning is shown but not sent
 * back, as the chat template drops it from earlier turns anyway).
 * Lines starting with '/' are commands: /think toggles thinking, /reset clears the history,
 * /quit (or end of input) leaves. stdin need not be a terminal: piped lines are read one turn
 * each, which is how the tests drive it; the "> " prompt is only shown on a terminal. */
#include "client/cli_flags.h"
#include "client/commands.h"
#include "client/oai_client.h"

#include <argp.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct chat_args {
    struct cli_flags f;
};

static const struct argp_option chat_opts[] = {
    {"url", CLI_KEY_URL, "URL", 0, "server, e.g. http://127.0.0.1:8080 (required)", 0},
    {"model", CLI_KEY_SERVER_MODEL, "NAME", 0, "model id (default: the server's first)", 0},
    {"system", CLI_KEY_SYSTEM, "TEXT", 0, "system message", 0},
    {"think", CLI_KEY_THINK, 0, 0, "start with thinking on (toggle with /think)", 0},
    {"no-think", CLI_KEY_NO_THINK, 0, 0, "start with thinking off (default)", 0},
    {"temp", CLI_KEY_TEMP, "T", 0, "temperature (default: the server's; 0 = greedy)", 0},
    {"n", CLI_KEY_N, "N", 0, "max tokens per answer (default 512)", 0},
    {"timeout", CLI_KEY_TIMEOUT, "SECS", 0, "give up when the server is silent this long (120)", 0},
    {0}};

static error_t chat_parse(int key, char *arg, struct argp_state *st) {
    struct chat_args *a = st->input;
    switch (key) {
    case ARGP_KEY_END:
        if (!a->f.v.url) argp_error(st, "--url is required");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

struct view {
    int tty;
    int in_reasoning; /* reasoning text is being shown */
};

static int show_delta(void *ctx, const struct oai_delta *d, int64_t t_ns) {
    struct view *v = ctx;
    (void)t_ns;
    if (d->reasoning && *d->reasoning) {
        if (!v->in_reasoning)
            fputs(v->tty ? "\033[2m" : "[thinking] ", stdout); /* dim on a terminal */
        v->in_reasoning = 1;
        fputs(d->reasoning, stdout);
    }
    if (d->content && *d->content) {
        if (v->in_reasoning) fputs(v->tty ? "\033[0m\n" : "\n[answer] ", stdout);
        v->in_reasoning = 0;
        fputs(d->content, stdout);
    }
    fflush(stdout);
    return 0;
}

static void reset_history(cJSON *msgs, const char *system) {
    while (cJSON_GetArraySize(msgs) > 0)
        cJSON_DeleteItemFromArray(msgs, 0);
    if (system) oai_add_message(msgs, "system", system);
}

/* One turn: sends the history (with the user line already appended), streams the answer and
 * appends it. Returns 0, or 1 after printing what went wrong (the user turn is then dropped,
 * so the history stays a valid alternation). */
static int turn(const struct chat_args *a, const struct oai_target *tg, cJSON *msgs, int think,
                int tty) {
    struct oai_body b = {.model = tg->model,
                         .messages = msgs,
                         .max_tokens = a->f.s.n,
                         .has_temp = a->f.s.temp_given,
                         .temp = a->f.s.sp.temperature,
                         .has_stream = 1,
                         .stream = 1,
                         .think = think};
    char *body = oai_body_json(&b);
    if (!body) {
        fprintf(stderr, "baton chat: out of memory\n");
        return 1;
    }
    struct view v = {.tty = tty};
    struct oai_result r;
    bt_err e = {0};
    int rc = oai_request(&tg->u, tg->path, body, a->f.v.timeout_s * 1000, show_delta, &v, &r, &e);
    free(body);
    if (v.in_reasoning && tty) fputs("\033[0m", stdout);
    printf("\n");
    fflush(stdout);
    int bad = 1;
    if (rc)
        fprintf(stderr, "baton chat: %s\n", bt_errmsg(&e, rc));
    else if (r.status != 200 || r.error[0])
        fprintf(stderr, "baton chat: HTTP %d: %s\n", r.status, r.error);
    else
        bad = 0;
    if (bad) {
        cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
    } else {
        oai_add_message(msgs, "assistant", r.text);
        int ntok;
        double ttft, e2e;
        oai_result_figures(&r, &ntok, &ttft, &e2e);
        fprintf(stderr, "[%d tokens, ttft %.0f ms, %.1f tok/s, %s]\n", ntok, ttft * 1e3,
                ntok > 1 && e2e > ttft ? (ntok - 1) / (e2e - ttft) : 0.0,
                r.finish_reason[0] ? r.finish_reason : "-");
    }
    oai_result_free(&r);
    return bad;
}

int cmd_chat(int argc, char **argv) {
    struct chat_args a = {.f.v.timeout_s = 120, .f.s.n = 512, .f.s.n_min = 1};
    struct argp argp = {
        chat_opts, chat_parse, NULL, "Chats with a server. Commands: /think /reset /quit.",
        0,         0,          0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    bt_err e = {0};
    struct oai_target tg;
    int rc = oai_target_resolve(&tg, a.f.v.url, "/v1/chat/completions", a.f.v.model,
                                a.f.v.timeout_s * 1000, &e);
    if (rc) {
        fprintf(stderr, "baton chat: %s\n", bt_errmsg(&e, rc));
        return 1;
    }
    int tty_in = isatty(STDIN_FILENO), tty_out = isatty(STDOUT_FILENO);
    if (tty_in)
        fprintf(stderr, "baton chat: model %s, thinking %s. /think /reset /quit\n", tg.model,
                a.f.p.think ? "on" : "off");
    cJSON *msgs = cJSON_CreateArray();
    reset_history(msgs, a.f.p.system);
    int think = a.f.p.think, failures = 0;
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty_in) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (n == 0) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/think")) {
            think = !think;
            fprintf(stderr, "[thinking %s]\n", think ? "on" : "off");
            continue;
        }
        if (!strcmp(line, "/reset")) {
            reset_history(msgs, a.f.p.system);
            fprintf(stderr, "[history cleared]\n");
            continue;
        }
        if (line[0] == '/') {
            fprintf(stderr, "[unknown command %s: /think /reset /quit]\n", line);
            continue;
        }
        oai_add_message(msgs, "user", line);
        failures += turn(&a, &tg, msgs, think, tty_out);
    }
    if (tty_in) printf("\n");
    free(line);
    cJSON_Delete(msgs);
    return failures ? 1 : 0;
}
