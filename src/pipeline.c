/* pipeline.c — acem_merge: open and validate every input, plan, then stream tensor by
 * tensor (or chunk by chunk for elementwise methods) into the output.
 *
 * Per merged tensor: W0 and each Wt are read (pread) into reusable buffers in the compute
 * precision, Dt = Wt - W0 is formed in place, the method writes Delta, and the output is
 * W0 + lambda * Delta converted to the output dtype. Memory: (T + 2) compute buffers of
 * the largest tensor (of one chunk for elementwise methods) plus two raw buffers. */
#include "card.h"
#include "dryrun.h"
#include "formats/formats.h"
#include "linalg/linalg.h"
#include "methods/method.h"
#include "output.h"
#include "params.h"
#include "plan.h"
#include "stats.h"
#include "tokenizer_merge.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Elements per chunk when a method is elementwise: 4 MiB of f32 per buffer. */
#define CHUNK_ELEMS (1u << 20)
/* Elements per block of the fused kernel of linear methods: a block of every input stays
 * in L2 while it is read, converted, subtracted, summed and combined. */
#define FUSED_BLOCK (1u << 14)

/* One thread's scratch in the fused kernel, and what went wrong in its blocks. */
typedef struct fused_scratch {
    unsigned char *raw;
    void *w0, *d, *out;
    double *acc;
    int64_t *first_bad; /* per input (base, then experts), then the output: first non-finite
                           element or -1 */
    int failed;         /* a read failed; err says why */
    acem_error err;
} fused_scratch;

void acem_merge_options_init(acem_merge_options *o) {
    memset(o, 0, sizeof *o);
    o->lambda = NAN;
    o->out_type = ACEM_OUT_KEEP;
    o->precision = ACEM_DT_F32;
}

typedef struct merge_run {
    const acem_merge_options *o;
    const method_def *method;
    double params[METHOD_MAX_PARAMS];   /* run-wide: defaults, the config's top level, the flags */
    bool flagged[METHOD_MAX_PARAMS];    /* given with --param: above the config's top level */
    double tensor_p[METHOD_MAX_PARAMS]; /* resolved for the current tensor */
    double *expert_p;                   /* T x n_params, for the current tensor */
    double *weights;                    /* T: the fused kernel's w_t */
    bool mergekit;
    double lambda;
    bool f64;
    size_t csize; /* bytes per compute element */
    int threads;
    int T;        /* experts per tensor */
    int n_inputs; /* o->models: the experts, or with slices every model the slices name */
    acem_checkpoint *base;
    acem_checkpoint **experts; /* o->models opened */
    acem_checkpoint **grams;   /* regmean's Gram files, per expert (entries may be NULL) */
    void **gram_bufs;
    plan plan;
    st_writer *writer; /* one of the two writers */
    gguf_writer *gguf;
    /* buffers */
    void *w0, *out;
    void **deltas;
    unsigned char *raw; /* stored bytes on their way in or out */
    uint64_t raw_size;
    fused_scratch *scratch; /* per thread, for linear methods */
    acem_progress progress;
    cJSON *report_tensors;
    char **aux; /* names of the base directory's auxiliary files to copy */
    size_t n_aux;
    char *config_yaml; /* the resolved configuration (card.c), in the output's metadata */
    acem_warnings warnings;
    const char *axis;                    /* the covariance axis used, for the summary */
    size_t gram_tensors, gram_fallbacks; /* regmean: 2-D merged tensors, those without Grams */
    bool has_base;                       /* a base was given (not the first model as reference) */
    tok_plan tok;                        /* tokenizer_source / chat_template */
} merge_run;

static void report_progress(merge_run *r) {
    if (r->o->progress) r->o->progress(r->o->progress_user, &r->progress);
}

static int check_cancel(const merge_run *r, acem_error *err) {
    return r->o->cancel && *r->o->cancel ? acem_fail(err, "interrupted") : 0;
}

static int nonfinite_error(const acem_checkpoint *ck, const acem_tensor *t, uint64_t at,
                           acem_error *err) {
    return acem_fail(err,
                     "%s: tensor \"%s\" holds a non-finite value (NaN or Inf) at element %llu; "
                     "pass --allow-nonfinite to accept it",
                     acem_checkpoint_file_path(ck, t->file), t->name, (unsigned long long)at);
}

/* A merged value that is not finite in the output type: finite inputs can still overflow a
 * narrow type (F16 past 65504), and a method can break down. Writing it would hand the user
 * a broken model without a word, so it is refused like a non-finite input. */
static int output_nonfinite_error(const merge_run *r, const plan_entry *e, uint64_t at,
                                  acem_error *err) {
    return acem_fail(err,
                     "%s: tensor \"%s\": the value written at element %llu is not finite as %s "
                     "(NaN, or beyond the type's range); write a wider --dtype or pass "
                     "--allow-nonfinite to keep it",
                     r->o->out, e->name, (unsigned long long)at,
                     acem_dtype_name(plan_fed_dtype(e)));
}

/* The first non-finite of n output values, in parallel blocks; -1 if none (or unchecked). */
static int64_t first_nonfinite_output(const merge_run *r, const void *raw, acem_dtype dt,
                                      uint64_t n) {
    if (r->o->allow_nonfinite) return -1;
    const size_t es = acem_dtype_size(dt);
    const int64_t blocks = (int64_t)((n + FUSED_BLOCK - 1) / FUSED_BLOCK);
    int64_t first = INT64_MAX; /* min's identity: the reduction starts every thread from it */
#pragma omp parallel for num_threads(r->threads) schedule(static)                                  \
    reduction(min                                                                                  \
              : first) if (blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        uint64_t at = (uint64_t)blk * FUSED_BLOCK, m = n - at < FUSED_BLOCK ? n - at : FUSED_BLOCK;
        int64_t bad = acem_first_nonfinite_raw((const char *)raw + at * es, dt, (size_t)m);
        if (bad >= 0 && (int64_t)at + bad < first) first = (int64_t)at + bad;
    }
    return first == INT64_MAX ? -1 : first;
}

/* Reads elements [from, from+n) of tensor t into dst in the compute precision: straight
 * into dst when the stored type is the compute type, else through raw. Returns the index of
 * the first non-finite value (unless --allow-nonfinite), -1 if none, -2 if the read
 * failed. Touches nothing shared: the fused kernel calls it from several threads. */
static int64_t read_elements(const merge_run *r, const acem_checkpoint *ck, const acem_tensor *t,
                             uint64_t from, uint64_t n, void *dst, void *raw, acem_error *err) {
    size_t es = acem_dtype_size(t->dtype);
    bool direct = t->dtype == r->o->precision, check = !r->o->allow_nonfinite;
    if (acem_checkpoint_read(ck, t, from * es, direct ? dst : raw, n * es, err)) return -2;
    return direct ? (check ? acem_first_nonfinite_raw(dst, t->dtype, n) : -1)
                  : acem_convert_from_raw(raw, t->dtype, dst, r->o->precision, n, check);
}

static int load(merge_run *r, const acem_checkpoint *ck, const acem_tensor *t, uint64_t from,
                uint64_t n, void *dst, acem_error *err) {
    int64_t bad = read_elements(r, ck, t, from, n, dst, r->raw, err);
    if (bad == -2) return -1;
    r->progress.bytes_done += acem_stored_bytes_of(t, n);
    return bad >= 0 ? nonfinite_error(ck, t, from + (uint64_t)bad, err) : 0;
}

/* Appends bytes of the current output tensor. */
static int emit(merge_run *r, const void *bytes, uint64_t n, acem_error *err) {
    return r->gguf ? gguf_writer_write(r->gguf, bytes, n, err)
                   : st_writer_write(r->writer, bytes, n, err);
}

/* Writes n compute-precision values, elements [from, from+n), as the output dtype. */
static int store(merge_run *r, const plan_entry *e, const void *values, uint64_t from, uint64_t n,
                 acem_error *err) {
    const void *bytes = values;
    const acem_dtype fed = plan_fed_dtype(e);
    if (fed != r->o->precision) {
        acem_convert_to_raw(values, r->o->precision, r->raw, fed, n);
        bytes = r->raw;
    }
    int64_t bad = first_nonfinite_output(r, bytes, fed, n);
    if (bad >= 0) return output_nonfinite_error(r, e, from + (uint64_t)bad, err);
    return emit(r, bytes, n * acem_dtype_size(fed), err);
}

/* d -= w0, element by element. */
static void subtract(void *d, const void *w0, uint64_t n, bool f64) {
    if (f64) {
#pragma omp parallel for schedule(static)
        for (uint64_t i = 0; i < n; i++)
            ((double *)d)[i] -= ((const double *)w0)[i];
    } else {
#pragma omp parallel for schedule(static)
        for (uint64_t i = 0; i < n; i++)
            ((float *)d)[i] -= ((const float *)w0)[i];
    }
}

