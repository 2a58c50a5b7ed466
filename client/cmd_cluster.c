/* client/cmd_cluster.c: `baton generate --cluster http://HOST:PORT --tokens IDS -n N [--greedy]`
 * drives a running coordinator through its HTTP API (POST /v1/completions with the prompt as
 * token ids and return_token_ids), so the CLI exercises the real server: scheduler, pipeline
 * executor and workers. Prints the generated ids on one line like `baton generate`; with
 * --logprobs K, then one line per token: "id logprob" followed by K "id:logprob" alternatives,
 * numbers exactly as the server's JSON gave them (bit-exact comparisons between servers).
 * The model id is asked from GET /v1/models unless --model-name gives it. HTTP, the request
 * body and the flags shared with the other commands come from client/oai_client and cli_flags. */
#include "client/cli_util.h"
#include "client/commands.h"
#include "client/oai_client.h"

#include <argp.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cl_args {
    const char *tokens;
    int logprobs;
    struct cli_flags f; /* with --cluster, --model-name, --timeout as f.v */
};

static const struct argp_option cl_opts[] = {
    {"cluster", 'C', "URL", 0, "coordinator HTTP address, e.g. http://127.0.0.1:8080", 0},
    {"tokens", 't', "IDS", 0, "text file of prompt token ids", 0},
    {"n", CLI_KEY_N, "N", 0, "tokens to generate (default 32)", 0},
    {"greedy", CLI_KEY_GREEDY, 0, 0, "argmax decoding (default)", 0},
    {"temp", CLI_KEY_TEMP, "T", 0, "sample with temperature T", 0},
    {"seed", 's', "S", 0, "sampling seed", 0},
    {"logprobs", 'p', "K", 0, "also print each token's logprob and K alternatives (0..5)", 0},
    {"model-name", 'M', "NAME", 0, "model id to request (default: ask /v1/models)", 0},
    {"timeout", 'w', "SECS", 0, "give up after SECS (default 300)", 0},
    {0}};

static error_t cl_parse(int key, char *arg, struct argp_state *st) {
    struct cl_args *a = st->input;
    bt_err e = {0};
    switch (key) {
    case 't':
        a->tokens = arg;
        return 0;
    case 'p':
        if (cli_parse_int("--logprobs", arg, 0, 5, &a->logprobs, &e)) argp_error(st, "%s", e.msg);
        return 0;
    /* --cluster, --model-name, -s and -w are this command's spellings of shared flags */
    case 'C':
        return cli_flags_parse(&a->f, CLI_KEY_URL, arg, st);
    case 'M':
        return cli_flags_parse(&a->f, CLI_KEY_SERVER_MODEL, arg, st);
    case 'w':
        return cli_flags_parse(&a->f, CLI_KEY_TIMEOUT, arg, st);
    case 's':
        return cli_flags_parse(&a->f, CLI_KEY_SEED, arg, st);
    case ARGP_KEY_END:
        if (!a->f.v.url || !a->tokens) argp_error(st, "--cluster and --tokens are required");
        return 0;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
}

/* The answer: the generated ids on one line, then with --logprobs one line per token. */
static int print_answer(const char *body, int logprobs, bt_err *e) {
    cJSON *root = cJSON_Parse(body);
    const cJSON *ch = root ? cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0) : NULL;
    const cJSON *tids = ch ? cJSON_GetObjectItem(ch, "token_ids") : NULL;
    if (!cJSON_IsArray(tids)) {
        cJSON_Delete(root);
        return bt_fail(e, BT_EFORMAT, "no choices[0].token_ids in %.200s", body);
    }
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tids) printf(k++ ? " %d" : "%d", t->valueint);
    printf("\n");
    if (logprobs > 0) {
        const cJSON *lp = cJSON_GetObjectItem(ch, "logprobs");
        const cJSON *tl = lp ? cJSON_GetObjectItem(lp, "token_logprobs") : NULL;
        const cJSON *top = lp ? cJSON_GetObjectItem(lp, "top_logprobs") : NULL;
        int i = 0;
        /* the numbers as the server wrote them: servers are compared bit for bit */
        cJSON_ArrayForEach(t, tids) {
            char *v = cJSON_PrintUnformatted(cJSON_GetArrayItem(tl, i));
            char *alt = cJSON_PrintUnformatted(cJSON_GetArrayItem(top, i));
            printf("%d %s %s\n", t->valueint, v ? v : "?", alt ? alt : "?");
            cJSON_free(v);
            cJSON_free(alt);
            i++;
        }
    }
    cJSON_Delete(root);
    return 0;
}

int cmd_generate_cluster(int argc, char **argv) {
    struct cl_args a = {.f.v.timeout_s = 300, .f.s.n = 32, .f.s.n_min = 1};
    sampler_params_default(&a.f.s.sp);
    a.f.s.sp.temperature = 0.0f; /* greedy unless --temp */
    struct argp argp = {
        cl_opts, cl_parse, NULL, "Generates N token ids after a prompt on a running coordinator.",
        0,       0,        0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    struct oai_target tg;
    int32_t *ids = NULL;
    int n = 0, status = 0, rc;
    char *body = NULL, *req = NULL;
    size_t len;
    bt_err e = {0};
    if ((rc = cli_read_ids(a.tokens, &ids, &n, &e)) ||
        (rc = oai_target_resolve(&tg, a.f.v.url, "/v1/completions", a.f.v.model,
                                 a.f.v.timeout_s * 1000, &e)))
        goto fail;
    struct oai_body b = {.model = tg.model,
                         .prompt_ids = ids,
                         .n_prompt_ids = n,
                         .max_tokens = a.f.s.n,
                         .has_temp = 1,
                         .temp = cli_sampling_temp(&a.f.s),
                         .has_seed = 1,
                         .seed = a.f.s.sp.seed,
                         .think = -1,
                         .want_ids = 1,
                         .logprobs = a.logprobs};
    if (!(req = oai_body_json(&b))) {
        rc = bt_fail(&e, -ENOMEM, "request JSON");
        goto fail;
    }
    struct http_call_opts o = {.method = "POST",
                               .path = tg.path,
                               .body = req,
                               .body_len = strlen(req),
                               .timeout_ms = a.f.v.timeout_s * 1000};
    if ((rc = http_fetch(&tg.u, &o, &status, &body, &len, &e))) goto fail;
    if (status != 200) {
        rc = bt_fail(&e, BT_EFORMAT, "POST %s: status %d: %.200s", tg.path, status, body);
        goto fail;
    }
    rc = print_answer(body, a.logprobs, &e);
fail:
    if (rc) fprintf(stderr, "baton generate --cluster: %s\n", bt_errmsg(&e, rc));
    free(req);
    free(body);
    free(ids);
    return rc ? 1 : 0;
}
