/* coordinator/api_json.c: OpenAI request parsing and response building (see api_json.h). */
#include "coordinator/api_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int api_error_set(struct api_error *err, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...) {
    if (!err) return -1;
    err->status = status;
    err->type = type;
    err->code = code;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(param, ...)                                                                            \
    api_error_set(err, 400, "invalid_request_error", "invalid_value", param, __VA_ARGS__)
#define BADTYPE(param, want)                                                                       \
    api_error_set(err, 400, "invalid_request_error", "invalid_type", param, "'%s' must be %s",     \
                  param, want)
#define UNSUPPORTED(param, ...)                                                                    \
    api_error_set(err, 422, "invalid_request_error", "unsupported_value", param, __VA_ARGS__)

void api_request_free(struct api_request *r) {
    if (!r) return;
    free(r->model);
    for (int i = 0; i < r->n_messages; i++) {
        free(r->messages[i].content);
        free(r->messages[i].reasoning);
    }
    free(r->messages);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r);
}

/* A field that is absent or JSON null counts as not given (clients send null for defaults). */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

/* 1 if given (value in *out), 0 if absent, -1 on error. */
static int get_bool(const cJSON *obj, const char *name, int *out, struct api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return BADTYPE(name, "a boolean");
    *out = cJSON_IsTrue(f) ? 1 : 0;
    return 1;
}

static int get_num(const cJSON *obj, const char *name, double lo, double hi, double *out,
                   struct api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble)) return BADTYPE(name, "a number");
    if (f->valuedouble < lo || f->valuedouble > hi)
        return BAD(name, "'%s' must be between %g and %g, got %g", name, lo, hi, f->valuedouble);
    *out = f->valuedouble;
    return 1;
}

static int get_int(const cJSON *obj, const char *name, double lo, double hi, long long *out,
                   struct api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || floor(f->valuedouble) != f->valuedouble)
        return BADTYPE(name, "an integer");
    if (f->valuedouble < lo || f->valuedouble > hi)
        return BAD(name, "'%s' must be between %.0f and %.0f, got %.0f", name, lo, hi,
                   f->valuedouble);
    *out = (long long)f->valuedouble;
    return 1;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static int oom(struct api_error *err) {
    return api_error_set(err, 500, "server_error", "out_of_memory", NULL, "out of memory");
}

/* Message content: a string, or an array of {"type":"text","text":...} parts (concatenated). */
static int parse_content(const cJSON *c, const char *param, char **out, size_t *total,
                         size_t max_chars, struct api_error *err) {
    if (!c) {
        *out = dup_str("");
        return *out ? 0 : oom(err);
    }
    if (cJSON_IsString(c)) {
        size_t n = strlen(c->valuestring);
        if ((*total += n) > max_chars)
            return BAD(param, "messages are longer than %zu bytes", max_chars);
        *out = dup_str(c->valuestring);
        return *out ? 0 : oom(err);
    }
    if (!cJSON_IsArray(c)) return BADTYPE(param, "a string or an array of content parts");
    size_t len = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(type))
            return BADTYPE(param, "an array of content parts with a 'type'");
        if (strcmp(type->valuestring, "text") != 0)
            return UNSUPPORTED(param, "content part type '%.40s' is not supported (text only)",
                               type->valuestring);
        if (!cJSON_IsString(text)) return BADTYPE(param, "text parts with a string 'text'");
        len += strlen(text->valuestring);
        if (*total + len > max_chars)
            return BAD(param, "messages are longer than %zu bytes", max_chars);
    }
    *total += len;
    char *s = malloc(len + 1);
    if (!s) return oom(err);
    size_t at = 0;
    cJSON_ArrayForEach(p, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(s + at, t, n);
        at += n;
    }
    s[at] = 0;
    *out = s;
    return 0;
}

