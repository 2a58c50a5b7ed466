/* engine/chat.c: the Qwen3 and Qwen3.5 chat templates in C. Each branch below mirrors one
 * Jinja block of the template (Qwen3.5: llama.cpp models/templates/Qwen3.5-4B.jinja; Qwen3:
 * the fixtures' tokenizer_config.json); the Jinja string methods used there (strip, lstrip,
 * rstrip, split, trim) are reproduced by the helpers at the top. */
#include "engine/chat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sb {
    char *s;
    size_t n, cap;
    int oom;
};

static void sb_add(struct sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p, b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(struct sb *b, const char *s) {
    sb_add(b, s, strlen(s));
}

/* A string slice: Jinja string operations never need to allocate. */
struct sv {
    const char *p;
    size_t n;
};
static struct sv sv_of(const char *s) {
    return (struct sv){s ? s : "", s ? strlen(s) : 0};
}
static void sb_sv(struct sb *b, struct sv v) {
    sb_add(b, v.p, v.n);
}

/* Python str.strip() whitespace, in UTF-8: returns the byte length of the whitespace character
 * at p (n bytes left), or 0. */
static size_t ws_len(const char *p, size_t n) {
    unsigned char c = (unsigned char)p[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (n >= 2 && c == 0xC2 && ((unsigned char)p[1] == 0x85 || (unsigned char)p[1] == 0xA0))
        return 2;
    if (n >= 3 && c == 0xE1 && (unsigned char)p[1] == 0x9A && (unsigned char)p[2] == 0x80)
        return 3; /* U+1680 */
    if (n >= 3 && c == 0xE2 && (unsigned char)p[1] == 0x80) {
        unsigned char d = (unsigned char)p[2];
        if (d <= 0x8A || d == 0xA8 || d == 0xA9 || d == 0xAF)
            return 3; /* U+2000..200A, U+2028, U+2029, U+202F */
    }
    if (n >= 3 && c == 0xE2 && (unsigned char)p[1] == 0x81 && (unsigned char)p[2] == 0x9F)
        return 3; /* U+205F */
    if (n >= 3 && c == 0xE3 && (unsigned char)p[1] == 0x80 && (unsigned char)p[2] == 0x80)
        return 3; /* U+3000 */
    return 0;
}
/* Jinja |trim (Python strip()). */
static struct sv sv_trim(struct sv v) {
    size_t k;
    while (v.n && (k = ws_len(v.p, v.n)))
        v.p += k, v.n -= k;
    /* from the right: try 3-, 2- then 1-byte whitespace characters */
    for (;;) {
        size_t cut = 0;
        for (size_t w = 3; w >= 1 && !cut; w--)
            if (v.n >= w && ws_len(v.p + v.n - w, w) == w) cut = w;
        if (!cut) break;
        v.n -= cut;
    }
    return v;
}
static struct sv sv_lstrip_nl(struct sv v) {
    while (v.n && v.p[0] == '\n')
        v.p++, v.n--;
    return v;
}
static struct sv sv_rstrip_nl(struct sv v) {
    while (v.n && v.p[v.n - 1] == '\n')
        v.n--;
    return v;
}
static const char *sv_find(struct sv v, const char *needle) {
    return memmem(v.p, v.n, needle, strlen(needle));
}
static const char *sv_rfind(struct sv v, const char *needle) {
    size_t k = strlen(needle);
    const char *last = NULL;
    for (const char *p = v.p; (p = memmem(p, (size_t)(v.p + v.n - p), needle, k)); p++)
        last = p;
    return last;
}
static int sv_starts(struct sv v, const char *s) {
    size_t k = strlen(s);
    return v.n >= k && !memcmp(v.p, s, k);
}
static int sv_ends(struct sv v, const char *s) {
    size_t k = strlen(s);
    return v.n >= k && !memcmp(v.p + v.n - k, s, k);
}

/* content.split('</think>')[-1].lstrip('\n') and
 * content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n'). */
static void split_think(struct sv content, struct sv *answer, struct sv *reasoning) {
    const char *first = sv_find(content, "</think>"), *last = sv_rfind(content, "</think>");
    struct sv after = {last + 8, (size_t)(content.p + content.n - last - 8)};
    *answer = sv_lstrip_nl(after);
    struct sv before = sv_rstrip_nl((struct sv){content.p, (size_t)(first - content.p)});
    const char *open = sv_rfind(before, "<think>");
    if (open) before = (struct sv){open + 7, (size_t)(before.p + before.n - open - 7)};
    *reasoning = sv_lstrip_nl(before);
}

/* ---- JSON like Python's json.dumps(ensure_ascii=False) ---- */

static void json_number(struct sb *b, double v) {
    char buf[64];
    if (isfinite(v) && v == floor(v) && fabs(v) < 1e17) {
        snprintf(buf, sizeof buf, "%.0f", v);
    } else if (!isfinite(v)) {
        snprintf(buf, sizeof buf, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
    } else {
        /* shortest text that reads back as the same double, like Python's repr */
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if (strtod(buf, NULL) == v) break;
        }
    }
    sb_str(b, buf);
}

static void json_string(struct sb *b, const char *s) {
    sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"':
            sb_add(b, "\\\"", 2);
            break;
        case '\\':
            sb_add(b, "\\\\", 2);
            break;
        case '\n':
            sb_add(b, "\\n", 2);
            break;
        case '\r':
            sb_add(b, "\\r", 2);
            break;
        case '\t':
            sb_add(b, "\\t", 2);
            break;
        case '\b':
            sb_add(b, "\\b", 2);
            break;
        case '\f':
            sb_add(b, "\\f", 2);
            break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                sb_str(b, esc);
            } else {
                sb_add(b, (const char *)p, 1);
            }
        }
    }
    sb_add(b, "\"", 1);
}

