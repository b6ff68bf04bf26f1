/* gpt2_internal.h — the model structure shared by gpt2.c (loading, saving, AdamW) and
 * gpt2_layers.c (the forward and backward passes). */
#ifndef ACEM_GPT2_INTERNAL_H
#define ACEM_GPT2_INTERNAL_H

#include "gpt2.h"

#include <cjson/cJSON.h>
#include <stdio.h>

/* Activations of one layer, each [B, T, ...] row-major (NH the heads, hs = C / NH). */
typedef struct gpt2_layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* [B,T,C], [B,T], [B,T] */
    float *qkv;                       /* [B,T,3C]: q, k, v side by side, head h at h*hs */
    float *att;                       /* [B,NH,T,T] softmax probabilities (0 where masked) */
    float *atty;                      /* [B,T,C] attention output before c_proj */
    float *res2;                      /* [B,T,C] residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* [B,T,C], [B,T], [B,T] */
    float *fch, *fch_gelu;            /* [B,T,4C] c_fc output, and after gelu_new */
    float *res3;                      /* [B,T,C] residual after the MLP: the layer's output */
} gpt2_layer_acts;

struct gpt2_model {
    gpt2_config c;
    cJSON *json; /* config.json as read (its other keys are saved back), or an empty object */
    size_t numel[GPT2_N_PARAMS], off[GPT2_N_PARAMS], n_params;
    float *params, *grads, *mom1, *mom2; /* grads and moments allocated when first used */
    long step;                           /* AdamW steps taken */

    /* Activations for batches of shape [B, T], kept for every layer when train is set
     * (layer stride layer_size) or for one layer reused by all (stride 0). */
    int B, T, train, has_acts;
    size_t layer_size;
    float *acts;
    float *encoded;                   /* [B,T,C] wte + wpe: layer 0's input */
    float *lnf, *lnf_mean, *lnf_rstd; /* [B,T,C], [B,T], [B,T] */
    float *logits;                    /* [B,T,V] or [B,K] */
    int *pool;                        /* [B] classifier: the position each row is pooled at */
    /* Backward scratch, allocated with the activations when train is set. */
    float *scratch, *dres, *dln, *dqkv, *datt, *datty, *dfch, *ones;
};

void gpt2_free_acts(gpt2_model *m);        /* the activations and backward scratch */
float *gpt2_p(const gpt2_model *m, int p); /* parameter p's values (all layers) */
size_t gpt2_param_count(const gpt2_config *c, int p, uint64_t shape[2]);
/* One sentence into err (printf-style); returns -1. */
int gpt2_fail(acem_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int gpt2_mul(size_t a, size_t b, size_t *out);

#endif
