/* tests/test_worker.c: the worker's parts in-process: capability sanity, ModelId, the model
 * cache's range bookkeeping (and loading weights from a partially filled cache through the
 * normal loader), stages chained over f32 activations against one stage over all layers bit
 * for bit and against the tiny-a greedy reference, and two whole workers (worker_run) over
 * INPROC transports driven by this test acting as the coordinator, one of them streaming the
 * model from the "coordinator". */
#include "common/clock.h"
#include "engine/model.h"
#include "fixtures.h"
#include "ops/ops.h"
#include "proto/msg.h"
#include "proto/transport.h"
#include "proto/wire.h"
#include "worker/caps.h"
#include "worker/model_cache.h"
#include "worker/stage.h"
#include "worker/worker.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MODEL "tiny-a/gguf/model-f32.gguf"

static void setup(void) {
    bt_err e = {0};
    cr_assert_eq(ops_init(NULL, &e), 0, "%s", e.msg);
}

static int read_ids(const char *rel, int32_t *ids, int cap) {
    FILE *f = fopen(fixture_path(rel), "r");
    cr_assert(f, "open %s", rel);
    int n = 0, v;
    while (n < cap && fscanf(f, "%d", &v) == 1)
        ids[n++] = v;
    fclose(f);
    return n;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n);
    cr_assert(p && fread(p, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static char *make_tmpdir(void) {
    char *d = strdup("/tmp/test_worker.XXXXXX");
    cr_assert(mkdtemp(d));
    return d;
}

static void rm_rf(const char *d) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
}

/* ---- caps ---- */

Test(worker, caps_sane, .init = setup) {
    struct worker_caps c;
    struct caps_opts o = {.bw_bytes = 32u << 20, .bench_ms = 20};
    bt_err e = {0};
    cr_assert_eq(caps_measure(&c, &o, &e), 0, "%s", e.msg);
    cr_assert_gt(c.ram_bytes, 64ull << 20);
    cr_assert_geq(c.cores, 1);
    cr_assert_str_eq(c.isa, ops->isa);
    /* Any machine reads memory faster than 0.1 GB/s and slower than 10 TB/s. */
    cr_assert(c.mem_bw_gbps > 0.1f && c.mem_bw_gbps < 10000.0f, "bw %f", (double)c.mem_bw_gbps);
    cr_assert(c.matmul_gflops > 0.01f && c.matmul_gflops < 100000.0f, "gflops %f",
              (double)c.matmul_gflops);
    cr_assert(c.hostname[0]);
}

Test(worker, model_ident, .init = setup) {
    const char *path = fixture_path(MODEL);
    struct model_ident id;
    bt_err e = {0};
    cr_assert_eq(caps_model_ident(&id, path, &e), 0, "%s", e.msg);
    size_t len;
    unsigned char *b = read_file(path, &len);
    cr_assert_eq(id.size, len);
    cr_assert_str_eq(id.name, "model-f32.gguf");
    cr_assert(id.data_offset > 24 && id.data_offset < len);
    cr_assert_eq(id.header_xxh3, XXH3_64bits(b, (size_t)id.data_offset));
    /* From head bytes: too short asks for more, enough gives the same identity. */
    struct model_ident h;
    size_t need = 0;
    cr_assert_eq(caps_model_ident_head(&h, "x", b, 64, len, &need, &e), BT_EMSGSIZE);
    cr_assert_gt(need, 64);
    cr_assert_eq(caps_model_ident_head(&h, "x", b, (size_t)id.data_offset, len, &need, &e), 0, "%s",
                 e.msg);
    cr_assert_eq(h.header_xxh3, id.header_xxh3);
    cr_assert_eq(h.data_offset, id.data_offset);
    /* Another byte in the directory: another identity. */
    b[30] ^= 1;
    if (caps_model_ident_head(&h, "x", b, (size_t)id.data_offset, len, &need, &e) == 0)
        cr_assert_neq(h.header_xxh3, id.header_xxh3);
    free(b);
}

/* ---- model cache ---- */

static void put_range(model_cache_t *c, const unsigned char *file, uint64_t off, uint64_t len) {
    bt_err e = {0};
    cr_assert_eq(model_cache_put(c, off, file + off, (size_t)len, XXH3_64bits(file + off, len), &e),
                 0, "%s", e.msg);
}

Test(worker, cache_ranges, .init = setup) {
    char *dir = make_tmpdir();
    size_t size = 10u << 20;
    unsigned char *file = malloc(size);
    for (size_t i = 0; i < size; i++)
        file[i] = (unsigned char)(i * 131 + (i >> 12));
    struct model_cache_opts o = {.dir = dir, .name = "m/odel x", .size = size, .header_xxh3 = 7};
    model_cache_t *c = NULL;
    bt_err e = {0};
    cr_assert_eq(model_cache_open(&c, &o, &e), 0, "%s", e.msg);
    cr_assert(strstr(model_cache_path(c), "/m_odel_x-0000000000000007"), "%s", model_cache_path(c));
    struct mc_range all = {0, size}, out[64];
    /* Empty cache: 10 MiB in 4 MiB pieces = 3 pieces covering everything in order. */
    cr_assert_eq(model_cache_missing(c, &all, 1, 4u << 20, out, 64), 3);
    cr_assert_eq(out[0].off, 0);
    cr_assert_eq(out[2].off + out[2].len, size);
    /* Only max pieces are written but all are counted. */
    cr_assert_eq(model_cache_missing(c, &all, 1, 1u << 20, out, 2), 10);
    put_range(c, file, 1000, 5000);
    put_range(c, file, 6000, 100); /* touches the previous one: merged */
    put_range(c, file, 3u << 20, 1u << 20);
    cr_assert(model_cache_has(c, 1000, 5100));
    cr_assert(!model_cache_has(c, 999, 10));
    cr_assert(model_cache_has(c, 3u << 20, 1u << 20));
    cr_assert_eq(model_cache_present_bytes(c), 5100 + (1u << 20));
    /* Wanted overlapping ranges, missing parts only, clipped to the file. */
    struct mc_range want[3] = {{500, 1000}, {900, 5300}, {(3u << 20) - 10, (2u << 20)}};
    int n = model_cache_missing(c, want, 3, 1u << 20, out, 64);
    cr_assert_eq(n, 4, "n=%d", n);
    cr_assert_eq(out[0].off, 500);
    cr_assert_eq(out[0].len, 500);
    cr_assert_eq(out[1].off, 6100);
    cr_assert_eq(out[1].len, 100);
    cr_assert_eq(out[2].off, (3u << 20) - 10);
    cr_assert_eq(out[2].len, 10);
    cr_assert_eq(out[3].off, 4u << 20);
    cr_assert_eq(out[3].len, (1u << 20) - 10);
    want[0] = (struct mc_range){size - 10, 100};
    cr_assert_eq(model_cache_missing(c, want, 1, 1u << 20, out, 64), 1);
    cr_assert_eq(out[0].len, 10);
    /* Bad checksum or a range outside the file: rejected, nothing recorded. */
    cr_assert_eq(model_cache_put(c, 0, file, 100, 12345, &e), BT_ECHECKSUM);
    cr_assert_eq(model_cache_put(c, size - 10, file, 100, XXH3_64bits(file, 100), &e), BT_EPROTO);
    cr_assert(!model_cache_has(c, 0, 100));
    unsigned char buf[100];
    cr_assert_eq(model_cache_read(c, 0, buf, 100, &e), BT_EINVAL);
    cr_assert_eq(model_cache_read(c, 1000, buf, 100, &e), 0);
    cr_assert_eq(memcmp(buf, file + 1000, 100), 0);
    model_cache_close(c);
    /* Reopen: the index brings the ranges back. */
    cr_assert_eq(model_cache_open(&c, &o, &e), 0, "%s", e.msg);
    cr_assert_eq(model_cache_present_bytes(c), 5100 + (1u << 20));
    cr_assert(model_cache_has(c, 3u << 20, 1u << 20));
    model_cache_close(c);
    /* A corrupt index is discarded. */
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/m_odel_x-0000000000000007.idx", dir);
    FILE *f = fopen(idx, "r+b");
    cr_assert(f);
    fputc('X', f);
    fclose(f);
    cr_assert_eq(model_cache_open(&c, &o, &e), 0, "%s", e.msg);
    cr_assert_eq(model_cache_present_bytes(c), 0);
    model_cache_close(c);
    free(file);
    rm_rf(dir);
    free(dir);
}

/* A cache holding only the head and layers [4, 8) loads those weights byte for byte like the
 * real file, through model_open + weights_load (the io_uring loader). */
Test(worker, cache_loads_weights, .init = setup) {
    const char *path = fixture_path(MODEL);
    size_t size;
    unsigned char *file = read_file(path, &size);
    struct model_ident id;
    bt_err e = {0};
    cr_assert_eq(caps_model_ident(&id, path, &e), 0, "%s", e.msg);
    char *dir = make_tmpdir();
    struct model_cache_opts o = {
        .dir = dir, .name = id.name, .size = size, .header_xxh3 = id.header_xxh3};
    model_cache_t *c = NULL;
    cr_assert_eq(model_cache_open(&c, &o, &e), 0, "%s", e.msg);
    put_range(c, file, 0, id.data_offset);
    struct model_desc *m = NULL, *mc = NULL;
    cr_assert_eq(model_open(&m, path, &e), 0, "%s", e.msg);
    struct layer_range r;
    cr_assert_eq(model_range(m, 4, 8, &r, &e), 0, "%s", e.msg);
    struct mc_range *want = calloc((size_t)r.n, sizeof *want);
    for (int i = 0; i < r.n; i++)
        want[i] = (struct mc_range){r.tensors[i]->offset, r.tensors[i]->n_bytes};
    struct mc_range pieces[512];
    int np = model_cache_missing(c, want, r.n, 256u << 10, pieces, 512);
    cr_assert(np > 0 && np <= 512);
    uint64_t fetched = 0;
    for (int i = 0; i < np; i++) {
        put_range(c, file, pieces[i].off, pieces[i].len);
        fetched += pieces[i].len;
    }
    cr_assert_eq(model_cache_missing(c, want, r.n, 256u << 10, pieces, 512), 0);
    /* Only the range's bytes (and the head) were fetched, not the whole model. */
    cr_assert_leq(fetched, r.bytes);
    cr_assert_lt(model_cache_present_bytes(c), size * 3 / 4);
    cr_assert_eq(model_open(&mc, model_cache_path(c), &e), 0, "%s", e.msg);
    struct weights *w1 = NULL, *w2 = NULL;
    struct weights_opts wo = {.use_io_uring = 1};
    cr_assert_eq(weights_load(&w1, m, 4, 8, &wo, &e), 0, "%s", e.msg);
    cr_assert_eq(weights_load(&w2, mc, 4, 8, &wo, &e), 0, "%s", e.msg);
    for (int l = 4; l < 8; l++) {
        const struct mat *a = &w1->layers[l].ffn_down, *b = &w2->layers[l].ffn_down;
        cr_assert_eq(memcmp(a->data, b->data, (size_t)a->rows * a->row_bytes), 0, "layer %d", l);
        a = &w1->layers[l].attn_norm, b = &w2->layers[l].attn_norm;
        cr_assert_eq(memcmp(a->data, b->data, (size_t)a->rows * a->row_bytes), 0, "layer %d", l);
    }
    cr_assert_eq(
        memcmp(w1->output.data, w2->output.data, (size_t)w1->output.rows * w1->output.row_bytes),
        0);
    weights_free(w1);
    weights_free(w2);
    model_close(m);
    model_close(mc);
    free(r.tensors);
    free(want);
    model_cache_close(c);
    free(file);
    rm_rf(dir);
    free(dir);
}

/* ---- stages ---- */

struct fwd_msg {
    Baton__Forward f;
    uint64_t seq_id;
    uint32_t pos, n_tok, tok[64];
    protobuf_c_boolean sample, want_logits;
    Baton__SamplingParams sp, *spp;
};

static void fwd_init(struct fwd_msg *m, uint64_t batch, uint64_t seq, uint32_t pos,
                     const int32_t *toks, uint32_t n, int want_logits) {
    memset(m, 0, sizeof *m);
    baton__forward__init(&m->f);
    baton__sampling_params__init(&m->sp);
    m->seq_id = seq;
    m->pos = pos;
    m->n_tok = n;
    for (uint32_t i = 0; i < n; i++)
        m->tok[i] = (uint32_t)toks[i];
    m->sample = 1;
    m->want_logits = want_logits != 0;
    m->spp = &m->sp;
    m->f.batch_id = batch;
    m->f.n_seq_id = 1;
    m->f.seq_id = &m->seq_id;
    m->f.n_pos = 1;
    m->f.pos = &m->pos;
    m->f.n_n_tokens = 1;
    m->f.n_tokens = &m->n_tok;
    m->f.n_sample = 1;
    m->f.sample = &m->sample;
    m->f.n_want_logits = 1;
    m->f.want_logits = &m->want_logits;
    m->f.n_token_ids = n;
    m->f.token_ids = m->tok;
    m->f.wire_dtype = BATON__WIRE_DTYPE__WIRE_F32;
    if (pos == 0) {
        m->f.n_sampling = 1;
        m->f.sampling = &m->spp;
    }
}

static stage_t *open_stage(int lo, int hi, int fwd_tokens) {
    struct stage_opts o = {.model_path = fixture_path(MODEL),
                           .lo = lo,
                           .hi = hi,
                           .wire_dtype = WIRE_F32,
                           .max_seqs = 2,
                           .max_ctx = 128,
                           .threads = 2,
                           .fwd_tokens = fwd_tokens};
    stage_t *s = NULL;
    bt_err e = {0};
    cr_assert_eq(stage_open(&s, &o, &e), 0, "%s", e.msg);
    return s;
}

/* Runs the chat prompt + 32 greedy tokens through stages[0..n); returns generated ids and the
 * logits of every step (33 x V) when logits != NULL. */
static void run_pipeline(stage_t **st, int n, int32_t *gen, float *logits) {
    int32_t prompt[64];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    cr_assert_eq(np, 43);
    struct stage_info last;
    stage_info(st[n - 1], &last);
    uint32_t pos = 0;
    const int32_t *in = prompt;
    uint32_t n_in = (uint32_t)np;
    for (int step = 0; step < 33; step++) {
        struct fwd_msg fm;
        fwd_init(&fm, (uint64_t)step, 42, pos, in, n_in, logits != NULL);
        const void *frame = NULL;
        size_t frame_len = 0;
        struct stage_out so;
        bt_err e = {0};
        for (int k = 0; k < n; k++) {
            fm.f.stage_index = (uint32_t)k;
            cr_assert_eq(stage_forward(st[k], &fm.f, frame, frame_len, &so, &e), 0, "stage %d: %s",
                         k, e.msg);
            if (k + 1 < n) {
                fm.f.hidden = (uint32_t)last.hidden;
                fm.f.wire_dtype = (Baton__WireDtype)so.act_dtype;
                frame = so.act;
                frame_len = so.act_len;
            }
        }
        cr_assert_eq(so.result->n_seqs, 1);
        cr_assert_eq(so.result->batch_id, (uint64_t)step);
        const Baton__SeqResult *r = so.result->seqs[0];
        cr_assert_eq(r->seq_id, 42);
        cr_assert_eq(r->pos, pos + n_in);
        if (logits) {
            cr_assert_eq(so.logits_len, (size_t)last.n_vocab * sizeof(float));
            memcpy(logits + (size_t)step * (size_t)last.n_vocab, so.logits, so.logits_len);
        }
        if (step == 32) break;
        gen[step] = (int32_t)r->token;
        pos += n_in;
        in = &gen[step];
        n_in = 1;
    }
}

Test(worker, stages_match_single_and_reference, .init = setup) {
    int32_t want[64];
    cr_assert_eq(read_ids("tiny-a/ref/f32/chat/greedy.txt", want, 64), 32);
    stage_t *one = open_stage(0, 8, 0);
    struct stage_info si;
    stage_info(one, &si);
    size_t V = (size_t)si.n_vocab;
    float *l1 = malloc(33 * V * sizeof(float)), *l2 = malloc(33 * V * sizeof(float));
    int32_t g1[32], g2[32], g3[32];
    run_pipeline(&one, 1, g1, l1);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(g1[i], want[i], "token %d: %d != %d", i, g1[i], want[i]);
    /* Three stages, prefill in pieces of 16 rows: bit-identical logits. */
    stage_t *three[3] = {open_stage(0, 3, 16), open_stage(3, 5, 16), open_stage(5, 8, 16)};
    run_pipeline(three, 3, g2, l2);
    cr_assert_eq(memcmp(g1, g2, sizeof g1), 0);
    cr_assert_eq(memcmp(l1, l2, 33 * V * sizeof(float)), 0, "logits differ");
    /* Sequence slots were kept: a Cancel frees them, so the same seq may start over. */
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(stage_active(three[k]), 1);
        uint64_t id = 42;
        stage_cancel(three[k], &id, 1);
        cr_assert_eq(stage_active(three[k]), 0);
    }
    run_pipeline(three, 3, g3, NULL);
    cr_assert_eq(memcmp(g1, g3, sizeof g1), 0);
    for (int k = 0; k < 3; k++)
        stage_close(three[k]);
    stage_close(one);
    free(l1);
    free(l2);
}

