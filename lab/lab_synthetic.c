/* lab_synthetic.c — the `synthetic` suite, and what every suite shares (sets, sizes,
 * fine-tuning strengths).
 *
 * Task t lives in R^d: a latent u = a_k + z (component k of 3, z ~ N(0, I_r)) is placed
 * in an r-dimensional subspace U_t whose first half is shared by all tasks and whose
 * second half is the task's own, x = mu_t + s_t U_t u + 0.1 e, with a task mean mu_t and
 * a task scale s_t from 0.5 to 2. The label is the argmax of a random teacher network
 * V_t tanh(A_t u) of the latent, so the tasks overlap in input space but disagree in
 * what they need from it. */
#include "lab.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYN_D          32
#define SYN_CLASSES    5
#define SYN_SHARED     4 /* shared subspace dimensions */
#define SYN_OWN        4 /* task-specific subspace dimensions */
#define SYN_RANK       (SYN_SHARED + SYN_OWN)
#define SYN_COMPONENTS 3
#define SYN_TEACHER    16

/* Fine-tuning strength lr x steps spans STRENGTH_SPAN across the tasks. */
#define STRENGTH_SPAN 30.0
#define BASE_STEPS    100
#define BASE_LR       3e-4

int lab_set_alloc(lab_set *set, int n, int d, acem_error *err) {
    set->n = n;
    set->d = d;
    set->x = calloc((size_t)n * d, sizeof *set->x);
    set->y = calloc((size_t)n, sizeof *set->y);
    if (set->x && set->y) return 0;
    snprintf(err->msg, sizeof err->msg, "lab: out of memory for a data set of %d rows", n);
    return -1;
}

void lab_suite_free(lab_suite *s) {
    for (int t = 0; t < LAB_MAX_TASKS; t++) {
        lab_set *sets[3] = {&s->task[t].train, &s->task[t].val, &s->task[t].test};
        for (int i = 0; i < 3; i++) {
            free(sets[i]->x);
            free(sets[i]->y);
            sets[i]->x = NULL;
            sets[i]->y = NULL;
        }
    }
}

lab_sizes lab_sizes_for(bool quick) {
    /* hidden, pretrain, probe, multitask steps, batch, fine-tuning scale */
    return quick ? (lab_sizes){64, 800, 100, 300, 64, 0.5}
                 : (lab_sizes){128, 3000, 200, 1500, 64, 1.0};
}

void lab_assign_strengths(lab_suite *s, uint64_t seed) {
    int order[LAB_MAX_TASKS];
    for (int t = 0; t < s->T; t++)
        order[t] = t;
    lab_rng rng = lab_rng_for(seed, "strength", 0);
    lab_shuffle(&rng, order, s->T);
    for (int t = 0; t < s->T; t++) {
        /* strength f = SPAN^(rank / (T-1)), split evenly between steps and lr */
        double f = pow(STRENGTH_SPAN, (double)order[t] / (s->T - 1)), g = sqrt(f);
        s->task[t].steps = (int)lround(s->sizes.finetune_scale * BASE_STEPS * g);
        s->task[t].lr = BASE_LR * g;
    }
}

/* Columns of u (d x k, row-major) made orthonormal by Gram-Schmidt. */
static void orthonormalise(double *u, int d, int k) {
    for (int j = 0; j < k; j++) {
        for (int i = 0; i < j; i++) {
            double dot = 0.0;
            for (int r = 0; r < d; r++)
                dot += u[r * k + i] * u[r * k + j];
            for (int r = 0; r < d; r++)
                u[r * k + j] -= dot * u[r * k + i];
        }
        double norm = 0.0;
        for (int r = 0; r < d; r++)
            norm += u[r * k + j] * u[r * k + j];
        for (int r = 0; r < d; r++)
            u[r * k + j] /= sqrt(norm);
    }
}

typedef struct generator {
    double mu[SYN_D], basis[SYN_D * SYN_RANK], scale;
    double component[SYN_COMPONENTS][SYN_RANK];
    double A[SYN_TEACHER][SYN_RANK], V[SYN_CLASSES][SYN_TEACHER];
} generator;

