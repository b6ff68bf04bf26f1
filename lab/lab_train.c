/* lab_train.c — pretraining, fine-tuning, multitask training and accuracy. Minibatches of
 * `batch` rows are drawn with replacement from seeded streams; optimiser is Adam. */
#include "lab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRETRAIN_LR   1e-3
#define PRETRAIN_MASK 0.25 /* fraction of input features hidden from the base */
#define PROBE_LR      3e-3
#define MULTITASK_LR  1e-3

/* Buffers of one training run: caches, gradients and Adam state for a backbone and up to
 * LAB_MAX_TASKS heads (of one shape: every task of a suite has the same classes), and a
 * minibatch. */
typedef struct trainer {
    int batch;
    lab_cache cb, ch;
    double *gb, *gh[LAB_MAX_TASKS];
    lab_adam ab, ah[LAB_MAX_TASKS];
    int n_heads;
    double *x, *target;
    int *y;
} trainer;

static void trainer_free(trainer *t) {
    lab_cache_free(&t->cb);
    lab_cache_free(&t->ch);
    free(t->gb);
    lab_adam_free(&t->ab);
    for (int h = 0; h < t->n_heads; h++) {
        free(t->gh[h]);
        lab_adam_free(&t->ah[h]);
    }
    free(t->x);
    free(t->target);
    free(t->y);
}

static int oom(acem_error *err, const char *what) {
    snprintf(err->msg, sizeof err->msg, "lab: out of memory for %s", what);
    return -1;
}

/* backbone may be NULL (training a head on fixed features of width lab_net_in(head)). */
static int trainer_init(trainer *t, const lab_net *backbone, const lab_net *heads, int n_heads,
                        int batch, double lr_backbone, double lr_head, acem_error *err) {
    memset(t, 0, sizeof *t);
    t->batch = batch;
    t->n_heads = n_heads;
    int in = backbone ? lab_net_in(backbone) : lab_net_in(&heads[0]);
    if (backbone && (lab_cache_init(&t->cb, backbone, batch, err) ||
                     !(t->gb = calloc(backbone->size, sizeof *t->gb)) ||
                     lab_adam_init(&t->ab, backbone->size, lr_backbone, err)))
        return oom(err, "the backbone's training state");
    if (lab_cache_init(&t->ch, &heads[0], batch, err)) return -1;
    for (int h = 0; h < n_heads; h++)
        if (!(t->gh[h] = calloc(heads[h].size, sizeof *t->gh[h])) ||
            lab_adam_init(&t->ah[h], heads[h].size, lr_head, err))
            return oom(err, "a head's training state");
    int out = lab_net_out(&heads[0]);
    if (!(t->x = malloc((size_t)batch * in * sizeof *t->x)) ||
        !(t->target = malloc((size_t)batch * (out > in ? out : in) * sizeof *t->target)) ||
        !(t->y = malloc((size_t)batch * sizeof *t->y)))
        return oom(err, "a minibatch");
    return 0;
}

/* Draws `batch` rows of set (features x of width d, labels y) with replacement. */
static void draw_batch(trainer *t, lab_rng *rng, const double *x, const int *y, int n, int d) {
    for (int r = 0; r < t->batch; r++) {
        int i = (int)(lab_rng_next(rng) % (uint64_t)n);
        memcpy(t->x + (size_t)r * d, x + (size_t)i * d, (size_t)d * sizeof *x);
        t->y[r] = y[i];
    }
}

/* Forward and backward of cross-entropy through (backbone, head h) on the minibatch,
 * gradients scaled by `weight` and added to gb (if backbone) and gh[h]. */