static void method_ctx_for(const merge_run *r, const plan_entry *e, method_ctx *c) {
    const acem_tensor *t = e->base;
    memset(c, 0, sizeof *c);
    c->tensor = e->name;
    c->name_hash = acem_fnv1a64(e->name);
    c->ndim = t->ndim;
    c->rows = t->ndim >= 2 ? t->shape[0] : 1;
    c->cols = t->ndim == 0 ? 1 : t->ndim == 1 ? t->shape[0] : (c->rows ? t->numel / c->rows : 0);
    c->T = r->T;
    c->f64 = r->f64;
    c->threads = r->threads;
    c->seed = r->o->seed;
    c->p = r->tensor_p;
    c->ep = r->expert_p;
    c->n_params = r->method->n_params;
    c->mergekit = r->mergekit;
}

/* The first setting of name that the sources of expert t's model in e's slice give
 * (mergekit's ConfigReader.parameter looks through every source of the model), evaluated
 * for tensor at pos. */
static bool source_setting(const slice_def *sl, const plan_entry *e, int t, const char *name,
                           const char *tensor, double *v) {
    const int input = sl->sources[e->source[t]].input;
    for (int k = 0; k < sl->n_sources; k++) {
        const setting *st =
            sl->sources[k].input == input ? settings_find(&sl->sources[k].params, name) : NULL;
        if (st && setting_eval(st, tensor, e->t, v)) return true;
    }
    return false;
}

/* Parameter i for expert t (-1: the tensor's global value), in mergekit's lookup order
 * (config.py, ConfigReader.parameter): the model's own setting (with slices: its source's,
 * then the slice's), then the top level, then the default; acem's --param flags sit just
 * above the top level (they override the config's top level, not a model's or a slice's
 * own value). Every level is read for the expert's own tensor name when the parameter is a
 * model's, for the output's name when it is global (plan.py's plan_tensor: for_tensor of
 * weight_in or of weight). A setting whose filters all miss the tensor passes the
 * lookup on. Returns whether a level gave the value. */
static bool lookup(const merge_run *r, const plan_entry *e, int t, int i, double *v) {
    const acem_settings *s = r->o->settings;
    const char *name = r->method->params[i].name;
    const char *tensor = t >= 0 ? e->experts[t]->name : e->name;
    const slice_def *sl = s && e->slice >= 0 ? &s->slices[e->slice] : NULL;
    const setting *st;
    if (sl && t >= 0 && source_setting(sl, e, t, name, tensor, v)) return true;
    if (sl && (st = settings_find(&sl->params, name)) && setting_eval(st, tensor, e->t, v))
        return true;
    if (s && !sl && t >= 0 && (st = settings_find(&s->models[t], name)) &&
        setting_eval(st, tensor, e->t, v))
        return true;
    *v = r->params[i];
    if (r->flagged[i]) return true;
    if (s && (st = settings_find(&s->top, name)) && setting_eval(st, tensor, e->t, v)) return true;
    return false;
}

/* The model expert t of e comes from, for messages. */
static const char *expert_model(const merge_run *r, const plan_entry *e, int t) {
    return e->slice >= 0 ? r->o->settings->slices[e->slice].sources[e->source[t]].model
                         : r->o->models[t];
}

/* Every parameter for one tensor: global ones once, per-model ones per expert. mergekit
 * requires each model's weight (merge_methods/generalized_task_arithmetic.py declares it
 * required; the base is not an input there); so does a mergekit config here, and any config
 * for a parameter marked PARAM_CONFIG_REQUIRED (nuslerp's weight). */
static int resolve_params(merge_run *r, const plan_entry *e, acem_error *err) {
    const method_def *m = r->method;
    for (int i = 0; i < m->n_params; i++) {
        const bool per_model = m->params[i].flags & PARAM_PER_MODEL;
        lookup(r, e, -1, i, &r->tensor_p[i]);
        for (int t = 0; t < r->T; t++) {
            double *v = &r->expert_p[(size_t)t * (size_t)m->n_params + (size_t)i];
            bool found = per_model ? lookup(r, e, t, i, v) : (*v = r->tensor_p[i], true);
            bool is_base = m->base_optional && t == 0 && r->T == m->max_models;
            bool required = (r->mergekit && !strcmp(m->params[i].name, "weight")) ||
                            (r->o->settings && m->params[i].flags & PARAM_CONFIG_REQUIRED);
            if (!found && required && !is_base)
                return acem_fail(err,
                                 "tensor \"%s\": no %s for %s (mergekit requires a %s for "
                                 "every model but the base)",
                                 e->name, m->params[i].name, expert_model(r, e, t),
                                 m->params[i].name);
        }
    }
    return 0;
}

static uint64_t chunk_of(const merge_run *r, const plan_entry *e) {
    if (e->remap) return e->base->numel; /* rows come from anywhere in the inputs */
    if (e->action == PLAN_COPY || r->method->elementwise == NULL ||
        !r->method->elementwise(r->params))
        return e->action == PLAN_COPY ? CHUNK_ELEMS : e->base->numel;
    return CHUNK_ELEMS;
}

/* Runs the method on one chunk of deltas: matrix methods see 2-D tensors only (others get
 * the mean), and GPT-2 Conv1D weights are transposed around covariance methods when the
 * input axis is asked for. */
static int run_method(merge_run *r, const plan_entry *e, method_ctx *c, acem_error *err) {
    if (c->numel == 0) return 0;
    if (r->method->matrix && e->base->ndim != 2) {
        deltas_weighted_sum(c, r->deltas, NULL, r->out, 1.0 / r->T);
        return 0;
    }
    const la L = {r->f64, r->threads};
    bool transpose = e->conv1d && r->method->covariance;
    if (transpose) { /* out is free until the method writes it: use it as the scratch */
        for (int t = 0; t < r->T; t++) {
            la_transpose(&L, c->rows, c->cols, r->deltas[t], r->out);
            la_copy(&L, c->numel, r->out, r->deltas[t]);
        }
        uint64_t rows = c->rows;
        c->rows = c->cols;
        c->cols = rows;
    }
    if (r->method->merge(c, r->deltas, r->out, err)) return -1;
    if (transpose) { /* the deltas are spent: deltas[0] is the scratch now */
        la_transpose(&L, c->rows, c->cols, r->out, r->deltas[0]);
        la_copy(&L, c->numel, r->deltas[0], r->out);
    }
    return 0;
}

/* A Gram matrix may be larger than every tensor the raw buffer was sized for. */
static int grow_raw(merge_run *r, uint64_t bytes, acem_error *err) {
    if (bytes <= r->raw_size) return 0;
    unsigned char *raw = realloc(r->raw, bytes);
    if (!raw)
        return acem_fail(err, "out of memory for a %llu-byte conversion buffer",
                         (unsigned long long)bytes);
    r->raw = raw;
    r->raw_size = bytes;
    return 0;
}

/* regmean: every expert's Gram matrix of this tensor (n x n over the covariance axis, as
 * plan_grams checked), or none at all when one is missing. */
static int load_grams(merge_run *r, const plan_entry *e, method_ctx *c, acem_error *err) {
    const acem_tensor *b = e->base;
    c->grams = NULL;
    if (!r->grams || b->ndim != 2) return 0;
    uint64_t n = e->conv1d ? b->shape[0] : b->shape[1];
    for (int t = 0; t < r->T; t++)
        if (!r->grams[t] || !acem_checkpoint_find(r->grams[t], b->name)) return 0;
    for (int t = 0; t < r->T; t++) {
        const acem_tensor *g = acem_checkpoint_find(r->grams[t], b->name);
        free(r->gram_bufs[t]);
        if (!(r->gram_bufs[t] = acem_alloc(n * n, r->csize, "a Gram matrix", err)) ||
            grow_raw(r, g->nbytes, err) || load(r, r->grams[t], g, 0, n * n, r->gram_bufs[t], err))
            return -1;
    }
    c->grams = r->gram_bufs;
    return 0;
}

/* One stored row of tensor t of ck, for tok_remap_rows. */
static int read_row(void *user, const acem_checkpoint *ck, const acem_tensor *t, uint64_t row,
                    void *into, acem_error *err) {
    uint64_t cols = t->shape[1];
    return load(user, ck, t, row * cols, cols, into, err);
}

/* Input k (0: the base, then the experts) of e, elements [from, from + n), into dst; an
 * embedding mapped to the output vocabulary is read row by row through its remap. */
static int load_input(merge_run *r, const plan_entry *e, int k, uint64_t from, uint64_t n,
                      void *dst, acem_error *err) {
    if (e->remap) return tok_remap_rows(&r->tok, e->remap, k, r->f64, dst, read_row, r, err);
    return load(r, k ? e->expert_ck[k - 1] : e->base_ck, k ? e->experts[k - 1] : e->base, from, n,
                dst, err);
}

