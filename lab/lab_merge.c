/* lab_merge.c — the lab's checkpoints, every merge through libacem's public API, the
 * evaluation of merged backbones, and the covariance match (does Dt^T Dt look like the
 * layer's input second moment Xt^T Xt, as ACE assumes?). */
#include "lab.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TA_SWEEP_STEPS 20 /* task arithmetic lambda in 0.05, 0.10, ..., 1.0 (Ilharco et al.) */
#define ACE_THRESHOLD  0.3

int lab_path(char *buf, size_t len, const char *dir, const char *name, acem_error *err) {
    if ((size_t)snprintf(buf, len, "%s/%s", dir, name) < len) return 0;
    snprintf(err->msg, sizeof err->msg, "lab: path too long: %.500s/%.300s", dir, name);
    return -1;
}

int lab_paths_init(lab_paths *p, const char *out, const lab_suite *s, acem_error *err) {
    char name[64];
    if (lab_path(p->base, LAB_PATH, out, "base.safetensors", err) ||
        lab_path(p->heads, LAB_PATH, out, "heads.safetensors", err) ||
        lab_path(p->multitask, LAB_PATH, out, "multitask.safetensors", err) ||
        lab_path(p->merged, LAB_PATH, out, "merged", err))
        return -1;
    for (int t = 0; t < s->T; t++) {
        snprintf(name, sizeof name, "experts/%s.safetensors", s->task[t].name);
        if (lab_path(p->expert[t], LAB_PATH, out, name, err)) return -1;
        snprintf(name, sizeof name, "grams/%s.safetensors", s->task[t].name);
        if (lab_path(p->gram[t], LAB_PATH, out, name, err)) return -1;
    }
    return 0;
}

/* ---- checkpoints ---------------------------------------------------------------- */

#define MAX_SAVED (2 * LAB_DEPTH + 2 * LAB_MAX_TASKS)

int lab_save_nets(const char *path, lab_net *backbone, lab_net *heads, int n_heads,
                  acem_error *err) {
    acem_tensor_data td[MAX_SAVED];
    char names[MAX_SAVED][32];
    uint64_t shapes[MAX_SAVED][2];
    size_t total = 0, n = 0;
    lab_net *nets[1 + LAB_MAX_TASKS];
    int n_nets = 0;
    if (backbone) nets[n_nets++] = backbone;
    for (int h = 0; h < n_heads; h++)
        nets[n_nets++] = &heads[h];
    for (int i = 0; i < n_nets; i++)
        total += nets[i]->size;
    float *data = malloc(total * sizeof *data), *at = data;
    if (!data) {
        snprintf(err->msg, sizeof err->msg, "lab: out of memory saving %s", path);
        return -1;
    }
    for (int i = 0; i < n_nets; i++) {
        lab_net *net = nets[i];
        for (size_t j = 0; j < net->size; j++) /* evaluate exactly what is stored */
            net->p[j] = at[j] = (float)net->p[j];
        for (int l = 0; l < net->layers; l++) {
            const lab_dense *d = &net->layer[l];
            const char *kind = net == backbone ? "backbone" : "head";
            int index = net == backbone ? l : i - (backbone != NULL);
            for (int b = 0; b < 2; b++, n++) {
                snprintf(names[n], sizeof names[n], "%s.%d.%s", kind, index, b ? "bias" : "weight");
                shapes[n][0] = (uint64_t)d->out;
                shapes[n][1] = (uint64_t)d->in;
                td[n] = (acem_tensor_data){names[n], ACEM_DT_F32, b ? 1 : 2, shapes[n],
                                           at + (b ? d->b : d->w)};
            }
        }
        at += net->size;
    }
    const acem_param meta[] = {{"format", "pt"}, {"producer", "acem lab"}};
    int rc = acem_save_safetensors(path, td, n, meta, 2, err);
    free(data);
    return rc;
}

