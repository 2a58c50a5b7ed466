/* proto/msg.c: see msg.h. Validation is one function per body; each names the message and the
 * field that failed, with expected vs actual. */
#include "proto/msg.h"

#include "proto/wire.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)BATON__WIRE_DTYPE__WIRE_F16 == WIRE_F16, "wire dtype f16");
_Static_assert((int)BATON__WIRE_DTYPE__WIRE_F32 == WIRE_F32, "wire dtype f32");
_Static_assert((int)BATON__WIRE_DTYPE__WIRE_Q8_0 == WIRE_Q8_0, "wire dtype q8_0");

/* ---- arena allocator ---- */

static void *arena_alloc(void *data, size_t size) {
    struct msg_arena *a = data;
    size_t at = (a->used + 15u) & ~(size_t)15u; /* 16-byte alignment covers every field type */
    if (at < a->used || at > a->cap || size > a->cap - at) {
        a->exhausted = 1;
        return NULL;
    }
    a->used = at + size;
    return a->buf + at;
}

static void arena_free(void *data, void *p) {
    (void)data; /* memory comes back with msg_arena_reset */
    (void)p;
}

void msg_arena_init(struct msg_arena *a, void *buf, size_t cap) {
    a->buf = buf;
    a->cap = cap;
    a->used = 0;
    a->exhausted = 0;
    a->alloc.alloc = arena_alloc;
    a->alloc.free = arena_free;
    a->alloc.allocator_data = a;
}

void msg_arena_reset(struct msg_arena *a) {
    a->used = 0;
    a->exhausted = 0;
}

/* ---- pack ---- */

void msg_init(Baton__Envelope *env, uint64_t request_id) {
    baton__envelope__init(env);
    env->version = MSG_PROTOCOL_VERSION;
    env->request_id = request_id;
}

static int pack_size(const Baton__Envelope *env, size_t *n, bt_err *e) {
    if (env->body_case == BATON__ENVELOPE__BODY__NOT_SET)
        return bt_fail(e, BT_EINVAL, "msg_pack: envelope %llu has no body",
                       (unsigned long long)env->request_id);
    *n = baton__envelope__get_packed_size(env);
    if (*n > MSG_MAX_BYTES)
        return bt_fail(e, BT_EMSGSIZE, "msg_pack: %s is %zu bytes > cap %u",
                       msg_body_name(env->body_case), *n, MSG_MAX_BYTES);
    return 0;
}

int msg_pack(const Baton__Envelope *env, uint8_t **out, size_t *len, bt_err *e) {
    size_t n = 0;
    int rc = pack_size(env, &n, e);
    if (rc) return rc;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return bt_fail(e, -ENOMEM, "msg_pack: %zu bytes", n);
    *len = baton__envelope__pack(env, buf);
    *out = buf;
    return 0;
}

int msg_pack_into(const Baton__Envelope *env, void *buf, size_t cap, size_t *len, bt_err *e) {
    size_t n = 0;
    int rc = pack_size(env, &n, e);
    if (rc) return rc;
    if (n > cap)
        return bt_fail(e, BT_EMSGSIZE, "msg_pack: %s needs %zu bytes, buffer has %zu",
                       msg_body_name(env->body_case), n, cap);
    *len = baton__envelope__pack(env, buf);
    return 0;
}

/* ---- validation helpers ---- */

#define BAD(...) bt_fail(e, BT_EPROTO, __VA_ARGS__)

static int check_str(const char *s, size_t max, int required, const char *what, bt_err *e) {
    size_t n = s ? strlen(s) : 0;
    if (required && n == 0) return BAD("%s: empty", what);
    if (n > max) return BAD("%s: %zu bytes > %zu", what, n, max);
    return 0;
}

static int check_dtype(int dt, const char *what, bt_err *e) {
    if (dt < 0 || dt >= WIRE_DTYPE_COUNT) return BAD("%s: unknown wire dtype %d", what, dt);
    return 0;
}

static int check_range(uint32_t lo, uint32_t hi, uint32_t n_layers, const char *what, bt_err *e) {
    if (lo >= hi || hi > n_layers)
        return BAD("%s: layer range [%u, %u) not within 0 < hi <= %u", what, lo, hi, n_layers);
    return 0;
}