Test(worker, stage_rejects_without_state_change, .init = setup) {
    stage_t *s = open_stage(0, 8, 0);
    int32_t toks[4] = {1, 2, 3, 4};
    struct fwd_msg fm;
    struct stage_out so;
    bt_err e = {0};
    /* Continuing a sequence that has no state here. */
    fwd_init(&fm, 1, 9, 5, toks, 1, 0);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), BT_EPROTO);
    /* Token id out of range. */
    fwd_init(&fm, 2, 9, 0, toks, 4, 0);
    fm.tok[2] = 999999;
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), BT_EPROTO);
    cr_assert_eq(stage_active(s), 0);
    /* Past max_ctx (128). */
    fwd_init(&fm, 3, 9, 126, toks, 4, 0);
    cr_assert_neq(stage_forward(s, &fm.f, NULL, 0, &so, &e), 0);
    /* A good start, then a position mismatch. */
    fwd_init(&fm, 4, 9, 0, toks, 4, 0);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), 0, "%s", e.msg);
    fwd_init(&fm, 5, 9, 3, toks, 1, 0);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), BT_EPROTO);
    /* Two slots: a third sequence finds none. */
    fwd_init(&fm, 6, 10, 0, toks, 2, 0);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), 0, "%s", e.msg);
    fwd_init(&fm, 7, 11, 0, toks, 2, 0);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), BT_ECAPACITY);
    /* Stop token: FINISH_STOP. Greedy from [1 2 3 4] then feed it back to learn the token. */
    fwd_init(&fm, 8, 9, 4, toks, 1, 0);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), 0, "%s", e.msg);
    uint32_t next = so.result->seqs[0]->token;
    cr_assert_eq(so.result->seqs[0]->finish, BATON__FINISH_REASON__FINISH_NONE);
    uint64_t ids[2] = {9, 10};
    stage_cancel(s, ids, 2);
    fwd_init(&fm, 9, 9, 0, toks, 4, 0);
    uint32_t stop[1] = {0};
    fm.sp.n_stop_token_ids = 1;
    fm.sp.stop_token_ids = stop;
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), 0, "%s", e.msg);
    stop[0] = so.result->seqs[0]->token;
    stage_cancel(s, ids, 1);
    cr_assert_eq(stage_forward(s, &fm.f, NULL, 0, &so, &e), 0, "%s", e.msg);
    cr_assert_eq(so.result->seqs[0]->finish, BATON__FINISH_REASON__FINISH_STOP);
    (void)next;
    stage_close(s);
}

