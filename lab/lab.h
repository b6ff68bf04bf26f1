/*
 * lab.h — `acem lab`: a controlled merging benchmark that needs no downloads.
 *
 * One base MLP is pretrained on the inputs of every task (masked reconstruction), one
 * expert per task is fine-tuned from it (backbone + its own head), the experts' backbones
 * are merged by every method of libacem through the public API, and each merged backbone
 * is evaluated with each task's own head. Everything is deterministic from the seed.
 *
 * Pipeline: tasks (lab_synthetic.c, lab_digits.c) -> models (lab_mlp.c, lab_train.c)
 * -> checkpoints and merges (lab_merge.c) -> tables (lab_report.c); lab.c drives it.
 */
#ifndef ACEM_LAB_H
#define ACEM_LAB_H

#include "acem.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LAB_MAX_TASKS 20
#define LAB_DEPTH     3 /* hidden linear layers of the backbone: d -> h -> h -> h */

/* ---- options and entry point ---------------------------------------------------- */

/* What fine-tuning may change. tuned: backbone and head together after the linear probe.
 * frozen: the heads stay as the probe left them and only the backbone is fine-tuned, as
 * CLIP's zero-shot heads are in the merging papers' vision benchmarks, so that every task
 * gain lives in the backbone deltas that the methods merge. */
typedef enum lab_heads { LAB_HEADS_TUNED, LAB_HEADS_FROZEN } lab_heads;

/* "tuned" / "frozen"; lab_heads_parse returns -1 for any other name. */
const char *lab_heads_name(lab_heads h);
int lab_heads_parse(const char *name, lab_heads *h);

typedef struct lab_options {
    const char *suite; /* "synthetic" or "digits" */
    const char *out;   /* directory for checkpoints and results */
    const char *data;  /* digits.csv.gz (NULL: Debian's python3-sklearn copy) */
    int tasks;         /* synthetic: number of tasks, 2..20 */
    uint64_t seed;
    bool quick; /* smaller models and fewer steps, for CI */
    lab_heads heads;
    int threads;
} lab_options;

#define LAB_DIGITS_DEFAULT "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"

void lab_options_init(lab_options *o);
int lab_run(const lab_options *o, acem_error *err);

/* ---- random numbers: one stream per purpose, all derived from the seed ---------- */

typedef struct lab_rng {
    uint64_t s;
} lab_rng;

lab_rng lab_rng_for(uint64_t seed, const char *purpose, int index);
uint64_t lab_rng_next(lab_rng *r);
double lab_rng_uniform(lab_rng *r); /* [0, 1) */
double lab_rng_normal(lab_rng *r);
void lab_shuffle(lab_rng *r, int *idx, int n);

/* ---- tasks ---------------------------------------------------------------------- */

/* n labelled rows of d features. */
typedef struct lab_set {
    int n, d;
    double *x; /* n x d, row-major */
    int *y;
} lab_set;

typedef struct lab_task {
    char name[24];
    char about[160]; /* one line for results.md */
    int classes;
    lab_set train, val, test;
    int steps; /* fine-tuning steps and learning rate: the expert's strength */
    double lr;
} lab_task;

typedef struct lab_sizes {
    int hidden;
    int pretrain_steps, probe_steps, multitask_steps;
    int batch;
    double finetune_scale; /* multiplies every task's fine-tuning steps */
} lab_sizes;

typedef struct lab_suite {
    char name[16];
    int T, d;
    lab_task task[LAB_MAX_TASKS];
    lab_sizes sizes;
} lab_suite;

int lab_synthetic_suite(lab_suite *s, int T, bool quick, uint64_t seed, acem_error *err);
int lab_digits_suite(lab_suite *s, const char *path, bool quick, uint64_t seed, acem_error *err);
void lab_suite_free(lab_suite *s);
/* Gives task t of T its fine-tuning schedule: lr x steps spans 30x across tasks, in an
 * order drawn from the seed so that strength is not tied to any other task property. */
void lab_assign_strengths(lab_suite *s, uint64_t seed);
int lab_set_alloc(lab_set *set, int n, int d, acem_error *err);
/* Model width and training lengths, the same for every suite. */
lab_sizes lab_sizes_for(bool quick);

/* ---- the network ---------------------------------------------------------------- */

/* A stack of dense layers y = x W^T + b (W stored out x in, as PyTorch's nn.Linear), with
 * GELU after every layer but the last unless gelu_last. Parameters live in one array. */
typedef struct lab_dense {
    int in, out;
    size_t w, b; /* offsets into p */
} lab_dense;

