/* options.c — what can be checked of acem_merge_options before any file is opened: the
 * caller's mistakes (usage errors), told apart from failures of the inputs or the system. */
#include "methods/method.h"
#include "plan.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

static int check_method(const acem_merge_options *o, acem_error *err) {
    const method_def *m = method_find(o->method);
    if (!m) {
        char known[512];
        size_t k = 0;
        known[0] = 0;
        for (size_t i = 0; i < acem_method_count() && k < sizeof known; i++)
            k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "",
                                  acem_method_name(i));
        return acem_fail(err, "unknown method \"%s\" (one of: %s)", o->method, known);
    }
    double values[METHOD_MAX_PARAMS];
    char desc[384];
    return method_resolve_params(m, o->params, o->n_params, values, desc, sizeof desc, err);
}

static int check_exclusions(const acem_merge_options *o, acem_error *err) {
    const char *const *preset;
    size_t n_preset;
    if (o->preset && plan_preset_patterns(o->preset, &preset, &n_preset))
        return acem_fail(err, "unknown preset \"%s\" (gpt2, bert, roberta, llama, clip-vit)",
                         o->preset);
    for (int i = 0; i < o->n_excludes; i++) {
        regex_t re;
        int rc = regcomp(&re, o->excludes[i], REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char msg[128];
            regerror(rc, &re, msg, sizeof msg);
            return acem_fail(err, "--exclude \"%s\": %s", o->excludes[i], msg);
        }
        regfree(&re);
    }
    return 0;
}

int acem_check_options(const acem_merge_options *o, acem_error *err) {
    if (o->method && check_method(o, err)) return -1;
    if (!isnan(o->lambda) && !isfinite(o->lambda))
        return acem_fail(err, "lambda must be a finite number");
    if (o->precision != ACEM_DT_F32 && o->precision != ACEM_DT_F64)
        return acem_fail(err, "compute precision must be f32 or f64");
    if (o->out_dtype != ACEM_DT_NONE && !acem_dtype_is_mergeable(o->out_dtype))
        return acem_fail(err, "output dtype must be f64, f32, f16 or bf16");
    return check_exclusions(o, err);
}
