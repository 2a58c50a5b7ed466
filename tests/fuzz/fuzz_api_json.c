/* tests/fuzz/fuzz_api_json.c: libFuzzer target for the OpenAI request parser. The first byte
 * picks chat or completions; the rest is the body. Every outcome must be a parsed request or
 * an error with a 4xx/5xx status, and whatever is built from it must be valid JSON. */
#include "common/assert.h"
#include "coordinator/api_json.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_json(char *s) {
    BT_ASSERT(s);
    cJSON *j = cJSON_Parse(s);
    BT_ASSERT(j);
    cJSON_Delete(j);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const struct api_limits lim = {.model = "tiny-a",
                                          .n_vocab = 1792,
                                          .max_tokens = 4096,
                                          .max_prompt_chars = 1 << 16,
                                          .max_messages = 64};
    enum api_kind kind = (data[0] & 1) ? API_COMPLETION : API_CHAT;
    struct api_request *r = NULL;
    struct api_error err = {0};
    int rc = api_parse_request(kind, (const char *)data + 1, size - 1, &lim, &r, &err);
    if (rc < 0) {
        BT_ASSERT(!r);
        BT_ASSERT(err.status >= 400 && err.status < 600);
        check_json(api_build_error(&err));
        return 0;
    }
    BT_ASSERT(r && r->kind == kind);
    BT_ASSERT(r->max_tokens == -1 || (r->max_tokens >= 1 && r->max_tokens <= 4096));
    BT_ASSERT(r->n_stop >= 0 && r->n_stop <= API_MAX_STOP);
    BT_ASSERT(r->sp.n_top >= 0 && r->sp.n_top <= EXEC_MAX_TOP);
    for (int i = 0; i < r->n_prompt_ids; i++)
        BT_ASSERT(r->prompt_ids[i] >= 0 && r->prompt_ids[i] < 1792);
    /* Echo parsed text back through the builders: arbitrary bytes must still give JSON. */
    const char *text =
        kind == API_CHAT ? r->messages[r->n_messages - 1].content : (r->prompt ? r->prompt : "");
    struct api_token t = {.text = text, .len = strlen(text), .logprob = -1.0f, .n_top = 1};
    t.top[0] = (struct api_top){text, strlen(text), -1.0f};
    struct api_usage u = {1, 1};
    struct api_out o = {.kind = kind,
                        .id = "x",
                        .model = r->model,
                        .content = text,
                        .content_len = strlen(text),
                        .finish_reason = "stop",
                        .toks = &t,
                        .n_toks = 1,
                        .logprobs = r->logprobs,
                        .usage = &u};
    check_json(api_build_response(&o));
    check_json(api_build_chunk(&o));
    api_request_free(r);
    return 0;
}