/* W0 into r->w0 and Dt = Wt - W0 into r->deltas, for elements [from, from + n). */
static int load_deltas(merge_run *r, const plan_entry *e, uint64_t from, uint64_t n,
                       acem_error *err) {
    if (r->method->weights) { /* Wt themselves, the output Delta (method.h) */
        memset(r->w0, 0, n * r->csize);
    } else if (load_input(r, e, 0, from, n, r->w0, err)) {
        return -1;
    }
    for (int t = 0; t < r->T; t++) {
        if (load_input(r, e, t + 1, from, n, r->deltas[t], err)) return -1;
        if (!r->method->weights) subtract(r->deltas[t], r->w0, n, r->f64);
    }
    return 0;
}

/* acc += w (Wt - W0), the difference in the compute precision, the sum in double (w = 1
 * multiplies exactly). */
ACEM_SIMD_CLONES static void accumulate_delta(double *acc, const void *wt, const void *w0, double w,
                                              size_t m, bool f64) {
    if (f64)
        for (size_t i = 0; i < m; i++)
            acc[i] += w * (((const double *)wt)[i] - ((const double *)w0)[i]);
    else
        for (size_t i = 0; i < m; i++)
            acc[i] += w * (double)(((const float *)wt)[i] - ((const float *)w0)[i]);
}

/* out = scale * acc, rounded to the compute precision. */
ACEM_SIMD_CLONES static void store_scaled(void *out, const double *acc, double scale, size_t m,
                                          bool f64) {
    for (size_t i = 0; i < m; i++)
        wr(out, i, acc[i] * scale, f64);
}

/* One block of a linear method, in one thread: Dt = Wt - W0 in the compute precision,
 * Delta = scale * sum_t w_t Dt (summed in double), out = W0 + lambda * Delta as the output
 * dtype: the same arithmetic as load_deltas + deltas_weighted_sum + acem_combine_to_raw.
 * A method of the weights takes W0 = 0 and lambda 1, the base unread. */
static void fused_block(const merge_run *r, const plan_entry *e, uint64_t from, size_t m,
                        double scale, fused_scratch *s, void *out_raw) {
    const bool f64 = r->f64;
    for (int k = 0; k <= r->T; k++) { /* k = 0: the base */
        const acem_checkpoint *ck = k ? e->expert_ck[k - 1] : e->base_ck;
        const acem_tensor *t = k ? e->experts[k - 1] : e->base;
        if (!k && r->method->weights) {
            memset(s->w0, 0, m * r->csize);
            memset(s->acc, 0, m * sizeof *s->acc);
            continue;
        }
        int64_t bad = read_elements(r, ck, t, from, m, k ? s->d : s->w0, s->raw, &s->err);
        if (bad == -2) {
            s->failed = 1;
            return;
        }
        if (bad >= 0 && s->first_bad[k] < 0) s->first_bad[k] = (int64_t)from + bad;
        if (k == 0)
            memset(s->acc, 0, m * sizeof *s->acc);
        else
            accumulate_delta(s->acc, s->d, s->w0, r->weights[k - 1], m, f64);
    }
    store_scaled(s->out, s->acc, scale, m, f64);
    const acem_dtype fed = plan_fed_dtype(e);
    acem_combine_to_raw(s->w0, s->out, r->lambda, r->o->precision, out_raw, fed, m, false);
    int64_t bad = r->o->allow_nonfinite ? -1 : acem_first_nonfinite_raw(out_raw, fed, m);
    if (bad >= 0 && s->first_bad[r->T + 1] < 0) s->first_bad[r->T + 1] = (int64_t)from + bad;
}

/* Linear methods: each chunk is split into blocks shared out among the threads, which read
 * (two threads copy from the page cache faster than one), combine and convert their blocks
 * into the output chunk; the only serial step is handing it to the writer. */
static int merge_linear(merge_run *r, const plan_entry *e, acem_error *err) {
    const acem_tensor *b = e->base;
    method_ctx c;
    method_ctx_for(r, e, &c);
    double scale = r->method->linear_scale(&c, r->weights);
    size_t eo = acem_dtype_size(plan_fed_dtype(e));
    for (uint64_t from = 0; from < b->numel; from += CHUNK_ELEMS) {
        uint64_t n = b->numel - from < CHUNK_ELEMS ? b->numel - from : CHUNK_ELEMS;
        int64_t blocks = (int64_t)((n + FUSED_BLOCK - 1) / FUSED_BLOCK);
        for (int th = 0; th < r->threads; th++) {
            r->scratch[th].failed = 0;
            for (int k = 0; k <= r->T + 1; k++)
                r->scratch[th].first_bad[k] = -1;
        }
#pragma omp parallel for num_threads(r->threads) schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            fused_scratch *s = &r->scratch[omp_get_thread_num()];
            uint64_t at = (uint64_t)blk * FUSED_BLOCK;
            size_t m = n - at < FUSED_BLOCK ? (size_t)(n - at) : FUSED_BLOCK;
            if (!s->failed) fused_block(r, e, from + at, m, scale, s, r->raw + at * eo);
        }
        for (int th = 0; th < r->threads; th++)
            if (r->scratch[th].failed) {
                *err = r->scratch[th].err;
                return -1;
            }
        for (int k = 0; k <= r->T + 1; k++) { /* inputs first, then the output */
            int64_t first = -1;
            for (int th = 0; th < r->threads; th++) {
                int64_t at = r->scratch[th].first_bad[k];
                if (at >= 0 && (first < 0 || at < first)) first = at;
            }
            if (first >= 0 && k > r->T) return output_nonfinite_error(r, e, (uint64_t)first, err);
            if (first >= 0)
                return nonfinite_error(k ? e->expert_ck[k - 1] : e->base_ck,
                                       k ? e->experts[k - 1] : b, (uint64_t)first, err);
        }
        for (int k = 0; k <= r->T; k++)
            r->progress.bytes_done += acem_stored_bytes_of(k ? e->experts[k - 1] : b, n);
        if (emit(r, r->raw, n * eo, err) || check_cancel(r, err)) return -1;
        report_progress(r);
    }
    return 0;
}

static int merge_tensor(merge_run *r, const plan_entry *e, method_info *info, acem_error *err) {
    if (resolve_params(r, e, err)) return -1;
    if (r->method->linear_scale && !e->remap) return merge_linear(r, e, err);
    const acem_tensor *b = e->base;
    method_ctx c;
    method_ctx_for(r, e, &c);
    c.info = info;
    if (r->method->uses_grams && load_grams(r, e, &c, err)) return -1;
    uint64_t chunk = chunk_of(r, e);
    double seconds = 0; /* in the method, for --report and the benchmarks */
    for (uint64_t from = 0; from < b->numel || from == 0; from += chunk) {
        uint64_t n = b->numel - from < chunk ? b->numel - from : chunk;
        if (load_deltas(r, e, from, n, err)) return -1;
        c.numel = n;
        c.offset = from;
        double t0 = acem_now();
        int failed = run_method(r, e, &c, err);
        seconds += acem_now() - t0;
        if (failed) { /* methods do not know file names: add the tensor's */
            char inner[sizeof err->msg];
            snprintf(inner, sizeof inner, "%s", err->msg);
            return acem_fail(err, "tensor \"%s\": %s", e->name, inner);
        }
        /* the deltas are spent: the output bytes go to deltas[0] unless they are wider */
        const acem_dtype fed = plan_fed_dtype(e);
        size_t eo = acem_dtype_size(fed);
        void *bytes = eo <= r->csize ? r->deltas[0] : r->raw;
        acem_combine_to_raw(r->w0, r->out, r->lambda, r->o->precision, bytes, fed, n, true);
        int64_t bad = first_nonfinite_output(r, bytes, fed, n);
        if (bad >= 0) return output_nonfinite_error(r, e, from + (uint64_t)bad, err);
        if (emit(r, bytes, n * eo, err) || check_cancel(r, err)) return -1;
        report_progress(r);
        if (n == 0) break;
    }
    info_add(info, "method_seconds", seconds);
    return 0;
}

/* A GGUF tensor's blocks, unchanged (their scales are still checked for NaN/Inf). */
static int copy_blocks(merge_run *r, const plan_entry *e, acem_error *err) {
    const acem_tensor *b = e->base;
    const uint64_t be = acem_quant_block_elems(b->quant), bb = acem_quant_block_bytes(b->quant);
    for (uint64_t from = 0; from < b->numel; from += CHUNK_ELEMS) {
        uint64_t n = b->numel - from < CHUNK_ELEMS ? b->numel - from : CHUNK_ELEMS;
        if (acem_checkpoint_read_stored(e->base_ck, b, from / be * bb, r->raw, n / be * bb, err))
            return -1;
        r->progress.bytes_done += acem_stored_bytes_of(b, n);
        int64_t bad = r->o->allow_nonfinite
                          ? -1
                          : acem_quant_first_nonfinite(b->quant, r->raw, (size_t)(n / be));
        if (bad >= 0) return nonfinite_error(e->base_ck, b, from + (uint64_t)bad, err);
        if (emit(r, r->raw, n / be * bb, err) || check_cancel(r, err)) return -1;
        report_progress(r);
    }
    return 0;
}

