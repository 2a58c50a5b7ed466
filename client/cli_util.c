/* client/cli_util.c: the local-inference helpers of the `baton` CLI (an in-process pipeline of
 * stages over a model, the decode loop of generate and run) and the token-id and f32 file
 * readers every command uses. Contracts in cli_util.h. */
#include "client/cli_util.h"

#include "common/clock.h"
#include "engine/sampler.h"
#include "ops/ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_layers(struct cli_pipe *p, const char *layers, bt_err *e) {
    int L = p->m->hp.n_layer;
    if (!layers) {
        p->n_stages = 1;
        p->s[0].lo = 0, p->s[0].hi = L;
        return 0;
    }
    const char *s = layers;
    p->n_stages = 0;
    while (*s) {
        int lo, hi, used;
        if (p->n_stages == CLI_MAX_STAGES || sscanf(s, "%d:%d%n", &lo, &hi, &used) != 2)
            return bt_fail(e, BT_EINVAL, "--layers '%s': expected lo:hi[,lo:hi...]", layers);
        if (lo < 0 || hi > L || lo >= hi || (p->n_stages && lo != p->s[p->n_stages - 1].hi))
            return bt_fail(e, BT_EINVAL,
                           "--layers '%s': range %d:%d does not chain inside "
                           "[0, %d)",
                           layers, lo, hi, L);
        p->s[p->n_stages].lo = lo, p->s[p->n_stages].hi = hi;
        p->n_stages++;
        s += used;
        if (*s == ',')
            s++;
        else if (*s)
            return bt_fail(e, BT_EINVAL, "--layers '%s': unexpected '%c'", layers, *s);
    }
    if (!p->n_stages) return bt_fail(e, BT_EINVAL, "--layers: empty");
    return 0;
}

int cli_pipe_open(struct cli_pipe *p, const char *model, const char *layers, int threads,
                  int max_tokens, int max_ctx, bt_err *e) {
    memset(p, 0, sizeof *p);
    int rc = ops_init(NULL, e);
    if (rc || (rc = model_open(&p->m, model, e)) || (rc = parse_layers(p, layers, e)) ||
        (rc = pool_open(&p->pool, threads, e)))
        goto fail;
    p->max_tokens = max_tokens;
    p->lo = p->s[0].lo;
    p->hi = p->s[p->n_stages - 1].hi;
    for (int i = 0; i < p->n_stages; i++) {
        struct cli_stage *s = &p->s[i];
        struct weights_opts wo = {.use_io_uring = 1};
        if ((rc = weights_load(&s->w, p->m, s->lo, s->hi, &wo, e)) ||
            (rc = seqstate_pool_new(&s->st, &p->m->hp, s->lo, s->hi, 1, max_ctx, e)) ||
            (rc = seqstate_acquire(s->st, &s->slot, e)) ||
            (rc = forward_ctx_new(&s->fc, s->w, s->st, p->pool, max_tokens, e)))
            goto fail;
    }
    size_t hb = (size_t)max_tokens * p->m->hp.n_embd * sizeof(float);
    if (!(p->hid[0] = malloc(hb)) || !(p->hid[1] = malloc(hb))) {
        rc = bt_fail(e, -ENOMEM, "hidden buffers");
        goto fail;
    }
    return 0;
fail:
    cli_pipe_close(p);
    return rc;
}

void cli_pipe_close(struct cli_pipe *p) {
    for (int i = 0; i < p->n_stages; i++) {
        forward_ctx_free(p->s[i].fc);
        seqstate_pool_free(p->s[i].st);
        weights_free(p->s[i].w);
    }
    free(p->hid[0]);
    free(p->hid[1]);
    pool_close(p->pool);
    model_close(p->m);
    memset(p, 0, sizeof *p);
}

int cli_pipe_run(struct cli_pipe *p, const int32_t *ids, const float *hidden, int n,
                 enum fwd_out out, float *dst, bt_err *e) {
    int H = p->m->hp.n_embd, V = p->m->hp.n_vocab;
    int last_is_head = p->hi == p->m->hp.n_layer;
    for (int t = 0; t < n; t += p->max_tokens) {
        int k = n - t < p->max_tokens ? n - t : p->max_tokens;
        int final_chunk = t + k == n;
        const float *in = hidden ? hidden + (size_t)t * H : NULL;
        for (int i = 0; i < p->n_stages; i++) {
            struct cli_stage *s = &p->s[i];
            int is_last = i + 1 == p->n_stages;
            struct fwd_seq sq = {s->slot, k, FWD_OUT_NONE};
            float *o = p->hid[i & 1];
            if (is_last && last_is_head) {
                sq.out = out == FWD_OUT_ALL                   ? FWD_OUT_ALL
                         : out == FWD_OUT_LAST && final_chunk ? FWD_OUT_LAST
                                                              : FWD_OUT_NONE;
                o = out == FWD_OUT_ALL ? dst + (size_t)t * V : dst;
            } else if (is_last) {
                o = dst + (size_t)t * H;
            }
            struct fwd_batch b = {1, &sq, s->lo == 0 ? ids + t : NULL, in, o, NULL};
            int rc = forward(s->fc, &b, e);
            if (rc) return rc;
            in = o;
        }
    }
    return 0;
}

void cli_layers_ends(const char *layers, int *lo, int *hi) {
    const char *last = strrchr(layers, ':');
    *lo = (int)strtol(layers, NULL, 10);
    if (last) *hi = (int)strtol(last + 1, NULL, 10);
}

