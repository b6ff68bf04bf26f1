/* config.c — `acem merge CONFIG.yaml`: the merge options as YAML, read with libyaml.
 * mergekit's keys are accepted where they mean the same (docs/config.md has the schema):
 *
 *   merge_method: ties            # or method
 *   base_model: ./base            # or base
 *   models:
 *     - model: ./expert-a         # or a plain path
 *       parameters: {weight: 0.6, density: [0.2, 0.5]}
 *   parameters: {density: 0.2, lambda: 1.0}
 *   dtype: bf16                   # output dtype (q8_0 / q4_0 for .gguf outputs)
 *   tokenizer_source: union       # or tokenizer: {source, tokens, pad_to_multiple_of}
 *   chat_template: chatml         # auto, a format name or Jinja text (tokenizer_merge.c)
 *
 * Parameter values are read as mergekit's config.py reads them (params.h): numbers,
 * gradients, {filter, value} conditions. A key mergekit ignores (its pydantic models drop
 * unknown keys) is warned about, naming it and where, and the merge goes on (an error with
 * --strict); a key mergekit reads that acem does not is refused, since ignoring it would
 * change the merge. A parameter the method does not read is warned about when the merge
 * starts. A relative path in
 * the file (models, base, grams, output, report) is relative to the file's directory, so
 * that a config means the same merge from wherever it is run. */
#include "internal.h"
#include "methods/method.h"
#include "params.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define CONFIG_MAX_LIST 4096

struct acem_config {
    yaml_document_t doc; /* scalars point into it */
    bool loaded;
    const char *name; /* a mergekit-multi document's `name:`, or NULL */
    const char **models;
    const char **grams; /* parallel to models */
    const char **excludes;
    acem_token_spec *tokens; /* tokenizer.tokens */
    acem_settings *settings;
    char **paths; /* relative paths resolved against the file's directory */
    size_t n_paths, cap_paths;
};

void acem_config_free(acem_config *c) {
    if (!c) return;
    if (c->loaded) yaml_document_delete(&c->doc);
    free(c->models);
    free(c->grams);
    free(c->excludes);
    free(c->tokens);
    settings_free(c->settings);
    for (size_t i = 0; i < c->n_paths; i++)
        free(c->paths[i]);
    free(c->paths);
    free(c);
}

/* One document of a mergekit-multi file, as the first pass reads it. */
typedef struct doc_info {
    char *name;  /* its `name:`, or NULL */
    char *out;   /* its own output as written (output, out, mergekit-mega's out_path), or NULL */
    char **refs; /* its model references (base_model, models, slice sources), as written */
    size_t n_refs;
} doc_info;

typedef struct cfg_ctx {
    const char *path;
    char *dir; /* the file's directory, or NULL when that is the working directory */
    acem_config *c;
    acem_merge_options *o;
    acem_error *err;
    /* dtype and out_dtype as given (ACEM_OUT_INVALID: not), resolved by read_dtypes */
    acem_out_type dtype, out_dtype;
    bool precision_given;
    /* a mergekit-multi file: every document (scan_documents), this one's index, the one
     * written to -o, and the directory the named ones are written to */
    doc_info *docs;
    size_t n_docs, doc, final;
    const char *stage_dir;
    bool modules; /* the document gave `modules:` */
} cfg_ctx;

static yaml_node_t *node(cfg_ctx *x, int id) { return yaml_document_get_node(&x->c->doc, id); }

static const char *scalar(cfg_ctx *x, yaml_node_t *n, const char *key) {
    if (!n || n->type != YAML_SCALAR_NODE) {
        acem_fail(x->err, "%s: \"%s\" must be a single value", x->path, key);
        return NULL;
    }
    return (const char *)n->data.scalar.value;
}

/* Keeps an allocated path for the config's lifetime (NULL passes through). */
static const char *keep_path(cfg_ctx *x, char *p) {
    acem_config *c = x->c;
    if (p && c->n_paths == c->cap_paths) {
        size_t cap = c->cap_paths ? 2 * c->cap_paths : 8;
        char **grown = realloc(c->paths, cap * sizeof *grown);
        if (!grown) {
            free(p);
            acem_fail(x->err, "out of memory reading the config");
            return NULL;
        }
        c->paths = grown;
        c->cap_paths = cap;
    }
    if (p) c->paths[c->n_paths++] = p;
    return p;
}

/* A path value: relative ones are taken from the config file's directory. */
static const char *path_scalar(cfg_ctx *x, yaml_node_t *n, const char *key) {
    const char *s = scalar(x, n, key);
    if (!s || !x->dir || !*s || *s == '/') return s;
    return keep_path(x, acem_path_join(x->dir, s, x->err));
}

static bool is_null(yaml_node_t *n) {
    const char *v = n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
    return v && (!*v || !strcmp(v, "~") || !strcmp(v, "null"));
}

/* One side of mergekit's mapping form of a reference (common.py, ModelPath): a path, or
 * {path, revision}; appended to buf as "PATH[@REVISION]". */
static int model_path_text(cfg_ctx *x, yaml_node_t *n, const char *key, char *buf, size_t cap) {
    const char *path = NULL, *rev = NULL;
    if (n && n->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            const char *k = scalar(x, node(x, p->key), key);
            const char **v = !k                       ? NULL
                             : !strcmp(k, "path")     ? &path
                             : !strcmp(k, "revision") ? &rev
                                                      : NULL;
            if (!v)
                return k ? acem_fail(x->err,
                                     "%s: \"%s\": a model path takes path and revision, "
                                     "not \"%s\"",
                                     x->path, key, k)
                         : -1;
            if (!(*v = scalar(x, node(x, p->value), k))) return -1;
        }
        if (!path) return acem_fail(x->err, "%s: \"%s\": a model path needs path", x->path, key);
    } else if (!(path = scalar(x, n, key))) {
        return -1;
    }
    size_t len = strlen(buf);
    if (snprintf(buf + len, cap - len, "%s%s%s", path, rev ? "@" : "", rev ? rev : "") >=
        (int)(cap - len))
        return acem_fail(x->err, "%s: \"%s\": a model reference too long", x->path, key);
    return 0;
}

/* The reference a value writes: a string, or mergekit's mapping {model: PATH | {path,
 * revision}, lora: PATH | {path, revision}} (common.py, ModelReference) as MODEL+LORA. */
static int reference_text(cfg_ctx *x, yaml_node_t *n, const char *key, char *buf, size_t cap) {
    buf[0] = 0;
    if (!n || n->type != YAML_MAPPING_NODE) return model_path_text(x, n, key, buf, cap);
    yaml_node_t *model = NULL, *lora = NULL;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), key);
        if (!k) return -1;
        if (strcmp(k, "model") && strcmp(k, "lora"))
            return acem_fail(x->err,
                             "%s: \"%s\": a model reference takes model and lora, not "
                             "\"%s\"",
                             x->path, key, k);
        *(strcmp(k, "model") ? &lora : &model) = node(x, p->value);
    }
    if (!model) return acem_fail(x->err, "%s: \"%s\": a model reference needs model", x->path, key);
    if (model_path_text(x, model, key, buf, cap)) return -1;
    if (!lora || is_null(lora)) return 0;
    size_t len = strlen(buf);
    if (len + 2 > cap)
        return acem_fail(x->err, "%s: \"%s\": a model reference too long", x->path, key);
    strcpy(buf + len, "+");
    return model_path_text(x, lora, key, buf, cap);
}

