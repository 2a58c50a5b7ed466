/* tests/test_chat.c: engine/chat against the fixture prompt (Qwen3 template) and the Qwen3.5
 * template's behaviour as spec §14 describes it. Expected strings are written out by hand from
 * the templates, not produced by the code under test. */
#include "engine/chat.h"
#include "engine/tokenizer.h"
#include "tests/fixtures.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *render(const struct chat_msg *m, size_t n, enum chat_flavour f, int gen, int think,
                    const char *tools) {
    struct chat_opts o = {
        .flavour = f, .add_generation_prompt = gen, .enable_thinking = think, .tools_json = tools};
    char *out;
    size_t len;
    bt_err e = {0};
    int rc = chat_render(m, n, &o, &out, &len, &e);
    cr_assert_eq(rc, 0, "render: %s", bt_errmsg(&e, rc));
    cr_assert_eq(len, strlen(out));
    return out;
}

static void expect_render(const struct chat_msg *m, size_t n, enum chat_flavour f, int gen,
                          int think, const char *tools, const char *want) {
    char *got = render(m, n, f, gen, think, tools);
    cr_expect_str_eq(got, want);
    free(got);
}

Test(chat, fixture_chat_prompt_byte_exact) {
    FILE *f = fopen(fixture_path("tiny-a/prompts/chat.txt"), "rb");
    cr_assert(f);
    char want[4096];
    size_t n = fread(want, 1, sizeof want - 1, f);
    fclose(f);
    want[n] = 0;
    struct chat_msg m[] = {
        {.role = "system", .content = "You are a helpful assistant."},
        {.role = "user", .content = "Write a short poem about the sea and the wind."},
    };
    /* the fixture's template is Qwen3's: thinking on adds nothing after assistant\n */
    expect_render(m, 2, CHAT_QWEN3, 1, 1, NULL, want);
}

Test(chat, detects_flavour_from_templates) {
    tok_t *t;
    cr_assert_eq(tokenizer_open(&t, fixture_path("tiny-a/gguf/model-f32.gguf"), NULL), 0);
    cr_expect_eq(chat_detect(tokenizer_chat_template(t)), CHAT_QWEN3);
    tokenizer_free(t);
    cr_expect_eq(chat_detect("{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}"
                             "<|im_start|>"),
                 CHAT_QWEN35);
    cr_expect_eq(chat_detect(NULL), CHAT_QWEN35);
}

/* strings.json's chat_prompt is the thinking-off rendering; both flavours agree on it. */
Test(chat, thinking_off_matches_fixture_string) {
    const char *want = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                       "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                       "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    struct chat_msg m[] = {
        {.role = "system", .content = "You are a helpful assistant."},
        {.role = "user", .content = "What is the capital of France?"},
    };
    expect_render(m, 2, CHAT_QWEN3, 1, 0, NULL, want);
    expect_render(m, 2, CHAT_QWEN35, 1, 0, NULL, want);
}

Test(chat, qwen35_thinking_on_and_trim) {
    struct chat_msg m[] = {
        {.role = "system", .content = "  Be brief.\n"},
        {.role = "user", .content = "\n Hi there \t"},
    };
    expect_render(m, 2, CHAT_QWEN35, 1, 1, NULL,
                  "<|im_start|>system\nBe brief.<|im_end|>\n"
                  "<|im_start|>user\nHi there<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n");
    /* the Qwen3 flavour keeps contents verbatim */
    expect_render(m, 2, CHAT_QWEN3, 0, 1, NULL,
                  "<|im_start|>system\n  Be brief.\n<|im_end|>\n"
                  "<|im_start|>user\n\n Hi there \t<|im_end|>\n");
}

Test(chat, qwen35_multi_turn_drops_old_reasoning) {
    struct chat_msg m[] = {
        {.role = "user", .content = "2+2?"},
        {.role = "assistant", .content = "<think>\nadd them\n</think>\n\n4"},
        {.role = "user", .content = "and 3+3?"},
        {.role = "assistant", .content = "6", .reasoning_content = " easy \n"},
    };
    /* the first answer precedes the last user query: reasoning dropped; the last assistant
     * turn is after it: kept, trimmed */
    expect_render(m, 4, CHAT_QWEN35, 0, 1, NULL,
                  "<|im_start|>user\n2+2?<|im_end|>\n"
                  "<|im_start|>assistant\n4<|im_end|>\n"
                  "<|im_start|>user\nand 3+3?<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\neasy\n</think>\n\n6<|im_end|>\n");
    /* Qwen3: same structure, reasoning only stripped of newlines */
    expect_render(m, 4, CHAT_QWEN3, 0, 1, NULL,
                  "<|im_start|>user\n2+2?<|im_end|>\n"
                  "<|im_start|>assistant\n4<|im_end|>\n"
                  "<|im_start|>user\nand 3+3?<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\n easy \n</think>\n\n6<|im_end|>\n");
}

