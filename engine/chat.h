/* engine/chat.h: renders a chat to prompt text the way the model's Jinja chat template would
 * (spec qwen35.md §14), with the template's logic written in C, not interpreted.
 *
 * Two flavours of ChatML:
 *  CHAT_QWEN35  the Qwen3.5 template: contents trimmed, reasoning of the current agentic turn
 *               kept in <think> blocks, XML tool calls (<tool_call>\n<function=NAME>\n
 *               <parameter=KEY>\nVALUE\n</parameter>\n...), generation prompt "<think>\n"
 *               (thinking on) or "<think>\n\n</think>\n\n" (off).
 *  CHAT_QWEN3   the Qwen3 template (used by the test fixtures): contents verbatim, JSON tool
 *               calls, generation prompt empty (thinking on) or "<think>\n\n</think>\n\n" (off).
 * JSON inside the prompt (tools, object/array arguments) is written like Python's
 * json.dumps(ensure_ascii=False): ", " and ": " separators, keys in input order.
 * Pure functions; thread-safe. */
#ifndef BT_ENGINE_CHAT_H
#define BT_ENGINE_CHAT_H
#include "common/err.h"

#include <stddef.h>

enum chat_flavour { CHAT_QWEN35 = 0, CHAT_QWEN3 = 1 };

struct chat_tool_call {
    const char *name;
    const char *arguments; /* JSON text; CHAT_QWEN35 requires an object; NULL = none */
};

struct chat_msg {
    const char *role;              /* "system" "user" "assistant" "tool" */
    const char *content;           /* NULL = empty */
    const char *reasoning_content; /* assistant only; NULL = split it out of content */
    const struct chat_tool_call *tool_calls;
    size_t n_tool_calls;
};

struct chat_opts {
    enum chat_flavour flavour;
    int add_generation_prompt;
    int enable_thinking;    /* 1 on, 0 off: always explicit (template defaults differ by size) */
    const char *tools_json; /* JSON array of tool definitions, or NULL */
};

/* Picks the flavour from a model's chat_template text: Qwen3.5's XML tool-call format ->
 * CHAT_QWEN35, other ChatML -> CHAT_QWEN3. NULL or unrecognised -> CHAT_QWEN35 (the model this
 * server is for). */
enum chat_flavour chat_detect(const char *chat_template);

/* Renders msgs into a malloc'ed NUL-terminated string (caller frees with free()).
 * BT_EINVAL for what the template itself rejects: no messages; (QWEN35) a system message that
 * is not first, an unknown role, no user query, tool-call arguments that are not a JSON object;
 * tools_json that is not a JSON array. -ENOMEM. */
int chat_render(const struct chat_msg *msgs, size_t n, const struct chat_opts *o, char **out,
                size_t *len, bt_err *e);

#endif
