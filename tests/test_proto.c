/* tests/test_proto.c: msg pack/unpack round trips for every body, every rejection path of
 * msg_unpack (garbage, truncation, version, missing body, inconsistent fields), payload checks,
 * and the wire activation encodings. */
#include "proto/msg.h"
#include "proto/wire.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* protobuf-c string fields are char *; the packer only reads them */
#define STR(s) ((char *)(uintptr_t)(s))

/* ---- helpers ---- */

static Baton__ModelId model_id(void) {
    Baton__ModelId m;
    baton__model_id__init(&m);
    m.name = STR("tiny-a.gguf");
    m.size = 123456789;
    m.header_xxh3 = 0x1234567890abcdefull;
    return m;
}

/* Packs env, unpacks it (malloc allocator) and returns the result; asserts success. */
static Baton__Envelope *roundtrip(const Baton__Envelope *env) {
    uint8_t *buf;
    size_t len;
    bt_err e = {0};
    cr_assert_eq(msg_pack(env, &buf, &len, &e), 0, "%s", e.msg);
    Baton__Envelope *out;
    uint64_t rid;
    int rc = msg_unpack(buf, len, NULL, &out, &rid, &e);
    free(buf);
    cr_assert_eq(rc, 0, "%s: %s", msg_body_name(env->body_case), e.msg);
    cr_assert_eq(out->body_case, env->body_case);
    cr_assert_eq(out->request_id, env->request_id);
    cr_assert_eq(rid, env->request_id);
    return out;
}

/* Packs env (no validation on the way out) and expects msg_unpack to fail with want. */
static void expect_reject(const Baton__Envelope *env, int want, const char *needle) {
    size_t len = baton__envelope__get_packed_size(env);
    uint8_t *buf = malloc(len + 1);
    baton__envelope__pack(env, buf);
    Baton__Envelope *out = (Baton__Envelope *)1;
    bt_err e = {0};
    int rc = msg_unpack(buf, len, NULL, &out, NULL, &e);
    free(buf);
    cr_assert_eq(rc, want, "%s: got %d (%s), want %d", msg_body_name(env->body_case), rc, e.msg,
                 want);
    cr_assert_null(out);
    if (needle) cr_assert(strstr(e.msg, needle), "message '%s' lacks '%s'", e.msg, needle);
}

/* A valid Forward for 3 sequences, hidden 64, f16 activations. Arrays are static storage. */
static uint64_t fw_seq[3] = {7, 9, 11};
static uint32_t fw_pos[3] = {0, 15, 40};
static uint32_t fw_ntok[3] = {5, 1, 1};
static protobuf_c_boolean fw_sample[3] = {1, 1, 0};
static uint32_t fw_tok[7] = {1, 2, 3, 4, 5, 6, 7};

static void forward_init(Baton__Forward *f) {
    baton__forward__init(f);
    f->batch_id = 42;
    f->n_seq_id = f->n_pos = f->n_n_tokens = f->n_sample = 3;
    f->seq_id = fw_seq;
    f->pos = fw_pos;
    f->n_tokens = fw_ntok;
    f->sample = fw_sample;
    f->wire_dtype = BATON__WIRE_DTYPE__WIRE_F16;
    f->hidden = 64;
    f->n_token_ids = 7;
    f->token_ids = fw_tok;
    f->stage_index = 1;
}

/* ---- round trips ---- */

Test(msg, roundtrip_hello_welcome) {
    Baton__ModelId mid = model_id();
    Baton__Hello h;
    baton__hello__init(&h);
    h.worker_id = STR("w1");
    h.ram_bytes = 64ull << 30;
    h.mem_budget_bytes = 48ull << 30;
    h.cores = 16;
    h.isa = STR("avx2");
    h.mem_bw_gbps = 21.5f;
    h.matmul_gflops = 300.25f;
    h.has_model = 1;
    h.model = &mid;
    h.protocol_version = MSG_PROTOCOL_VERSION;
    h.data_endpoint = STR("tcp://10.0.0.5:7702");
    Baton__Envelope env;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    Baton__Envelope *o = roundtrip(&env);
    cr_assert_str_eq(o->hello->worker_id, "w1");
    cr_assert_eq(o->hello->ram_bytes, 64ull << 30);
    cr_assert_eq(o->hello->cores, 16);
    cr_assert_str_eq(o->hello->isa, "avx2");
    cr_assert_float_eq(o->hello->mem_bw_gbps, 21.5f, 0.0f);
    cr_assert_float_eq(o->hello->matmul_gflops, 300.25f, 0.0f);
    cr_assert(o->hello->has_model);
    cr_assert_eq(o->hello->model->header_xxh3, 0x1234567890abcdefull);
    cr_assert_str_eq(o->hello->data_endpoint, "tcp://10.0.0.5:7702");
    msg_free(o, NULL);

    Baton__Welcome w;
    baton__welcome__init(&w);
    w.protocol_version = 1;
    w.coordinator_id = STR("coord");
    w.heartbeat_ms = 1000;
    w.heartbeat_liveness = 3;
    msg_init(&env, 2);
    env.body_case = BATON__ENVELOPE__BODY_WELCOME;
    env.welcome = &w;
    o = roundtrip(&env);
    cr_assert_eq(o->welcome->heartbeat_ms, 1000);
    cr_assert_str_eq(o->welcome->coordinator_id, "coord");
    msg_free(o, NULL);
}