int lab_load_backbone(const char *path, lab_net *backbone, acem_error *err) {
    acem_checkpoint *ck;
    if (acem_checkpoint_open(path, &ck, err)) return -1;
    int rc = 0;
    for (int l = 0; !rc && l < backbone->layers; l++) {
        const lab_dense *d = &backbone->layer[l];
        for (int b = 0; !rc && b < 2; b++) {
            char name[32];
            snprintf(name, sizeof name, "backbone.%d.%s", l, b ? "bias" : "weight");
            uint64_t numel = b ? (uint64_t)d->out : (uint64_t)d->out * d->in;
            const acem_tensor *t = acem_checkpoint_find(ck, name);
            if (!t || t->dtype != ACEM_DT_F32 || t->numel != numel) {
                snprintf(err->msg, sizeof err->msg, "%s: no F32 tensor %s of %llu elements", path,
                         name, (unsigned long long)numel);
                rc = -1;
                break;
            }
            float *buf = malloc(numel * sizeof *buf);
            if (!buf) snprintf(err->msg, sizeof err->msg, "lab: out of memory reading %s", path);
            rc = !buf || acem_checkpoint_read(ck, t, 0, buf, numel * sizeof *buf, err);
            for (uint64_t i = 0; !rc && i < numel; i++)
                backbone->p[(b ? d->b : d->w) + i] = buf[i];
            free(buf);
        }
    }
    acem_checkpoint_close(ck);
    return rc ? -1 : 0;
}

/* ---- evaluation ----------------------------------------------------------------- */

static int evaluate_on(const lab_net *backbone, const lab_net *heads, const lab_suite *s,
                       bool validation, lab_row *row, acem_error *err) {
    row->avg = 0.0;
    for (int t = 0; t < s->T; t++) {
        const lab_set *set = validation ? &s->task[t].val : &s->task[t].test;
        if (lab_accuracy(backbone, &heads[t], set, &row->acc[t], err)) return -1;
        row->avg += row->acc[t] / s->T;
    }
    return 0;
}

int lab_evaluate(const lab_net *backbone, const lab_net *heads, const lab_suite *s, lab_row *row,
                 acem_error *err) {
    return evaluate_on(backbone, heads, s, false, row, err);
}

/* Merges the experts with `method` into out and lets the suite evaluate the result. */
static int merge_and_evaluate(const lab_merge_job *j, const char *method, double lambda,
                              const char *out, bool validation, lab_row *row, acem_error *err) {
    acem_merge_options mo;
    acem_merge_options_init(&mo);
    mo.base = j->base;
    mo.models = j->models;
    mo.n_models = j->suite->T;
    mo.method = method;
    mo.lambda = lambda;
    mo.out = out;
    mo.force = 1;
    mo.seed = j->seed;
    mo.threads = j->threads;
    mo.preset = j->preset;
    mo.grams = strcmp(method, "regmean") ? NULL : j->grams;
    mo.covariance_axis_input = mo.grams ? j->grams_input_axis : 0;
    acem_merge_summary summary;
    return acem_merge(&mo, &summary, err) || j->evaluate(j->user, out, validation, row, err) ? -1
                                                                                             : 0;
}

static int merged_path(char *buf, const lab_merge_job *j, const char *name, acem_error *err) {
    char file[96];
    snprintf(file, sizeof file, "%s%s", name, j->suffix);
    return lab_path(buf, LAB_PATH, j->merged_dir, file, err);
}

/* Task arithmetic at the lambda with the best mean validation accuracy (the first of
 * equals), as papers report it: the sweep on validation, then that lambda on test. */
static int task_arithmetic_on_val(const lab_merge_job *j, lab_row *row, double *best_lambda,
                                  acem_error *err) {
    char out[LAB_PATH];
    double best_val = -1.0;
    if (merged_path(out, j, "task_arithmetic_val", err)) return -1;
    for (int i = 1; i <= TA_SWEEP_STEPS; i++) {
        double lambda = (double)i / TA_SWEEP_STEPS;
        lab_row val;
        if (merge_and_evaluate(j, "task_arithmetic", lambda, out, true, &val, err)) return -1;
        if (val.avg > best_val) {
            best_val = val.avg;
            *best_lambda = lambda;
        }
    }
    snprintf(row->name, sizeof row->name, "task_arithmetic_val");
    snprintf(row->about, sizeof row->about, "lambda chosen on validation");
    return merge_and_evaluate(j, "task_arithmetic", *best_lambda, out, false, row, err);
}