/* Copied tensors pass through as stored bytes, or via the compute type when their type
 * changes. */
static int copy_tensor(merge_run *r, const plan_entry *e, acem_error *err) {
    const acem_tensor *b = e->base;
    if (e->out == ACEM_OUT_KEEP && b->quant != ACEM_QUANT_NONE) return copy_blocks(r, e, err);
    if (e->remap) /* the base's rows in the output vocabulary */
        return load_input(r, e, 0, 0, b->numel, r->w0, err) || store(r, e, r->w0, 0, b->numel, err)
                   ? -1
                   : 0;
    size_t es = acem_dtype_size(b->dtype);
    bool is_float = acem_dtype_is_mergeable(b->dtype);
    for (uint64_t from = 0; from < b->numel; from += CHUNK_ELEMS) {
        uint64_t n = b->numel - from < CHUNK_ELEMS ? b->numel - from : CHUNK_ELEMS;
        int rc;
        if (e->out != ACEM_OUT_KEEP) {
            rc = load(r, e->base_ck, b, from, n, r->w0, err) || store(r, e, r->w0, from, n, err);
        } else { /* bytes pass through unchanged (floats are still checked for NaN/Inf) */
            rc = acem_checkpoint_read(e->base_ck, b, from * es, r->raw, n * es, err);
            r->progress.bytes_done += n * es;
            int64_t bad = !rc && is_float && !r->o->allow_nonfinite
                              ? acem_first_nonfinite_raw(r->raw, b->dtype, n)
                              : -1;
            if (bad >= 0) rc = nonfinite_error(e->base_ck, b, from + (uint64_t)bad, err);
            if (!rc) rc = emit(r, r->raw, n * es, err);
        }
        if (rc || check_cancel(r, err)) return -1;
        report_progress(r);
    }
    return 0;
}

/* The fused kernel's per-thread blocks: about 400 KiB a thread. */
static int alloc_scratch(merge_run *r, acem_error *err) {
    if (!(r->scratch = acem_alloc((size_t)r->threads, sizeof *r->scratch, "scratch", err)))
        return -1;
    for (int th = 0; th < r->threads; th++) {
        fused_scratch *s = &r->scratch[th];
        if (!(s->raw = acem_alloc(FUSED_BLOCK, 8, "scratch", err)) ||
            !(s->w0 = acem_alloc(FUSED_BLOCK, r->csize, "scratch", err)) ||
            !(s->d = acem_alloc(FUSED_BLOCK, r->csize, "scratch", err)) ||
            !(s->out = acem_alloc(FUSED_BLOCK, r->csize, "scratch", err)) ||
            !(s->acc = acem_alloc(FUSED_BLOCK, sizeof *s->acc, "scratch", err)) ||
            !(s->first_bad = acem_alloc((size_t)r->T + 2, sizeof *s->first_bad, "scratch", err)))
            return -1;
    }
    return 0;
}

/* The widest element of the inputs of a merged tensor that are not read straight into a
 * compute buffer (each input is read in its own stored type); 0 when all are. */
static size_t widest_converted_input(const merge_run *r, const plan_entry *e) {
    size_t widest = 0;
    for (int k = 0; k <= r->T; k++) {
        size_t es = acem_dtype_size(k ? e->experts[k - 1]->dtype : e->base->dtype);
        if (es != r->csize && es > widest) widest = es;
    }
    return widest;
}

/* Compute buffers hold one tensor (one chunk when elementwise). The raw buffer holds stored
 * bytes on their way in or out: a chunk of any tensor, and a whole merged tensor only where
 * an input's stored type is not the compute type or the output's is wider; narrower
 * outputs are converted into the spent deltas[0]. */
/* Elements of the largest compute buffer (cap) and bytes of the conversion buffer (raw). */
static void buffer_sizes(const merge_run *r, uint64_t *cap_out, uint64_t *raw_out) {
    uint64_t cap = 1, raw = 8;
    for (size_t i = 0; i < r->plan.n; i++) {
        const plan_entry *e = &r->plan.entries[i];
        uint64_t c = chunk_of(r, e), n = e->base->numel, need = c < n ? c : n;
        uint64_t chunk = n < CHUNK_ELEMS || e->remap ? n : CHUNK_ELEMS;
        size_t es = acem_dtype_size(e->base->dtype), eo = acem_dtype_size(plan_fed_dtype(e));
        uint64_t bytes = chunk * (es > eo ? es : eo);
        size_t ei = e->action == PLAN_MERGE ? widest_converted_input(r, e) : 0;
        if (need * ei > bytes) bytes = need * ei;
        if (e->action == PLAN_MERGE && eo > r->csize && need * eo > bytes) bytes = need * eo;
        if (need > cap) cap = need;
        if (bytes > raw) raw = bytes;
    }
    *cap_out = cap;
    *raw_out = raw;
}

/* What the buffers take ((T + 2) compute buffers, the conversion buffer, the fused kernel's
 * scratch), and the largest n of the n x n workspaces of covariance and spectral methods:
 * the memory bound, known before anything is allocated. */
static void size_buffers(const merge_run *r, acem_merge_summary *s) {
    uint64_t cap, raw, n = 0;
    buffer_sizes(r, &cap, &raw);
    s->buffer_bytes = ((uint64_t)r->T + 2) * cap * r->csize + raw;
    if (r->method->linear_scale)
        s->buffer_bytes += (uint64_t)r->threads * FUSED_BLOCK * (8 + 3 * r->csize + 8);
    for (size_t i = 0; r->method->matrix && i < r->plan.n; i++) {
        const plan_entry *e = &r->plan.entries[i];
        if (e->action == PLAN_MERGE && e->base->ndim == 2) {
            uint64_t cols = e->conv1d ? e->base->shape[0] : e->base->shape[1];
            n = cols > n ? cols : n;
        }
    }
    s->workspace_n = n;
}

static int alloc_buffers(merge_run *r, acem_error *err) {
    uint64_t cap, raw;
    buffer_sizes(r, &cap, &raw);
    if (!(r->deltas = acem_alloc((size_t)r->T, sizeof(void *), "delta buffers", err))) return -1;
    for (int t = 0; t < r->T; t++)
        if (!(r->deltas[t] = acem_alloc(cap, r->csize, "a delta buffer", err))) return -1;
    if (r->method->linear_scale && alloc_scratch(r, err)) return -1;
    return (r->w0 = acem_alloc(cap, r->csize, "the base buffer", err)) &&
                   (r->out = acem_alloc(cap, r->csize, "the output buffer", err)) &&
                   (r->raw = acem_alloc(r->raw_size = raw, 1, "the conversion buffer", err))
               ? 0
               : -1;
}

static void free_scratch(merge_run *r) {
    for (int th = 0; r->scratch && th < r->threads; th++) {
        fused_scratch *s = &r->scratch[th];
        free(s->raw);
        free(s->w0);
        free(s->d);
        free(s->out);
        free(s->acc);
        free(s->first_bad);
    }
    free(r->scratch);
}

static void free_run(merge_run *r) {
    free_scratch(r);
    if (r->deltas)
        for (int t = 0; t < r->T; t++)
            free(r->deltas[t]);
    free(r->deltas);
    free(r->w0);
    free(r->out);
    free(r->raw);
    st_writer_free(r->writer);
    gguf_writer_free(r->gguf);
    plan_free(&r->plan);
    for (int t = 0; t < r->n_inputs; t++) {
        if (r->experts) acem_checkpoint_close(r->experts[t]);
        if (r->grams) acem_checkpoint_close(r->grams[t]);
        if (r->gram_bufs) free(r->gram_bufs[t]);
    }
    free(r->experts);
    free(r->expert_p);
    free(r->weights);
    free(r->grams);
    free(r->gram_bufs);
    acem_checkpoint_close(r->base);
    cJSON_Delete(r->report_tensors);
    acem_warnings_free(&r->warnings);
    free(r->config_yaml);
    for (size_t i = 0; i < r->n_aux; i++)
        free(r->aux[i]);
    free(r->aux);
    tok_plan_free(&r->tok);
}

static void set_compute(merge_run *r) {
    r->f64 = r->o->precision == ACEM_DT_F64;
    r->csize = r->f64 ? 8 : 4;
    r->threads = r->o->threads > 0 ? r->o->threads : omp_get_num_procs();
    la_set_threads(r->threads);
    r->T = r->n_inputs = r->o->n_models;
}

/* The run's values, for the summary and as every tensor's fallback: the --param flags
 * (marked, as they outrank the config's top level) over the config's plain top-level
 * numbers over the defaults. */
