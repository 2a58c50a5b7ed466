/* coordinator/api_json.h: the OpenAI HTTP API as plain C data, with cJSON underneath.
 *
 * api_parse_request() turns a request body (untrusted bytes) into a struct api_request or an
 * api_error carrying the HTTP status and the OpenAI error shape; it does no I/O and is fuzzed
 * (tests/fuzz/fuzz_api_json.c). The builders return malloc'd JSON text (caller frees with
 * free()). Chat messages are rendered to prompt text by engine/chat.
 *
 * Status mapping (OpenAI error types in brackets):
 *   400 [invalid_request_error]  malformed JSON, wrong types, values out of range, missing or
 *                                empty required fields, unknown roles, prompt longer than allowed
 *   404 [invalid_request_error]  unknown model (code model_not_found), unknown path
 *   405 [invalid_request_error]  wrong method
 *   413 [invalid_request_error]  body over the size limit (code request_too_large)
 *   422 [invalid_request_error]  valid OpenAI requests we do not implement: n != 1, tools,
 *                                echo, best_of > 1, several prompts, non-text content parts
 *   429 [rate_limit_exceeded]    request queue full
 *   500/503 [server_error]       our own failure / not ready
 * Thread-safe: no globals. */
#ifndef BT_COORDINATOR_API_JSON_H
#define BT_COORDINATOR_API_JSON_H
#include "coordinator/exec.h"

#include <stddef.h>
#include <stdint.h>

#define API_MAX_STOP 4 /* OpenAI's limit on stop sequences */

enum api_kind { API_CHAT = 0, API_COMPLETION = 1 };
enum api_role { ROLE_SYSTEM = 0, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL };

struct api_message {
    enum api_role role;
    char *content;   /* text parts concatenated; never NULL */
    char *reasoning; /* assistant reasoning_content, or NULL */
};

struct api_limits {
    const char *model;       /* the served model id; requests naming another get 404 */
    size_t max_prompt_chars; /* prompt text (or rendered messages) bytes; 0 = 1 MiB */
    int max_prompt_ids;      /* token-id prompts; 0 = 65536 */
    int max_tokens;          /* largest max_tokens accepted; 0 = 32768 */
    int n_vocab;             /* token ids must be < n_vocab; 0 = unchecked */
    int max_messages;        /* 0 = 1024 */
};

struct api_request {
    enum api_kind kind;
    char *model;
    struct api_message *messages; /* chat */
    int n_messages;
    char *prompt;        /* completion given as text, or NULL */
    int32_t *prompt_ids; /* completion given as token ids, or NULL */
    int n_prompt_ids;
    int max_tokens; /* -1 = not given (the server's default) */
    struct exec_sampling sp;
    int seed_given;
    char *stop[API_MAX_STOP];
    int n_stop;
    int stream;
    int include_usage;   /* stream_options.include_usage */
    int logprobs;        /* chat: logprobs=true; completion: logprobs=N > 0 */
    int enable_thinking; /* chat_template_kwargs.enable_thinking: -1 not given, 0, 1 */
    int return_token_ids;
};

struct api_error {
    int status;       /* HTTP status */
    const char *type; /* "invalid_request_error", "rate_limit_exceeded", "server_error" */
    const char *code; /* stable code word, or NULL */
    char param[64];   /* offending field, or "" */
    char message[256];
};

/* 0 with *out (caller frees with api_request_free), or -1 with *err filled. */
int api_parse_request(enum api_kind kind, const char *body, size_t len,
                      const struct api_limits *lim, struct api_request **out,
                      struct api_error *err);
void api_request_free(struct api_request *r); /* NULL ok */

/* Fills err and returns -1 (for one-line error returns in callers). */
int api_error_set(struct api_error *err, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* {"error":{"message","type","param","code"}} */
char *api_build_error(const struct api_error *err);

/* One generated token with its text, for logprobs. */
struct api_top {
    const char *text; /* bytes of the token (may be a partial UTF-8 sequence) */
    size_t len;
    float logprob;
};
struct api_token {
    int32_t id;
    const char *text;
    size_t len;
    float logprob;
    int n_top;
    struct api_top top[EXEC_MAX_TOP];
};

struct api_usage {
    int prompt_tokens, completion_tokens;
};

/* Everything one choice (or one stream chunk) says. Fields that are NULL/0 are left out. */
struct api_out {
    enum api_kind kind;
    const char *id;    /* "chatcmpl-..." / "cmpl-..." */
    long long created; /* unix seconds */
    const char *model;
    const char *content; /* text (chat: message.content / delta.content) */
    size_t content_len;
    const char *reasoning; /* chat: reasoning_content */
    size_t reasoning_len;
    const char *finish_reason;    /* "stop", "length", or NULL (stream: not finished) */
    const struct api_token *toks; /* logprobs entries, or NULL */
    int n_toks;
    int logprobs;             /* include a logprobs object (even if empty) */
    const int32_t *token_ids; /* return_token_ids: this choice's ids */
    int n_token_ids;
    const int32_t *prompt_ids; /* return_token_ids: the prompt's ids (response level) */
    int n_prompt_ids;
    const struct api_usage *usage; /* or NULL */
    int role_delta;                /* stream: first chunk carries delta.role = "assistant" */
    int usage_only;                /* stream: the include_usage chunk (choices = []) */
};
/* A whole non-streaming response ("chat.completion" / "text_completion"). */
char *api_build_response(const struct api_out *o);
/* One streaming chunk's JSON ("chat.completion.chunk" / "text_completion"); the caller frames
 * it as "data: <json>\n\n". */
char *api_build_chunk(const struct api_out *o);
/* GET /v1/models body. */
char *api_build_models(const char *model, long long created);

/* Copies s[0..len) replacing invalid UTF-8 with U+FFFD; NUL-terminated; caller frees. */
char *api_utf8_sanitize(const char *s, size_t len);

#endif
