/* engine/hf.h: a Hugging Face Qwen3.5 checkpoint described as a struct model_desc (spec
 * qwen35.md §9, §10.1, §10.4).
 *
 * Accepted paths: a checkpoint directory (config.json plus model.safetensors.index.json or
 * model.safetensors), a .safetensors file, or an index .json; config.json and tokenizer.json
 * are looked up next to it. Hyperparameters come from config.json (text_config, or the top
 * level of a text-only Qwen3_5ForCausalLM config). Tensors get their canonical GGUF names,
 * GGUF-order ne and the XF_* transforms that turn the stored values into what the GGUF
 * converter stores (engine/xform applies them); shapes are checked against the config.
 * model.visual.*, mtp.* (and lm_head when embeddings are tied) are skipped and counted in
 * n_skipped; other unknown names are skipped with a warning. Sharded: the index's weight_map
 * decides which tensors exist (each must be in the shard it names; shard tensors it does not
 * list are ignored). Only headers are read.
 *
 * Ownership: every pointer in the returned model_desc (files[i], tokenizer_path, name,
 * tensors) and the struct itself is a separate malloc; hf_desc_free (or model_close, which
 * frees the same way) releases them. */
#ifndef BT_ENGINE_HF_H
#define BT_ENGINE_HF_H
#include "common/err.h"
#include "engine/model.h"

#include <stddef.h>

/* 0; BT_ENOKEY (config key, file or required tensor absent; named); BT_EFORMAT (malformed
 * JSON/safetensors, tensor in a layer of the wrong kind, duplicates); BT_ESHAPE (tensor shape
 * differs from the config; expected vs actual); BT_EUNSUPPORTED (not a Qwen3.5 dense text
 * model, or a dtype other than F32/F16/BF16); negated errno. */
int hf_open(struct model_desc **out, const char *path, bt_err *e);
void hf_desc_free(struct model_desc *m); /* NULL ok */

/* Pure: fills hp from config.json bytes (everything except n_vocab's cross-check with the
 * embedding, done by hf_open). *tied = 1/0 from tie_word_embeddings (text_config first, then
 * the top level), or -1 if neither says (hf_open then decides by lm_head.weight's presence). */
int hf_parse_config(struct qwen35_hparams *hp, int *tied, const void *json, size_t len, bt_err *e);

#endif
