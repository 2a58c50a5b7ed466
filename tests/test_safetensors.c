/* tests/test_safetensors.c: the safetensors parser on tiny-a's checkpoint, every malformed
 * fixture in tests/fixtures/bad/st_*.safetensors (written by st_gen.py there), the index
 * parser, and a sharded copy of tiny-a built here that must describe the same model. */
#include "engine/hf.h"
#include "engine/safetensors.h"
#include "tests/fixtures.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *bad_dir(void) {
    static char dir[4096];
    if (!dir[0]) {
        /* Tests run from the repository root (tests/run.sh cds there). */
        const char *c[] = {"tests/fixtures/bad", "../tests/fixtures/bad"};
        for (int i = 0; i < 2; i++)
            if (access(c[i], R_OK) == 0 && realpath(c[i], dir)) break;
        cr_assert(dir[0], "tests/fixtures/bad not found (run from the repository root)");
    }
    return dir;
}

Test(safetensors, tiny_a_parses) {
    safetensors_t *st = NULL;
    bt_err e = {0};
    int rc = safetensors_open(&st, fixture_path("tiny-a/hf/model.safetensors"), &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    /* 6 linear layers x 14 + 2 full x 11 + embed, norm, lm_head + 15 MTP tensors. */
    cr_assert_eq(safetensors_n_tensors(st), 124);
    cr_assert_eq(safetensors_data_offset(st), 8 + 14840);
    cr_assert_str_eq(safetensors_metadata(st, "format"), "pt");
    cr_assert_null(safetensors_metadata(st, "nope"));

    const struct safetensors_tensor *t =
        safetensors_find(st, "model.language_model.embed_tokens.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, DT_BF16);
    cr_assert_eq(t->n_dims, 2);
    cr_assert_eq(t->shape[0], 1792);
    cr_assert_eq(t->shape[1], 128);
    cr_assert_eq(t->offset, 8 + 14840);
    cr_assert_eq(t->n_bytes, 1792 * 128 * 2);

    t = safetensors_find(st, "model.language_model.layers.0.linear_attn.conv1d.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->n_dims, 3);
    cr_assert(t->shape[0] == 512 && t->shape[1] == 1 && t->shape[2] == 4);
    t = safetensors_find(st, "model.language_model.layers.3.self_attn.q_proj.weight");
    cr_assert(t && t->shape[0] == 512 && t->shape[1] == 128);
    cr_assert_null(safetensors_find(st, "model.language_model.layers.3.linear_attn.A_log"));

    /* File order, no gaps or overlaps, and the last tensor ends at the end of the file. */
    uint64_t pos = safetensors_data_offset(st);
    for (int i = 0; i < safetensors_n_tensors(st); i++) {
        t = safetensors_tensor(st, i);
        cr_assert_eq(t->offset, pos, "tensor %s", t->name);
        pos += t->n_bytes;
        cr_assert_eq(safetensors_find(st, t->name), t);
    }
    cr_assert_eq(pos, safetensors_file_size(st));
    cr_assert_null(safetensors_tensor(st, 124));
    safetensors_free(st);
}

Test(safetensors, short_buffer_asks_for_more) {
    const char *path = fixture_path("tiny-a/hf/model.safetensors");
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    unsigned char buf[4096];
    cr_assert_eq(fread(buf, 1, sizeof buf, f), sizeof buf);
    fclose(f);
    safetensors_t *st = NULL;
    size_t need = 0;
    bt_err e = {0};
    cr_assert_eq(safetensors_parse(&st, buf, sizeof buf, 6952256, &need, &e), BT_EMSGSIZE);
    cr_assert_eq(need, 8 + 14840);
    cr_assert_null(st);
}

struct bad_case {
    const char *file;
    int code;
    const char *word; /* must appear in the message: the tensor name or the failing part */
};

Test(safetensors, bad_fixtures_rejected) {
    static const struct bad_case cases[] = {
        {"st_short", BT_EFORMAT, "header length"},
        {"st_hdr_cap", BT_EFORMAT, "header length"},
        {"st_hdr_past_eof", BT_EFORMAT, "past the end"},
        {"st_bad_json", BT_EFORMAT, "JSON invalid"},
        {"st_not_object", BT_EFORMAT, "'{'"},
        {"st_trailing", BT_EFORMAT, "after the header"},
        {"st_entry_not_object", BT_EFORMAT, "bad.tensor"},
        {"st_dtype_missing", BT_EFORMAT, "bad.tensor"},
        {"st_dtype_unknown", BT_EFORMAT, "bad.tensor"},
        {"st_dtype_unsupported", BT_EUNSUPPORTED, "bad.tensor"},
        {"st_dtype_f8", BT_EUNSUPPORTED, "bad.tensor"},
        {"st_shape_missing", BT_EFORMAT, "bad.tensor"},
        {"st_shape_not_array", BT_EFORMAT, "bad.tensor"},
        {"st_shape_negative", BT_EFORMAT, "bad.tensor"},
        {"st_shape_fraction", BT_EFORMAT, "bad.tensor"},
        {"st_too_many_dims", BT_EFORMAT, "bad.tensor"},
        {"st_shape_overflow", BT_EFORMAT, "bad.tensor"},
        {"st_size_mismatch", BT_EFORMAT, "bad.tensor"},
        {"st_offsets_bad", BT_EFORMAT, "bad.tensor"},
        {"st_begin_after_end", BT_EFORMAT, "bad.tensor"},
        {"st_past_eof", BT_EFORMAT, "bad.tensor"},
        {"st_overlap", BT_EFORMAT, "bad.tensor"},
        {"st_duplicate", BT_EFORMAT, "bad.tensor"},
        {"st_metadata_not_object", BT_EFORMAT, "__metadata__"},
        {"st_metadata_value", BT_EFORMAT, "bad.key"},
    };
    int n_files = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s.safetensors", bad_dir(), cases[i].file);
        safetensors_t *st = NULL;
        bt_err e = {0};
        int rc = safetensors_open(&st, path, &e);
        cr_expect_eq(rc, cases[i].code, "%s: rc=%d (%s), want %d", cases[i].file, rc, e.msg,
                     cases[i].code);
        cr_expect_not_null(strstr(e.msg, cases[i].word), "%s: message \"%s\" lacks \"%s\"",
                           cases[i].file, e.msg, cases[i].word);
        cr_expect_null(st);
        n_files++;
    }
    /* Every st_*.safetensors fixture is in the table above. */
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "ls %s/st_*.safetensors | wc -l", bad_dir());
    FILE *p = popen(cmd, "r");
    int listed = -1;
    cr_assert(p && fscanf(p, "%d", &listed) == 1);
    pclose(p);
    cr_assert_eq(listed, n_files, "fixtures on disk %d, in the table %d", listed, n_files);
}

Test(safetensors, dtype_names) {
    enum dtype d;
    cr_assert(safetensors_dtype("BF16", &d) == 0 && d == DT_BF16);
    cr_assert(safetensors_dtype("F16", &d) == 0 && d == DT_F16);
    cr_assert(safetensors_dtype("F32", &d) == 0 && d == DT_F32);
    cr_assert_eq(safetensors_dtype("F8_E5M2", &d), BT_EUNSUPPORTED);
    cr_assert_eq(safetensors_dtype("BOOL", &d), BT_EUNSUPPORTED);
    cr_assert_eq(safetensors_dtype("bf16", &d), BT_EFORMAT);
}

Test(safetensors, header_padding_and_empty_tensors) {
    /* Trailing spaces are allowed; empty tensors may share an offset with a real one. */
    const char js[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,2]}}    ";
    unsigned char buf[256] = {0};
    size_t n = sizeof js - 1;
    buf[0] = (unsigned char)n;
    memcpy(buf + 8, js, n);
    safetensors_t *st = NULL;
    bt_err e = {0};
    cr_assert_eq(safetensors_parse(&st, buf, 8 + n + 2, 8 + n + 2, NULL, &e), 0, "%s", e.msg);
    cr_assert_eq(safetensors_n_tensors(st), 2);
    const struct safetensors_tensor *b = safetensors_find(st, "b");
    cr_assert(b && b->n_dims == 0 && b->n_bytes == 2 && b->offset == 8 + n);
    safetensors_free(st);
}

