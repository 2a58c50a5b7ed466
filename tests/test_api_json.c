/* tests/test_api_json.c: OpenAI request parsing (every rejection with its status and the
 * OpenAI error shape) and response/chunk building. */
#include "api_cases.h"
#include "coordinator/api_json.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct api_limits lim = {.model = "tiny-a", .n_vocab = 1792, .max_tokens = 4096};

static struct api_request *parse_ok(enum api_kind k, const char *body) {
    struct api_request *r = NULL;
    struct api_error err = {0};
    int rc = api_parse_request(k, body, strlen(body), &lim, &r, &err);
    cr_assert_eq(rc, 0, "%s -> %d %s", body, err.status, err.message);
    cr_assert_not_null(r);
    return r;
}

/* The error body must be {"error":{"message":str,"type":str,"param":str|null,"code":str|null}}. */
static void check_error_shape(const struct api_error *err) {
    char *s = api_build_error(err);
    cr_assert_not_null(s);
    cJSON *j = cJSON_Parse(s);
    cr_assert_not_null(j, "not JSON: %s", s);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cr_assert(cJSON_IsObject(e), "%s", s);
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")), "%s", s);
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")), "%s", s);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "param");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    cr_assert(cJSON_IsString(p) || cJSON_IsNull(p), "%s", s);
    cr_assert(cJSON_IsString(c) || cJSON_IsNull(c), "%s", s);
    cJSON_Delete(j);
    free(s);
}

Test(api_json, bad_inputs_get_their_status) {
    cr_assert_geq(N_BAD_CASES, 100, "only %zu cases", N_BAD_CASES);
    for (size_t i = 0; i < N_BAD_CASES; i++) {
        const struct bad_case *c = &bad_cases[i];
        struct api_request *r = NULL;
        struct api_error err = {0};
        int rc = api_parse_request(c->chat ? API_CHAT : API_COMPLETION, c->body, strlen(c->body),
                                   &lim, &r, &err);
        cr_assert_eq(rc, -1, "case %zu accepted: %s", i, c->body);
        cr_assert_null(r);
        cr_assert_eq(err.status, c->status, "case %zu: %s -> %d (%s), want %d", i, c->body,
                     err.status, err.message, c->status);
        check_error_shape(&err);
    }
}

Test(api_json, empty_and_oversize) {
    struct api_request *r = NULL;
    struct api_error err = {0};
    cr_assert_eq(api_parse_request(API_CHAT, "", 0, &lim, &r, &err), -1);
    cr_assert_eq(err.status, 400);
    /* A prompt over max_prompt_chars is refused by the parser (the HTTP layer caps bodies). */
    struct api_limits small = lim;
    small.max_prompt_chars = 100;
    char body[512];
    char big[201];
    memset(big, 'a', 200);
    big[200] = 0;
    snprintf(body, sizeof body, "{\"model\":\"tiny-a\",\"prompt\":\"%s\"}", big);
    cr_assert_eq(api_parse_request(API_COMPLETION, body, strlen(body), &small, &r, &err), -1);
    cr_assert_eq(err.status, 400);
    snprintf(body, sizeof body,
             "{\"model\":\"tiny-a\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", big);
    cr_assert_eq(api_parse_request(API_CHAT, body, strlen(body), &small, &r, &err), -1);
    cr_assert_eq(err.status, 400);
    /* A NUL inside the body is not JSON. */
    cr_assert_eq(api_parse_request(API_CHAT, "{\0}", 3, &lim, &r, &err), -1);
    cr_assert_eq(err.status, 400);
}

