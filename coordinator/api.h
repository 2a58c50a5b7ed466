/* coordinator/api.h: the OpenAI-compatible endpoints, served through coordinator/http:
 *   POST /v1/chat/completions   POST /v1/completions   (streaming SSE or one JSON body)
 *   GET  /v1/models   GET /health   GET /metrics (Prometheus text)
 *   /admin/... (operator commands) handed to coordinator/admin when configured
 * api_handle() is the http_handler_fn: it parses (coordinator/api_json), renders chat with
 * engine/chat, tokenizes, submits to coordinator/sched and turns its events into the response.
 * A handler waiting for tokens checks its client every poll_ms; a client that went away
 * cancels its sequence, which frees its slot.
 * Reasoning: when a chat request sets chat_template_kwargs.enable_thinking = true, text up to
 * the model's "</think>" is returned as reasoning_content, the rest as content; otherwise all
 * generated text is content. Thread-safe (handlers run on connection threads). */
#ifndef BT_COORDINATOR_API_H
#define BT_COORDINATOR_API_H
#include "common/err.h"
#include "coordinator/admin.h"
#include "coordinator/api_json.h"
#include "coordinator/http.h"
#include "coordinator/metrics.h"
#include "coordinator/sched.h"
#include "engine/tokenizer.h"

struct api_opts {
    sched_t *sched;   /* NULL until ready: generation gets 503, /health says loading */
    const tok_t *tok; /* borrowed */
    metrics_t *metrics;
    const char *model;        /* the id clients must name */
    struct api_limits limits; /* .model is taken from model; .n_vocab from tok if 0 */
    int default_max_tokens;   /* when a request gives none; 0 = until the context ends */
    int poll_ms;              /* 0 = 50 */
    admin_t *admin;           /* /admin/ routes (coordinator/admin.h); NULL = 404 */
};

typedef struct api api_t;

int api_open(api_t **out, const struct api_opts *o, bt_err *e);
void api_close(api_t *a); /* NULL ok; after http_close */
/* Switches generation on once the pipeline is up (NULL switches it off again). */
void api_set_sched(api_t *a, sched_t *s);
/* While status is non-NULL (a static string, e.g. "recovering"), /health answers 503
 * {"status":"<status>"}; generation requests still go to the scheduler (they queue). NULL:
 * back to normal. */
void api_set_status(api_t *a, const char *status);

/* The http_handler_fn; ctx is the api_t. */
void api_handle(void *ctx, const struct http_req *rq, struct http_resp *rs);

#endif
