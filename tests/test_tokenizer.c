/* tests/test_tokenizer.c: engine/tokenizer against llama.cpp's ids in the shared fixtures
 * (tiny-a and the real-sized qwen3-vocab), both load paths, decoding, streaming. */
#include "engine/tokenizer.h"
#include "tests/fixtures.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

static cJSON *load_json(const char *rel) {
    char *s = slurp(fixture_path(rel), NULL);
    cJSON *j = cJSON_Parse(s);
    free(s);
    cr_assert(j, "parse %s", rel);
    return j;
}

static tok_t *open_tok(const char *rel) {
    tok_t *t;
    bt_err e = {0};
    int rc = tokenizer_open(&t, fixture_path(rel), &e);
    cr_assert_eq(rc, 0, "open %s: %s", rel, bt_errmsg(&e, rc));
    return t;
}

static int ids_equal(const int32_t *got, size_t n, const cJSON *want) {
    if ((size_t)cJSON_GetArraySize(want) != n) return 0;
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, want) if (got[i++] != it->valueint) return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "%s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Checks every string of expected.json both ways plus the decode; returns #ids lists matched. */
static int check_expected(tok_t *t, const char *rel, int *total) {
    cJSON *exp = load_json(rel);
    int ok = 0, n_all = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, exp) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        for (int ps = 1; ps >= 0; ps--) {
            const cJSON *want =
                cJSON_GetObjectItem(c, ps ? "ids_parse_special" : "ids_no_parse_special");
            int32_t *ids;
            size_t n;
            bt_err e = {0};
            cr_assert_eq(tokenizer_encode(t, text, strlen(text), ps, &ids, &n, &e), 0);
            n_all++;
            if (ids_equal(ids, n, want)) {
                ok++;
            } else {
                char *w = cJSON_PrintUnformatted(want);
                fprintf(stderr, "%s %s parse_special=%d\n  want %s\n", rel, name, ps, w);
                print_ids("  got ", ids, n);
                free(w);
            }
            if (ps) {
                char *out;
                size_t len;
                cr_assert_eq(tokenizer_decode(t, ids, n, 1, &out, &len, &e), 0);
                const char *detok = cJSON_GetObjectItem(c, "detok_parse_special")->valuestring;
                cr_expect(len == strlen(detok) && !memcmp(out, detok, len), "%s: decode differs",
                          name);
                free(out);
            }
            free(ids);
        }
    }
    cJSON_Delete(exp);
    *total = n_all;
    return ok;
}

Test(tokenizer, tiny_a_gguf_expected) {
    tok_t *t = open_tok("tiny-a/gguf/model-f32.gguf");
    int total, ok = check_expected(t, "tiny-a/tokenizer/expected.json", &total);
    fprintf(stderr, "tiny-a gguf: %d/%d id lists match\n", ok, total);
    cr_expect_eq(ok, total);
    cr_expect_eq(tokenizer_n_vocab(t), 1792);
    cr_expect_eq(tokenizer_n_real(t), 1761);
    cr_expect_eq(tokenizer_eos(t), 1758);
    cr_expect_eq(tokenizer_pad(t), 1756);
    cr_expect_eq(tokenizer_add_bos(t), 0);
    cr_expect_eq(tokenizer_pre(t), TOK_PRE_QWEN35);
    cr_expect(tokenizer_is_eog(t, 1758));
    cr_expect(tokenizer_is_eog(t, 1756));
    cr_expect(!tokenizer_is_eog(t, 1757));
    cr_expect_eq(tokenizer_find(t, "<|im_end|>"), 1758);
    cr_expect_eq(tokenizer_find(t, "<think>"), 1759);
    cr_expect_eq(tokenizer_find(t, " the"), 279);
    cr_expect_eq(tokenizer_find(t, "<|nope|>"), -1);
    cr_expect_eq(tokenizer_token_type(t, 1757), TOK_CONTROL);
    cr_expect_eq(tokenizer_token_type(t, 1759), TOK_USER_DEFINED);
    cr_expect_eq(tokenizer_token_type(t, 1790), TOK_UNUSED);
    cr_expect(tokenizer_chat_template(t) && strstr(tokenizer_chat_template(t), "im_start"));
    tokenizer_free(t);
}

Test(tokenizer, tiny_a_json_expected) {
    tok_t *t = open_tok("tiny-a/hf/tokenizer.json");
    int total, ok = check_expected(t, "tiny-a/tokenizer/expected.json", &total);
    fprintf(stderr, "tiny-a tokenizer.json: %d/%d id lists match\n", ok, total);
    cr_expect_eq(ok, total);
    cr_expect_eq(tokenizer_n_real(t), 1761);
    cr_expect_eq(tokenizer_eos(t), 1758); /* from tokenizer_config.json */
    cr_expect_eq(tokenizer_pad(t), 1756);
    cr_expect_eq(tokenizer_bos(t), -1); /* bos_token: null */
    cr_expect(tokenizer_is_eog(t, 1756) && tokenizer_is_eog(t, 1758));
    cr_expect(tokenizer_chat_template(t) != NULL);
    tokenizer_free(t);
}