Test(api_json, chat_request_fields) {
    struct api_request *r = parse_ok(
        API_CHAT,
        "{\"model\":\"tiny-a\",\"messages\":[{\"role\":\"developer\",\"content\":\"sys\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
        "\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"r\"},"
        "{\"role\":\"tool\",\"content\":\"t\"}],\"max_tokens\":10,\"max_completion_tokens\":20,"
        "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"presence_penalty\":0.5,"
        "\"frequency_penalty\":-0.5,\"repetition_penalty\":1.1,\"seed\":42,\"stop\":[\"x\",\"yy\"],"
        "\"n\":1,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":true,"
        "\"top_logprobs\":5,\"chat_template_kwargs\":{\"enable_thinking\":false},"
        "\"return_token_ids\":true,\"user\":\"ignored\",\"response_format\":null}");
    cr_assert_eq(r->kind, API_CHAT);
    cr_assert_eq(r->n_messages, 4);
    cr_assert_eq(r->messages[0].role, ROLE_SYSTEM);
    cr_assert_str_eq(r->messages[1].content, "ab");
    cr_assert_eq(r->messages[2].role, ROLE_ASSISTANT);
    cr_assert_str_eq(r->messages[2].content, "");
    cr_assert_str_eq(r->messages[2].reasoning, "r");
    cr_assert_eq(r->messages[3].role, ROLE_TOOL);
    cr_assert_eq(r->max_tokens, 20, "max_completion_tokens wins");
    cr_assert_float_eq(r->sp.temperature, 0.5f, 1e-7f);
    cr_assert_float_eq(r->sp.top_p, 0.9f, 1e-7f);
    cr_assert_eq(r->sp.top_k, 40);
    cr_assert_float_eq(r->sp.min_p, 0.05f, 1e-7f);
    cr_assert_float_eq(r->sp.presence_penalty, 0.5f, 1e-7f);
    cr_assert_float_eq(r->sp.frequency_penalty, -0.5f, 1e-7f);
    cr_assert_float_eq(r->sp.repetition_penalty, 1.1f, 1e-6f);
    cr_assert_eq(r->sp.seed, 42);
    cr_assert(r->seed_given);
    cr_assert_eq(r->n_stop, 2);
    cr_assert_str_eq(r->stop[1], "yy");
    cr_assert(r->stream && r->include_usage && r->logprobs && r->return_token_ids);
    cr_assert_eq(r->sp.n_top, 5);
    cr_assert(r->sp.want_logprob);
    cr_assert_eq(r->enable_thinking, 0);
    api_request_free(r);
}

Test(api_json, defaults_and_nulls) {
    struct api_request *r = parse_ok(
        API_CHAT, "{\"model\":\"tiny-a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                  "\"temperature\":null,\"max_tokens\":null,\"stop\":null,\"stream\":null}");
    cr_assert_eq(r->max_tokens, -1);
    cr_assert_float_eq(r->sp.temperature, 1.0f, 0.0f);
    cr_assert_float_eq(r->sp.top_p, 1.0f, 0.0f);
    cr_assert_float_eq(r->sp.repetition_penalty, 1.0f, 0.0f);
    cr_assert_eq(r->sp.top_k, 0);
    cr_assert_eq(r->n_stop, 0);
    cr_assert_eq(r->stream, 0);
    cr_assert_eq(r->enable_thinking, -1);
    cr_assert_eq(r->seed_given, 0);
    api_request_free(r);
    r = parse_ok(API_CHAT, "{\"model\":\"tiny-a\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"hi\"}],\"top_k\":-1,\"stop\":\"END\"}");
    cr_assert_eq(r->sp.top_k, 0, "-1 means off");
    cr_assert_eq(r->n_stop, 1);
    cr_assert_str_eq(r->stop[0], "END");
    api_request_free(r);
}

Test(api_json, completion_prompts) {
    struct api_request *r =
        parse_ok(API_COMPLETION, "{\"model\":\"tiny-a\",\"prompt\":[1,2,1791]}");
    cr_assert_eq(r->n_prompt_ids, 3);
    cr_assert_eq(r->prompt_ids[2], 1791);
    cr_assert_null(r->prompt);
    api_request_free(r);
    r = parse_ok(API_COMPLETION, "{\"model\":\"tiny-a\",\"prompt\":[\"once\"],\"logprobs\":3,"
                                 "\"max_tokens\":4096}");
    cr_assert_str_eq(r->prompt, "once");
    cr_assert(r->logprobs);
    cr_assert_eq(r->sp.n_top, 3);
    cr_assert_eq(r->max_tokens, 4096);
    api_request_free(r);
    r = parse_ok(API_COMPLETION, "{\"model\":\"tiny-a\",\"prompt\":[[5,6]]}");
    cr_assert_eq(r->n_prompt_ids, 2);
    api_request_free(r);
}

static cJSON *parse_json(char *s) {
    cr_assert_not_null(s);
    cJSON *j = cJSON_Parse(s);
    cr_assert_not_null(j, "not JSON: %s", s);
    free(s);
    return j;
}

static const char *str_at(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsString(x), "%s is not a string", k);
    return x->valuestring;
}