/* A model reference (refs.c): a path from the file's directory, a Hugging Face id from the
 * local cache, MODEL+ADAPTER; resolved now, so that a missing model stops the load. */
static const char *reference_scalar(cfg_ctx *x, yaml_node_t *n, const char *key) {
    char text[8192];
    acem_ref ref;
    if (reference_text(x, n, key, text, sizeof text)) return NULL;
    if (!*text) return keep_path(x, acem_strdup(text, x->err));
    if (acem_ref_resolve(text, x->dir, &ref, x->err)) return NULL;
    char *resolved = acem_ref_text(&ref, x->err);
    acem_ref_free(&ref);
    return keep_path(x, resolved);
}

/* A model reference: the name of another document of a mergekit-multi file is that
 * merge's output (mergekit-multi's patched_config), stage_dir/NAME, made before this one
 * (acem_config_order); any other value is a reference (reference_scalar). */
static const char *model_scalar(cfg_ctx *x, yaml_node_t *n, const char *key) {
    const char *s = n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
    for (size_t i = 0; s && i < x->n_docs; i++) {
        if (!x->docs[i].name || strcmp(x->docs[i].name, s) != 0) continue;
        if (i == x->final) /* acem_config_order refused it before any merge ran */
            return acem_fail(x->err, "%s: \"%s\" is the final merge's name", x->path, s), NULL;
        acem_config *c = x->c;
        char *joined = acem_path_join(x->stage_dir, s, x->err);
        char **grown = joined ? realloc(c->paths, (c->n_paths + 1) * sizeof *grown) : NULL;
        if (!grown) {
            free(joined);
            acem_fail(x->err, "out of memory reading the config");
            return NULL;
        }
        c->paths = grown;
        c->cap_paths = c->n_paths + 1;
        return c->paths[c->n_paths++] = joined;
    }
    return reference_scalar(x, n, key);
}

static int number(cfg_ctx *x, yaml_node_t *n, const char *key, double *out) {
    const char *s = scalar(x, n, key);
    if (!s) return -1;
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (errno || end == s || *end)
        return acem_fail(x->err, "%s: \"%s\" must be a number, not \"%s\"", x->path, key, s);
    return 0;
}

static int boolean(cfg_ctx *x, yaml_node_t *n, const char *key, int *out) {
    const char *s = scalar(x, n, key);
    if (!s) return -1;
    if (!strcmp(s, "true") || !strcmp(s, "yes"))
        *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "no"))
        *out = 0;
    else
        return acem_fail(x->err, "%s: \"%s\" must be true or false", x->path, key);
    return 0;
}

/* A number as mergekit's YAML gives one: true / false are 1 / 0. */
static int setting_number(cfg_ctx *x, yaml_node_t *n, const char *key, double *v) {
    const char *s = scalar(x, n, key);
    if (!s) return -1;
    if (!strcmp(s, "true") || !strcmp(s, "false")) {
        *v = !strcmp(s, "true");
        return 0;
    }
    return number(x, n, key, v);
}

static size_t items(yaml_node_t *n) {
    return n->type == YAML_SEQUENCE_NODE
               ? (size_t)(n->data.sequence.items.top - n->data.sequence.items.start)
               : (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
}

/* A number or a gradient (a list of numbers). */
static int setting_value(cfg_ctx *x, yaml_node_t *n, const char *key, setting_cond *c) {
    bool list = n && n->type == YAML_SEQUENCE_NODE;
    size_t len = list ? items(n) : 1;
    if (list && (len == 0 || len > CONFIG_MAX_LIST))
        return acem_fail(x->err, "%s: parameter \"%s\": a gradient needs 1 to %d numbers", x->path,
                         key, CONFIG_MAX_LIST);
    if (!(c->v = acem_alloc(len, sizeof *c->v, "a parameter", x->err))) return -1;
    c->n = (int)len;
    if (!list) return setting_number(x, n, key, c->v);
    for (size_t i = 0; i < len; i++)
        if (setting_number(x, node(x, n->data.sequence.items.start[i]), key, &c->v[i])) return -1;
    return 0;
}

/* A key given twice in one mapping is an error, as at the top level (check_repeated):
 * mergekit's YAML reader keeps the last one silently, which a reader of the file cannot
 * see. where names the mapping ("in slice 2"). Keys that are not single values are refused
 * here too. */
static int unique_keys(cfg_ctx *x, yaml_node_t *map, const char *where) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(x, node(x, p->key), "key");
        if (!k) return -1;
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
            if (!strcmp((const char *)node(x, q->key)->data.scalar.value, k))
                return acem_fail(x->err, "%s: \"%s\" is given twice %s", x->path, k, where);
    }
    return 0;
}

/* One {filter, value} condition (mergekit's ConditionalParameter). Another key (`pattern:`
 * in an old example of mergekit's) is dropped by mergekit's model, so that a condition
 * without a filter matches every tensor: read the same, and said. */
static int condition(cfg_ctx *x, yaml_node_t *n, const char *key, setting_cond *c) {
    yaml_node_t *value = NULL;
    bool other = false;
    char where[96];
    snprintf(where, sizeof where, "in a condition of parameter \"%.48s\"", key);
    if (unique_keys(x, n, where)) return -1;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), key);
        if (!k) return -1;
        if (!strcmp(k, "filter")) {
            if (!(c->filter = scalar(x, node(x, p->value), k))) return -1;
        } else if (!strcmp(k, "value")) {
            value = node(x, p->value);
        } else {
            other = true;
        }
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; other && p < n->data.mapping.pairs.top;
         p++) {
        const char *k = (const char *)node(x, p->key)->data.scalar.value;
        if (strcmp(k, "filter") && strcmp(k, "value") &&
            settings_note(x->c->settings, x->err,
                          "%s: unknown key \"%s\" in a condition of parameter \"%s\" (mergekit "
                          "ignores it%s)",
                          x->path, k, key,
                          c->filter ? "" : ": without a filter the condition matches every tensor"))
            return -1;
    }
    if (!value)
        return acem_fail(x->err, "%s: parameter \"%s\": a condition needs a value", x->path, key);
    return setting_value(x, value, key, c);
}

/* A parameter's setting: a value, one condition, or a list of conditions. */
static int setting_of(cfg_ctx *x, const char *key, yaml_node_t *n, setting_list *l) {
    bool one = n && n->type == YAML_MAPPING_NODE;
    bool conds = n && n->type == YAML_SEQUENCE_NODE && items(n) &&
                 node(x, n->data.sequence.items.start[0])->type == YAML_MAPPING_NODE;
    setting *st = settings_add(l, key, conds ? (int)items(n) : 1, x->err);
    if (!st) return -1;
    if (!one && !conds) return setting_value(x, n, key, &st->cond[0]);
    for (int i = 0; i < st->n_cond; i++) {
        yaml_node_t *c = one ? n : node(x, n->data.sequence.items.start[i]);
        if (c->type != YAML_MAPPING_NODE)
            return acem_fail(x->err,
                             "%s: parameter \"%s\": a list of conditions holds only "
                             "{filter, value} entries",
                             x->path, key);
        if (condition(x, c, key, &st->cond[i])) return -1;
    }
    return 0;
}