Test(safetensors, index_parse) {
    const char ok[] = "{\"metadata\":{\"total_size\":10},\"weight_map\":{\"a\":\"s1.safetensors\","
                      "\"b\":\"s2.safetensors\",\"c\":\"s1.safetensors\"}}";
    struct safetensors_index *ix = NULL;
    bt_err e = {0};
    cr_assert_eq(safetensors_index_parse(&ix, ok, sizeof ok - 1, &e), 0, "%s", e.msg);
    cr_assert_eq(ix->n_entries, 3);
    cr_assert_eq(ix->n_shards, 2);
    cr_assert_str_eq(ix->shards[ix->shard_of[2]], "s1.safetensors");
    cr_assert_eq(ix->shard_of[0], ix->shard_of[2]);
    safetensors_index_free(ix);

    const char *bad[] = {
        "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}",
        "{\"weight_map\":{\"a\":\"dir/s1.safetensors\"}}",
        "{\"weight_map\":{\"a\":\"\"}}",
        "{\"weight_map\":{\"a\":3}}",
        "{\"weight_map\":[]}",
        "{\"weight_map\":{\"a\":\"x\",\"a\":\"x\"}}",
        "{\"weight_map\":",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        e = (bt_err){0};
        cr_expect_eq(safetensors_index_parse(&ix, bad[i], strlen(bad[i]), &e), BT_EFORMAT,
                     "case %zu", i);
        cr_expect_null(ix);
    }
}