Test(api_json, chat_response_shape) {
    struct api_token t = {.id = 7, .text = "he", .len = 2, .logprob = -0.25f, .n_top = 2};
    t.top[0] = (struct api_top){"he", 2, -0.25f};
    t.top[1] = (struct api_top){"\xe4", 1, -2.0f}; /* half a character */
    int32_t ids[2] = {7, 8}, pids[3] = {1, 2, 3};
    struct api_usage u = {3, 2};
    struct api_out o = {.kind = API_CHAT,
                        .id = "chatcmpl-1",
                        .created = 1700000000,
                        .model = "tiny-a",
                        .content = "hello",
                        .content_len = 5,
                        .reasoning = "hmm",
                        .reasoning_len = 3,
                        .finish_reason = "stop",
                        .toks = &t,
                        .n_toks = 1,
                        .logprobs = 1,
                        .token_ids = ids,
                        .n_token_ids = 2,
                        .prompt_ids = pids,
                        .n_prompt_ids = 3,
                        .usage = &u};
    cJSON *j = parse_json(api_build_response(&o));
    cr_assert_str_eq(str_at(j, "object"), "chat.completion");
    cr_assert_str_eq(str_at(j, "id"), "chatcmpl-1");
    cr_assert_str_eq(str_at(j, "model"), "tiny-a");
    cr_assert_eq(cJSON_GetObjectItem(j, "created")->valuedouble, 1700000000.0);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cr_assert_eq(cJSON_GetObjectItem(c, "index")->valueint, 0);
    const cJSON *m = cJSON_GetObjectItem(c, "message");
    cr_assert_str_eq(str_at(m, "role"), "assistant");
    cr_assert_str_eq(str_at(m, "content"), "hello");
    cr_assert_str_eq(str_at(m, "reasoning_content"), "hmm");
    cr_assert_str_eq(str_at(c, "finish_reason"), "stop");
    const cJSON *lp =
        cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content"), 0);
    cr_assert_str_eq(str_at(lp, "token"), "he");
    cr_assert_float_eq(cJSON_GetObjectItem(lp, "logprob")->valuedouble, -0.25, 1e-9);
    const cJSON *top1 = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), 1);
    cr_assert_str_eq(str_at(top1, "token"), "\xef\xbf\xbd", "partial UTF-8 shown as U+FFFD");
    cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(top1, "bytes"), 0)->valueint, 0xe4);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c, "token_ids")), 2);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "prompt_token_ids")), 3);
    const cJSON *us = cJSON_GetObjectItem(j, "usage");
    cr_assert_eq(cJSON_GetObjectItem(us, "prompt_tokens")->valueint, 3);
    cr_assert_eq(cJSON_GetObjectItem(us, "completion_tokens")->valueint, 2);
    cr_assert_eq(cJSON_GetObjectItem(us, "total_tokens")->valueint, 5);
    cJSON_Delete(j);
}

Test(api_json, chunks_and_completion_shape) {
    struct api_out o = {.kind = API_CHAT, .id = "c", .model = "tiny-a", .role_delta = 1};
    cJSON *j = parse_json(api_build_chunk(&o));
    cr_assert_str_eq(str_at(j, "object"), "chat.completion.chunk");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cr_assert_str_eq(str_at(cJSON_GetObjectItem(c, "delta"), "role"), "assistant");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")));
    cJSON_Delete(j);
    struct api_usage u = {1, 1};
    o = (struct api_out){.kind = API_CHAT, .id = "c", .model = "m", .usage_only = 1, .usage = &u};
    j = parse_json(api_build_chunk(&o));
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint, 2);
    cJSON_Delete(j);
    /* Legacy completion logprobs: tokens, token_logprobs, top_logprobs maps, text_offset. */
    struct api_token t[2] = {{.text = "ab", .len = 2, .logprob = -1.0f, .n_top = 1},
                             {.text = "c", .len = 1, .logprob = -0.5f}};
    t[0].top[0] = (struct api_top){"ab", 2, -1.0f};
    o = (struct api_out){.kind = API_COMPLETION,
                         .id = "cmpl-1",
                         .model = "m",
                         .content = "abc",
                         .content_len = 3,
                         .finish_reason = "length",
                         .toks = t,
                         .n_toks = 2,
                         .logprobs = 1};
    j = parse_json(api_build_response(&o));
    cr_assert_str_eq(str_at(j, "object"), "text_completion");
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cr_assert_str_eq(str_at(c, "text"), "abc");
    cr_assert_str_eq(str_at(c, "finish_reason"), "length");
    const cJSON *lp = cJSON_GetObjectItem(c, "logprobs");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "tokens")), 2);
    cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "text_offset"), 1)->valueint, 2);
    cr_assert_float_eq(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), 0), "ab")
            ->valuedouble,
        -1.0, 1e-9);
    cJSON_Delete(j);
    j = parse_json(api_build_models("tiny-a", 5));
    cr_assert_str_eq(str_at(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "id"), "tiny-a");
    cJSON_Delete(j);
}

Test(api_json, utf8_helpers) {
    char *s = api_utf8_sanitize("a\xff"
                                "b\xc3\xa9\xed\xa0\x80",
                                8);
    cr_assert_str_eq(s, "a\xef\xbf\xbd"
                        "b\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    free(s);
}
