/* client/oai_client.c: the OpenAI-API client of the `baton` server commands (chat, complete,
 * load, generate --cluster): request bodies, the target (URL, route, model id), and answers,
 * streamed (SSE) or whole, turned into deltas and a summary. Contracts in oai_client.h. */
#include "client/oai_client.h"

#include "common/clock.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void oai_result_free(struct oai_result *r) {
    if (!r) return;
    free(r->ids);
    free(r->text);
    free(r->reasoning);
    r->ids = NULL, r->text = r->reasoning = NULL;
}

struct sbuf {
    char *p;
    size_t n, cap;
};

static int sbuf_add(struct sbuf *s, const char *t) {
    size_t k = strlen(t);
    if (s->n + k + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 256;
        while (nc < s->n + k + 1)
            nc *= 2;
        char *np = realloc(s->p, nc);
        if (!np) return -ENOMEM;
        s->p = np, s->cap = nc;
    }
    memcpy(s->p + s->n, t, k + 1);
    s->n += k;
    return 0;
}

struct ctx {
    struct oai_result *r;
    oai_delta_fn cb;
    void *cb_ctx;
    struct sbuf text, reasoning;
    size_t ids_cap;
    int stopped;
    int oom;
    int bad;
    char bad_msg[128];
};

static const char *str_field(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

static void take_usage(struct oai_result *r, const cJSON *root) {
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(u)) return;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
    if (cJSON_IsNumber(p)) r->prompt_tokens = p->valueint;
    if (cJSON_IsNumber(c)) r->completion_tokens = c->valueint;
}

static void take_error(struct oai_result *r, const cJSON *root) {
    const cJSON *er = cJSON_GetObjectItemCaseSensitive(root, "error");
    const char *m = cJSON_IsObject(er) ? str_field(er, "message") : NULL;
    if (m)
        snprintf(r->error, sizeof r->error, "%s", m);
    else if (cJSON_IsString(er))
        snprintf(r->error, sizeof r->error, "%s", er->valuestring);
}

/* One response object: a chunk of a stream or a whole answer (msg_key "delta" / "message"). */
static int take_object(struct ctx *x, const cJSON *root, const char *msg_key) {
    struct oai_result *r = x->r;
    int64_t now = bt_now_ns();
    if (cJSON_GetObjectItemCaseSensitive(root, "error")) {
        take_error(r, root);
        if (!r->error[0]) snprintf(r->error, sizeof r->error, "error in the stream");
        return 0;
    }
    take_usage(r, root);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsArray(choices)) {
        snprintf(x->bad_msg, sizeof x->bad_msg, "answer without a choices array");
        x->bad = 1;
        return 0;
    }
    const cJSON *ch = cJSON_GetArrayItem(choices, 0);
    if (!ch) /* the usage-only chunk at the end of a stream */
        return 0;
    struct oai_delta d = {0};
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, msg_key);
    if (cJSON_IsObject(msg)) {
        d.content = str_field(msg, "content");
        d.reasoning = str_field(msg, "reasoning_content");
    } else {
        d.content = str_field(ch, "text");
    }
    const char *fr = str_field(ch, "finish_reason");
    if (fr) snprintf(r->finish_reason, sizeof r->finish_reason, "%s", fr);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(ch, "token_ids");
    int32_t *first_new = NULL;
    if (cJSON_IsArray(ids)) {
        int n = cJSON_GetArraySize(ids);
        if ((size_t)(r->n_ids + n) > x->ids_cap) {
            size_t nc = x->ids_cap ? x->ids_cap : 64;
            while (nc < (size_t)(r->n_ids + n))
                nc *= 2;
            int32_t *np = realloc(r->ids, nc * sizeof *np);
            if (!np) {
                x->oom = 1;
                return -1;
            }
            r->ids = np, x->ids_cap = nc;
        }
        first_new = r->ids + r->n_ids;
        const cJSON *it;
        cJSON_ArrayForEach(it, ids) {
            if (!cJSON_IsNumber(it)) {
                snprintf(x->bad_msg, sizeof x->bad_msg, "token_ids with a non-number");
                x->bad = 1;
                return 0;
            }
            r->ids[r->n_ids++] = (int32_t)it->valuedouble;
        }
        d.ids = first_new;
        d.n_ids = n;
        d.n_tokens = n;
    } else if ((d.content && *d.content) || (d.reasoning && *d.reasoning)) {
        d.n_tokens = 1; /* without ids a streamed chunk is one token of ours */
    }
    if ((d.content && sbuf_add(&x->text, d.content)) ||
        (d.reasoning && sbuf_add(&x->reasoning, d.reasoning))) {
        x->oom = 1;
        return -1;
    }
    r->n_tokens += d.n_tokens;
    if (d.n_tokens && !r->t_first_ns) r->t_first_ns = now;
    if (x->cb && (d.n_tokens || d.content || d.reasoning) && x->cb(x->cb_ctx, &d, now)) {
        x->stopped = 1;
        return -1;
    }
    return 0;
}