int lab_merge_all(const lab_merge_job *j, lab_results *r, acem_error *err) {
    char out[LAB_PATH];
    const lab_suite *s = j->suite;
    /* regmean with the true Gram matrices of the training inputs: the data-dependent
     * ceiling, a reference row; then every data-free method at its defaults. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < acem_method_count(); i++) {
            const char *method = acem_method_name(i);
            bool reference = !strcmp(method, "regmean");
            if (reference != (pass == 0)) continue;
            if (!acem_method_takes(i, s->T)) { /* slerp: two models */
                lab_log(s, "skipping %s: it does not merge %d experts", method, s->T);
                continue;
            }
            if (reference && !j->grams) {
                lab_log(s, "skipping regmean: this suite computes no Gram matrices");
                continue;
            }
            if (r->rows + 2 > LAB_MAX_ROWS) break;
            lab_row *row = &r->row[r->rows++];
            snprintf(row->name, sizeof row->name, "%s%s", method, reference ? "_true_grams" : "");
            snprintf(row->about, sizeof row->about, "%s",
                     reference ? "RegMean with each expert's true X^T X per layer (uses data)"
                               : "default parameters");
            lab_log(s, "merging with %s", row->name);
            if (merged_path(out, j, method, err) ||
                merge_and_evaluate(j, method, NAN, out, false, row, err))
                return -1;
            if (!strcmp(method, "task_arithmetic")) {
                lab_log(s, "task arithmetic, lambda 0.05 .. 1.0 on the validation split");
                if (task_arithmetic_on_val(j, &r->row[r->rows++], &r->best_lambda, err)) return -1;
            }
        }
    return 0;
}

/* The MLP suites' evaluation of a merged backbone file. */
typedef struct mlp_eval {
    const lab_suite *s;
    const lab_models *m;
} mlp_eval;

static int evaluate_mlp(void *user, const char *path, bool validation, lab_row *row,
                        acem_error *err) {
    const mlp_eval *e = user;
    lab_net merged;
    if (lab_net_clone(&merged, &e->m->base, err)) return -1;
    int rc = lab_load_backbone(path, &merged, err) ||
             evaluate_on(&merged, e->m->head, e->s, validation, row, err);
    lab_net_free(&merged);
    return rc ? -1 : 0;
}

int lab_evaluate_merges(const lab_options *o, const lab_suite *s, const lab_models *m,
                        lab_results *r, acem_error *err) {
    const char *models[LAB_MAX_TASKS], *grams[LAB_MAX_TASKS];
    for (int t = 0; t < s->T; t++) {
        models[t] = m->paths.expert[t];
        grams[t] = m->paths.gram[t];
    }
    mlp_eval e = {s, m};
    lab_merge_job j = {.suite = s,
                       .base = m->paths.base,
                       .merged_dir = m->paths.merged,
                       .suffix = ".safetensors",
                       .models = models,
                       .grams = grams,
                       .seed = o->seed,
                       .threads = o->threads,
                       .evaluate = evaluate_mlp,
                       .user = &e};
    return lab_merge_all(&j, r, err);
}

/* ---- covariance match ----------------------------------------------------------- */

void lab_gram(const double *A, int rows, int n, double *G) {
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, rows, 1.0, A, n, 0.0, G, n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            G[(size_t)i * n + j] = G[(size_t)j * n + i];
}

/* <A, B>_F / (||A||_F ||B||_F) */
static double matrix_cosine(const double *A, const double *B, size_t len) {
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (size_t i = 0; i < len; i++) {
        ab += A[i] * B[i];
        aa += A[i] * A[i];
        bb += B[i] * B[i];
    }
    return aa > 0.0 && bb > 0.0 ? ab / sqrt(aa * bb) : 0.0;
}

void lab_cov_layer(lab_cov_match *cov, int l, int T, double *const *D, double *const *gx,
                   uint64_t seed, double *scratch) {
    int out = cov->out[l], in = cov->in[l];
    size_t nn = (size_t)in * in, size = (size_t)out * in;
    double *gd = scratch, *R = scratch + nn;
    for (int t = 0; t < T; t++) {
        lab_gram(D[t], out, in, gd);
        cov->own[l][t] = matrix_cosine(gd, gx[t], nn);
        double other = 0.0;
        for (int u = 0; u < T; u++)
            if (u != t) other += matrix_cosine(gd, gx[u], nn) / (T - 1);
        cov->other[l][t] = other;
        lab_rng rng = lab_rng_for(seed, "random-floor", l * LAB_MAX_TASKS + t);
        for (size_t i = 0; i < size; i++)
            R[i] = lab_rng_normal(&rng);
        lab_gram(R, out, in, gd);
        cov->random[l][t] = matrix_cosine(gd, gx[t], nn);
    }
}

static int on_stats(void *user, const acem_tensor_stats *st) {
    lab_cov_match *cov = user;
    for (int l = 0; l < cov->layers; l++)
        if (!strcmp(st->name, cov->name[l])) {
            cov->gamma[l] = st->gamma;
            cov->hetero[l] = st->hetero != 0;
        }
    return 0;
}