int cli_generate(const struct cli_local *l, const int32_t *ids, int n, const char *src, int n_gen,
                 const struct sampler_params *sp, int32_t n_real, cli_token_fn on_token, void *ctx,
                 struct cli_gen_stats *st, bt_err *e) {
    struct cli_pipe p = {0};
    sampler_t *smp = NULL;
    int32_t *hist = NULL;
    float *lg = NULL;
    memset(st, 0, sizeof *st);
    int rc = cli_pipe_open(&p, l->model, l->layers, l->threads, l->chunk, n + n_gen, e);
    if (rc) goto out;
    if (p.lo != 0 || p.hi != p.m->hp.n_layer) {
        rc = bt_fail(e, BT_EINVAL, "--layers must cover all %d layers", p.m->hp.n_layer);
        goto out;
    }
    int V = p.m->hp.n_vocab;
    if (!(lg = malloc((size_t)V * sizeof(float))) ||
        !(hist = malloc((size_t)(n + n_gen + 1) * sizeof(int32_t)))) {
        rc = bt_fail(e, -ENOMEM, "buffers");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (ids[i] >= V) {
            rc = bt_fail(e, BT_EINVAL, "%s: token id %d >= vocabulary %d", src, ids[i], V);
            goto out;
        }
        hist[i] = ids[i];
    }
    if ((rc = sampler_new(&smp, sp, V, n_real > 0 && n_real < V ? n_real : V, e))) goto out;
    st->t_start = bt_now_ns();
    if ((rc = cli_pipe_run(&p, ids, NULL, n, FWD_OUT_LAST, lg, e))) goto out;
    st->t_prefill = bt_now_ns();
    while (st->n_gen < n_gen) {
        int32_t t = sampler_sample(smp, lg, hist, (size_t)(n + st->n_gen), NULL);
        hist[n + st->n_gen++] = t;
        if (sampler_is_stop_id(smp, t) || (rc = on_token(ctx, t, e))) break;
        if (st->n_gen < n_gen && (rc = cli_pipe_run(&p, &t, NULL, 1, FWD_OUT_LAST, lg, e))) break;
    }
    if (rc > 0) rc = 0; /* stopped by on_token */
out:
    sampler_free(smp);
    cli_pipe_close(&p);
    free(hist), free(lg);
    return rc;
}

int cli_read_all(FILE *f, const char *what, char **buf, size_t *len, bt_err *e) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb, cap *= 2;
        }
    }
    if (!b) return bt_fail(e, -ENOMEM, "%s", what);
    if (ferror(f)) {
        free(b);
        return bt_fail(e, -EIO, "%s: read error", what);
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

int cli_parse_ids(const char *text, int32_t limit, int32_t **ids, size_t *n, bt_err *e) {
    size_t cnt = 0, cap = 256;
    int32_t *a = malloc(cap * sizeof *a);
    if (!a) return bt_fail(e, -ENOMEM, "token ids");
    for (const char *p = text;;) {
        p += strspn(p, " \t\r\n,");
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (limit > 0 && v >= limit)) {
            int w = (int)strcspn(p, " \t\r\n,");
            free(a);
            if (limit > 0)
                return bt_fail(e, BT_EINVAL, "bad id '%.*s' (vocabulary size %d)", w > 32 ? 32 : w,
                               p, limit);
            return bt_fail(e, BT_EINVAL, "bad id '%.*s'", w > 32 ? 32 : w, p);
        }
        if (cnt == cap) {
            int32_t *b = realloc(a, 2 * cap * sizeof *b);
            if (!b) {
                free(a);
                return bt_fail(e, -ENOMEM, "token ids");
            }
            a = b, cap *= 2;
        }
        a[cnt++] = (int32_t)v;
        p = end;
    }
    *ids = a;
    *n = cnt;
    return 0;
}

int cli_read_ids(const char *path, int32_t **ids, int *n, bt_err *e) {
    FILE *f = fopen(path, "r");
    if (!f) return bt_fail(e, -errno, "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len, cnt = 0;
    int32_t *a = NULL;
    int rc = cli_read_all(f, path, &text, &len, e);
    fclose(f);
    if (!rc && (rc = cli_parse_ids(text, 0, &a, &cnt, e))) {
        char why[sizeof e->msg]; /* bt_fail must not format e->msg into itself */
        snprintf(why, sizeof why, "%s", e ? e->msg : "");
        rc = bt_fail(e, rc, "%s: %s", path, why);
    } else if (!rc && (cnt == 0 || cnt > INT32_MAX))
        rc = bt_fail(e, BT_EINVAL, "%s: %s", path, cnt ? "too many token ids" : "no token ids");
    free(text);
    if (rc) {
        free(a);
        return rc;
    }
    *ids = a;
    *n = (int)cnt;
    return 0;
}

int cli_read_f32(const char *path, float **data, size_t *n, bt_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return bt_fail(e, -errno, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len < 0 || len % 4) {
        fclose(f);
        return bt_fail(e, BT_EFORMAT, "%s: %ld bytes is not a whole number of f32", path, len);
    }
    float *d = malloc(len ? (size_t)len : 4);
    if (!d || fread(d, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(d);
        return bt_fail(e, d ? -EIO : -ENOMEM, "%s: read", path);
    }
    fclose(f);
    *data = d;
    *n = (size_t)len / 4;
    return 0;
}

int cli_write_f32(const char *path, const float *data, size_t n, bt_err *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return bt_fail(e, -errno, "%s: %s", path, strerror(errno));
    size_t w = fwrite(data, sizeof(float), n, f);
    if (fclose(f) || w != n) return bt_fail(e, -EIO, "%s: write failed", path);
    return 0;
}
