/* tests/fuzz/fuzz_tokenizer.c: arbitrary bytes through the tiny-a vocabulary. Byte 0 picks
 * parse_special; the rest is the text. Must not crash, and decode(encode(x)) == x for every
 * input (specials decode back to their text; invalid UTF-8 survives as raw bytes). For valid
 * UTF-8 the streaming decoder must also reproduce x exactly. Fixtures: $BT_FIXTURES or
 * ../shared/fixtures or /work/shared/fixtures. */
#include "engine/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tok_t *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *env = getenv("BT_FIXTURES");
    const char *dirs[] = {env, "../shared/fixtures", "/work/shared/fixtures"};
    for (size_t i = 0; i < 3 && !tok; i++) {
        char p[4096];
        if (!dirs[i]) continue;
        snprintf(p, sizeof p, "%s/tiny-a/gguf/model-f32.gguf", dirs[i]);
        if (access(p, R_OK) == 0 && tokenizer_open(&tok, p, NULL) < 0) tok = NULL;
    }
    if (!tok) {
        fprintf(stderr, "fuzz_tokenizer: tiny-a fixture not found (set BT_FIXTURES)\n");
        abort();
    }
    return 0;
}

static int valid_utf8(const uint8_t *s, size_t n) {
    /* the stream decoder's own notion is what is under test, so check independently here */
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t v, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, v = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, v = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, v = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            v = (v << 6) | (s[i + k] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int parse_special = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(tok, text, len, parse_special, &ids, &n, NULL) < 0) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tokenizer_n_real(tok)) abort();
    char *out;
    size_t ol;
    if (tokenizer_decode(tok, ids, n, 1, &out, &ol, NULL) < 0) abort();
    if (ol != len || memcmp(out, text, len)) abort();
    free(out);
    if (valid_utf8((const uint8_t *)text, len)) {
        tok_stream_t *st;
        if (tok_stream_new(&st, tok, 1, NULL) < 0) abort();
        size_t pos = 0;
        for (size_t i = 0; i < n; i++) {
            const char *p;
            size_t pl;
            if (tok_stream_push(st, ids[i], &p, &pl, NULL) < 0 || pos + pl > len ||
                memcmp(text + pos, p, pl))
                abort();
            pos += pl;
        }
        const char *p;
        size_t pl;
        tok_stream_flush(st, &p, &pl);
        if (pl || pos != len) abort();
        tok_stream_free(st);
    }
    free(ids);
    return 0;
}