Test(msg, roundtrip_plan_load_done) {
    Baton__ModelId mid = model_id();
    Baton__StageAssignment s0, s1;
    baton__stage_assignment__init(&s0);
    baton__stage_assignment__init(&s1);
    s0.worker_id = STR("w1");
    s0.lo = 0;
    s0.hi = 10;
    s1.worker_id = STR("w2");
    s1.lo = 10;
    s1.hi = 24;
    s1.data_endpoint = STR("tcp://h2:1");
    Baton__StageAssignment *st[2] = {&s0, &s1};
    Baton__Plan p;
    baton__plan__init(&p);
    p.plan_id = 5;
    p.model = &mid;
    p.n_layers = 24;
    p.n_stages = 2;
    p.stages = st;
    p.wire_dtype = BATON__WIRE_DTYPE__WIRE_Q8_0;
    p.max_seqs = 8;
    p.max_ctx = 4096;
    Baton__Envelope env;
    msg_init(&env, 3);
    env.body_case = BATON__ENVELOPE__BODY_PLAN;
    env.plan = &p;
    Baton__Envelope *o = roundtrip(&env);
    cr_assert_eq(o->plan->n_stages, 2);
    cr_assert_eq(o->plan->stages[1]->lo, 10);
    cr_assert_str_eq(o->plan->stages[1]->data_endpoint, "tcp://h2:1");
    cr_assert_eq(o->plan->wire_dtype, BATON__WIRE_DTYPE__WIRE_Q8_0);
    msg_free(o, NULL);

    Baton__LoadLayers l;
    baton__load_layers__init(&l);
    l.plan_id = 5;
    l.model = &mid;
    l.n_layers = 24;
    l.lo = 0;
    l.hi = 10;
    l.stage_index = 0;
    l.n_stages = 2;
    l.next_endpoint = STR("tcp://h2:1");
    l.state_budget_bytes = 1ull << 30;
    l.max_seqs = 8;
    l.max_ctx = 4096;
    msg_init(&env, 4);
    env.body_case = BATON__ENVELOPE__BODY_LOAD_LAYERS;
    env.load_layers = &l;
    o = roundtrip(&env);
    cr_assert_eq(o->load_layers->hi, 10);
    cr_assert_eq(o->load_layers->state_budget_bytes, 1ull << 30);
    cr_assert_eq(o->load_layers->wire_dtype, BATON__WIRE_DTYPE__WIRE_F16, "f16 is the default");
    cr_assert_str_eq(o->load_layers->model->name, "tiny-a.gguf");
    msg_free(o, NULL);

    Baton__LoadDone d;
    baton__load_done__init(&d);
    d.plan_id = 5;
    d.lo = 0;
    d.hi = 10;
    d.weight_bytes = 999;
    d.load_secs = 1.5f;
    msg_init(&env, 4);
    env.body_case = BATON__ENVELOPE__BODY_LOAD_DONE;
    env.load_done = &d;
    o = roundtrip(&env);
    cr_assert_eq(o->load_done->weight_bytes, 999);
    msg_free(o, NULL);
}

