/* method.h — the interface every merge method implements.
 *
 * A method turns the T deltas of one tensor (Dt = Wt - W0, in the compute precision)
 * into the merged delta. The pipeline adds it to the base: W0 + lambda * Delta. */
#ifndef ACEM_METHOD_H
#define ACEM_METHOD_H

#include "internal.h"

#include <string.h>

#define METHOD_MAX_PARAMS 8

/* method_param.flags */
enum {
    PARAM_PER_MODEL = 1,      /* each expert has its own value (mergekit's tensor_parameters) */
    PARAM_BOOL = 2,           /* true / false, read as 1 / 0 */
    PARAM_MK_DEFAULT = 4,     /* a mergekit config's default is mk_def, not def */
    PARAM_CONFIG_REQUIRED = 8 /* a config must give it for every model but the base, as
                                 mergekit requires it (the command line: the default) */
};

typedef struct method_param {
    const char *name;
    double def;
    double lo, hi;              /* numeric range, inclusive */
    const char *const *choices; /* NULL-terminated names for an enumerated parameter */
    const char *help;
    unsigned flags;
    double mk_def;
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
    /* Parameters resolved for this tensor (docs/config.md: per model, then the flags, then
     * the config's top level, then the default), in the method's table order: p for the
     * whole tensor, ep for each expert (T rows of n_params; the PARAM_PER_MODEL ones). */
    const double *p;
    const double *ep;
    int n_params;
    bool mergekit;      /* the config is mergekit's: its rules where acem's differ */
    method_info *info;  /* per-tensor report, may be NULL */
    void *const *grams; /* regmean: T Gram matrices (cols x cols), or NULL if any is missing */
} method_ctx;

typedef struct method_def {
    const char *name;
    const char *describe;
    double default_lambda;
    double mergekit_lambda; /* a mergekit config's default lambda; 0: default_lambda */
    const method_param *params;
    int n_params;
    /* True when each element depends only on the same element of the deltas, so the
     * pipeline may stream the tensor in chunks. */
    bool (*elementwise)(const double *p);
    /* True for methods defined on 2-D tensors: every other tensor gets mean_t Dt. */
    bool matrix;
    /* True for methods that build covariances over the column axis (--covariance-axis). */
    bool covariance;
    /* True when the method merges the models' weights Wt themselves, not deltas: no base is
     * subtracted or added (Delta is the output, lambda not read), and without a base the
     * first model names the tensors (linear). */
    bool weights;
    /* True when model 0 is the base (slerp's t = 0): a config's base_model is moved to the
     * front of its models, or put there when not listed (mergekit adds it as an input). */
    bool base_first;
    /* With base_first: the base is optional (nuslerp), model 0 being the base exactly when
     * there are max_models models; in a mergekit config that model needs no weight. */
    bool base_optional;
    /* True for a method of the deltas whose result is the whole change, lambda not read, as
     * mergekit defines it (sce, model_stock); a method of the weights never reads it. */
    bool no_lambda;
    /* True when the method draws random masks from --seed (DARE, DELLA): the summary
     * names the seed. */
    bool random;
    /* True when the method reads Gram matrices given with --gram (regmean). */
    bool uses_grams;
    /* How many models it merges: at least min_models (0: 2, what the covariance and spectral
     * methods need; 1 where one expert is defined, as mergekit's task vectors are), at most
     * max_models (0: no bound). */
    int min_models, max_models;
    /* Non-NULL when Delta = scale * sum_t w_t Dt, scale returned and the T w_t written
     * into w: the pipeline then streams the method through one fused, parallel
     * read-and-combine kernel. */
    double (*linear_scale)(const method_ctx *c, double *w);
    /* deltas may be overwritten (used as scratch); out receives numel values. */
    int (*merge)(const method_ctx *c, void *const *deltas, void *out, acem_error *err);
} method_def;

static inline double expert_param(const method_ctx *c, int t, int i) {
    return c->ep[(size_t)t * (size_t)c->n_params + (size_t)i];
}

const method_def *method_find(const char *name);
/* The default of parameter i, or of lambda, as the config's dialect has it. */
double method_param_default(const method_def *m, int i, bool mergekit);
double method_default_lambda(const method_def *m, bool mergekit);
/* Parses "key=value" parameters against the method's table (defaults as the dialect has
 * them); unknown keys, values out of range and unknown choices are errors. */
int method_resolve_params(const method_def *m, const acem_param *given, int n_given, bool mergekit,
                          double *values, acem_error *err);
