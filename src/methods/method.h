/* method.h — the interface every merge method implements.
 *
 * A method turns the T deltas of one tensor (Dt = Wt - W0, in the compute precision)
 * into the merged delta. The pipeline adds it to the base: W0 + lambda * Delta. */
#ifndef ACEM_METHOD_H
#define ACEM_METHOD_H

#include "internal.h"

#define METHOD_MAX_PARAMS 8

typedef struct method_param {
    const char *name;
    double def;
    double lo, hi;              /* numeric range, inclusive */
    const char *const *choices; /* NULL-terminated names for an enumerated parameter */
    const char *help;
} method_param;

/* What a method reports about one tensor, for --report and the summary. */
#define METHOD_INFO_MAX 8
typedef struct method_info {
    int n;
    const char *key[METHOD_INFO_MAX];
    double value[METHOD_INFO_MAX];
    const char *branch;  /* e.g. ACE's "hetero" / "homo", or NULL */
    const char *warning; /* a static sentence, or NULL */
} method_info;

static inline void info_add(method_info *i, const char *key, double value) {
    if (i && i->n < METHOD_INFO_MAX) {
        i->key[i->n] = key;
        i->value[i->n++] = value;
    }
}

typedef struct method_ctx {
    const char *tensor; /* name, for messages and the DARE key */
    uint64_t name_hash;
    int ndim;
    uint64_t rows, cols; /* 2-D shape as stored; rows = 1 for 1-D */
    uint64_t numel;      /* elements in this call (a chunk for elementwise methods) */
    uint64_t offset;     /* index of this call's first element within the tensor */
    int T;
    bool f64; /* compute precision: double when true, float otherwise */
    int threads;
    uint64_t seed;
    const double *p;    /* resolved parameters, in the method's table order */
    method_info *info;  /* per-tensor report, may be NULL */
    void *const *grams; /* regmean: T Gram matrices (cols x cols), or NULL if any is missing */
} method_ctx;

typedef struct method_def {
    const char *name;
    const char *describe;
    double default_lambda;
    const method_param *params;
    int n_params;
    /* True when each element depends only on the same element of the deltas, so the
     * pipeline may stream the tensor in chunks. */
    bool (*elementwise)(const double *p);
    /* True for methods defined on 2-D tensors: every other tensor gets mean_t Dt. */
    bool matrix;
    /* True for methods that build covariances over the column axis (--covariance-axis). */
    bool covariance;
    /* True when the method reads Gram matrices given with --gram (regmean). */
    bool uses_grams;
    /* Non-NULL when Delta = linear_scale(T) * sum_t Dt: the pipeline then streams the
     * method through one fused, parallel read-and-combine kernel. */
    double (*linear_scale)(int T);
    /* deltas may be overwritten (used as scratch); out receives numel values. */
    int (*merge)(const method_ctx *c, void *const *deltas, void *out, acem_error *err);
} method_def;

const method_def *method_find(const char *name);
int method_resolve_params(const method_def *m, const acem_param *given, int n_given, double *values,
                          char *desc, size_t desc_len, acem_error *err);

/* Element access in the compute precision. */
static inline double rd(const void *p, size_t i, bool f64) {
    return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
static inline void wr(void *p, size_t i, double v, bool f64) {
    if (f64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* out_i = scale * sum_t d_ti. */
void deltas_scaled_sum(const method_ctx *c, void *const *deltas, void *out, double scale);

/* TIES' sign election and disjoint mean over already sparsified deltas (Yadav et al.
 * 2023, eq. 2-3): sign_i = sgn(sum_t d_ti); out_i = mean of the d_ti that are non-zero
 * and agree with sign_i, 0 if none. Shared by ties and dare_ties. */
void ties_disjoint_mean(const method_ctx *c, void *const *deltas, void *out);

/* ACE's step 1: squared norms ||Dt||_F^2 into sq (T) and the heterogeneity gamma. */
double ace_heterogeneity(const method_ctx *c, void *const *deltas, double *sq);

extern const method_def method_average, method_task_arithmetic, method_ties, method_dare_linear,
    method_dare_ties, method_ace, method_wudi, method_actmat, method_tsv, method_iso_c,
    method_iso_cts, method_cart, method_regmean;

#endif