int lab_cov_branches(lab_cov_match *cov, const acem_merge_options *so, acem_error *err) {
    return acem_stats(so, ACE_THRESHOLD, on_stats, cov, err);
}

/* Xt^T Xt for every layer of expert t on task t's training inputs; saved as regmean's
 * Gram file and kept in gx[l] (n_l x n_l). */
static int input_grams(const lab_suite *s, const lab_models *m, int t, double **gx,
                       acem_error *err) {
    const lab_net *net = &m->expert[t];
    const lab_set *train = &s->task[t].train;
    lab_cache c;
    if (lab_cache_init(&c, net, train->n, err)) {
        lab_cache_free(&c);
        return -1;
    }
    lab_net_forward(net, train->x, train->n, &c);
    acem_tensor_data td[LAB_DEPTH];
    char names[LAB_DEPTH][32];
    uint64_t shapes[LAB_DEPTH][2];
    for (int l = 0; l < net->layers; l++) {
        int n = net->layer[l].in;
        lab_gram(c.a[l], train->n, n, gx[l]);
        snprintf(names[l], sizeof names[l], "backbone.%d.weight", l);
        shapes[l][0] = shapes[l][1] = (uint64_t)n;
        td[l] = (acem_tensor_data){names[l], ACEM_DT_F64, 2, shapes[l], gx[l]};
    }
    lab_cache_free(&c);
    const acem_param meta[] = {{"format", "pt"}, {"producer", "acem lab: X^T X per layer"}};
    return acem_save_safetensors(m->paths.gram[t], td, (size_t)net->layers, meta, 2, err);
}

int lab_covariance_match(const lab_options *o, const lab_suite *s, const lab_models *m,
                         lab_results *r, acem_error *err) {
    const lab_net *base = &m->base;
    int T = s->T, rc = 0;
    size_t widest = 0;
    lab_cov_match *cov = &r->cov;
    cov->layers = base->layers;
    for (int l = 0; l < base->layers; l++) {
        size_t in = (size_t)base->layer[l].in, out = (size_t)base->layer[l].out;
        widest = in * (in > out ? in : out) > widest ? in * (in > out ? in : out) : widest;
        snprintf(cov->name[l], sizeof cov->name[l], "backbone.%d.weight", l);
        cov->in[l] = (int)in;
        cov->out[l] = (int)out;
    }
    double *gx[LAB_MAX_TASKS][LAB_DEPTH] = {{0}}, *D[LAB_MAX_TASKS] = {0},
           *scratch = malloc(2 * widest * sizeof *scratch);
    for (int t = 0; t < T; t++) {
        rc |= !(D[t] = malloc(widest * sizeof(double)));
        for (int l = 0; l < base->layers; l++)
            rc |= !(gx[t][l] = malloc(widest * sizeof(double)));
    }
    if (rc || !scratch) {
        snprintf(err->msg, sizeof err->msg, "lab: out of memory for Gram matrices");
        rc = -1;
    }
    for (int t = 0; !rc && t < T; t++)
        rc = input_grams(s, m, t, gx[t], err);
    for (int l = 0; !rc && l < base->layers; l++) {
        const lab_dense *d = &base->layer[l];
        double *gxl[LAB_MAX_TASKS];
        for (int t = 0; t < T; t++) {
            gxl[t] = gx[t][l];
            for (size_t i = 0; i < (size_t)d->out * d->in; i++) /* Dt = Wt - W0 */
                D[t][i] = m->expert[t].p[d->w + i] - base->p[d->w + i];
        }
        lab_cov_layer(cov, l, T, D, gxl, o->seed, scratch);
    }
    if (!rc) { /* which branch ACE takes on each layer: acem stats through the library */
        const char *models[LAB_MAX_TASKS];
        for (int t = 0; t < T; t++)
            models[t] = m->paths.expert[t];
        acem_merge_options so;
        acem_merge_options_init(&so);
        so.base = m->paths.base;
        so.models = models;
        so.n_models = T;
        so.threads = o->threads;
        rc = lab_cov_branches(cov, &so, err);
    }
    for (int t = 0; t < T; t++) {
        free(D[t]);
        for (int l = 0; l < base->layers; l++)
            free(gx[t][l]);
    }
    free(scratch);
    return rc ? -1 : 0;
}
