/* tests/test_sched.c: the continuous-batching scheduler over the local executor running the
 * real tiny-a model (F32): greedy tokens equal llama.cpp's reference alone and among 32
 * concurrent requests with chunked prefill, stop strings, max_tokens, queue back-pressure and
 * cancellation freeing the slot. */
#include "coordinator/exec_local.h"
#include "coordinator/sched.h"
#include "engine/tokenizer.h"
#include "fixtures.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct env {
    tok_t *tok;
    exec_t *ex;
    sched_t *s;
    metrics_t *m;
};

static void env_open_stall(struct env *v, int n_slots, int max_queue, int step, int chunk,
                           size_t budget, double stall) {
    bt_err e = {0};
    memset(v, 0, sizeof *v);
    const char *path = fixture_path("tiny-a/gguf/model-f32.gguf");
    cr_assert_eq(tokenizer_open(&v->tok, path, &e), 0, "%s", e.msg);
    struct exec_local_opts lo = {.model_path = path,
                                 .tok = v->tok,
                                 .n_slots = n_slots,
                                 .max_ctx = 320,
                                 .max_batch = 256,
                                 .n_threads = 2,
                                 .state_budget_bytes = budget};
    cr_assert_eq(exec_local_open(&v->ex, &lo, &e), 0, "%s", e.msg);
    cr_assert_eq(metrics_open(&v->m, &e), 0);
    struct sched_opts so = {.exec = v->ex,
                            .tok = v->tok,
                            .metrics = v->m,
                            .max_queue = max_queue,
                            .step_tokens = step,
                            .prefill_chunk = chunk,
                            .prefill_stall = stall};
    cr_assert_eq(sched_open(&v->s, &so, &e), 0, "%s", e.msg);
}

static void env_open_budget(struct env *v, int n_slots, int max_queue, int step, int chunk,
                            size_t budget) {
    env_open_stall(v, n_slots, max_queue, step, chunk, budget, 0.0);
}

static void env_open(struct env *v, int n_slots, int max_queue, int step, int chunk) {
    env_open_budget(v, n_slots, max_queue, step, chunk, 0);
}