static int parse_messages(const cJSON *root, struct api_request *r, const struct api_limits *lim,
                          size_t max_chars, struct api_error *err) {
    const cJSON *msgs = field(root, "messages");
    if (!msgs) return BAD("messages", "'messages' is required");
    if (!cJSON_IsArray(msgs)) return BADTYPE("messages", "an array");
    int n = cJSON_GetArraySize(msgs);
    int max_msgs = lim->max_messages > 0 ? lim->max_messages : 1024;
    if (n == 0) return BAD("messages", "'messages' must not be empty");
    if (n > max_msgs) return BAD("messages", "too many messages: %d > %d", n, max_msgs);
    r->messages = calloc((size_t)n, sizeof *r->messages);
    if (!r->messages) return oom(err);
    size_t total = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", r->n_messages);
        if (!cJSON_IsObject(m)) return BADTYPE(param, "an object");
        struct api_message *dst = &r->messages[r->n_messages];
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return BAD(param, "'%s.role' is required and must be a string", param);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "system") || !strcmp(rs, "developer"))
            dst->role = ROLE_SYSTEM;
        else if (!strcmp(rs, "user"))
            dst->role = ROLE_USER;
        else if (!strcmp(rs, "assistant"))
            dst->role = ROLE_ASSISTANT;
        else if (!strcmp(rs, "tool"))
            dst->role = ROLE_TOOL;
        else
            return BAD(param, "unknown role '%.40s' (system, developer, user, assistant, tool)",
                       rs);
        r->n_messages++; /* counted before content so free() sees what was set */
        if (field(m, "tool_calls")) return UNSUPPORTED(param, "tool calls are not supported");
        const cJSON *content = field(m, "content");
        if (!content && dst->role != ROLE_ASSISTANT)
            return BAD(param, "'%s.content' is required", param);
        if (parse_content(content, param, &dst->content, &total, max_chars, err) < 0) return -1;
        const cJSON *rc = field(m, "reasoning_content");
        if (rc && dst->role == ROLE_ASSISTANT) {
            if (!cJSON_IsString(rc)) return BADTYPE("reasoning_content", "a string");
            total += strlen(rc->valuestring);
            if (total > max_chars)
                return BAD(param, "messages are longer than %zu bytes", max_chars);
            if (!(dst->reasoning = dup_str(rc->valuestring))) return oom(err);
        }
    }
    return 0;
}