static double cross_entropy_step(trainer *t, const lab_net *backbone, const lab_net *head, int h,
                                 double weight) {
    const double *features = t->x;
    if (backbone) {
        lab_net_forward(backbone, t->x, t->batch, &t->cb);
        features = t->cb.a[backbone->layers];
    }
    lab_net_forward(head, features, t->batch, &t->ch);
    int L = head->layers, classes = lab_net_out(head);
    double loss = lab_cross_entropy(t->ch.a[L], t->y, t->batch, classes, t->ch.da[L]);
    for (size_t i = 0; i < (size_t)t->batch * classes; i++)
        t->ch.da[L][i] *= weight;
    lab_net_backward(head, &t->ch, t->gh[h], backbone ? t->cb.da[backbone->layers] : NULL);
    if (backbone) lab_net_backward(backbone, &t->cb, t->gb, NULL);
    return loss;
}

int lab_pretrain(lab_net *backbone, const lab_suite *s, uint64_t seed, acem_error *err) {
    lab_rng init = lab_rng_for(seed, "decoder", 0), rng = lab_rng_for(seed, "pretrain", 0);
    int widths[2] = {s->sizes.hidden, s->d}, total = 0;
    lab_net decoder;
    trainer t;
    memset(&t, 0, sizeof t);
    int rc = lab_net_init(&decoder, widths, 1, false, &init, err) ||
             trainer_init(&t, backbone, &decoder, 1, s->sizes.batch, PRETRAIN_LR, PRETRAIN_LR, err);
    for (int k = 0; k < s->T; k++)
        total += s->task[k].train.n;
    for (int step = 0; !rc && step < s->sizes.pretrain_steps; step++) {
        for (int r = 0; r < t.batch; r++) { /* a row of the mixture, partly masked */
            int i = (int)(lab_rng_next(&rng) % (uint64_t)total), k = 0;
            while (i >= s->task[k].train.n)
                i -= s->task[k++].train.n;
            const double *src = s->task[k].train.x + (size_t)i * s->d;
            for (int j = 0; j < s->d; j++) {
                t.target[(size_t)r * s->d + j] = src[j];
                t.x[(size_t)r * s->d + j] = lab_rng_uniform(&rng) < PRETRAIN_MASK ? 0.0 : src[j];
            }
        }
        lab_net_forward(backbone, t.x, t.batch, &t.cb);
        lab_net_forward(&decoder, t.cb.a[backbone->layers], t.batch, &t.ch);
        lab_squared_error(t.ch.a[1], t.target, t.batch, s->d, t.ch.da[1]);
        memset(t.gb, 0, backbone->size * sizeof *t.gb);
        memset(t.gh[0], 0, decoder.size * sizeof *t.gh[0]);
        lab_net_backward(&decoder, &t.ch, t.gh[0], t.cb.da[backbone->layers]);
        lab_net_backward(backbone, &t.cb, t.gb, NULL);
        lab_adam_update(&t.ab, backbone->p, t.gb);
        lab_adam_update(&t.ah[0], decoder.p, t.gh[0]);
    }
    trainer_free(&t);
    lab_net_free(&decoder);
    return rc ? -1 : 0;
}

/* A fresh head for task k, fitted by a linear probe on the backbone's features. */
static int probe_head(const lab_net *backbone, lab_net *head, const lab_suite *s, int k,
                      uint64_t seed, acem_error *err) {
    const lab_task *task = &s->task[k];
    lab_rng init = lab_rng_for(seed, "head", k), rng = lab_rng_for(seed, "probe", k);
    int widths[2] = {s->sizes.hidden, task->classes}, h = s->sizes.hidden;
    lab_cache c;
    trainer t;
    memset(&c, 0, sizeof c);
    memset(&t, 0, sizeof t);
    if (lab_net_init(head, widths, 1, false, &init, err) ||
        lab_cache_init(&c, backbone, task->train.n, err)) {
        lab_cache_free(&c);
        return -1;
    }
    lab_net_forward(backbone, task->train.x, task->train.n, &c);
    const double *features = c.a[backbone->layers];
    int rc = trainer_init(&t, NULL, head, 1, s->sizes.batch, 0.0, PROBE_LR, err);
    for (int step = 0; !rc && step < s->sizes.probe_steps; step++) {
        draw_batch(&t, &rng, features, task->train.y, task->train.n, h);
        memset(t.gh[0], 0, head->size * sizeof *t.gh[0]);
        cross_entropy_step(&t, NULL, head, 0, 1.0);
        lab_adam_update(&t.ah[0], head->p, t.gh[0]);
    }
    trainer_free(&t);
    lab_cache_free(&c);
    return rc;
}