/* A key mergekit's pydantic models drop silently (their default extra="ignore"): kept as a
 * warning for the merge (settings_note), which goes on. where: "at the top level", ... */
static int ignored_key(cfg_ctx *x, const char *k, const char *where) {
    return settings_note(x->c->settings, x->err, "%s: unknown key \"%s\" %s (mergekit ignores it)",
                         x->path, k, where);
}

/* A `parameters:` mapping (empty or null allowed, as in mergekit) into l; at the top level
 * (model NULL) `lambda` is a plain number that sets lambda. */
static int parameters(cfg_ctx *x, yaml_node_t *n, setting_list *l, const char *model) {
    if (is_null(n)) return 0;
    if (!n || n->type != YAML_MAPPING_NODE)
        return acem_fail(x->err, "%s: \"parameters\" must be a mapping", x->path);
    if (unique_keys(x, n, "in parameters")) return -1;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), "parameters");
        if (!k) return -1;
        if (!model && !strcmp(k, "lambda")) {
            if (number(x, node(x, p->value), k, &x->o->lambda)) return -1;
            continue;
        }
        if (setting_of(x, k, node(x, p->value), l)) return -1;
    }
    return 0;
}

/* One entry of `models`: a path, or {model: path[, parameters: {...}][, gram: path]}. */
static int model_entry(cfg_ctx *x, yaml_node_t *item, int i) {
    acem_settings *st = x->c->settings;
    yaml_node_t *value = item;
    char where[48];
    snprintf(where, sizeof where, "in models entry %d", i + 1);
    if (item && item->type == YAML_MAPPING_NODE) {
        value = NULL;
        if (unique_keys(x, item, where)) return -1;
        for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top;
             p++) {
            const char *k = scalar(x, node(x, p->key), "models");
            if (!k) return -1;
            if (!strcmp(k, "gram")) {
                if (!(x->c->grams[i] = path_scalar(x, node(x, p->value), k))) return -1;
                x->o->grams = x->c->grams;
            } else if (!strcmp(k, "parameters")) {
                if (parameters(x, node(x, p->value), &st->models[i], "model")) return -1;
                st->mergekit = true;
            } else if (!strcmp(k, "model")) {
                value = node(x, p->value);
            } else if (ignored_key(x, k, where)) {
                return -1;
            }
        }
    }
    return (x->c->models[i] = st->model_path[i] = model_scalar(x, value, "models")) ? 0 : -1;
}

static int model_list(cfg_ctx *x, yaml_node_t *n) {
    if (!n || n->type != YAML_SEQUENCE_NODE)
        return acem_fail(x->err, "%s: \"models\" must be a list", x->path);
    size_t len = items(n);
    if (len > CONFIG_MAX_LIST) return acem_fail(x->err, "%s: \"models\" is too long", x->path);
    if (!(x->c->models = acem_alloc(len + 1, sizeof(char *), "a config list", x->err)) ||
        !(x->c->grams = acem_alloc(len + 1, sizeof(char *), "a config list", x->err)) ||
        settings_set_models(x->c->settings, (int)len, x->err))
        return -1;
    for (size_t i = 0; i < len; i++)
        if (model_entry(x, node(x, n->data.sequence.items.start[i]), (int)i)) return -1;
    x->o->models = x->c->models;
    x->o->n_models = (int)len;
    return 0;
}

/* layer_range: [start, end), mergekit's half-open range of a source's layers. */
static int layer_range(cfg_ctx *x, yaml_node_t *n, slice_source *src) {
    double v[2];
    if (!n || n->type != YAML_SEQUENCE_NODE || items(n) != 2)
        return acem_fail(x->err, "%s: \"layer_range\" must be a list of two layers [start, end)",
                         x->path);
    for (int i = 0; i < 2; i++)
        if (number(x, node(x, n->data.sequence.items.start[i]), "layer_range", &v[i])) return -1;
    if (!(v[0] >= 0 && v[1] <= 1e6 && floor(v[0]) == v[0] && floor(v[1]) == v[1] && v[0] < v[1]))
        return acem_fail(x->err,
                         "%s: layer_range [%g, %g] must be two whole numbers 0 <= start < end",
                         x->path, v[0], v[1]);
    src->start = (long)v[0];
    src->end = (long)v[1];
    return 0;
}

/* One source (number k of slice i, from 1) of a slice: {model, layer_range[, parameters]}. */
static int slice_source_entry(cfg_ctx *x, yaml_node_t *n, int i, int k, slice_source *src) {
    if (!n || n->type != YAML_MAPPING_NODE)
        return acem_fail(x->err, "%s: a slice's \"sources\" entries are {model, layer_range}",
                         x->path);
    src->end = -1;
    char where[64];
    snprintf(where, sizeof where, "in source %d of slice %d", k, i);
    if (unique_keys(x, n, where)) return -1;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *key = scalar(x, node(x, p->key), "sources");
        yaml_node_t *v = node(x, p->value);
        if (!key) return -1;
        int rc = !strcmp(key, "model")         ? (src->model = model_scalar(x, v, key)) ? 0 : -1
                 : !strcmp(key, "layer_range") ? layer_range(x, v, src)
                 : !strcmp(key, "parameters")  ? parameters(x, v, &src->params, "model")
                                               : ignored_key(x, key, where);
        if (rc) return -1;
    }
    if (!src->model || src->end < 0)
        return acem_fail(x->err, "%s: every slice source needs a model and a layer_range", x->path);
    return 0;
}

/* Output slice i (from 1): {sources[, parameters][, base_model]}. The slice's base_model is
 * the base of its tensors in mergekit (ConfigReader.base_model; slice_inputs checks it);
 * residual_weight is declared by mergekit's OutputSliceDefinition and read by none of its
 * code, so it is ignored, and said. */
static int slice_entry(cfg_ctx *x, yaml_node_t *n, int i, slice_def *sl) {
    if (!n || n->type != YAML_MAPPING_NODE)
        return acem_fail(x->err, "%s: \"slices\" entries are mappings with \"sources\"", x->path);
    char where[32];
    snprintf(where, sizeof where, "in slice %d", i);
    if (unique_keys(x, n, where)) return -1;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), "slices");
        yaml_node_t *v = node(x, p->value);
        if (!k) return -1;
        if (!strcmp(k, "parameters")) {
            if (parameters(x, v, &sl->params, "slice")) return -1;
        } else if (!strcmp(k, "base_model")) {
            if (!(sl->base = model_scalar(x, v, k))) return -1;
        } else if (!strcmp(k, "residual_weight")) {
            if (settings_note(x->c->settings, x->err,
                              "%s: \"residual_weight\" in slice %d is not read by mergekit "
                              "(declared, used by no merge); ignored",
                              x->path, i))
                return -1;
        } else if (!strcmp(k, "sources")) {
            if (v->type != YAML_SEQUENCE_NODE || !items(v) || items(v) > CONFIG_MAX_LIST)
                return acem_fail(x->err, "%s: slice %d: \"sources\" must be a list of 1 to %d",
                                 x->path, i, CONFIG_MAX_LIST);
            sl->n_sources = (int)items(v);
            if (!(sl->sources = acem_alloc(items(v), sizeof *sl->sources, "a slice", x->err)))
                return -1;
            for (int k = 0; k < sl->n_sources; k++)
                if (slice_source_entry(x, node(x, v->data.sequence.items.start[k]), i, k + 1,
                                       &sl->sources[k]))
                    return -1;
        } else if (ignored_key(x, k, where)) {
            return -1;
        }
    }
    if (!sl->sources) return acem_fail(x->err, "%s: a slice without sources", x->path);
    return 0;
}

