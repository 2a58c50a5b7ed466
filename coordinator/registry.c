/* coordinator/registry.c: see registry.h. */
#include "coordinator/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct registry {
    int n;
    struct reg_worker w[REG_MAX_WORKERS];
};

int registry_open(registry_t **out, bt_err *e) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : bt_fail(e, -ENOMEM, "registry: out of memory");
}

void registry_close(registry_t *r) {
    free(r);
}

struct reg_worker *registry_find(registry_t *r, const char *id) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->w[i].id, id)) return &r->w[i];
    return NULL;
}

int registry_hello(registry_t *r, const char *peer, const Baton__Hello *h, int64_t now_ns,
                   struct reg_worker **out, bt_err *e) {
    *out = NULL;
    if (h->protocol_version != MSG_PROTOCOL_VERSION)
        return bt_fail(e, BT_EVERSION, "worker %s speaks protocol v%u, we speak v%u", peer,
                       h->protocol_version, MSG_PROTOCOL_VERSION);
    if (!h->worker_id || strcmp(h->worker_id, peer))
        return bt_fail(e, BT_EPROTO, "Hello.worker_id \"%s\" is not the sender's identity \"%s\"",
                       h->worker_id ? h->worker_id : "", peer);
    const char *ep = h->data_endpoint ? h->data_endpoint : "";
    if (!ep[0] || strstr(ep, "0.0.0.0") || strchr(ep, '*'))
        return bt_fail(e, BT_EPROTO,
                       "worker %s: data_endpoint \"%s\" is not an address other stages can reach",
                       peer, ep);
    if (strlen(ep) >= sizeof r->w[0].data_endpoint)
        return bt_fail(e, BT_EPROTO, "worker %s: data_endpoint too long", peer);
    if (h->mem_budget_bytes == 0 || !(h->mem_bw_gbps > 0.0f))
        return bt_fail(e, BT_EPROTO, "worker %s: mem_budget=%llu mem_bw=%.3g GB/s", peer,
                       (unsigned long long)h->mem_budget_bytes, (double)h->mem_bw_gbps);
    struct reg_worker *w = registry_find(r, peer);
    if (w && w->state != REG_LOST)
        return bt_fail(e, BT_EPROTO, "worker id %s is already joined", peer);
    if (!w) {
        if (r->n >= REG_MAX_WORKERS)
            return bt_fail(e, BT_ECAPACITY, "registry full (%d workers)", REG_MAX_WORKERS);
        w = &r->w[r->n++];
    }
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", peer);
    snprintf(w->hostname, sizeof w->hostname, "%s", h->hostname ? h->hostname : "");
    snprintf(w->isa, sizeof w->isa, "%s", h->isa ? h->isa : "");
    snprintf(w->data_endpoint, sizeof w->data_endpoint, "%s", ep);
    w->ram_bytes = h->ram_bytes;
    w->mem_budget = h->mem_budget_bytes;
    w->cores = h->cores;
    w->mem_bw_gbps = h->mem_bw_gbps;
    w->gflops = h->matmul_gflops > 0.0f ? h->matmul_gflops : 0.0f;
    w->has_model = h->has_model;
    if (h->model) {
        w->model_size = h->model->size;
        w->model_xxh3 = h->model->header_xxh3;
    }
    w->state = REG_JOINED;
    w->stage = -1;
    w->joined_ns = w->last_seen_ns = now_ns;
    *out = w;
    return 0;
}

int registry_n(const registry_t *r) {
    return r->n;
}

struct reg_worker *registry_at(registry_t *r, int i) {
    return i >= 0 && i < r->n ? &r->w[i] : NULL;
}

int registry_count(const registry_t *r, enum reg_state st) {
    int n = 0;
    for (int i = 0; i < r->n; i++)
        n += r->w[i].state == st;
    return n;
}

void registry_seen(registry_t *r, const char *id, int64_t now_ns) {
    struct reg_worker *w = registry_find(r, id);
    if (w) w->last_seen_ns = now_ns;
}

const char *registry_state_name(enum reg_state st) {
    static const char *const names[] = {"joined", "loading", "serving", "idle", "lost"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}