/* n models within the method's bounds, else err names the method and its bounds. */
int method_check_models(const method_def *m, int n, acem_error *err);
/* A value for parameter i (range, or 0 / 1 for a boolean); err names the parameter. */
int method_check_value(const method_param *mp, double v, acem_error *err);
/* "density=0.2 normalize=true" into desc, for the summary. */
void method_describe_params(const method_def *m, const double *values, char *desc, size_t desc_len);

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

/* The IEEE bit pattern of |p[i]|: for non-negative floats it orders like the value, so
 * magnitudes are ranked and selected as integers (ties.c, della.c). */
static inline uint64_t magnitude_key(const void *p, size_t i, bool f64) {
    if (f64) {
        uint64_t x;
        memcpy(&x, (const double *)p + i, 8);
        return x & 0x7fffffffffffffffULL;
    }
    uint32_t x;
    memcpy(&x, (const float *)p + i, 4);
    return x & 0x7fffffffu;
}

/* out_i = scale * sum_t w_t d_ti (w NULL: every w_t is 1). */
void deltas_weighted_sum(const method_ctx *c, void *const *deltas, const double *w, void *out,
                         double scale);

/* TIES' sign election and disjoint merge over already sparsified deltas (Yadav et al.
 * 2023, eq. 2-3), weighted as mergekit's generalized_task_arithmetic.py does it: the
 * elected sign of entry i is that of S_i = sum_t w_t d_ti; the w_t d_ti of that sign (never
 * zeros) are summed, and with normalize divided by the sum of their w_t (when it is 0, by
 * 1). S_i = 0 elects + when zero_plus (mergekit's get_mask), else nothing (acem's rule for
 * its own configs and the command line). w NULL: every w_t is 1. Shared by ties and
 * dare_ties; elect_unweighted elects on sum_t d_ti instead, the w_t weighting the merge only
 * (sce.py's get_erase_mask). */
typedef struct ties_rule {
    const double *w;
    bool normalize, zero_plus, elect_unweighted;
} ties_rule;
void ties_disjoint_merge(const method_ctx *c, void *const *deltas, ties_rule rule, void *out);

/* Entries of d outside its k largest magnitudes (1 <= k <= numel) become 0: exactly k
 * remain, of those tied with the k-th largest the first in index order (ties.c's trim and
 * exact-k rule, as mergekit's argsort / topk keep k). */
int keep_top_k(const method_ctx *c, void *d, uint64_t k, acem_error *err);
/* The k-th largest |d_i| (1 <= k <= numel) by the same radix select, d unchanged. */
double kth_largest_magnitude(const method_ctx *c, const void *d, uint64_t k);

/* The elementwise test of a method that is elementwise whatever its parameters. */
bool method_always_elementwise(const double *p);

/* mergekit's shared steps (gta.c, generalized_task_arithmetic.py and sparsify.py): the
 * L1 norm of a delta; a masked delta scaled back to the L1 norm `before` it had (left alone
 * when either norm is below 1e-7, as rescaled_masked_tensor); the T experts' values of
 * parameter weight_param (NULL, err set, when out of memory); 1 / sum_t w_t with normalize
 * (1 without, or when |sum| < 1e-8); and the mix: with consensus TIES' election and
 * disjoint merge (zero sum + in a mergekit config), else sum_t w_t Dt times that scale. */
double delta_l1(const method_ctx *c, const void *d);
void delta_l1_rescale(const method_ctx *c, void *d, double before);
double *expert_weights(const method_ctx *c, int weight_param, acem_error *err);
double weight_sum_scale(const double *w, int T, bool normalize);
void gta_mix(const method_ctx *c, void *const *d, const double *w, bool consensus, bool normalize,
             void *out);

/* ACE's step 1: squared norms ||Dt||_F^2 into sq (T) and the heterogeneity gamma. */
double ace_heterogeneity(const method_ctx *c, void *const *deltas, double *sq);

extern const method_def method_average, method_task_arithmetic, method_linear, method_ties,
    method_breadcrumbs, method_breadcrumbs_ties, method_dare_linear, method_dare_ties, method_slerp,
    method_passthrough, method_ace, method_wudi, method_actmat, method_tsv, method_iso_c,
    method_iso_cts, method_cart, method_regmean, method_della, method_della_linear,
    method_model_stock, method_sce, method_nuslerp, method_karcher, method_arcee_fusion;

#endif
