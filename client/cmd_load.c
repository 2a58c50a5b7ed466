/* client/cmd_load.c: `baton load --url URL`: a load generator for OpenAI-compatible servers.
 *
 * C client threads each send one streaming request at a time (completions, or chat with
 * --chat) until N requests were sent or S seconds passed. Request i draws its prompt length
 * and max_tokens from the --prompt-len / --output-len distributions with a PRNG seeded from
 * (--seed, i); prompts are words from a fixed list, so the server's token count (usage) is
 * what the figures report. Measured per request: time to first token (TTFT), the gaps between
 * token arrivals (inter-token latency, a chunk of k tokens counts k gaps of 1/k its wait),
 * end-to-end latency; errors are counted by kind (HTTP status, connection, timeout, protocol,
 * greedy mismatch). A progress line goes to stderr (redrawn on a terminal, one line a second
 * otherwise); the summary goes to stdout, as text or one JSON object (--json).
 *
 * --check-greedy: temperature 0, token ids requested, and only P distinct prompts (--prompts):
 * each is first run alone, then every answer under load must carry exactly the same tokens.
 * Exit status: 0 when every request succeeded (and matched), 1 otherwise, 2 on bad flags. */
#include "client/cli_flags.h"
#include "client/commands.h"
#include "client/load_stats.h"
#include "client/oai_client.h"
#include "common/clock.h"

#include <argp.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 4096

struct load_args {
    int concurrency, requests, json, quiet, check, n_prompts;
    double duration_s;
    struct load_dist plen, olen;
    uint64_t seed;
    struct cli_flags f; /* --url, --model, --timeout, --temp, --chat */
    bt_err e;
};

enum { OPT_PLEN = 1000, OPT_OLEN, OPT_JSON, OPT_CHECK, OPT_PROMPTS, OPT_SEED, OPT_QUIET };

static const struct argp_option load_opts[] = {
    {"url", CLI_KEY_URL, "URL", 0, "server, e.g. http://127.0.0.1:8080 (required)", 0},
    {"concurrency", 'c', "C", 0, "requests in flight at once (default 1)", 0},
    {"requests", 'r', "N", 0, "send N requests in all", 0},
    {"duration", 'd', "SECS", 0, "or: keep sending for SECS seconds", 0},
    {"prompt-len", OPT_PLEN, "DIST", 0,
     "prompt words: 64, 32:128 (uniform), normal:64:16 (default 32)", 0},
    {"output-len", OPT_OLEN, "DIST", 0, "max_tokens per request, same forms (default 64)", 0},
    {"chat", CLI_KEY_CHAT, 0, 0, "use /v1/chat/completions (default /v1/completions)", 0},
    {"temp", CLI_KEY_TEMP, "T", 0, "temperature (default: the server's)", 0},
    {"seed", OPT_SEED, "S", 0, "seed of the lengths and prompts (default 1)", 0},
    {"check-greedy", OPT_CHECK, 0, 0,
     "greedy; run each prompt alone first, then demand identical tokens under load", 0},
    {"prompts", OPT_PROMPTS, "P", 0, "distinct prompts with --check-greedy (default 8)", 0},
    {"model", CLI_KEY_SERVER_MODEL, "NAME", 0, "model id (default: the server's first)", 0},
    {"timeout", CLI_KEY_TIMEOUT, "SECS", 0,
     "a request fails when the server is silent this long (120)", 0},
    {"json", OPT_JSON, 0, 0, "print the summary as one JSON object", 0},
    {"quiet", OPT_QUIET, 0, 0, "no progress line", 0},
    {0}};