/* Completion prompt: a string, an array of token ids, or an array holding one of those. */
static int parse_prompt(const cJSON *root, struct api_request *r, const struct api_limits *lim,
                        size_t max_chars, struct api_error *err) {
    const cJSON *p = field(root, "prompt");
    if (!p) return BAD("prompt", "'prompt' is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        size_t n = strlen(p->valuestring);
        if (n == 0) return BAD("prompt", "'prompt' must not be empty");
        if (n > max_chars) return BAD("prompt", "prompt is longer than %zu bytes", max_chars);
        if (!(r->prompt = dup_str(p->valuestring))) return oom(err);
        return 0;
    }
    if (!cJSON_IsArray(p)) return BADTYPE("prompt", "a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    int max_ids = lim->max_prompt_ids > 0 ? lim->max_prompt_ids : 65536;
    if (n == 0) return BAD("prompt", "'prompt' must not be empty");
    if (cJSON_IsString(p->child) || cJSON_IsArray(p->child))
        return UNSUPPORTED("prompt", "several prompts in one request are not supported");
    if (n > max_ids) return BAD("prompt", "prompt has %d tokens, more than %d", n, max_ids);
    r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return oom(err);
    const cJSON *t;
    cJSON_ArrayForEach(t, p) {
        double v = cJSON_IsNumber(t) ? t->valuedouble : -1.0;
        if (!cJSON_IsNumber(t) || !isfinite(v) || floor(v) != v)
            return BADTYPE("prompt", "an array of integer token ids");
        if (v < 0 || v > 2147483647.0 || (lim->n_vocab > 0 && v >= lim->n_vocab))
            return BAD("prompt", "token id %.0f is out of range [0, %d)", v,
                       lim->n_vocab > 0 ? lim->n_vocab : 2147483647);
        r->prompt_ids[r->n_prompt_ids++] = (int32_t)v;
    }
    return 0;
}

static int parse_stop(const cJSON *root, struct api_request *r, struct api_error *err) {
    const cJSON *s = field(root, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return BAD("stop", "stop sequences must not be empty");
        if (!(r->stop[r->n_stop++] = dup_str(s->valuestring))) return oom(err);
        return 0;
    }
    if (!cJSON_IsArray(s)) return BADTYPE("stop", "a string or an array of strings");
    if (cJSON_GetArraySize(s) > API_MAX_STOP)
        return BAD("stop", "at most %d stop sequences", API_MAX_STOP);
    const cJSON *x;
    cJSON_ArrayForEach(x, s) {
        if (!cJSON_IsString(x)) return BADTYPE("stop", "a string or an array of strings");
        if (!x->valuestring[0]) return BAD("stop", "stop sequences must not be empty");
        if (strlen(x->valuestring) > 256)
            return BAD("stop", "stop sequences are at most 256 bytes");
        if (!(r->stop[r->n_stop++] = dup_str(x->valuestring))) return oom(err);
    }
    return 0;
}

static int parse_fields(const cJSON *root, struct api_request *r, const struct api_limits *lim,
                        struct api_error *err) {
    size_t max_chars = lim->max_prompt_chars ? lim->max_prompt_chars : (size_t)1 << 20;
    int max_tokens_lim = lim->max_tokens > 0 ? lim->max_tokens : 32768;
    if (!cJSON_IsObject(root)) return BADTYPE("body", "a JSON object");

    const cJSON *model = field(root, "model");
    if (!model) return BAD("model", "'model' is required");
    if (!cJSON_IsString(model)) return BADTYPE("model", "a string");
    if (lim->model && strcmp(model->valuestring, lim->model) != 0)
        return api_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                             "the model '%.100s' does not exist (this server has '%.60s')",
                             model->valuestring, lim->model);
    if (!(r->model = dup_str(model->valuestring))) return oom(err);

    if (r->kind == API_CHAT ? parse_messages(root, r, lim, max_chars, err)
                            : parse_prompt(root, r, lim, max_chars, err))
        return -1;

    long long v;
    double d;
    int rc;
    /* max_completion_tokens is the newer name; it wins when both are given. */
    r->max_tokens = -1;
    if ((rc = get_int(root, "max_tokens", -1e18, 1e18, &v, err)) < 0) return -1;
    if (rc) {
        if (v < 1) return BAD("max_tokens", "'max_tokens' must be at least 1, got %lld", v);
        r->max_tokens = (int)(v > max_tokens_lim ? max_tokens_lim + 1 : v);
    }
    if ((rc = get_int(root, "max_completion_tokens", -1e18, 1e18, &v, err)) < 0) return -1;
    if (rc) {
        if (v < 1)
            return BAD("max_completion_tokens", "'max_completion_tokens' must be at least 1");
        r->max_tokens = (int)(v > max_tokens_lim ? max_tokens_lim + 1 : v);
    }
    if (r->max_tokens > max_tokens_lim)
        return BAD("max_tokens", "'max_tokens' must be at most %d", max_tokens_lim);

    struct exec_sampling *sp = &r->sp;
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->repetition_penalty = 1.0f;
    if ((rc = get_num(root, "temperature", 0, 2, &d, err)) < 0) return -1;
    if (rc) sp->temperature = (float)d;
    if ((rc = get_num(root, "top_p", 0, 1, &d, err)) < 0) return -1;
    if (rc) {
        if (d <= 0) return BAD("top_p", "'top_p' must be greater than 0");
        sp->top_p = (float)d;
    }
    if ((rc = get_int(root, "top_k", -1, 1e9, &v, err)) < 0) return -1;
    if (rc) sp->top_k = v < 0 ? 0 : (int)v; /* -1 means off in llama.cpp-style clients */
    if ((rc = get_num(root, "min_p", 0, 1, &d, err)) < 0) return -1;
    if (rc) sp->min_p = (float)d;
    if ((rc = get_num(root, "presence_penalty", -2, 2, &d, err)) < 0) return -1;
    if (rc) sp->presence_penalty = (float)d;
    if ((rc = get_num(root, "frequency_penalty", -2, 2, &d, err)) < 0) return -1;
    if (rc) sp->frequency_penalty = (float)d;
    if ((rc = get_num(root, "repetition_penalty", 0, 10, &d, err)) < 0) return -1;
    if (rc) {
        if (d <= 0) return BAD("repetition_penalty", "'repetition_penalty' must be greater than 0");
        sp->repetition_penalty = (float)d;
    }
    /* Seeds are 64-bit in practice; doubles hold integers exactly up to 2^53. */
    if ((rc = get_int(root, "seed", -9007199254740992.0, 9007199254740992.0, &v, err)) < 0)
        return -1;
    if (rc) {
        sp->seed = (uint64_t)v;
        r->seed_given = 1;
    }
    if ((rc = get_int(root, "n", -1e18, 1e18, &v, err)) < 0) return -1;
    if (rc && v < 1) return BAD("n", "'n' must be at least 1");
    if (rc && v != 1) return UNSUPPORTED("n", "only n=1 is supported, got %lld", v);
    if ((rc = get_int(root, "best_of", -1e18, 1e18, &v, err)) < 0) return -1;
    if (rc && v != 1) return UNSUPPORTED("best_of", "only best_of=1 is supported");
    int b = 0;
    if (get_bool(root, "echo", &b, err) < 0) return -1;
    if (b) return UNSUPPORTED("echo", "echo is not supported");
    if (field(root, "tools") || field(root, "functions"))
        return UNSUPPORTED("tools", "tools are not supported");
    if (get_bool(root, "stream", &r->stream, err) < 0) return -1;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return BADTYPE("stream_options", "an object");
        if (get_bool(so, "include_usage", &r->include_usage, err) < 0) return -1;
    }
    if (get_bool(root, "return_token_ids", &r->return_token_ids, err) < 0) return -1;
    if (parse_stop(root, r, err) < 0) return -1;

    if (r->kind == API_CHAT) {
        if (get_bool(root, "logprobs", &r->logprobs, err) < 0) return -1;
        if ((rc = get_int(root, "top_logprobs", 0, EXEC_MAX_TOP, &v, err)) < 0) return -1;
        if (rc) {
            if (!r->logprobs && v > 0)
                return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            sp->n_top = (int)v;
        }
        const cJSON *kw = field(root, "chat_template_kwargs");
        r->enable_thinking = -1;
        if (kw) {
            if (!cJSON_IsObject(kw)) return BADTYPE("chat_template_kwargs", "an object");
            if (get_bool(kw, "enable_thinking", &r->enable_thinking, err) < 0) return -1;
        }
    } else {
        /* Legacy completions: logprobs is the number of top alternatives, 0..5. */
        if ((rc = get_int(root, "logprobs", 0, 5, &v, err)) < 0) return -1;
        if (rc) {
            r->logprobs = 1;
            sp->n_top = (int)v;
        }
        r->enable_thinking = -1;
    }
    sp->want_logprob = r->logprobs;
    return 0;
}