/* ---- whole workers over INPROC ---- */

struct wthread {
    pthread_t th;
    worker_t *w;
    int rc;
};

static void *wmain(void *arg) {
    struct wthread *t = arg;
    bt_err e = {0};
    t->rc = worker_run(t->w, &e);
    return NULL;
}

struct coord {
    transport_t *t;
    const unsigned char *file;
    size_t size;
    int chunks_served;
    struct tx_msg m;
};

static void csend(struct coord *c, const char *peer, Baton__Envelope *env) {
    uint8_t *buf;
    size_t len;
    bt_err e = {0};
    cr_assert_eq(msg_pack(env, &buf, &len, &e), 0, "%s", e.msg);
    struct tx_frame f = {.data = buf, .len = len};
    cr_assert_eq(transport_send(c->t, peer, &f, 1, &e), 0, "to %s: %s", peer, e.msg);
    free(buf);
}

/* Next message that is not a chunk request (served here) or a heartbeat. */
static Baton__Envelope *crecv(struct coord *c) {
    int64_t end = bt_now_ns() + 20000000000LL;
    while (bt_now_ns() < end) {
        bt_err e = {0};
        int rc = transport_recv(c->t, 200, &c->m, &e);
        if (rc == BT_ETIMEDOUT || rc == BT_EPEERLOST) continue;
        cr_assert_eq(rc, 0, "%s", e.msg);
        Baton__Envelope *env = NULL;
        cr_assert_eq(msg_unpack(c->m.data[0], c->m.len[0], NULL, &env, NULL, &e), 0, "%s", e.msg);
        if (env->body_case == BATON__ENVELOPE__BODY_HEARTBEAT) {
            msg_free(env, NULL);
            continue;
        }
        if (env->body_case == BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST) {
            const Baton__ModelChunkRequest *q = env->model_chunk_request;
            cr_assert_leq(q->offset + q->length, c->size);
            Baton__Envelope out;
            Baton__ModelChunk mc;
            msg_init(&out, env->request_id);
            baton__model_chunk__init(&mc);
            mc.model = q->model;
            mc.offset = q->offset;
            mc.length = q->length;
            mc.xxh3 = XXH3_64bits(c->file + q->offset, q->length);
            out.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK;
            out.model_chunk = &mc;
            uint8_t *buf;
            size_t len;
            cr_assert_eq(msg_pack(&out, &buf, &len, &e), 0);
            struct tx_frame f[2] = {{.data = buf, .len = len},
                                    {.data = c->file + q->offset, .len = q->length}};
            cr_assert_eq(transport_send(c->t, c->m.peer, f, 2, &e), 0, "%s", e.msg);
            free(buf);
            c->chunks_served++;
            msg_free(env, NULL);
            continue;
        }
        return env;
    }
    cr_assert_fail("coordinator: nothing received for 20 s");
    return NULL;
}