static void run_wide_params(merge_run *r) {
    const method_def *m = r->method;
    for (int g = 0; g < r->o->n_params; g++)
        for (int i = 0; i < m->n_params; i++)
            r->flagged[i] |= !strcmp(m->params[i].name, r->o->params[g].key);
    const setting_list *top = r->o->settings ? &r->o->settings->top : NULL;
    for (int i = 0; top && i < m->n_params; i++) {
        const setting *st = settings_find(top, m->params[i].name);
        if (!r->flagged[i] && st && st->n_cond == 1 && !st->cond[0].filter && st->cond[0].n == 1)
            r->params[i] = st->cond[0].v[0];
    }
}

static int check_options(merge_run *r, acem_merge_summary *s, acem_error *err) {
    const acem_merge_options *o = r->o;
    if (!o->base || !o->out || !o->method)
        return acem_fail(err, "a base model, an output path and a method are required");
    if (acem_check_options(o, err)) return -1;
    r->method = method_find(o->method);
    r->mergekit = o->settings && o->settings->mergekit;
    if (method_resolve_params(r->method, o->params, o->n_params, r->mergekit, r->params, err))
        return -1;
    run_wide_params(r);
    char desc[384];
    method_describe_params(r->method, r->params, desc, sizeof desc);
    r->lambda = r->method->weights || r->method->no_lambda || isnan(o->lambda)
                    ? method_default_lambda(r->method, r->mergekit)
                    : o->lambda;
    set_compute(r);
    if (plan_width(o, &r->T, err)) return -1;
    size_t n = (size_t)r->T * (size_t)r->method->n_params + 1;
    if (!(r->expert_p = acem_alloc(n, sizeof *r->expert_p, "parameters", err)) ||
        !(r->weights = acem_alloc((size_t)r->T, sizeof *r->weights, "weights", err)))
        return -1;
    snprintf(s->method, sizeof s->method, "%s", r->method->name);
    char lambda[32];
    snprintf(s->params, sizeof s->params, "lambda=%s%s%s",
             acem_format_double(r->lambda, lambda, sizeof lambda), desc[0] ? " " : "", desc);
    if (r->method->random) {
        size_t k = strlen(s->params);
        snprintf(s->params + k, sizeof s->params - k, " seed=%llu", (unsigned long long)o->seed);
    }
    return 0;
}

/* A checkpoint's identity: its first weights file and its adapter directory (two adapters
 * on one model are two experts), by device and inode; ino 0 when unknown. */
typedef struct ck_identity {
    dev_t dev, adapter_dev;
    ino_t ino, adapter_ino;
} ck_identity;

static ck_identity identity_of(const acem_checkpoint *ck) {
    ck_identity id = {0};
    struct stat st;
    const char *adapter = acem_checkpoint_adapter(ck);
    if (stat(acem_checkpoint_file_path(ck, 0), &st) == 0) {
        id.dev = st.st_dev;
        id.ino = st.st_ino;
    }
    if (adapter && stat(adapter, &st) == 0) {
        id.adapter_dev = st.st_dev;
        id.adapter_ino = st.st_ino;
    }
    return id;
}

static bool same_identity(const ck_identity *a, const ck_identity *b) {
    return a->ino && a->dev == b->dev && a->ino == b->ino && a->adapter_dev == b->adapter_dev &&
           a->adapter_ino == b->adapter_ino;
}

/* The same expert given twice counts twice in every mean: possible as a weighting, far more
 * often a slip. Checkpoints are compared by identity_of, so that another spelling of a path
 * (or a directory and its model.safetensors) is seen. */
static int warn_repeated_experts(merge_run *r, acem_error *err) {
    ck_identity *id = acem_alloc((size_t)r->n_inputs, sizeof *id, "file identities", err);
    if (!id) return -1;
    const ck_identity base = identity_of(r->base);
    int rc = 0;
    for (int t = 0; t < r->n_inputs && !rc; t++) {
        id[t] = identity_of(r->experts[t]);
        if (!r->method->weights && same_identity(&id[t], &base) &&
            (rc = acem_warn(&r->warnings, err,
                            "%s (expert %d) is the base model: its delta is zero, yet it "
                            "counts as an expert (a mergekit config lists the base under "
                            "models; acem takes every entry there as an expert)",
                            r->o->models[t], t + 1)))
            break;
        for (int u = 0; u < t; u++)
            if (same_identity(&id[t], &id[u])) {
                rc = acem_warn(&r->warnings, err,
                               "%s is given twice (experts %d and %d, as %s): its delta counts "
                               "twice in the merge",
                               r->o->models[t], u + 1, t + 1, r->o->models[u]);
                break;
            }
    }
    free(id);
    return rc;
}

/* Records the axis the covariances run over; --covariance-axis input acts only on the
 * GPT-2 Conv1D weights of a covariance method, and saying nothing would pass a no-op off
 * as a choice. */
static int axis_used(merge_run *r, acem_error *err) {
    r->axis = !r->method->covariance ? "none" : r->plan.n_conv1d ? "input" : "stored";
    if (!r->o->covariance_axis_input || strcmp(r->axis, "input") == 0) return 0;
    if (!r->method->covariance)
        return acem_warn(&r->warnings, err,
                         "--covariance-axis input changes nothing: %s builds no covariances",
                         r->method->name);
    return acem_warn(&r->warnings, err,
                     "--covariance-axis input changes nothing: it transposes GPT-2 Conv1D "
                     "weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; recognised with "
                     "--preset gpt2 or a base config.json of model_type gpt2), and no merged "
                     "tensor is one");
}

/* A Gram matrix must be n x n over the axis the covariances run over. One of the other
 * axis' size is the usual slip of a Conv1D layer (stored in x out): say which flag fixes it. */
static int check_gram(const merge_run *r, const plan_entry *e, int t, const acem_tensor *g,
                      acem_error *err) {
    const acem_tensor *b = e->base;
    uint64_t n = e->conv1d ? b->shape[0] : b->shape[1],
             other = e->conv1d ? b->shape[1] : b->shape[0];
    bool square = g->ndim == 2 && g->shape[0] == g->shape[1];
    if (square && g->shape[0] == n && acem_dtype_is_mergeable(g->dtype)) return 0;
    const char *path = acem_checkpoint_path(r->grams[t]);
    if (square && g->shape[0] == other)
        return acem_fail(
            err,
            "%s: Gram matrix \"%s\" is %llu x %llu, the size of the weight's other "
            "axis: with --covariance-axis %s it must be %llu x %llu (try "
            "--covariance-axis %s)",
            path, b->name, (unsigned long long)other, (unsigned long long)other,
            e->conv1d ? "input" : "stored", (unsigned long long)n, (unsigned long long)n,
            e->conv1d ? "stored" : "input, with --preset gpt2 for GPT-2 Conv1D weights");
    return acem_fail(err, "%s: Gram matrix \"%s\" must be a float %llu x %llu matrix", path,
                     b->name, (unsigned long long)n, (unsigned long long)n);
}

/* regmean, before anything is read: every Gram matrix given has the shape of the covariance
 * axis, and the 2-D tensors that lack one in some expert (merged as the average of their
 * deltas) are counted and named. A square Conv1D weight passes the shape check on either
 * axis: when it is not transposed, its Gram matrices are read over its outputs, said too. */
static int plan_grams(merge_run *r, acem_error *err) {
    const char *lacking = NULL, *square = NULL;
    size_t n_square = 0;
    int lacking_in = 0;
    for (size_t i = 0; r->method->uses_grams && i < r->plan.n; i++) {
        const plan_entry *e = &r->plan.entries[i];
        if (e->action != PLAN_MERGE || e->base->ndim != 2) continue;
        bool all = true;
        for (int t = 0; t < r->T; t++) {
            const acem_tensor *g =
                r->grams[t] ? acem_checkpoint_find(r->grams[t], e->base->name) : NULL;
            if (g && check_gram(r, e, t, g, err)) return -1;
            if (!g && all && !lacking) lacking_in = t;
            all &= g != NULL;
        }
        r->gram_tensors++;
        if (!all && !r->gram_fallbacks++) lacking = e->base->name;
        bool sq = e->base->shape[0] == e->base->shape[1];
        if (all && sq && !e->conv1d && plan_is_conv1d_name(e->base->name) && !n_square++)
            square = e->base->name;
    }
    if (lacking && acem_warn(&r->warnings, err,
                             "regmean: %zu of %zu 2-D tensors lack a Gram matrix in some expert "
                             "(first: \"%s\", none for %s) and are merged as the average of "
                             "their deltas",
                             r->gram_fallbacks, r->gram_tensors, lacking, r->o->models[lacking_in]))
        return -1;
    if (square)
        return acem_warn(&r->warnings, err,
                         "regmean: %zu square GPT-2 Conv1D weight%s (first: \"%s\") pass the Gram "
                         "shape check on either axis and %s read over the stored columns, the "
                         "layer's outputs; if the Gram matrices are over its inputs, pass "
                         "--covariance-axis input with --preset gpt2",
                         n_square, n_square == 1 ? "" : "s", square, n_square == 1 ? "is" : "are");
    return 0;
}

