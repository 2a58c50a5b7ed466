/* client/cli_util.c: see cli_util.h. */
#include "client/cli_util.h"

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

int cli_read_ids(const char *path, int32_t **ids, int *n, bt_err *e) {
    FILE *f = fopen(path, "r");
    if (!f) return bt_fail(e, -errno, "%s: %s", path, strerror(errno));
    int cap = 256, cnt = 0;
    int32_t *a = malloc((size_t)cap * sizeof *a);
    long v;
    int c;
    while (a && (c = fscanf(f, "%ld", &v)) == 1) {
        if (v < 0 || v > INT32_MAX) {
            fclose(f);
            free(a);
            return bt_fail(e, BT_EINVAL, "%s: token id %ld out of range", path, v);
        }
        if (cnt == cap) {
            int32_t *b = realloc(a, (size_t)(cap *= 2) * sizeof *a);
            if (!b) break;
            a = b;
        }
        a[cnt++] = (int32_t)v;
    }
    int bad = !feof(f);
    fclose(f);
    if (!a) return bt_fail(e, -ENOMEM, "%s", path);
    if (bad || cnt == 0) {
        free(a);
        return bt_fail(e, BT_EINVAL, "%s: %s", path,
                       cnt ? "not a list of integer token ids" : "no token ids");
    }
    *ids = a;
    *n = cnt;
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

int cli_parse_int(const char *flag, const char *s, int min, int max, int *out, bt_err *e) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return bt_fail(e, BT_EINVAL, "%s '%s': expected an integer in [%d, %d]", flag, s, min, max);
    *out = (int)v;
    return 0;
}
