/* params.c — parameter settings (params.h): storage, mergekit's evaluation rule, and the
 * layer position of a tensor. */
#include "params.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

acem_settings *settings_new(int n_models, acem_error *err) {
    acem_settings *s = acem_alloc(1, sizeof *s, "parameter settings", err);
    if (!s) return NULL;
    s->n_models = n_models;
    s->models = acem_alloc((size_t)n_models + 1, sizeof *s->models, "parameter settings", err);
    s->model_path = acem_alloc((size_t)n_models + 1, sizeof *s->model_path, "settings", err);
    if (!s->models || !s->model_path) {
        settings_free(s);
        return NULL;
    }
    return s;
}

static void list_free(setting_list *l) {
    for (int i = 0; i < l->n; i++) {
        for (int c = 0; c < l->s[i].n_cond; c++)
            free(l->s[i].cond[c].v);
        free(l->s[i].cond);
    }
    free(l->s);
}

static void slices_free(acem_settings *s) {
    for (int i = 0; i < s->n_slices; i++) {
        for (int k = 0; k < s->slices[i].n_sources; k++)
            list_free(&s->slices[i].sources[k].params);
        free(s->slices[i].sources);
        list_free(&s->slices[i].params);
    }
    free(s->slices);
    s->slices = NULL;
    s->n_slices = 0;
}

int settings_set_slices(acem_settings *s, int n, acem_error *err) {
    slices_free(s);
    if (!(s->slices = acem_alloc((size_t)n + 1, sizeof *s->slices, "slices", err))) return -1;
    s->n_slices = n;
    return 0;
}

void settings_free(acem_settings *s) {
    if (!s) return;
    list_free(&s->top);
    slices_free(s);
    for (int i = 0; s->models && i < s->n_models; i++)
        list_free(&s->models[i]);
    free(s->models);
    free(s->model_path);
    for (int i = 0; i < s->n_notes; i++)
        free(s->notes[i]);
    free(s->notes);
    free(s);
}

int settings_note(acem_settings *s, acem_error *err, const char *fmt, ...) {
    acem_error msg;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg.msg, sizeof msg.msg, fmt, ap);
    va_end(ap);
    char **grown = realloc(s->notes, ((size_t)s->n_notes + 1) * sizeof *grown);
    if (!grown) return acem_fail(err, "out of memory for a warning");
    s->notes = grown;
    if (!(s->notes[s->n_notes] = acem_strdup(msg.msg, err))) return -1;
    s->n_notes++;
    return 0;
}

setting *settings_add(setting_list *l, const char *name, int n_cond, acem_error *err) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        setting *grown = realloc(l->s, (size_t)cap * sizeof *grown);
        if (!grown) {
            acem_fail(err, "out of memory reading parameters");
            return NULL;
        }
        l->s = grown;
        l->cap = cap;
    }
    setting *s = &l->s[l->n];
    *s = (setting){name, n_cond, acem_alloc((size_t)n_cond + 1, sizeof *s->cond, "a setting", err)};
    if (!s->cond) return NULL;
    l->n++;
    return s;
}

const setting *settings_find(const setting_list *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->s[i].name, name)) return &l->s[i];
    return NULL;
}

void settings_drop_model(acem_settings *s, int i) {
    list_free(&s->models[i]);
    size_t tail = (size_t)(s->n_models - i - 1);
    memmove(&s->models[i], &s->models[i + 1], tail * sizeof *s->models);
    memmove(&s->model_path[i], &s->model_path[i + 1], tail * sizeof *s->model_path);
    s->n_models--;
}

void settings_model_to_front(acem_settings *s, int i, const char *path) {
    if (i == s->n_models) {
        s->models[i] = (setting_list){0};
        s->model_path[s->n_models++] = path;
    }
    setting_list l = s->models[i];
    const char *p = s->model_path[i];
    memmove(&s->models[1], &s->models[0], (size_t)i * sizeof *s->models);
    memmove(&s->model_path[1], &s->model_path[0], (size_t)i * sizeof *s->model_path);
    s->models[0] = l;
    s->model_path[0] = p;
}

bool settings_has_model_params(const acem_settings *s) {
    if (s && s->n_slices) return true; /* the slices name their models */
    for (int i = 0; s && i < s->n_models; i++)
        if (s->models[i].n) return true;
    return false;
}

/* A gradient at t: linear interpolation between the neighbours of t * (n - 1). */
static double gradient_at(const setting_cond *c, double t) {
    double scaled = t * (c->n - 1);
    int i0 = (int)scaled, i1 = i0 + 1 < c->n ? i0 + 1 : c->n - 1;
    double frac = scaled - i0;
    return (1 - frac) * c->v[i0] + frac * c->v[i1];
}

bool setting_eval(const setting *s, const char *tensor, double t, double *out) {
    for (int i = 0; i < s->n_cond; i++) {
        const setting_cond *c = &s->cond[i];
        if (c->filter && strcmp(c->filter, "*") != 0 && !strstr(tensor, c->filter)) continue;
        *out = gradient_at(c, t);
        return true;
    }
    return false;
}

double tensor_gradient_t(const char *name, long n_layers) {
    long layer = tensor_layer(name);
    if (layer < 0) return tensor_before_layers(name) ? 0.0 : 1.0;
    if (n_layers <= 1) return 1.0;
    return layer >= n_layers ? 1.0 : (double)layer / (double)(n_layers - 1);
}

int settings_set_models(acem_settings *s, int n, acem_error *err) {
    setting_list *models = acem_alloc((size_t)n + 1, sizeof *models, "parameter settings", err);
    const char **paths = acem_alloc((size_t)n + 1, sizeof *paths, "parameter settings", err);
    if (!models || !paths) {
        free(models);
        free(paths);
        return -1;
    }
    for (int i = 0; i < s->n_models; i++)
        list_free(&s->models[i]);
    free(s->models);
    free(s->model_path);
    s->models = models;
    s->model_path = paths;
    s->n_models = n;
    return 0;
}
