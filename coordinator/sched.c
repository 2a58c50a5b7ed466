/* coordinator/sched.c: continuous batching (see sched.h). Locking: s->mu guards the queue and
 * the stats; each handle's h->mu guards its events, cancel flag and reference count. The
 * scheduler thread alone touches the per-sequence generation fields (seq_*), so they need no
 * lock. Lock order: s->mu before h->mu. */
#include "coordinator/sched.h"

#include "common/assert.h"
#include "common/clock.h"
#include "common/log.h"
#include "coordinator/batch_cost.h"
#include "engine/sampler.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sched_handle {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sched_event *head, *tail;
    int refs;     /* the caller's and the scheduler's */
    int cancel;   /* set by sched_handle_close */
    int finished; /* DONE or ERROR queued */
    struct sched_handle *qnext;

    /* Scheduler thread only. */
    uint64_t id;
    int slot; /* -1 while queued */
    int32_t *prompt;
    int n_prompt;
    int n_fed;       /* tokens handed to the executor so far (= next position) */
    int n_gen;       /* sampled tokens */
    int max_tokens;  /* after limiting by the context */
    int in_flight;   /* in an in-flight batch */
    int32_t pending; /* sampled, not yet fed */
    int has_pending;
    struct exec_sampling sp;
    tok_stream_t *ts;               /* token bytes -> complete UTF-8 */
    stopper_t *stopper;             /* complete UTF-8 -> text before any stop string */
    uint64_t cost[EXEC_MAX_STAGES]; /* state bytes reserved per stage */
    int64_t t_arrive, t_last;
};

struct inflight {
    uint64_t batch_id;
    int n;
    int n_tok;             /* rows in the batch, for the cost model */
    sched_handle_t **seqs; /* [n_slots] */
};

struct sched {
    struct sched_opts o;
    struct exec_caps caps;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop;

    sched_handle_t *q_head, *q_tail; /* waiting, FIFO */
    int n_queued;
    uint64_t next_id;

    /* Scheduler thread only (stats mirrored under mu). */
    sched_handle_t **active; /* [n_slots]: sequence in each slot, or NULL */
    int n_active;
    uint64_t reserved[EXEC_MAX_STAGES];
    struct inflight *fl; /* ring of depth */
    int fl_head, fl_count;
    uint64_t next_batch;
    int rr;                 /* round-robin start for prefill fairness */
    struct batch_cost cost; /* learned from completed batches; limits prefill next to decodes */
    struct exec_seq_item *items;
    int32_t *eog;
    size_t n_eog;

    struct sched_stats stats;
};

/* ---- handles and events ---- */

