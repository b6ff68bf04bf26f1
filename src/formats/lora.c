/* lora.c — a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors,
 * or PEFT's older adapter_model.bin) applied to a model, tensor by tensor, as PEFT's
 * merge_and_unload computes it (peft/tuners/lora/layer.py, get_delta_weight):
 *
 *   Linear:    W = W0 + s * B A              (transposed when fan_in_fan_out: Conv1D weights)
 *   Embedding: W = W0 + s * (B A)^T          (lora_embedding_A / lora_embedding_B)
 *   s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora
 *
 * with A = "base_model.model.<module>.lora_A.weight" (r x in), B = "...lora_B.weight"
 * (out x r), W0 the model's "<module>.weight". Any other tensor of the adapter (its
 * modules_to_save, trained biases, an embedding saved by save_embedding_layers) replaces
 * the model's tensor of that name, as W0 when factors apply to it too. A read of
 * elements [e0, e0 + n) computes only the rows it covers, from B's rows (or A's columns)
 * and all of the other factor: nothing larger than the factors is ever held. */
#include "formats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEFT_PREFIX "base_model.model."

struct lora {
    char *dir, *file;
    int fd;
    st_header h;    /* the adapter's tensors */
    double scale;   /* s */
    lora_use *uses; /* per tensor of the model (by index): what replaces or changes it */
    size_t n_uses;
};

const char *lora_dir(const lora *l) { return l->dir; }

void lora_close(lora *l) {
    if (!l) return;
    if (l->fd >= 0) close(l->fd);
    st_header_free(&l->h);
    free(l->uses);
    free(l->file);
    free(l->dir);
    free(l);
}

static cJSON *read_config(const char *dir, char **path, acem_error *err) {
    size_t len;
    char *text = NULL;
    *path = acem_path_join(dir, "adapter_config.json", err);
    if (*path && !acem_check_model_link(dir, *path, err))
        text = acem_read_small_file(*path, ACEM_INDEX_MAX_BYTES, &len, err);
    if (!text) return NULL;
    cJSON *root =
        acem_utf8_valid((unsigned char *)text, len) ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (!cJSON_IsObject(root)) {
        acem_json_error(*path, root ? 0 : len, "not a valid JSON object", err);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int lora_base_model(const char *dir, char **base, acem_error *err) {
    char *path;
    cJSON *root = read_config(dir, &path, err);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "base_model_name_or_path");
    *base = NULL;
    int rc = root ? 0 : -1;
    if (root && cJSON_IsString(b) && *b->valuestring && !(*base = acem_strdup(b->valuestring, err)))
        rc = -1;
    cJSON_Delete(root);
    free(path);
    return rc;
}

static bool truthy(const cJSON *c) {
    return c && !cJSON_IsNull(c) && !cJSON_IsFalse(c) && !(cJSON_IsObject(c) && !c->child) &&
           !(cJSON_IsArray(c) && !c->child) && !(cJSON_IsString(c) && !*c->valuestring);
}

/* What changes the math beyond B A is refused by name: acem would silently compute another
 * model (DoRA's magnitudes, per-module ranks and alphas, biases on lora_B, ...). */
static int check_supported(const cJSON *root, const char *path, acem_error *err) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "LORA") != 0)
        return acem_fail(err, "%s: peft_type is %s%s%s, not LORA: acem applies LoRA adapters only",
                         path, cJSON_IsString(type) ? "\"" : "",
                         cJSON_IsString(type) ? type->valuestring : "missing",
                         cJSON_IsString(type) ? "\"" : "");
    static const char *const refused[][2] = {
        {"use_dora", "DoRA (weight-decomposed LoRA)"},
        {"rank_pattern", "per-module ranks (rank_pattern)"},
        {"alpha_pattern", "per-module alphas (alpha_pattern)"},
        {"lora_bias", "biases on lora_B (lora_bias)"},
        {"use_qalora", "QA-LoRA"},
        {"layer_replication", "layer_replication"},
        {"target_parameters", "LoRA on parameters (target_parameters)"},
        {"trainable_token_indices", "trainable tokens (trainable_token_indices)"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (truthy(cJSON_GetObjectItemCaseSensitive(root, refused[i][0])))
            return acem_fail(err, "%s: the adapter uses %s, which acem does not apply", path,
                             refused[i][1]);
    /* These initialisations subtract their initial B A from the base weights: the adapter
     * fits that residual model, not its base, until PEFT converts it (save_pretrained's
     * path_initial_model_for_weight_conversion, which writes a plain LoRA). */
    static const char *const residual[] = {"pissa", "olora", "corda", "loftq"};
    const cJSON *init = cJSON_GetObjectItemCaseSensitive(root, "init_lora_weights");
    for (size_t i = 0; cJSON_IsString(init) && i < sizeof residual / sizeof *residual; i++)
        if (!strncasecmp(init->valuestring, residual[i], strlen(residual[i])))
            return acem_fail(err,
                             "%s: init_lora_weights \"%s\" changes the base weights, so the "
                             "adapter fits only that changed model; convert it to a plain LoRA "
                             "(PEFT's save_pretrained with path_initial_model_for_weight_"
                             "conversion)",
                             path, init->valuestring);
    return 0;
}

static int get_bool(const cJSON *root, const char *key, bool *v, const char *path,
                    acem_error *err) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, key);
    if (c && !cJSON_IsBool(c) && !cJSON_IsNull(c))
        return acem_fail(err, "%s: %s must be true or false", path, key);
    *v = cJSON_IsTrue(c);
    return 0;
}