static int slice_list(cfg_ctx *x, yaml_node_t *n) {
    if (!n || n->type != YAML_SEQUENCE_NODE || !items(n) || items(n) > CONFIG_MAX_LIST)
        return acem_fail(x->err, "%s: \"slices\" must be a list of 1 to %d slices", x->path,
                         CONFIG_MAX_LIST);
    acem_settings *st = x->c->settings;
    if (settings_set_slices(st, (int)items(n), x->err)) return -1;
    for (int i = 0; i < st->n_slices; i++)
        if (slice_entry(x, node(x, n->data.sequence.items.start[i]), i + 1, &st->slices[i]))
            return -1;
    st->mergekit = true; /* `slices:` is mergekit's dialect */
    return 0;
}

/* A sequence of scalars. */
static int string_list(cfg_ctx *x, yaml_node_t *n, const char *key, const char ***out, int *count) {
    if (!n || n->type != YAML_SEQUENCE_NODE)
        return acem_fail(x->err, "%s: \"%s\" must be a list", x->path, key);
    size_t len = items(n);
    if (len > CONFIG_MAX_LIST) return acem_fail(x->err, "%s: \"%s\" is too long", x->path, key);
    if (!(*out = acem_alloc(len + 1, sizeof(char *), "a config list", x->err))) return -1;
    for (*count = 0; *count < (int)len; (*count)++)
        if (!((*out)[*count] = scalar(x, node(x, n->data.sequence.items.start[*count]), key)))
            return -1;
    return 0;
}

/* tokenizer_source's value: base, union, or a model reference (refs.c: a path from the
 * file's directory, a Hugging Face id from the local cache). */
static const char *tokenizer_source(cfg_ctx *x, yaml_node_t *v, const char *key) {
    const char *s = scalar(x, v, key);
    return s && strcmp(s, "base") && strcmp(s, "union") ? reference_scalar(x, v, key) : s;
}

/* A token's `source:` (TokenEmbeddingConfig.source): a model, or {kind: zero}, or
 * {kind: model_token, model, token | token_id}. */
static int token_source(cfg_ctx *x, yaml_node_t *v, acem_token_spec *t) {
    if (!v || v->type != YAML_MAPPING_NODE)
        return (t->model = reference_scalar(x, v, "source")) ? 0 : -1;
    const char *kind = NULL;
    double id;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), "source");
        yaml_node_t *val = node(x, p->value);
        if (!k) return -1;
        if (!strcmp(k, "kind") && !(kind = scalar(x, val, k))) return -1;
        if (!strcmp(k, "model") && !(t->model = reference_scalar(x, val, k))) return -1;
        if (!strcmp(k, "token") && !(t->source_token = scalar(x, val, k))) return -1;
        if (!strcmp(k, "token_id")) {
            if (number(x, val, k, &id)) return -1;
            if (!(id >= 0 && id < 1e15 && floor(id) == id))
                return acem_fail(x->err, "%s: token_id must be a non-negative integer", x->path);
            t->source_id = (long long)id;
        }
    }
    bool zero = kind && !strcmp(kind, "zero"), mt = kind && !strcmp(kind, "model_token");
    if (zero) t->model = NULL;
    if (!zero && !(mt && t->model && (!t->source_token != (t->source_id < 0))))
        return acem_fail(x->err,
                         "%s: token \"%s\": a source is a model, {kind: zero} or {kind: "
                         "model_token, model, token or token_id}",
                         x->path, t->token);
    return 0;
}

/* tokenizer.tokens: token -> {source, force}. */
static int token_specs(cfg_ctx *x, yaml_node_t *v) {
    if (!v || v->type != YAML_MAPPING_NODE || items(v) > CONFIG_MAX_LIST)
        return acem_fail(x->err, "%s: tokenizer.tokens must be a mapping of tokens", x->path);
    size_t n = items(v);
    if (!(x->c->tokens = acem_alloc(n + 1, sizeof *x->c->tokens, "the tokens", x->err))) return -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
        acem_token_spec *t = &x->c->tokens[i];
        yaml_node_t *spec = node(x, p->value), *source = NULL;
        t->source_id = -1;
        if (!(t->token = scalar(x, node(x, p->key), "tokens"))) return -1;
        if (!spec || spec->type != YAML_MAPPING_NODE)
            return acem_fail(x->err, "%s: token \"%s\" takes {source, force}", x->path, t->token);
        for (yaml_node_pair_t *q = spec->data.mapping.pairs.start; q < spec->data.mapping.pairs.top;
             q++) {
            const char *k = scalar(x, node(x, q->key), t->token);
            if (!k) return -1;
            if (!strcmp(k, "source")) {
                source = node(x, q->value);
            } else if (!strcmp(k, "force")) {
                if (boolean(x, node(x, q->value), k, &t->force)) return -1;
            } else if (ignored_key(x, k, "in a token of tokenizer.tokens")) {
                return -1;
            }
        }
        if (!source) /* mergekit: source None is NotImplementedError */
            return acem_fail(x->err, "%s: token \"%s\" needs a source", x->path, t->token);
        if (token_source(x, source, t)) return -1;
    }
    x->o->tokens = x->c->tokens;
    x->o->n_tokens = (int)n;
    return 0;
}

/* mergekit's `tokenizer:` block (tokenizer/config.py, TokenizerConfig): source (default
 * union, as there), tokens and pad_to_multiple_of; another key is ignored there (pydantic's
 * default), warned about here. */
static int tokenizer_block(cfg_ctx *x, yaml_node_t *v) {
    if (!v || v->type != YAML_MAPPING_NODE)
        return acem_fail(x->err, "%s: \"tokenizer\" must be a mapping (source, pad_to_multiple_of)",
                         x->path);
    x->o->tokenizer_source = "union";
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), "tokenizer");
        double d;
        if (!k) return -1;
        if (!strcmp(k, "source")) {
            if (!(x->o->tokenizer_source = tokenizer_source(x, node(x, p->value), k))) return -1;
        } else if (!strcmp(k, "pad_to_multiple_of")) {
            if (number(x, node(x, p->value), k, &d)) return -1;
            if (!(d >= 1 && d <= 65536 && floor(d) == d))
                return acem_fail(x->err, "%s: pad_to_multiple_of must be an integer 1 to 65536",
                                 x->path);
            x->o->pad_to_multiple_of = (int)d;
        } else if (!strcmp(k, "tokens")) {
            if (token_specs(x, node(x, p->value))) return -1;
        } else if (ignored_key(x, k, "in tokenizer")) {
            return -1;
        }
    }
    return 0;
}

/* mergekit's `modules:` (config.py, OutputModuleDefinition): one {slices | models} per
 * module of the architecture. acem's architectures have one module, which mergekit names
 * `default`, so `modules: {default: M}` is M's slices or models given at the top level
 * (plan.py plans the one module over the whole model). A module's own `parameters` (a level
 * between the slice's and the top's in ConfigReader.parameter) are refused, not folded. */