static void handle_unref(sched_handle_t *h) {
    pthread_mutex_lock(&h->mu);
    int left = --h->refs;
    pthread_mutex_unlock(&h->mu);
    if (left > 0) return;
    struct sched_event *ev = h->head;
    while (ev) {
        struct sched_event *n = ev->next;
        sched_event_free(ev);
        ev = n;
    }
    free(h->prompt);
    tok_stream_free(h->ts);
    stopper_free(h->stopper);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void sched_event_free(struct sched_event *ev) {
    if (!ev) return;
    free(ev->text);
    free(ev);
}

static struct sched_event *event_new(enum sched_ev_kind kind, const char *text, size_t len) {
    struct sched_event *ev = calloc(1, sizeof *ev);
    char *t = malloc(len + 1);
    if (!ev || !t) {
        free(ev);
        free(t);
        return NULL;
    }
    if (len) memcpy(t, text, len);
    t[len] = 0;
    ev->kind = kind;
    ev->text = t;
    ev->len = len;
    return ev;
}

static void push_event(sched_handle_t *h, struct sched_event *ev) {
    pthread_mutex_lock(&h->mu);
    if (h->finished) { /* nothing after DONE/ERROR */
        pthread_mutex_unlock(&h->mu);
        sched_event_free(ev);
        return;
    }
    if (ev->kind != SEV_TOKEN) h->finished = 1;
    if (h->tail)
        h->tail->next = ev;
    else
        h->head = ev;
    h->tail = ev;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* An event that cannot be allocated ends the request with an error the caller can report;
 * the ERROR event is preallocated-free (a static fallback is not possible per handle), so on
 * ENOMEM we mark the handle finished and wake the reader, which reports a server error. */
static void push_or_fail(sched_handle_t *h, struct sched_event *ev) {
    if (ev) {
        push_event(h, ev);
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->finished = 2; /* 2 = failed without an event */
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void push_error(sched_handle_t *h, int code, const char *msg) {
    struct sched_event *ev = event_new(SEV_ERROR, "", 0);
    if (ev) {
        ev->code = code;
        snprintf(ev->msg, sizeof ev->msg, "%s", msg);
    }
    push_or_fail(h, ev);
}

int sched_next(sched_handle_t *h, int timeout_ms, struct sched_event **ev) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms > 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&h->mu);
    while (!h->head && h->finished != 2) {
        if (timeout_ms == 0) break;
        if (timeout_ms < 0)
            pthread_cond_wait(&h->cv, &h->mu);
        else if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT)
            break;
    }
    struct sched_event *e = h->head;
    if (e) {
        h->head = e->next;
        if (!h->head) h->tail = NULL;
        e->next = NULL;
    } else if (h->finished == 2) {
        /* Out of memory earlier: hand out a synthesized error once (malloc may work now). */
        e = event_new(SEV_ERROR, "", 0);
        if (e) {
            e->code = -ENOMEM;
            snprintf(e->msg, sizeof e->msg, "out of memory");
            h->finished = 1;
        }
    }
    pthread_mutex_unlock(&h->mu);
    *ev = e;
    return e != NULL;
}

void sched_handle_close(sched_handle_t *h) {
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->cancel = 1;
    pthread_mutex_unlock(&h->mu);
    handle_unref(h);
}

static int is_cancelled(sched_handle_t *h) {
    pthread_mutex_lock(&h->mu);
    int c = h->cancel;
    pthread_mutex_unlock(&h->mu);
    return c;
}

/* ---- admission ---- */

static void seq_cost(const struct exec_caps *c, const sched_handle_t *h, uint64_t *cost) {
    uint64_t n = (uint64_t)h->n_prompt + (uint64_t)h->max_tokens;
    for (int i = 0; i < c->n_stages; i++)
        cost[i] = c->stage[i].seq_bytes + n * c->stage[i].token_bytes;
}

static int fits(const struct sched *s, const uint64_t *cost) {
    for (int i = 0; i < s->caps.n_stages; i++)
        if (s->caps.stage[i].budget_bytes &&
            s->reserved[i] + cost[i] > s->caps.stage[i].budget_bytes)
            return 0;
    return 1;
}

int sched_submit(sched_t *s, const struct sched_req *r, sched_handle_t **out, bt_err *e) {
    *out = NULL;
    if (r->n_prompt < 1) return bt_fail(e, BT_EINVAL, "sched: empty prompt");
    if (r->max_tokens < 1) return bt_fail(e, BT_EINVAL, "sched: max_tokens=%d < 1", r->max_tokens);
    if (r->n_prompt >= s->caps.max_ctx)
        return bt_fail(e, BT_EMSGSIZE,
                       "prompt has %d tokens; the context holds %d including at least one "
                       "generated token",
                       r->n_prompt, s->caps.max_ctx);
    if (r->n_stop < 0 || r->n_stop > SCHED_MAX_STOP)
        return bt_fail(e, BT_EINVAL, "sched: %d stop strings", r->n_stop);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || (s->caps.n_vocab > 0 && r->prompt[i] >= s->caps.n_vocab))
            return bt_fail(e, BT_EINVAL, "token id %d at %d is outside [0, %d)", r->prompt[i], i,
                           s->caps.n_vocab);
    sched_handle_t *h = calloc(1, sizeof *h);
    if (!h) return bt_fail(e, -ENOMEM, "sched: out of memory");
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->refs = 2;
    h->slot = -1;
    h->n_prompt = r->n_prompt;
    int room = s->caps.max_ctx - r->n_prompt;
    h->max_tokens = r->max_tokens < room ? r->max_tokens : room;
    h->sp = r->sp;
    h->t_arrive = bt_now_ns();
    h->prompt = malloc((size_t)r->n_prompt * sizeof *h->prompt);
    int rc = h->prompt ? 0 : -ENOMEM;
    if (!rc) memcpy(h->prompt, r->prompt, (size_t)r->n_prompt * sizeof *h->prompt);
    if (!rc) rc = stopper_new(&h->stopper, r->stop, (size_t)r->n_stop, e);
    if (!rc) rc = tok_stream_new(&h->ts, s->o.tok, 0, e);
    if (rc) {
        h->refs = 1;
        handle_unref(h);
        return bt_fail(e, rc, "sched: out of memory for a request");
    }
    seq_cost(&s->caps, h, h->cost);
    for (int i = 0; i < s->caps.n_stages; i++)
        if (s->caps.stage[i].budget_bytes && h->cost[i] > s->caps.stage[i].budget_bytes) {
            unsigned long long need = (unsigned long long)h->cost[i];
            unsigned long long have = (unsigned long long)s->caps.stage[i].budget_bytes;
            h->refs = 1;
            handle_unref(h);
            return bt_fail(e, BT_EMSGSIZE,
                           "the sequence needs %llu bytes of state on stage %d, which has %llu",
                           need, i, have);
        }

    pthread_mutex_lock(&s->mu);
    int max_queue = s->o.max_queue > 0 ? s->o.max_queue : 64;
    if (s->stop || s->n_queued >= max_queue) {
        int q = s->n_queued;
        pthread_mutex_unlock(&s->mu);
        h->refs = 1;
        handle_unref(h);
        metrics_add(s->o.metrics, MC_REQ_REJECTED, 1);
        return bt_fail(e, BT_ECAPACITY, "the request queue is full (%d waiting)", q);
    }
    h->id = ++s->next_id;
    if (s->q_tail)
        s->q_tail->qnext = h;
    else
        s->q_head = h;
    s->q_tail = h;
    s->n_queued++;
    s->stats.queued = s->n_queued;
    metrics_set(s->o.metrics, MG_QUEUE_DEPTH, s->n_queued);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = h;
    return 0;
}