static void env_close(struct env *v) {
    sched_close(v->s);
    exec_close(v->ex);
    metrics_close(v->m);
    tokenizer_free(v->tok);
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

struct outcome {
    int32_t toks[400];
    int n;
    char text[8192];
    size_t len;
    char finish[16];
    int prompt_tokens, completion_tokens;
    int error;
};

static void collect(sched_handle_t *h, struct outcome *o) {
    memset(o, 0, sizeof *o);
    for (;;) {
        struct sched_event *ev = NULL;
        cr_assert_eq(sched_next(h, 20000, &ev), 1, "no event in 20 s");
        cr_assert(o->len + ev->len < sizeof o->text);
        memcpy(o->text + o->len, ev->text, ev->len);
        o->len += ev->len;
        enum sched_ev_kind k = ev->kind;
        if (k == SEV_TOKEN && o->n < 400) o->toks[o->n++] = ev->tok.token;
        if (k == SEV_DONE) {
            snprintf(o->finish, sizeof o->finish, "%s", ev->finish_reason);
            o->prompt_tokens = ev->prompt_tokens;
            o->completion_tokens = ev->completion_tokens;
        }
        if (k == SEV_ERROR) o->error = ev->code;
        sched_event_free(ev);
        if (k != SEV_TOKEN) break;
    }
}

static sched_handle_t *submit(struct env *v, const int32_t *ids, int n, int max_tokens,
                              const char *stop) {
    struct sched_req r = {.prompt = ids, .n_prompt = n, .max_tokens = max_tokens};
    r.sp.temperature = 0.0f;
    r.sp.top_p = 1.0f;
    r.sp.repetition_penalty = 1.0f;
    if (stop) {
        r.stop[0] = stop;
        r.n_stop = 1;
    }
    sched_handle_t *h = NULL;
    bt_err e = {0};
    cr_assert_eq(sched_submit(v->s, &r, &h, &e), 0, "%s", e.msg);
    return h;
}

Test(sched, greedy_alone_matches_reference) {
    struct env v;
    env_open(&v, 4, 8, 0, 0);
    int32_t prompt[64], ref[32];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    cr_assert_eq(np, 43);
    cr_assert_eq(read_ids("tiny-a/ref/f32/chat/greedy.txt", ref, 32), 32);
    sched_handle_t *h = submit(&v, prompt, np, 32, NULL);
    struct outcome o;
    collect(h, &o);
    sched_handle_close(h);
    cr_assert_eq(o.error, 0);
    cr_assert_eq(o.n, 32);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(o.toks[i], ref[i], "token %d: %d vs ref %d", i, o.toks[i], ref[i]);
    cr_assert_str_eq(o.finish, "length");
    cr_assert_eq(o.prompt_tokens, 43);
    cr_assert_eq(o.completion_tokens, 32);
    /* The text is the ids through the streaming decoder (invalid UTF-8 becomes U+FFFD: this
     * random model emits stray byte tokens). */
    char want[4096];
    size_t wn = 0;
    tok_stream_t *ts = NULL;
    bt_err e = {0};
    cr_assert_eq(tok_stream_new(&ts, v.tok, 0, &e), 0);
    for (int i = 0; i < 32; i++) {
        const char *t;
        size_t n;
        cr_assert_eq(tok_stream_push(ts, ref[i], &t, &n, &e), 0);
        memcpy(want + wn, t, n);
        wn += n;
    }
    const char *t;
    size_t n;
    tok_stream_flush(ts, &t, &n);
    memcpy(want + wn, t, n);
    wn += n;
    tok_stream_free(ts);
    cr_assert_eq(o.len, wn, "text %zu bytes, expected %zu", o.len, wn);
    cr_assert(!memcmp(o.text, want, wn));
    cr_assert_eq(metrics_counter(v.m, MC_GEN_TOKENS), 32);
    cr_assert_eq(metrics_counter(v.m, MC_PROMPT_TOKENS), 43);
    env_close(&v);
}

/* 32 requests at once, the chat prompt and (every 8th) the 212-token story prompt, with a
 * 64-token step budget and 24-token prefill chunks: prefill chunks are mixed with decodes in
 * most steps, and every request still gets exactly the reference tokens. The prefill stall
 * limit is off: how many prompt tokens it lets through depends on measured times, and the step
 * count below checks the token budget alone (prefill_next_to_decodes_is_limited checks it). */
Test(sched, greedy_among_32_matches_reference, .timeout = 60) {
    struct env v;
    env_open_stall(&v, 32, 64, 64, 24, 0, -1.0);
    int32_t chat[64], story[256], ref_chat[32], ref_story[32];
    int nc = read_ids("tiny-a/prompts/chat.ids", chat, 64);
    int ns = read_ids("tiny-a/prompts/story.ids", story, 256);
    cr_assert_eq(ns, 212);
    read_ids("tiny-a/ref/f32/chat/greedy.txt", ref_chat, 32);
    read_ids("tiny-a/ref/f32/story/greedy.txt", ref_story, 32);
    sched_handle_t *h[32];
    /* Every 8th is the long story prompt; 20 tokens each keeps the suite fast on 2 cores. */
    for (int i = 0; i < 32; i++)
        h[i] = i % 8 == 1 ? submit(&v, story, ns, 20, NULL) : submit(&v, chat, nc, 20, NULL);
    static struct outcome o[32];
    for (int i = 0; i < 32; i++) {
        collect(h[i], &o[i]);
        sched_handle_close(h[i]);
        const int32_t *ref = i % 8 == 1 ? ref_story : ref_chat;
        cr_assert_eq(o[i].error, 0);
        cr_assert_eq(o[i].n, 20, "request %d: %d tokens", i, o[i].n);
        for (int j = 0; j < 20; j++)
            cr_assert_eq(o[i].toks[j], ref[j], "request %d token %d: %d vs ref %d", i, j,
                         o[i].toks[j], ref[j]);
    }
    /* Steps were shared: far fewer micro-batches than 32 requests x 32 tokens. */
    uint64_t steps = metrics_counter(v.m, MC_STEPS);
    cr_assert_lt(steps, 200, "steps=%llu", (unsigned long long)steps);
    env_close(&v);
}

Test(sched, stop_string_cuts_text) {
    struct env v;
    env_open(&v, 2, 8, 0, 0);
    int32_t prompt[64];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    sched_handle_t *h = submit(&v, prompt, np, 32, NULL);
    struct outcome full;
    collect(h, &full);
    sched_handle_close(h);
    cr_assert_gt(full.len, 12);
    /* A stop string from the middle of the greedy text: 4 bytes starting at byte 8. */
    char stop[8];
    memcpy(stop, full.text + 8, 4);
    stop[4] = 0;
    const char *first = memmem(full.text, full.len, stop, 4);
    cr_assert(first);
    h = submit(&v, prompt, np, 32, stop);
    struct outcome cut;
    collect(h, &cut);
    sched_handle_close(h);
    cr_assert_str_eq(cut.finish, "stop");
    cr_assert_eq(cut.len, (size_t)(first - full.text), "cut at %zu, expected %zu", cut.len,
                 (size_t)(first - full.text));
    cr_assert(!memcmp(cut.text, full.text, cut.len));
    cr_assert_lt(cut.n, 32);
    env_close(&v);
}

Test(sched, rejects_bad_requests) {
    struct env v;
    env_open(&v, 1, 2, 0, 0);
    int32_t ids[400] = {0};
    struct sched_req r = {.prompt = ids, .n_prompt = 0, .max_tokens = 4};
    sched_handle_t *h = NULL;
    bt_err e = {0};
    cr_assert_eq(sched_submit(v.s, &r, &h, &e), BT_EINVAL);
    r.n_prompt = 320; /* the whole context: no room to generate */
    cr_assert_eq(sched_submit(v.s, &r, &h, &e), BT_EMSGSIZE);
    r.n_prompt = 4;
    ids[2] = 5000; /* beyond the vocabulary */
    cr_assert_eq(sched_submit(v.s, &r, &h, &e), BT_EINVAL);
    ids[2] = 7;
    r.max_tokens = 0;
    cr_assert_eq(sched_submit(v.s, &r, &h, &e), BT_EINVAL);
    cr_assert_null(h);
    env_close(&v);
}

/* One slot and a queue of 2: a burst of long requests overflows the queue (429 upstream). */
Test(sched, full_queue_refuses) {
    struct env v;
    env_open(&v, 1, 2, 0, 0);
    int32_t prompt[64];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    sched_handle_t *h[8] = {0};
    int refused = 0;
    for (int i = 0; i < 8; i++) {
        struct sched_req r = {.prompt = prompt, .n_prompt = np, .max_tokens = 200};
        r.sp.top_p = 1.0f;
        r.sp.repetition_penalty = 1.0f;
        bt_err e = {0};
        int rc = sched_submit(v.s, &r, &h[i], &e);
        if (rc == BT_ECAPACITY)
            refused++;
        else
            cr_assert_eq(rc, 0, "%s", e.msg);
    }
    cr_assert_geq(refused, 4, "refused=%d", refused);
    cr_assert_eq(metrics_counter(v.m, MC_REQ_REJECTED), (uint64_t)refused);
    for (int i = 0; i < 8; i++)
        sched_handle_close(h[i]);
    env_close(&v);
}

/* Closing a handle mid-generation cancels it: the slot comes back and the queue moves on. */
Test(sched, cancel_frees_slot) {
    struct env v;
    env_open(&v, 1, 4, 0, 0);
    int32_t prompt[64];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    sched_handle_t *a = submit(&v, prompt, np, 250, NULL);
    sched_handle_t *b = submit(&v, prompt, np, 3, NULL);
    struct sched_event *ev = NULL;
    cr_assert_eq(sched_next(a, 20000, &ev), 1);
    cr_assert_eq(ev->kind, SEV_TOKEN);
    sched_event_free(ev);
    sched_handle_close(a); /* cancel after the first token */
    struct outcome o;
    collect(b, &o); /* b only gets the slot once a is gone */
    sched_handle_close(b);
    cr_assert_eq(o.n, 3);
    struct sched_stats st;
    for (int i = 0; i < 200; i++) {
        sched_get_stats(v.s, &st);
        if (st.active == 0) break;
        usleep(10000);
    }
    cr_assert_eq(st.active, 0);
    cr_assert_eq(st.free_slots, 1);
    cr_assert_eq(metrics_counter(v.m, MC_REQ_CANCELLED), 1);
    cr_assert_lt(metrics_counter(v.m, MC_GEN_TOKENS), 250 + 3);
    env_close(&v);
}

/* A state budget that fits a 43+250-token sequence but not another 43+32 one beside it: with
 * two free slots the second request waits until the first leaves (cancelled here), then gets
 * the reference tokens. */
Test(sched, state_budget_limits_admission) {
    struct env probe;
    env_open(&probe, 1, 4, 0, 0);
    const struct exec_stage_cost c = exec_caps(probe.ex)->stage[0]; /* a copy: probe closes */
    env_close(&probe);
    cr_assert_gt(c.seq_bytes, 0);
    cr_assert_gt(c.token_bytes, 0);
    size_t big = c.seq_bytes + (size_t)(43 + 250) * c.token_bytes;
    size_t small = c.seq_bytes + (size_t)(43 + 32) * c.token_bytes;
    struct env v;
    env_open_budget(&v, 2, 4, 0, 0, big + small / 2);
    int32_t prompt[64], ref[32];
    int np = read_ids("tiny-a/prompts/chat.ids", prompt, 64);
    read_ids("tiny-a/ref/f32/chat/greedy.txt", ref, 32);
    sched_handle_t *a = submit(&v, prompt, np, 250, NULL);
    sched_handle_t *b = submit(&v, prompt, np, 32, NULL);
    struct sched_event *ev = NULL;
    cr_assert_eq(sched_next(a, 20000, &ev), 1);
    sched_event_free(ev);
    struct sched_stats st;
    sched_get_stats(v.s, &st);
    cr_assert_eq(st.active, 1, "the budget admits one sequence");
    cr_assert_eq(st.queued, 1);
    sched_handle_close(a); /* its state is released, so b fits */
    struct outcome o;
    collect(b, &o);
    cr_assert_eq(o.n, 32);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(o.toks[i], ref[i]);
    sched_handle_close(b);
    env_close(&v);
    /* A sequence that can never fit is refused at once. */
    int32_t ids[4] = {1, 2, 3, 4};
    struct sched_req r = {.prompt = ids, .n_prompt = 4, .max_tokens = 300};
    r.sp.top_p = 1.0f;
    r.sp.repetition_penalty = 1.0f;
    sched_handle_t *h = NULL;
    bt_err e = {0};
    struct env w;
    env_open_budget(&w, 2, 4, 0, 0, c.seq_bytes + 10 * c.token_bytes);
    cr_assert_eq(sched_submit(w.s, &r, &h, &e), BT_EMSGSIZE);
    env_close(&w);
}

/* A long prompt arriving while a sequence decodes: with the stall limit its prefill is cut
 * into many small pieces riding along with the decodes (many steps before its first token),
 * without it the prompt goes in one step; the tokens of both sequences are the same either
 * way. */
struct stall_run {
    struct outcome a, b;
    uint64_t steps_b; /* micro-batches between b's submission and its first token */
};

static void run_with_stall(double stall, struct stall_run *r) {
    struct env v;
    env_open_stall(&v, 2, 4, 256, 256, 0, stall);
    int32_t pa[96], pb[240];
    for (int i = 0; i < 96; i++)
        pa[i] = 100 + (i * 7) % 500;
    for (int i = 0; i < 240; i++)
        pb[i] = 200 + (i * 13) % 700;
    sched_handle_t *a = submit(&v, pa, 96, 200, NULL);
    /* a's first tokens: its prompt and some decodes have run, so the cost model has a fit */
    memset(&r->a, 0, sizeof r->a);
    for (int i = 0; i < 8; i++) {
        struct sched_event *ev = NULL;
        cr_assert_eq(sched_next(a, 20000, &ev), 1);
        cr_assert_eq(ev->kind, SEV_TOKEN);
        r->a.toks[r->a.n++] = ev->tok.token;
        sched_event_free(ev);
    }
    uint64_t s0 = metrics_counter(v.m, MC_STEPS);
    sched_handle_t *b = submit(&v, pb, 240, 4, NULL);
    struct sched_event *ev = NULL;
    cr_assert_eq(sched_next(b, 20000, &ev), 1);
    cr_assert_eq(ev->kind, SEV_TOKEN);
    r->steps_b = metrics_counter(v.m, MC_STEPS) - s0;
    cr_log_info("stall=%g: b's prompt took %llu steps; fit fixed=%.3g s per_token=%.3g s", stall,
                (unsigned long long)r->steps_b, metrics_gauge(v.m, MG_BATCH_FIXED_S),
                metrics_gauge(v.m, MG_BATCH_TOKEN_S));
    r->b.toks[r->b.n++] = ev->tok.token;
    sched_event_free(ev);
    struct outcome rest;
    collect(b, &rest);
    cr_assert_eq(rest.error, 0);
    for (int i = 0; i < rest.n; i++)
        r->b.toks[r->b.n++] = rest.toks[i];
    collect(a, &rest);
    cr_assert_eq(rest.error, 0);
    for (int i = 0; i < rest.n && r->a.n < 400; i++)
        r->a.toks[r->a.n++] = rest.toks[i];
    sched_handle_close(a);
    sched_handle_close(b);
    env_close(&v);
}

Test(sched, prefill_next_to_decodes_is_limited, .timeout = 60) {
    struct stall_run off, on;
    run_with_stall(-1.0, &off);
    run_with_stall(0.02, &on);
    cr_assert_leq(off.steps_b, 2, "without the limit the prompt goes in one step: %llu",
                  (unsigned long long)off.steps_b);
    cr_assert_geq(on.steps_b, 8, "with stall 0.02 the 240-token prompt takes many steps: %llu",
                  (unsigned long long)on.steps_b);
    cr_assert_eq(on.a.n, off.a.n);
    cr_assert_eq(on.b.n, 4);
    cr_assert_eq(off.b.n, 4);
    for (int i = 0; i < off.a.n; i++)
        cr_assert_eq(on.a.toks[i], off.a.toks[i], "a's token %d", i);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(on.b.toks[i], off.b.toks[i], "b's token %d", i);
}