/* A config's parameter that the method never reads: mergekit ignores it silently (its
 * methods read only the parameters they declare), acem says so. */
static int warn_unread(merge_run *r, const setting_list *l, const char *model, acem_error *err) {
    for (int k = 0; k < l->n; k++) {
        const char *name = l->s[k].name;
        int i = 0;
        while (i < r->method->n_params && strcmp(r->method->params[i].name, name) != 0)
            i++;
        bool global = i < r->method->n_params && !(r->method->params[i].flags & PARAM_PER_MODEL);
        if (i < r->method->n_params && !(model && global)) continue;
        if (acem_warn(&r->warnings, err, "parameter \"%s\"%s%s is not read by %s%s; ignored", name,
                      model ? " of " : "", model ? model : "", r->method->name,
                      global ? " per model (only at the top level)" : ""))
            return -1;
    }
    return 0;
}

/* Before anything is read: unread parameters named, and every merged tensor's parameters
 * resolved once, so that a missing weight stops the merge before it starts. */
static int check_settings(merge_run *r, acem_error *err) {
    const acem_settings *s = r->o->settings;
    if (!r->expert_p) return 0; /* acem_stats: no method runs */
    if ((r->method->weights || r->method->no_lambda) && !isnan(r->o->lambda) &&
        acem_warn(&r->warnings, err, "%s does not read lambda (%s); ignored", r->method->name,
                  r->method->weights ? "it merges the models' weights" : "nor does mergekit's"))
        return -1;
    /* On the command line a method of the weights merges the --models alone; a --base given
     * there only names the tensors (with_reference), which a user of nuslerp's or slerp's
     * base would not expect. */
    if (r->method->weights && !s && r->o->n_models && r->o->base != r->o->models[0] &&
        acem_warn(&r->warnings, err,
                  "%s merges the --model weights only: --base %s is not merged (it names the "
                  "tensors and gives the other files); give it as a --model%s",
                  r->method->name, r->o->base,
                  r->method->base_first ? ", the first, to make it the base" : ""))
        return -1;
    if (s && warn_unread(r, &s->top, NULL, err)) return -1;
    for (int t = 0; s && t < s->n_models; t++)
        if (warn_unread(r, &s->models[t], r->o->models[t], err)) return -1;
    for (int i = 0; s && i < s->n_slices; i++) {
        if (warn_unread(r, &s->slices[i].params, NULL, err)) return -1;
        for (int k = 0; k < s->slices[i].n_sources; k++)
            if (warn_unread(r, &s->slices[i].sources[k].params, s->slices[i].sources[k].model, err))
                return -1;
    }
    for (size_t i = 0; i < r->plan.n; i++)
        if (r->plan.entries[i].action == PLAN_MERGE && resolve_params(r, &r->plan.entries[i], err))
            return -1;
    return 0;
}

/* What the config reader found accepted but probably not meant (keys mergekit ignores),
 * through the run's one channel of warnings. */
static int warn_config(merge_run *r, acem_error *err) {
    const acem_settings *s = r->o->settings;
    for (int i = 0; s && i < s->n_notes; i++)
        if (acem_warn(&r->warnings, err, "%s", s->notes[i])) return -1;
    return 0;
}

static int open_inputs(merge_run *r, acem_error *err) {
    const acem_merge_options *o = r->o;
    if (acem_checkpoint_open(o->base, &r->base, err)) return -1;
    if (!(r->experts = acem_alloc((size_t)r->n_inputs, sizeof *r->experts, "experts", err)))
        return -1;
    for (int t = 0; t < r->n_inputs; t++)
        if (acem_checkpoint_open(o->models[t], &r->experts[t], err)) return -1;
    if (r->method->uses_grams) {
        if (!(r->grams = acem_alloc((size_t)r->n_inputs, sizeof *r->grams, "Gram files", err)) ||
            !(r->gram_bufs =
                  acem_alloc((size_t)r->n_inputs, sizeof *r->gram_bufs, "Gram buffers", err)))
            return -1;
        for (int t = 0; t < r->T; t++)
            if (o->grams && o->grams[t] && acem_checkpoint_open(o->grams[t], &r->grams[t], err))
                return -1;
    }
    if (acem_checkpoint_count(r->base) == 0)
        return acem_fail(err, "%s: holds no tensors; nothing to merge", o->base);
    r->warnings.o = o;
    const acem_checkpoint *const *experts = (const acem_checkpoint *const *)r->experts;
    return warn_config(r, err) || warn_repeated_experts(r, err) ||
                   tok_plan_build(&r->tok, o, r->has_base, &r->warnings, err) ||
                   plan_build(&r->plan, r->base, experts, o, &r->warnings, err) ||
                   tok_plan_apply(&r->tok, &r->plan, err) || axis_used(r, err) ||
                   plan_grams(r, err) || check_settings(r, err)
               ? -1
               : 0;
}

/* Every input, which no output may be: the checkpoints with all their files, the Gram
 * files, the config. */
static int register_inputs(const merge_run *r, output_set *outs, acem_error *err) {
    if (output_set_add_checkpoint(outs, r->base, err)) return -1;
    for (int t = 0; t < r->n_inputs; t++)
        if (output_set_add_checkpoint(outs, r->experts[t], err) ||
            (r->grams && r->grams[t] && output_set_add_checkpoint(outs, r->grams[t], err)))
            return -1;
    return r->o->config_path ? output_set_add_input(outs, r->o->config_path, err) : 0;
}

/* An auxiliary file of the base directory: counted; a link out of the model and a
 * subdirectory, which are not copied, named. */
static int note_aux(void *user, const char *path, output_aux_kind kind, acem_error *err) {
    merge_run *r = user;
    if (kind == OUTPUT_AUX_OUTSIDE)
        return acem_warn(&r->warnings, err,
                         "%s: a link that leads out of the model directory; not copied", path);
    if (kind == OUTPUT_AUX_SUBDIR)
        return acem_warn(&r->warnings, err,
                         "%s: a subdirectory of the base; not copied (acem copies the base "
                         "directory's files, not its subdirectories)",
                         path);
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char **aux = realloc(r->aux, (r->n_aux + 1) * sizeof *aux);
    if (aux) r->aux = aux;
    if (!aux || !(aux[r->n_aux] = strdup(name))) return acem_fail(err, "out of memory");
    r->n_aux++;
    return 0;
}

/* A GGUF base's key-values (architecture, hyperparameters, tokenizer) have no place in
 * safetensors: the output loses them, which is said rather than done silently. */
static int warn_lost_key_values(merge_run *r, acem_error *err) {
    const st_header *kv = acem_checkpoint_gguf(r->base);
    if (!kv || !kv->n_meta || output_is_gguf(r->o->out)) return 0;
    return acem_warn(&r->warnings, err,
                     "%s: its %zu GGUF key-values (architecture, tokenizer, ...) are not kept in "
                     "a safetensors output",
                     r->o->base, kv->n_meta);
}

/* Pre-flight: the model's output and the report are checked and their temporaries made
 * before any tensor is read, so that a bad path fails in a second, not after the merge
 * (a dry run checks the same rules and makes nothing). */
static int begin_outputs(merge_run *r, output_set *outs, output **model, output **report,
                         acem_error *err) {
    output_kind kind;
    *report = NULL;
    const bool dry = r->o->dry_run;
    return register_inputs(r, outs, err) || output_model_kind(r->o->out, &kind, err) ||
                   warn_lost_key_values(r, err) ||
                   output_begin(outs, r->o->out, kind, r->o->force, dry, model, err) ||
                   (r->o->report_path && output_begin(outs, r->o->report_path, OUTPUT_FILE,
                                                      r->o->force, dry, report, err)) ||
                   output_copy_aux_files(*model, r->o->base, tok_skipped_aux(&r->tok, r->o->base),
                                         true, note_aux, r, err) ||
                   tok_write_files(&r->tok, *model, r->o->base, true, err)
               ? -1
               : 0;
}

/* --max-shard-size, or by default the base's own sharding: a sharded base gives shards of
 * at most its largest shard (the same count when the stored types do not change). */
static uint64_t shard_size(const merge_run *r) {
    uint64_t largest = 0;
    if (r->o->max_shard_size || acem_checkpoint_file_count(r->base) < 2)
        return r->o->max_shard_size;
    for (size_t f = 0; f < acem_checkpoint_file_count(r->base); f++) {
        struct stat st;
        if (stat(acem_checkpoint_file_path(r->base, (int)f), &st) == 0 &&
            (uint64_t)st.st_size > largest)
            largest = (uint64_t)st.st_size;
    }
    return largest;
}