/* ---- the scheduler thread ---- */

static void update_stats(sched_t *s) {
    int active = s->n_active;
    pthread_mutex_lock(&s->mu);
    s->stats.queued = s->n_queued;
    s->stats.active = active;
    s->stats.free_slots = s->caps.n_slots - active;
    s->stats.in_flight = s->fl_count;
    pthread_mutex_unlock(&s->mu);
    metrics_set(s->o.metrics, MG_ACTIVE, active);
    metrics_set(s->o.metrics, MG_INFLIGHT, s->fl_count);
}

/* Frees the slot of a sequence in no in-flight batch and drops the scheduler's reference. */
static void retire(sched_t *s, sched_handle_t *h) {
    BT_ASSERT(!h->in_flight);
    if (h->slot >= 0) {
        exec_release(s->o.exec, h->slot);
        s->active[h->slot] = NULL;
        s->n_active--;
        for (int i = 0; i < s->caps.n_stages; i++)
            s->reserved[i] -= h->cost[i];
        h->slot = -1;
    }
    handle_unref(h);
}

/* Admits queued requests in FIFO order while a slot and the state budget allow; drops
 * cancelled ones from the queue. */
static void admit(sched_t *s) {
    pthread_mutex_lock(&s->mu);
    sched_handle_t **pp = &s->q_head, *prev = NULL;
    while (*pp) {
        sched_handle_t *h = *pp;
        int cancelled = is_cancelled(h);
        int take = cancelled;
        int slot = -1;
        if (!cancelled) {
            if (s->n_active >= s->caps.n_slots || !fits(s, h->cost))
                break; /* in order: no overtaking, so big requests cannot starve */
            for (int i = 0; i < s->caps.n_slots; i++)
                if (!s->active[i]) {
                    slot = i;
                    break;
                }
            take = 1;
        }
        BT_ASSERT(take);
        *pp = h->qnext;
        if (s->q_tail == h) s->q_tail = prev;
        h->qnext = NULL;
        s->n_queued--;
        if (cancelled) {
            metrics_add(s->o.metrics, MC_REQ_CANCELLED, 1);
            handle_unref(h);
            continue;
        }
        h->slot = slot;
        s->active[slot] = h;
        s->n_active++;
        for (int i = 0; i < s->caps.n_stages; i++)
            s->reserved[i] += h->cost[i];
    }
    metrics_set(s->o.metrics, MG_QUEUE_DEPTH, s->n_queued);
    pthread_mutex_unlock(&s->mu);
}

