/* card.c — a merged output describes itself: the resolved configuration as YAML that
 * `acem merge` accepts (every path absolute, so that it rebuilds the merge from anywhere;
 * docs/config.md), stored in the output's metadata and, in a directory output, as
 * acem_config.yaml beside a model card (README.md) written for the merge, not copied
 * from the base; and config.json's dtype brought up to date when --dtype changed it. */
#include "card.h"
#include "arch/layers.h"
#include "params.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_NAME "acem_config.yaml"

/* A growing text; `failed` once an allocation failed. */
typedef struct text {
    char *buf;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *fmt, ...) ACEM_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...) {
    for (int attempt = 0; attempt < 2 && !t->failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
        } else if (t->buf && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        } else {
            size_t cap = (t->cap + (size_t)n + 1) * 2;
            char *b = realloc(t->buf, cap);
            if (!b) t->failed = true;
            t->buf = b ? b : t->buf;
            t->cap = b ? cap : t->cap;
        }
    }
}

/* A YAML double-quoted scalar: backslash, quote and control characters escaped. */
static void put_quoted(text *t, const char *s) {
    put(t, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            put(t, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            put(t, "\\x%02x", *p);
        else
            put(t, "%c", *p);
    }
    put(t, "\"");
}

/* The absolute form of a path that names an input (it exists). */
static void put_path(text *t, const char *path) {
    char real[PATH_MAX], adapter[PATH_MAX], both[2 * PATH_MAX + 1];
    acem_ref ref;
    if (realpath(path, real)) {
        put_quoted(t, real);
    } else if (!acem_ref_resolve(path, NULL, &ref, NULL)) { /* MODEL+ADAPTER, side by side */
        bool ok = ref.adapter && realpath(ref.model, real) && realpath(ref.adapter, adapter);
        if (ok) snprintf(both, sizeof both, "%s+%s", real, adapter);
        put_quoted(t, ok ? both : path);
        acem_ref_free(&ref);
    } else {
        put_quoted(t, path);
    }
}

/* A value of a setting: a number, or a gradient [v0, ...], each as the shortest digits that
 * read back as the same double. */
static void put_value(text *t, const setting_cond *c) {
    char num[32];
    put(t, c->n > 1 ? "[" : "");
    for (int i = 0; i < c->n; i++)
        put(t, "%s%s", i ? ", " : "", acem_format_double(c->v[i], num, sizeof num));
    put(t, c->n > 1 ? "]" : "");
}

/* A setting as the config gave it: a value, or its {filter, value} conditions in order. */
static void put_setting(text *t, const setting *st, int indent) {
    put(t, "%*s%s:", indent, "", st->name);
    if (st->n_cond == 1 && !st->cond[0].filter) {
        put(t, " ");
        put_value(t, &st->cond[0]);
        put(t, "\n");
        return;
    }
    put(t, "\n");
    for (int i = 0; i < st->n_cond; i++) {
        put(t, "%*s- {", indent + 2, "");
        if (st->cond[i].filter) {
            put(t, "filter: ");
            put_quoted(t, st->cond[i].filter);
            put(t, ", ");
        }
        put(t, "value: ");
        put_value(t, &st->cond[i]);
        put(t, "}\n");
    }
}

/* A model's or a slice's own `parameters:` (with mergekit's dialect an empty one too, which
 * is what keeps a rerun in that dialect: docs/config.md). */
static void put_settings(text *t, const setting_list *l, int indent, bool mergekit) {
    if (!l->n && !mergekit) return;
    put(t, "%*sparameters:%s\n", indent, "", l->n ? "" : " {}");
    for (int i = 0; i < l->n; i++)
        put_setting(t, &l->s[i], indent + 2);
}

static bool flagged(const acem_merge_options *o, const char *key) {
    for (int i = 0; i < o->n_params; i++)
        if (!strcmp(o->params[i].key, key)) return true;
    return false;
}

/* tokenizer.tokens, each entry as the config gave it (models as absolute paths). */
static void put_tokens(text *t, const acem_merge_options *o) {
    if (o->n_tokens) put(t, "  tokens:\n");
    for (int i = 0; i < o->n_tokens; i++) {
        const acem_token_spec *s = &o->tokens[i];
        put(t, "    ");
        put_quoted(t, s->token);
        put(t, ":\n      force: %s\n      source:", s->force ? "true" : "false");
        if (!s->model) {
            put(t, " {kind: zero}\n");
            continue;
        }
        put(t, s->source_token || s->source_id >= 0 ? "\n        kind: model_token\n        model: "
                                                    : " ");
        put_path(t, s->model);
        if (s->source_token) {
            put(t, "\n        token: ");
            put_quoted(t, s->source_token);
        } else if (s->source_id >= 0) {
            put(t, "\n        token_id: %lld", s->source_id);
        }
        put(t, "\n");
    }
}

/* "lambda=0.3 density=0.2 seed=7" (the summary's resolved parameters) as YAML: the seed is
 * a top-level key, the rest are method parameters, each the run's value or, where the
 * config's top level set a gradient or conditions and no --param overrode them, that setting
 * as given. */
static void put_params(text *t, const char *method, const char *params,
                       const acem_merge_options *o) {
    char *copy = strdup(params), *save = NULL;
    if (!copy) {
        t->failed = true;
        return;
    }
    put(t, "parameters:\n");
    const char *seed = NULL;
    for (char *kv = strtok_r(copy, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) continue;
        *eq = 0;
        const setting *st = o->settings ? settings_find(&o->settings->top, kv) : NULL;
        if (st && st->n_cond == 1 && !st->cond[0].filter && st->cond[0].n == 1)
            st = NULL; /* a plain number is the run's value, as the method names it */
        if (!strcmp(kv, "seed"))
            seed = eq + 1;
        else if (!strcmp(kv, "lambda") && acem_method_merges_weights(method))
            continue; /* not read: a rerun would warn */
        else if (st && !flagged(o, kv))
            put_setting(t, st, 2);
        else
            put(t, "  %s: %s\n", kv, eq + 1);
    }
    if (seed) put(t, "seed: %s\n", seed);
    free(copy);
}

/* The models with their own parameters, when the settings are still theirs (--model
 * replaces a config's models only where they have none). */
static void put_models(text *t, const acem_merge_options *o) {
    const acem_settings *st = o->settings;
    bool own = st && st->n_models == o->n_models;
    put(t, "models:\n");
    for (int i = 0; i < o->n_models; i++) {
        put(t, "  - model: ");
        put_path(t, o->models[i]);
        if (o->grams && o->grams[i]) {
            put(t, "\n    gram: ");
            put_path(t, o->grams[i]);
        }
        put(t, "\n");
        if (own) put_settings(t, &st->models[i], 4, st->mergekit);
    }
}

/* With slices: every slice's sources (model, layer_range, parameters) and parameters. */
static void put_slices(text *t, const acem_settings *st) {
    put(t, "slices:\n");
    for (int i = 0; i < st->n_slices; i++) {
        const slice_def *sl = &st->slices[i];
        put(t, "  - sources:\n");
        for (int k = 0; k < sl->n_sources; k++) {
            put(t, "      - model: ");
            put_path(t, sl->sources[k].model);
            put(t, "\n        layer_range: [%ld, %ld]\n", sl->sources[k].start, sl->sources[k].end);
            put_settings(t, &sl->sources[k].params, 8, false);
        }
        put_settings(t, &sl->params, 4, false);
    }
}

char *card_config_yaml(const acem_merge_options *o, const acem_merge_summary *s, acem_error *err) {
    text t = {0};
    put(&t, "# The configuration acem %s resolved for this merge:\n", ACEM_VERSION);
    put(&t, "#   acem merge acem_config.yaml -o OUT\n# rebuilds it (docs/config.md).\n");
    put(&t, "merge_method: %s\nbase_model: ", s->method);
    put_path(&t, o->base);
    put(&t, "\n");
    if (o->settings && o->settings->n_slices)
        put_slices(&t, o->settings);
    else
        put_models(&t, o);
    put_params(&t, s->method, s->params, o);
    if (o->out_type != ACEM_OUT_KEEP) put(&t, "out_dtype: %s\n", acem_out_type_name(o->out_type));
    put(&t, "precision: %s\n", o->precision == ACEM_DT_F64 ? "f64" : "f32");
    if (o->preset) put(&t, "preset: %s\n", o->preset);
    if (o->n_excludes) put(&t, "exclude:\n");
    for (int i = 0; i < o->n_excludes; i++) {
        put(&t, "  - ");
        put_quoted(&t, o->excludes[i]);
        put(&t, "\n");
    }
    if (o->tokenizer_source) { /* base and union as words, a model as its absolute path */
        bool word = !strcmp(o->tokenizer_source, "base") || !strcmp(o->tokenizer_source, "union");
        put(&t, "tokenizer:\n  source: ");
        if (word)
            put(&t, "%s", o->tokenizer_source);
        else
            put_path(&t, o->tokenizer_source);
        if (o->pad_to_multiple_of) put(&t, "\n  pad_to_multiple_of: %d", o->pad_to_multiple_of);
        put(&t, "\n");
        put_tokens(&t, o);
    }
    if (o->chat_template) {
        put(&t, "chat_template: ");
        put_quoted(&t, o->chat_template);
        put(&t, "\n");
    }
    if (o->covariance_axis_input) put(&t, "covariance_axis: input\n");
    if (o->allow_nonfinite) put(&t, "allow_nonfinite: true\n");
    if (o->max_shard_size) put(&t, "max_shard_size: %llu\n", (unsigned long long)o->max_shard_size);
    if (t.failed || !t.buf) {
        free(t.buf);
        acem_fail(err, "out of memory writing the configuration");
        return NULL;
    }
    return t.buf;
}

static int write_new(const char *dir, const char *name, const char *data, acem_error *err) {
    char *path = acem_path_join(dir, name, err);
    if (!path) return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    size_t n = strlen(data);
    int rc = fd >= 0 && write(fd, data, n) == (ssize_t)n && fsync(fd) == 0 ? 0 : -1;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && !rc) {
        rc = -1;
        e = errno;
    }
    if (rc) acem_fail(err, "%s: cannot write: %s", path, strerror(e));
    free(path);
    return rc;
}