static int check_model(const Baton__ModelId *m, const char *what, bt_err *e) {
    if (!m) return BAD("%s: model identity missing", what);
    if (m->size == 0) return BAD("%s: model size is 0", what);
    return check_str(m->name, MSG_MAX_STRING, 0, what, e);
}

/* identity strings become ZeroMQ routing ids: 1..255 bytes, not starting with NUL */
static int check_id(const char *s, const char *what, bt_err *e) {
    return check_str(s, 255, 1, what, e);
}

static int check_hello(const Baton__Hello *m, bt_err *e) {
    int rc;
    if ((rc = check_id(m->worker_id, "hello.worker_id", e)) ||
        (rc = check_str(m->isa, 64, 0, "hello.isa", e)) ||
        (rc = check_str(m->data_endpoint, MSG_MAX_STRING, 0, "hello.data_endpoint", e)) ||
        (rc = check_str(m->hostname, MSG_MAX_STRING, 0, "hello.hostname", e)))
        return rc;
    if (m->cores == 0) return BAD("hello %s: cores = 0", m->worker_id);
    if (!isfinite(m->mem_bw_gbps) || m->mem_bw_gbps < 0.0f || !isfinite(m->matmul_gflops) ||
        m->matmul_gflops < 0.0f)
        return BAD("hello %s: bandwidth %g GB/s / matmul %g GFLOP/s not finite >= 0", m->worker_id,
                   (double)m->mem_bw_gbps, (double)m->matmul_gflops);
    if (m->has_model) return check_model(m->model, "hello.model", e);
    return 0;
}

static int check_plan(const Baton__Plan *m, bt_err *e) {
    int rc;
    if ((rc = check_model(m->model, "plan.model", e)) ||
        (rc = check_dtype(m->wire_dtype, "plan.wire_dtype", e)))
        return rc;
    if (m->n_layers == 0 || m->n_layers > MSG_MAX_LAYERS)
        return BAD("plan %llu: n_layers %u not in 1..%u", (unsigned long long)m->plan_id,
                   m->n_layers, MSG_MAX_LAYERS);
    if (m->n_stages == 0 || m->n_stages > MSG_MAX_STAGES)
        return BAD("plan %llu: %zu stages not in 1..%u", (unsigned long long)m->plan_id,
                   m->n_stages, MSG_MAX_STAGES);
    uint32_t next = 0; /* stages tile [0, n_layers) in order */
    for (size_t i = 0; i < m->n_stages; i++) {
        const Baton__StageAssignment *s = m->stages[i];
        if ((rc = check_id(s->worker_id, "plan.stages.worker_id", e)) ||
            (rc = check_str(s->data_endpoint, MSG_MAX_STRING, 0, "plan.stages.data_endpoint", e)))
            return rc;
        if (s->lo != next || s->hi <= s->lo || s->hi > m->n_layers)
            return BAD("plan %llu: stage %zu has layers [%u, %u), expected to start at %u "
                       "and end within %u",
                       (unsigned long long)m->plan_id, i, s->lo, s->hi, next, m->n_layers);
        next = s->hi;
    }
    if (next != m->n_layers)
        return BAD("plan %llu: stages end at layer %u, model has %u",
                   (unsigned long long)m->plan_id, next, m->n_layers);
    return 0;
}

