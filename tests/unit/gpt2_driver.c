/* gpt2_driver — tests/test_gpt2.py's window on eval/gpt2.c (built for the tests only).
 *
 *   gpt2_driver MODEL BATCH OUT.safetensors                  forward: logits
 *   gpt2_driver MODEL BATCH OUT.safetensors train            + loss and every gradient
 *   gpt2_driver MODEL BATCH OUT.safetensors train DIR LR B1 B2 EPS WD
 *                                                            + one AdamW step, saved to DIR
 *
 *   gpt2_driver init MODEL DIR SEED       gpt2_new with MODEL's config, saved to DIR
 *   gpt2_driver head MODEL DIR SEED K     MODEL with gpt2_new_head(K), saved to DIR
 *
 * BATCH: int32 little-endian B, T, ids[B*T], len[B], labels[B] (-1: none). OUT holds
 * "logits", "loss" and "grad.NAME" for each stored tensor NAME. */
#include "gpt2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int *read_batch(const char *path, gpt2_batch *b) {
    FILE *f = fopen(path, "rb");
    int hdr[2];
    if (!f || fread(hdr, sizeof(int), 2, f) != 2 || hdr[0] < 1 || hdr[1] < 1 || hdr[0] > 4096 ||
        hdr[1] > 65536) {
        if (f) fclose(f);
        return NULL;
    }
    size_t n = (size_t)hdr[0] * hdr[1] + 2 * (size_t)hdr[0];
    int *v = malloc(n * sizeof *v);
    if (!v || fread(v, sizeof *v, n, f) != n) {
        free(v);
        v = NULL;
    }
    fclose(f);
    if (!v) return NULL;
    b->B = hdr[0], b->T = hdr[1], b->ids = v, b->len = v + (size_t)b->B * b->T;
    b->labels = b->len + b->B;
    if (b->labels[0] < 0) b->labels = NULL;
    return v;
}

/* Logits, loss and (when train) the gradients as one safetensors file. */
static int write_out(gpt2_model *m, const gpt2_batch *b, const float *logits, const float *loss,
                     const char *path, acem_error *err) {
    const gpt2_config *c = gpt2_config_of(m);
    acem_tensor_data td[1024];
    static char names[1024][192];
    uint64_t shapes[1024][3], one = 1;
    size_t n = 0;
    shapes[0][0] = (uint64_t)b->B,
    shapes[0][1] = c->num_labels ? (uint64_t)c->num_labels : (uint64_t)b->T;
    shapes[0][2] = (uint64_t)c->vocab_size;
    td[n++] = (acem_tensor_data){"logits", ACEM_DT_F32, c->num_labels ? 2 : 3, shapes[0], logits};
    if (loss) td[n++] = (acem_tensor_data){"loss", ACEM_DT_F32, 1, &one, loss};
    for (int p = 0; loss && p < GPT2_N_PARAMS; p++) {
        size_t numel;
        if (!gpt2_param(m, p, &numel)) continue;
        int layers = gpt2_param_is_layer(p) ? c->n_layer : 1;
        for (int l = 0; l < layers && n < 1024; l++, n++) {
            char hf[160];
            int nd = gpt2_param_shape(m, p, shapes[n]);
            snprintf(names[n], sizeof names[n], "grad.%s", gpt2_param_name(p, l, hf, sizeof hf));
            td[n] =
                (acem_tensor_data){names[n], ACEM_DT_F32, nd, nd == 1 ? shapes[n] + 1 : shapes[n],
                                   gpt2_grad(m, p) + (size_t)l * (numel / (size_t)layers)};
        }
    }
    return acem_save_safetensors(path, td, n, NULL, 0, err);
}

static int run(int argc, char **argv, acem_error *err) {
    gpt2_batch b;
    int *buf = read_batch(argv[2], &b);
    if (!buf) return snprintf(err->msg, sizeof err->msg, "%s: not a batch", argv[2]), -1;
    gpt2_model *m = NULL;
    int train = argc > 4 && !strcmp(argv[4], "train"), rc = -1;
    const float *logits;
    float loss;
    if (gpt2_load(argv[1], &m, err) || gpt2_forward(m, &b, train, &logits, err)) goto done;
    const gpt2_config *c = gpt2_config_of(m);
    size_t n = (size_t)b.B * (c->num_labels ? (size_t)c->num_labels : (size_t)b.T * c->vocab_size);
    float *copy = malloc(n * sizeof *copy); /* the backward overwrites the logits */
    if (!copy) goto done;
    memcpy(copy, logits, n * sizeof *copy);
    rc = (train && gpt2_backward(m, &b, &loss, err)) ||
         write_out(m, &b, copy, train ? &loss : NULL, argv[3], err);
    free(copy);
    if (!rc && argc > 10) {
        gpt2_adamw o = {strtod(argv[6], NULL), strtod(argv[7], NULL), strtod(argv[8], NULL),
                        strtod(argv[9], NULL), strtod(argv[10], NULL)};
        rc = gpt2_adamw_step(m, &o, err) || gpt2_save(m, argv[5], err);
    }
done:
    gpt2_free(m);
    free(buf);
    return rc ? -1 : 0;
}

/* init / head: fresh parameters, saved. */
static int fresh(char **argv, acem_error *err) {
    gpt2_model *m = NULL, *n = NULL;
    uint64_t seed = strtoull(argv[4], NULL, 10);
    int rc = gpt2_load(argv[2], &m, err);
    if (!rc && !strcmp(argv[1], "init")) {
        gpt2_config c = *gpt2_config_of(m);
        c.num_labels = 0, c.id2label = NULL;
        rc = gpt2_new(&c, seed, &n, err) || gpt2_save(n, argv[3], err);
    } else if (!rc) {
        rc = gpt2_new_head(m, atoi(argv[5]), seed, err) || gpt2_save(m, argv[3], err);
    }
    gpt2_free(m);
    gpt2_free(n);
    return rc ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: gpt2_driver MODEL BATCH OUT [train [DIR LR B1 B2 EPS WD]]\n");
        return 2;
    }
    acem_error err = {{0}};
    int init = !strcmp(argv[1], "init") || !strcmp(argv[1], "head");
    if (init && argc < (strcmp(argv[1], "head") ? 5 : 6)) return 2;
    if (init ? fresh(argv, &err) : run(argc, argv, &err)) {
        fprintf(stderr, "gpt2_driver: error: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    return 0;
}
