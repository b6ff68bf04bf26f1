/*
 * gpt2.h — a GPT-2 in C for evaluation and training (libacem_eval): the forward pass of
 * Hugging Face's GPT2LMHeadModel and GPT2ForSequenceClassification over libacem's checkpoint
 * readers, its backward pass for the two losses, AdamW, and saving back as a Hugging Face
 * folder. Written in the manner of Karpathy's llm.c (train_gpt2.c): every parameter lives in
 * one float array, one layer is a handful of short functions, every matmul is an sgemm.
 *
 * Layout (docs/eval.md): tensors are kept as Hugging Face stores them, so loading and saving
 * copy nothing into another order. Conv1D weights are [in x out] (y = x W + b); wte is
 * [vocab x n_embd], lm_head (when untied) [vocab x n_embd], score [num_labels x n_embd].
 */
#ifndef ACEM_GPT2_H
#define ACEM_GPT2_H

#include "acem.h"

#include <stddef.h>

#define GPT2_MAX_LABELS 1024

typedef struct gpt2_config {
    int n_layer, n_head, n_embd, n_positions, vocab_size;
    double ln_eps;    /* layer_norm_epsilon (as config.json writes it; computed in f32) */
    int pad_token_id; /* -1: none (config.json's null or absent) */
    int num_labels;   /* 0: a language model (GPT2LMHeadModel); else the score head's rows */
    char **id2label;  /* num_labels names, or NULL (saved as LABEL_i) */
} gpt2_config;

/* The parameter tensors, in the order of the one array that holds them (and of the
 * gradients and AdamW's moments). Layer tensors hold n_layer copies one after another. */
enum {
    GPT2_WTE,       /* [V, C] */
    GPT2_WPE,       /* [P, C] */
    GPT2_LN1_W,     /* [L, C] */
    GPT2_LN1_B,     /* [L, C] */
    GPT2_QKV_W,     /* [L, C, 3C]  attn.c_attn */
    GPT2_QKV_B,     /* [L, 3C] */
    GPT2_ATTPROJ_W, /* [L, C, C]  attn.c_proj */
    GPT2_ATTPROJ_B, /* [L, C] */
    GPT2_LN2_W,     /* [L, C] */
    GPT2_LN2_B,     /* [L, C] */
    GPT2_FC_W,      /* [L, C, 4C]  mlp.c_fc */
    GPT2_FC_B,      /* [L, 4C] */
    GPT2_FCPROJ_W,  /* [L, 4C, C]  mlp.c_proj */
    GPT2_FCPROJ_B,  /* [L, C] */
    GPT2_LNF_W,     /* [C] */
    GPT2_LNF_B,     /* [C] */
    GPT2_LM_HEAD,   /* [V, C] when untied, else empty (wte serves) */
    GPT2_SCORE,     /* [K, C] for classification, else empty */
    GPT2_N_PARAMS
};

typedef struct gpt2_model gpt2_model;

/* dir: a Hugging Face GPT-2 folder (config.json beside the weights, which any reader of
 * acem_checkpoint_open takes: model.safetensors, shards, a GGUF file...). The tensors may
 * carry the `transformer.` prefix or not; lm_head.weight absent means tied to wte;
 * score.weight present makes it a classifier. Every stored float type is read into f32. */
int gpt2_load(const char *dir, gpt2_model **out, acem_error *err);
/* A fresh model of config c, initialised as transformers' GPT2PreTrainedModel._init_weights
 * does (normal(0, 0.02) weights, c_proj weights scaled by 1/sqrt(2 n_layer), zero biases,
 * unit layer-norm gains), from a seeded stream; tied lm_head. c is copied. */
int gpt2_new(const gpt2_config *c, uint64_t seed, gpt2_model **out, acem_error *err);
/* Replaces (or adds) the score head with a fresh normal(0, 0.02) one of num_labels rows
 * (labels LABEL_i): the model becomes a classifier, as transformers' from_pretrained of an LM
 * into GPT2ForSequenceClassification does (an untied lm_head is dropped: that class has
 * none). Training state (gradients, moments) is dropped. */