static int check_load(const Baton__LoadLayers *m, bt_err *e) {
    int rc;
    if ((rc = check_model(m->model, "load_layers.model", e)) ||
        (rc = check_dtype(m->wire_dtype, "load_layers.wire_dtype", e)) ||
        (rc = check_str(m->next_endpoint, MSG_MAX_STRING, 0, "load_layers.next_endpoint", e)) ||
        (rc = check_str(m->prev_worker_id, 255, 0, "load_layers.prev_worker_id", e)) ||
        (rc = check_str(m->first_endpoint, MSG_MAX_STRING, 0, "load_layers.first_endpoint", e)))
        return rc;
    if (m->n_layers == 0 || m->n_layers > MSG_MAX_LAYERS)
        return BAD("load_layers: n_layers %u not in 1..%u", m->n_layers, MSG_MAX_LAYERS);
    if ((rc = check_range(m->lo, m->hi, m->n_layers, "load_layers", e))) return rc;
    if (m->n_stages == 0 || m->n_stages > MSG_MAX_STAGES || m->stage_index >= m->n_stages)
        return BAD("load_layers: stage %u of %u (max %u stages)", m->stage_index, m->n_stages,
                   MSG_MAX_STAGES);
    int first = m->stage_index == 0, last = m->stage_index + 1 == m->n_stages;
    if (first != (m->lo == 0) || last != (m->hi == m->n_layers))
        return BAD("load_layers: stage %u/%u has layers [%u, %u) of %u: the first stage starts "
                   "at 0 and only the last ends at n_layers",
                   m->stage_index, m->n_stages, m->lo, m->hi, m->n_layers);
    if (!last && !(m->next_endpoint && m->next_endpoint[0]))
        return BAD("load_layers: stage %u/%u has no next_endpoint", m->stage_index, m->n_stages);
    if (m->max_seqs == 0 || m->max_seqs > MSG_MAX_SEQS || m->max_ctx == 0)
        return BAD("load_layers: max_seqs %u (1..%u), max_ctx %u (> 0)", m->max_seqs, MSG_MAX_SEQS,
                   m->max_ctx);
    return 0;
}

