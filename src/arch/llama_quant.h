/* llama_quant.h — llama.cpp's model knowledge for its quantisation mixes: which tensor is
 * which (llama.cpp's GGUF names), the layer counts and hyperparameters of the GGUF
 * key-values, and llama-quantize's choice of type per tensor (src/llama-quant.cpp). */
#ifndef ACEM_LLAMA_QUANT_H
#define ACEM_LLAMA_QUANT_H

#include "../internal.h"

/* What llama-quantize knows of a model when it picks the tensor types. */
/* A model as llama.cpp sees it: its tensors under llama.cpp's names and shapes, and its GGUF
 * key-values (a GGUF base's own, or those hf_gguf derives from a Hugging Face checkpoint). */
typedef struct llama_model_view {
    const char *path; /* for messages */
    const acem_tensor *tensors;
    size_t n;
    const struct st_header *kv;
} llama_model_view;

typedef struct llama_quant {
    llama_model_view model;
    acem_llama_ftype ftype;
    acem_quant default_type; /* llama_ftype_get_default_type */
    int n_layer;             /* <arch>.block_count (hparams.n_layer_all) */
    int n_expert;            /* <arch>.expert_count, 0 when absent */
    int n_attention_wv;      /* tensors of the attn_v category */
    int n_gqa;               /* hparams.n_gqa(): head_count / head_count_kv, 0 without KV heads */
    bool falcon;             /* LLM_ARCH_FALCON */
    bool is_70b;             /* LLM_TYPE_70B, as the model's load_hparams sets it */
    bool tied;               /* no output.weight: token_embd is the output too */
} llama_quant;

/* For the mix an output type asks for (acem_out_type_mix): 1 and q filled when the model has
 * the key-values llama-quantize needs (general.architecture and <arch>.block_count), 0 when it
 * has not (kv NULL: not a GGUF); -1 with err for a malformed count. */
int llama_quant_init(llama_quant *q, const llama_model_view *model, acem_out_type mix,
                     acem_error *err);
/* The type llama-quantize without an importance matrix gives tensor t of the model, or
 * ACEM_OUT_KEEP for a tensor it does not convert (1-D, norms, names it leaves alone). -1 with
 * err where llama-quantize stops (an expert tensor's layer it cannot tell). */
int llama_quant_type(const llama_quant *q, const acem_tensor *t, acem_out_type *out,
                     acem_error *err);

#endif