int gpt2_new_head(gpt2_model *m, int num_labels, uint64_t seed, acem_error *err);
/* Replaces m's head by score.weight of the checkpoint at path (a file or a folder that
 * acem_checkpoint_open reads: an expert's head on a merged backbone, as the merging papers
 * evaluate). It must be [K, n_embd], K in 1..GPT2_MAX_LABELS; m becomes a K-way classifier
 * (an lm_head is dropped) and takes id2label from path/config.json when path is a folder
 * that has one, else has none. On error m's head is unusable: the caller gives up. */
int gpt2_load_head(gpt2_model *m, const char *path, acem_error *err);
void gpt2_free(gpt2_model *m);

const gpt2_config *gpt2_config_of(const gpt2_model *m);
/* Parameter tensor p: its values (NULL when it is empty), element count and whether AdamW
 * decays it (the 2-D weights: wte, wpe, the four matmul weights, lm_head, score). */
float *gpt2_param(gpt2_model *m, int p, size_t *numel);
float *gpt2_grad(gpt2_model *m, int p); /* after gpt2_backward */
int gpt2_param_decays(int p);

/* A batch: B sequences of T token ids, row-major, right-padded; len[b] (1..T) real tokens in
 * row b. Attention never looks at a key at or past len[b]. labels[b]: the class of row b
 * (classification), or NULL. */
typedef struct gpt2_batch {
    int B, T;
    const int *ids;
    const int *len;
    const int *labels;
} gpt2_batch;

/* The forward pass. A language model gives logits [B, T, V]; a classifier [B, K], pooled
 * at each row's last token that is not pad_token_id (transformers' rule, docs/eval.md).
 * The pointer stays valid until the next forward or gpt2_free. With train set the
 * activations of every layer are kept for gpt2_backward (else one layer's are reused). */
int gpt2_forward(gpt2_model *m, const gpt2_batch *b, int train, const float **logits,
                 acem_error *err);
/* Mean cross-entropy of the last forward (which had train set): a language model's over
 * next tokens (position t predicts ids[t+1] for t + 1 < len), a classifier's over the
 * pooled logits against labels. Sets every parameter's gradient (overwriting); the
 * forward's logits are overwritten by their gradient. */
int gpt2_backward(gpt2_model *m, const gpt2_batch *b, float *loss, acem_error *err);

/* After a forward with train set: the input rows of layer l's matmul weight p, [B*T, its
 * in-dimension] (GPT2_QKV_W: ln_1's output; GPT2_ATTPROJ_W: the attention's output before
 * c_proj; GPT2_FC_W: ln_2's output; GPT2_FCPROJ_W: gelu_new's output), padded positions
 * included; NULL for any other p, or without such a forward. */
const float *gpt2_matmul_input(const gpt2_model *m, int p, int l);

typedef struct gpt2_adamw {
    double lr, beta1, beta2, eps, weight_decay; /* Python floats, as torch takes them */
} gpt2_adamw;
/* torch.optim.AdamW's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01. */
gpt2_adamw gpt2_adamw_defaults(void);
/* One AdamW step on the gradients of the last backward, as torch.optim.AdamW computes it:
 * p -= lr * wd * p (decaying tensors only), m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
int gpt2_adamw_step(gpt2_model *m, const gpt2_adamw *o, acem_error *err);

/* Writes dir/config.json and dir/model.safetensors (F32, Hugging Face names with the
 * `transformer.` prefix, Conv1D layout, lm_head.weight only when untied) as
 * save_pretrained would; dir is created when missing. Existing files are replaced. */
int gpt2_save(const gpt2_model *m, const char *dir, acem_error *err);
/* A parameter's Hugging Face name ("transformer.h.3.mlp.c_fc.weight") for layer l (ignored
 * for the others), written into buf. */
const char *gpt2_param_name(int p, int l, char *buf, size_t len);
/* Shape of parameter p's tensor of one layer (or the whole tensor for the others). */
int gpt2_param_shape(const gpt2_model *m, int p, uint64_t shape[2]);
int gpt2_param_is_layer(int p);

#endif