static int check_sampling(const Baton__SamplingParams *p, size_t i, bt_err *e) {
    if (!isfinite(p->temperature) || p->temperature < 0.0f || !(p->top_p >= 0.0f) ||
        !(p->top_p <= 1.0f) || !(p->min_p >= 0.0f) || !(p->min_p <= 1.0f))
        return BAD("forward.sampling[%zu]: temperature %g top_p %g min_p %g out of range", i,
                   (double)p->temperature, (double)p->top_p, (double)p->min_p);
    if (!isfinite(p->repetition_penalty) || p->repetition_penalty < 0.0f ||
        !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return BAD("forward.sampling[%zu]: penalties not finite (repetition %g >= 0)", i,
                   (double)p->repetition_penalty);
    if (p->logprobs > MSG_MAX_LOGPROBS || p->n_stop_token_ids > MSG_MAX_STOP_TOKENS)
        return BAD("forward.sampling[%zu]: logprobs %u (max %u), %zu stop tokens (max %u)", i,
                   p->logprobs, MSG_MAX_LOGPROBS, p->n_stop_token_ids, MSG_MAX_STOP_TOKENS);
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* 1 if v[0..n) (n <= MSG_MAX_SEQS) has a repeated value; *dup gets it */
static int has_duplicate(const uint64_t *v, size_t n, uint64_t *dup) {
    uint64_t s[MSG_MAX_SEQS];
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (s[i] == s[i - 1]) {
            *dup = s[i];
            return 1;
        }
    return 0;
}

/* Positions are bounded so pos + n_tokens never wraps and stays a valid int. */
#define MAX_POS (1u << 30)

static int check_forward(const Baton__Forward *m, bt_err *e) {
    size_t n = m->n_seq_id;
    unsigned long long id = (unsigned long long)m->batch_id;
    if (n == 0 || n > MSG_MAX_SEQS)
        return BAD("forward %llu: %zu sequences not in 1..%u", id, n, MSG_MAX_SEQS);
    if (m->n_pos != n || m->n_n_tokens != n)
        return BAD("forward %llu: %zu seq_id but %zu pos and %zu n_tokens", id, n, m->n_pos,
                   m->n_n_tokens);
    if ((m->n_sample != 0 && m->n_sample != n) ||
        (m->n_want_logits != 0 && m->n_want_logits != n) ||
        (m->n_sampling != 0 && m->n_sampling != n))
        return BAD("forward %llu: %zu seq_id but %zu sample, %zu want_logits, %zu sampling "
                   "(each 0 or %zu)",
                   id, n, m->n_sample, m->n_want_logits, m->n_sampling, n);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (m->n_tokens[i] == 0 || m->n_tokens[i] > MSG_MAX_TOKENS || m->pos[i] >= MAX_POS)
            return BAD("forward %llu: seq %llu has n_tokens %u (1..%u) at pos %u (< %u)", id,
                       (unsigned long long)m->seq_id[i], m->n_tokens[i], MSG_MAX_TOKENS, m->pos[i],
                       MAX_POS);
        total += m->n_tokens[i];
    }
    if (total > MSG_MAX_TOKENS)
        return BAD("forward %llu: %llu rows > %u", id, (unsigned long long)total, MSG_MAX_TOKENS);
    uint64_t dup;
    if (has_duplicate(m->seq_id, n, &dup))
        return BAD("forward %llu: seq %llu appears twice", id, (unsigned long long)dup);
    int rc = check_dtype(m->wire_dtype, "forward.wire_dtype", e);
    if (rc) return rc;
    if (m->hidden > MSG_MAX_HIDDEN ||
        (m->wire_dtype == BATON__WIRE_DTYPE__WIRE_Q8_0 && m->hidden % WIRE_Q8_0_BLOCK))
        return BAD("forward %llu: hidden %u (max %u; a multiple of 32 for q8_0)", id, m->hidden,
                   MSG_MAX_HIDDEN);
    if (m->n_token_ids != 0 && m->n_token_ids != total)
        return BAD("forward %llu: %zu token_ids for %llu rows", id, m->n_token_ids,
                   (unsigned long long)total);
    if (m->hidden == 0 && m->n_token_ids == 0)
        return BAD("forward %llu: neither token_ids nor activations (hidden = 0)", id);
    for (size_t i = 0; i < m->n_sampling; i++)
        if ((rc = check_sampling(m->sampling[i], i, e))) return rc;
    return 0;
}

static int check_result(const Baton__Result *m, bt_err *e) {
    unsigned long long id = (unsigned long long)m->batch_id;
    if (m->n_seqs > MSG_MAX_SEQS)
        return BAD("result %llu: %zu sequences > %u", id, m->n_seqs, MSG_MAX_SEQS);
    for (size_t i = 0; i < m->n_seqs; i++) {
        const Baton__SeqResult *s = m->seqs[i];
        if (s->n_top > MSG_MAX_LOGPROBS)
            return BAD("result %llu: seq %llu has %zu alternatives > %u", id,
                       (unsigned long long)s->seq_id, s->n_top, MSG_MAX_LOGPROBS);
        if (s->finish < 0 || s->finish > BATON__FINISH_REASON__FINISH_ERROR)
            return BAD("result %llu: seq %llu has unknown finish %d", id,
                       (unsigned long long)s->seq_id, (int)s->finish);
        if (isnan(s->logprob))
            return BAD("result %llu: seq %llu logprob is NaN", id, (unsigned long long)s->seq_id);
    }
    if (m->n_logit_rows > m->n_seqs ||
        (m->n_logit_rows > 0 && (m->vocab == 0 || m->vocab > (1u << 22))))
        return BAD("result %llu: %u logit rows of vocab %u for %zu sequences", id, m->n_logit_rows,
                   m->vocab, m->n_seqs);
    return 0;
}

static int check_state_import(const Baton__StateImport *m, bt_err *e) {
    int rc = check_range(m->lo, m->hi, MSG_MAX_LAYERS, "state_import", e);
    if (rc) return rc;
    if (m->n_frame_bytes == 0 || m->n_frame_bytes > MSG_MAX_STATE_FRAMES)
        return BAD("state_import seq %llu: %zu frames not in 1..%u", (unsigned long long)m->seq_id,
                   m->n_frame_bytes, MSG_MAX_STATE_FRAMES);
    for (size_t i = 0; i < m->n_frame_bytes; i++)
        if (m->frame_bytes[i] == 0 || m->frame_bytes[i] > MSG_MAX_FRAME_BYTES)
            return BAD("state_import seq %llu: frame %zu is %llu bytes (1..%llu)",
                       (unsigned long long)m->seq_id, i, (unsigned long long)m->frame_bytes[i],
                       (unsigned long long)MSG_MAX_FRAME_BYTES);
    if (m->model) return check_model(m->model, "state_import.model", e);
    return 0;
}

static int check_chunk(const Baton__ModelId *model, uint64_t off, uint64_t len, const char *what,
                       bt_err *e) {
    int rc = check_model(model, what, e);
    if (rc) return rc;
    if (len == 0 || len > MSG_MAX_CHUNK || off > model->size || len > model->size - off)
        return BAD("%s: bytes [%llu, +%llu) outside the %llu-byte file or over %u", what,
                   (unsigned long long)off, (unsigned long long)len,
                   (unsigned long long)model->size, MSG_MAX_CHUNK);
    return 0;
}

/* Field number 0 is invalid protobuf, yet protobuf-c keeps it as an unknown field when its
 * tag is spelled in an over-long varint (0x80 0x80 0x00), and then packs a message it will not
 * unpack again (found by fuzz_msg). Reject it at every nesting level. depth bounds the walk;
 * our schema nests 3 deep. */
static int has_field_zero(const ProtobufCMessage *m, int depth) {
    if (depth > 8) return 1;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n;
            ProtobufCMessage **arr;
            memcpy(&n, base + f->quantifier_offset, sizeof n);
            memcpy(&arr, base + f->offset, sizeof arr);
            for (size_t j = 0; j < n; j++)
                if (arr[j] && has_field_zero(arr[j], depth + 1)) return 1;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which;
            memcpy(&which, base + f->quantifier_offset, sizeof which);
            if (which != f->id) continue;
        }
        ProtobufCMessage *sub;
        memcpy(&sub, base + f->offset, sizeof sub);
        if (sub && has_field_zero(sub, depth + 1)) return 1;
    }
    return 0;
}