Test(msg, roundtrip_forward_result) {
    Baton__Forward f;
    forward_init(&f);
    uint32_t stops[2] = {151643, 151645};
    Baton__SamplingParams sp[3];
    Baton__SamplingParams *spp[3];
    for (int i = 0; i < 3; i++) {
        baton__sampling_params__init(&sp[i]);
        sp[i].temperature = 0.7f;
        sp[i].top_p = 0.9f;
        sp[i].top_k = 40;
        sp[i].seed = 1000u + (unsigned)i;
        sp[i].logprobs = 5;
        sp[i].n_stop_token_ids = 2;
        sp[i].stop_token_ids = stops;
        spp[i] = &sp[i];
    }
    f.n_sampling = 3;
    f.sampling = spp;
    Baton__Envelope env;
    msg_init(&env, 10);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    Baton__Envelope *o = roundtrip(&env);
    const Baton__Forward *g = o->forward;
    cr_assert_eq(g->n_seq_id, 3);
    cr_assert_eq(g->seq_id[2], 11);
    cr_assert_eq(g->pos[1], 15);
    cr_assert_eq(g->n_tokens[0], 5);
    cr_assert_eq(g->n_token_ids, 7);
    cr_assert_eq(g->sampling[2]->seed, 1002);
    cr_assert_eq(g->sampling[0]->stop_token_ids[1], 151645);
    cr_assert_eq(g->hidden, 64);
    size_t want = 7 * 64 * 2, bad = want - 1;
    bt_err e = {0};
    cr_assert_eq(msg_check_payload(o, 1, &want, &e), 0, "%s", e.msg);
    cr_assert_eq(msg_check_payload(o, 1, &bad, &e), BT_EPROTO);
    cr_assert_eq(msg_check_payload(o, 0, NULL, &e), BT_EPROTO);
    msg_free(o, NULL);

    Baton__TokenLogprob t1, t2;
    baton__token_logprob__init(&t1);
    baton__token_logprob__init(&t2);
    t1.token = 5;
    t1.logprob = -0.1f;
    t2.token = 6;
    t2.logprob = -2.5f;
    Baton__TokenLogprob *tops[2] = {&t1, &t2};
    Baton__SeqResult r0, r1;
    baton__seq_result__init(&r0);
    baton__seq_result__init(&r1);
    r0.seq_id = 7;
    r0.token = 5;
    r0.pos = 5;
    r0.has_logprob = 1;
    r0.logprob = -0.1f;
    r0.n_top = 2;
    r0.top = tops;
    r1.seq_id = 9;
    r1.token = 151645;
    r1.finish = BATON__FINISH_REASON__FINISH_STOP;
    Baton__SeqResult *rs[2] = {&r0, &r1};
    Baton__Result r;
    baton__result__init(&r);
    r.batch_id = 42;
    r.n_seqs = 2;
    r.seqs = rs;
    msg_init(&env, 10);
    env.body_case = BATON__ENVELOPE__BODY_RESULT;
    env.result = &r;
    o = roundtrip(&env);
    cr_assert_eq(o->result->n_seqs, 2);
    cr_assert_eq(o->result->seqs[0]->top[1]->token, 6);
    cr_assert_eq(o->result->seqs[1]->finish, BATON__FINISH_REASON__FINISH_STOP);
    cr_assert_eq(msg_check_payload(o, 0, NULL, &e), 0, "%s", e.msg);
    msg_free(o, NULL);
}