/* r, lora_alpha, use_rslora, fan_in_fan_out: s and the orientation of Linear weights. */
static int read_scale(const cJSON *root, const char *path, lora *l, bool *fan_in_fan_out, int *r,
                      acem_error *err) {
    const cJSON *rank = cJSON_GetObjectItemCaseSensitive(root, "r");
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
    bool rs = false;
    if (!cJSON_IsNumber(rank) || rank->valuedouble < 1 || rank->valuedouble > 65536 ||
        floor(rank->valuedouble) != rank->valuedouble)
        return acem_fail(err, "%s: r must be a positive integer", path);
    if (!cJSON_IsNumber(alpha) || !isfinite(alpha->valuedouble))
        return acem_fail(err, "%s: lora_alpha must be a number", path);
    if (get_bool(root, "use_rslora", &rs, path, err) ||
        get_bool(root, "fan_in_fan_out", fan_in_fan_out, path, err))
        return -1;
    *r = (int)rank->valuedouble;
    l->scale = alpha->valuedouble / (rs ? sqrt((double)*r) : (double)*r);
    return 0;
}

/* PEFT's check_target_module_exists: a module (len bytes) is named by an entry when it is
 * the entry or ends with "." and the entry. */
static bool names(const cJSON *entry, const char *module, size_t len) {
    size_t k = cJSON_IsString(entry) ? strlen(entry->valuestring) : 0;
    return k && k <= len && !memcmp(module + len - k, entry->valuestring, k) &&
           (k == len || module[len - k - 1] == '.');
}

/* target_modules as a list; a string (a regex, "all-linear") is PEFT's to interpret and
 * is not checked. */
static bool targeted(const cJSON *targets, const char *module, size_t len) {
    if (!cJSON_IsArray(targets)) return true;
    for (const cJSON *t = targets->child; t; t = t->next)
        if (names(t, module, len)) return true;
    return false;
}

static bool ends_with(const char *s, size_t n, const char *tail, size_t *stem) {
    size_t k = strlen(tail);
    if (n < k || memcmp(s + n - k, tail, k) != 0) return false;
    *stem = n - k;
    return true;
}

/* Which factor an adapter tensor is: 'A' or 'B' (embedding: set *embedding), or 0 for a
 * whole tensor; *module is the model tensor's name it belongs to ("<module>.weight"; a
 * whole tensor's own name, without the ".base_layer" of a layer PEFT wraps). */
static char factor_of(const char *name, char *module, size_t cap, bool *embedding) {
    const char *n = name + strlen(PEFT_PREFIX);
    size_t len = strlen(n), stem;
    static const char *const tails[] = {".lora_A.weight", ".lora_B.weight", ".lora_embedding_A",
                                        ".lora_embedding_B"};
    for (int i = 0; i < 4; i++)
        if (ends_with(n, len, tails[i], &stem) && stem + 8 < cap) {
            snprintf(module, cap, "%.*s.weight", (int)stem, n);
            *embedding = i >= 2;
            return i % 2 ? 'B' : 'A';
        }
    const char *wrapped = strstr(n, ".base_layer.");
    if (wrapped && !strchr(wrapped + 12, '.'))
        snprintf(module, cap, "%.*s.%s", (int)(wrapped - n), n, wrapped + 12);
    else
        snprintf(module, cap, "%s", n);
    return 0;
}