static int on_sse(void *ctx, const char *event, const char *data, size_t len) {
    struct ctx *x = ctx;
    (void)event;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        x->r->done = 1;
        return 0;
    }
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root) {
        snprintf(x->bad_msg, sizeof x->bad_msg, "SSE event that is not JSON: %.60s", data);
        x->bad = 1;
        return 1;
    }
    int rc = take_object(x, root, "delta");
    cJSON_Delete(root);
    return rc ? 1 : 0;
}

static void finish(struct ctx *x) {
    x->r->text = x->text.p ? x->text.p : calloc(1, 1);
    x->r->reasoning = x->reasoning.p;
    x->text.p = x->reasoning.p = NULL;
}

int oai_request(const struct http_url *u, const char *path, const char *body, int timeout_ms,
                oai_delta_fn cb, void *ctx, struct oai_result *r, bt_err *e) {
    memset(r, 0, sizeof *r);
    r->prompt_tokens = r->completion_tokens = -1;
    r->t_start_ns = bt_now_ns();
    struct ctx x = {.r = r, .cb = cb, .cb_ctx = ctx};
    struct http_call_opts o = {.method = "POST",
                               .path = path,
                               .body = body,
                               .body_len = strlen(body),
                               .accept = "text/event-stream, application/json",
                               .timeout_ms = timeout_ms};
    http_call_t *c = NULL;
    char *whole = NULL;
    struct sse_parser sp;
    sse_init(&sp, on_sse, &x);
    int rc = http_call_open(&c, u, &o, e);
    if (rc) goto out;
    r->status = http_call_status(c);
    if (r->status != 200 || strncmp(http_call_content_type(c), "text/event-stream", 17)) {
        size_t len;
        if ((rc = http_call_read_all(c, (size_t)64 << 20, &whole, &len, e))) goto out;
        cJSON *root = cJSON_ParseWithLength(whole, len);
        if (r->status != 200) {
            if (root) take_error(r, root);
            if (!r->error[0]) snprintf(r->error, sizeof r->error, "%.200s", whole);
        } else if (!root) {
            rc = bt_fail(e, BT_EPROTO, "answer is neither SSE nor JSON: %.60s", whole);
        } else {
            int k = take_object(&x, root, "message");
            r->done = 1;
            if (k && x.oom)
                rc = bt_fail(e, -ENOMEM, "answer buffers");
            else if (k && x.stopped)
                rc = bt_fail(e, BT_ECANCELED, "stopped by the caller");
        }
        cJSON_Delete(root);
        goto out;
    }
    char buf[16384];
    for (;;) {
        ssize_t k = http_call_read(c, buf, sizeof buf, e);
        if (k < 0) {
            rc = (int)k;
            goto out;
        }
        if (k == 0) break;
        int f = sse_feed(&sp, buf, (size_t)k, e);
        if (f < 0) {
            rc = f;
            goto out;
        }
        if (f > 0) break;
    }
    if (x.oom)
        rc = bt_fail(e, -ENOMEM, "answer buffers");
    else if (x.stopped)
        rc = bt_fail(e, BT_ECANCELED, "stopped by the caller");
out:
    if (!rc && x.bad) rc = bt_fail(e, BT_EPROTO, "%s", x.bad_msg);
    if (!rc && r->status == 200 && !r->done && !r->error[0])
        rc = bt_fail(e, BT_EPROTO, "stream ended without [DONE]");
    r->t_end_ns = bt_now_ns();
    finish(&x);
    sse_free(&sp);
    free(whole);
    http_call_close(c);
    return rc;
}