Test(msg, roundtrip_state_control_chunks) {
    Baton__ModelId mid = model_id();
    Baton__Envelope env, *o;
    bt_err e = {0};

    Baton__StateExport sx;
    baton__state_export__init(&sx);
    sx.seq_id = 77;
    sx.lo = 4;
    sx.hi = 8;
    msg_init(&env, 20);
    env.body_case = BATON__ENVELOPE__BODY_STATE_EXPORT;
    env.state_export = &sx;
    o = roundtrip(&env);
    cr_assert_eq(o->state_export->seq_id, 77);
    msg_free(o, NULL);

    uint64_t fb[2] = {1000, 24};
    Baton__StateImport si;
    baton__state_import__init(&si);
    si.seq_id = 77;
    si.lo = 4;
    si.hi = 8;
    si.n_pos = 300;
    si.n_frame_bytes = 2;
    si.frame_bytes = fb;
    si.xxh3 = 99;
    si.model = &mid;
    msg_init(&env, 20);
    env.body_case = BATON__ENVELOPE__BODY_STATE_IMPORT;
    env.state_import = &si;
    o = roundtrip(&env);
    cr_assert_eq(o->state_import->n_pos, 300);
    size_t lens[2] = {1000, 24};
    cr_assert_eq(msg_check_payload(o, 2, lens, &e), 0, "%s", e.msg);
    lens[1] = 25;
    cr_assert_eq(msg_check_payload(o, 2, lens, &e), BT_EPROTO);
    cr_assert_eq(msg_check_payload(o, 1, lens, &e), BT_EPROTO);
    msg_free(o, NULL);

    Baton__Heartbeat hb;
    baton__heartbeat__init(&hb);
    hb.sent_ns = 123;
    hb.state = BATON__WORKER_STATE__WS_SERVING;
    hb.active_seqs = 3;
    msg_init(&env, 0);
    env.body_case = BATON__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    o = roundtrip(&env);
    cr_assert_eq(o->heartbeat->state, BATON__WORKER_STATE__WS_SERVING);
    msg_free(o, NULL);

    Baton__Drain dr;
    baton__drain__init(&dr);
    dr.deadline_ms = 5000;
    msg_init(&env, 21);
    env.body_case = BATON__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    o = roundtrip(&env);
    cr_assert_eq(o->drain->deadline_ms, 5000);
    msg_free(o, NULL);

    uint64_t cs[2] = {3, 4};
    Baton__Cancel c;
    baton__cancel__init(&c);
    c.n_seq_id = 2;
    c.seq_id = cs;
    msg_init(&env, 22);
    env.body_case = BATON__ENVELOPE__BODY_CANCEL;
    env.cancel = &c;
    o = roundtrip(&env);
    cr_assert_eq(o->cancel->seq_id[1], 4);
    msg_free(o, NULL);

    Baton__Error er;
    msg_error_reply(&env, &er, 23, BT_ECAPACITY, "no free sequence slot (64/64)");
    o = roundtrip(&env);
    cr_assert_str_eq(o->error->code, "capacity");
    cr_assert_str_eq(o->error->message, "no free sequence slot (64/64)");
    cr_assert_eq(o->error->request_id, 23);
    msg_free(o, NULL);

    Baton__ModelChunkRequest mr;
    baton__model_chunk_request__init(&mr);
    mr.model = &mid;
    mr.offset = 1000;
    mr.length = 4096;
    msg_init(&env, 24);
    env.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST;
    env.model_chunk_request = &mr;
    o = roundtrip(&env);
    cr_assert_eq(o->model_chunk_request->length, 4096);
    msg_free(o, NULL);

    Baton__ModelChunk mc;
    baton__model_chunk__init(&mc);
    mc.model = &mid;
    mc.offset = 1000;
    mc.length = 4096;
    mc.xxh3 = 0xfeed;
    msg_init(&env, 24);
    env.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK;
    env.model_chunk = &mc;
    o = roundtrip(&env);
    cr_assert_eq(o->model_chunk->xxh3, 0xfeed);
    size_t cl = 4096, cl_bad = 4095;
    cr_assert_eq(msg_check_payload(o, 1, &cl, &e), 0, "%s", e.msg);
    cr_assert_eq(msg_check_payload(o, 1, &cl_bad, &e), BT_EPROTO);
    msg_free(o, NULL);

    Baton__Shutdown sd;
    baton__shutdown__init(&sd);
    sd.reason = STR("operator");
    msg_init(&env, 25);
    env.body_case = BATON__ENVELOPE__BODY_SHUTDOWN;
    env.shutdown = &sd;
    o = roundtrip(&env);
    cr_assert_str_eq(o->shutdown->reason, "operator");
    size_t one = 1;
    cr_assert_eq(msg_check_payload(o, 1, &one, &e), BT_EPROTO, "shutdown has no payload");
    msg_free(o, NULL);
}

Test(msg, arena_unpack_needs_no_malloc_and_reports_exhaustion) {
    Baton__Forward f;
    forward_init(&f);
    Baton__Envelope env;
    msg_init(&env, 9);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    uint8_t buf[1024];
    size_t len;
    bt_err e = {0};
    cr_assert_eq(msg_pack_into(&env, buf, sizeof buf, &len, &e), 0, "%s", e.msg);
    cr_assert_eq(msg_pack_into(&env, buf, 4, &len, &e), BT_EMSGSIZE);
    cr_assert_eq(msg_pack_into(&env, buf, sizeof buf, &len, &e), 0);

    static _Alignas(16) unsigned char mem[8192];
    struct msg_arena a;
    msg_arena_init(&a, mem, sizeof mem);
    Baton__Envelope *o;
    cr_assert_eq(msg_unpack(buf, len, &a.alloc, &o, NULL, &e), 0, "%s", e.msg);
    cr_assert_eq(o->forward->seq_id[1], 9);
    cr_assert((unsigned char *)o >= mem && (unsigned char *)o < mem + sizeof mem);
    msg_free(o, &a.alloc);
    msg_arena_reset(&a);

    msg_arena_init(&a, mem, 64); /* too small for the envelope + forward */
    cr_assert_eq(msg_unpack(buf, len, &a.alloc, &o, NULL, &e), -ENOMEM, "%s", e.msg);
    cr_assert_null(o);
    cr_assert_eq(a.used, 0, "a failed unpack gives its arena memory back");
}