/* "org/name" of a base in the Hugging Face cache (.../models--org--name/snapshots/REV), for
 * the card's base_model, which the Hub reads as a repository id. */
static bool hub_id(const char *base, char *id, size_t len) {
    char real[PATH_MAX];
    if (!realpath(base, real)) return false;
    char *snap = strstr(real, "/snapshots/");
    if (!snap) return false;
    *snap = 0;
    const char *repo = strrchr(real, '/');
    repo = repo ? repo + 1 : real;
    if (strncmp(repo, "models--", 8) != 0) return false;
    snprintf(id, len, "%s", repo + 8);
    char *sep = strstr(id, "--");
    if (!sep) return false;
    memmove(sep + 1, sep + 2, strlen(sep + 2) + 1);
    *sep = '/';
    return true;
}

static char *model_card(const acem_merge_options *o, const acem_merge_summary *s,
                        const char *yaml) {
    text t = {0};
    char id[PATH_MAX];
    put(&t, "---\n");
    if (hub_id(o->base, id, sizeof id)) put(&t, "base_model: %s\n", id);
    put(&t, "tags:\n- merge\n- acem\n- %s\n---\n\n", s->method);
    put(&t,
        "# Merged model\n\nA data-free merge (no data, no training) of %d experts fine-tuned "
        "from one base model, made with acem %s.\n\n",
        o->n_models, ACEM_VERSION);
    put(&t, "- **Method**: `%s` (%s)\n- **Base**: `%s`\n- **Experts**:", s->method, s->params,
        o->base);
    for (int i = 0; i < o->n_models; i++)
        put(&t, "%s `%s`", i ? "," : "", o->models[i]);
    put(&t, "\n- **Stored as**: %s\n- **Covariance axis**: %s\n\n", acem_out_type_name(o->out_type),
        s->covariance_axis[0] ? s->covariance_axis : "none");
    put(&t, "For every tensor, each expert's delta from the base is combined by the method and "
            "added back to the base (acem's docs/methods.md states each formula).\n\n");
    put(&t,
        "## Configuration\n\n`%s` beside this file; `acem merge %s -o OUT` rebuilds this "
        "merge:\n\n```yaml\n%s```\n",
        CONFIG_NAME, CONFIG_NAME, yaml);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    return t.buf;
}