/* at_stop: a stop string ended it, so nothing after it is shown. */
static void finish(sched_t *s, sched_handle_t *h, const char *reason, int at_stop) {
    const char *t = NULL;
    size_t n = 0;
    /* Whatever the stream still holds is an incomplete character: it ends as U+FFFD. */
    tok_stream_flush(h->ts, &t, &n);
    struct sched_event *ev = NULL;
    char *buf = NULL;
    size_t len = 0;
    if (!at_stop) {
        /* Both stages' leftovers; the stopper's output is borrowed only until its next call. */
        const char *u = NULL, *f = NULL;
        size_t un = 0, fn = 0;
        if (n && stopper_feed(h->stopper, t, n, &u, &un) < 0) goto done;
        if (!(buf = malloc(un + 1))) goto done;
        if (un) memcpy(buf, u, un);
        len = un;
        stopper_flush(h->stopper, &f, &fn);
        char *p = realloc(buf, len + fn + 1);
        if (!p) goto done;
        buf = p;
        if (fn) memcpy(buf + len, f, fn);
        len += fn;
    }
    ev = event_new(SEV_DONE, buf ? buf : "", len);
    if (ev) {
        ev->finish_reason = reason;
        ev->prompt_tokens = h->n_prompt;
        ev->completion_tokens = h->n_gen;
    }
done:
    free(buf);
    push_or_fail(h, ev);
    int64_t now = bt_now_ns();
    metrics_observe(s->o.metrics, MH_E2E, (double)(now - h->t_arrive) * 1e-9);
    metrics_add(s->o.metrics, MC_REQ_FINISHED, 1);
    retire(s, h);
}

/* One sampled token for h: emit, then finish or queue it for the next step. */
static void on_token(sched_t *s, sched_handle_t *h, const struct exec_result *r) {
    int64_t now = bt_now_ns();
    metrics_observe(s->o.metrics, h->n_gen == 0 ? MH_TTFT : MH_ITL,
                    (double)(now - (h->n_gen == 0 ? h->t_arrive : h->t_last)) * 1e-9);
    h->t_last = now;
    h->n_gen++;
    metrics_add(s->o.metrics, MC_GEN_TOKENS, 1);
    int eog = 0;
    for (size_t i = 0; i < s->n_eog; i++)
        eog |= s->eog[i] == r->token;
    const char *t = "";
    size_t n = 0;
    bt_err e = {0};
    if (!eog && tok_stream_push(h->ts, r->token, &t, &n, &e) < 0) {
        /* The executor sampled an id the tokenizer does not know: a bug or bad peer. */
        BT_LOG(ERROR, "sched", "seq=%llu: %s", (unsigned long long)h->id, e.msg);
        push_error(h, BT_EPROTO, "the executor returned an invalid token id");
        retire(s, h);
        return;
    }
    const char *emit = "";
    size_t emit_len = 0;
    int at_stop = n ? stopper_feed(h->stopper, t, n, &emit, &emit_len) : 0;
    if (at_stop < 0) {
        push_error(h, -ENOMEM, "out of memory");
        retire(s, h);
        return;
    }
    struct sched_event *ev = event_new(SEV_TOKEN, emit, emit_len);
    if (ev) ev->tok = *r;
    push_or_fail(h, ev);
    if (at_stop || eog)
        finish(s, h, "stop", at_stop);
    else if (h->n_gen >= h->max_tokens)
        finish(s, h, "length", 0);
    else {
        h->pending = r->token;
        h->has_pending = 1;
    }
}