Test(tokenizer, hf_dir_equals_gguf) {
    tok_t *a = open_tok("tiny-a/gguf/model-f32.gguf");
    tok_t *b = open_tok("tiny-a/hf"); /* directory form */
    for (int32_t id = 0; id < tokenizer_n_real(a); id++) {
        size_t la, lb;
        const char *pa = tokenizer_token_bytes(a, id, &la), *pb = tokenizer_token_bytes(b, id, &lb);
        cr_assert(la == lb && !memcmp(pa, pb, la), "token %d differs", id);
        cr_assert_eq(tokenizer_token_type(a, id), tokenizer_token_type(b, id), "type of %d", id);
    }
    size_t len;
    char *story = slurp(fixture_path("tiny-a/prompts/story.txt"), &len);
    int32_t *ia, *ib;
    size_t na, nb;
    cr_assert_eq(tokenizer_encode(a, story, len, 1, &ia, &na, NULL), 0);
    cr_assert_eq(tokenizer_encode(b, story, len, 1, &ib, &nb, NULL), 0);
    cr_expect(na == nb && !memcmp(ia, ib, na * sizeof *ia));
    free(ia);
    free(ib);
    free(story);
    tokenizer_free(a);
    tokenizer_free(b);
}

static void check_prompt(tok_t *t, const char *name) {
    char rel[128];
    snprintf(rel, sizeof rel, "tiny-a/prompts/%s.txt", name);
    size_t len;
    char *text = slurp(fixture_path(rel), &len);
    snprintf(rel, sizeof rel, "tiny-a/prompts/%s.ids", name);
    char *idtxt = slurp(fixture_path(rel), NULL);
    int32_t want[4096];
    size_t nw = 0;
    for (char *p = idtxt, *end;; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        cr_assert(nw < 4096);
        want[nw++] = (int32_t)v;
    }
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(t, text, len, 1, &ids, &n, NULL), 0);
    cr_expect_eq(n, nw, "%s: %zu ids, want %zu", name, n, nw);
    cr_expect(n == nw && !memcmp(ids, want, n * sizeof *ids), "%s ids differ", name);
    char *dec;
    size_t dl;
    cr_assert_eq(tokenizer_decode(t, ids, n, 1, &dec, &dl, NULL), 0);
    cr_expect(dl == len && !memcmp(dec, text, len), "%s: decode round trip", name);
    free(dec);
    free(ids);
    free(text);
    free(idtxt);
}

Test(tokenizer, prompts) {
    tok_t *t = open_tok("tiny-a/gguf/model-q8_0.gguf");
    check_prompt(t, "chat");
    check_prompt(t, "story");
    tokenizer_free(t);
}

Test(tokenizer, qwen3_vocab_expected_and_fast) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tok_t *t = open_tok("qwen3-vocab/qwen3-vocab-qwen35.gguf");
    int total, ok = check_expected(t, "qwen3-vocab/expected.json", &total);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "qwen3-vocab: %d/%d id lists match, load+encode %.3f s\n", ok, total, secs);
    cr_expect_eq(ok, total);
    cr_expect_lt(secs, 2.0);
    cr_expect_eq(tokenizer_n_vocab(t), 151936);
    cr_expect_eq(tokenizer_n_real(t), 151669);
    cr_expect_eq(tokenizer_find(t, "<|im_end|>"), 151645);
    cr_expect(tokenizer_is_eog(t, 151643) && tokenizer_is_eog(t, 151645));
    cr_expect(tokenizer_is_eog(t, tokenizer_find(t, "<|fim_pad|>")));
    cr_expect(tokenizer_is_eog(t, tokenizer_find(t, "<|file_sep|>")));
    tokenizer_free(t);
}

/* 100 KB of mixed text (including one long letter run) must encode quickly and round-trip. */
Test(tokenizer, long_text_fast) {
    tok_t *t = open_tok("qwen3-vocab/qwen3-vocab-qwen35.gguf");
    cJSON *strs = load_json("qwen3-vocab/strings.json");
    size_t cap = 120000, len = 0;
    char *buf = malloc(cap);
    while (len < 100000) {
        const cJSON *c;
        cJSON_ArrayForEach(c, strs) {
            const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
            size_t n = strlen(s);
            if (strstr(s, "<|") || len + n > cap - 9000) continue;
            memcpy(buf + len, s, n);
            len += n;
        }
        if (len > cap - 9000) break;
    }
    memset(buf + len, 'x', 8000); /* a single 8000-letter pre-token */
    len += 8000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(t, buf, len, 0, &ids, &n, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "encode %zu bytes -> %zu ids in %.3f s\n", len, n, secs);
    cr_expect_lt(secs, 1.0);
    char *dec;
    size_t dl;
    cr_assert_eq(tokenizer_decode(t, ids, n, 1, &dec, &dl, NULL), 0);
    cr_expect(dl == len && !memcmp(dec, buf, len));
    free(dec);
    free(ids);
    free(buf);
    cJSON_Delete(strs);
    tokenizer_free(t);
}

