/* hf_gguf.h — a Hugging Face checkpoint as llama.cpp's converter (convert_hf_to_gguf.py and
 * gguf-py) writes it: llama.cpp's tensor names, the layout changes it makes (GPT-2's Conv1D
 * transposed, Llama's q/k rows permuted), the architecture's key-values from config.json and
 * the tokenizer's from tokenizer.json. The one place that knows both namings. */
#ifndef ACEM_HF_GGUF_H
#define ACEM_HF_GGUF_H

#include "../formats/formats.h"

/* A tensor the converter makes that the checkpoint does not hold (generate_extra_tensors):
 * written after the base's tensors, F32 whatever --dtype says (llama-quantize leaves 1-D
 * tensors as they are), from values computed here. */
typedef struct hf_generated {
    const char *name; /* llama.cpp's */
    const char *what; /* why it exists, for the plan: "llama3 rope scaling factors" */
    uint64_t shape[1];
    float *data; /* shape[0] values, owned */
} hf_generated;

typedef struct hf_gguf {
    const char *arch; /* general.architecture: "llama", "qwen2" or "gpt2" */
    /* per tensor of the base, in its order: llama.cpp's name and the stored shape (a dropped
     * tensor keeps the base's name and shape), with the layout the writer applies */
    acem_tensor *view;
    out_layout *layout;
    uint32_t *n_head;
    size_t n;
    hf_generated *gen; /* n_gen tensors, owned */
    size_t n_gen;
    st_header kv; /* the key-values, encoded as a GGUF stores them (kv_raw, kv_at, meta_*) */
} hf_gguf;

/* For the GGUF output out_path of the Hugging Face directory `dir` (holding config.json): 1
 * with h filled, 0 when dir is not such a directory (a file, or no config.json), -1 with err
 * for a model_type acem does not convert, a tensor without a llama.cpp name, or a tokenizer it
 * cannot read. */
int hf_gguf_open(hf_gguf *h, const char *dir, const char *out_path, const acem_checkpoint *base,
                 acem_error *err);
void hf_gguf_free(hf_gguf *h);

#endif