typedef struct lab_net {
    int layers;
    bool gelu_last;
    lab_dense layer[LAB_DEPTH];
    size_t size;
    double *p;
} lab_net;

/* Activations of one forward pass over a batch of up to `cap` rows, kept for backward. */
typedef struct lab_cache {
    int cap, rows;
    double *a[LAB_DEPTH + 1];  /* layer inputs; a[layers] is the output */
    double *z[LAB_DEPTH];      /* pre-activations */
    double *da[LAB_DEPTH + 1]; /* gradients with respect to a */
} lab_cache;

int lab_net_init(lab_net *n, const int *widths, int layers, bool gelu_last, lab_rng *rng,
                 acem_error *err);
int lab_net_clone(lab_net *dst, const lab_net *src, acem_error *err);
void lab_net_free(lab_net *n);
int lab_cache_init(lab_cache *c, const lab_net *n, int cap, acem_error *err);
void lab_cache_free(lab_cache *c);
int lab_net_in(const lab_net *n);
int lab_net_out(const lab_net *n);

/* c->a[layers] = net(x) for `rows` rows of x. */
void lab_net_forward(const lab_net *n, const double *x, int rows, lab_cache *c);
/* From c->da[layers] (dL/d output, overwritten), adds dL/dp to grad and, when dx is not
 * NULL, writes dL/dx (rows x in). */
void lab_net_backward(const lab_net *n, lab_cache *c, double *grad, double *dx);

/* Mean cross-entropy of softmax(logits) against y; dlogits = its gradient. */
double lab_cross_entropy(const double *logits, const int *y, int rows, int classes,
                         double *dlogits);
/* Mean over rows of 0.5 ||out - target||^2; dout = its gradient. */
double lab_squared_error(const double *out, const double *target, int rows, int width,
                         double *dout);

/* Adam (Kingma & Ba 2015) with bias correction. */
typedef struct lab_adam {
    double lr, beta1, beta2, eps;
    long step;
    size_t size;
    double *m, *v;
} lab_adam;

int lab_adam_init(lab_adam *a, size_t size, double lr, acem_error *err);
void lab_adam_update(lab_adam *a, double *p, const double *grad);
void lab_adam_free(lab_adam *a);

/* ---- training and evaluation (lab_train.c) -------------------------------------- */

/* Masked reconstruction on the mixture of every task's training inputs. */
int lab_pretrain(lab_net *backbone, const lab_suite *s, uint64_t seed, acem_error *err);
/* Linear probe of a fresh head on the frozen backbone, then the task's steps on the
 * backbone, and on the head too when `regime` is LAB_HEADS_TUNED. */
int lab_finetune(lab_net *backbone, lab_net *head, const lab_suite *s, int t, uint64_t seed,
                 lab_heads regime, acem_error *err);
/* One backbone, T probed heads (updated only when tuned), every task's loss at every step. */
int lab_multitask(lab_net *backbone, lab_net *heads, const lab_suite *s, uint64_t seed,
                  lab_heads regime, acem_error *err);
/* Fraction of rows classified correctly. */
int lab_accuracy(const lab_net *backbone, const lab_net *head, const lab_set *set, double *acc,
                 acem_error *err);

/* ---- checkpoints, merges, covariance match (lab_merge.c) ------------------------ */

/* Backbone tensors are named "backbone.L.weight" / "backbone.L.bias", heads
 * "head.T.weight" / "head.T.bias"; saved as F32 and read back, so that every evaluation
 * uses the weights exactly as stored. */
int lab_save_nets(const char *path, lab_net *backbone, lab_net *heads, int n_heads,
                  acem_error *err);
int lab_load_backbone(const char *path, lab_net *backbone, acem_error *err);

#define LAB_MAX_ROWS 40

typedef struct lab_row {
    char name[64];
    char about[96];            /* the last column of results.md */
    double acc[LAB_MAX_TASKS]; /* test accuracy per task, in [0, 1] */
    double avg, norm;          /* mean accuracy; mean of acc / individual acc */
} lab_row;

/* How well the delta's Gram Dt^T Dt matches the layer's true input second moment
 * Xt^T Xt, as the cosine of the two matrices, per 2-D layer and task; and ACE's branch. */
