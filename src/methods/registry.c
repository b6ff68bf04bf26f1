/* registry.c — the table of methods. */
#include "method.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const method_def *const methods[] = {
    /* elementwise */
    &method_average,
    &method_task_arithmetic,
    &method_linear,
    &method_ties,
    &method_breadcrumbs,
    &method_breadcrumbs_ties,
    &method_dare_linear,
    &method_dare_ties,
    &method_slerp,
    &method_della,
    &method_della_linear,
    &method_sce,
    &method_model_stock,
    &method_nuslerp,
    &method_karcher,
    &method_passthrough,
    &method_arcee_fusion,
    /* covariance family */
    &method_ace,
    &method_wudi,
    &method_actmat,
    &method_regmean,
    /* spectral */
    &method_tsv,
    &method_iso_c,
    &method_iso_cts,
    &method_cart,
};
#define N_METHODS (sizeof methods / sizeof *methods)

const method_def *method_find(const char *name) {
    for (size_t i = 0; i < N_METHODS; i++)
        if (strcmp(methods[i]->name, name) == 0) return methods[i];
    return NULL;
}

int acem_method_merges_weights(const char *name) {
    const method_def *m = method_find(name);
    return m && m->weights;
}

size_t acem_method_count(void) { return N_METHODS; }
const char *acem_method_name(size_t i) { return i < N_METHODS ? methods[i]->name : NULL; }
const char *acem_method_describe(size_t i) { return i < N_METHODS ? methods[i]->describe : NULL; }
int acem_method_takes(size_t i, int n_models) {
    return i < N_METHODS && method_check_models(methods[i], n_models, NULL) == 0;
}

/* Names the parameters the method does take, so that a typo is fixed at once. */
static int unknown_param(const method_def *m, const char *key, acem_error *err) {
    char valid[256] = "it takes none";
    size_t k = 0;
    for (int i = 0; i < m->n_params && k < sizeof valid; i++)
        k += (size_t)snprintf(valid + k, sizeof valid - k, "%s%s",
                              i ? ", " : "its parameters: ", m->params[i].name);
    return acem_fail(err, "method %s has no parameter \"%s\" (%s)", m->name, key, valid);
}

static int unknown_choice(const method_param *mp, const char *value, acem_error *err) {
    char valid[256] = "";
    size_t k = 0;
    for (int c = 0; mp->choices[c] && k < sizeof valid; c++)
        k += (size_t)snprintf(valid + k, sizeof valid - k, "%s%s", c ? ", " : "", mp->choices[c]);
    return acem_fail(err, "parameter %s: unknown choice \"%s\" (one of: %s)", mp->name, value,
                     valid);
}

double method_param_default(const method_def *m, int i, bool mergekit) {
    const method_param *mp = &m->params[i];
    return mergekit && (mp->flags & PARAM_MK_DEFAULT) ? mp->mk_def : mp->def;
}

double method_default_lambda(const method_def *m, bool mergekit) {
    return mergekit && m->mergekit_lambda ? m->mergekit_lambda : m->default_lambda;
}

int method_check_models(const method_def *m, int n, acem_error *err) {
    int lo = m->min_models ? m->min_models : 2, hi = m->max_models;
    if (n >= lo && (!hi || n <= hi)) return 0;
    if (lo == hi)
        return acem_fail(err, "method %s merges exactly %d models (got %d)", m->name, lo, n);
    return acem_fail(err, "method %s needs at least %d expert model%s (got %d)", m->name, lo,
                     lo == 1 ? "" : "s", n);
}

int method_check_value(const method_param *mp, double v, acem_error *err) {
    if (mp->flags & PARAM_BOOL) {
        if (v == 0 || (v == 1 && mp->hi == 1)) return 0;
        return acem_fail(err, "parameter %s: %s", mp->name,
                         mp->hi == 1 ? "expected true or false" : mp->help);
    }
    if (!(v >= mp->lo && v <= mp->hi))
        return acem_fail(err, "parameter %s=%g: expected a number in [%g, %g]", mp->name, v, mp->lo,
                         mp->hi);
    return 0;
}

/* A given value as a number: a choice's index, true / false for a boolean, else strtod. */
static int parse_value(const method_param *mp, const char *s, double *v, acem_error *err) {
    if (mp->choices) {
        int c = 0;
        while (mp->choices[c] && strcmp(mp->choices[c], s) != 0)
            c++;
        if (!mp->choices[c]) return unknown_choice(mp, s, err);
        *v = c;
        return 0;
    }
    if ((mp->flags & PARAM_BOOL) && (!strcmp(s, "true") || !strcmp(s, "false"))) {
        *v = !strcmp(s, "true");
        return method_check_value(mp, *v, err);
    }
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (errno || end == s || *end)
        return acem_fail(err, "parameter %s=%s: expected a number in [%g, %g]", mp->name, s, mp->lo,
                         mp->hi);
    return method_check_value(mp, *v, err);
}

int method_resolve_params(const method_def *m, const acem_param *given, int n_given, bool mergekit,
                          double *values, acem_error *err) {
    for (int i = 0; i < m->n_params; i++)
        values[i] = method_param_default(m, i, mergekit);
    for (int g = 0; g < n_given; g++) {
        int i = 0;
        while (i < m->n_params && strcmp(m->params[i].name, given[g].key) != 0)
            i++;
        if (i == m->n_params) return unknown_param(m, given[g].key, err);
        if (parse_value(&m->params[i], given[g].value, &values[i], err)) return -1;
    }
    return 0;
}

void method_describe_params(const method_def *m, const double *values, char *desc,
                            size_t desc_len) {
    size_t k = 0;
    desc[0] = 0;
    for (int i = 0; i < m->n_params && k < desc_len; i++) {
        const method_param *mp = &m->params[i];
        char num[32];
        if (isnan(values[i])) continue; /* unset: derived from another (DARE's density) */
        const char *v = mp->choices              ? mp->choices[(int)values[i]]
                        : mp->flags & PARAM_BOOL ? (values[i] ? "true" : "false")
                                                 : acem_format_double(values[i], num, sizeof num);
        k += (size_t)snprintf(desc + k, desc_len - k, "%s%s=%s", k ? " " : "", mp->name, v);
    }
}
