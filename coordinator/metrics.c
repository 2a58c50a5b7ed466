/* coordinator/metrics.c: see metrics.h. */
#include "coordinator/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 16

struct hist_def {
    const char *name, *help;
    int n;
    double le[MAX_BUCKETS];
};

/* clang-format off */
static const struct hist_def hist_defs[MH_COUNT] = {
    [MH_TTFT] = {"baton_time_to_first_token_seconds", "Time from request arrival to the first token.",
                 12, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}},
    [MH_ITL] = {"baton_inter_token_seconds", "Time between consecutive tokens of a request.",
                12, {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}},
    [MH_E2E] = {"baton_request_duration_seconds", "Time from request arrival to its last token.",
                11, {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}},
    [MH_BATCH_TOKENS] = {"baton_batch_tokens", "Tokens per submitted micro-batch.",
                         10, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}},
};
static const char *const counter_names[MC_COUNT][2] = {
    [MC_PROMPT_TOKENS] = {"baton_prompt_tokens_total", "Prompt tokens processed."},
    [MC_GEN_TOKENS] = {"baton_generation_tokens_total", "Tokens generated."},
    [MC_REQ_FINISHED] = {"baton_requests_finished_total", "Requests that finished (stop or length)."},
    [MC_REQ_CANCELLED] = {"baton_requests_cancelled_total", "Requests cancelled (client gone)."},
    [MC_REQ_FAILED] = {"baton_requests_failed_total", "Requests failed by an executor error."},
    [MC_REQ_REJECTED] = {"baton_requests_rejected_total", "Requests rejected with the queue full."},
    [MC_STEPS] = {"baton_sched_steps_total", "Micro-batches submitted."},
};
static const char *const gauge_names[MG_COUNT][2] = {
    [MG_QUEUE_DEPTH] = {"baton_queue_depth", "Requests waiting for a sequence slot."},
    [MG_ACTIVE] = {"baton_active_sequences", "Sequences holding a slot."},
    [MG_SLOTS] = {"baton_slots", "Sequence slots in total."},
    [MG_INFLIGHT] = {"baton_batches_in_flight", "Micro-batches in flight in the pipeline."},
    [MG_BATCH_FIXED_S] = {"baton_batch_fixed_seconds",
                          "Learned cost of a micro-batch on the slowest stage: the part every batch pays."},
    [MG_BATCH_TOKEN_S] = {"baton_batch_token_seconds",
                          "Learned cost of a micro-batch on the slowest stage: the part per token."},
};
/* clang-format on */

struct hist {
    uint64_t bucket[MAX_BUCKETS]; /* non-cumulative counts; rendered cumulatively */
    uint64_t count;
    double sum;
};

struct metrics {
    pthread_mutex_t mu;
    uint64_t http[600];
    uint64_t counter[MC_COUNT];
    double gauge[MG_COUNT];
    struct hist hist[MH_COUNT];
    double stage_busy[METRICS_MAX_STAGES];
    uint64_t stage_bytes[METRICS_MAX_STAGES];
    int n_stages;
};

int metrics_open(metrics_t **out, bt_err *e) {
    metrics_t *m = calloc(1, sizeof *m);
    if (!m) return bt_fail(e, -ENOMEM, "metrics: out of memory");
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return 0;
}

void metrics_close(metrics_t *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_http(metrics_t *m, int status) {
    if (!m || status < 100 || status >= 600) return;
    pthread_mutex_lock(&m->mu);
    m->http[status]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_add(metrics_t *m, enum metric_counter c, uint64_t n) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->counter[c] += n;
    pthread_mutex_unlock(&m->mu);
}

void metrics_set(metrics_t *m, enum metric_gauge g, double v) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->gauge[g] = v;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe(metrics_t *m, enum metric_hist h, double v) {
    if (!m) return;
    const struct hist_def *d = &hist_defs[h];
    pthread_mutex_lock(&m->mu);
    struct hist *x = &m->hist[h];
    for (int i = 0; i < d->n; i++)
        if (v <= d->le[i]) {
            x->bucket[i]++;
            break;
        }
    x->count++;
    x->sum += v;
    pthread_mutex_unlock(&m->mu);
}

void metrics_stage(metrics_t *m, int stage, double busy_s, uint64_t bytes) {
    if (!m || stage < 0 || stage >= METRICS_MAX_STAGES) return;
    pthread_mutex_lock(&m->mu);
    m->stage_busy[stage] += busy_s;
    m->stage_bytes[stage] += bytes;
    if (stage + 1 > m->n_stages) m->n_stages = stage + 1;
    pthread_mutex_unlock(&m->mu);
}

uint64_t metrics_counter(metrics_t *m, enum metric_counter c) {
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    uint64_t v = m->counter[c];
    pthread_mutex_unlock(&m->mu);
    return v;
}

double metrics_gauge(metrics_t *m, enum metric_gauge g) {
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    double v = m->gauge[g];
    pthread_mutex_unlock(&m->mu);
    return v;
}

struct out {
    char *p;
    size_t n, cap;
    int oom;
};

__attribute__((format(printf, 2, 3))) static void outf(struct out *o, const char *fmt, ...) {
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)k < o->cap - o->n) {
            o->n += (size_t)k;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)k;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

char *metrics_render(metrics_t *m) {
    struct out o = {.p = malloc(4096), .cap = 4096};
    if (!o.p) return NULL;
    o.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    outf(&o, "# HELP baton_http_responses_total HTTP responses by status code.\n"
             "# TYPE baton_http_responses_total counter\n");
    for (int s = 100; s < 600; s++)
        if (m->http[s])
            outf(&o, "baton_http_responses_total{code=\"%d\"} %llu\n", s,
                 (unsigned long long)m->http[s]);
    for (int c = 0; c < MC_COUNT; c++)
        outf(&o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counter_names[c][0],
             counter_names[c][1], counter_names[c][0], counter_names[c][0],
             (unsigned long long)m->counter[c]);
    for (int g = 0; g < MG_COUNT; g++)
        outf(&o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", gauge_names[g][0], gauge_names[g][1],
             gauge_names[g][0], gauge_names[g][0], m->gauge[g]);
    for (int h = 0; h < MH_COUNT; h++) {
        const struct hist_def *d = &hist_defs[h];
        const struct hist *x = &m->hist[h];
        outf(&o, "# HELP %s %s\n# TYPE %s histogram\n", d->name, d->help, d->name);
        uint64_t cum = 0;
        for (int i = 0; i < d->n; i++) {
            cum += x->bucket[i];
            outf(&o, "%s_bucket{le=\"%g\"} %llu\n", d->name, d->le[i], (unsigned long long)cum);
        }
        outf(&o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", d->name,
             (unsigned long long)x->count, d->name, x->sum, d->name, (unsigned long long)x->count);
    }
    outf(&o, "# HELP baton_stage_busy_seconds_total Seconds each pipeline stage spent computing.\n"
             "# TYPE baton_stage_busy_seconds_total counter\n");
    for (int s = 0; s < m->n_stages; s++)
        outf(&o, "baton_stage_busy_seconds_total{stage=\"%d\"} %.17g\n", s, m->stage_busy[s]);
    outf(&o, "# HELP baton_stage_transfer_bytes_total Bytes sent to each pipeline stage.\n"
             "# TYPE baton_stage_transfer_bytes_total counter\n");
    for (int s = 0; s < m->n_stages; s++)
        outf(&o, "baton_stage_transfer_bytes_total{stage=\"%d\"} %llu\n", s,
             (unsigned long long)m->stage_bytes[s]);
    pthread_mutex_unlock(&m->mu);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    return o.p;
}
