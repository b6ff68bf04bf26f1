/* registry.c — the table of methods. */
#include "method.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const method_def *const methods[] = {
    /* elementwise */
    &method_average,
    &method_task_arithmetic,
    &method_ties,
    &method_dare_linear,
    &method_dare_ties,
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

size_t acem_method_count(void) { return N_METHODS; }
const char *acem_method_name(size_t i) { return i < N_METHODS ? methods[i]->name : NULL; }
const char *acem_method_describe(size_t i) { return i < N_METHODS ? methods[i]->describe : NULL; }

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

/* Parses "key=value" parameters against the method's table; unknown keys, values out of
 * range and unknown choices are errors. desc receives "density=0.2 p=0.9" for the summary. */
int method_resolve_params(const method_def *m, const acem_param *given, int n_given, double *values,
                          char *desc, size_t desc_len, acem_error *err) {
    for (int i = 0; i < m->n_params; i++)
        values[i] = m->params[i].def;
    for (int g = 0; g < n_given; g++) {
        int i = 0;
        while (i < m->n_params && strcmp(m->params[i].name, given[g].key) != 0)
            i++;
        if (i == m->n_params) return unknown_param(m, given[g].key, err);
        const method_param *mp = &m->params[i];
        if (mp->choices) {
            int c = 0;
            while (mp->choices[c] && strcmp(mp->choices[c], given[g].value) != 0)
                c++;
            if (!mp->choices[c]) return unknown_choice(mp, given[g].value, err);
            values[i] = c;
            continue;
        }
        char *end;
        errno = 0;
        double v = strtod(given[g].value, &end);
        if (errno || end == given[g].value || *end || !(v >= mp->lo && v <= mp->hi))
            return acem_fail(err, "parameter %s=%s: expected a number in [%g, %g]", mp->name,
                             given[g].value, mp->lo, mp->hi);
        values[i] = v;
    }
    size_t k = 0;
    desc[0] = 0;
    for (int i = 0; i < m->n_params && k < desc_len; i++) {
        const method_param *mp = &m->params[i];
        if (mp->choices)
            k += (size_t)snprintf(desc + k, desc_len - k, "%s%s=%s", k ? " " : "", mp->name,
                                  mp->choices[(int)values[i]]);
        else {
            char num[32];
            k += (size_t)snprintf(desc + k, desc_len - k, "%s%s=%s", k ? " " : "", mp->name,
                                  acem_format_double(values[i], num, sizeof num));
        }
    }
    return 0;
}