/* ---- sharded copy of tiny-a ---- */

static void *read_range(const char *path, uint64_t off, uint64_t n) {
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open %s", path);
    void *buf = malloc(n ? n : 1);
    cr_assert_eq(pread(fd, buf, n, (off_t)off), (ssize_t)n);
    close(fd);
    return buf;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "create %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Writes tensors [lo, hi) of src (file order) as a safetensors file; adds them to wm. */
static void write_shard(const char *dir, const char *name, const char *src_path,
                        const safetensors_t *src, int lo, int hi, cJSON *wm) {
    static const char *dt[DT_COUNT] = {[DT_F32] = "F32", [DT_F16] = "F16", [DT_BF16] = "BF16"};
    cJSON *h = cJSON_CreateObject();
    uint64_t pos = 0;
    for (int i = lo; i < hi; i++) {
        const struct safetensors_tensor *t = safetensors_tensor(src, i);
        cJSON *o = cJSON_AddObjectToObject(h, t->name);
        cJSON_AddStringToObject(o, "dtype", dt[t->dtype]);
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t->n_dims; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *off = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)pos));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(pos + t->n_bytes)));
        pos += t->n_bytes;
        cJSON_AddStringToObject(wm, t->name, name);
    }
    char *js = cJSON_PrintUnformatted(h);
    size_t jn = strlen(js);
    const struct safetensors_tensor *first = safetensors_tensor(src, lo);
    unsigned char *data = read_range(src_path, first->offset, pos);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    uint64_t n = jn;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(n >> (8 * i));
    cr_assert(fwrite(len8, 1, 8, f) == 8 && fwrite(js, 1, jn, f) == jn &&
              fwrite(data, 1, pos, f) == pos);
    cr_assert_eq(fclose(f), 0);
    free(data);
    free(js);
    cJSON_Delete(h);
}

