/* lab_mlp.c — the lab's network: dense layers with GELU, forward and backward by hand
 * (checked against finite differences in tests/unit/test_lab.c), cross-entropy and
 * squared-error losses, Adam, and the seeded random numbers everything draws from. */
#include "lab.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers ------------------------------------------------------------- */

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

lab_rng lab_rng_for(uint64_t seed, const char *purpose, int index) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a of the purpose */
    for (const char *p = purpose; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    return (lab_rng){mix64(seed ^ mix64(h ^ mix64((uint64_t)index + 1)))};
}

uint64_t lab_rng_next(lab_rng *r) { return mix64(r->s += 0x9e3779b97f4a7c15ULL); }

double lab_rng_uniform(lab_rng *r) { return (double)(lab_rng_next(r) >> 11) * 0x1.0p-53; }

double lab_rng_normal(lab_rng *r) { /* Box-Muller; u1 in (0, 1] keeps the log finite */
    double u1 = 1.0 - lab_rng_uniform(r), u2 = lab_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void lab_shuffle(lab_rng *r, int *idx, int n) { /* Fisher-Yates */
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(lab_rng_next(r) % (uint64_t)(i + 1)), tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
    }
}

/* ---- the network ---------------------------------------------------------------- */

static void *lab_calloc(size_t n, size_t size, const char *what, acem_error *err) {
    void *p = n && size ? calloc(n, size) : NULL;
    if (!p) snprintf(err->msg, sizeof err->msg, "lab: out of memory for %s", what);
    return p;
}

int lab_net_init(lab_net *n, const int *widths, int layers, bool gelu_last, lab_rng *rng,
                 acem_error *err) {
    memset(n, 0, sizeof *n);
    n->layers = layers;
    n->gelu_last = gelu_last;
    size_t off = 0;
    for (int l = 0; l < layers; l++) {
        lab_dense *d = &n->layer[l];
        d->in = widths[l];
        d->out = widths[l + 1];
        d->w = off;
        off += (size_t)d->in * d->out;
        d->b = off;
        off += (size_t)d->out;
    }
    n->size = off;
    if (!(n->p = lab_calloc(off, sizeof *n->p, "network parameters", err))) return -1;
    /* He-style initialisation N(0, 1/in) for the weights, zero biases. */
    for (int l = 0; l < layers; l++) {
        const lab_dense *d = &n->layer[l];
        double scale = 1.0 / sqrt((double)d->in);
        for (size_t i = 0; i < (size_t)d->in * d->out; i++)
            n->p[d->w + i] = scale * lab_rng_normal(rng);
    }
    return 0;
}

int lab_net_clone(lab_net *dst, const lab_net *src, acem_error *err) {
    *dst = *src;
    if (!(dst->p = lab_calloc(src->size, sizeof *dst->p, "network parameters", err))) return -1;
    memcpy(dst->p, src->p, src->size * sizeof *src->p);
    return 0;
}

void lab_net_free(lab_net *n) {
    free(n->p);
    n->p = NULL;
}

int lab_net_in(const lab_net *n) { return n->layer[0].in; }
int lab_net_out(const lab_net *n) { return n->layer[n->layers - 1].out; }

int lab_cache_init(lab_cache *c, const lab_net *n, int cap, acem_error *err) {
    memset(c, 0, sizeof *c);
    c->cap = cap;
    for (int l = 0; l <= n->layers; l++) {
        int width = l < n->layers ? n->layer[l].in : lab_net_out(n);
        if (!(c->a[l] = lab_calloc((size_t)cap * width, sizeof(double), "activations", err)) ||
            !(c->da[l] = lab_calloc((size_t)cap * width, sizeof(double), "gradients", err)))
            return -1;
        if (l < n->layers && !(c->z[l] = lab_calloc((size_t)cap * n->layer[l].out, sizeof(double),
                                                    "activations", err)))
            return -1;
    }
    return 0;
}

void lab_cache_free(lab_cache *c) {
    for (int l = 0; l <= LAB_DEPTH; l++) {
        free(c->a[l]);
        free(c->da[l]);
        if (l < LAB_DEPTH) free(c->z[l]);
    }
    memset(c, 0, sizeof *c);
}

/* GELU, tanh form (Hendrycks & Gimpel 2016): 0.5 z (1 + tanh(k (z + 0.044715 z^3))). */
#define GELU_K 0.7978845608028654 /* sqrt(2 / pi) */
static double gelu(double z) { return 0.5 * z * (1.0 + tanh(GELU_K * (z + 0.044715 * z * z * z))); }
static double gelu_grad(double z) {
    double t = tanh(GELU_K * (z + 0.044715 * z * z * z));
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * 0.044715 * z * z);
}