static int exclusive_inputs(cfg_ctx *x) {
    if (x->c->models || x->c->settings->n_slices || x->modules)
        return acem_fail(x->err,
                         "%s: give exactly one of \"models\", \"slices\" and \"modules\" (as "
                         "mergekit)",
                         x->path);
    return 0;
}

/* One key of module default: its slices or models, read as at the top level. */
static int module_key(cfg_ctx *x, const char *k, yaml_node_t *v, bool *inputs) {
    if (strcmp(k, "slices") && strcmp(k, "models")) {
        if (strcmp(k, "parameters")) return ignored_key(x, k, "in module default");
        return acem_fail(x->err,
                         "%s: module \"default\": its own \"parameters\" are not read by acem "
                         "yet: give them at the top level or per slice",
                         x->path);
    }
    if (*inputs)
        return acem_fail(x->err,
                         "%s: module \"default\": give \"slices\" or \"models\", not both "
                         "(as mergekit)",
                         x->path);
    *inputs = true;
    return !strcmp(k, "slices") ? slice_list(x, v) : model_list(x, v);
}

static int module_list(cfg_ctx *x, yaml_node_t *n) {
    if (exclusive_inputs(x)) return -1;
    x->modules = true;
    if (!n || n->type != YAML_MAPPING_NODE || items(n) != 1)
        return acem_fail(x->err, "%s: \"modules\" must map one module, \"default\"", x->path);
    const char *name = scalar(x, node(x, n->data.mapping.pairs.start->key), "modules");
    yaml_node_t *m = node(x, n->data.mapping.pairs.start->value);
    if (!name) return -1;
    if (strcmp(name, "default"))
        return acem_fail(x->err,
                         "%s: module \"%.40s\": acem's architectures have one module, "
                         "\"default\"",
                         x->path, name);
    if (!m || m->type != YAML_MAPPING_NODE)
        return acem_fail(x->err, "%s: module \"default\" must be a mapping", x->path);
    if (unique_keys(x, m, "in module default")) return -1;
    bool inputs = false;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar(x, node(x, p->key), "modules");
        if (!k || module_key(x, k, node(x, p->value), &inputs)) return -1;
    }
    if (!inputs)
        return acem_fail(x->err, "%s: module \"default\" needs \"slices\" or \"models\"", x->path);
    return 0;
}

/* A top-level key acem does not read: one mergekit reads, which changes the merge, is
 * refused (ignoring it would give another model than mergekit's); any other is one mergekit
 * ignores too, warned about. */
static int mergekit_key(cfg_ctx *x, const char *k) {
    static const char *const read[][2] = {
        {"input_model_parameters", "older mergekit's per-model parameters: give them as "
                                   "models[].parameters"},
    };
    for (size_t i = 0; i < sizeof read / sizeof *read; i++)
        if (!strcmp(k, read[i][0]))
            return acem_fail(x->err,
                             "%s: \"%s\" is read by mergekit (%s) and not yet by acem; "
                             "refused rather than ignored",
                             x->path, k, read[i][1]);
    return ignored_key(x, k, "at the top level");
}

static int top_level_key(cfg_ctx *x, const char *k, yaml_node_t *v) {
    acem_merge_options *o = x->o;
    const char *s;
    double d;
    if (!strcmp(k, "merge_method") || !strcmp(k, "method"))
        return (o->method = scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "base_model") || !strcmp(k, "base"))
        return (o->base = model_scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "name")) return (x->c->name = scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "output") || !strcmp(k, "out") || !strcmp(k, "out_path"))
        return (o->out = path_scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "preset")) return (o->preset = scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "report")) return (o->report_path = path_scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "models")) return x->modules && exclusive_inputs(x) ? -1 : model_list(x, v);
    if (!strcmp(k, "slices")) return x->modules && exclusive_inputs(x) ? -1 : slice_list(x, v);
    if (!strcmp(k, "modules")) return module_list(x, v);
    if (!strcmp(k, "exclude")) {
        int rc = string_list(x, v, k, &x->c->excludes, &o->n_excludes);
        o->excludes = x->c->excludes;
        return rc;
    }
    if (!strcmp(k, "parameters")) return parameters(x, v, &x->c->settings->top, NULL);
    if (!strcmp(k, "tokenizer_source") || !strcmp(k, "tokenizer")) {
        if (o->tokenizer_source) /* mergekit: "Cannot specify both" */
            return acem_fail(x->err, "%s: give tokenizer_source or tokenizer, not both", x->path);
        if (!strcmp(k, "tokenizer")) return tokenizer_block(x, v);
        return (o->tokenizer_source = tokenizer_source(x, v, k)) ? 0 : -1;
    }
    if (!strcmp(k, "chat_template")) return (o->chat_template = scalar(x, v, k)) ? 0 : -1;
    if (!strcmp(k, "lambda")) return number(x, v, k, &o->lambda);
    if (!strcmp(k, "allow_nonfinite")) return boolean(x, v, k, &o->allow_nonfinite);
    if (!strcmp(k, "strict")) return boolean(x, v, k, &o->strict);
    if (!strcmp(k, "covariance_axis")) {
        if (!(s = scalar(x, v, k))) return -1;
        if (strcmp(s, "stored") && strcmp(s, "input"))
            return acem_fail(x->err, "%s: covariance_axis must be stored or input", x->path);
        o->covariance_axis_input = !strcmp(s, "input");
        return 0;
    }
    if (!strcmp(k, "dtype") || !strcmp(k, "out_dtype")) {
        acem_out_type *t = !strcmp(k, "dtype") ? &x->dtype : &x->out_dtype;
        if (!(s = scalar(x, v, k))) return -1;
        if ((*t = acem_out_type_parse(s)) == ACEM_OUT_INVALID)
            return acem_out_type_refused(s)
                       ? acem_fail(x->err, "%s: %s %s: %s", x->path, k, s, acem_out_type_refused(s))
                       : acem_fail(x->err, "%s: unknown %s \"%s\"", x->path, k, s);
        return 0;
    }
    if (!strcmp(k, "precision")) {
        if (!(s = scalar(x, v, k))) return -1;
        acem_dtype dt = acem_dtype_parse(s);
        if (dt != ACEM_DT_F32 && dt != ACEM_DT_F64)
            return acem_fail(x->err, "%s: precision must be f32 or f64, not \"%s\"", x->path, s);
        o->precision = dt;
        x->precision_given = true;
        return 0;
    }
    if (!strcmp(k, "seed") || !strcmp(k, "threads")) {
        if (number(x, v, k, &d)) return -1;
        if (!(d >= 0 && d <= 1e15 && floor(d) == d))
            return acem_fail(x->err, "%s: \"%s\" must be a non-negative integer", x->path, k);
        if (!strcmp(k, "seed"))
            o->seed = (uint64_t)d;
        else
            o->threads = (int)(d > 4096 ? 4096 : d);
        return 0;
    }
    if (!strcmp(k, "max_shard_size")) {
        if (!(s = scalar(x, v, k))) return -1;
        if (acem_parse_size(s, &o->max_shard_size))
            return acem_fail(x->err, "%s: max_shard_size \"%s\" is not a size like 5G", x->path, s);
        return 0;
    }
    return mergekit_key(x, k);
}

/* The key a spelling stands for: mergekit's names and acem's short ones are one key. */
static const char *canonical_key(const char *k) {
    static const char *const alias[][2] = {
        {"merge_method", "method"}, {"base_model", "base"}, {"output", "out"}, {"out_path", "out"}};
    for (size_t i = 0; i < sizeof alias / sizeof *alias; i++)
        if (!strcmp(k, alias[i][0])) return alias[i][1];
    return k;
}