/* An INPROC server bound on `name`, as the tests' coordinator or next stage */
static transport_t *inproc_server(const char *name, int heartbeat_ms) {
    struct transport_opts so = {.kind = TRANSPORT_INPROC,
                                .role = TRANSPORT_SERVER,
                                .endpoint = name,
                                .heartbeat_ms = heartbeat_ms};
    transport_t *t = NULL;
    bt_err e = {0};
    cr_assert_eq(transport_open(&t, &so, &e), 0, "%s: %s", name, e.msg);
    return t;
}

/* The ModelId message naming a model (its strings stay id's) */
static Baton__ModelId model_id_msg(const struct model_ident *id) {
    Baton__ModelId mid;
    baton__model_id__init(&mid);
    mid.name = (char *)(uintptr_t)id->name;
    mid.size = id->size;
    mid.header_xxh3 = id->header_xxh3;
    return mid;
}

static void send_welcome(struct coord *c, const char *peer) {
    Baton__Envelope env;
    Baton__Welcome wl;
    msg_init(&env, 0);
    baton__welcome__init(&wl);
    wl.protocol_version = MSG_PROTOCOL_VERSION;
    wl.heartbeat_ms = 1000;
    env.body_case = BATON__ENVELOPE__BODY_WELCOME;
    env.welcome = &wl;
    csend(c, peer, &env);
}