int api_parse_request(enum api_kind kind, const char *body, size_t len,
                      const struct api_limits *lim, struct api_request **out,
                      struct api_error *err) {
    *out = NULL;
    if (len == 0) return BAD("body", "empty request body");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return api_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                             "malformed JSON near byte %zu", at);
    }
    /* Trailing bytes other than whitespace are an error (one JSON value per body). */
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return api_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                                 "trailing bytes after the JSON value at byte %zu",
                                 (size_t)(p - body));
        }
    struct api_request *r = calloc(1, sizeof *r);
    if (!r) {
        cJSON_Delete(root);
        return oom(err);
    }
    r->kind = kind;
    int rc = parse_fields(root, r, lim, err);
    cJSON_Delete(root);
    if (rc < 0) {
        api_request_free(r);
        return -1;
    }
    *out = r;
    return 0;
}

/* ---- responses ---- */

char *api_build_error(const struct api_error *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    char *msg = api_utf8_sanitize(err->message, strlen(err->message));
    cJSON_AddStringToObject(e, "message", msg ? msg : "error");
    free(msg);
    cJSON_AddStringToObject(e, "type", err->type ? err->type : "invalid_request_error");
    if (err->param[0])
        cJSON_AddStringToObject(e, "param", err->param);
    else
        cJSON_AddNullToObject(e, "param");
    if (err->code)
        cJSON_AddStringToObject(e, "code", err->code);
    else
        cJSON_AddNullToObject(e, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static size_t utf8_seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

/* Length of a valid UTF-8 sequence at s (n bytes available), 0 if invalid or truncated. */
static size_t utf8_valid_at(const unsigned char *s, size_t n) {
    size_t k = utf8_seq_len(s[0]);
    if (k == 0 || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    /* Overlongs and surrogates and > U+10FFFF. */
    if (k == 3 && s[0] == 0xE0 && s[1] < 0xA0) return 0;
    if (k == 3 && s[0] == 0xED && s[1] >= 0xA0) return 0;
    if (k == 4 && s[0] == 0xF0 && s[1] < 0x90) return 0;
    if (k == 4 && s[0] == 0xF4 && s[1] >= 0x90) return 0;
    return k;
}

char *api_utf8_sanitize(const char *s, size_t len) {
    char *out = malloc(len * 3 + 1); /* each bad byte becomes 3 bytes of U+FFFD */
    if (!out) return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t k = utf8_valid_at(u + i, len - i);
        if (k == 0 || (k == 1 && u[i] == 0)) {
            memcpy(out + o, "\xEF\xBF\xBD", 3); /* NUL too: JSON strings from C stop there */
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, u + i, k);
        o += k;
        i += k;
    }
    out[o] = 0;
    return out;
}

static void add_text(cJSON *obj, const char *name, const char *s, size_t len) {
    char *t = api_utf8_sanitize(s ? s : "", s ? len : 0);
    cJSON_AddStringToObject(obj, name, t ? t : "");
    free(t);
}

static cJSON *bytes_array(const char *s, size_t len) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < len; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)s[i]));
    return a;
}