static error_t load_parse(int key, char *arg, struct argp_state *st) {
    struct load_args *a = st->input;
    char *end;
    switch (key) {
    case OPT_JSON:
        a->json = 1;
        break;
    case OPT_QUIET:
        a->quiet = 1;
        break;
    case OPT_CHECK:
        a->check = 1;
        break;
    case 'c':
        if (cli_parse_int("--concurrency", arg, 1, MAX_CONCURRENCY, &a->concurrency, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case 'r':
        if (cli_parse_int("--requests", arg, 1, 100000000, &a->requests, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case OPT_PROMPTS:
        if (cli_parse_int("--prompts", arg, 1, 100000, &a->n_prompts, &a->e))
            argp_error(st, "%s", a->e.msg);
        break;
    case 'd':
        a->duration_s = strtod(arg, &end);
        if (*end || !(a->duration_s > 0) || a->duration_s > 1e6)
            argp_error(st, "--duration: seconds > 0, not '%s'", arg);
        break;
    case OPT_SEED:
        if (cli_parse_u64("--seed", arg, &a->seed, &a->e)) argp_error(st, "%s", a->e.msg);
        break;
    case OPT_PLEN:
        if (load_dist_parse(arg, &a->plen, &a->e)) argp_error(st, "--prompt-len: %s", a->e.msg);
        break;
    case OPT_OLEN:
        if (load_dist_parse(arg, &a->olen, &a->e)) argp_error(st, "--output-len: %s", a->e.msg);
        break;
    case ARGP_KEY_END:
        if (!a->f.v.url) argp_error(st, "--url is required");
        if (!a->requests && !(a->duration_s > 0)) argp_error(st, "--requests or --duration");
        if (a->requests && a->duration_s > 0)
            argp_error(st, "--requests and --duration exclude each other");
        break;
    default:
        return cli_flags_parse(&a->f, key, arg, st);
    }
    return 0;
}

/* ------------------------------------------------------------------ one run */

enum err_kind { EK_CONN, EK_TIMEOUT, EK_PROTO, EK_STREAM, EK_MISMATCH, EK_COUNT };
static const char *const err_names[EK_COUNT] = {"connection", "timeout", "protocol", "stream_error",
                                                "greedy_mismatch"};

struct tstats { /* one client thread's figures; merged at the end */
    struct load_samples ttft, itl, e2e;
    long ok, prompt_tokens, output_tokens;
    long errs[EK_COUNT];
    long http[600]; /* by status */
    char last_error[256];
};

struct ref { /* --check-greedy: the tokens of each prompt when run alone */
    int32_t *ids;
    int n;
};

struct run {
    const struct load_args *a;
    struct oai_target tg;
    int64_t t0, deadline;
    atomic_long next, done, failed, tokens;
    atomic_int active; /* client threads still running */
    struct ref *refs;
    struct tstats *ts; /* [concurrency] */
};

/* A fixed word list: common English words are one token in byte-level BPE vocabularies, so
 * a prompt of N words is close to N tokens (usage reports the exact count). */
static const char *const words[] = {
    "the",    "sea",   "and",   "wind",  "over", "a",       "small",  "town",  "where",
    "people", "walk",  "to",    "work",  "in",   "morning", "light",  "with",  "their",
    "dogs",   "on",    "long",  "roads", "by",   "old",     "trees",  "that",  "grow",
    "near",   "river", "water", "is",    "cold", "but",     "clear",  "as",    "glass",
    "when",   "sun",   "comes", "up",    "from", "hills",   "behind", "house",
};
#define N_WORDS (sizeof words / sizeof *words)

/* The request body of key k (k = request index, or prompt index with --check-greedy). */
static char *build_body(const struct run *R, const char *model, int k) {
    const struct load_args *a = R->a;
    uint64_t rng = a->seed * 0x9e3779b97f4a7c15ull + (uint64_t)k * 0xd1b54a32d192ed03ull + 1;
    int plen = load_dist_sample(&a->plen, &rng), olen = load_dist_sample(&a->olen, &rng);
    size_t cap = (size_t)plen * 10 + 32, n = 0;
    char *prompt = malloc(cap);
    if (!prompt) return NULL;
    n += (size_t)snprintf(prompt, cap, "%d", k); /* distinct starts: no two prompts alike */
    for (int i = 1; i < plen; i++)
        n += (size_t)snprintf(prompt + n, cap - n, " %s", words[load_rng_next(&rng) % N_WORDS]);
    /* --check-greedy: temperature 0 whatever --temp says */
    struct oai_body b = {.model = model,
                         .user = a->f.p.chat ? prompt : NULL,
                         .prompt = a->f.p.chat ? NULL : prompt,
                         .max_tokens = olen,
                         .has_temp = a->check || a->f.s.temp_given,
                         .temp = a->check ? 0.0f : a->f.s.sp.temperature,
                         .has_stream = 1,
                         .stream = 1,
                         .think = -1,
                         .want_ids = 1};
    char *body = oai_body_json(&b);
    free(prompt);
    return body;
}

struct req_view { /* per request, for the token-arrival callback */
    struct tstats *ts;
    struct run *R;
    int64_t last_ns;
};

static int on_delta(void *ctx, const struct oai_delta *d, int64_t t_ns) {
    struct req_view *v = ctx;
    if (d->n_tokens <= 0) return 0;
    if (v->last_ns) {
        double gap = (double)(t_ns - v->last_ns) * 1e-6 / d->n_tokens;
        for (int i = 0; i < d->n_tokens; i++)
            if (load_samples_add(&v->ts->itl, gap)) return 1;
    }
    v->last_ns = t_ns;
    atomic_fetch_add(&v->R->tokens, d->n_tokens);
    return 0;
}

static void count_error(struct tstats *ts, enum err_kind k, const char *msg) {
    ts->errs[k]++;
    snprintf(ts->last_error, sizeof ts->last_error, "%s", msg);
}

/* Runs request key k; figures go into ts. With ref_out (the reference pass) the tokens are
 * handed over instead of compared. Returns 1 on success. */
static int one_request(struct run *R, const char *model, int k, struct tstats *ts,
                       struct ref *ref_out) {
    char *body = build_body(R, model, k);
    if (!body) {
        count_error(ts, EK_PROTO, "out of memory building a request");
        return 0;
    }
    struct req_view v = {.ts = ts, .R = R};
    struct oai_result r;
    bt_err e = {0};
    int rc =
        oai_request(&R->tg.u, R->tg.path, body, R->a->f.v.timeout_s * 1000, on_delta, &v, &r, &e);
    free(body);
    int ok = 0;
    if (rc == BT_ETIMEDOUT)
        count_error(ts, EK_TIMEOUT, e.msg);
    else if (rc == BT_EPROTO || rc == BT_ECANCELED || rc == -ENOMEM)
        count_error(ts, EK_PROTO, bt_errmsg(&e, rc));
    else if (rc)
        count_error(ts, EK_CONN, bt_errmsg(&e, rc));
    else if (r.status != 200) {
        ts->http[r.status >= 100 && r.status < 600 ? r.status : 0]++;
        snprintf(ts->last_error, sizeof ts->last_error, "HTTP %d: %.200s", r.status, r.error);
    } else if (r.error[0])
        count_error(ts, EK_STREAM, r.error);
    else
        ok = 1;
    if (ok && R->a->check) {
        if (ref_out) {
            ref_out->ids = r.ids, ref_out->n = r.n_ids;
            r.ids = NULL;
        } else {
            const struct ref *want = &R->refs[k];
            if (want->n != r.n_ids || memcmp(want->ids, r.ids, (size_t)r.n_ids * sizeof *r.ids)) {
                char m[256];
                int at = 0;
                while (at < r.n_ids && at < want->n && want->ids[at] == r.ids[at])
                    at++;
                snprintf(m, sizeof m,
                         "prompt %d: %d tokens under load vs %d alone, first difference at %d", k,
                         r.n_ids, want->n, at);
                count_error(ts, EK_MISMATCH, m);
                ok = 0;
            }
        }
    }
    if (ok) {
        ts->ok++;
        int ntok;
        double ttft, e2e;
        oai_result_figures(&r, &ntok, &ttft, &e2e);
        if (load_samples_add(&ts->ttft, ttft * 1e3) || load_samples_add(&ts->e2e, e2e * 1e3))
            count_error(ts, EK_PROTO, "out of memory for samples");
        ts->output_tokens += ntok;
        ts->prompt_tokens += r.prompt_tokens > 0 ? r.prompt_tokens : 0;
    } else {
        atomic_fetch_add(&R->failed, 1);
    }
    atomic_fetch_add(&R->done, 1);
    oai_result_free(&r);
    return ok;
}

struct worker_arg {
    struct run *R;
    const char *model;
    int id;
};

static void *client_thread(void *p) {
    struct worker_arg *w = p;
    struct run *R = w->R;
    const struct load_args *a = R->a;
    for (;;) {
        long i = atomic_fetch_add(&R->next, 1);
        if (a->requests ? i >= a->requests : bt_now_ns() >= R->deadline) break;
        int k = a->check ? (int)(i % a->n_prompts) : (int)i;
        one_request(R, w->model, k, &R->ts[w->id], NULL);
    }
    atomic_fetch_sub(&R->active, 1);
    return NULL;
}

static void progress(struct run *R, int tty, int final) {
    double el = (double)(bt_now_ns() - R->t0) * 1e-9;
    long done = atomic_load(&R->done), failed = atomic_load(&R->failed);
    long tok = atomic_load(&R->tokens);
    char goal[64];
    if (R->a->requests)
        snprintf(goal, sizeof goal, "/%d", R->a->requests);
    else
        goal[0] = 0;
    fprintf(stderr, "%sload: %ld%s done, %ld errors, %ld tokens, %.1f tok/s, %.1f s%s",
            tty ? "\r" : "", done, goal, failed, tok, el > 0 ? (double)tok / el : 0.0, el,
            tty && !final ? "   " : "\n");
    fflush(stderr);
}

static void print_lat_text(const char *name, struct load_samples *s) {
    if (!s->n) {
        printf("  %-22s %9s\n", name, "-");
        return;
    }
    printf("  %-22s %9.2f %9.2f %9.2f %9.2f %9.2f\n", name, load_percentile(s, 50),
           load_percentile(s, 90), load_percentile(s, 99), load_percentile(s, 100), load_mean(s));
}

static void add_lat_json(cJSON *root, const char *name, struct load_samples *s) {
    cJSON *o = cJSON_AddObjectToObject(root, name);
    if (!s->n) return;
    cJSON_AddNumberToObject(o, "p50", load_percentile(s, 50));
    cJSON_AddNumberToObject(o, "p90", load_percentile(s, 90));
    cJSON_AddNumberToObject(o, "p99", load_percentile(s, 99));
    cJSON_AddNumberToObject(o, "max", load_percentile(s, 100));
    cJSON_AddNumberToObject(o, "mean", load_mean(s));
    cJSON_AddNumberToObject(o, "n", (double)s->n);
}

int cmd_load(int argc, char **argv) {
    struct load_args a = {.concurrency = 1, .n_prompts = 8, .seed = 1, .f.v.timeout_s = 120};
    load_dist_parse("32", &a.plen, NULL);
    load_dist_parse("64", &a.olen, NULL);
    struct argp argp = {
        load_opts, load_parse, NULL, "Load-tests a server with concurrent streaming requests.",
        0,         0,          0};
    if (argp_parse(&argp, argc, argv, 0, NULL, &a)) return 2;
    struct run R = {.a = &a};
    bt_err e = {0};
    int rc = oai_target_resolve(&R.tg, a.f.v.url,
                                a.f.p.chat ? "/v1/chat/completions" : "/v1/completions",
                                a.f.v.model, a.f.v.timeout_s * 1000, &e);
    if (rc) {
        fprintf(stderr, "baton load: %s\n", bt_errmsg(&e, rc));
        return 1;
    }
    R.ts = calloc((size_t)a.concurrency, sizeof *R.ts);
    pthread_t *th = calloc((size_t)a.concurrency, sizeof *th);
    struct worker_arg *wa = calloc((size_t)a.concurrency, sizeof *wa);
    int status = 1, started = 0;
    if (!R.ts || !th || !wa) {
        fprintf(stderr, "baton load: out of memory\n");
        goto out;
    }
    if (a.check) { /* the references: each prompt alone, one after another */
        R.refs = calloc((size_t)a.n_prompts, sizeof *R.refs);
        struct tstats scratch = {0};
        for (int k = 0; R.refs && k < a.n_prompts; k++) {
            if (!one_request(&R, R.tg.model, k, &scratch, &R.refs[k])) {
                fprintf(stderr, "baton load: reference request %d failed: %s\n", k,
                        scratch.last_error);
                load_samples_free(&scratch.ttft), load_samples_free(&scratch.itl);
                load_samples_free(&scratch.e2e);
                goto out;
            }
        }
        load_samples_free(&scratch.ttft), load_samples_free(&scratch.itl);
        load_samples_free(&scratch.e2e);
        atomic_store(&R.done, 0), atomic_store(&R.failed, 0), atomic_store(&R.tokens, 0);
    }
    R.t0 = bt_now_ns();
    R.deadline = R.t0 + (int64_t)(a.duration_s * 1e9);
    for (; started < a.concurrency; started++) {
        wa[started] = (struct worker_arg){.R = &R, .model = R.tg.model, .id = started};
        atomic_fetch_add(&R.active, 1);
        if (pthread_create(&th[started], NULL, client_thread, &wa[started])) {
            atomic_fetch_sub(&R.active, 1);
            fprintf(stderr, "baton load: cannot start client thread %d\n", started);
            break;
        }
    }
    int tty = isatty(STDERR_FILENO);
    int64_t next_print = R.t0 + 1000000000;
    while (atomic_load(&R.active) > 0) { /* the threads stop themselves */
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t now = bt_now_ns();
        if (!a.quiet && now >= next_print) {
            progress(&R, tty, 0);
            next_print = now + (tty ? 250000000 : 1000000000);
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    int64_t t_end = bt_now_ns();
    if (!a.quiet) progress(&R, tty, 1);

    struct tstats all = {0};
    for (int i = 0; i < started; i++) {
        struct tstats *t = &R.ts[i];
        if (load_samples_merge(&all.ttft, &t->ttft) || load_samples_merge(&all.itl, &t->itl) ||
            load_samples_merge(&all.e2e, &t->e2e)) {
            fprintf(stderr, "baton load: out of memory\n");
            goto out_all;
        }
        all.ok += t->ok, all.prompt_tokens += t->prompt_tokens;
        all.output_tokens += t->output_tokens;
        for (int k = 0; k < EK_COUNT; k++)
            all.errs[k] += t->errs[k];
        for (int s = 0; s < 600; s++)
            all.http[s] += t->http[s];
        if (t->last_error[0]) snprintf(all.last_error, sizeof all.last_error, "%s", t->last_error);
    }
    long n_err = 0;
    for (int k = 0; k < EK_COUNT; k++)
        n_err += all.errs[k];
    for (int s = 0; s < 600; s++)
        n_err += all.http[s];
    double secs = (double)(t_end - R.t0) * 1e-9;
    char pd[64], od[64];
    load_dist_format(&a.plen, pd, sizeof pd);
    load_dist_format(&a.olen, od, sizeof od);
    double tok_s = secs > 0 ? (double)all.output_tokens / secs : 0;
    double req_s = secs > 0 ? (double)all.ok / secs : 0;
    double all_tok_s = secs > 0 ? (double)(all.output_tokens + all.prompt_tokens) / secs : 0;
    if (a.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "url", a.f.v.url);
        cJSON_AddStringToObject(o, "model", R.tg.model);
        cJSON_AddStringToObject(o, "endpoint", R.tg.path);
        cJSON_AddNumberToObject(o, "concurrency", a.concurrency);
        cJSON_AddStringToObject(o, "prompt_len", pd);
        cJSON_AddStringToObject(o, "output_len", od);
        cJSON_AddNumberToObject(o, "requests", (double)(all.ok + n_err));
        cJSON_AddNumberToObject(o, "ok", (double)all.ok);
        cJSON_AddNumberToObject(o, "duration_s", secs);
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)all.prompt_tokens);
        cJSON_AddNumberToObject(o, "output_tokens", (double)all.output_tokens);
        cJSON_AddNumberToObject(o, "req_per_s", req_s);
        cJSON_AddNumberToObject(o, "output_tok_per_s", tok_s);
        cJSON_AddNumberToObject(o, "total_tok_per_s", all_tok_s);
        add_lat_json(o, "ttft_ms", &all.ttft);
        add_lat_json(o, "itl_ms", &all.itl);
        add_lat_json(o, "e2e_ms", &all.e2e);
        cJSON *er = cJSON_AddObjectToObject(o, "errors");
        cJSON_AddNumberToObject(er, "total", (double)n_err);
        for (int k = 0; k < EK_COUNT; k++)
            cJSON_AddNumberToObject(er, err_names[k], (double)all.errs[k]);
        cJSON *h = cJSON_AddObjectToObject(er, "http");
        for (int s = 0; s < 600; s++)
            if (all.http[s]) {
                char key[16];
                snprintf(key, sizeof key, "%d", s % 1000);
                cJSON_AddNumberToObject(h, key, (double)all.http[s]);
            }
        if (all.last_error[0]) cJSON_AddStringToObject(er, "last", all.last_error);
        if (a.check) cJSON_AddNumberToObject(o, "greedy_prompts", a.n_prompts);
        char *txt = cJSON_PrintUnformatted(o);
        if (txt) printf("%s\n", txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        printf("load: %s model=%s concurrency=%d prompt_len=%s output_len=%s%s\n", R.tg.path,
               R.tg.model, a.concurrency, pd, od, a.check ? " check_greedy=1" : "");
        printf("  requests: %ld ok, %ld errors in %.2f s\n", all.ok, n_err, secs);
        printf("  throughput: %.2f req/s, %.1f output tok/s, %.1f total tok/s\n", req_s, tok_s,
               all_tok_s);
        printf("  tokens: prompt %ld (mean %.1f), output %ld (mean %.1f)\n", all.prompt_tokens,
               all.ok ? (double)all.prompt_tokens / (double)all.ok : 0.0, all.output_tokens,
               all.ok ? (double)all.output_tokens / (double)all.ok : 0.0);
        printf("  %-22s %9s %9s %9s %9s %9s\n", "latency (ms)", "p50", "p90", "p99", "max", "mean");
        print_lat_text("time to first token", &all.ttft);
        print_lat_text("inter-token", &all.itl);
        print_lat_text("end to end", &all.e2e);
        if (n_err) {
            printf("  errors:");
            for (int k = 0; k < EK_COUNT; k++)
                if (all.errs[k]) printf(" %s=%ld", err_names[k], all.errs[k]);
            for (int s = 0; s < 600; s++)
                if (all.http[s]) printf(" http_%d=%ld", s, all.http[s]);
            printf("\n  last error: %s\n", all.last_error);
        }
    }
    fflush(stdout);
    status = n_err || all.ok == 0 ? 1 : 0;
out_all:
    load_samples_free(&all.ttft), load_samples_free(&all.itl), load_samples_free(&all.e2e);
out:
    for (int i = 0; R.ts && i < a.concurrency; i++) {
        load_samples_free(&R.ts[i].ttft), load_samples_free(&R.ts[i].itl);
        load_samples_free(&R.ts[i].e2e);
    }
    for (int k = 0; R.refs && k < a.n_prompts; k++)
        free(R.refs[k].ids);
    free(R.refs);
    free(R.ts);
    free(th);
    free(wa);
    return status;
}
