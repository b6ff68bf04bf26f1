/* options.c — what can be checked of acem_merge_options before any file is opened: the
 * caller's mistakes (usage errors), told apart from failures of the inputs or the system. */
#include "methods/method.h"
#include "output.h"
#include "params.h"
#include "plan.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

/* Every number a config's setting of a known parameter can give (a gradient interpolates
 * between its entries, so they bound it). */
static int check_list(const method_def *m, const setting_list *l, acem_error *err) {
    for (int k = 0; k < l->n; k++)
        for (int i = 0; i < m->n_params; i++) {
            if (strcmp(m->params[i].name, l->s[k].name) != 0) continue;
            for (int c = 0; c < l->s[k].n_cond; c++)
                for (int j = 0; j < l->s[k].cond[c].n; j++)
                    if (method_check_value(&m->params[i], l->s[k].cond[c].v[j], err)) return -1;
        }
    return 0;
}

/* The config's values, and its per-model lists still belonging to the models merged
 * (--model replaces the config's models, and with them the models its lists are for). */
static int check_settings(const method_def *m, const acem_merge_options *o, acem_error *err) {
    const acem_settings *s = o->settings;
    if (!s) return 0;
    if (settings_has_model_params(s)) {
        bool same = s->n_models == o->n_models;
        for (int t = 0; same && t < o->n_models; t++)
            same = !strcmp(s->model_path[t], o->models[t]);
        if (!same)
            return acem_fail(err, "the config's per-model parameters belong to its own models; "
                                  "--model replaced them");
    }
    if (check_list(m, &s->top, err)) return -1;
    for (int t = 0; t < s->n_models; t++)
        if (check_list(m, &s->models[t], err)) return -1;
    for (int i = 0; i < s->n_slices; i++) {
        if (check_list(m, &s->slices[i].params, err)) return -1;
        for (int k = 0; k < s->slices[i].n_sources; k++)
            if (check_list(m, &s->slices[i].sources[k].params, err)) return -1;
    }
    return 0;
}

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
    int T;
    return plan_width(o, &T, err) || method_check_models(m, T, err) ||
                   method_resolve_params(m, o->params, o->n_params, false, values, err) ||
                   check_settings(m, o, err)
               ? -1
               : 0;
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

/* What the output path's name allows: its kind, shards, block types. */
static int check_output(const acem_merge_options *o, acem_error *err) {
    output_kind kind;
    if (!o->out) return 0;
    if (output_model_kind(o->out, &kind, err)) return -1;
    if (o->max_shard_size && kind == OUTPUT_FILE)
        return acem_fail(err, "%s: --max-shard-size needs a directory output, not a file", o->out);
    if (acem_out_type_quant(o->out_type) != ACEM_QUANT_NONE && !output_is_gguf(o->out))
        return acem_fail(err, "%s: %s blocks need a .gguf output path", o->out,
                         acem_out_type_name(o->out_type));
    return 0;
}

int acem_check_options(const acem_merge_options *o, acem_error *err) {
    if (o->method && check_method(o, err)) return -1;
    if (!isnan(o->lambda) && !isfinite(o->lambda))
        return acem_fail(err, "lambda must be a finite number");
    if (o->precision != ACEM_DT_F32 && o->precision != ACEM_DT_F64)
        return acem_fail(err, "compute precision must be f32 or f64");
    if (o->out_type < ACEM_OUT_KEEP || o->out_type >= ACEM_OUT_COUNT)
        return acem_fail(err, "unknown output type %d", (int)o->out_type);
    return check_output(o, err) || check_exclusions(o, err) ? -1 : 0;
}