/* torch_dtype (and transformers' newer "dtype") name the stored type. */
static const char *torch_name(acem_dtype dt) {
    switch (dt) {
    case ACEM_DT_F16: return "float16";
    case ACEM_DT_BF16: return "bfloat16";
    case ACEM_DT_F64: return "float64";
    default: return "float32";
    }
}

/* config.json's entries that the merge changed: the stored dtype when a --dtype float type
 * replaced the base's, the layer count when slices renumbered the layers (mergekit writes
 * the output's count into the key its architecture names: num_hidden_layers, GPT-2's
 * n_layer). */
static void update_entries(cJSON *root, acem_dtype dt, long n_layers) {
    if (dt != ACEM_DT_NONE) {
        bool newer =
            cJSON_HasObjectItem(root, "dtype") && !cJSON_HasObjectItem(root, "torch_dtype");
        const char *key = newer ? "dtype" : "torch_dtype";
        cJSON_DeleteItemFromObjectCaseSensitive(root, key);
        cJSON_AddStringToObject(root, key, torch_name(dt));
    }
    for (int i = 0; n_layers >= 0 && arch_layer_count_keys[i]; i++)
        if (cJSON_HasObjectItem(root, arch_layer_count_keys[i]))
            cJSON_ReplaceItemInObjectCaseSensitive(root, arch_layer_count_keys[i],
                                                   cJSON_CreateNumber((double)n_layers));
}