static int shape_error(const lora *l, const char *name, const acem_tensor *w, int r,
                       acem_error *err) {
    return acem_fail(err,
                     "%s: tensor \"%s\": its shape does not fit the model's \"%s\" (%dD, "
                     "%llu x %llu) with rank r = %d",
                     l->file, name, w->name, w->ndim, (unsigned long long)w->shape[0],
                     (unsigned long long)(w->ndim > 1 ? w->shape[1] : 1), r);
}

/* A's and B's shapes against W (rows x cols): B A is (rows x cols), or its transpose. */
static bool factors_fit(const lora_use *u, const acem_tensor *w, int r) {
    const acem_tensor *a = u->a, *b = u->b;
    if (a->ndim != 2 || b->ndim != 2 || w->ndim != 2 || a->shape[0] != (uint64_t)r ||
        b->shape[1] != (uint64_t)r)
        return false;
    uint64_t out = b->shape[0], in = a->shape[1];
    return u->transposed ? w->shape[0] == in && w->shape[1] == out
                         : w->shape[0] == out && w->shape[1] == in;
}

/* Binds one adapter tensor to the model tensor it changes or replaces. */
static int bind(lora *l, const acem_checkpoint *model, const acem_tensor *x, const cJSON *targets,
                bool fan_in_fan_out, acem_error *err) {
    char module[4096];
    bool embedding = false;
    if (strncmp(x->name, PEFT_PREFIX, strlen(PEFT_PREFIX)) != 0)
        return acem_fail(err, "%s: tensor \"%s\" is not named as PEFT saves adapters (%s...)",
                         l->file, x->name, PEFT_PREFIX);
    char f = factor_of(x->name, module, sizeof module, &embedding);
    const acem_tensor *w = acem_checkpoint_find(model, module);
    if (!w)
        return acem_fail(err, "%s: tensor \"%s\" is for \"%s\", which the model %s lacks", l->file,
                         x->name, module, acem_checkpoint_path(model));
    if (!acem_dtype_is_mergeable(x->dtype) || !acem_dtype_is_mergeable(w->dtype))
        return acem_fail(err, "%s: tensor \"%s\": adapter and model tensors must be floats",
                         l->file, x->name);
    lora_use *u = &l->uses[w - acem_checkpoint_at(model, 0)];
    if (f && !targeted(targets, module, strlen(module) - 7))
        return acem_fail(err,
                         "%s: tensor \"%s\" adapts a module that target_modules does not name; the "
                         "weights and adapter_config.json disagree",
                         l->file, x->name);
    bool same_shape = x->numel == w->numel && x->ndim == w->ndim &&
                      !memcmp(x->shape, w->shape, sizeof x->shape[0] * (size_t)x->ndim);
    bool transposed = embedding || fan_in_fan_out, paired = u->a || u->b;
    if (!f && !u->full && same_shape) { /* a whole tensor: LoRA factors apply on top of it */
        u->full = x;
        return 0;
    }
    if (!f || (f == 'A' ? u->a : u->b) || (paired && u->transposed != transposed))
        return acem_fail(err,
                         "%s: tensor \"%s\" %s the model's \"%s\"; acem applies lora_A / lora_B "
                         "pairs and whole tensors of the model's shape (modules_to_save)",
                         l->file, x->name, f ? "is a second change of" : "does not match", module);
    *(f == 'A' ? &u->a : &u->b) = x;
    u->transposed = transposed;
    return 0;
}

/* Every module with both factors of fitting shapes; every modules_to_save entry present. */
static int check_pairs(lora *l, const acem_checkpoint *model, const cJSON *root, int r,
                       acem_error *err) {
    for (size_t i = 0; i < l->n_uses; i++) {
        lora_use *u = &l->uses[i];
        const acem_tensor *w = acem_checkpoint_at(model, i);
        if (!u->a != !u->b)
            return acem_fail(err, "%s: \"%s\" has lora_%s but not lora_%s", l->file, w->name,
                             u->a ? "A" : "B", u->a ? "B" : "A");
        if (u->a && !factors_fit(u, w, r)) return shape_error(l, u->a->name, w, r, err);
    }
    const cJSON *save = cJSON_GetObjectItemCaseSensitive(root, "modules_to_save");
    for (const cJSON *m = cJSON_IsArray(save) ? save->child : NULL; m; m = m->next) {
        bool found = false;
        for (size_t i = 0; cJSON_IsString(m) && i < l->n_uses && !found; i++) {
            const acem_tensor *w = acem_checkpoint_at(model, i);
            const char *dot = strrchr(w->name, '.');
            found = l->uses[i].full && dot && names(m, w->name, (size_t)(dot - w->name));
        }
        if (!found)
            return acem_fail(err,
                             "%s: modules_to_save names \"%s\", but the adapter holds no "
                             "tensor of it that the model has",
                             l->file, cJSON_IsString(m) ? m->valuestring : "?");
    }
    return 0;
}