Test(tokenizer, invalid_utf8_round_trips) {
    tok_t *t = open_tok("tiny-a/gguf/model-f32.gguf");
    const char raw[] = "ok \xff\xfe bad \xc3 x \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 end\x80";
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(t, raw, sizeof raw - 1, 0, &ids, &n, NULL), 0);
    char *dec;
    size_t dl;
    cr_assert_eq(tokenizer_decode(t, ids, n, 1, &dec, &dl, NULL), 0);
    cr_expect(dl == sizeof raw - 1 && !memcmp(dec, raw, dl));
    free(dec);
    free(ids);
    int32_t bad = 5000;
    bt_err e = {0};
    cr_expect_eq(tokenizer_decode(t, &bad, 1, 1, &dec, &dl, &e), BT_EINVAL);
    tokenizer_free(t);
}

Test(tokenizer, decode_without_specials) {
    tok_t *t = open_tok("tiny-a/gguf/model-f32.gguf");
    const char *s = "<|im_start|>user\nhi<think>x</think><|im_end|>";
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(t, s, strlen(s), 1, &ids, &n, NULL), 0);
    char *dec;
    size_t dl;
    cr_assert_eq(tokenizer_decode(t, ids, n, 0, &dec, &dl, NULL), 0);
    /* control tokens vanish, user-defined ones (<think>) stay */
    cr_expect_str_eq(dec, "user\nhi<think>x</think>");
    free(dec);
    free(ids);
    tokenizer_free(t);
}

/* Feeding a CJK/emoji string token by token must emit only whole characters, and the
 * concatenation must equal the text. */
Test(tokenizer, stream_holds_partial_utf8) {
    tok_t *t = open_tok("tiny-a/gguf/model-f32.gguf");
    const char *s = "我想在apple工作～ 🚀😶‍🌫️ 👍🏽 한국어";
    int32_t *ids;
    size_t n;
    cr_assert_eq(tokenizer_encode(t, s, strlen(s), 1, &ids, &n, NULL), 0);
    /* the small vocab splits these characters across byte tokens */
    cr_assert_gt(n, 20);
    tok_stream_t *st;
    cr_assert_eq(tok_stream_new(&st, t, 1, NULL), 0);
    char out[512];
    size_t ol = 0;
    int held_some = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl, tl;
        cr_assert_eq(tok_stream_push(st, ids[i], &p, &pl, NULL), 0);
        tokenizer_token_bytes(t, ids[i], &tl);
        held_some |= pl < tl;
        /* whatever comes out ends on a character boundary */
        if (pl) cr_assert(((unsigned char)p[pl - 1] & 0xC0) != 0xC0);
        cr_assert(ol + pl < sizeof out);
        memcpy(out + ol, p, pl);
        ol += pl;
    }
    const char *p;
    size_t pl;
    tok_stream_flush(st, &p, &pl);
    cr_expect_eq(pl, 0);
    cr_expect(held_some, "no token was split mid-character: the test would prove nothing");
    cr_expect(ol == strlen(s) && !memcmp(out, s, ol));
    /* invalid and truncated input: replacement characters */
    cr_assert_eq(tok_stream_push_bytes(st, "a\xff", 2, &p, &pl, NULL), 0);
    cr_expect(pl == 4 && !memcmp(p, "a\xef\xbf\xbd", 4));
    cr_assert_eq(tok_stream_push_bytes(st, "\xe2\x82", 2, &p, &pl, NULL), 0);
    cr_expect_eq(pl, 0);
    cr_assert_eq(tok_stream_push_bytes(st, "\xac", 1, &p, &pl, NULL), 0);
    cr_expect(pl == 3 && !memcmp(p, "\xe2\x82\xac", 3));
    cr_assert_eq(tok_stream_push_bytes(st, "\xf0\x9f", 2, &p, &pl, NULL), 0);
    cr_expect_eq(pl, 0);
    tok_stream_flush(st, &p, &pl);
    cr_expect(pl == 3 && !memcmp(p, "\xef\xbf\xbd", 3));
    tok_stream_free(st);
    free(ids);
    tokenizer_free(t);
}

Test(tokenizer, rejects_bad_inputs) {
    tok_t *t;
    bt_err e = {0};
    cr_expect_lt(tokenizer_open(&t, "/nonexistent/tokenizer.json", &e), 0);
    cr_expect_null(t);
    /* a GGUF without tokenizer keys is not a tokenizer */
    char path[] = "/tmp/bt-tok-XXXXXX.json";
    int fd = mkstemps(path, 5);
    cr_assert(fd >= 0);
    const char *bad = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                      "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"}}}";
    cr_assert_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    int rc = tokenizer_open(&t, path, &e);
    cr_expect_eq(rc, BT_EUNSUPPORTED, "unknown regex: %s", bt_errmsg(&e, rc));
    unlink(path);
}
