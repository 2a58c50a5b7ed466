/* tests/api_cases.h: bad OpenAI requests and the HTTP status each must get, shared by
 * test_api_json (parser level) and test_http (over a socket). The served model is "tiny-a";
 * token ids must be < 1792. */
#ifndef BT_TESTS_API_CASES_H
#define BT_TESTS_API_CASES_H

struct bad_case {
    int chat; /* 1: /v1/chat/completions, 0: /v1/completions */
    int status;
    const char *body;
};

#define M         "\"model\":\"tiny-a\","
#define MSG       "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define CH(extra) "{" M MSG extra "}"
#define CP(extra) "{" M "\"prompt\":\"hi\"" extra "}"

/* clang-format off */
static const struct bad_case bad_cases[] = {
    /* malformed JSON */
    {1, 400, "{"}, {1, 400, "}"}, {1, 400, "nul"}, {1, 400, "{\"model\":}"},
    {1, 400, "{\"model\":\"tiny-a\",}"}, {1, 400, "{'model':'tiny-a'}"}, {1, 400, "[1,2"},
    {1, 400, "{\"model\":\"tiny-a\" \"messages\":[]}"}, {1, 400, "{\"a\":1}{\"b\":2}"},
    {1, 400, "{\"model\":\"tiny-a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi}]}"},
    {1, 400, "{\"model\":\"tiny-a\",\"messages\":[{\"role\":\"user\",\"content\":\"\\x\"}]}"},
    {1, 400, "\xff\xfe{}"}, {0, 400, "{"}, {0, 400, "{\"prompt\":[1,2,]}"}, {0, 400, "tru"},
    /* not an object */
    {1, 400, "[]"}, {1, 400, "42"}, {1, 400, "\"text\""}, {1, 400, "null"}, {1, 400, "true"},
    {0, 400, "[{\"model\":\"tiny-a\"}]"},
    /* model */
    {1, 400, "{" MSG "}"}, {1, 400, "{\"model\":5," MSG "}"}, {1, 400, "{\"model\":[]," MSG "}"},
    {1, 404, "{\"model\":\"gpt-4\"," MSG "}"}, {1, 404, "{\"model\":\"\"," MSG "}"},
    {1, 404, "{\"model\":\"tiny-A\"," MSG "}"}, {0, 404, "{\"model\":\"other\",\"prompt\":\"x\"}"},
    /* messages */
    {1, 400, "{" M "\"messages\":[]}"}, {1, 400, "{" M "\"messages\":{}}"},
    {1, 400, "{" M "\"messages\":\"hi\"}"}, {1, 400, "{" M "\"messages\":[1]}"},
    {1, 400, "{" M "}"}, {1, 400, "{" M "\"messages\":[{\"content\":\"hi\"}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":5,\"content\":\"hi\"}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"user\"}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"user\",\"content\":7}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"user\",\"content\":[1]}]}"},
    {1, 422, "{" M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}"},
    {1, 422, "{" M "\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[]}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"reasoning_content\":1}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"USER\",\"content\":\"hi\"}]}"},
    {1, 400, "{" M "\"messages\":[{\"role\":\"\",\"content\":\"hi\"}]}"},
    {1, 400, "{" M "\"messages\":[null]}"},
    /* prompt */
    {0, 400, "{" M "}"}, {0, 400, "{" M "\"prompt\":\"\"}"}, {0, 400, "{" M "\"prompt\":[]}"},
    {0, 400, "{" M "\"prompt\":5}"}, {0, 400, "{" M "\"prompt\":{}}"},
    {0, 400, "{" M "\"prompt\":[1,\"a\"]}"}, {0, 400, "{" M "\"prompt\":[1,-2]}"},
    {0, 400, "{" M "\"prompt\":[1,1.5]}"}, {0, 400, "{" M "\"prompt\":[1,99999]}"},
    {0, 400, "{" M "\"prompt\":[1,1792]}"}, {0, 400, "{" M "\"prompt\":[true]}"},
    {0, 400, "{" M "\"prompt\":[null]}"}, {0, 422, "{" M "\"prompt\":[\"a\",\"b\"]}"},
    {0, 422, "{" M "\"prompt\":[[1],[2]]}"}, {0, 400, "{" M "\"prompt\":[1e300]}"},
    /* max_tokens */
    {1, 400, CH(",\"max_tokens\":-1")}, {1, 400, CH(",\"max_tokens\":0")},
    {1, 400, CH(",\"max_tokens\":\"10\"")}, {1, 400, CH(",\"max_tokens\":1.5")},
    {1, 400, CH(",\"max_tokens\":1e30")}, {1, 400, CH(",\"max_tokens\":100000000")},
    {1, 400, CH(",\"max_tokens\":true")}, {1, 400, CH(",\"max_completion_tokens\":-5")},
    {1, 400, CH(",\"max_completion_tokens\":[]")}, {0, 400, CP(",\"max_tokens\":-100")},
    {0, 400, CP(",\"max_tokens\":99999999999")},
    /* sampling */
    {1, 400, CH(",\"temperature\":-0.1")}, {1, 400, CH(",\"temperature\":2.5")},
    {1, 400, CH(",\"temperature\":\"hot\"")}, {1, 400, CH(",\"top_p\":0")},
    {1, 400, CH(",\"top_p\":1.5")}, {1, 400, CH(",\"top_p\":-1")}, {1, 400, CH(",\"top_k\":2.5")},
    {1, 400, CH(",\"top_k\":-7")}, {1, 400, CH(",\"top_k\":\"5\"")}, {1, 400, CH(",\"min_p\":1.5")},
    {1, 400, CH(",\"min_p\":-0.5")}, {1, 400, CH(",\"presence_penalty\":3")},
    {1, 400, CH(",\"frequency_penalty\":-2.5")}, {1, 400, CH(",\"repetition_penalty\":0")},
    {1, 400, CH(",\"repetition_penalty\":-1")}, {1, 400, CH(",\"repetition_penalty\":11")},
    {1, 400, CH(",\"seed\":\"x\"")}, {1, 400, CH(",\"seed\":1.5")}, {1, 400, CH(",\"seed\":1e300")},
    {0, 400, CP(",\"temperature\":{}")},
    /* n, best_of, echo, tools */
    {1, 422, CH(",\"n\":2")}, {1, 400, CH(",\"n\":0")}, {1, 400, CH(",\"n\":-1")},
    {1, 400, CH(",\"n\":\"1\"")}, {0, 422, CP(",\"best_of\":3")}, {0, 422, CP(",\"echo\":true")},
    {0, 400, CP(",\"echo\":\"yes\"")}, {1, 422, CH(",\"tools\":[]")},
    {1, 422, CH(",\"functions\":[{}]")},
    /* stream, stop, logprobs, kwargs, return_token_ids */
    {1, 400, CH(",\"stream\":\"true\"")}, {1, 400, CH(",\"stream\":1")},
    {1, 400, CH(",\"stream_options\":true")},
    {1, 400, CH(",\"stream_options\":{\"include_usage\":\"yes\"}")}, {1, 400, CH(",\"stop\":5")},
    {1, 400, CH(",\"stop\":[1]")}, {1, 400, CH(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]")},
    {1, 400, CH(",\"stop\":\"\"")}, {1, 400, CH(",\"stop\":{}")}, {1, 400, CH(",\"logprobs\":5")},
    {1, 400, CH(",\"top_logprobs\":3")}, {1, 400, CH(",\"logprobs\":true,\"top_logprobs\":21")},
    {1, 400, CH(",\"logprobs\":true,\"top_logprobs\":-1")}, {0, 400, CP(",\"logprobs\":6")},
    {0, 400, CP(",\"logprobs\":true")}, {1, 400, CH(",\"chat_template_kwargs\":[]")},
    {1, 400, CH(",\"chat_template_kwargs\":{\"enable_thinking\":\"no\"}")},
    {1, 400, CH(",\"return_token_ids\":\"yes\"")}, {0, 400, CP(",\"return_token_ids\":1")},
};
/* clang-format on */
#define N_BAD_CASES (sizeof bad_cases / sizeof bad_cases[0])

#undef M
#undef MSG
#undef CH
#undef CP
#endif