/* ---- rejections ---- */

Test(msg, rejects_garbage_truncation_and_size) {
    bt_err e = {0};
    Baton__Envelope *o;
    /* 0xff... : field 31 of wire type 7 (invalid) */
    uint8_t junk[16];
    memset(junk, 0xff, sizeof junk);
    cr_assert_eq(msg_unpack(junk, sizeof junk, NULL, &o, NULL, &e), BT_EFORMAT);
    cr_assert_null(o);

    Baton__Forward f;
    forward_init(&f);
    Baton__Envelope env;
    msg_init(&env, 9);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    uint8_t *buf;
    size_t len;
    cr_assert_eq(msg_pack(&env, &buf, &len, &e), 0);
    int n_reject = 0;
    for (size_t cut = 1; cut < len; cut++) { /* every truncation is rejected, none crashes */
        int rc = msg_unpack(buf, cut, NULL, &o, NULL, &e);
        if (rc == 0)
            msg_free(o, NULL);
        else
            n_reject++;
        cr_assert(rc == 0 || rc == BT_EFORMAT || rc == BT_EPROTO || rc == BT_EVERSION, "%d", rc);
    }
    cr_assert_eq(n_reject, (int)len - 1, "a truncated Forward must never validate");
    free(buf);

    static uint8_t big[MSG_MAX_BYTES + 1];
    cr_assert_eq(msg_unpack(big, sizeof big, NULL, &o, NULL, &e), BT_EMSGSIZE);

    uint8_t randbuf[256];
    unsigned seed = 12345;
    for (int it = 0; it < 2000; it++) {
        size_t n = (size_t)(rand_r(&seed) % (int)sizeof randbuf);
        for (size_t i = 0; i < n; i++)
            randbuf[i] = (uint8_t)rand_r(&seed);
        int rc = msg_unpack(randbuf, n, NULL, &o, NULL, &e);
        if (rc == 0) msg_free(o, NULL); /* random bytes may form a valid message: fine, no crash */
    }
}

Test(msg, rejects_wrong_version_and_missing_body) {
    Baton__Drain dr;
    baton__drain__init(&dr);
    Baton__Envelope env;
    msg_init(&env, 77);
    env.version = 7;
    env.body_case = BATON__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    expect_reject(&env, BT_EVERSION, "peer speaks protocol v7, we speak v1");
    env.version = 0; /* a peer that never set it */
    expect_reject(&env, BT_EVERSION, "v0");

    /* version mismatch still tells the caller which request to answer */
    size_t len = baton__envelope__get_packed_size(&env);
    uint8_t buf[64];
    baton__envelope__pack(&env, buf);
    Baton__Envelope *o;
    uint64_t rid = 0;
    cr_assert_eq(msg_unpack(buf, len, NULL, &o, &rid, NULL), BT_EVERSION);
    cr_assert_eq(rid, 77);

    msg_init(&env, 78);
    expect_reject(&env, BT_EPROTO, "no body");

    /* a body from a newer peer: field 99, varint 1 after a valid version */
    uint8_t newer[] = {0x08, 0x01, 0x98, 0x06, 0x01};
    bt_err e = {0};
    cr_assert_eq(msg_unpack(newer, sizeof newer, NULL, &o, NULL, &e), BT_EPROTO);
    cr_assert(strstr(e.msg, "unknown body"), "%s", e.msg);

    uint8_t *p;
    cr_assert_eq(msg_pack(&env, &p, &len, &e), BT_EINVAL, "no body: refused on send too");
}