int msg_validate(const Baton__Envelope *env, bt_err *e) {
    if (has_field_zero(&env->base, 0))
        return bt_fail(e, BT_EFORMAT, "envelope %llu: field number 0 (invalid protobuf)",
                       (unsigned long long)env->request_id);
    if (env->version != MSG_PROTOCOL_VERSION)
        return bt_fail(e, BT_EVERSION, "peer speaks protocol v%u, we speak v%u", env->version,
                       MSG_PROTOCOL_VERSION);
    int rc = 0;
    switch (env->body_case) {
    case BATON__ENVELOPE__BODY__NOT_SET:
        if (env->base.n_unknown_fields)
            return BAD("envelope %llu: unknown body (field %u): a newer peer?",
                       (unsigned long long)env->request_id, env->base.unknown_fields[0].tag);
        return BAD("envelope %llu: no body", (unsigned long long)env->request_id);
    case BATON__ENVELOPE__BODY_HELLO:
        return check_hello(env->hello, e);
    case BATON__ENVELOPE__BODY_WELCOME:
        return check_str(env->welcome->coordinator_id, 255, 0, "welcome.coordinator_id", e);
    case BATON__ENVELOPE__BODY_PLAN:
        return check_plan(env->plan, e);
    case BATON__ENVELOPE__BODY_LOAD_LAYERS:
        return check_load(env->load_layers, e);
    case BATON__ENVELOPE__BODY_LOAD_DONE:
        return check_range(env->load_done->lo, env->load_done->hi, MSG_MAX_LAYERS, "load_done", e);
    case BATON__ENVELOPE__BODY_FORWARD:
        return check_forward(env->forward, e);
    case BATON__ENVELOPE__BODY_RESULT:
        return check_result(env->result, e);
    case BATON__ENVELOPE__BODY_STATE_EXPORT:
        return check_range(env->state_export->lo, env->state_export->hi, MSG_MAX_LAYERS,
                           "state_export", e);
    case BATON__ENVELOPE__BODY_STATE_IMPORT:
        return check_state_import(env->state_import, e);
    case BATON__ENVELOPE__BODY_HEARTBEAT:
        if (env->heartbeat->state < 0 || env->heartbeat->state > BATON__WORKER_STATE__WS_DRAINING)
            return BAD("heartbeat: unknown worker state %d", (int)env->heartbeat->state);
        return 0;
    case BATON__ENVELOPE__BODY_DRAIN:
        return 0;
    case BATON__ENVELOPE__BODY_CANCEL:
        if (env->cancel->n_seq_id == 0 || env->cancel->n_seq_id > MSG_MAX_SEQS)
            return BAD("cancel: %zu sequences not in 1..%u", env->cancel->n_seq_id, MSG_MAX_SEQS);
        return 0;
    case BATON__ENVELOPE__BODY_ERROR:
        if ((rc = check_str(env->error->code, 64, 1, "error.code", e))) return rc;
        return check_str(env->error->message, MSG_MAX_STRING, 0, "error.message", e);
    case BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST:
        return check_chunk(env->model_chunk_request->model, env->model_chunk_request->offset,
                           env->model_chunk_request->length, "model_chunk_request", e);
    case BATON__ENVELOPE__BODY_MODEL_CHUNK:
        return check_chunk(env->model_chunk->model, env->model_chunk->offset,
                           env->model_chunk->length, "model_chunk", e);
    case BATON__ENVELOPE__BODY_SHUTDOWN:
        return check_str(env->shutdown->reason, MSG_MAX_STRING, 0, "shutdown.reason", e);
    default:
        break;
    }
    return BAD("envelope %llu: unknown body case %d", (unsigned long long)env->request_id,
               (int)env->body_case);
}