/* A key given twice (in any spelling) is an error, as a typo would be: which one wins is
 * not obvious to a reader. Keys are checked as they come, so at most a few dozen known
 * ones are ever compared. */
static int check_repeated(cfg_ctx *x, yaml_node_pair_t *first, yaml_node_pair_t *p, const char *k) {
    for (yaml_node_pair_t *q = first; q < p; q++) {
        yaml_node_t *n = node(x, q->key);
        if (!strcmp(canonical_key((const char *)n->data.scalar.value), canonical_key(k)))
            return acem_fail(x->err, "%s: \"%s\" is given twice", x->path, canonical_key(k));
    }
    return 0;
}

/* Whether two paths name the same model: the same text, or the same existing file. */
static bool same_model(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    return !strcmp(a, b) || (realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb));
}

/* The base listed again under `models` is, as in mergekit (plan.py's normalize_config,
 * generalized_task_arithmetic.py's get_task_vectors), the base and no expert: its delta
 * would be zero, and counting it would change every mean. Its entry is dropped, except for
 * a method of the weights (linear), which averages every listed model. */
static void drop_listed_base(acem_config *c, acem_merge_options *o) {
    if (o->method && acem_method_merges_weights(o->method)) return;
    for (int i = 0; o->base && i < o->n_models; i++) {
        if (!same_model(o->models[i], o->base)) continue;
        size_t tail = (size_t)(o->n_models - i - 1);
        memmove(&c->models[i], &c->models[i + 1], tail * sizeof *c->models);
        memmove(&c->grams[i], &c->grams[i + 1], tail * sizeof *c->grams);
        settings_drop_model(c->settings, i);
        o->n_models--;
        i--;
    }
}

/* slerp's t = 0 is mergekit's base_model (slerp.py), which a method_def.base_first method
 * takes as model 0: moved to the front of `models`, or put there without parameters when
 * not listed (plan.py adds an unlisted base as an input). models and grams have room. */
static void base_to_front(acem_config *c, acem_merge_options *o) {
    const method_def *m = o->method ? method_find(o->method) : NULL;
    if (!m || !m->base_first || !o->base || !c->models) return;
    int i = 0;
    while (i < o->n_models && !same_model(o->models[i], o->base))
        i++;
    settings_model_to_front(c->settings, i, o->base);
    const char *model = o->base, *gram = NULL;
    if (i < o->n_models) {
        model = c->models[i];
        gram = c->grams[i];
    } else {
        o->n_models++;
    }
    memmove(&c->models[1], &c->models[0], (size_t)i * sizeof *c->models);
    memmove(&c->grams[1], &c->grams[0], (size_t)i * sizeof *c->grams);
    c->models[0] = model;
    c->grams[0] = gram;
}

/* A slice's own base_model is, in mergekit, the base of that slice's tensors and of the
 * embeddings (first slice) or the head (last) read with it. acem merges every tensor against
 * one base: a slice's base_model is read when it is the top level's, or, without one, when
 * every slice names the same; a slice of another base is refused. */
static int slice_bases(cfg_ctx *x) {
    const acem_settings *st = x->c->settings;
    acem_merge_options *o = x->o;
    for (int i = 0; i < st->n_slices; i++) {
        const char *b = st->slices[i].base;
        if (!b) continue;
        if (!o->base && i == 0) {
            for (int k = 1; k < st->n_slices; k++)
                if (!st->slices[k].base || !same_model(st->slices[k].base, b))
                    return acem_fail(x->err,
                                     "%s: slice 1 has base_model %s and slice %d %s: acem "
                                     "merges every slice against one base (not yet per slice)",
                                     x->path, b, k + 1, st->slices[k].base ? "another" : "none");
            o->base = b;
        } else if (!o->base || !same_model(b, o->base)) {
            return acem_fail(x->err,
                             "%s: slice %d's base_model %s is not the config's (%s): acem merges "
                             "every slice against one base (not yet per slice)",
                             x->path, i + 1, b, o->base ? o->base : "none");
        }
    }
    return 0;
}

/* The models the slices name: each source is the base (same_model) or one of the distinct
 * others, which become the options' models in order of first use, each without
 * parameters of its own (the sources hold them). */
static int slice_inputs(cfg_ctx *x) {
    acem_config *c = x->c;
    acem_settings *st = c->settings;
    acem_merge_options *o = x->o;
    if (c->models)
        return acem_fail(x->err, "%s: give \"models\" or \"slices\", not both (as mergekit)",
                         x->path);
    if (slice_bases(x)) return -1;
    size_t total = 0;
    for (int i = 0; i < st->n_slices; i++)
        total += (size_t)st->slices[i].n_sources;
    if (!(c->models = acem_alloc(total + 1, sizeof *c->models, "a config list", x->err)) ||
        !(c->grams = acem_alloc(total + 1, sizeof *c->grams, "a config list", x->err)))
        return -1;
    int n = 0;
    for (int i = 0; i < st->n_slices; i++)
        for (int k = 0; k < st->slices[i].n_sources; k++) {
            slice_source *src = &st->slices[i].sources[k];
            src->input = o->base && same_model(src->model, o->base) ? -1 : 0;
            while (src->input >= 0 && src->input < n &&
                   !same_model(c->models[src->input], src->model))
                src->input++;
            if (src->input == n) c->models[n++] = src->model;
        }
    if (settings_set_models(st, n, x->err)) return -1;
    for (int i = 0; i < n; i++)
        st->model_path[i] = c->models[i];
    o->models = c->models;
    o->n_models = n;
    return 0;
}

/* mergekit's dtype is the compute type (plan.py: GatherTensors casts every input to it) and,
 * without out_dtype, the stored one (SaveTensor writes out_dtype, else what the merge
 * computed); out_dtype is the stored type. acem stores in one acem_out_type: out_dtype, else
 * dtype. It computes in f32, or f64 for a float64 dtype unless `precision` says otherwise;
 * never narrower, so a bfloat16 or float16 dtype rounds the result once where mergekit also
 * rounds the inputs and its intermediates (docs/config.md). A block type (q8_0, q4_k_m) is
 * acem's, a storage type only. */
static void read_dtypes(cfg_ctx *x) {
    acem_merge_options *o = x->o;
    if (x->out_dtype != ACEM_OUT_INVALID)
        o->out_type = x->out_dtype;
    else if (x->dtype != ACEM_OUT_INVALID)
        o->out_type = x->dtype;
    if (x->dtype == ACEM_OUT_F64 && !x->precision_given) o->precision = ACEM_DT_F64;
}

/* Opened without blocking and refused unless a regular file: a FIFO or a device given as
 * the config must not hang the run waiting for a writer. */
static FILE *open_config(const char *path, acem_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0) {
        acem_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    FILE *f = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        acem_fail(err, "%s: not a regular file", path);
    else if (!(f = fdopen(fd, "rb")))
        acem_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (!f) close(fd);
    return f;
}

/* The directory relative paths in the file start from; NULL for the working directory. */
static int config_dir(const char *path, char **dir, acem_error *err) {
    const char *slash = strrchr(path, '/');
    *dir = NULL;
    if (!slash) return 0;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (!(*dir = acem_alloc(n + 1, 1, "a path", err))) return -1;
    memcpy(*dir, path, n);
    return 0;
}