int lab_finetune(lab_net *backbone, lab_net *head, const lab_suite *s, int k, uint64_t seed,
                 lab_heads regime, acem_error *err) {
    const lab_task *task = &s->task[k];
    if (probe_head(backbone, head, s, k, seed, err)) return -1;
    lab_rng rng = lab_rng_for(seed, "finetune", k);
    trainer t;
    int rc = trainer_init(&t, backbone, head, 1, s->sizes.batch, task->lr, task->lr, err);
    for (int step = 0; !rc && step < task->steps; step++) {
        draw_batch(&t, &rng, task->train.x, task->train.y, task->train.n, s->d);
        memset(t.gb, 0, backbone->size * sizeof *t.gb);
        memset(t.gh[0], 0, head->size * sizeof *t.gh[0]);
        cross_entropy_step(&t, backbone, head, 0, 1.0);
        lab_adam_update(&t.ab, backbone->p, t.gb);
        /* frozen: the head's gradient is computed (its backward gives the backbone's) but
         * never applied, so the head keeps the probe's bytes */
        if (regime == LAB_HEADS_TUNED) lab_adam_update(&t.ah[0], head->p, t.gh[0]);
    }
    trainer_free(&t);
    return rc;
}

int lab_multitask(lab_net *backbone, lab_net *heads, const lab_suite *s, uint64_t seed,
                  lab_heads regime, acem_error *err) {
    for (int k = 0; k < s->T; k++)
        if (probe_head(backbone, &heads[k], s, k, seed, err)) return -1;
    lab_rng rng = lab_rng_for(seed, "multitask", 0);
    trainer t;
    int rc =
        trainer_init(&t, backbone, heads, s->T, s->sizes.batch, MULTITASK_LR, MULTITASK_LR, err);
    for (int step = 0; !rc && step < s->sizes.multitask_steps; step++) {
        memset(t.gb, 0, backbone->size * sizeof *t.gb);
        for (int k = 0; k < s->T; k++) { /* the mean of the tasks' losses */
            const lab_task *task = &s->task[k];
            draw_batch(&t, &rng, task->train.x, task->train.y, task->train.n, s->d);
            memset(t.gh[k], 0, heads[k].size * sizeof *t.gh[k]);
            cross_entropy_step(&t, backbone, &heads[k], k, 1.0 / s->T);
            if (regime == LAB_HEADS_TUNED) lab_adam_update(&t.ah[k], heads[k].p, t.gh[k]);
        }
        lab_adam_update(&t.ab, backbone->p, t.gb);
    }
    trainer_free(&t);
    return rc;
}

int lab_accuracy(const lab_net *backbone, const lab_net *head, const lab_set *set, double *acc,
                 acem_error *err) {
    enum { CHUNK = 512 };
    lab_cache cb, ch;
    if (lab_cache_init(&cb, backbone, CHUNK, err) || lab_cache_init(&ch, head, CHUNK, err)) {
        lab_cache_free(&cb);
        lab_cache_free(&ch);
        return -1;
    }
    int correct = 0, classes = lab_net_out(head);
    for (int start = 0; start < set->n; start += CHUNK) {
        int rows = set->n - start < CHUNK ? set->n - start : CHUNK;
        lab_net_forward(backbone, set->x + (size_t)start * set->d, rows, &cb);
        lab_net_forward(head, cb.a[backbone->layers], rows, &ch);
        for (int r = 0; r < rows; r++) {
            const double *z = ch.a[head->layers] + (size_t)r * classes;
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (z[k] > z[best]) best = k;
            correct += best == set->y[start + r];
        }
    }
    lab_cache_free(&cb);
    lab_cache_free(&ch);
    *acc = (double)correct / set->n;
    return 0;
}