/* LoadLayers [lo, hi) of the 8 layers of tiny-a, as stage `stage` of 2 */
static void send_load(struct coord *c, const char *peer, uint64_t rid, Baton__ModelId *mid,
                      uint32_t lo, uint32_t hi, uint32_t stage, const char *next) {
    Baton__Envelope env;
    Baton__LoadLayers L;
    msg_init(&env, rid);
    baton__load_layers__init(&L);
    L.plan_id = 1;
    L.model = mid;
    L.n_layers = 8;
    L.lo = lo;
    L.hi = hi;
    L.stage_index = stage;
    L.n_stages = 2;
    L.next_endpoint = (char *)(uintptr_t)next;
    L.wire_dtype = BATON__WIRE_DTYPE__WIRE_F32;
    L.max_seqs = 2;
    L.max_ctx = 128;
    env.body_case = BATON__ENVELOPE__BODY_LOAD_LAYERS;
    env.load_layers = &L;
    csend(c, peer, &env);
}

Test(worker, two_workers_inproc, .init = setup, .timeout = 60) {
    const char *path = fixture_path(MODEL);
    struct coord c = {0};
    c.file = read_file(path, &c.size);
    struct model_ident id;
    bt_err e = {0};
    cr_assert_eq(caps_model_ident(&id, path, &e), 0, "%s", e.msg);
    c.t = inproc_server("tw-coord", 0);
    char *dir = make_tmpdir();
    struct worker_caps caps = {.ram_bytes = 1ull << 30, .cores = 2, .isa = "ref"};
    /* w0 has the file; w1 streams it from the coordinator into its cache. */
    struct worker_opts o0 = {.kind = TRANSPORT_INPROC,
                             .join = "tw-coord",
                             .bind = "tw-d0",
                             .id = "w0",
                             .model_path = path,
                             .threads = 1,
                             .caps = &caps};
    struct worker_opts o1 = {.kind = TRANSPORT_INPROC,
                             .join = "tw-coord",
                             .bind = "tw-d1",
                             .id = "w1",
                             .cache_dir = dir,
                             .threads = 1,
                             .chunk_bytes = 1u << 20,
                             .caps = &caps};
    struct wthread t[2] = {0};
    cr_assert_eq(worker_open(&t[0].w, &o0, &e), 0, "%s", e.msg);
    cr_assert_eq(worker_open(&t[1].w, &o1, &e), 0, "%s", e.msg);
    cr_assert_str_eq(worker_data_endpoint(t[0].w), "tw-d0");
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i].th, NULL, wmain, &t[i]), 0);
    /* Hello from both. */
    int seen = 0;
    while (seen != 3) {
        Baton__Envelope *env = crecv(&c);
        cr_assert_eq(env->body_case, BATON__ENVELOPE__BODY_HELLO, "%s",
                     msg_body_name(env->body_case));
        const Baton__Hello *h = env->hello;
        int k = !strcmp(h->worker_id, "w1");
        cr_assert_str_eq(h->worker_id, k ? "w1" : "w0");
        cr_assert_eq(h->protocol_version, MSG_PROTOCOL_VERSION);
        cr_assert_eq(h->has_model, !k);
        if (!k) cr_assert_eq(h->model->header_xxh3, id.header_xxh3);
        cr_assert_str_eq(h->data_endpoint, k ? "tw-d1" : "tw-d0");
        seen |= 1 << k;
        msg_free(env, NULL);
    }
    Baton__ModelId mid = model_id_msg(&id);
    for (int k = 0; k < 2; k++) {
        send_welcome(&c, k ? "w1" : "w0");
        send_load(&c, k ? "w1" : "w0", 100 + (uint64_t)k, &mid, k ? 4 : 0, k ? 8 : 4, (uint32_t)k,
                  k ? "" : "tw-d1");
    }
    for (int n = 0; n < 2; n++) {
        Baton__Envelope *env = crecv(&c);
        cr_assert_eq(env->body_case, BATON__ENVELOPE__BODY_LOAD_DONE, "%s: %s",
                     msg_body_name(env->body_case),
                     env->body_case == BATON__ENVELOPE__BODY_ERROR ? env->error->message : "");
        cr_assert_eq(env->load_done->max_seqs, 2);
        msg_free(env, NULL);
    }
    cr_assert_gt(c.chunks_served, 1);
    /* Garbage gets an Error and the worker keeps serving. */
    struct tx_frame junk = {.data = "\x0a\xff\xff", .len = 3};
    cr_assert_eq(transport_send(c.t, "w0", &junk, 1, &e), 0);
    Baton__Envelope *er = crecv(&c);
    cr_assert_eq(er->body_case, BATON__ENVELOPE__BODY_ERROR);
    msg_free(er, NULL);
    /* Greedy generation over the two workers. */
    int32_t want[64], prompt[64], gen[32];
    cr_assert_eq(read_ids("tiny-a/ref/f32/chat/greedy.txt", want, 64), 32);
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    uint32_t pos = 0;
    const int32_t *in = prompt;
    uint32_t n_in = (uint32_t)np;
    for (int step = 0; step < 32; step++) {
        struct fwd_msg fm;
        fwd_init(&fm, 1000 + (uint64_t)step, 7, pos, in, n_in, 0);
        fm.want_logits = 0;
        Baton__Envelope env;
        msg_init(&env, 1000 + (uint64_t)step);
        env.body_case = BATON__ENVELOPE__BODY_FORWARD;
        env.forward = &fm.f;
        csend(&c, "w0", &env);
        Baton__Envelope *r = crecv(&c);
        cr_assert_eq(r->body_case, BATON__ENVELOPE__BODY_RESULT, "%s: %s",
                     msg_body_name(r->body_case),
                     r->body_case == BATON__ENVELOPE__BODY_ERROR ? r->error->message : "");
        cr_assert_eq(r->request_id, 1000 + (uint64_t)step);
        cr_assert_eq(r->result->n_seqs, 1);
        cr_assert_eq(r->result->n_stage_ms, 2); /* one compute time per stage */
        gen[step] = (int32_t)r->result->seqs[0]->token;
        cr_assert_eq(gen[step], want[step], "token %d", step);
        msg_free(r, NULL);
        pos += n_in;
        in = &gen[step];
        n_in = 1;
    }
    /* A continuation of an unknown sequence fails that batch with an Error naming it. */
    {
        struct fwd_msg fm;
        fwd_init(&fm, 5000, 99, 3, prompt, 1, 0);
        Baton__Envelope env;
        msg_init(&env, 5000);
        env.body_case = BATON__ENVELOPE__BODY_FORWARD;
        env.forward = &fm.f;
        csend(&c, "w0", &env);
        Baton__Envelope *r = crecv(&c);
        cr_assert_eq(r->body_case, BATON__ENVELOPE__BODY_ERROR);
        cr_assert_eq(r->request_id, 5000);
        cr_assert_str_eq(r->error->code, "protocol");
        msg_free(r, NULL);
    }
    /* Drain with one live sequence: reported once it is cancelled. */
    Baton__Envelope env;
    Baton__Drain dr;
    msg_init(&env, 6000);
    baton__drain__init(&dr);
    env.body_case = BATON__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    csend(&c, "w1", &env);
    Baton__Cancel cn;
    uint64_t seq = 7;
    msg_init(&env, 0);
    baton__cancel__init(&cn);
    cn.n_seq_id = 1;
    cn.seq_id = &seq;
    env.body_case = BATON__ENVELOPE__BODY_CANCEL;
    env.cancel = &cn;
    csend(&c, "w1", &env);
    /* crecv skips heartbeats, so read the drain report directly. */
    int drained = 0;
    for (int64_t end = bt_now_ns() + 5000000000LL; !drained && bt_now_ns() < end;) {
        if (transport_recv(c.t, 200, &c.m, &e)) continue;
        Baton__Envelope *r = NULL;
        cr_assert_eq(msg_unpack(c.m.data[0], c.m.len[0], NULL, &r, NULL, &e), 0);
        drained = r->body_case == BATON__ENVELOPE__BODY_HEARTBEAT && r->request_id == 6000 &&
                  r->heartbeat->state == BATON__WORKER_STATE__WS_DRAINING &&
                  r->heartbeat->active_seqs == 0;
        msg_free(r, NULL);
    }
    cr_assert(drained, "no drain report");
    /* A new sequence reaching the draining stage is refused with "draining". */
    {
        struct fwd_msg fm;
        fwd_init(&fm, 7000, 1, 0, prompt, 4, 0);
        msg_init(&env, 7000);
        env.body_case = BATON__ENVELOPE__BODY_FORWARD;
        env.forward = &fm.f;
        csend(&c, "w0", &env);
        Baton__Envelope *r = crecv(&c);
        cr_assert_eq(r->body_case, BATON__ENVELOPE__BODY_ERROR, "%s", msg_body_name(r->body_case));
        cr_assert_eq(r->request_id, 7000);
        cr_assert_str_eq(r->error->code, "draining");
        msg_free(r, NULL);
    }
    Baton__Shutdown sd;
    for (int k = 0; k < 2; k++) {
        msg_init(&env, 0);
        baton__shutdown__init(&sd);
        env.body_case = BATON__ENVELOPE__BODY_SHUTDOWN;
        env.shutdown = &sd;
        csend(&c, k ? "w1" : "w0", &env);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k].th, NULL);
        cr_assert_eq(t[k].rc, 0);
        worker_close(t[k].w);
    }
    transport_close(c.t);
    free((void *)(uintptr_t)c.file);
    rm_rf(dir);
    free(dir);
}

