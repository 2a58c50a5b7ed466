/* coordinator/exec_local.h: an executor (coordinator/exec.h) that runs the whole model in this
 * process: engine/forward over all layers, engine/seqstate slots, engine/sampler per sequence.
 * One stage, depth 1: exec_submit() only stores the batch; exec_poll() runs it (forward, then
 * one sampler draw per sampled item) on the calling thread, so the scheduler thread does the
 * work. Every logits row is computed the same way whatever the batch composition
 * (engine/forward.h), so a sequence's tokens do not depend on its company. */
#ifndef BT_COORDINATOR_EXEC_LOCAL_H
#define BT_COORDINATOR_EXEC_LOCAL_H
#include "common/err.h"
#include "coordinator/exec.h"
#include "engine/tokenizer.h"

struct exec_local_opts {
    const char *model_path; /* GGUF file or HF checkpoint */
    const tok_t *tok;       /* borrowed: the real (non-padding) vocabulary size */
    int n_slots;            /* 0 = 8 */
    int max_ctx;            /* 0 = 4096 */
    int max_batch;          /* tokens per micro-batch; 0 = 256 */
    int n_threads;          /* 0 = all CPUs */
    /* Admission budget for sequence state in bytes (recurrent state + KV of prompt and
     * max_tokens per sequence, see exec.h); 0 = only the slots limit. The pool itself is
     * allocated for n_slots full contexts either way. */
    size_t state_budget_bytes;
};

/* Loads the model. Errors from model_open/weights_load/seqstate with their detail. */
int exec_local_open(exec_t **out, const struct exec_local_opts *o, bt_err *e);

#endif
