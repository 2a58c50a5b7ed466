/* engine/tokenizer.h: byte-level BPE (GPT-2 style) for the Qwen family (spec qwen35.md §13).
 *
 * Sources: GGUF metadata (tokenizer.ggml.model "gpt2", .pre, .tokens, .token_type, .merges,
 * eos/pad/bos ids, add_bos_token, tokenizer.chat_template) or a Hugging Face tokenizer.json
 * (model.vocab, model.merges as "a b" strings or [a, b] pairs, added_tokens; eos/pad/bos and the
 * chat template from tokenizer_config.json beside it when present).
 * Pre-tokenizers: "qwen35" (the Qwen3.5 regex) and "qwen2" (Qwen2/Qwen3); any other
 * tokenizer.ggml.pre, or an HF Split regex that is not one of those two, is rejected with
 * BT_EUNSUPPORTED rather than silently tokenized with the wrong regex.
 *
 * Encode follows llama.cpp: special tokens are split out first (longest text first, all
 * occurrences; control tokens only when parse_special, user-defined tokens always), no NFC
 * normalisation, no BOS. Invalid UTF-8 input is accepted: bytes the regex cannot match become
 * their own pieces, so decode(encode(x)) == x for any bytes without special-token text.
 * Decode concatenates each token's raw bytes (control tokens: their text, or nothing when
 * render_special is off; unused/padding ids: nothing).
 *
 * A tok_t is read-only after opening: encode/decode may run concurrently from several threads.
 * A tok_stream is per sequence (one thread at a time). */
#ifndef BT_ENGINE_TOKENIZER_H
#define BT_ENGINE_TOKENIZER_H
#include "common/err.h"
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok_t;

/* GGUF token types (tokenizer.ggml.token_type); HF vocab entries are NORMAL, HF added tokens
 * CONTROL when "special", else USER_DEFINED; ids nobody names are UNUSED. */
enum tok_type {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER_DEFINED = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6
};

enum tok_pre { TOK_PRE_QWEN35 = 0, TOK_PRE_QWEN2 = 1 };

/* From a parsed GGUF. BT_ENOKEY (tokenizer keys absent), BT_EUNSUPPORTED (model not "gpt2",
 * unknown pre), BT_EFORMAT (inconsistent arrays, a missing byte token), -ENOMEM. */
int tokenizer_open_gguf(tok_t **out, const gguf_t *g, bt_err *e);
/* From an HF tokenizer.json path. Same errors plus negated errno on I/O. */
int tokenizer_open_json(tok_t **out, const char *path, bt_err *e);
/* path is a GGUF file, an HF checkpoint directory (uses DIR/tokenizer.json) or a *.json file. */
int tokenizer_open(tok_t **out, const char *path, bt_err *e);
void tokenizer_free(tok_t *t); /* NULL ok */

/* Encodes len bytes of text (any bytes; need not be NUL-terminated). *ids is malloc'ed
 * (caller frees with free(); may be NULL when *n == 0). -ENOMEM only. */
int tokenizer_encode(const tok_t *t, const char *text, size_t len, int parse_special, int32_t **ids,
                     size_t *n, bt_err *e);
/* Decodes ids into a malloc'ed NUL-terminated buffer (caller frees); *len excludes the NUL.
 * BT_EINVAL for an id outside [0, vocab size). */
int tokenizer_decode(const tok_t *t, const int32_t *ids, size_t n, int render_special, char **out,
                     size_t *len, bt_err *e);
/* The raw bytes token id decodes to (control/user-defined: its text; unused: empty).
 * Borrowed until tokenizer_free. NULL for an id out of range. */
const char *tokenizer_token_bytes(const tok_t *t, int32_t id, size_t *len);
/* The token's text as stored in the vocabulary (byte-level form for normal tokens). */
const char *tokenizer_token_text(const tok_t *t, int32_t id);
enum tok_type tokenizer_token_type(const tok_t *t, int32_t id); /* TOK_UNDEFINED if out of range */

int32_t tokenizer_n_vocab(const tok_t *t); /* slots, including padding */
/* Ids >= this are padding/unused placeholders: samplers must never emit them. */
int32_t tokenizer_n_real(const tok_t *t);
int32_t tokenizer_eos(const tok_t *t); /* -1 if none */
int32_t tokenizer_bos(const tok_t *t); /* -1 if none */
int32_t tokenizer_pad(const tok_t *t); /* -1 if none */
int tokenizer_add_bos(const tok_t *t);
enum tok_pre tokenizer_pre(const tok_t *t);
/* End-of-generation ids: eos, <|im_end|>, <|endoftext|>, <|fim_pad|>, <|repo_name|>,
 * <|file_sep|> (those present). *n gets the count; borrowed array. */
const int32_t *tokenizer_eog_ids(const tok_t *t, size_t *n);
int tokenizer_is_eog(const tok_t *t, int32_t id);
/* Id of the token whose stored text is exactly text (specials first, then normal tokens by
 * their decoded bytes); -1 if none. */
int32_t tokenizer_find(const tok_t *t, const char *text);
/* The chat template carried with the vocabulary (GGUF tokenizer.chat_template or
 * tokenizer_config.json "chat_template"); NULL if none. Borrowed. */
const char *tokenizer_chat_template(const tok_t *t);

/* Streaming decode for SSE: token bytes go in, only complete UTF-8 comes out. An incomplete
 * multi-byte sequence at the end is held back until the next token completes it; bytes that
 * can never form valid UTF-8 come out as U+FFFD. */
typedef struct tok_stream tok_stream_t;
int tok_stream_new(tok_stream_t **out, const tok_t *t, int render_special, bt_err *e);
void tok_stream_free(tok_stream_t *s); /* NULL ok */
/* Appends token id; *text (borrowed until the next call) gets the newly complete text.
 * BT_EINVAL for an id out of range. */
int tok_stream_push(tok_stream_t *s, int32_t id, const char **text, size_t *len, bt_err *e);
/* Same for raw bytes (used by tests and by callers that already have bytes). */
int tok_stream_push_bytes(tok_stream_t *s, const char *bytes, size_t n, const char **text,
                          size_t *len, bt_err *e);
/* End of stream: whatever is held back, as U+FFFD replacements. Resets the stream. */
void tok_stream_flush(tok_stream_t *s, const char **text, size_t *len);

#endif