static bool has_gelu(const lab_net *n, int l) { return l < n->layers - 1 || n->gelu_last; }

void lab_net_forward(const lab_net *n, const double *x, int rows, lab_cache *c) {
    c->rows = rows;
    memcpy(c->a[0], x, (size_t)rows * n->layer[0].in * sizeof *x);
    for (int l = 0; l < n->layers; l++) {
        const lab_dense *d = &n->layer[l];
        double *z = c->z[l], *a = c->a[l + 1];
        for (int r = 0; r < rows; r++)
            memcpy(z + (size_t)r * d->out, n->p + d->b, (size_t)d->out * sizeof *z);
        /* Z = A W^T + b */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, d->out, d->in, 1.0, c->a[l],
                    d->in, n->p + d->w, d->in, 1.0, z, d->out);
        size_t m = (size_t)rows * d->out;
        if (has_gelu(n, l))
            for (size_t i = 0; i < m; i++)
                a[i] = gelu(z[i]);
        else
            memcpy(a, z, m * sizeof *a);
    }
}

void lab_net_backward(const lab_net *n, lab_cache *c, double *grad, double *dx) {
    int rows = c->rows;
    for (int l = n->layers - 1; l >= 0; l--) {
        const lab_dense *d = &n->layer[l];
        double *dz = c->da[l + 1]; /* dL/dZ = dL/dA * GELU'(Z), in place */
        if (has_gelu(n, l))
            for (size_t i = 0; i < (size_t)rows * d->out; i++)
                dz[i] *= gelu_grad(c->z[l][i]);
        /* dL/dW += dZ^T A, dL/db += column sums of dZ, dL/dA = dZ W */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d->out, d->in, rows, 1.0, dz, d->out,
                    c->a[l], d->in, 1.0, grad + d->w, d->in);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < d->out; j++)
                grad[d->b + j] += dz[(size_t)r * d->out + j];
        double *da = l > 0 ? c->da[l] : dx;
        if (da)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d->in, d->out, 1.0, dz,
                        d->out, n->p + d->w, d->in, 0.0, da, d->in);
    }
}

double lab_cross_entropy(const double *logits, const int *y, int rows, int classes,
                         double *dlogits) {
    double loss = 0.0;
    for (int r = 0; r < rows; r++) {
        const double *z = logits + (size_t)r * classes;
        double *g = dlogits + (size_t)r * classes;
        double zmax = z[0], sum = 0.0;
        for (int k = 1; k < classes; k++)
            zmax = fmax(zmax, z[k]);
        for (int k = 0; k < classes; k++)
            sum += (g[k] = exp(z[k] - zmax));
        loss += log(sum) - (z[y[r]] - zmax);
        for (int k = 0; k < classes; k++)
            g[k] = (g[k] / sum - (k == y[r])) / rows;
    }
    return loss / rows;
}

double lab_squared_error(const double *out, const double *target, int rows, int width,
                         double *dout) {
    double loss = 0.0;
    for (size_t i = 0; i < (size_t)rows * width; i++) {
        double e = out[i] - target[i];
        loss += 0.5 * e * e;
        dout[i] = e / rows;
    }
    return loss / rows;
}

/* ---- Adam ----------------------------------------------------------------------- */

int lab_adam_init(lab_adam *a, size_t size, double lr, acem_error *err) {
    *a = (lab_adam){.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .size = size};
    a->m = lab_calloc(size, sizeof *a->m, "Adam moments", err);
    a->v = a->m ? lab_calloc(size, sizeof *a->v, "Adam moments", err) : NULL;
    return a->v ? 0 : -1;
}

/* m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr mhat / (sqrt(vhat) + eps). */
void lab_adam_update(lab_adam *a, double *p, const double *grad) {
    a->step++;
    double c1 = 1.0 - pow(a->beta1, (double)a->step), c2 = 1.0 - pow(a->beta2, (double)a->step);
    for (size_t i = 0; i < a->size; i++) {
        a->m[i] = a->beta1 * a->m[i] + (1.0 - a->beta1) * grad[i];
        a->v[i] = a->beta2 * a->v[i] + (1.0 - a->beta2) * grad[i] * grad[i];
        p[i] -= a->lr * (a->m[i] / c1) / (sqrt(a->v[i] / c2) + a->eps);
    }
}

void lab_adam_free(lab_adam *a) {
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}