int oai_first_model(const struct http_url *u, int timeout_ms, char *out, size_t cap, bt_err *e) {
    char path[1100];
    int rc = http_url_endpoint(u, "/v1/models", path, sizeof path, e);
    if (rc) return rc;
    struct http_call_opts o = {.method = "GET", .path = path, .timeout_ms = timeout_ms};
    int status;
    char *body = NULL;
    size_t len;
    if ((rc = http_fetch(u, &o, &status, &body, &len, e))) return rc;
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *data = root ? cJSON_GetObjectItemCaseSensitive(root, "data") : NULL;
    const cJSON *m0 = cJSON_IsArray(data) ? cJSON_GetArrayItem(data, 0) : NULL;
    const char *id = m0 ? str_field(m0, "id") : NULL;
    if (status != 200 || !id)
        rc = bt_fail(e, BT_EPROTO, "GET %s: status %d, no model id in %.80s", path, status, body);
    else
        snprintf(out, cap, "%s", id);
    cJSON_Delete(root);
    free(body);
    return rc;
}

int oai_target_resolve(struct oai_target *t, const char *url, const char *route, const char *model,
                       int timeout_ms, bt_err *e) {
    int rc = http_url_parse(url, &t->u, e);
    if (!rc) rc = http_url_endpoint(&t->u, route, t->path, sizeof t->path, e);
    if (rc) return rc;
    if (!model) return oai_first_model(&t->u, timeout_ms, t->model, sizeof t->model, e);
    if (strlen(model) >= sizeof t->model)
        return bt_fail(e, BT_EINVAL, "--model '%.40s...': longer than %zu bytes", model,
                       sizeof t->model - 1);
    snprintf(t->model, sizeof t->model, "%s", model);
    return 0;
}

void oai_add_message(cJSON *msgs, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    if (!cJSON_AddItemToArray(msgs, m)) cJSON_Delete(m);
}

char *oai_body_json(const struct oai_body *b) {
    cJSON *req = cJSON_CreateObject();
    if (!req) return NULL;
    cJSON_AddStringToObject(req, "model", b->model);
    if (b->messages) {
        /* a reference: the caller's history is not copied (nor freed with req) */
        cJSON_AddItemReferenceToObject(req, "messages", b->messages);
    } else if (b->user) {
        cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
        if (b->system) oai_add_message(msgs, "system", b->system);
        oai_add_message(msgs, "user", b->user);
    } else if (b->prompt) {
        cJSON_AddStringToObject(req, "prompt", b->prompt);
    } else {
        cJSON *p = cJSON_AddArrayToObject(req, "prompt");
        for (int i = 0; p && i < b->n_prompt_ids; i++)
            cJSON_AddItemToArray(p, cJSON_CreateNumber(b->prompt_ids[i]));
    }
    cJSON_AddNumberToObject(req, "max_tokens", b->max_tokens);
    if (b->has_temp) cJSON_AddNumberToObject(req, "temperature", (double)b->temp);
    if (b->has_seed) cJSON_AddNumberToObject(req, "seed", (double)b->seed);
    if (b->has_stream) cJSON_AddBoolToObject(req, "stream", b->stream);
    if (b->has_stream && b->stream) {
        cJSON *so = cJSON_AddObjectToObject(req, "stream_options");
        cJSON_AddBoolToObject(so, "include_usage", 1);
    }
    if (b->think >= 0 && (b->messages || b->user)) {
        cJSON *kw = cJSON_AddObjectToObject(req, "chat_template_kwargs");
        cJSON_AddBoolToObject(kw, "enable_thinking", b->think);
    }
    if (b->want_ids) cJSON_AddBoolToObject(req, "return_token_ids", 1);
    if (b->logprobs > 0) cJSON_AddNumberToObject(req, "logprobs", b->logprobs);
    char *text = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    return text;
}

void oai_result_figures(const struct oai_result *r, int *tokens, double *ttft_s, double *e2e_s) {
    *tokens = r->completion_tokens >= 0 ? r->completion_tokens : r->n_tokens;
    *e2e_s = (double)(r->t_end_ns - r->t_start_ns) * 1e-9;
    *ttft_s = r->t_first_ns ? (double)(r->t_first_ns - r->t_start_ns) * 1e-9 : *e2e_s;
}