static char *make_sharded(const char *index_extra_name) {
    char tmpl[] = "/tmp/bt_st_shardXXXXXX";
    char *dir = strdup(mkdtemp(tmpl));
    const char *src_path = fixture_path("tiny-a/hf/model.safetensors");
    safetensors_t *src = NULL;
    bt_err e = {0};
    cr_assert_eq(safetensors_open(&src, src_path, &e), 0, "%s", e.msg);
    int n = safetensors_n_tensors(src);
    cJSON *ix = cJSON_CreateObject();
    cJSON *wm = cJSON_AddObjectToObject(ix, "weight_map");
    write_shard(dir, "model-00001-of-00002.safetensors", src_path, src, 0, n / 2, wm);
    write_shard(dir, "model-00002-of-00002.safetensors", src_path, src, n / 2, n, wm);
    if (index_extra_name)
        cJSON_AddStringToObject(wm, index_extra_name, "model-00002-of-00002.safetensors");
    char *js = cJSON_Print(ix);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_file(path, js, strlen(js));
    free(js);
    cJSON_Delete(ix);
    safetensors_free(src);
    /* config.json next to the shards */
    char *cfg = read_range(fixture_path("tiny-a/hf/config.json"), 0, 1818);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, cfg, 1818);
    free(cfg);
    return dir;
}

static void remove_dir(char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    free(dir);
}

Test(safetensors, sharded_equals_single_file) {
    char *dir = make_sharded(NULL);
    struct model_desc *a = NULL, *b = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&a, fixture_path("tiny-a/hf"), &e), 0, "%s", e.msg);
    cr_assert_eq(hf_open(&b, dir, &e), 0, "%s", e.msg);
    cr_assert_eq(b->n_files, 2);
    cr_assert_eq(a->n_files, 1);
    cr_assert_eq(a->n_tensors, b->n_tensors);
    cr_assert_eq(a->n_skipped, b->n_skipped);
    cr_assert_eq(a->total_bytes, b->total_bytes);
    cr_assert_eq(memcmp(&a->hp, &b->hp, sizeof a->hp), 0);
    int in_second = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const struct tensor_desc *x = &a->tensors[i], *y = &b->tensors[i];
        cr_assert_str_eq(x->name, y->name);
        cr_assert(x->dtype == y->dtype && x->n_dims == y->n_dims && x->n_bytes == y->n_bytes);
        cr_assert_eq(memcmp(x->ne, y->ne, sizeof x->ne), 0, "%s", x->name);
        cr_assert(x->xform == y->xform && x->perm_first == y->perm_first &&
                  x->perm_block == y->perm_block);
        in_second += y->file == 1;
        void *p = read_range(a->files[x->file], x->offset, x->n_bytes);
        void *q = read_range(b->files[y->file], y->offset, y->n_bytes);
        cr_assert_eq(memcmp(p, q, x->n_bytes), 0, "bytes of %s differ", x->name);
        free(p);
        free(q);
    }
    cr_assert(in_second > 0 && in_second < a->n_tensors);
    /* The index json itself is also an accepted path. */
    char ixp[4200];
    snprintf(ixp, sizeof ixp, "%s/model.safetensors.index.json", dir);
    struct model_desc *c = NULL;
    cr_assert_eq(hf_open(&c, ixp, &e), 0, "%s", e.msg);
    cr_assert_eq(c->n_tensors, a->n_tensors);
    hf_desc_free(a);
    hf_desc_free(b);
    hf_desc_free(c);
    remove_dir(dir);
}

Test(safetensors, sharded_missing_entry_rejected) {
    char *dir = make_sharded("model.language_model.not_there.weight");
    struct model_desc *m = NULL;
    bt_err e = {0};
    cr_assert_eq(hf_open(&m, dir, &e), BT_ENOKEY, "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "model.language_model.not_there.weight"), "%s", e.msg);
    cr_assert_null(m);
    remove_dir(dir);
}