/* Builds and submits one micro-batch; 1 if one was submitted. */
static int step(sched_t *s) {
    int budget = s->o.step_tokens;
    int chunk_max = s->o.prefill_chunk;
    int n = 0, n_tok = 0;
    struct inflight *f = &s->fl[(s->fl_head + s->fl_count) % s->caps.depth];
    /* Decodes per micro-batch: at most an even share of the decoding sequences per stage. A
     * pipeline of k stages then settles on k batches of equal size, whatever split the
     * arrivals made at first: every pass over a stage's weights serves as many sequences as
     * it can, and no stage waits for a small batch while a large one holds the other. */
    int n_decoding = 0;
    for (int i = 0; i < s->caps.n_slots; i++)
        n_decoding += s->active[i] && s->active[i]->n_fed >= s->active[i]->n_prompt;
    int dec_cap = (n_decoding + s->caps.n_stages - 1) / s->caps.n_stages, n_dec = 0;
    /* Decodes first: one token each, they are latency-bound. */
    for (int i = 0; i < s->caps.n_slots && n_tok < budget && n_dec < dec_cap; i++) {
        sched_handle_t *h = s->active[i];
        if (!h || h->in_flight || !h->has_pending) continue;
        n_dec++;
        s->items[n] = (struct exec_seq_item){.seq_id = h->id,
                                             .slot = h->slot,
                                             .pos = h->n_fed,
                                             .tokens = &h->pending,
                                             .n_tokens = 1,
                                             .sample = 1};
        f->seqs[n++] = h;
        n_tok++;
    }
    /* Then prefill chunks, round-robin so one long prompt cannot hold back the others; while
     * sequences decode, only as many prompt tokens as keep this batch within the stall bound
     * (in flight or not, a decoding sequence waits behind this batch on every stage). */
    int prefill_budget = budget;
    if (n_decoding > 0) {
        int lim = batch_cost_prefill_limit(&s->cost, n_dec, dec_cap, s->o.prefill_stall);
        if (lim >= 0 && n_tok + lim < prefill_budget) prefill_budget = n_tok + lim;
    }
    for (int k = 0; k < s->caps.n_slots && n_tok < prefill_budget; k++) {
        int i = (s->rr + k) % s->caps.n_slots;
        sched_handle_t *h = s->active[i];
        if (!h || h->in_flight || h->has_pending || h->n_fed >= h->n_prompt) continue;
        int c = h->n_prompt - h->n_fed;
        if (c > chunk_max) c = chunk_max;
        if (c > prefill_budget - n_tok) c = prefill_budget - n_tok;
        s->items[n] = (struct exec_seq_item){.seq_id = h->id,
                                             .slot = h->slot,
                                             .pos = h->n_fed,
                                             .tokens = h->prompt + h->n_fed,
                                             .n_tokens = c,
                                             .sample = h->n_fed + c == h->n_prompt,
                                             .sp = h->n_fed == 0 ? &h->sp : NULL};
        f->seqs[n++] = h;
        n_tok += c;
    }
    if (n == 0) return 0;
    s->rr = (s->rr + 1) % s->caps.n_slots;
    uint64_t id = ++s->next_batch;
    bt_err e = {0};
    int rc = exec_submit(s->o.exec, id, s->items, n, &e);
    if (rc < 0) {
        BT_LOG(ERROR, "sched", "submit batch=%llu: %s", (unsigned long long)id, bt_errmsg(&e, rc));
        for (int i = 0; i < n; i++) {
            push_error(f->seqs[i], rc, bt_errmsg(&e, rc));
            retire(s, f->seqs[i]);
        }
        return 0;
    }
    for (int i = 0; i < n; i++) {
        sched_handle_t *h = f->seqs[i];
        h->in_flight = 1;
        if (h->has_pending) h->has_pending = 0;
        h->n_fed += s->items[i].n_tokens;
        if (s->items[i].n_tokens > 0 && h->n_fed <= h->n_prompt)
            metrics_add(s->o.metrics, MC_PROMPT_TOKENS, (uint64_t)s->items[i].n_tokens);
    }
    f->batch_id = id;
    f->n = n;
    f->n_tok = n_tok;
    s->fl_count++;
    metrics_add(s->o.metrics, MC_STEPS, 1);
    metrics_observe(s->o.metrics, MH_BATCH_TOKENS, n_tok);
    return 1;
}

static sched_handle_t *find_seq(struct inflight *f, uint64_t id) {
    for (int i = 0; i < f->n; i++)
        if (f->seqs[i] && f->seqs[i]->id == id) return f->seqs[i];
    return NULL;
}