#define LAB_MAX_LAYERS 32
typedef struct lab_cov_match {
    int layers;
    char name[LAB_MAX_LAYERS][64];                /* the checkpoint's tensor name */
    int out[LAB_MAX_LAYERS], in[LAB_MAX_LAYERS];  /* the layer's map: in -> out */
    double own[LAB_MAX_LAYERS][LAB_MAX_TASKS];    /* cos(Dt^T Dt, Xt^T Xt) */
    double other[LAB_MAX_LAYERS][LAB_MAX_TASKS];  /* mean over s != t of cos(Dt^T Dt, Xs^T Xs) */
    double random[LAB_MAX_LAYERS][LAB_MAX_TASKS]; /* cos(R^T R, Xt^T Xt), R Gaussian, D's shape */
    double gamma[LAB_MAX_LAYERS];                 /* ACE's heterogeneity of the layer's deltas */
    bool hetero[LAB_MAX_LAYERS];
} lab_cov_match;

/* G = A^T A for A (rows x n), full symmetric n x n. */
void lab_gram(const double *A, int rows, int n, double *G);
/* Layer l's cosines from every task's delta D[t] (out x in, the map's orientation) and
 * input second moments gx[t] (in x in); scratch holds max(in, out) x in doubles. */
void lab_cov_layer(lab_cov_match *cov, int l, int T, double *const *D, double *const *gx,
                   uint64_t seed, double *scratch);
/* ACE's gamma and branch of every layer named in cov, by acem_stats (threshold 0.3). */
int lab_cov_branches(lab_cov_match *cov, const acem_merge_options *so, acem_error *err);

/* Where the lab keeps its checkpoints, under --out. */
#define LAB_PATH 1024
typedef struct lab_paths {
    char base[LAB_PATH], heads[LAB_PATH], multitask[LAB_PATH], merged[LAB_PATH];
    char expert[LAB_MAX_TASKS][LAB_PATH], gram[LAB_MAX_TASKS][LAB_PATH];
} lab_paths;

/* The trained models, rounded to float32 as saved. */
typedef struct lab_models {
    lab_paths paths;
    lab_net base, multitask;
    lab_net expert[LAB_MAX_TASKS];
    lab_net head[LAB_MAX_TASKS];           /* each expert's own head */
    lab_net multitask_head[LAB_MAX_TASKS]; /* the multitask model's heads */
} lab_models;

typedef struct lab_results {
    const lab_suite *suite;
    lab_row row[LAB_MAX_ROWS];
    int rows;
    int references; /* the first rows: zero-shot, individual, multitask, regmean */
    double best_lambda;
    const char *intro; /* the suite's description and tasks in results.md, or NULL (MLP) */
    lab_cov_match cov;
} lab_results;

/* Every row's Norm: mean over tasks of acc / the individual row's (row 1) acc. */
void lab_normalise(lab_results *r);

int lab_paths_init(lab_paths *p, const char *out, const lab_suite *s, acem_error *err);
/* Test accuracy of backbone with heads[t] on every task, avg set; norm is left to the caller. */
int lab_evaluate(const lab_net *backbone, const lab_net *heads, const lab_suite *s, lab_row *row,
                 acem_error *err);

/* Every method's merge of a suite's experts, evaluated by the suite: evaluate(user, path,
 * validation, row) scores the merged checkpoint at path on the test split (on the
 * validation split when validation is set). Outputs go to merged_dir/METHOD (suffix appended:
 * ".safetensors" for one file, "" for a folder). grams: each expert's X^T X file for the regmean
 * reference row, or NULL to skip it (named in the log). */
typedef int (*lab_merged_fn)(void *user, const char *path, bool validation, lab_row *row,
                             acem_error *err);
typedef struct lab_merge_job {
    const lab_suite *suite; /* names and T, for the log */
    const char *base, *merged_dir, *suffix, *preset;
    const char *const *models, *const *grams;
    int grams_input_axis; /* the Grams are over the weights' input axis (GPT-2's Conv1D) */
    uint64_t seed;
    int threads;
    lab_merged_fn evaluate;
    void *user;
} lab_merge_job;
int lab_merge_all(const lab_merge_job *j, lab_results *r, acem_error *err);

int lab_evaluate_merges(const lab_options *o, const lab_suite *s, const lab_models *m,
                        lab_results *r, acem_error *err);
int lab_covariance_match(const lab_options *o, const lab_suite *s, const lab_models *m,
                         lab_results *r, acem_error *err);

/* ---- reports (lab_report.c) ----------------------------------------------------- */

int lab_write_reports(const char *dir, const lab_results *r, const lab_options *o, acem_error *err);

/* "lab: [suite] MESSAGE" on stderr. */
void lab_log(const lab_suite *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Creates dir/sub (dir itself when sub is ""), or finds it there. */
int lab_make_dir(const char *dir, const char *sub, acem_error *err);
/* Joins dir and name into buf; an error if it does not fit. */
int lab_path(char *buf, size_t len, const char *dir, const char *name, acem_error *err);

#endif