Test(chat, qwen35_tool_calls_and_results) {
    struct chat_tool_call calls[] = {
        {.name = "get_weather",
         .arguments = "{\"city\": \"Paris\", \"days\": 3, "
                      "\"opts\": {\"unit\":\"C\",\"x\":[1,2.5]}, "
                      "\"ok\": true}"},
        {.name = "get_time", .arguments = "{}"},
    };
    struct chat_msg m[] = {
        {.role = "system", .content = "You help."},
        {.role = "user", .content = "Weather in Paris?"},
        {.role = "assistant", .content = "Let me check.", .tool_calls = calls, .n_tool_calls = 2},
        {.role = "tool", .content = "{\"temp\": 21}"},
        {.role = "tool", .content = " 12:00 "},
    };
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                        "\"parameters\":{\"type\":\"object\",\"required\":[\"city\"]}}}]";
    char *got = render(m, 5, CHAT_QWEN35, 1, 0, tools);
    const char *want_tail =
        "</IMPORTANT>\n\nYou help.<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nLet me check.\n\n"
        "<tool_call>\n<function=get_weather>\n"
        "<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n"
        "<parameter=opts>\n{\"unit\": \"C\", \"x\": [1, 2.5]}\n</parameter>\n"
        "<parameter=ok>\nTrue\n</parameter>\n"
        "</function>\n</tool_call>\n"
        "<tool_call>\n<function=get_time>\n</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n"
        "<tool_response>\n12:00\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    const char *want_head =
        "<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
        "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
        "{\"type\": \"object\", \"required\": [\"city\"]}}}\n</tools>\n\nIf you choose to call a "
        "function ONLY reply in the following format with NO suffix:\n\n<tool_call>\n";
    cr_expect(!strncmp(got, want_head, strlen(want_head)), "head:\n%s", got);
    size_t gl = strlen(got), tl = strlen(want_tail);
    cr_expect(gl > tl && !strcmp(got + gl - tl, want_tail), "tail:\n%s", got);
    free(got);
}

Test(chat, qwen3_tool_calls_json_format) {
    struct chat_tool_call calls[] = {{.name = "f", .arguments = "{\"a\": 1}"}};
    struct chat_msg m[] = {
        {.role = "user", .content = "go"},
        {.role = "assistant", .content = "", .tool_calls = calls, .n_tool_calls = 1},
        {.role = "tool", .content = "done"},
    };
    expect_render(m, 3, CHAT_QWEN3, 1, 1, NULL,
                  "<|im_start|>user\ngo<|im_end|>\n"
                  "<|im_start|>assistant\n"
                  "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>"
                  "<|im_end|>\n"
                  "<|im_start|>user\n<tool_response>\ndone\n</tool_response><|im_end|>\n"
                  "<|im_start|>assistant\n");
}

/* A user turn holding only a tool response is not "the last real query". */
Test(chat, qwen35_tool_response_user_is_not_a_query) {
    struct chat_msg m[] = {
        {.role = "user", .content = "q"},
        {.role = "assistant", .content = "a1", .reasoning_content = "r1"},
        {.role = "user", .content = "<tool_response>\nx\n</tool_response>"},
        {.role = "assistant", .content = "a2", .reasoning_content = "r2"},
    };
    expect_render(m, 4, CHAT_QWEN35, 0, 1, NULL,
                  "<|im_start|>user\nq<|im_end|>\n"
                  "<|im_start|>assistant\n<think>\nr1\n</think>\n\na1<|im_end|>\n"
                  "<|im_start|>user\n<tool_response>\nx\n</tool_response><|im_end|>\n"
                  "<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n");
}

Test(chat, qwen35_rejections) {
    struct chat_opts o = {.flavour = CHAT_QWEN35, .add_generation_prompt = 1};
    char *out;
    bt_err e = {0};
    struct chat_msg late_sys[] = {{.role = "user", .content = "a"},
                                  {.role = "system", .content = "b"}};
    cr_expect_eq(chat_render(late_sys, 2, &o, &out, NULL, &e), BT_EINVAL);
    cr_expect_null(out);
    struct chat_msg no_user[] = {{.role = "system", .content = "a"}};
    cr_expect_eq(chat_render(no_user, 1, &o, &out, NULL, &e), BT_EINVAL);
    struct chat_msg bad_role[] = {{.role = "user", .content = "a"}, {.role = "bot"}};
    cr_expect_eq(chat_render(bad_role, 2, &o, &out, NULL, &e), BT_EINVAL);
    cr_expect_eq(chat_render(late_sys, 0, &o, &out, NULL, &e), BT_EINVAL);
    struct chat_tool_call bad_args[] = {{.name = "f", .arguments = "[1]"}};
    struct chat_msg m[] = {{.role = "user", .content = "a"},
                           {.role = "assistant", .tool_calls = bad_args, .n_tool_calls = 1}};
    cr_expect_eq(chat_render(m, 2, &o, &out, NULL, &e), BT_EINVAL);
    o.tools_json = "{\"not\": \"a list\"}";
    cr_expect_eq(chat_render(late_sys, 1, &o, &out, NULL, &e), BT_EINVAL);
}

/* The rendered fixture prompt tokenizes to the fixture's ids. */
Test(chat, render_then_tokenize_matches_fixture_ids) {
    tok_t *t;
    cr_assert_eq(tokenizer_open(&t, fixture_path("tiny-a/hf"), NULL), 0);
    struct chat_msg m[] = {
        {.role = "system", .content = "You are a helpful assistant."},
        {.role = "user", .content = "Write a short poem about the sea and the wind."},
    };
    char *p = render(m, 2, chat_detect(tokenizer_chat_template(t)), 1, 1, NULL);
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(t, p, strlen(p), 1, &ids, &n, NULL), 0);
    FILE *f = fopen(fixture_path("tiny-a/prompts/chat.ids"), "r");
    cr_assert(f);
    size_t k = 0;
    int v;
    while (fscanf(f, "%d", &v) == 1) {
        cr_assert_lt(k, n);
        cr_expect_eq(ids[k], v, "id %zu", k);
        k++;
    }
    fclose(f);
    cr_expect_eq(k, n);
    free(ids);
    free(p);
    tokenizer_free(t);
}