cJSON *card_read_json(const char *dir, const char *name) {
    char *path = acem_path_join(dir, name, NULL);
    FILE *f = path ? fopen(path, "rb") : NULL;
    char *buf = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (64L << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (f) fclose(f);
    free(path);
    cJSON *root = buf ? cJSON_ParseWithLength(buf, (size_t)n) : NULL;
    free(buf);
    if (cJSON_IsObject(root)) return root;
    cJSON_Delete(root);
    return NULL;
}

int card_write_json(const char *dir, const char *name, const cJSON *root, acem_error *err) {
    char *json = cJSON_Print(root);
    size_t len = json ? strlen(json) : 0;
    char *with_newline = json ? realloc(json, len + 2) : NULL;
    if (!with_newline) {
        free(json);
        return acem_fail(err, "out of memory writing %s", name);
    }
    memcpy(with_newline + len, "\n", 2);
    int rc = write_new(dir, name, with_newline, err);
    free(with_newline);
    return rc;
}

/* config.json copied from the base is brought up to date (update_entries). A config.json
 * that is not a JSON object is left as it is: it was copied, not written. */
static int update_config_json(const char *dir, acem_out_type type, long n_layers, acem_error *err) {
    acem_dtype dt = acem_out_type_dtype(type);
    cJSON *root = dt == ACEM_DT_NONE && n_layers < 0 ? NULL : card_read_json(dir, "config.json");
    if (!root) return 0;
    update_entries(root, dt, n_layers);
    int rc = card_write_json(dir, "config.json", root, err);
    cJSON_Delete(root);
    return rc;
}

int card_write(const char *dir, const acem_merge_options *o, const acem_merge_summary *s,
               const char *yaml, long n_layers, acem_error *err) {
    char *card = model_card(o, s, yaml);
    if (!card) return acem_fail(err, "out of memory writing the model card");
    int rc = write_new(dir, CONFIG_NAME, yaml, err) || write_new(dir, "README.md", card, err) ||
                     update_config_json(dir, o->out_type, n_layers, err)
                 ? -1
                 : 0;
    free(card);
    return rc;
}