static void generator_init(generator *g, int t, int T, uint64_t seed) {
    lab_rng shared = lab_rng_for(seed, "shared-subspace", 0), rng = lab_rng_for(seed, "task", t);
    for (int r = 0; r < SYN_D; r++)
        for (int j = 0; j < SYN_RANK; j++)
            g->basis[r * SYN_RANK + j] = lab_rng_normal(j < SYN_SHARED ? &shared : &rng);
    orthonormalise(g->basis, SYN_D, SYN_RANK);
    for (int r = 0; r < SYN_D; r++)
        g->mu[r] = 0.5 * lab_rng_normal(&rng);
    g->scale = 0.5 * pow(4.0, (double)t / (T - 1));
    for (int k = 0; k < SYN_COMPONENTS; k++)
        for (int j = 0; j < SYN_RANK; j++)
            g->component[k][j] = 1.5 * lab_rng_normal(&rng);
    for (int i = 0; i < SYN_TEACHER; i++)
        for (int j = 0; j < SYN_RANK; j++)
            g->A[i][j] = 1.5 * lab_rng_normal(&rng) / sqrt((double)SYN_RANK);
    for (int c = 0; c < SYN_CLASSES; c++)
        for (int i = 0; i < SYN_TEACHER; i++)
            g->V[c][i] = lab_rng_normal(&rng);
}

static void generate(const generator *g, lab_rng *rng, double *x, int *y) {
    double u[SYN_RANK], hidden[SYN_TEACHER];
    int k = (int)(lab_rng_next(rng) % SYN_COMPONENTS);
    for (int j = 0; j < SYN_RANK; j++)
        u[j] = g->component[k][j] + lab_rng_normal(rng);
    for (int r = 0; r < SYN_D; r++) {
        double v = 0.0;
        for (int j = 0; j < SYN_RANK; j++)
            v += g->basis[r * SYN_RANK + j] * u[j];
        x[r] = g->mu[r] + g->scale * v + 0.1 * lab_rng_normal(rng);
    }
    for (int i = 0; i < SYN_TEACHER; i++) {
        double a = 0.0;
        for (int j = 0; j < SYN_RANK; j++)
            a += g->A[i][j] * u[j];
        hidden[i] = tanh(a);
    }
    int best = 0;
    double best_score = -INFINITY;
    for (int c = 0; c < SYN_CLASSES; c++) {
        double score = 0.0;
        for (int i = 0; i < SYN_TEACHER; i++)
            score += g->V[c][i] * hidden[i];
        if (score > best_score) best_score = score, best = c;
    }
    *y = best;
}

int lab_synthetic_suite(lab_suite *s, int T, bool quick, uint64_t seed, acem_error *err) {
    memset(s, 0, sizeof *s);
    if (T < 2 || T > LAB_MAX_TASKS) {
        snprintf(err->msg, sizeof err->msg, "lab: --tasks must be 2..%d, not %d", LAB_MAX_TASKS, T);
        return -1;
    }
    snprintf(s->name, sizeof s->name, "synthetic");
    s->T = T;
    s->d = SYN_D;
    s->sizes = lab_sizes_for(quick);
    int n_train = quick ? 800 : 2000, n_val = quick ? 200 : 500, n_test = quick ? 500 : 1000;
    for (int t = 0; t < T; t++) {
        lab_task *task = &s->task[t];
        generator g;
        generator_init(&g, t, T, seed);
        snprintf(task->name, sizeof task->name, "T%d", t + 1);
        task->classes = SYN_CLASSES;
        lab_rng rng = lab_rng_for(seed, "samples", t);
        lab_set *sets[3] = {&task->train, &task->val, &task->test};
        int sizes[3] = {n_train, n_val, n_test};
        for (int i = 0; i < 3; i++) {
            if (lab_set_alloc(sets[i], sizes[i], SYN_D, err)) return -1;
            for (int r = 0; r < sizes[i]; r++)
                generate(&g, &rng, sets[i]->x + (size_t)r * SYN_D, &sets[i]->y[r]);
        }
        snprintf(task->about, sizeof task->about,
                 "scale %.2f, %d-dim subspace (%d shared), %d Gaussian components, %d classes",
                 g.scale, SYN_RANK, SYN_SHARED, SYN_COMPONENTS, SYN_CLASSES);
    }
    lab_assign_strengths(s, seed);
    return 0;
}
