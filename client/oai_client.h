/* client/oai_client.h: the OpenAI-API side shared by `baton chat`, `complete`, `load` and
 * `generate --cluster`: one request to /v1/chat/completions or /v1/completions over
 * client/http_client, streamed (SSE) or not, turned into deltas (text, reasoning text, token
 * ids) with arrival times, and a summary (usage, finish_reason, all token ids, the error of a
 * failed request); the request body (oai_body_json, the one place a request of ours is
 * written); the server address, route and model id a command talks to (oai_target_resolve).
 * Nothing here is global, so one thread per request is fine. */
#ifndef BT_CLIENT_OAI_CLIENT_H
#define BT_CLIENT_OAI_CLIENT_H
#include "client/http_client.h"
#include "common/err.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

struct oai_delta {
    const char *content;   /* new answer text, or NULL */
    const char *reasoning; /* new reasoning_content (thinking), or NULL */
    const int32_t *ids;    /* token ids of this delta (return_token_ids), or NULL */
    int n_ids;
    int n_tokens; /* tokens this delta stands for: n_ids if given, else 1 if it has text */
};

/* Called for each delta as it arrives (t_ns: bt_now_ns() at arrival). Non-zero stops the
 * request: oai_request then returns BT_ECANCELED. */
typedef int (*oai_delta_fn)(void *ctx, const struct oai_delta *d, int64_t t_ns);

struct oai_result {
    int status;             /* HTTP status (0: no response) */
    char error[256];        /* error.message of a non-200 answer or an in-stream error */
    char finish_reason[32]; /* "" if none was sent */
    int prompt_tokens;      /* from usage; -1 when absent */
    int completion_tokens;  /* from usage; -1 when absent */
    int n_tokens;           /* sum of delta n_tokens */
    int32_t *ids;           /* all generated token ids (malloc'd, see oai_result_free) */
    int n_ids;
    char *text;                               /* all answer text (malloc'd, NUL-terminated) */
    char *reasoning;                          /* all reasoning text, or NULL */
    int64_t t_start_ns, t_first_ns, t_end_ns; /* send, first token (0 if none), end */
    int done; /* stream ended with [DONE] (or a whole JSON body was read) */
};

void oai_result_free(struct oai_result *r); /* the buffers; NULL ok */

/* POSTs body to path (a route from http_url_endpoint) and reads the answer: SSE when the
 * server streams, else one JSON body (then one delta with everything). Returns 0 when an HTTP
 * answer came (also for 4xx/5xx: see r->status and r->error), a negative code for connection
 * failures, timeouts (BT_ETIMEDOUT), malformed answers (BT_EPROTO) or a stop by cb
 * (BT_ECANCELED). r is filled either way; free it with oai_result_free. cb may be NULL. */
int oai_request(const struct http_url *u, const char *path, const char *body, int timeout_ms,
                oai_delta_fn cb, void *ctx, struct oai_result *r, bt_err *e);

/* The first model id of GET /v1/models (servers of ours serve one). */
int oai_first_model(const struct http_url *u, int timeout_ms, char *out, size_t cap, bt_err *e);

/* Where a command sends its requests: the parsed --url, the path of its route under the URL's
 * prefix, and the model id (--model, else the first of GET /v1/models). */
struct oai_target {
    struct http_url u;
    char path[1100];
    char model[256];
};
int oai_target_resolve(struct oai_target *t, const char *url, const char *route, const char *model,
                       int timeout_ms, bt_err *e);

/* A request body. Chat (/v1/chat/completions) when messages or user is set: messages is the
 * caller's array of {role, content} (borrowed), or else [system (if any), user]. Otherwise a
 * completion of prompt, or of the token ids prompt_ids[0..n_prompt_ids) when prompt is NULL. */
struct oai_body {
    const char *model;
    cJSON *messages;
    const char *system, *user;
    const char *prompt;
    const int32_t *prompt_ids;
    int n_prompt_ids;
    int max_tokens;
    int has_temp; /* else the server's default temperature */
    float temp;
    int has_seed;
    uint64_t seed;
    int has_stream; /* "stream" is sent (and include_usage with it when stream is 1) */
    int stream;
    int think;    /* chat: -1 = not sent, else chat_template_kwargs.enable_thinking */
    int want_ids; /* return_token_ids */
    int logprobs; /* > 0: that many alternatives per token */
};
/* The JSON text, or NULL when out of memory. Caller frees with free(). */
char *oai_body_json(const struct oai_body *b);
/* Appends {role, content} to a messages array (silently nothing when out of memory: the
 * request then fails to print, which the caller sees). */
void oai_add_message(cJSON *msgs, const char *role, const char *content);

/* Figures of a finished request: generated tokens (usage, else as counted from the deltas),
 * seconds from sending to the first token (the whole request when none came) and to the end. */
void oai_result_figures(const struct oai_result *r, int *tokens, double *ttft_s, double *e2e_s);

#endif
