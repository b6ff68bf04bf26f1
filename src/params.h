/* params.h — parameter settings as mergekit's YAML gives them (mergekit/config.py), and
 * the position of a tensor in the layer stack that gradients are read at (mergekit/plan.py).
 *
 * A setting is a list of conditions {filter, value}; a plain value is one condition
 * without a filter. A value is one number or a gradient (a list of numbers). */
#ifndef ACEM_PARAMS_H
#define ACEM_PARAMS_H

#include "arch/layers.h"
#include "internal.h"

typedef struct setting_cond {
    const char *filter; /* NULL: every tensor */
    int n;              /* 1: a number; more: a gradient */
    double *v;
} setting_cond;

typedef struct setting {
    const char *name;
    int n_cond;
    setting_cond *cond;
} setting;

typedef struct setting_list {
    int n, cap;
    setting *s;
} setting_list;

/* One source of an output slice (mergekit's InputSliceDefinition): layers [start, end) of a
 * model, with the source's own parameters. */
typedef struct slice_source {
    const char *model; /* the path as the options hold it (o->base or one of o->models) */
    int input;         /* -1: the base; else the index into o->models */
    long start, end;
    setting_list params;
} slice_source;

/* An output slice (mergekit's OutputSliceDefinition): sources of equal layer counts, merged
 * layer by layer into the next layers of the output, and the slice's parameters. */
typedef struct slice_def {
    int n_sources;
    slice_source *sources;
    setting_list params;
    const char *base; /* the slice's own base_model (ConfigReader.base_model), or NULL */
} slice_def;

/* The parameters of one YAML config: the top-level mapping and one per model, or with
 * `slices:` one per slice and source. Names and filters point into the config's YAML
 * document, which outlives this. */
struct acem_settings {
    bool mergekit; /* some model has `parameters:`: the config is mergekit's (docs/config.md) */
    int n_models;
    const char **model_path; /* the model each list belongs to (as o->models has it) */
    setting_list top;
    setting_list *models;
    int n_slices; /* 0: the config has `models:` (one slice over every layer, as mergekit) */
    slice_def *slices;
    /* What reading the config found accepted but probably not meant (a key mergekit ignores):
     * the merge passes each through acem_warn before it starts, so that --strict and the
     * report see them as any other warning. */
    char **notes;
    int n_notes;
};

acem_settings *settings_new(int n_models, acem_error *err);
void settings_free(acem_settings *s);
/* n empty per-model lists (a later `models:` replaces an earlier one's). */
int settings_set_models(acem_settings *s, int n, acem_error *err);
/* Appends a setting of n_cond empty conditions; NULL (err set) when out of memory. */
setting *settings_add(setting_list *l, const char *name, int n_cond, acem_error *err);
const setting *settings_find(const setting_list *l, const char *name);
/* Drops model i (the base listed again under models). */
void settings_drop_model(acem_settings *s, int i);
/* Moves model i to the front (the base of a method_def.base_first method); i = n_models
 * first appends a model without parameters at path (settings_set_models left room). */
void settings_model_to_front(acem_settings *s, int i, const char *path);
bool settings_has_model_params(const acem_settings *s);
/* Keeps a warning of the config for the merge (notes above); -1 (err set) out of memory. */
int settings_note(acem_settings *s, acem_error *err, const char *fmt, ...) ACEM_PRINTF(3, 4);
/* n empty slices (their sources are allocated by the caller, freed by settings_free). */
int settings_set_slices(acem_settings *s, int n, acem_error *err);

/* mergekit's evaluate_setting: the first condition whose filter is absent, "*" or a
 * substring of the tensor name gives the value, a gradient read at t in [0, 1]. Returns
 * false when no condition matches (the lookup then goes on to the next level). */
bool setting_eval(const setting *s, const char *tensor, double t, double *out);

/* Where gradients are read for a tensor of a stack of n_layers: layer i at i / (n - 1)
 * (1 when n is 1); embeddings before the layers at 0 and the other tensors outside them
 * (final norm, head) at 1, as mergekit's plan reads its pre- and post-weights. */
double tensor_gradient_t(const char *name, long n_layers);

#endif
