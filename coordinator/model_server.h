/* coordinator/model_server.h: serves byte ranges of the coordinator's model file to workers
 * that have no copy (ModelChunkRequest -> ModelChunk, proto/baton.proto). Each reply carries
 * the bytes as a raw payload frame (sent without a copy) and their XXH3-64, so the worker
 * verifies what it caches. The model's identity (ModelId) is computed here the way workers
 * compute theirs: size, and XXH3-64 of the GGUF bytes [0, data section start).
 * One thread (the coordinator's event loop) uses a model server. */
#ifndef BT_COORDINATOR_MODEL_SERVER_H
#define BT_COORDINATOR_MODEL_SERVER_H
#include "common/err.h"
#include "proto/msg.h"
#include "proto/transport.h"

#include <stdint.h>

struct model_ident_c {
    char name[256]; /* base name of the file */
    uint64_t size;
    uint64_t header_xxh3;
};

typedef struct model_server model_server_t;

/* Opens path (a GGUF file) and computes its identity. Negated errno / gguf errors naming it. */
int model_server_open(model_server_t **out, const char *path, bt_err *e);
void model_server_close(model_server_t *ms); /* NULL ok */
const struct model_ident_c *model_server_ident(const model_server_t *ms);

/* Answers one request from peer on t: a ModelChunk (request_id echoed, frame 1 = the bytes)
 * or an Error (code "protocol" for another model or a range past the end or over
 * MSG_MAX_CHUNK; "internal" for a read failure). Returns 0 once answered (even with an
 * Error), < 0 only when the transport send failed. Counts bytes served. */
int model_server_answer(model_server_t *ms, transport_t *t, const char *peer, uint64_t request_id,
                        const Baton__ModelChunkRequest *rq, bt_err *e);
uint64_t model_server_bytes_served(const model_server_t *ms);

#endif