static cJSON *ids_array(const int32_t *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* Chat: {"content":[{"token","logprob","bytes","top_logprobs":[...]}]}.
 * Completion: {"tokens","token_logprobs","top_logprobs":[{text: lp}],"text_offset"}. */
static cJSON *logprobs_json(const struct api_out *o) {
    cJSON *lp = cJSON_CreateObject();
    if (o->kind == API_CHAT) {
        cJSON *content = cJSON_AddArrayToObject(lp, "content");
        for (int i = 0; i < o->n_toks; i++) {
            const struct api_token *t = &o->toks[i];
            cJSON *e = cJSON_CreateObject();
            add_text(e, "token", t->text, t->len);
            cJSON_AddNumberToObject(e, "logprob", (double)t->logprob);
            cJSON_AddItemToObject(e, "bytes", bytes_array(t->text, t->len));
            cJSON *tops = cJSON_AddArrayToObject(e, "top_logprobs");
            for (int j = 0; j < t->n_top; j++) {
                cJSON *x = cJSON_CreateObject();
                add_text(x, "token", t->top[j].text, t->top[j].len);
                cJSON_AddNumberToObject(x, "logprob", (double)t->top[j].logprob);
                cJSON_AddItemToObject(x, "bytes", bytes_array(t->top[j].text, t->top[j].len));
                cJSON_AddItemToArray(tops, x);
            }
            cJSON_AddItemToArray(content, e);
        }
        cJSON_AddNullToObject(lp, "refusal");
        return lp;
    }
    cJSON *tokens = cJSON_AddArrayToObject(lp, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(lp, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(lp, "text_offset");
    size_t off = 0;
    for (int i = 0; i < o->n_toks; i++) {
        const struct api_token *t = &o->toks[i];
        char *s = api_utf8_sanitize(t->text, t->len);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(s ? s : ""));
        free(s);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber((double)t->logprob));
        cJSON *m = cJSON_CreateObject();
        for (int j = 0; j < t->n_top; j++) {
            char *k = api_utf8_sanitize(t->top[j].text, t->top[j].len);
            if (k && !cJSON_GetObjectItemCaseSensitive(m, k))
                cJSON_AddNumberToObject(m, k, (double)t->top[j].logprob);
            free(k);
        }
        cJSON_AddItemToArray(tops, m);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += t->len;
    }
    return lp;
}

static void add_usage(cJSON *root, const struct api_usage *u) {
    cJSON *x = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(x, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(x, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(x, "total_tokens", u->prompt_tokens + u->completion_tokens);
}

static cJSON *envelope(const struct api_out *o, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", o->id ? o->id : "");
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)o->created);
    cJSON_AddStringToObject(root, "model", o->model ? o->model : "");
    cJSON_AddStringToObject(root, "system_fingerprint", "baton");
    return root;
}

static void add_finish(cJSON *choice, const struct api_out *o) {
    if (o->finish_reason)
        cJSON_AddStringToObject(choice, "finish_reason", o->finish_reason);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
}

static char *print_free(cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *api_build_response(const struct api_out *o) {
    int chat = o->kind == API_CHAT;
    cJSON *root = envelope(o, chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        add_text(m, "content", o->content, o->content_len);
        if (o->reasoning) add_text(m, "reasoning_content", o->reasoning, o->reasoning_len);
    } else {
        add_text(c, "text", o->content, o->content_len);
    }
    if (o->logprobs)
        cJSON_AddItemToObject(c, "logprobs", logprobs_json(o));
    else
        cJSON_AddNullToObject(c, "logprobs");
    add_finish(c, o);
    if (o->token_ids)
        cJSON_AddItemToObject(c, "token_ids", ids_array(o->token_ids, o->n_token_ids));
    cJSON_AddItemToArray(choices, c);
    if (o->prompt_ids)
        cJSON_AddItemToObject(root, "prompt_token_ids", ids_array(o->prompt_ids, o->n_prompt_ids));
    if (o->usage) add_usage(root, o->usage);
    return print_free(root);
}

char *api_build_chunk(const struct api_out *o) {
    int chat = o->kind == API_CHAT;
    cJSON *root = envelope(o, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    if (!o->usage_only) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", 0);
        if (chat) {
            cJSON *d = cJSON_AddObjectToObject(c, "delta");
            if (o->role_delta) cJSON_AddStringToObject(d, "role", "assistant");
            if (o->content && o->content_len)
                add_text(d, "content", o->content, o->content_len);
            else if (o->role_delta)
                cJSON_AddStringToObject(d, "content", "");
            if (o->reasoning && o->reasoning_len)
                add_text(d, "reasoning_content", o->reasoning, o->reasoning_len);
        } else {
            add_text(c, "text", o->content, o->content_len);
        }
        if (o->logprobs && o->n_toks)
            cJSON_AddItemToObject(c, "logprobs", logprobs_json(o));
        else
            cJSON_AddNullToObject(c, "logprobs");
        add_finish(c, o);
        if (o->token_ids)
            cJSON_AddItemToObject(c, "token_ids", ids_array(o->token_ids, o->n_token_ids));
        cJSON_AddItemToArray(choices, c);
    }
    if (o->prompt_ids)
        cJSON_AddItemToObject(root, "prompt_token_ids", ids_array(o->prompt_ids, o->n_prompt_ids));
    if (o->usage)
        add_usage(root, o->usage);
    else if (chat && !o->usage_only)
        cJSON_AddNullToObject(root, "usage");
    return print_free(root);
}

char *api_build_models(const char *model, long long created) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "baton");
    cJSON_AddItemToArray(data, m);
    return print_free(root);
}