/* The output's tensors: the plan's, then those the Hugging Face conversion generates. */
static size_t out_count(const merge_run *r) {
    return r->plan.n + (r->plan.hf ? r->plan.hf->n_gen : 0);
}

/* The output's tensors as the writer takes them: names, shapes and each one's type (and, for
 * a Hugging Face base written as GGUF, llama.cpp's names, shapes and layouts, and the
 * generated tensors, F32 as the conversion computed them). */
static void out_tensors(const merge_run *r, st_out_tensor *tensors) {
    const hf_gguf *hf = r->plan.hf;
    for (size_t i = r->plan.n; i < out_count(r); i++) {
        const hf_generated *g = &hf->gen[i - r->plan.n];
        tensors[i] = (st_out_tensor){g->name, 1, g->shape, ACEM_OUT_F32, NULL, OUT_AS_FED, 0};
    }
    for (size_t i = 0; i < r->plan.n; i++) {
        const plan_entry *e = &r->plan.entries[i];
        const acem_tensor *as = hf ? &hf->view[i] : e->base;
        tensors[i] = (st_out_tensor){hf ? as->name : e->name,
                                     as->ndim,
                                     as->shape,
                                     e->out,
                                     e->base,
                                     hf ? hf->layout[i] : OUT_AS_FED,
                                     hf ? hf->n_head[i] : 0};
    }
}

static int open_writer(merge_run *r, const output *out, const acem_merge_summary *s,
                       st_out_tensor *tensors, acem_error *err) {
    /* regmean's fallbacks last: present only for it */
    char fallbacks[96];
    snprintf(fallbacks, sizeof fallbacks, "%zu of %zu 2-D tensors merged as the average",
             r->gram_fallbacks, r->gram_tensors);
    const acem_param meta[] = {
        {"format", "pt"},
        {"acem_version", ACEM_VERSION},
        {"acem_method", s->method},
        {"acem_params", s->params},
        {"acem_covariance_axis", s->covariance_axis},
        {"acem_config", r->config_yaml},
        {"acem_gram_fallbacks", fallbacks},
    };
    const acem_param gguf_meta[] = {
        {"version", ACEM_VERSION},  {"method", s->method},
        {"params", s->params},      {"covariance_axis", s->covariance_axis},
        {"config", r->config_yaml}, {"gram_fallbacks", fallbacks}};
    size_t grams = r->method->uses_grams ? 1 : 0;
    if (output_is_gguf(out->final_path))
        return gguf_writer_open(out->tmp_path, tensors, out_count(r),
                                r->plan.hf ? &r->plan.hf->kv : acem_checkpoint_gguf(r->base),
                                r->plan.llama_ftype ? (int64_t)r->plan.llama_ftype : -1, gguf_meta,
                                5 + grams, &r->gguf, err);
    bool file = out->kind == OUTPUT_FILE;
    return st_writer_open(file ? NULL : out->tmp_path, file ? out->tmp_path : NULL, tensors,
                          r->plan.n, file ? 0 : shard_size(r), meta, 6 + grams, &r->writer, err);
}

/* The tensors the conversion generates follow the plan's, their values as computed (the
 * writer stores F32 as fed; plan.hf is set for a GGUF output only). */
static int write_generated(merge_run *r, acem_error *err) {
    for (size_t i = 0; r->plan.hf && i < r->plan.hf->n_gen; i++) {
        const hf_generated *g = &r->plan.hf->gen[i];
        if (gguf_writer_write(r->gguf, g->data, g->shape[0] * sizeof *g->data, err)) return -1;
    }
    return 0;
}

static int finish_writer(merge_run *r, acem_error *err) {
    return r->gguf ? gguf_writer_finish(r->gguf, err) : st_writer_finish(r->writer, err);
}

/* Before the output is committed it is read back as any reader would (every header rule
 * checked) and must hold exactly the tensors the plan declared and the conversion generated,
 * each with its name, shape and stored type. */
static int verify_output(const merge_run *r, const output *out, const st_out_tensor *tensors,
                         acem_error *err) {
    acem_checkpoint *ck = NULL;
    if (acem_checkpoint_open(out->tmp_path, &ck, err)) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err->msg);
        return acem_fail(err,
                         "internal error: the output does not read back (%s); nothing was "
                         "committed",
                         inner);
    }
    size_t n_written = 0;
    for (size_t i = 0; i < out_count(r); i++)
        n_written += tensors[i].layout != OUT_DROPPED;
    int rc = acem_checkpoint_count(ck) == n_written
                 ? 0
                 : acem_fail(err,
                             "%s: internal error: the output holds %zu tensors, not %zu; "
                             "nothing was committed",
                             r->o->out, acem_checkpoint_count(ck), n_written);
    const bool gguf = output_is_gguf(out->final_path);
    for (size_t i = 0; i < out_count(r) && !rc; i++) {
        const st_out_tensor *want = &tensors[i];
        if (want->layout == OUT_DROPPED) continue;
        const acem_tensor *got = acem_checkpoint_find(ck, want->name);
        /* GGUF has no 0-D tensors: a scalar is stored as [1], as llama.cpp's converter does */
        static const uint64_t one[1] = {1};
        const bool scalar = gguf && want->ndim == 0;
        const int ndim = scalar ? 1 : want->ndim;
        const uint64_t *shape = scalar ? one : want->shape;
        rc = got && got->ndim == ndim &&
                     !memcmp(got->shape, shape, sizeof *got->shape * (size_t)got->ndim) &&
                     got->dtype == out_tensor_dtype(want) && got->quant == out_tensor_quant(want)
                 ? 0
                 : acem_fail(err,
                             "%s: internal error: tensor \"%s\" does not read back as "
                             "written; nothing was committed",
                             r->o->out, want->name);
    }
    acem_checkpoint_close(ck);
    return rc;
}

static void report_add(merge_run *r, const plan_entry *e, const method_info *info) {
    if (!r->report_tensors) return;
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "name", e->name);
    cJSON_AddStringToObject(t, "action", e->action == PLAN_MERGE ? "merged" : "copied");
    if (e->reason) cJSON_AddStringToObject(t, "reason", e->reason);
    if (info->branch) cJSON_AddStringToObject(t, "branch", info->branch);
    for (int i = 0; i < info->n; i++)
        if (isfinite(info->value[i]))
            cJSON_AddNumberToObject(t, info->key[i], info->value[i]);
        else
            cJSON_AddStringToObject(t, info->key[i], isnan(info->value[i]) ? "nan" : "inf");
    if (info->warning) cJSON_AddStringToObject(t, "warning", info->warning);
    cJSON_AddItemToArray(r->report_tensors, t);
}

/* The report is small: built whole, then written through its output (claimed at the
 * start, so that its path was checked before the merge). */
static int write_report(merge_run *r, const acem_merge_summary *s, output *report,
                        acem_error *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "acem_version", ACEM_VERSION);
    cJSON_AddStringToObject(root, "method", s->method);
    cJSON_AddStringToObject(root, "params", s->params);
    cJSON_AddStringToObject(root, "covariance_axis", s->covariance_axis);
    if (r->method->uses_grams)
        cJSON_AddNumberToObject(root, "gram_fallbacks", (double)s->gram_fallbacks);
    cJSON *warnings = cJSON_AddArrayToObject(root, "warnings");
    for (size_t i = 0; i < r->warnings.n; i++)
        cJSON_AddItemToArray(warnings, cJSON_CreateString(r->warnings.msgs[i]));
    cJSON *extras = cJSON_AddArrayToObject(root, "not_in_base"); /* never merged */
    for (size_t i = 0; i < r->plan.n_extras; i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "model", r->o->models[r->plan.extras[i].model]);
        cJSON_AddStringToObject(x, "tensor", r->plan.extras[i].tensor->name);
        cJSON_AddItemToArray(extras, x);
    }
    cJSON_AddItemToObject(root, "tensors", r->report_tensors);
    r->report_tensors = NULL;
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    int rc = -1;
    if (!json) {
        acem_fail(err, "out of memory writing the report");
    } else {
        size_t n = strlen(json);
        json[n] = '\n'; /* cJSON's terminator becomes the final newline */
        rc = output_write_whole(report, json, n + 1, err);
    }
    free(json);
    return rc;
}

static int run_plan(merge_run *r, acem_merge_summary *s, acem_error *err) {
    r->progress.tensors_total = r->plan.n;
    r->progress.bytes_total = r->plan.bytes_to_read;
    r->progress.phase = ACEM_PHASE_MERGE;
    report_progress(r); /* before the first tensor, which may take long */
    for (size_t i = 0; i < r->plan.n; i++) {
        const plan_entry *e = &r->plan.entries[i];
        r->progress.tensor = e->name;
        method_info info = {0};
        if (e->action == PLAN_MERGE ? merge_tensor(r, e, &info, err) : copy_tensor(r, e, err))
            return -1;
        if (info.warning && s->warnings++ == 0)
            snprintf(s->first_warning, sizeof s->first_warning, "%s: %s", e->name, info.warning);
        if (e->action == PLAN_MERGE)
            s->tensors_merged++;
        else
            s->tensors_copied++;
        report_add(r, e, &info);
        r->progress.tensors_done = i + 1;
        report_progress(r);
    }
    r->progress.phase = ACEM_PHASE_DONE;
    report_progress(r);
    return 0;
}