static void json_dump(struct sb *b, const cJSON *j) {
    if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        int obj = cJSON_IsObject(j);
        sb_add(b, obj ? "{" : "[", 1);
        const cJSON *it;
        int first = 1;
        cJSON_ArrayForEach(it, j) {
            if (!first) sb_add(b, ", ", 2);
            first = 0;
            if (obj) {
                json_string(b, it->string);
                sb_add(b, ": ", 2);
            }
            json_dump(b, it);
        }
        sb_add(b, obj ? "}" : "]", 1);
    } else if (cJSON_IsString(j)) {
        json_string(b, j->valuestring);
    } else if (cJSON_IsNumber(j)) {
        json_number(b, j->valuedouble);
    } else if (cJSON_IsTrue(j)) {
        sb_str(b, "true");
    } else if (cJSON_IsFalse(j)) {
        sb_str(b, "false");
    } else {
        sb_str(b, "null");
    }
}

/* Jinja `value | string` for a JSON scalar: Python str(). */
static void py_str(struct sb *b, const cJSON *j) {
    if (cJSON_IsString(j))
        sb_str(b, j->valuestring);
    else if (cJSON_IsNumber(j))
        json_number(b, j->valuedouble);
    else if (cJSON_IsTrue(j))
        sb_str(b, "True");
    else if (cJSON_IsFalse(j))
        sb_str(b, "False");
    else
        sb_str(b, "None");
}

/* ---- templates ---- */

static int is_role(const struct chat_msg *m, const char *r) {
    return m->role && !strcmp(m->role, r);
}

enum chat_flavour chat_detect(const char *t) {
    if (!t) return CHAT_QWEN35;
    if (strstr(t, "<function=") || strstr(t, "<parameter=")) return CHAT_QWEN35;
    if (strstr(t, "<|im_start|>")) return CHAT_QWEN3;
    return CHAT_QWEN35;
}

static const char QWEN3_TOOLS_HEAD[] =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
static const char QWEN3_TOOLS_TAIL[] =
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";
static const char QWEN35_TOOLS_HEAD[] =
    "# Tools\n\nYou have access to the following functions:\n\n<tools>";
static const char QWEN35_TOOLS_TAIL[] =
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO "
    "suffix:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\n"
    "value_1\n</parameter>\n<parameter=example_parameter_2>\nThis is the value for the second "
    "parameter\nthat can span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n"
    "<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified format: an inner "
    "<function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n- You may provide optional reasoning for your "
    "function call in natural language BEFORE the function call, but NOT after\n- If there is "
    "no function call available, answer the question like normal with your current knowledge "
    "and do not tell the user about function calls\n</IMPORTANT>";

static int is_tool_response(struct sv c) {
    return sv_starts(c, "<tool_response>") && sv_ends(c, "</tool_response>");
}

static void tools_list(struct sb *b, const cJSON *tools) {
    const cJSON *it;
    cJSON_ArrayForEach(it, tools) {
        sb_add(b, "\n", 1);
        json_dump(b, it);
    }
}