Test(msg, rejects_inconsistent_forward) {
    Baton__Forward f;
    Baton__Envelope env;
    msg_init(&env, 9);
    env.body_case = BATON__ENVELOPE__BODY_FORWARD;
    env.forward = &f;

    forward_init(&f);
    f.n_pos = 2;
    expect_reject(&env, BT_EPROTO, "3 seq_id but 2 pos");
    forward_init(&f);
    f.n_sample = 1;
    expect_reject(&env, BT_EPROTO, "1 sample");
    forward_init(&f);
    f.n_token_ids = 6;
    expect_reject(&env, BT_EPROTO, "6 token_ids for 7 rows");
    forward_init(&f);
    f.n_seq_id = f.n_pos = f.n_n_tokens = f.n_sample = 0;
    f.n_token_ids = 0;
    expect_reject(&env, BT_EPROTO, "0 sequences");
    forward_init(&f);
    uint32_t zero[3] = {5, 0, 2};
    f.n_tokens = zero;
    expect_reject(&env, BT_EPROTO, "n_tokens 0");
    forward_init(&f);
    uint64_t dup[3] = {7, 9, 7};
    f.seq_id = dup;
    expect_reject(&env, BT_EPROTO, "seq 7 appears twice");
    forward_init(&f);
    f.wire_dtype = (Baton__WireDtype)9;
    expect_reject(&env, BT_EPROTO, "unknown wire dtype 9");
    forward_init(&f);
    f.wire_dtype = BATON__WIRE_DTYPE__WIRE_Q8_0;
    f.hidden = 48;
    expect_reject(&env, BT_EPROTO, "multiple of 32");
    forward_init(&f);
    f.hidden = 0;
    f.n_token_ids = 0;
    expect_reject(&env, BT_EPROTO, "neither token_ids nor activations");
    forward_init(&f);
    uint32_t huge[3] = {MSG_MAX_TOKENS, MSG_MAX_TOKENS, 1};
    f.n_tokens = huge;
    f.n_token_ids = 0;
    expect_reject(&env, BT_EPROTO, "rows >");
    forward_init(&f);
    Baton__SamplingParams sp, *spp[3] = {&sp, &sp, &sp};
    baton__sampling_params__init(&sp);
    sp.top_p = 1.5f;
    f.n_sampling = 3;
    f.sampling = spp;
    expect_reject(&env, BT_EPROTO, "top_p 1.5");
    sp.top_p = 0.5f;
    sp.temperature = NAN;
    expect_reject(&env, BT_EPROTO, "temperature nan");
    sp.temperature = 1.0f;
    sp.logprobs = 21;
    expect_reject(&env, BT_EPROTO, "logprobs 21");
}