static void complete(sched_t *s, const struct exec_done *d) {
    struct inflight *f = &s->fl[s->fl_head];
    double slowest = 0.0;
    for (int i = 0; i < s->caps.n_stages; i++) {
        if (d->stage_busy_s[i] > 0 || d->stage_bytes[i])
            metrics_stage(s->o.metrics, i, d->stage_busy_s[i], d->stage_bytes[i]);
        if (d->stage_busy_s[i] > slowest) slowest = d->stage_busy_s[i];
    }
    if (d->status >= 0) {
        batch_cost_observe(&s->cost, f->n_tok, slowest);
        double fixed, per_token;
        if (batch_cost_fit(&s->cost, &fixed, &per_token)) {
            metrics_set(s->o.metrics, MG_BATCH_FIXED_S, fixed);
            metrics_set(s->o.metrics, MG_BATCH_TOKEN_S, per_token);
        }
    }
    if (f->batch_id != d->batch_id) {
        BT_LOG(ERROR, "sched", "executor completed batch=%llu, expected %llu",
               (unsigned long long)d->batch_id, (unsigned long long)f->batch_id);
    }
    s->fl_head = (s->fl_head + 1) % s->caps.depth;
    s->fl_count--;
    for (int i = 0; i < f->n; i++)
        f->seqs[i]->in_flight = 0;
    if (d->status < 0) {
        for (int i = 0; i < f->n; i++) {
            push_error(f->seqs[i], d->status, d->msg[0] ? d->msg : bt_strerror(d->status));
            metrics_add(s->o.metrics, MC_REQ_FAILED, 1);
            retire(s, f->seqs[i]);
        }
        return;
    }
    for (int i = 0; i < d->n_results; i++) {
        sched_handle_t *h = find_seq(f, d->results[i].seq_id);
        if (!h) {
            BT_LOG(WARN, "sched", "result for unknown seq=%llu",
                   (unsigned long long)d->results[i].seq_id);
            continue;
        }
        for (int j = 0; j < f->n; j++)
            if (f->seqs[j] == h) f->seqs[j] = NULL; /* consumed */
        if (is_cancelled(h)) {
            metrics_add(s->o.metrics, MC_REQ_CANCELLED, 1);
            retire(s, h);
        } else {
            on_token(s, h, &d->results[i]);
        }
    }
    f->n = 0;
}

/* Cancelled sequences that are in no in-flight batch leave now. */
static void reap_cancelled(sched_t *s) {
    for (int i = 0; i < s->caps.n_slots; i++) {
        sched_handle_t *h = s->active[i];
        if (h && !h->in_flight && is_cancelled(h)) {
            metrics_add(s->o.metrics, MC_REQ_CANCELLED, 1);
            retire(s, h);
        }
    }
}

static void fail_all(sched_t *s, int code, const char *msg) {
    for (int i = 0; i < s->caps.n_slots; i++)
        if (s->active[i]) {
            s->active[i]->in_flight = 0;
            push_error(s->active[i], code, msg);
            retire(s, s->active[i]);
        }
    s->fl_count = 0;
    s->fl_head = 0;
    pthread_mutex_lock(&s->mu);
    while (s->q_head) {
        sched_handle_t *h = s->q_head;
        s->q_head = h->qnext;
        push_error(h, code, msg);
        handle_unref(h);
    }
    s->q_tail = NULL;
    s->n_queued = 0;
    pthread_mutex_unlock(&s->mu);
}

static void *sched_main(void *arg) {
    sched_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        reap_cancelled(s);
        admit(s);
        int submitted = 0;
        while (s->fl_count < s->caps.depth && step(s))
            submitted++;
        update_stats(s);
        if (s->fl_count > 0) {
            struct exec_done d;
            bt_err e = {0};
            /* Do not sleep long while more work could be submitted or requests wait. */
            int rc = exec_poll(s->o.exec, 20, &d, &e);
            if (rc < 0) {
                BT_LOG(ERROR, "sched", "executor: %s", bt_errmsg(&e, rc));
                fail_all(s, rc, bt_errmsg(&e, rc));
            } else if (rc == 1) {
                complete(s, &d);
            }
            continue;
        }
        if (submitted) continue;
        /* Idle: wait for a request or a cancel (the timeout also catches cancels of queued
         * requests, which do not signal). */
        pthread_mutex_lock(&s->mu);
        if (!s->stop && (!s->q_head || s->n_active >= s->caps.n_slots)) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += 20 * 1000000L;
            if (dl.tv_nsec >= 1000000000L) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->cv, &s->mu, &dl);
        }
        pthread_mutex_unlock(&s->mu);
    }
    /* Drain what is in flight so the executor lets go of our buffers, then fail the rest. */
    while (s->fl_count > 0) {
        struct exec_done d;
        bt_err e = {0};
        int rc = exec_poll(s->o.exec, 1000, &d, &e);
        if (rc < 0) break;
        if (rc == 1) {
            struct inflight *f = &s->fl[s->fl_head];
            for (int i = 0; i < f->n; i++)
                if (f->seqs[i]) f->seqs[i]->in_flight = 0;
            s->fl_head = (s->fl_head + 1) % s->caps.depth;
            s->fl_count--;
        }
    }
    fail_all(s, BT_ECANCELED, "the server is shutting down");
    update_stats(s);
    return NULL;
}