/* Next message on t that is not a heartbeat, turning w (which runs on this thread) between
 * looks. */
static Baton__Envelope *recv_turning(transport_t *t, worker_t *w, struct tx_msg *m) {
    for (int64_t end = bt_now_ns() + 20000000000LL; bt_now_ns() < end;) {
        worker_turn(w, 10);
        bt_err e = {0};
        int rc = transport_recv(t, 0, m, &e);
        if (rc == BT_ETIMEDOUT || rc == BT_EPEERLOST) continue;
        cr_assert_eq(rc, 0, "%s", e.msg);
        Baton__Envelope *env = NULL;
        cr_assert_eq(msg_unpack(m->data[0], m->len[0], NULL, &env, NULL, &e), 0, "%s", e.msg);
        if (env->body_case != BATON__ENVELOPE__BODY_HEARTBEAT) return env;
        msg_free(env, NULL);
    }
    cr_assert_fail("nothing received for 20 s");
    return NULL;
}

/* A LoadLayers from the coordinator and mail from the next stage, waiting in the same turn:
 * the Load closes the next-stage link and opens another, and the turn must not then read the
 * closed one (a heap-use-after-free under ASan before fdac7cb, seen only in some runs of
 * tests/e2e/test_recovery.sh). worker_turn makes it certain: both are queued before the
 * worker looks. After each reload, a Forward still reaches the next stage. */