Test(msg, rejects_bad_ranges_and_fields) {
    Baton__ModelId mid = model_id();
    Baton__Envelope env;

    Baton__LoadLayers l;
    baton__load_layers__init(&l);
    l.model = &mid;
    l.n_layers = 24;
    l.lo = 10;
    l.hi = 10;
    l.stage_index = 1;
    l.n_stages = 2;
    l.max_seqs = 4;
    l.max_ctx = 512;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_LOAD_LAYERS;
    env.load_layers = &l;
    expect_reject(&env, BT_EPROTO, "[10, 10)");
    l.hi = 25;
    expect_reject(&env, BT_EPROTO, "[10, 25)");
    l.hi = 20; /* last stage must end at n_layers */
    expect_reject(&env, BT_EPROTO, "only the last ends");
    l.hi = 24;
    l.stage_index = 2;
    expect_reject(&env, BT_EPROTO, "stage 2 of 2");
    l.stage_index = 1;
    l.model = NULL;
    expect_reject(&env, BT_EPROTO, "model identity missing");
    l.model = &mid;
    l.max_seqs = 0;
    expect_reject(&env, BT_EPROTO, "max_seqs 0");

    Baton__StageAssignment s0, s1;
    baton__stage_assignment__init(&s0);
    baton__stage_assignment__init(&s1);
    s0.worker_id = STR("a");
    s0.hi = 10;
    s1.worker_id = STR("b");
    s1.lo = 11; /* gap */
    s1.hi = 24;
    Baton__StageAssignment *st[2] = {&s0, &s1};
    Baton__Plan p;
    baton__plan__init(&p);
    p.model = &mid;
    p.n_layers = 24;
    p.n_stages = 2;
    p.stages = st;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_PLAN;
    env.plan = &p;
    expect_reject(&env, BT_EPROTO, "expected to start at 10");
    s1.lo = 10;
    s1.hi = 20;
    expect_reject(&env, BT_EPROTO, "stages end at layer 20");
    s1.hi = 24;
    s1.worker_id = STR("");
    expect_reject(&env, BT_EPROTO, "worker_id: empty");

    Baton__Hello h;
    baton__hello__init(&h);
    h.worker_id = STR("");
    h.cores = 4;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    expect_reject(&env, BT_EPROTO, "hello.worker_id: empty");
    h.worker_id = STR("w");
    h.mem_bw_gbps = -1.0f;
    expect_reject(&env, BT_EPROTO, "bandwidth");
    h.mem_bw_gbps = 1.0f;
    h.has_model = 1;
    expect_reject(&env, BT_EPROTO, "model identity missing");

    Baton__ModelChunkRequest mr;
    baton__model_chunk_request__init(&mr);
    mr.model = &mid;
    mr.offset = mid.size - 10;
    mr.length = 11; /* past the end of the file */
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST;
    env.model_chunk_request = &mr;
    expect_reject(&env, BT_EPROTO, "outside");
    mr.offset = 0;
    mr.length = MSG_MAX_CHUNK + 1;
    expect_reject(&env, BT_EPROTO, "outside");
    mr.offset = UINT64_MAX; /* overflow of offset + length */
    mr.length = 10;
    expect_reject(&env, BT_EPROTO, "outside");

    Baton__Error er;
    baton__error__init(&er);
    er.code = STR("");
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_ERROR;
    env.error = &er;
    expect_reject(&env, BT_EPROTO, "error.code: empty");

    Baton__Cancel c;
    baton__cancel__init(&c);
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_CANCEL;
    env.cancel = &c;
    expect_reject(&env, BT_EPROTO, "cancel: 0 sequences");

    Baton__Heartbeat hb;
    baton__heartbeat__init(&hb);
    hb.state = (Baton__WorkerState)17;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    expect_reject(&env, BT_EPROTO, "unknown worker state 17");

    Baton__SeqResult r0, *rs[1] = {&r0};
    baton__seq_result__init(&r0);
    r0.finish = (Baton__FinishReason)8;
    Baton__Result r;
    baton__result__init(&r);
    r.n_seqs = 1;
    r.seqs = rs;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_RESULT;
    env.result = &r;
    expect_reject(&env, BT_EPROTO, "unknown finish 8");

    Baton__StateImport si;
    baton__state_import__init(&si);
    si.lo = 0;
    si.hi = 2;
    msg_init(&env, 1);
    env.body_case = BATON__ENVELOPE__BODY_STATE_IMPORT;
    env.state_import = &si;
    expect_reject(&env, BT_EPROTO, "0 frames");
}

Test(msg, code_words) {
    cr_assert_str_eq(msg_code_word(BT_EVERSION), "version");
    cr_assert_str_eq(msg_code_word(BT_EFORMAT), "malformed");
    cr_assert_str_eq(msg_code_word(BT_EPROTO), "protocol");
    cr_assert_str_eq(msg_code_word(-5), "internal");
    cr_assert_str_eq(msg_body_name(BATON__ENVELOPE__BODY_FORWARD), "forward");
}

/* ---- wire ---- */

static float *rand_rows(int64_t n, int64_t h, unsigned seed, float scale) {
    float *x = malloc((size_t)(n * h) * sizeof *x);
    for (int64_t i = 0; i < n * h; i++)
        x[i] = ((float)rand_r(&seed) / (float)RAND_MAX * 2.0f - 1.0f) * scale;
    return x;
}

Test(wire, f32_exact_f16_close_q8_0_within_block_bound) {
    const int64_t n = 7, h = 96;
    float *x = rand_rows(n, h, 7, 10.0f);
    x[3] = 0.0f;
    x[4] = -1e-7f; /* f16 subnormal range */
    x[100] = 65000.0f;
    float *y = malloc((size_t)(n * h) * sizeof *y);
    bt_err e = {0};
    for (int dt = 0; dt < WIRE_DTYPE_COUNT; dt++) {
        size_t bytes;
        cr_assert_eq(wire_bytes(dt, n, h, &bytes, &e), 0, "%s", e.msg);
        size_t want = dt == WIRE_F32   ? (size_t)(n * h * 4)
                      : dt == WIRE_F16 ? (size_t)(n * h * 2)
                                       : (size_t)(n * h / 32 * 34);
        cr_assert_eq(bytes, want, "%s", wire_dtype_name(dt));
        unsigned char *buf = malloc(bytes);
        wire_encode(dt, x, n, h, buf);
        cr_assert_eq(wire_decode(dt, buf, bytes, n, h, y, &e), 0, "%s", e.msg);
        cr_assert_eq(wire_decode(dt, buf, bytes - 1, n, h, y, &e), BT_EPROTO);
        cr_assert_eq(wire_decode(dt, buf, bytes, n, h, y, &e), 0);
        for (int64_t b = 0; b < n * h; b += 32) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[b + j]));
            for (int j = 0; j < 32; j++) {
                float a = x[b + j], r = y[b + j];
                if (dt == WIRE_F32)
                    cr_assert(a == r, "f32 [%lld] %g != %g", (long long)(b + j), (double)a,
                              (double)r);
                else if (dt == WIRE_F16)
                    cr_assert(fabsf(a - r) <= 1e-3f * fabsf(a) + 6e-8f, "f16 %g -> %g", (double)a,
                              (double)r);
                else
                    cr_assert(fabsf(a - r) <= amax / 127.0f, "q8_0 %g -> %g (block max %g)",
                              (double)a, (double)r, (double)amax);
            }
        }
        free(buf);
    }
    free(x);
    free(y);
}

