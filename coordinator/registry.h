/* coordinator/registry.h: the workers the coordinator knows, from their Hello, with liveness
 * and a state per worker (JOINED -> LOADING -> SERVING; LOST when the transport reports the
 * peer gone; IDLE when a plan left it out). Identities are the transport identities (Hello's
 * worker_id must equal the sender). Plain data: one thread (the coordinator's event loop)
 * owns a registry; records are stable pointers until registry_close. */
#ifndef BT_COORDINATOR_REGISTRY_H
#define BT_COORDINATOR_REGISTRY_H
#include "common/err.h"
#include "proto/msg.h"
#include "proto/transport.h"

#include <stdint.h>

#define REG_MAX_WORKERS 64

enum reg_state { REG_JOINED, REG_LOADING, REG_SERVING, REG_IDLE, REG_LOST };

struct reg_worker {
    char id[TX_PEER_MAX + 1];
    char hostname[128];
    char isa[16];
    char data_endpoint[256];
    uint64_t ram_bytes, mem_budget;
    uint32_t cores;
    float mem_bw_gbps, gflops;
    int has_model;
    uint64_t model_size, model_xxh3;
    enum reg_state state;
    int stage;         /* index in the current plan, -1 if none */
    int lo, hi;        /* its layers when stage >= 0 */
    uint64_t load_req; /* request id of its LoadLayers */
    int loaded;        /* LoadDone received */
    int draining;      /* an operator drained it: no plan takes it until it joins again */
    uint64_t weight_bytes, state_bytes;
    float load_secs;
    int64_t joined_ns, last_seen_ns;
};

typedef struct registry registry_t;

int registry_open(registry_t **out, bt_err *e);
void registry_close(registry_t *r); /* NULL ok */

/* Records a Hello from peer. BT_EVERSION when h->protocol_version differs from ours;
 * BT_EPROTO when worker_id != peer, the data endpoint is missing or a wildcard, the budget
 * or bandwidth is 0, or a live worker already has this id; BT_ECAPACITY when full. A worker
 * that was LOST may join again (its record is reset). *out = the record. */
int registry_hello(registry_t *r, const char *peer, const Baton__Hello *h, int64_t now_ns,
                   struct reg_worker **out, bt_err *e);
struct reg_worker *registry_find(registry_t *r, const char *id); /* NULL if unknown */
int registry_n(const registry_t *r);
struct reg_worker *registry_at(registry_t *r, int i);
/* Workers in state st. */
int registry_count(const registry_t *r, enum reg_state st);
void registry_seen(registry_t *r, const char *id, int64_t now_ns);
const char *registry_state_name(enum reg_state st);

#endif