Test(worker, reload_with_mail_from_the_next_stage, .init = setup, .timeout = 60) {
    const char *path = fixture_path(MODEL);
    struct model_ident id;
    bt_err e = {0};
    cr_assert_eq(caps_model_ident(&id, path, &e), 0, "%s", e.msg);
    struct coord c = {0};
    c.t = inproc_server("rn-coord", 0);
    transport_t *next = inproc_server("rn-next", 0);
    struct worker_caps caps = {.ram_bytes = 1ull << 30, .cores = 2, .isa = "ref"};
    struct worker_opts o = {.kind = TRANSPORT_INPROC,
                            .join = "rn-coord",
                            .bind = "rn-d0",
                            .id = "w0",
                            .model_path = path,
                            .threads = 1,
                            .caps = &caps};
    worker_t *w = NULL;
    cr_assert_eq(worker_open(&w, &o, &e), 0, "%s", e.msg);
    Baton__Envelope *env = recv_turning(c.t, w, &c.m);
    cr_assert_eq(env->body_case, BATON__ENVELOPE__BODY_HELLO, "%s", msg_body_name(env->body_case));
    msg_free(env, NULL);
    Baton__ModelId mid = model_id_msg(&id);
    send_welcome(&c, "w0");
    int32_t prompt[64];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    for (int round = 0; round < 3; round++) {
        uint64_t rid = 100 + (uint64_t)round;
        if (round) { /* the stage's previous link is up: mail on it, then the reload */
            Baton__Envelope er;
            Baton__Error err;
            msg_init(&er, 0);
            baton__error__init(&err);
            err.code = (char *)(uintptr_t) "test";
            err.message = (char *)(uintptr_t) "mail from the next stage";
            er.body_case = BATON__ENVELOPE__BODY_ERROR;
            er.error = &err;
            uint8_t *buf;
            size_t len;
            cr_assert_eq(msg_pack(&er, &buf, &len, &e), 0, "%s", e.msg);
            struct tx_frame f = {.data = buf, .len = len};
            cr_assert_eq(transport_send(next, "w0", &f, 1, &e), 0, "%s", e.msg);
            free(buf);
        }
        send_load(&c, "w0", rid, &mid, 0, 4, 0, "rn-next"); /* same layers: kept, relinked */
        env = recv_turning(c.t, w, &c.m);
        cr_assert_eq(env->body_case, BATON__ENVELOPE__BODY_LOAD_DONE, "%s: %s",
                     msg_body_name(env->body_case),
                     env->body_case == BATON__ENVELOPE__BODY_ERROR ? env->error->message : "");
        cr_assert_eq(env->request_id, rid);
        msg_free(env, NULL);
        /* the new link carries the stage's output */
        struct fwd_msg fm;
        fwd_init(&fm, 1000 + (uint64_t)round, 7, 0, prompt, (uint32_t)np, 0);
        Baton__Envelope fe;
        msg_init(&fe, 1000 + (uint64_t)round);
        fe.body_case = BATON__ENVELOPE__BODY_FORWARD;
        fe.forward = &fm.f;
        csend(&c, "w0", &fe);
        struct tx_msg nm;
        env = recv_turning(next, w, &nm);
        cr_assert_eq(env->body_case, BATON__ENVELOPE__BODY_FORWARD, "%s",
                     msg_body_name(env->body_case));
        cr_assert_eq(env->forward->batch_id, 1000 + (uint64_t)round);
        cr_assert_str_eq(nm.peer, "w0");
        msg_free(env, NULL);
    }
    worker_close(w);
    transport_close(next);
    transport_close(c.t);
}

/* Next message of a given body on t within ms, skipping others (heartbeats, errors). */
static Baton__Envelope *wait_body(transport_t *t, Baton__Envelope__BodyCase body, int ms) {
    int64_t end = bt_now_ns() + (int64_t)ms * 1000000;
    while (bt_now_ns() < end) {
        struct tx_msg m;
        bt_err e = {0};
        if (transport_recv(t, 50, &m, &e)) continue;
        Baton__Envelope *env = NULL;
        if (msg_unpack(m.data[0], m.len[0], NULL, &env, NULL, &e)) continue;
        if (env->body_case == body) return env;
        msg_free(env, NULL);
    }
    return NULL;
}

/* The coordinator goes away and a new one appears under the same endpoint: the worker says
 * Hello again; after lost_secs it drops its layers and returns to CONNECTING. */