Test(wire, f16_rounding_and_specials) {
    cr_assert_eq(wire_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(wire_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(wire_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(wire_f32_to_f16(70000.0f), 0x7c00, "overflow -> inf");
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0) */
    cr_assert_eq(wire_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    /* 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up */
    cr_assert_eq(wire_f32_to_f16(1.0f + 3.0f * 0x1p-11f), 0x3c02);
    cr_assert_eq(wire_f32_to_f16(0x1p-24f), 0x0001, "smallest subnormal");
    cr_assert(isnan(wire_f16_to_f32(wire_f32_to_f16(NAN))));
    cr_assert_float_eq(wire_f16_to_f32(0x3555), 0.333251953125f, 0.0f);
}

Test(wire, rejects_bad_shapes_and_scales) {
    size_t b;
    bt_err e = {0};
    cr_assert_eq(wire_bytes(WIRE_Q8_0, 1, 48, &b, &e), BT_EINVAL);
    cr_assert_eq(wire_bytes(3, 1, 64, &b, &e), BT_EINVAL);
    cr_assert_eq(wire_bytes(WIRE_F32, 1, 0, &b, &e), BT_EINVAL);
    cr_assert_eq(wire_bytes(WIRE_F32, INT64_MAX / 2, 1 << 20, &b, &e), BT_EINVAL, "overflow");
    cr_assert_eq(wire_bytes(WIRE_F16, 0, 64, &b, &e), 0);
    cr_assert_eq(b, 0);
    unsigned char blk[34] = {0};
    blk[0] = 0x00;
    blk[1] = 0x7c; /* scale = +inf */
    float y[32];
    cr_assert_eq(wire_decode(WIRE_Q8_0, blk, sizeof blk, 1, 32, y, &e), BT_EPROTO);
    cr_assert_eq(wire_dtype_from_name("Q8_0"), WIRE_Q8_0);
    cr_assert_eq(wire_dtype_from_name("f16"), WIRE_F16);
    cr_assert_eq(wire_dtype_from_name("bf16"), -1);
}

/* fuzz_msg found this (tests/fixtures/bad/field_zero.msg): a Forward holding an unknown field
 * whose tag is an over-long varint of 0. protobuf-c accepts it and then packs bytes it refuses
 * to unpack, so msg_unpack rejects field number 0 anywhere. */
Test(msg, rejects_field_number_zero) {
    static const uint8_t crash[] = {0x08, 0x01, 0x10, 0x04, 0x7a, 0x2c, 0x08, 0x09, 0x12, 0x02,
                                    0x01, 0x02, 0x1a, 0x02, 0x00, 0x09, 0x22, 0x02, 0x03, 0x01,
                                    0x80, 0x80, 0x00, 0x32, 0x40, 0x40, 0x4a, 0x04, 0x05, 0x00,
                                    0x00, 0x04, 0x52, 0x07, 0x0d, 0x00, 0x00, 0x00, 0x3f, 0x18,
                                    0x04, 0x52, 0x07, 0x0d, 0x00, 0x00, 0x00, 0x3f, 0x18, 0x04};
    Baton__Envelope *o;
    bt_err e = {0};
    cr_assert_eq(msg_unpack(crash, sizeof crash, NULL, &o, NULL, &e), BT_EFORMAT, "%s", e.msg);
    cr_assert(strstr(e.msg, "field number 0"), "%s", e.msg);
}
