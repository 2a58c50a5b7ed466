/* client/oai_client.h: the OpenAI-API side shared by `baton chat`, `complete` and `load`: one
 * request to /v1/chat/completions or /v1/completions over client/http_client, streamed (SSE) or
 * not, turned into deltas (text, reasoning text, token ids) with arrival times, and a summary
 * (usage, finish_reason, all token ids, the error of a failed request).
 * The request body is the caller's JSON text (built with cJSON); nothing here is global, so
 * one thread per request is fine. */
#ifndef BT_CLIENT_OAI_CLIENT_H
#define BT_CLIENT_OAI_CLIENT_H
#include "client/http_client.h"
#include "common/err.h"

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

#endif