static int render_qwen3(struct sb *b, const struct chat_msg *m, size_t n, const cJSON *tools,
                        const struct chat_opts *o) {
    int sys0 = is_role(&m[0], "system");
    if (tools) {
        sb_str(b, "<|im_start|>system\n");
        if (sys0) {
            sb_sv(b, sv_of(m[0].content));
            sb_str(b, "\n\n");
        }
        sb_str(b, QWEN3_TOOLS_HEAD);
        tools_list(b, tools);
        sb_str(b, QWEN3_TOOLS_TAIL);
    } else if (sys0) {
        sb_str(b, "<|im_start|>system\n");
        sb_sv(b, sv_of(m[0].content));
        sb_str(b, "<|im_end|>\n");
    }
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        if (is_role(&m[k], "user") && !is_tool_response(sv_of(m[k].content))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct sv content = sv_of(m[i].content);
        if (is_role(&m[i], "user") || (is_role(&m[i], "system") && i > 0)) {
            sb_str(b, "<|im_start|>");
            sb_str(b, m[i].role);
            sb_str(b, "\n");
            sb_sv(b, content);
            sb_str(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "assistant")) {
            struct sv reasoning = {"", 0};
            if (m[i].reasoning_content)
                reasoning = sv_of(m[i].reasoning_content);
            else if (sv_find(content, "</think>"))
                split_think(content, &content, &reasoning);
            sb_str(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || reasoning.n)) {
                sb_str(b, "<think>\n");
                sb_sv(b, sv_rstrip_nl(sv_lstrip_nl(reasoning)));
                sb_str(b, "\n</think>\n\n");
                sb_sv(b, sv_lstrip_nl(content));
            } else {
                sb_sv(b, content);
            }
            for (size_t c = 0; c < m[i].n_tool_calls; c++) {
                const struct chat_tool_call *tc = &m[i].tool_calls[c];
                if (c > 0 || content.n) sb_str(b, "\n");
                sb_str(b, "<tool_call>\n{\"name\": \"");
                sb_str(b, tc->name ? tc->name : "");
                sb_str(b, "\", \"arguments\": ");
                sb_str(b, tc->arguments ? tc->arguments : "{}");
                sb_str(b, "}\n</tool_call>");
            }
            sb_str(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool")) sb_str(b, "<|im_start|>user");
            sb_str(b, "\n<tool_response>\n");
            sb_sv(b, content);
            sb_str(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool")) sb_str(b, "<|im_end|>\n");
        }
        /* the Qwen3 template silently skips any other role, and a leading system message */
    }
    if (o->add_generation_prompt) {
        sb_str(b, "<|im_start|>assistant\n");
        if (!o->enable_thinking) sb_str(b, "<think>\n\n</think>\n\n");
    }
    return 0;
}

/* <parameter=KEY>\nVALUE\n</parameter>\n per argument (Qwen3.5). */
static int qwen35_params(struct sb *b, const char *arguments, bt_err *e) {
    cJSON *args = cJSON_Parse(arguments);
    if (!cJSON_IsObject(args)) {
        cJSON_Delete(args);
        return bt_fail(e, BT_EINVAL, "chat: tool call arguments are not a JSON object: %.60s",
                       arguments);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, args) {
        sb_str(b, "<parameter=");
        sb_str(b, it->string);
        sb_str(b, ">\n");
        if (cJSON_IsObject(it) || cJSON_IsArray(it))
            json_dump(b, it);
        else
            py_str(b, it);
        sb_str(b, "\n</parameter>\n");
    }
    cJSON_Delete(args);
    return 0;
}

static int render_qwen35(struct sb *b, const struct chat_msg *m, size_t n, const cJSON *tools,
                         const struct chat_opts *o, bt_err *e) {
    int sys0 = is_role(&m[0], "system");
    if (tools) {
        sb_str(b, "<|im_start|>system\n");
        sb_str(b, QWEN35_TOOLS_HEAD);
        tools_list(b, tools);
        sb_str(b, QWEN35_TOOLS_TAIL);
        if (sys0) {
            struct sv c = sv_trim(sv_of(m[0].content));
            if (c.n) {
                sb_str(b, "\n\n");
                sb_sv(b, c);
            }
        }
        sb_str(b, "<|im_end|>\n");
    } else if (sys0) {
        sb_str(b, "<|im_start|>system\n");
        sb_sv(b, sv_trim(sv_of(m[0].content)));
        sb_str(b, "<|im_end|>\n");
    }
    size_t last_query = 0;
    int found = 0;
    for (size_t k = n; k-- > 0 && !found;) {
        if (is_role(&m[k], "user") && !is_tool_response(sv_trim(sv_of(m[k].content))))
            last_query = k, found = 1;
    }
    if (!found) return bt_fail(e, BT_EINVAL, "chat: no user query found in messages");
    for (size_t i = 0; i < n; i++) {
        struct sv content = sv_trim(sv_of(m[i].content));
        if (is_role(&m[i], "system")) {
            if (i > 0)
                return bt_fail(e, BT_EINVAL, "chat: system message at %zu: must be first", i);
        } else if (is_role(&m[i], "user")) {
            sb_str(b, "<|im_start|>user\n");
            sb_sv(b, content);
            sb_str(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "assistant")) {
            struct sv reasoning = {"", 0};
            if (m[i].reasoning_content)
                reasoning = sv_of(m[i].reasoning_content);
            else if (sv_find(content, "</think>"))
                split_think(content, &content, &reasoning);
            reasoning = sv_trim(reasoning);
            sb_str(b, "<|im_start|>assistant\n");
            if (i > last_query) {
                sb_str(b, "<think>\n");
                sb_sv(b, reasoning);
                sb_str(b, "\n</think>\n\n");
            }
            sb_sv(b, content);
            for (size_t c = 0; c < m[i].n_tool_calls; c++) {
                const struct chat_tool_call *tc = &m[i].tool_calls[c];
                if (c == 0)
                    sb_str(b, sv_trim(content).n ? "\n\n<tool_call>\n<function="
                                                 : "<tool_call>\n<function=");
                else
                    sb_str(b, "\n<tool_call>\n<function=");
                sb_str(b, tc->name ? tc->name : "");
                sb_str(b, ">\n");
                if (tc->arguments) {
                    int rc = qwen35_params(b, tc->arguments, e);
                    if (rc < 0) return rc;
                }
                sb_str(b, "</function>\n</tool_call>");
            }
            sb_str(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "tool")) {
            /* Jinja: `loop.previtem and loop.previtem.role != "tool"`: no opener for a leading
             * tool message, exactly as the template does */
            if (i > 0 && !is_role(&m[i - 1], "tool")) sb_str(b, "<|im_start|>user");
            sb_str(b, "\n<tool_response>\n");
            sb_sv(b, content);
            sb_str(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool")) sb_str(b, "<|im_end|>\n");
        } else {
            return bt_fail(e, BT_EINVAL, "chat: message %zu: unexpected role '%s'", i,
                           m[i].role ? m[i].role : "(null)");
        }
    }
    if (o->add_generation_prompt) {
        sb_str(b, "<|im_start|>assistant\n");
        sb_str(b, o->enable_thinking ? "<think>\n" : "<think>\n\n</think>\n\n");
    }
    return 0;
}

int chat_render(const struct chat_msg *msgs, size_t n, const struct chat_opts *o, char **out,
                size_t *len, bt_err *e) {
    *out = NULL;
    if (len) *len = 0;
    if (!n) return bt_fail(e, BT_EINVAL, "chat: no messages provided");
    cJSON *tools = NULL;
    if (o->tools_json) {
        tools = cJSON_Parse(o->tools_json);
        if (!cJSON_IsArray(tools)) {
            cJSON_Delete(tools);
            return bt_fail(e, BT_EINVAL, "chat: tools is not a JSON array");
        }
        if (cJSON_GetArraySize(tools) == 0) { /* `if tools`: an empty list is falsy */
            cJSON_Delete(tools);
            tools = NULL;
        }
    }
    struct sb b = {0};
    int rc = o->flavour == CHAT_QWEN3 ? render_qwen3(&b, msgs, n, tools, o)
                                      : render_qwen35(&b, msgs, n, tools, o, e);
    cJSON_Delete(tools);
    if (rc == 0 && (b.oom || !b.s)) rc = b.oom ? bt_fail(e, -ENOMEM, "chat: out of memory") : 0;
    if (rc < 0) {
        free(b.s);
        return rc;
    }
    if (!b.s) { /* nothing rendered (possible in the Qwen3 flavour) */
        b.s = calloc(1, 1);
        if (!b.s) return bt_fail(e, -ENOMEM, "chat: out of memory");
    }
    *out = b.s;
    if (len) *len = b.n;
    return 0;
}