/* A method of the weights needs no base: the first model is the reference that names the
 * tensors, gives their shapes and the directory's other files (method.h). */
static const acem_merge_options *with_reference(const acem_merge_options *o,
                                                acem_merge_options *copy) {
    if (o->base || !o->method || !acem_method_merges_weights(o->method) || o->n_models < 1)
        return o;
    *copy = *o;
    copy->base = o->models[0];
    return copy;
}

/* The models' references (Hugging Face ids, MODEL+ADAPTER: refs.c) as the local paths they
 * name, for every use of a model's path after this (its files, the base's directory, the
 * card). texts owns them. */
typedef struct resolved_refs {
    char **texts;
    const char **models;
    int n;
} resolved_refs;

static void refs_free(resolved_refs *refs) {
    for (int i = 0; i < refs->n; i++)
        free(refs->texts[i]);
    free(refs->texts);
    free(refs->models);
}

static char *resolved_text(const char *ref, acem_error *err) {
    acem_ref r;
    if (acem_ref_resolve(ref, NULL, &r, err)) return NULL;
    char *text = acem_ref_text(&r, err);
    acem_ref_free(&r);
    return text;
}

static int resolve_refs(const acem_merge_options *o, acem_merge_options *copy, resolved_refs *refs,
                        acem_error *err) {
    *copy = *o;
    *refs = (resolved_refs){0};
    size_t n = (size_t)(o->n_models > 0 ? o->n_models : 0) + 1;
    if (!(refs->texts = acem_alloc(n, sizeof *refs->texts, "model paths", err)) ||
        !(refs->models = acem_alloc(n, sizeof *refs->models, "model paths", err)))
        return -1;
    for (int t = 0; t < o->n_models; t++) {
        if (!(refs->texts[refs->n] = resolved_text(o->models[t], err))) return -1;
        refs->models[t] = refs->texts[refs->n++];
    }
    if (o->base && !(copy->base = refs->texts[refs->n++] = resolved_text(o->base, err))) return -1;
    copy->models = refs->models;
    return 0;
}

/* What the merge merged, for the summary line: the experts of a method of deltas (the base
 * is not one), every model of a method of the weights, or with slices the output's layers
 * and the distinct models the slices read (the base counted when a slice reads it). */
static void describe_merged(const merge_run *r, acem_merge_summary *s) {
    const acem_settings *st = r->o->settings;
    int n = r->o->n_models;
    if (st && st->n_slices) {
        bool base = false;
        for (int i = 0; i < st->n_slices; i++)
            for (int k = 0; k < st->slices[i].n_sources; k++)
                base |= st->slices[i].sources[k].input < 0;
        n += base;
        snprintf(s->merged, sizeof s->merged, "%d slice%s of %d model%s into %ld layer%s",
                 st->n_slices, st->n_slices == 1 ? "" : "s", n, n == 1 ? "" : "s", r->plan.n_layers,
                 r->plan.n_layers == 1 ? "" : "s");
        return;
    }
    const char *what = r->method->weights ? "model" : "expert";
    snprintf(s->merged, sizeof s->merged, "%d %s%s", n, what, n == 1 ? "" : "s");
}

int acem_merge(const acem_merge_options *o, acem_merge_summary *s, acem_error *err) {
    double t0 = acem_now();
    acem_merge_options resolved, reference;
    resolved_refs refs;
    acem_merge_summary local;
    if (!s) s = &local;
    memset(s, 0, sizeof *s);
    if (resolve_refs(o, &resolved, &refs, err)) {
        refs_free(&refs);
        return -1;
    }
    const bool has_base = resolved.base != NULL;
    o = with_reference(&resolved, &reference);
    merge_run r = {.o = o, .has_base = has_base};
    output_set outs = {0};
    output *model = NULL, *report = NULL;
    st_out_tensor *tensors = NULL;
    int rc = -1;
    if (check_options(&r, s, err) || open_inputs(&r, err) ||
        begin_outputs(&r, &outs, &model, &report, err))
        goto done;
    snprintf(s->covariance_axis, sizeof s->covariance_axis, "%s", r.axis);
    describe_merged(&r, s);
    s->gram_fallbacks = r.gram_fallbacks;
    s->input_warnings = r.warnings.n;
    size_buffers(&r, s);
    if (!(tensors = acem_alloc(out_count(&r), sizeof *tensors, "output descriptors", err)))
        goto done;
    out_tensors(&r, tensors);
    if (o->dry_run) {
        const dryrun_facts f = {
            o,           &r.plan,        tensors,          out_count(&r),
            model->kind, shard_size(&r), r.method->matrix, (const char *const *)r.aux,
            r.n_aux};
        rc = dryrun_report(&f, s, err);
        goto done;
    }
    if (alloc_buffers(&r, err)) goto done;
    if (o->report_path) r.report_tensors = cJSON_CreateArray();
    if (!(r.config_yaml = card_config_yaml(o, s, err)) || open_writer(&r, model, s, tensors, err) ||
        run_plan(&r, s, err) || write_generated(&r, err) || finish_writer(&r, err) ||
        verify_output(&r, model, tensors, err) ||
        output_copy_aux_files(model, o->base, tok_skipped_aux(&r.tok, o->base), false, NULL, NULL,
                              err) ||
        tok_write_files(&r.tok, model, o->base, false, err) ||
        (model->kind == OUTPUT_DIR && card_write(model->tmp_path, o, s, r.config_yaml,
                                                 r.plan.renumbered ? r.plan.n_layers : -1, err)) ||
        output_commit(model, err))
        goto done;
    s->shards = r.gguf ? 1 : st_writer_shards(r.writer);
    s->bytes_read = r.progress.bytes_done;
    s->bytes_written = output_bytes(model);
    /* The model is in place: a report that cannot be written now costs only the report. */
    if (report && write_report(&r, s, report, err)) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err->msg);
        acem_fail(err, "%s (the merged model was written to %s)", inner, o->out);
        goto done;
    }
    rc = 0;
done:
    output_set_clear(&outs); /* removes every temporary not committed, and the locks */
    free(tensors);
    free_run(&r);
    refs_free(&refs);
    s->wall_seconds = acem_now() - t0;
    return rc;
}

int acem_stats(const acem_merge_options *o, double threshold, acem_stats_fn fn, void *user,
               acem_error *err) {
    /* A dry walk of the merge plan with whole tensors (ace's shape of work), no output. */
    acem_merge_options so;
    resolved_refs refs;
    merge_run r = {.o = &so, .method = &method_ace};
    if (!o->base || o->n_models < 2)
        return acem_fail(err, "a base model and at least 2 expert models are needed");
    if (acem_check_options(o, err)) return -1;
    if (resolve_refs(o, &so, &refs, err)) {
        refs_free(&refs);
        return -1;
    }
    so.out = NULL;
    set_compute(&r);
    double *norm = NULL, *erank = NULL;
    int rc = -1;
    if (open_inputs(&r, err) || alloc_buffers(&r, err) ||
        !(norm = acem_alloc((size_t)r.T, sizeof *norm, "stats", err)) ||
        !(erank = acem_alloc((size_t)r.T, sizeof *erank, "stats", err)))
        goto out;
    r.progress.tensors_total = r.plan.n;
    r.progress.bytes_total = r.plan.bytes_to_read;
    r.progress.phase = ACEM_PHASE_MERGE;
    report_progress(&r);
    for (size_t i = 0; i < r.plan.n; i++) {
        const plan_entry *e = &r.plan.entries[i];
        r.progress.tensor = e->base->name;
        if (e->action == PLAN_MERGE && e->base->ndim == 2) {
            method_ctx c;
            method_ctx_for(&r, e, &c);
            c.numel = e->base->numel;
            acem_tensor_stats st = {e->base->name, c.rows, c.cols, r.T, 0, 0, norm, erank};
            if (load_deltas(&r, e, 0, c.numel, err) ||
                delta_stats(&c, r.deltas, norm, erank, &st.gamma, err))
                goto out;
            st.hetero = st.gamma > threshold;
            if ((rc = fn(user, &st)) != 0) goto out;
            rc = -1;
        }
        r.progress.tensors_done = i + 1;
        if (check_cancel(&r, err)) goto out;
        report_progress(&r);
    }
    r.progress.phase = ACEM_PHASE_DONE;
    report_progress(&r);
    rc = 0;
out:
    free(norm);
    free(erank);
    free_run(&r);
    refs_free(&refs);
    return rc;
}
