/* client/cmd_inspect.c: `baton inspect FILE [--stages N] [--ctx N] [--tensors]`: what a model
 * file holds and what running it costs: architecture and hyperparameters (read from the file),
 * layer kinds, the tensor table with dtypes and bytes, the bytes each of N contiguous layer
 * ranges needs (weights from model_range, state from seqstate_bytes), and the tokenizer. */
#include "client/commands.h"
#include "common/err.h"
#include "engine/chat.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "engine/tokenizer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double mib(uint64_t b) {
    return (double)b / (1024.0 * 1024.0);
}

static void print_hparams(const struct model_desc *m) {
    const struct qwen35_hparams *hp = &m->hp;
    int n_full = 0;
    for (int l = 0; l < hp->n_layer; l++)
        n_full += hp->kind[l] == LAYER_FULL_ATTN;
    printf("model:        %s (%s)\n", m->name ? m->name : "?",
           m->format == MODEL_GGUF ? "gguf" : "safetensors");
    printf("architecture: qwen35, %d layers: %d linear attention (Gated DeltaNet) + %d full "
           "attention%s\n",
           hp->n_layer, hp->n_layer - n_full, n_full,
           hp->n_block > hp->n_layer ? " (+ MTP blocks, skipped)" : "");
    printf("hidden %d, ffn %d, vocab %d, context %d, %s embeddings\n", hp->n_embd, hp->n_ff,
           hp->n_vocab, hp->n_ctx_train, hp->tied_embeddings ? "tied" : "untied");
    printf("attention:    %d query heads, %d kv heads, head_dim %d, rope %d dims theta %.0f\n",
           hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot, (double)hp->rope_theta);
    printf("delta net:    %d key heads x %d, %d value heads x %d, conv kernel %d\n",
           hp->ssm_n_group, hp->ssm_d_state, hp->ssm_dt_rank, hp->ssm_head_v_dim, hp->conv_kernel);
    printf("layer kinds:  ");
    for (int l = 0; l < hp->n_layer; l++)
        putchar(hp->kind[l] == LAYER_FULL_ATTN ? 'F' : 'L');
    printf("\n");
    printf("tensors:      %d (%d skipped), %.1f MiB\n", m->n_tensors, m->n_skipped,
           mib(m->total_bytes));
}

static void print_tensors(const struct model_desc *m) {
    printf("\n%-40s %-6s %-22s %12s\n", "tensor", "dtype", "shape (ne)", "bytes");
    for (int i = 0; i < m->n_tensors; i++) {
        const struct tensor_desc *t = &m->tensors[i];
        char shape[64];
        int n = snprintf(shape, sizeof shape, "[%lld", (long long)t->ne[0]);
        for (int d = 1; d < t->n_dims && n > 0 && (size_t)n < sizeof shape; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, ", %lld", (long long)t->ne[d]);
        if (n > 0 && (size_t)n < sizeof shape) snprintf(shape + n, sizeof shape - (size_t)n, "]");
        printf("%-40s %-6s %-22s %12llu\n", t->name, dtype_name(t->dtype), shape,
               (unsigned long long)t->n_bytes);
    }
}

/* Splits [0, n_layer) into n_stages ranges of near-equal weight bytes and prints each one's
 * weights and per-sequence state, i.e. the memory a pipeline stage needs. */
