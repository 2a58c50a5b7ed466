/* client/cli_flags.c: the flag parsers shared by the `baton` commands; see cli_flags.h. */
#include "client/cli_flags.h"

#include "common/parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

int cli_parse_int(const char *flag, const char *s, int min, int max, int *out, bt_err *e) {
    return bt_parse_int(flag, s, min, max, out, e);
}

int cli_parse_u64(const char *flag, const char *s, uint64_t *out, bt_err *e) {
    char *end;
    errno = 0;
    /* strtoull would take "-1" as 2^64-1: a seed is written without a sign */
    unsigned long long v = s[0] == '-' ? 0 : strtoull(s, &end, 10);
    if (s[0] == '-' || errno || end == s || *end)
        return bt_fail(e, BT_EINVAL, "%s '%s': expected a whole number >= 0", flag, s);
    *out = v;
    return 0;
}

int cli_parse_float(const char *flag, const char *s, float min, float *out, bt_err *e) {
    char *end;
    float v = strtof(s, &end);
    if (end == s || *end || !isfinite(v) || !(v >= min))
        return bt_fail(e, BT_EINVAL, "%s '%s': expected a number >= %g", flag, s, (double)min);
    *out = v;
    return 0;
}

/* argp_error exits (or returns after printing, with ARGP_NO_EXIT): either way this key is done. */
static error_t flag_error(struct argp_state *st, const bt_err *e) {
    argp_error(st, "%s", e->msg);
    return EINVAL;
}

static error_t sampling_parse(struct cli_sampling *s, int key, const char *arg,
                              struct argp_state *st) {
    bt_err e = {0};
    int rc = 0;
    switch (key) {
    case CLI_KEY_N:
        rc = cli_parse_int("-n", arg, s->n_min, CLI_MAX_GEN, &s->n, &e);
        break;
    case CLI_KEY_GREEDY:
        s->greedy = 1;
        break;
    case CLI_KEY_TEMP:
        rc = cli_parse_float("--temp", arg, 0.0f, &s->sp.temperature, &e);
        s->temp_given = 1;
        break;
    case CLI_KEY_TOP_K:
        rc = cli_parse_int("--top-k", arg, INT32_MIN, INT32_MAX, &s->sp.top_k, &e);
        break;
    case CLI_KEY_TOP_P:
        rc = cli_parse_float("--top-p", arg, 0.0f, &s->sp.top_p, &e);
        break;
    case CLI_KEY_MIN_P:
        rc = cli_parse_float("--min-p", arg, 0.0f, &s->sp.min_p, &e);
        break;
    case CLI_KEY_REPEAT_PENALTY:
        rc = cli_parse_float("--repeat-penalty", arg, 0.0f, &s->sp.repetition_penalty, &e);
        break;
    case CLI_KEY_SEED:
        rc = cli_parse_u64("--seed", arg, &s->sp.seed, &e);
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return rc ? flag_error(st, &e) : 0;
}

float cli_sampling_temp(const struct cli_sampling *s) {
    return s->greedy ? 0.0f : s->sp.temperature;
}

static error_t local_parse(struct cli_local *l, int key, const char *arg, struct argp_state *st) {
    bt_err e = {0};
    int rc = 0;
    switch (key) {
    case CLI_KEY_MODEL:
        l->model = arg;
        break;
    case CLI_KEY_LAYERS:
        l->layers = arg;
        break;
    case CLI_KEY_THREADS:
        rc = cli_parse_int("--threads", arg, 1, 1024, &l->threads, &e);
        break;
    case CLI_KEY_CHUNK:
        rc = cli_parse_int("--chunk", arg, 1, 1 << 16, &l->chunk, &e);
        break;
    default:
        return ARGP_ERR_UNKNOWN;
    }
    return rc ? flag_error(st, &e) : 0;
}

static error_t server_parse(struct cli_server *v, int key, const char *arg, struct argp_state *st) {
    bt_err e = {0};
    switch (key) {
    case CLI_KEY_URL:
        v->url = arg;
        return 0;
    case CLI_KEY_SERVER_MODEL:
        v->model = arg;
        return 0;
    case CLI_KEY_TIMEOUT:
        return cli_parse_int("--timeout", arg, 1, 86400, &v->timeout_s, &e) ? flag_error(st, &e)
                                                                            : 0;
    default:
        return ARGP_ERR_UNKNOWN;
    }
}

static error_t prompt_parse(struct cli_prompt *p, int key, const char *arg) {
    switch (key) {
    case CLI_KEY_PROMPT:
        p->prompt = arg;
        return 0;
    case CLI_KEY_SYSTEM:
        p->system = arg;
        return 0;
    case CLI_KEY_CHAT:
        p->chat = 1;
        return 0;
    case CLI_KEY_THINK:
        p->think = 1;
        return 0;
    case CLI_KEY_NO_THINK:
        p->think = 0;
        return 0;
    default:
        return ARGP_ERR_UNKNOWN;
    }
}

error_t cli_flags_parse(struct cli_flags *f, int key, const char *arg, struct argp_state *st) {
    error_t r = local_parse(&f->l, key, arg, st);
    if (r == ARGP_ERR_UNKNOWN) r = sampling_parse(&f->s, key, arg, st);
    if (r == ARGP_ERR_UNKNOWN) r = server_parse(&f->v, key, arg, st);
    if (r == ARGP_ERR_UNKNOWN) r = prompt_parse(&f->p, key, arg);
    return r;
}