/* ---- unpack ---- */

int msg_unpack(const void *data, size_t len, ProtobufCAllocator *alloc, Baton__Envelope **out,
               uint64_t *request_id, bt_err *e) {
    *out = NULL;
    if (request_id) *request_id = 0;
    if (len > MSG_MAX_BYTES)
        return bt_fail(e, BT_EMSGSIZE, "message of %zu bytes > cap %u", len, MSG_MAX_BYTES);
    struct msg_arena *a = alloc && alloc->alloc == arena_alloc ? alloc->allocator_data : NULL;
    size_t arena_used = a ? a->used : 0;
    if (a) a->exhausted = 0;
    Baton__Envelope *env = baton__envelope__unpack(alloc, len, data);
    if (!env) {
        /* protobuf-c does not say why; with an arena we can tell exhaustion apart. The
         * partial message's memory is given back (nothing else can point into it). */
        if (a) {
            a->used = arena_used;
            if (a->exhausted)
                return bt_fail(e, -ENOMEM, "message of %zu bytes: arena of %zu bytes full", len,
                               a->cap);
        }
        return bt_fail(e, BT_EFORMAT, "message of %zu bytes is not a valid Envelope", len);
    }
    if (request_id) *request_id = env->request_id;
    int rc = msg_validate(env, e);
    if (rc) {
        msg_free(env, alloc);
        if (a) a->used = arena_used;
        return rc;
    }
    *out = env;
    return 0;
}

void msg_free(Baton__Envelope *env, ProtobufCAllocator *alloc) {
    if (env) baton__envelope__free_unpacked(env, alloc);
}

/* ---- payload frames ---- */

int msg_check_payload(const Baton__Envelope *env, size_t n, const size_t *len, bt_err *e) {
    const char *what = msg_body_name(env->body_case);
    size_t want_n = 0;
    uint64_t want = 0;
    switch (env->body_case) {
    case BATON__ENVELOPE__BODY_FORWARD: {
        const Baton__Forward *f = env->forward;
        if (f->hidden == 0) break;
        uint64_t rows = 0;
        for (size_t i = 0; i < f->n_n_tokens; i++)
            rows += f->n_tokens[i];
        size_t bytes;
        int rc = wire_bytes(f->wire_dtype, (int64_t)rows, f->hidden, &bytes, e);
        if (rc) /* msg_validate rules out these shapes; kept for envelopes built by hand */
            return bt_fail(e, BT_EPROTO, "forward %llu: bad payload shape %llu x %u",
                           (unsigned long long)f->batch_id, (unsigned long long)rows, f->hidden);
        want_n = 1;
        want = bytes;
        break;
    }
    case BATON__ENVELOPE__BODY_RESULT:
        if (env->result->n_logit_rows == 0) break;
        want_n = 1;
        want = (uint64_t)env->result->n_logit_rows * env->result->vocab * sizeof(float);
        break;
    case BATON__ENVELOPE__BODY_STATE_IMPORT: {
        const Baton__StateImport *s = env->state_import;
        if (n != s->n_frame_bytes)
            return BAD("state_import seq %llu: %zu payload frames, expected %zu",
                       (unsigned long long)s->seq_id, n, s->n_frame_bytes);
        for (size_t i = 0; i < n; i++)
            if (len[i] != s->frame_bytes[i])
                return BAD("state_import seq %llu: frame %zu is %zu bytes, expected %llu",
                           (unsigned long long)s->seq_id, i, len[i],
                           (unsigned long long)s->frame_bytes[i]);
        return 0;
    }
    case BATON__ENVELOPE__BODY_MODEL_CHUNK:
        want_n = 1;
        want = env->model_chunk->length;
        break;
    default:
        break;
    }
    if (n != want_n) return BAD("%s: %zu payload frames, expected %zu", what, n, want_n);
    if (want_n && len[0] != want)
        return BAD("%s: payload is %zu bytes, expected %llu", what, len[0],
                   (unsigned long long)want);
    return 0;
}

