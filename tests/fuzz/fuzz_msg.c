/* tests/fuzz/fuzz_msg.c: libFuzzer target for msg_unpack() (proto/msg.h), the gate every
 * network byte passes. Each input is unpacked twice: with malloc (ASan checks the frees) and
 * into a small arena (the exhaustion path). A message that validates must survive
 * pack -> unpack unchanged in size and still validate, and msg_check_payload must accept the
 * payload sizes the envelope itself declares. */
#include "common/assert.h"
#include "proto/msg.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Alignas(16) unsigned char arena_mem[16384];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Baton__Envelope *env;
    uint64_t rid;
    bt_err e = {0};
    int rc = msg_unpack(data, size, NULL, &env, &rid, &e);
    struct msg_arena a;
    msg_arena_init(&a, arena_mem, sizeof arena_mem);
    Baton__Envelope *env2;
    int rc2 = msg_unpack(data, size, &a.alloc, &env2, NULL, NULL);
    /* same verdict unless the arena ran out */
    BT_ASSERT(rc2 == rc || rc2 == -ENOMEM);
    if (rc2 == 0) msg_free(env2, &a.alloc);
    if (rc != 0) return 0;
    BT_ASSERT(msg_validate(env, NULL) == 0);
    uint8_t *buf;
    size_t len;
    BT_ASSERT(msg_pack(env, &buf, &len, NULL) == 0);
    Baton__Envelope *again;
    BT_ASSERT(msg_unpack(buf, len, NULL, &again, NULL, NULL) == 0);
    BT_ASSERT(again->body_case == env->body_case && again->request_id == rid);
    BT_ASSERT(baton__envelope__get_packed_size(again) == len);
    msg_free(again, NULL);
    free(buf);
    /* the payload sizes the envelope declares are accepted */
    size_t lens[MSG_MAX_STATE_FRAMES];
    size_t n = 0;
    if (env->body_case == BATON__ENVELOPE__BODY_STATE_IMPORT) {
        n = env->state_import->n_frame_bytes;
        for (size_t i = 0; i < n; i++)
            lens[i] = (size_t)env->state_import->frame_bytes[i];
    } else if (env->body_case == BATON__ENVELOPE__BODY_MODEL_CHUNK) {
        n = 1;
        lens[0] = (size_t)env->model_chunk->length;
    }
    if (n) BT_ASSERT(msg_check_payload(env, n, lens, NULL) == 0);
    (void)msg_check_payload(env, 0, lens, NULL);
    msg_free(env, NULL);
    return 0;
}