static const char *doc_scalar(yaml_document_t *doc, int id) {
    yaml_node_t *n = yaml_document_get_node(doc, id);
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The value of key in a mapping node (NULL: none, or not a mapping). */
static yaml_node_t *doc_value(yaml_document_t *doc, yaml_node_t *map, const char *key) {
    for (yaml_node_pair_t *p = map && map->type == YAML_MAPPING_NODE ? map->data.mapping.pairs.start
                                                                     : NULL;
         p && p < map->data.mapping.pairs.top; p++) {
        const char *k = doc_scalar(doc, p->key);
        if (k && !strcmp(canonical_key(k), canonical_key(key)))
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

/* Keeps a scalar model reference of document d (a non-scalar is load_document's to refuse). */
static int add_ref(doc_info *d, yaml_node_t *n) {
    if (!n || n->type != YAML_SCALAR_NODE) return 0;
    char **grown = realloc(d->refs, (d->n_refs + 1) * sizeof *grown);
    if (!grown) return -1;
    d->refs = grown;
    if (!(d->refs[d->n_refs] = strdup((const char *)n->data.scalar.value))) return -1;
    d->n_refs++;
    return 0;
}

static yaml_node_t *seq_item(yaml_document_t *doc, yaml_node_t *seq, size_t i) {
    return yaml_document_get_node(doc, seq->data.sequence.items.start[i]);
}

/* The models a mapping's models and slices name (the top level's, or module default's). */
static int input_refs(yaml_document_t *doc, yaml_node_t *map, doc_info *d) {
    yaml_node_t *models = doc_value(doc, map, "models"), *slices = doc_value(doc, map, "slices");
    for (size_t i = 0; models && models->type == YAML_SEQUENCE_NODE && i < items(models); i++) {
        yaml_node_t *m = seq_item(doc, models, i);
        if (add_ref(d, m->type == YAML_MAPPING_NODE ? doc_value(doc, m, "model") : m)) return -1;
    }
    for (size_t i = 0; slices && slices->type == YAML_SEQUENCE_NODE && i < items(slices); i++) {
        yaml_node_t *sl = seq_item(doc, slices, i), *src = doc_value(doc, sl, "sources");
        if (add_ref(d, doc_value(doc, sl, "base_model"))) return -1;
        for (size_t k = 0; src && src->type == YAML_SEQUENCE_NODE && k < items(src); k++)
            if (add_ref(d, doc_value(doc, seq_item(doc, src, k), "model"))) return -1;
    }
    return 0;
}

/* A document's name, own output and model references: where load_document reads models
 * (base_model, models and their `model`, slices' base_model and sources' `model`, at the
 * top level or in module default). */
static int document_info(yaml_document_t *doc, doc_info *d) {
    yaml_node_t *root = yaml_document_get_root_node(doc), *v;
    if (!root || root->type != YAML_MAPPING_NODE) return 0;
    const char *name = NULL, *out = NULL;
    if ((v = doc_value(doc, root, "name")) && v->type == YAML_SCALAR_NODE)
        name = (const char *)v->data.scalar.value;
    if ((v = doc_value(doc, root, "out")) && v->type == YAML_SCALAR_NODE)
        out = (const char *)v->data.scalar.value;
    if ((name && !(d->name = strdup(name))) || (out && !(d->out = strdup(out))) ||
        add_ref(d, doc_value(doc, root, "base")))
        return -1;
    if (input_refs(doc, root, d)) return -1;
    yaml_node_t *modules = doc_value(doc, root, "modules"), *m;
    return modules && modules->type == YAML_MAPPING_NODE &&
                   (m = doc_value(doc, modules, "default")) && m->type == YAML_MAPPING_NODE
               ? input_refs(doc, m, d)
               : 0;
}

static void docs_free(cfg_ctx *x) {
    for (size_t i = 0; i < x->n_docs; i++) {
        for (size_t k = 0; k < x->docs[i].n_refs; k++)
            free(x->docs[i].refs[k]);
        free(x->docs[i].refs);
        free(x->docs[i].name);
        free(x->docs[i].out);
    }
    free(x->docs);
}

static bool reads(const cfg_ctx *x, size_t d, size_t e);

/* A stage's name becomes a directory in the stage directory: one plain, new file name. At
 * most one document has neither a name nor an output of its own (mergekit-multi: "Multiple
 * unnamed merge configurations are not supported"): it is the final merge, written to -o;
 * without one, the last document that no other reads is. */
static int check_names(cfg_ctx *x) {
    x->final = x->n_docs ? x->n_docs - 1 : 0;
    for (size_t i = x->n_docs; i-- > 0;) {
        size_t d = 0;
        while (d < x->n_docs && !reads(x, d, i))
            d++;
        if (d == x->n_docs) {
            x->final = i;
            break;
        }
    }
    bool unnamed = false;
    for (size_t i = 0; i < x->n_docs; i++) {
        const char *n = x->docs[i].name;
        if (!n && !x->docs[i].out && x->n_docs > 1) {
            if (unnamed)
                return acem_fail(x->err,
                                 "%s: documents %zu and %zu have no \"name\" (nor \"out_path\"): "
                                 "in a file of several merges one at most is unnamed, the final "
                                 "merge",
                                 x->path, x->final + 1, i + 1);
            unnamed = true;
            x->final = i;
        }
        if (n && (!*n || strchr(n, '/') || !strcmp(n, ".") || !strcmp(n, "..")))
            return acem_fail(x->err, "%s: document %zu: name \"%s\" must be a plain file name",
                             x->path, i + 1, n);
        for (size_t j = 0; n && j < i; j++)
            if (x->docs[j].name && !strcmp(x->docs[j].name, n))
                return acem_fail(x->err, "%s: documents %zu and %zu are both named \"%s\"", x->path,
                                 j + 1, i + 1, n);
    }
    return 0;
}

/* Whether document d reads document e's merge: a model reference equal to e's name, or to
 * e's own output path as written (mergekit-mega). */
static bool reads(const cfg_ctx *x, size_t d, size_t e) {
    const doc_info *de = &x->docs[e];
    for (size_t k = 0; d != e && k < x->docs[d].n_refs; k++) {
        const char *r = x->docs[d].refs[k];
        if ((de->name && !strcmp(r, de->name)) || (de->out && !strcmp(r, de->out))) return true;
    }
    return false;
}

/* The order the documents run in, as mergekit-multi's task graph runs them: every merge after
 * the merges it reads; among those ready, the file's order; the final merge last. A cycle,
 * a document reading itself or the final merge, is refused before anything runs. */
static int order_documents(cfg_ctx *x, size_t *order) {
    bool *done = acem_alloc(x->n_docs + 1, sizeof *done, "the document order", x->err);
    if (!done) return -1;
    int rc = 0;
    for (size_t i = 0; i < x->n_docs && !rc; i++) {
        if (reads(x, i, x->final))
            rc = acem_fail(x->err, "%s: document %zu reads the final merge (document %zu)", x->path,
                           i + 1, x->final + 1);
        for (size_t r = 0; r < x->docs[i].n_refs && !rc; r++)
            if (x->docs[i].name && !strcmp(x->docs[i].refs[r], x->docs[i].name))
                rc = acem_fail(x->err, "%s: document %zu (\"%s\") reads its own merge", x->path,
                               i + 1, x->docs[i].name);
    }
    for (size_t n = 0; n + 1 < x->n_docs && !rc; n++) {
        size_t pick = 0;
        for (; pick < x->n_docs; pick++) {
            bool ready = !done[pick] && pick != x->final;
            for (size_t e = 0; ready && e < x->n_docs; e++)
                ready = done[e] || !reads(x, pick, e);
            if (ready) break;
        }
        if (pick == x->n_docs) {
            size_t i = 0;
            while (done[i] || i == x->final)
                i++;
            rc = acem_fail(x->err,
                           "%s: document %zu is in a cycle of merges that read each other's "
                           "outputs",
                           x->path, i + 1);
            break;
        }
        done[pick] = true;
        if (order) order[n] = pick;
    }
    if (!rc && order) order[x->n_docs - 1] = x->final;
    free(done);
    return rc;
}

/* Every document's name, output and references, read in a first pass (a reference to a name
 * must know which document it is), then checked: names, and an order that exists. */
static int scan_documents(cfg_ctx *x, acem_error *err) {
    FILE *f = open_config(x->path, err);
    if (!f) return -1;
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = 0;
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            rc = acem_fail(err, "%s:%zu: %s", x->path, parser.problem_mark.line + 1,
                           parser.problem ? parser.problem : "invalid YAML");
            break;
        }
        bool end = !yaml_document_get_root_node(&doc);
        doc_info *grown = end || x->n_docs >= CONFIG_MAX_LIST
                              ? NULL
                              : realloc(x->docs, (x->n_docs + 1) * sizeof *grown);
        if (grown) {
            x->docs = grown;
            memset(&x->docs[x->n_docs], 0, sizeof *grown);
            if (document_info(&doc, &x->docs[x->n_docs++]))
                rc = acem_fail(err, "out of memory reading the config");
        } else if (!end) {
            rc = x->n_docs >= CONFIG_MAX_LIST
                     ? acem_fail(err, "%s: too many YAML documents", x->path)
                     : acem_fail(err, "out of memory reading the config");
        }
        yaml_document_delete(&doc);
        if (end || rc) break;
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc || check_names(x) || order_documents(x, NULL) ? -1 : 0;
}

/* Document x->doc of the file into c and the options. */
static int load_document(cfg_ctx *x, yaml_parser_t *parser) {
    acem_config *c = x->c;
    acem_merge_options *o = x->o;
    if (config_dir(x->path, &x->dir, x->err) || !(c->settings = settings_new(0, x->err))) return -1;
    for (size_t i = 0; i <= x->doc; i++) {
        if (c->loaded) yaml_document_delete(&c->doc);
        c->loaded = false;
        if (!yaml_parser_load(parser, &c->doc))
            return acem_fail(x->err, "%s:%zu: %s", x->path, parser->problem_mark.line + 1,
                             parser->problem ? parser->problem : "invalid YAML");
        c->loaded = true;
    }
    yaml_node_t *root = yaml_document_get_root_node(&c->doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        return acem_fail(x->err, "%s: the top level must be a mapping of keys", x->path);
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(x, node(x, p->key), "key");
        if (!k || check_repeated(x, root->data.mapping.pairs.start, p, k) ||
            top_level_key(x, k, node(x, p->value)))
            return -1;
    }
    read_dtypes(x);
    if (c->settings->n_slices) {
        if (slice_inputs(x)) return -1;
    } else {
        drop_listed_base(c, o);
        base_to_front(c, o);
    }
    o->settings = c->settings;
    return 0;
}

/* A named document other than the final merge is written to stage_dir/NAME (one with only
 * an out_path, mergekit-mega's, to that path). */
static int stage_output(cfg_ctx *x) {
    if (x->doc == x->final || !x->docs[x->doc].name) return 0;
    if (x->o->out)
        return acem_fail(x->err, "%s: document %zu (\"%s\"): its output is %s/%s, not \"%s\"",
                         x->path, x->doc + 1, x->docs[x->doc].name, x->stage_dir,
                         x->docs[x->doc].name, x->o->out);
    acem_config *c = x->c;
    char *joined = acem_path_join(x->stage_dir, x->docs[x->doc].name, x->err);
    char **grown = joined ? realloc(c->paths, (c->n_paths + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(joined);
        return acem_fail(x->err, "out of memory reading the config");
    }
    c->paths = grown;
    c->cap_paths = c->n_paths + 1;
    x->o->out = c->paths[c->n_paths++] = joined;
    return 0;
}

int acem_config_load_stage(const char *path, size_t doc, const char *stage_dir, acem_config **out,
                           acem_merge_options *o, acem_error *err) {
    *out = NULL;
    cfg_ctx x = {.path = path,
                 .o = o,
                 .err = err,
                 .dtype = ACEM_OUT_INVALID,
                 .out_dtype = ACEM_OUT_INVALID,
                 .doc = doc,
                 .stage_dir = stage_dir};
    int rc = scan_documents(&x, err);
    if (!rc && doc >= x.n_docs)
        rc = acem_fail(err, "%s: holds %zu YAML documents, not %zu", path, x.n_docs, doc + 1);
    if (!rc && x.n_docs > 1 && !stage_dir)
        rc = acem_fail(err,
                       "%s: holds %zu merges (a mergekit-multi file); `acem merge` runs them in "
                       "turn",
                       path, x.n_docs);
    FILE *f = rc ? NULL : open_config(path, err);
    acem_config *c = f ? acem_alloc(1, sizeof *c, "the config", err) : NULL;
    if (c) {
        x.c = c;
        yaml_parser_t parser;
        yaml_parser_initialize(&parser);
        yaml_parser_set_input_file(&parser, f);
        rc = load_document(&x, &parser) || stage_output(&x) ? -1 : 0;
        yaml_parser_delete(&parser);
    } else {
        rc = -1;
    }
    if (f) fclose(f);
    free(x.dir);
    docs_free(&x);
    if (rc) {
        acem_config_free(c);
        return acem_fail_naming(err, path);
    }
    o->config_path = path; /* an input: no output of the run may replace it */
    *out = c;
    return 0;
}

int acem_config_load(const char *path, acem_config **out, acem_merge_options *o, acem_error *err) {
    return acem_config_load_stage(path, 0, NULL, out, o, err);
}

int acem_config_count(const char *path, size_t *n, acem_error *err) {
    cfg_ctx x = {.path = path, .err = err};
    int rc = scan_documents(&x, err);
    *n = x.n_docs;
    docs_free(&x);
    return rc ? acem_fail_naming(err, path) : 0;
}

int acem_config_order(const char *path, size_t *order, size_t n, acem_error *err) {
    cfg_ctx x = {.path = path, .err = err};
    int rc = scan_documents(&x, err);
    if (!rc && x.n_docs != n)
        rc = acem_fail(err, "%s: holds %zu YAML documents, not %zu", path, x.n_docs, n);
    if (!rc) rc = order_documents(&x, order);
    docs_free(&x);
    return rc ? acem_fail_naming(err, path) : 0;
}

const char *acem_config_name(const acem_config *c) { return c->name; }

const char *const *acem_config_warnings(const acem_config *c, size_t *n) {
    *n = (size_t)c->settings->n_notes;
    return (const char *const *)c->settings->notes;
}