static int print_ranges(const struct model_desc *m, int n_stages, int max_ctx, bt_err *e) {
    const struct qwen35_hparams *hp = &m->hp;
    if (n_stages > hp->n_layer) n_stages = hp->n_layer;
    uint64_t *layer_bytes = calloc((size_t)hp->n_layer, sizeof *layer_bytes);
    if (!layer_bytes) return bt_fail(e, -12, "inspect: out of memory");
    uint64_t total = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        struct layer_range r;
        int rc = model_range(m, l, l + 1, &r, e);
        if (rc < 0) {
            free(layer_bytes);
            return rc;
        }
        layer_bytes[l] = r.bytes;
        total += r.bytes;
        free(r.tensors);
    }
    printf("\n%d stage%s (state per sequence at %d tokens of context):\n", n_stages,
           n_stages == 1 ? "" : "s", max_ctx);
    printf("%-8s %-9s %12s %12s %12s\n", "stage", "layers", "weights MiB", "state MiB",
           "total MiB");
    int lo = 0;
    uint64_t done = 0;
    for (int s = 0; s < n_stages; s++) {
        int hi = lo + 1;
        uint64_t goal = total * (uint64_t)(s + 1) / (uint64_t)n_stages;
        while (hi < hp->n_layer - (n_stages - s - 1) && done + layer_bytes[hi - 1] < goal) {
            done += layer_bytes[hi - 1];
            hi++;
        }
        done += layer_bytes[hi - 1];
        if (s == n_stages - 1) hi = hp->n_layer;
        struct layer_range r;
        int rc = model_range(m, lo, hi, &r, e);
        if (rc < 0) {
            free(layer_bytes);
            return rc;
        }
        size_t state = seqstate_bytes(hp, lo, hi, max_ctx);
        char span[32];
        snprintf(span, sizeof span, "%d..%d", lo, hi - 1);
        printf("%-8d %-9s %12.1f %12.1f %12.1f\n", s, span, mib(r.bytes), mib(state),
               mib(r.bytes + state));
        free(r.tensors);
        lo = hi;
    }
    free(layer_bytes);
    return 0;
}

static void print_tokenizer(const char *path) {
    tok_t *tok = NULL;
    bt_err e = {0};
    if (tokenizer_open(&tok, path, &e) < 0) {
        printf("\ntokenizer:    none usable (%s)\n", e.msg);
        return;
    }
    size_t n_eog = 0;
    const int32_t *eog = tokenizer_eog_ids(tok, &n_eog);
    printf("\ntokenizer:    byte-level BPE (%s pre-tokenizer), %d slots, %d real tokens\n",
           tokenizer_pre(tok) == TOK_PRE_QWEN35 ? "qwen35" : "qwen2", tokenizer_n_vocab(tok),
           tokenizer_n_real(tok));
    printf("end of generation:");
    for (size_t i = 0; i < n_eog; i++)
        printf(" %d %s", eog[i], tokenizer_token_text(tok, eog[i]));
    const char *tmpl = tokenizer_chat_template(tok);
    printf("\nchat template: %s\n", !tmpl ? "none (Qwen3.5 ChatML assumed)"
                                    : chat_detect(tmpl) == CHAT_QWEN35
                                        ? "Qwen3.5 ChatML (thinking, XML tool calls)"
                                        : "Qwen3 ChatML");
    tokenizer_free(tok);
}

static void usage(FILE *f) {
    fprintf(f, "usage: baton inspect FILE [--stages N] [--ctx N] [--tensors]\n"
               "  FILE        a .gguf file, or a Hugging Face checkpoint directory\n"
               "  --stages N  show the memory of N contiguous layer ranges (default 1..4)\n"
               "  --ctx N     context per sequence for the state figures (default 4096)\n"
               "  --tensors   list every tensor with its dtype, shape and bytes\n");
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"stages", required_argument, NULL, 's'},
                                         {"ctx", required_argument, NULL, 'c'},
                                         {"tensors", no_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int stages = 0, ctx = 4096, tensors = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            stages = atoi(optarg);
            break;
        case 'c':
            ctx = atoi(optarg);
            break;
        case 't':
            tensors = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || stages < 0 || ctx <= 0) {
        usage(stderr);
        return 2;
    }
    struct model_desc *m = NULL;
    bt_err e = {0};
    int rc = model_open(&m, argv[optind], &e);
    if (rc < 0) {
        fprintf(stderr, "baton inspect: %s\n", bt_errmsg(&e, rc)); /* names the file */
        return 1;
    }
    print_hparams(m);
    if (tensors) print_tensors(m);
    for (int n = stages ? stages : 1; n <= (stages ? stages : 4) && rc == 0; n++)
        rc = print_ranges(m, n, ctx, &e);
    if (rc == 0) print_tokenizer(m->tokenizer_path ? m->tokenizer_path : argv[optind]);
    model_close(m);
    if (rc < 0) {
        fprintf(stderr, "baton inspect: %s\n", bt_errmsg(&e, rc));
        return 1;
    }
    return 0;
}