Test(worker, coordinator_restart, .init = setup, .timeout = 30) {
    const char *path = fixture_path(MODEL);
    struct model_ident id;
    bt_err e = {0};
    cr_assert_eq(caps_model_ident(&id, path, &e), 0, "%s", e.msg);
    transport_t *c1 = inproc_server("tr-coord", 100), *c2 = NULL;
    struct worker_caps caps = {.ram_bytes = 1ull << 30, .cores = 2, .isa = "ref"};
    struct worker_opts o = {.kind = TRANSPORT_INPROC,
                            .join = "tr-coord",
                            .bind = "tr-d0",
                            .id = "wr",
                            .model_path = path,
                            .threads = 1,
                            .heartbeat_ms = 100,
                            .lost_secs = 1,
                            .caps = &caps};
    struct wthread t = {0};
    cr_assert_eq(worker_open(&t.w, &o, &e), 0, "%s", e.msg);
    cr_assert_eq(pthread_create(&t.th, NULL, wmain, &t), 0);
    Baton__Envelope *h = wait_body(c1, BATON__ENVELOPE__BODY_HELLO, 5000);
    cr_assert(h, "no hello");
    msg_free(h, NULL);
    /* Welcome + a one-stage load, then the coordinator vanishes. */
    Baton__Envelope env;
    Baton__Welcome wl;
    msg_init(&env, 0);
    baton__welcome__init(&wl);
    wl.protocol_version = MSG_PROTOCOL_VERSION;
    env.body_case = BATON__ENVELOPE__BODY_WELCOME;
    env.welcome = &wl;
    uint8_t *buf;
    size_t len;
    cr_assert_eq(msg_pack(&env, &buf, &len, &e), 0);
    struct tx_frame f = {.data = buf, .len = len};
    cr_assert_eq(transport_send(c1, "wr", &f, 1, &e), 0, "%s", e.msg);
    free(buf);
    Baton__ModelId mid = model_id_msg(&id);
    Baton__LoadLayers L;
    msg_init(&env, 5);
    baton__load_layers__init(&L);
    L.model = &mid;
    L.n_layers = 8;
    L.hi = 8;
    L.n_stages = 1;
    L.max_seqs = 1;
    L.max_ctx = 64;
    env.body_case = BATON__ENVELOPE__BODY_LOAD_LAYERS;
    env.load_layers = &L;
    cr_assert_eq(msg_pack(&env, &buf, &len, &e), 0);
    f = (struct tx_frame){.data = buf, .len = len};
    cr_assert_eq(transport_send(c1, "wr", &f, 1, &e), 0, "%s", e.msg);
    free(buf);
    Baton__Envelope *d = wait_body(c1, BATON__ENVELOPE__BODY_LOAD_DONE, 5000);
    cr_assert(d, "no load_done");
    cr_assert_eq(d->request_id, 5);
    msg_free(d, NULL);
    transport_close(c1);
    /* Past the liveness window (300 ms) and lost_secs (1 s): then a new coordinator. */
    usleep(1600 * 1000);
    c2 = inproc_server("tr-coord", 100);
    h = wait_body(c2, BATON__ENVELOPE__BODY_HELLO, 5000);
    cr_assert(h, "no hello to the new coordinator");
    cr_assert_str_eq(h->hello->worker_id, "wr");
    msg_free(h, NULL);
    /* The layers were dropped: a Forward now fails with "no layers loaded". */
    int32_t toks[2] = {1, 2};
    struct fwd_msg fm;
    fwd_init(&fm, 9, 0, 0, toks, 2, 0);
    msg_init(&env, 9);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &fm.f;
    cr_assert_eq(msg_pack(&env, &buf, &len, &e), 0);
    f = (struct tx_frame){.data = buf, .len = len};
    cr_assert_eq(transport_send(c2, "wr", &f, 1, &e), 0, "%s", e.msg);
    free(buf);
    Baton__Envelope *er = wait_body(c2, BATON__ENVELOPE__BODY_ERROR, 5000);
    cr_assert(er, "no error");
    cr_assert_eq(er->request_id, 9);
    cr_assert(strstr(er->error->message, "no layers loaded"), "%s", er->error->message);
    msg_free(er, NULL);
    worker_stop(t.w);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    worker_close(t.w);
    transport_close(c2);
}

/* A sequence exported from one stage and imported into another of the same range continues
 * exactly as it would have in place; malformed or foreign state is refused. */
Test(worker, state_export_import, .init = setup) {
    stage_t *a = open_stage(0, 8, 0), *b = open_stage(0, 8, 0);
    int32_t prompt[64];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    struct fwd_msg fm;
    struct stage_out so;
    bt_err e = {0};
    fwd_init(&fm, 1, 3, 0, prompt, (uint32_t)np, 0);
    cr_assert_eq(stage_forward(a, &fm.f, NULL, 0, &so, &e), 0, "%s", e.msg);
    int32_t tok = (int32_t)so.result->seqs[0]->token;
    void *buf = NULL;
    size_t len = 0;
    uint32_t n_pos = 0;
    cr_assert_eq(stage_export(a, 3, &buf, &len, &n_pos, &e), 0, "%s", e.msg);
    cr_assert_eq(n_pos, (uint32_t)np);
    void *none = NULL;
    size_t none_len = 0;
    cr_assert_eq(stage_export(a, 4, &none, &none_len, &n_pos, &e), BT_ENOKEY);
    cr_assert_null(none);
    /* Truncated state: refused, nothing taken. */
    void *buf2 = NULL;
    size_t len2 = 0;
    cr_assert_eq(stage_export(a, 3, &buf2, &len2, &n_pos, &e), 0);
    cr_assert_eq(len2, len);
    cr_assert_neq(stage_import(b, 3, buf2, len2 - 1, &e), 0);
    cr_assert_eq(stage_active(b), 0);
    free(buf2);
    cr_assert_eq(stage_import(b, 3, buf, len, &e), 0, "%s", e.msg);
    cr_assert_eq(stage_active(b), 1);
    /* Both continue with the same token: identical logits for 4 steps. */
    for (int step = 0; step < 4; step++) {
        struct fwd_msg fa, fb;
        fwd_init(&fa, 10 + (uint64_t)step, 3, (uint32_t)np + (uint32_t)step, &tok, 1, 1);
        fwd_init(&fb, 10 + (uint64_t)step, 3, (uint32_t)np + (uint32_t)step, &tok, 1, 1);
        struct stage_out oa, ob;
        cr_assert_eq(stage_forward(a, &fa.f, NULL, 0, &oa, &e), 0, "%s", e.msg);
        size_t V = oa.logits_len / sizeof(float);
        float *la = malloc(oa.logits_len);
        memcpy(la, oa.logits, oa.logits_len);
        int32_t ta = (int32_t)oa.result->seqs[0]->token;
        cr_assert_eq(stage_forward(b, &fb.f, NULL, 0, &ob, &e), 0, "%s", e.msg);
        cr_assert_eq(memcmp(la, ob.logits, V * sizeof(float)), 0, "step %d", step);
        cr_assert_eq((int32_t)ob.result->seqs[0]->token, ta);
        tok = ta;
        free(la);
    }
    /* A stage of another range refuses the state. */
    stage_t *c = open_stage(0, 4, 0);
    cr_assert_eq(stage_import(c, 3, buf, len, &e), BT_ESHAPE);
    free(buf);
    stage_close(a);
    stage_close(b);
    stage_close(c);
}