/* ---- errors ---- */

const char *msg_code_word(int code) {
    switch (code) {
    case BT_EFORMAT:
        return "malformed";
    case BT_EVERSION:
        return "version";
    case BT_ESHAPE:
        return "shape";
    case BT_EPROTO:
        return "protocol";
    case BT_ECAPACITY:
        return "capacity";
    case BT_ECANCELED:
        return "canceled";
    case BT_EPEERLOST:
        return "peer_lost";
    case BT_EMSGSIZE:
        return "too_large";
    case BT_ENOKEY:
        return "not_found";
    case BT_ETYPE:
        return "type";
    case BT_EUNSUPPORTED:
        return "unsupported";
    case BT_ETIMEDOUT:
        return "timeout";
    case BT_EINVAL:
        return "invalid";
    case BT_ECHECKSUM:
        return "checksum";
    case -ENOMEM:
        return "out_of_memory";
    default:
        return "internal";
    }
}

void msg_error_reply(Baton__Envelope *env, Baton__Error *err_msg, uint64_t request_id, int code,
                     const char *text) {
    msg_init(env, request_id);
    baton__error__init(err_msg);
    /* protobuf-c fields are char *; pack only reads them */
    err_msg->code = (char *)(uintptr_t)msg_code_word(code);
    err_msg->message = (char *)(uintptr_t)(text ? text : bt_strerror(code));
    err_msg->request_id = request_id;
    env->body_case = BATON__ENVELOPE__BODY_ERROR;
    env->error = err_msg;
}

const char *msg_body_name(Baton__Envelope__BodyCase c) {
    switch (c) {
    case BATON__ENVELOPE__BODY_HELLO:
        return "hello";
    case BATON__ENVELOPE__BODY_WELCOME:
        return "welcome";
    case BATON__ENVELOPE__BODY_PLAN:
        return "plan";
    case BATON__ENVELOPE__BODY_LOAD_LAYERS:
        return "load_layers";
    case BATON__ENVELOPE__BODY_LOAD_DONE:
        return "load_done";
    case BATON__ENVELOPE__BODY_FORWARD:
        return "forward";
    case BATON__ENVELOPE__BODY_RESULT:
        return "result";
    case BATON__ENVELOPE__BODY_STATE_EXPORT:
        return "state_export";
    case BATON__ENVELOPE__BODY_STATE_IMPORT:
        return "state_import";
    case BATON__ENVELOPE__BODY_HEARTBEAT:
        return "heartbeat";
    case BATON__ENVELOPE__BODY_DRAIN:
        return "drain";
    case BATON__ENVELOPE__BODY_CANCEL:
        return "cancel";
    case BATON__ENVELOPE__BODY_ERROR:
        return "error";
    case BATON__ENVELOPE__BODY_MODEL_CHUNK_REQUEST:
        return "model_chunk_request";
    case BATON__ENVELOPE__BODY_MODEL_CHUNK:
        return "model_chunk";
    case BATON__ENVELOPE__BODY_SHUTDOWN:
        return "shutdown";
    default:
        return "none";
    }
}
