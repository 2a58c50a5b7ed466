/* coordinator/api.c: the endpoints (see api.h). */
#include "coordinator/api.h"

#include "common/clock.h"
#include "common/log.h"
#include "engine/chat.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct api {
    struct api_opts o;
    pthread_mutex_t mu;
    sched_t *sched;
    const char *status; /* api_set_status: /health override, NULL = normal */
    enum chat_flavour flavour;
    int think_default;
    long long created;
    uint64_t counter;
};

struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n) {
    if (b->oom || n == 0) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(struct sbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

static void sb_consume(struct sbuf *b, size_t k) {
    memmove(b->p, b->p + k, b->n - k);
    b->n -= k;
    b->p[b->n] = 0;
}

/* One request being generated. */
struct gen {
    api_t *a;
    struct api_request *req;
    sched_handle_t *h;
    int fd;
    char id[64];
    long long created;
    int32_t *prompt_ids;
    int n_prompt;
    /* reasoning split */
    int split, in_reasoning, at_start, skip_nl;
    struct sbuf pend;
    /* non-streaming accumulation */
    struct sbuf content, reasoning;
    struct api_token *toks;
    int n_toks, cap_toks;
    int32_t *ids;
    int n_ids, cap_ids;
    /* streaming */
    struct sbuf out;
    size_t out_pos;
    int started, ended;
};

static void gen_free(struct gen *g) {
    if (!g) return;
    sched_handle_close(g->h);
    api_request_free(g->req);
    free(g->prompt_ids);
    free(g->pend.p);
    free(g->content.p);
    free(g->reasoning.p);
    free(g->toks);
    free(g->ids);
    free(g->out.p);
    free(g);
}

/* Routes generated text to content or reasoning (see api.h). final: no more text follows. */
static void route(struct gen *g, const char *t, size_t n, int final, struct sbuf *content,
                  struct sbuf *reason) {
    static const char open[] = "<think>", close[] = "</think>";
    if (!g->split) {
        sb_add(content, t, n);
        return;
    }
    sb_add(&g->pend, t, n);
    if (!g->pend.p) return;
    for (;;) {
        const char *p = g->pend.p;
        size_t len = g->pend.n;
        if (g->in_reasoning && g->at_start) {
            /* The model may open the block itself (Qwen3 prompts do not): drop it. */
            size_t i = 0;
            while (i < len && (p[i] == '\n' || p[i] == ' '))
                i++;
            size_t rest = len - i;
            if (!final && rest < 7 && !memcmp(p + i, open, rest))
                return; /* could still become "<think>" */
            g->at_start = 0;
            if (rest >= 7 && !memcmp(p + i, open, 7)) sb_consume(&g->pend, i + 7);
            continue;
        }
        if (g->in_reasoning) {
            const char *c = memmem(p, len, close, 8);
            if (c) {
                sb_add(reason, p, (size_t)(c - p));
                sb_consume(&g->pend, (size_t)(c - p) + 8);
                g->in_reasoning = 0;
                g->skip_nl = 1;
                continue;
            }
            size_t keep = 0;
            for (size_t k = len < 7 ? len : 7; !final && k > 0; k--)
                if (!memcmp(p + len - k, close, k)) {
                    keep = k;
                    break;
                }
            sb_add(reason, p, len - keep);
            sb_consume(&g->pend, len - keep);
            return;
        }
        size_t i = 0;
        if (g->skip_nl) {
            while (i < len && p[i] == '\n')
                i++;
            if (i < len || final) g->skip_nl = 0;
        }
        sb_add(content, p + i, len - i);
        sb_consume(&g->pend, len);
        return;
    }
}

static int add_token(struct gen *g, const struct exec_result *r) {
    const tok_t *tok = g->a->o.tok;
    if (g->req->logprobs) {
        if (g->n_toks == g->cap_toks) {
            int cap = g->cap_toks ? g->cap_toks * 2 : 64;
            struct api_token *p = realloc(g->toks, (size_t)cap * sizeof *p);
            if (!p) return -ENOMEM;
            g->toks = p;
            g->cap_toks = cap;
        }
        struct api_token *t = &g->toks[g->n_toks++];
        memset(t, 0, sizeof *t);
        t->id = r->token;
        t->text = tokenizer_token_bytes(tok, r->token, &t->len);
        t->logprob = r->logprob;
        t->n_top = r->n_top < g->req->sp.n_top ? r->n_top : g->req->sp.n_top;
        for (int k = 0; k < t->n_top; k++) {
            t->top[k].text = tokenizer_token_bytes(tok, r->top_ids[k], &t->top[k].len);
            t->top[k].logprob = r->top_logprobs[k];
        }
    }
    if (g->req->return_token_ids) {
        if (g->n_ids == g->cap_ids) {
            int cap = g->cap_ids ? g->cap_ids * 2 : 64;
            int32_t *p = realloc(g->ids, (size_t)cap * sizeof *p);
            if (!p) return -ENOMEM;
            g->ids = p;
            g->cap_ids = cap;
        }
        g->ids[g->n_ids++] = r->token;
    }
    return 0;
}

static void reply_error(api_t *a, struct http_resp *rs, const struct api_error *err) {
    (void)a;
    rs->status = err->status;
    rs->body = api_build_error(err);
    rs->body_len = rs->body ? strlen(rs->body) : 0;
}

static void reply_json(struct http_resp *rs, int status, char *body) {
    rs->status = body ? status : 500;
    rs->body = body;
    rs->body_len = body ? strlen(body) : 0;
}

static int event_error_status(int code) {
    return code == BT_ECANCELED || code == BT_EPEERLOST ? 503 : 500;
}

static void out_base(const struct gen *g, struct api_out *o) {
    memset(o, 0, sizeof *o);
    o->kind = g->req->kind;
    o->id = g->id;
    o->created = g->created;
    o->model = g->a->o.model;
}

/* ---- non-streaming ---- */

static void run_blocking(struct gen *g, struct http_resp *rs) {
    int poll_ms = g->a->o.poll_ms > 0 ? g->a->o.poll_ms : 50;
    for (;;) {
        struct sched_event *ev = NULL;
        if (!sched_next(g->h, poll_ms, &ev)) {
            if (http_client_gone(g->fd)) {
                /* Nobody will read the answer: cancel (gen_free closes the handle). */
                BT_LOG(DEBUG, "api", "id=%s client gone", g->id);
                rs->status = 499; /* nginx's "client closed request"; never seen by anyone */
                rs->content_type = "text/plain";
                rs->body = calloc(1, 1);
                return;
            }
            continue;
        }
        if (ev->kind == SEV_ERROR) {
            struct api_error err;
            api_error_set(&err, event_error_status(ev->code), "server_error", "generation_failed",
                          NULL, "%s", ev->msg);
            sched_event_free(ev);
            reply_error(g->a, rs, &err);
            return;
        }
        if (ev->kind == SEV_TOKEN && add_token(g, &ev->tok) < 0) g->content.oom = 1;
        route(g, ev->text, ev->len, ev->kind == SEV_DONE, &g->content, &g->reasoning);
        if (ev->kind == SEV_DONE) {
            struct api_usage u = {ev->prompt_tokens, ev->completion_tokens};
            struct api_out o;
            out_base(g, &o);
            o.content = g->content.p ? g->content.p : "";
            o.content_len = g->content.n;
            if (g->split) {
                o.reasoning = g->reasoning.p ? g->reasoning.p : "";
                o.reasoning_len = g->reasoning.n;
            }
            o.finish_reason = ev->finish_reason;
            o.logprobs = g->req->logprobs;
            o.toks = g->toks;
            o.n_toks = g->n_toks;
            if (g->req->return_token_ids) {
                static const int32_t none[1];
                o.token_ids = g->ids ? g->ids : none;
                o.n_token_ids = g->n_ids;
                o.prompt_ids = g->prompt_ids;
                o.n_prompt_ids = g->n_prompt;
            }
            o.usage = &u;
            sched_event_free(ev);
            if (g->content.oom || g->reasoning.oom || g->pend.oom) {
                struct api_error err;
                api_error_set(&err, 500, "server_error", "out_of_memory", NULL, "out of memory");
                reply_error(g->a, rs, &err);
                return;
            }
            reply_json(rs, 200, api_build_response(&o));
            return;
        }
        sched_event_free(ev);
    }
}

/* ---- streaming ---- */

static void emit_chunk(struct gen *g, const struct api_out *o) {
    char *j = api_build_chunk(o);
    if (!j) {
        g->out.oom = 1;
        return;
    }
    sb_str(&g->out, "data: ");
    sb_str(&g->out, j);
    sb_str(&g->out, "\n\n");
    free(j);
}

/* Turns one event into SSE bytes in g->out. */
static void stream_event(struct gen *g, struct sched_event *ev) {
    struct sbuf content = {0}, reason = {0};
    route(g, ev->text, ev->len, ev->kind == SEV_DONE, &content, &reason);
    struct api_out o;
    out_base(g, &o);
    struct api_token one;
    int32_t id = ev->tok.token;
    if (ev->kind == SEV_TOKEN) {
        int n0 = g->n_toks;
        if (add_token(g, &ev->tok) < 0) g->out.oom = 1;
        g->n_ids = 0; /* streaming: each chunk carries its own token(s) only */
        if (g->req->logprobs && g->n_toks > n0) {
            one = g->toks[g->n_toks - 1];
            g->n_toks = 0;
            o.toks = &one;
            o.n_toks = 1;
            o.logprobs = 1;
        }
        if (g->req->return_token_ids) {
            o.token_ids = &id;
            o.n_token_ids = 1;
        }
    }
    o.content = content.p;
    o.content_len = content.n;
    o.reasoning = reason.p;
    o.reasoning_len = reason.n;
    if (content.n || reason.n || o.n_toks || o.token_ids) emit_chunk(g, &o);
    free(content.p);
    free(reason.p);
    if (ev->kind == SEV_DONE) {
        out_base(g, &o);
        o.finish_reason = ev->finish_reason;
        emit_chunk(g, &o);
        if (g->req->include_usage) {
            struct api_usage u = {ev->prompt_tokens, ev->completion_tokens};
            out_base(g, &o);
            o.usage_only = 1;
            o.usage = &u;
            emit_chunk(g, &o);
        }
        sb_str(&g->out, "data: [DONE]\n\n");
        g->ended = 1;
    } else if (ev->kind == SEV_ERROR) {
        struct api_error err;
        api_error_set(&err, event_error_status(ev->code), "server_error", "generation_failed", NULL,
                      "%s", ev->msg);
        char *j = api_build_error(&err);
        if (j) {
            sb_str(&g->out, "data: ");
            sb_str(&g->out, j);
            sb_str(&g->out, "\n\n");
            free(j);
        }
        g->ended = 1;
    }
}

static ssize_t stream_next(void *ctx, char *buf, size_t max) {
    struct gen *g = ctx;
    int poll_ms = g->a->o.poll_ms > 0 ? g->a->o.poll_ms : 50;
    for (;;) {
        if (g->out.oom) return -1;
        if (g->out_pos < g->out.n) {
            size_t n = g->out.n - g->out_pos;
            if (n > max) n = max;
            memcpy(buf, g->out.p + g->out_pos, n);
            g->out_pos += n;
            if (g->out_pos == g->out.n) g->out_pos = g->out.n = 0;
            return (ssize_t)n;
        }
        if (g->ended) return 0;
        if (!g->started) {
            g->started = 1;
            struct api_out o;
            out_base(g, &o);
            if (g->req->return_token_ids) {
                o.prompt_ids = g->prompt_ids;
                o.n_prompt_ids = g->n_prompt;
            }
            if (g->req->kind == API_CHAT) {
                o.role_delta = 1;
                emit_chunk(g, &o);
            } else if (o.prompt_ids) {
                emit_chunk(g, &o);
            }
            continue;
        }
        struct sched_event *ev = NULL;
        if (!sched_next(g->h, poll_ms, &ev)) {
            if (http_client_gone(g->fd)) return -1; /* done() cancels the sequence */
            continue;
        }
        stream_event(g, ev);
        sched_event_free(ev);
    }
}

static void stream_done(void *ctx, int completed) {
    struct gen *g = ctx;
    if (!completed) BT_LOG(DEBUG, "api", "id=%s stream cut short: cancelling", g->id);
    gen_free(g);
}

/* ---- generation endpoints ---- */

static void generate(api_t *a, enum api_kind kind, const struct http_req *rq,
                     struct http_resp *rs) {
    struct api_error err;
    pthread_mutex_lock(&a->mu);
    sched_t *s = a->sched;
    pthread_mutex_unlock(&a->mu);
    struct gen *g = calloc(1, sizeof *g);
    if (!g) {
        api_error_set(&err, 500, "server_error", "out_of_memory", NULL, "out of memory");
        reply_error(a, rs, &err);
        return;
    }
    g->a = a;
    g->fd = rq->fd;
    if (api_parse_request(kind, rq->body, rq->body_len, &a->o.limits, &g->req, &err) < 0) goto fail;
    if (!s) {
        api_error_set(&err, 503, "server_error", "not_ready", NULL, "the model is not loaded yet");
        goto fail;
    }
    struct api_request *r = g->req;
    bt_err e = {0};
    if (r->prompt_ids) {
        g->prompt_ids = r->prompt_ids;
        g->n_prompt = r->n_prompt_ids;
        r->prompt_ids = NULL;
        r->n_prompt_ids = 0;
    } else {
        char *text = NULL;
        size_t len = 0;
        int rc;
        if (kind == API_CHAT) {
            struct chat_msg *msgs = calloc((size_t)r->n_messages, sizeof *msgs);
            static const char *const roles[] = {"system", "user", "assistant", "tool"};
            if (!msgs) {
                api_error_set(&err, 500, "server_error", "out_of_memory", NULL, "out of memory");
                goto fail;
            }
            for (int i = 0; i < r->n_messages; i++)
                msgs[i] = (struct chat_msg){.role = roles[r->messages[i].role],
                                            .content = r->messages[i].content,
                                            .reasoning_content = r->messages[i].reasoning};
            int think = r->enable_thinking >= 0 ? r->enable_thinking : a->think_default;
            struct chat_opts co = {
                .flavour = a->flavour, .add_generation_prompt = 1, .enable_thinking = think};
            rc = chat_render(msgs, (size_t)r->n_messages, &co, &text, &len, &e);
            free(msgs);
            if (rc < 0) {
                api_error_set(&err, rc == -ENOMEM ? 500 : 400,
                              rc == -ENOMEM ? "server_error" : "invalid_request_error",
                              "invalid_messages", "messages", "%s", bt_errmsg(&e, rc));
                goto fail;
            }
            g->split = r->enable_thinking == 1;
            g->in_reasoning = g->at_start = g->split;
        } else {
            text = r->prompt;
            len = strlen(r->prompt);
        }
        size_t n = 0;
        rc = tokenizer_encode(a->o.tok, text, len, 1, &g->prompt_ids, &n, &e);
        if (text != r->prompt) free(text);
        if (rc < 0) {
            api_error_set(&err, 500, "server_error", "tokenizer", NULL, "%s", bt_errmsg(&e, rc));
            goto fail;
        }
        g->n_prompt = (int)n;
        if (n == 0) {
            api_error_set(&err, 400, "invalid_request_error", "invalid_value", "prompt",
                          "the prompt is empty after tokenization");
            goto fail;
        }
    }
    int max_prompt = a->o.limits.max_prompt_ids > 0 ? a->o.limits.max_prompt_ids : 65536;
    if (g->n_prompt > max_prompt) {
        api_error_set(&err, 400, "invalid_request_error", "context_length_exceeded", "messages",
                      "the prompt has %d tokens, more than the limit of %d", g->n_prompt,
                      max_prompt);
        goto fail;
    }

    struct sched_req sr = {.prompt = g->prompt_ids, .n_prompt = g->n_prompt};
    sr.max_tokens = r->max_tokens > 0             ? r->max_tokens
                    : a->o.default_max_tokens > 0 ? a->o.default_max_tokens
                                                  : 1 << 30; /* the context decides */
    sr.sp = r->sp;
    pthread_mutex_lock(&a->mu);
    uint64_t serial = ++a->counter;
    pthread_mutex_unlock(&a->mu);
    if (!r->seed_given) /* distinct streams per request, reproducible only with a seed */
        sr.sp.seed = (uint64_t)bt_now_ns() * 0x9E3779B97F4A7C15ull ^ serial;
    for (int i = 0; i < r->n_stop && i < SCHED_MAX_STOP; i++)
        sr.stop[sr.n_stop++] = r->stop[i];
    int rc = sched_submit(s, &sr, &g->h, &e);
    if (rc == BT_ECAPACITY) {
        api_error_set(&err, 429, "rate_limit_exceeded", "queue_full", NULL, "%s",
                      bt_errmsg(&e, rc));
        goto fail;
    }
    if (rc == BT_EMSGSIZE || rc == BT_EINVAL) {
        api_error_set(&err, 400, "invalid_request_error",
                      rc == BT_EMSGSIZE ? "context_length_exceeded" : "invalid_value", NULL, "%s",
                      bt_errmsg(&e, rc));
        goto fail;
    }
    if (rc < 0) {
        api_error_set(&err, 500, "server_error", "internal_error", NULL, "%s", bt_errmsg(&e, rc));
        goto fail;
    }
    g->created = (long long)time(NULL);
    snprintf(g->id, sizeof g->id, "%s-%llx%06llx", kind == API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)g->created, (unsigned long long)serial);
    if (r->stream) {
        rs->status = 200;
        rs->content_type = "text/event-stream";
        rs->next = stream_next;
        rs->done = stream_done;
        rs->ctx = g;
        return;
    }
    run_blocking(g, rs);
    gen_free(g);
    return;
fail:
    reply_error(a, rs, &err);
    gen_free(g);
}

void api_handle(void *ctx, const struct http_req *rq, struct http_resp *rs) {
    api_t *a = ctx;
    const char *p = rq->path;
    int get = !strcmp(rq->method, "GET"), post = !strcmp(rq->method, "POST");
    struct api_error err;
    /* Paths with and without the /v1 prefix, as OpenAI-compatible servers usually accept. */
    if (!strncmp(p, "/v1/", 4)) p += 3;
    int is_chat = !strcmp(p, "/chat/completions"), is_cmpl = !strcmp(p, "/completions");
    if (is_chat || is_cmpl) {
        if (!post) {
            api_error_set(&err, 405, "invalid_request_error", "method_not_allowed", NULL,
                          "use POST for %s", rq->path);
            reply_error(a, rs, &err);
            return;
        }
        generate(a, is_chat ? API_CHAT : API_COMPLETION, rq, rs);
        return;
    }
    if (a->o.admin && admin_is_route(rq->path)) {
        admin_handle(a->o.admin, rq, rs);
        return;
    }
    int is_models = !strcmp(p, "/models"), is_health = !strcmp(rq->path, "/health"),
        is_metrics = !strcmp(rq->path, "/metrics");
    if ((is_models || is_health || is_metrics) && !get) {
        api_error_set(&err, 405, "invalid_request_error", "method_not_allowed", NULL,
                      "use GET for %s", rq->path);
        reply_error(a, rs, &err);
        return;
    }
    if (is_models) {
        reply_json(rs, 200, api_build_models(a->o.model, a->created));
        return;
    }
    if (is_health) {
        pthread_mutex_lock(&a->mu);
        sched_t *s = a->sched;
        const char *status = a->status;
        pthread_mutex_unlock(&a->mu);
        char buf[160];
        if (status) {
            snprintf(buf, sizeof buf, "{\"status\":\"%s\"}", status);
            s = NULL; /* 503 below */
        } else if (s) {
            struct sched_stats st;
            sched_get_stats(s, &st);
            snprintf(buf, sizeof buf,
                     "{\"status\":\"ok\",\"queued\":%d,\"active\":%d,\"free_slots\":%d}", st.queued,
                     st.active, st.free_slots);
        } else {
            snprintf(buf, sizeof buf, "{\"status\":\"loading\"}");
        }
        size_t n = strlen(buf);
        char *body = malloc(n + 1);
        if (body) memcpy(body, buf, n + 1);
        reply_json(rs, s ? 200 : 503, body);
        return;
    }
    if (is_metrics) {
        char *m = a->o.metrics ? metrics_render(a->o.metrics) : calloc(1, 1);
        rs->status = m ? 200 : 500;
        rs->content_type = "text/plain; version=0.0.4";
        rs->body = m;
        rs->body_len = m ? strlen(m) : 0;
        return;
    }
    api_error_set(&err, 404, "invalid_request_error", "not_found", NULL, "no route for %s %.200s",
                  rq->method, rq->path);
    reply_error(a, rs, &err);
}

int api_open(api_t **out, const struct api_opts *o, bt_err *e) {
    *out = NULL;
    if (!o->tok || !o->model)
        return bt_fail(e, BT_EINVAL, "api: a tokenizer and a model id are required");
    api_t *a = calloc(1, sizeof *a);
    if (!a) return bt_fail(e, -ENOMEM, "api: out of memory");
    a->o = *o;
    a->o.limits.model = o->model;
    if (!a->o.limits.n_vocab) a->o.limits.n_vocab = tokenizer_n_vocab(o->tok);
    pthread_mutex_init(&a->mu, NULL);
    a->sched = o->sched;
    const char *tmpl = tokenizer_chat_template(o->tok);
    a->flavour = chat_detect(tmpl);
    /* Small Qwen3.5 templates think only when asked ("enable_thinking is true"). */
    a->think_default = !(tmpl && strstr(tmpl, "enable_thinking is true"));
    a->created = (long long)time(NULL);
    *out = a;
    return 0;
}

void api_close(api_t *a) {
    if (!a) return;
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void api_set_status(api_t *a, const char *status) {
    pthread_mutex_lock(&a->mu);
    a->status = status;
    pthread_mutex_unlock(&a->mu);
}

void api_set_sched(api_t *a, sched_t *s) {
    pthread_mutex_lock(&a->mu);
    a->sched = s;
    pthread_mutex_unlock(&a->mu);
}
