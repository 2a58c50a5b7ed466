/* client/cmd_complete.c: `baton complete --url URL -p PROMPT`: one request to a baton (or any
 * OpenAI-compatible) server. /v1/completions by default, or /v1/chat/completions with the
 * prompt as one user message (--chat). Prints the answer on stdout (as it arrives with
 * --stream) and one line of figures on stderr: tokens, time to first token, generation speed. */
#include "client/commands.h"
#include "client/oai_client.h"
#include "common/clock.h"

#include <argp.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct complete_args {
    const char *url, *model, *prompt, *system;
    int n, stream, chat, think, ids, timeout_s;
    float temp;
    int temp_given;
};

enum { OPT_THINK = 1000, OPT_NO_THINK, OPT_IDS, OPT_TIMEOUT, OPT_MODEL, OPT_SYSTEM };

static const struct argp_option complete_opts[] = {
    {"url", 'u', "URL", 0, "server, e.g. http://127.0.0.1:8080 (required)", 0},
    {"prompt", 'p', "TEXT", 0, "prompt text (required)", 0},
    {"n", 'n', "N", 0, "max tokens to generate (default 128)", 0},
    {"temp", 'T', "T", 0, "temperature (default: the server's; 0 = greedy)", 0},
    {"stream", 's', 0, 0, "stream the answer as it is generated", 0},
    {"chat", 'C', 0, 0, "send the prompt as a user message to /v1/chat/completions", 0},
    {"system", OPT_SYSTEM, "TEXT", 0, "chat: a system message first", 0},
    {"think", OPT_THINK, 0, 0, "chat: let the model think first", 0},
    {"no-think", OPT_NO_THINK, 0, 0, "chat: no thinking (default)", 0},
    {"model", OPT_MODEL, "NAME", 0, "model id (default: the server's first)", 0},
    {"ids", OPT_IDS, 0, 0, "also print the generated token ids (stderr)", 0},
    {"timeout", OPT_TIMEOUT, "SECS", 0, "give up when the server is silent this long (60)", 0},
    {0}};

static error_t complete_parse(int key, char *arg, struct argp_state *st) {
    struct complete_args *a = st->input;
    char *end;
    switch (key) {
    case 'u':
        a->url = arg;
        break;
    case 'p':
        a->prompt = arg;
        break;
    case OPT_MODEL:
        a->model = arg;
        break;
    case OPT_SYSTEM:
        a->system = arg;
        break;
    case 's':
        a->stream = 1;
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
    case OPT_IDS:
        a->ids = 1;
        break;
    case 'n':
        a->n = (int)strtol(arg, &end, 10);
        if (*end || a->n < 1) argp_error(st, "-n: a positive number, not '%s'", arg);
        break;
    case OPT_TIMEOUT:
        a->timeout_s = (int)strtol(arg, &end, 10);
        if (*end || a->timeout_s < 1) argp_error(st, "--timeout: seconds >= 1, not '%s'", arg);
        break;
    case 'T':
        a->temp = strtof(arg, &end);
        if (*end || !(a->temp >= 0.0f)) argp_error(st, "--temp: a number >= 0, not '%s'", arg);
        a->temp_given = 1;
        break;
    case ARGP_KEY_END:
        if (!a->url || !a->prompt) argp_error(st, "--url and -p are required");
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return 0;
}

static int print_delta(void *ctx, const struct oai_delta *d, int64_t t_ns) {
    (void)ctx, (void)t_ns;
    if (d->reasoning) fputs(d->reasoning, stdout);
    if (d->content) fputs(d->content, stdout);
    fflush(stdout);
    return 0;
}

int cmd_complete(int argc, char **argv) {
    struct complete_args a = {.n = 128, .timeout_s = 60};
    struct argp argp = {complete_opts,
                        complete_parse,
                        NULL,
                        "Sends one completion (or chat) request to a server.",
                        0,
                        0,
                        0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    bt_err e = {0};
    struct http_url u;
    char model[256], path[1100];
    int rc = http_url_parse(a.url, &u, &e);
    if (!rc)
        rc = http_url_endpoint(&u, a.chat ? "/v1/chat/completions" : "/v1/completions", path,
                               sizeof path, &e);
    if (!rc && !a.model && !(rc = oai_first_model(&u, a.timeout_s * 1000, model, sizeof model, &e)))
        a.model = model;
    if (rc) {
        fprintf(stderr, "baton complete: %s\n", bt_errmsg(&e, rc));
        return 1;
    }

    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", a.model);
    if (a.chat) {
        cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
        if (a.system) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "system");
            cJSON_AddStringToObject(m, "content", a.system);
            cJSON_AddItemToArray(msgs, m);
        }
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", a.prompt);
        cJSON_AddItemToArray(msgs, m);
        cJSON *kw = cJSON_AddObjectToObject(req, "chat_template_kwargs");
        cJSON_AddBoolToObject(kw, "enable_thinking", a.think);
    } else {
        cJSON_AddStringToObject(req, "prompt", a.prompt);
    }
    cJSON_AddNumberToObject(req, "max_tokens", a.n);
    if (a.temp_given) cJSON_AddNumberToObject(req, "temperature", (double)a.temp);
    cJSON_AddBoolToObject(req, "stream", a.stream);
    if (a.stream) {
        cJSON *so = cJSON_AddObjectToObject(req, "stream_options");
        cJSON_AddBoolToObject(so, "include_usage", 1);
    }
    cJSON_AddBoolToObject(req, "return_token_ids", 1);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!body) {
        fprintf(stderr, "baton complete: out of memory\n");
        return 1;
    }

    struct oai_result r;
    rc = oai_request(&u, path, body, a.timeout_s * 1000, a.stream ? print_delta : NULL, NULL, &r,
                     &e);
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
        int ntok = r.completion_tokens >= 0 ? r.completion_tokens : r.n_tokens;
        double e2e = (double)(r.t_end_ns - r.t_start_ns) * 1e-9;
        double ttft = r.t_first_ns ? (double)(r.t_first_ns - r.t_start_ns) * 1e-9 : e2e;
        /* decode speed counts the tokens after the first over the time after it; without a
         * stream everything arrives at once, so only the end-to-end rate means anything */
        double gen = e2e - ttft;
        fprintf(stderr,
                "complete: model=%s prompt_tokens=%d completion_tokens=%d finish=%s "
                "ttft_ms=%.1f e2e_ms=%.1f tok_s=%.1f",
                a.model, r.prompt_tokens, ntok, r.finish_reason[0] ? r.finish_reason : "-",
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