/* adapter_model.safetensors, else the adapter_model.bin that PEFT wrote before 0.7
 * (torch.save's zip archive, read by the restricted unpickler; its tensors must be stored
 * whole, as torch.save stores parameters). */
static int open_weights(lora *l, acem_error *err) {
    static const char *const names[] = {"adapter_model.safetensors", "adapter_model.bin"};
    struct stat st;
    bool bin = false;
    for (int i = 0; i < 2 && !l->file; i++) {
        char *p = acem_path_join(l->dir, names[i], err);
        if (!p) return -1;
        if (lstat(p, &st) == 0) {
            l->file = p;
            bin = i == 1;
        } else {
            free(p);
        }
    }
    if (!l->file)
        return acem_fail(err, "%s: holds neither adapter_model.safetensors nor adapter_model.bin",
                         l->dir);
    if (acem_check_model_link(l->dir, l->file, err)) return -1;
    if ((l->fd = open(l->file, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
        return acem_fail(err, "%s: cannot open: %s", l->file, strerror(errno));
    unsigned char magic[4] = {0};
    if (fstat(l->fd, &st) != 0 || !S_ISREG(st.st_mode))
        return acem_fail(err, "%s: not a regular file", l->file);
    if (bin && (st.st_size < 4 || acem_pread_full(l->fd, l->file, magic, 4, 0, err) ||
                memcmp(magic, "PK\3\4", 4) != 0))
        return acem_fail(err,
                         "%s: not a zip archive of torch.save (PyTorch >= 1.6); acem does not "
                         "read legacy pickles: re-save the adapter as safetensors",
                         l->file);
    if ((bin ? torch_header_read : st_header_read)(l->file, l->fd, (uint64_t)st.st_size, 0, &l->h,
                                                   err))
        return -1;
    for (size_t i = 0; l->h.views && i < l->h.n_tensors; i++)
        if (l->h.views[i].strided)
            return acem_fail(err,
                             "%s: tensor \"%s\" is stored as a strided view; re-save the "
                             "adapter as safetensors",
                             l->file, l->h.tensors[i].name);
    return 0;
}

int lora_open(const char *dir, const acem_checkpoint *model, lora **out, acem_error *err) {
    *out = NULL;
    lora *l = acem_alloc(1, sizeof *l, "an adapter", err);
    if (!l) return -1;
    l->fd = -1;
    char *cfg_path = NULL;
    cJSON *root = NULL;
    bool fan_in_fan_out = false;
    int r = 0, rc = -1;
    if (!(l->dir = acem_strdup(dir, err)) || !(root = read_config(dir, &cfg_path, err)) ||
        check_supported(root, cfg_path, err) ||
        read_scale(root, cfg_path, l, &fan_in_fan_out, &r, err))
        goto out;
    if (acem_checkpoint_gguf(model)) {
        acem_fail(err, "%s: a LoRA adapter applies to a Hugging Face checkpoint, not to GGUF %s",
                  dir, acem_checkpoint_path(model));
        goto out;
    }
    const cJSON *targets = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    l->n_uses = acem_checkpoint_count(model);
    if (open_weights(l, err) ||
        !(l->uses = acem_alloc(l->n_uses ? l->n_uses : 1, sizeof *l->uses, "an adapter", err)))
        goto out;
    if (l->h.n_tensors == 0) {
        acem_fail(err, "%s: holds no tensors", l->file);
        goto out;
    }
    for (size_t i = 0; i < l->h.n_tensors; i++)
        if (bind(l, model, &l->h.tensors[i], targets, fan_in_fan_out, err)) goto out;
    rc = check_pairs(l, model, root, r, err);
out:
    cJSON_Delete(root);
    free(cfg_path);
    if (rc) {
        lora_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

const lora_use *lora_use_of(const lora *l, size_t tensor) {
    const lora_use *u = &l->uses[tensor];
    return u->full || u->a ? u : NULL;
}

/* Elements [from, from + n) of adapter tensor x as doubles, refused if not finite. */
static int read_f64(const lora *l, const acem_tensor *x, uint64_t from, uint64_t n, double *dst,
                    void *raw, acem_error *err) {
    const size_t es = acem_dtype_size(x->dtype);
    if (acem_pread_full(l->fd, l->file, raw, n * es, x->offset + from * es, err)) return -1;
    int64_t bad = acem_convert_from_raw(raw, x->dtype, dst, ACEM_DT_F64, (size_t)n, true);
    if (bad >= 0)
        return acem_fail(err, "%s: tensor \"%s\": element %llu is not finite", l->file, x->name,
                         (unsigned long long)(from + (uint64_t)bad));
    return 0;
}

/* P (rows i0 .. i0 + rows of the left factor, rows x r) and Q (r x cols): B's rows and A
 * as stored, or, transposed, A's columns and B^T. */
static int factors(const lora *l, const lora_use *u, uint64_t i0, uint64_t rows, uint64_t cols,
                   double *p, double *q, unsigned char *raw, acem_error *err) {
    const uint64_t r = u->a->shape[0];
    if (!u->transposed)
        return read_f64(l, u->b, i0 * r, rows * r, p, raw, err) ||
                       read_f64(l, u->a, 0, r * cols, q, raw, err)
                   ? -1
                   : 0;
    double *col = q; /* scratch until Q is read: A[k][i0 .. i0 + rows) */
    for (uint64_t k = 0; k < r; k++) {
        if (read_f64(l, u->a, k * u->a->shape[1] + i0, rows, col, raw, err)) return -1;
        for (uint64_t i = 0; i < rows; i++)
            p[i * r + k] = col[i];
    }
    if (read_f64(l, u->b, 0, cols * r, p + rows * r, raw, err)) return -1;
    const double *bt = p + rows * r; /* B (cols x r), transposed into Q */
    for (uint64_t j = 0; j < cols; j++)
        for (uint64_t k = 0; k < r; k++)
            q[k * cols + j] = bt[j * r + k];
    return 0;
}

int lora_values(const lora *l, const lora_use *u, const acem_tensor *w, uint64_t e0, uint64_t n,
                double *v, acem_error *err) {
    const size_t wide = sizeof(double);
    if (u->full) { /* W0 is the adapter's */
        unsigned char *raw = acem_alloc(n, wide, "adapter values", err);
        int rc = raw ? read_f64(l, u->full, e0, n, v, raw, err) : -1;
        free(raw);
        if (rc || !u->a) return rc;
    }
    const uint64_t cols = w->shape[1], r = u->a->shape[0], i0 = e0 / cols;
    const uint64_t rows = (e0 + n - 1) / cols - i0 + 1;
    const uint64_t q_n = r * cols, p_n = rows * r + (u->transposed ? cols * r : 0);
    const uint64_t raw_n = q_n > p_n ? q_n : p_n;
    double *p = acem_alloc(p_n, wide, "adapter factors", err);
    double *q = p ? acem_alloc(q_n > rows ? q_n : rows, wide, "adapter factors", err) : NULL;
    double *acc = q ? acem_alloc(cols, wide, "adapter values", err) : NULL;
    unsigned char *raw = acc ? acem_alloc(raw_n, wide, "adapter values", err) : NULL;
    int rc = raw ? factors(l, u, i0, rows, cols, p, q, raw, err) : -1;
    for (uint64_t i = 0; !rc && i < rows; i++) {
        uint64_t row = (i0 + i) * cols;
        uint64_t j0 = i == 0 ? e0 - row : 0, j1 = row + cols > e0 + n ? e0 + n - row : cols;
        memset(acc, 0, cols * wide);
        for (uint64_t k = 0; k < r; k++) { /* (P Q)[i][j0 .. j1) */
            const double pk = p[i * r + k], *qk = q + k * cols;
            for (uint64_t j = j0; j < j1; j++)
                acc[j] += pk * qk[j];
        }
        for (uint64_t j = j0; j < j1; j++)
            v[row + j - e0] += l->scale * acc[j];
    }
    free(p);
    free(q);
    free(acc);
    free(raw);
    return rc;
}