int sched_open(sched_t **out, const struct sched_opts *o, bt_err *e) {
    *out = NULL;
    const struct exec_caps *c = exec_caps(o->exec);
    if (c->n_slots < 1 || c->depth < 1 || c->max_ctx < 2 || c->max_batch < 1 || c->n_stages < 1 ||
        c->n_stages > EXEC_MAX_STAGES)
        return bt_fail(e, BT_EINVAL, "sched: bad executor caps slots=%d depth=%d ctx=%d batch=%d",
                       c->n_slots, c->depth, c->max_ctx, c->max_batch);
    sched_t *s = calloc(1, sizeof *s);
    if (!s) return bt_fail(e, -ENOMEM, "sched: out of memory");
    s->o = *o;
    s->caps = *c;
    if (s->o.step_tokens <= 0) s->o.step_tokens = c->max_batch < 512 ? c->max_batch : 512;
    if (s->o.step_tokens > c->max_batch) s->o.step_tokens = c->max_batch;
    if (s->o.prefill_chunk <= 0 || s->o.prefill_chunk > s->o.step_tokens)
        s->o.prefill_chunk = s->o.step_tokens;
    if (s->o.prefill_stall == 0.0) s->o.prefill_stall = 3.0; /* sched.h */
    batch_cost_init(&s->cost);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->active = calloc((size_t)c->n_slots, sizeof *s->active);
    s->fl = calloc((size_t)c->depth, sizeof *s->fl);
    /* A batch has at most one item per slot. */
    s->items = calloc((size_t)c->n_slots, sizeof *s->items);
    int ok = s->active && s->fl && s->items;
    for (int i = 0; ok && i < c->depth; i++)
        ok = (s->fl[i].seqs = calloc((size_t)c->n_slots, sizeof *s->fl[i].seqs)) != NULL;
    size_t n_eog = 0;
    const int32_t *eog = tokenizer_eog_ids(o->tok, &n_eog);
    if (ok && n_eog) {
        s->eog = malloc(n_eog * sizeof *s->eog);
        ok = s->eog != NULL;
        if (ok) {
            memcpy(s->eog, eog, n_eog * sizeof *s->eog);
            s->n_eog = n_eog;
        }
    }
    if (!ok) {
        sched_close(s);
        return bt_fail(e, -ENOMEM, "sched: out of memory for %d slots", c->n_slots);
    }
    s->stats.free_slots = c->n_slots;
    metrics_set(o->metrics, MG_SLOTS, c->n_slots);
    int rc = pthread_create(&s->thread, NULL, sched_main, s);
    if (rc) {
        sched_close(s);
        return bt_fail(e, -rc, "sched: cannot start the thread");
    }
    s->started = 1;
    BT_LOG(INFO, "sched",
           "slots=%d depth=%d stages=%d step_tokens=%d prefill_chunk=%d prefill_stall=%g ctx=%d",
           c->n_slots, c->depth, c->n_stages, s->o.step_tokens, s->o.prefill_chunk,
           s->o.prefill_stall > 0 ? s->o.prefill_stall : 0.0, c->max_ctx);
    *out = s;
    return 0;
}

void sched_close(sched_t *s) {
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; s->fl && i < s->caps.depth; i++)
        free(s->fl[i].seqs);
    free(s->fl);
    free(s->active);
    free(s->items);
    free(s->eog);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void sched_get_stats(sched_t *s, struct sched_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    pthread_mutex_unlock(&s->mu);
}
