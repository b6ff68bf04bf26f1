/* gpt2.c — the GPT-2 model as Hugging Face stores it: config.json, the parameter table,
 * loading over libacem's checkpoint readers, saving through acem_save_safetensors, fresh
 * initialisation and AdamW. The passes themselves are in gpt2_layers.c. */
#include "gpt2_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIG_BYTES (16u << 20)
#define READ_CHUNK       (1u << 20) /* elements converted at a time from a stored type */

/* The parameter table: each tensor's name after the `transformer.` prefix (lm_head and
 * score have none), whether it has one copy per layer, and its axes (AdamW decays the 2-D
 * ones, as nanoGPT and llm.c do: weights of matmuls and embeddings, not gains and biases). */
static const struct {
    const char *name;
    int layer, ndim, prefixed;
} PARAMS[GPT2_N_PARAMS] = {
    [GPT2_WTE] = {"wte.weight", 0, 2, 1},
    [GPT2_WPE] = {"wpe.weight", 0, 2, 1},
    [GPT2_LN1_W] = {"h.%d.ln_1.weight", 1, 1, 1},
    [GPT2_LN1_B] = {"h.%d.ln_1.bias", 1, 1, 1},
    [GPT2_QKV_W] = {"h.%d.attn.c_attn.weight", 1, 2, 1},
    [GPT2_QKV_B] = {"h.%d.attn.c_attn.bias", 1, 1, 1},
    [GPT2_ATTPROJ_W] = {"h.%d.attn.c_proj.weight", 1, 2, 1},
    [GPT2_ATTPROJ_B] = {"h.%d.attn.c_proj.bias", 1, 1, 1},
    [GPT2_LN2_W] = {"h.%d.ln_2.weight", 1, 1, 1},
    [GPT2_LN2_B] = {"h.%d.ln_2.bias", 1, 1, 1},
    [GPT2_FC_W] = {"h.%d.mlp.c_fc.weight", 1, 2, 1},
    [GPT2_FC_B] = {"h.%d.mlp.c_fc.bias", 1, 1, 1},
    [GPT2_FCPROJ_W] = {"h.%d.mlp.c_proj.weight", 1, 2, 1},
    [GPT2_FCPROJ_B] = {"h.%d.mlp.c_proj.bias", 1, 1, 1},
    [GPT2_LNF_W] = {"ln_f.weight", 0, 1, 1},
    [GPT2_LNF_B] = {"ln_f.bias", 0, 1, 1},
    [GPT2_LM_HEAD] = {"lm_head.weight", 0, 2, 0},
    [GPT2_SCORE] = {"score.weight", 0, 2, 0},
};

int gpt2_param_decays(int p) { return PARAMS[p].ndim == 2; }
int gpt2_param_is_layer(int p) { return PARAMS[p].layer; }

const char *gpt2_param_name(int p, int l, char *buf, size_t len) {
    char tail[64];
    snprintf(tail, sizeof tail, PARAMS[p].name, l);
    snprintf(buf, len, "%s%s", PARAMS[p].prefixed ? "transformer." : "", tail);
    return buf;
}

int gpt2_mul(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }

/* Elements of parameter p over all layers (lm_head: as if untied), one copy's shape. Sizes were
 * bounded when the config was read, so nothing here overflows. */
size_t gpt2_param_count(const gpt2_config *c, int p, uint64_t shape[2]) {
    uint64_t C = (uint64_t)c->n_embd, r = 1, k = C;
    switch (p) {
    case GPT2_WTE: r = (uint64_t)c->vocab_size; break;
    case GPT2_WPE: r = (uint64_t)c->n_positions; break;
    case GPT2_QKV_W: r = C, k = 3 * C; break;
    case GPT2_QKV_B: k = 3 * C; break;
    case GPT2_ATTPROJ_W: r = C; break;
    case GPT2_FC_W: r = C, k = 4 * C; break;
    case GPT2_FC_B: k = 4 * C; break;
    case GPT2_FCPROJ_W: r = 4 * C; break;
    case GPT2_LM_HEAD: r = (uint64_t)c->vocab_size; break;
    case GPT2_SCORE: r = (uint64_t)c->num_labels; break;
    default: break;
    }
    shape[0] = r, shape[1] = k;
    return (size_t)(r * k * (PARAMS[p].layer ? (uint64_t)c->n_layer : 1));
}

/* ---- config.json ---------------------------------------------------------------- */

int gpt2_fail(acem_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail(acem_error *err, const char *path, const char *what) {
    return gpt2_fail(err, "%s: %s", path, what);
}

static char *read_text(const char *path, acem_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        gpt2_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_CONFIG_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_CONFIG_BYTES + 1, f) : 0;
    int bad = ferror(f) || n > MAX_CONFIG_BYTES;
    fclose(f);
    if (!buf || bad) {
        free(buf);
        fail(err, path, buf ? "cannot be read or is larger than 16 MiB" : "out of memory");
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* An integer key in [lo, hi]; def when absent (def < lo: required). */
static int json_int(const cJSON *j, const char *key, long lo, long hi, long def, int *out,
                    const char *path, acem_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v && def >= lo) return *out = (int)def, 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        gpt2_fail(err, "%s: \"%s\" must be an integer in [%ld, %ld]", path, key, lo, hi);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

/* The options of GPT2Config that change the computation and that acem does not implement
 * are refused rather than ignored. */
static int check_supported(const cJSON *j, const char *path, acem_error *err) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "activation_function");
    if (act && !(cJSON_IsString(act) && !strcmp(act->valuestring, "gelu_new")))
        return fail(err, path, "\"activation_function\" is not gelu_new, the only one supported");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "scale_attn_weights");
    if (s && !cJSON_IsTrue(s))
        return fail(err, path, "\"scale_attn_weights\" false is not supported");
    s = cJSON_GetObjectItemCaseSensitive(j, "scale_attn_by_inverse_layer_idx");
    if (s && cJSON_IsTrue(s))
        return fail(err, path, "\"scale_attn_by_inverse_layer_idx\" true is not supported");
    s = cJSON_GetObjectItemCaseSensitive(j, "add_cross_attention");
    if (s && cJSON_IsTrue(s)) return fail(err, path, "\"add_cross_attention\" is not supported");
    return 0;
}

static int read_hparams(const cJSON *j, gpt2_config *c, const char *path, acem_error *err) {
    if (json_int(j, "n_layer", 1, 1024, -1, &c->n_layer, path, err) ||
        json_int(j, "n_head", 1, 1024, -1, &c->n_head, path, err) ||
        json_int(j, "n_embd", 1, 1 << 16, -1, &c->n_embd, path, err) ||
        json_int(j, "n_positions", 1, 1 << 20, -1, &c->n_positions, path, err) ||
        json_int(j, "vocab_size", 1, 1 << 24, -1, &c->vocab_size, path, err))
        return -1;
    if (c->n_embd % c->n_head) return fail(err, path, "\"n_embd\" is not a multiple of \"n_head\"");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(j, "layer_norm_epsilon");
    if (eps && !(cJSON_IsNumber(eps) && eps->valuedouble > 0 && eps->valuedouble < 1))
        return fail(err, path, "\"layer_norm_epsilon\" must be a number in (0, 1)");
    c->ln_eps = eps ? eps->valuedouble : 1e-5;
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(j, "pad_token_id");
    c->pad_token_id = -1;
    if (pad && !cJSON_IsNull(pad) &&
        json_int(j, "pad_token_id", 0, c->vocab_size - 1, -1, &c->pad_token_id, path, err))
        return -1;
    return 0;
}

/* id2label {"0": "neg", "1": "pos"} into c->id2label (num_labels names); absent: NULL. */
static int read_labels(const cJSON *j, gpt2_config *c, const char *path, acem_error *err) {
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "id2label");
    if (!map) return 0;
    if (!cJSON_IsObject(map) || cJSON_GetArraySize(map) != c->num_labels)
        return fail(err, path, "\"id2label\" must map each row of score.weight to a name");
    if (!(c->id2label = calloc((size_t)c->num_labels, sizeof *c->id2label)))
        return fail(err, path, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        char *end;
        long i = strtol(e->string, &end, 10);
        if (*end || end == e->string || i < 0 || i >= c->num_labels || !cJSON_IsString(e) ||
            c->id2label[i] || !(c->id2label[i] = strdup(e->valuestring)))
            return fail(err, path, "\"id2label\" must have the keys 0 .. num_labels-1, names");
    }
    return 0;
}

/* ---- layout and allocation ------------------------------------------------------ */

static int layout(gpt2_model *m, int tied, acem_error *err) {
    size_t total = 0;
    for (int p = 0; p < GPT2_N_PARAMS; p++) {
        uint64_t shape[2];
        m->numel[p] = p == GPT2_LM_HEAD && tied ? 0 : gpt2_param_count(&m->c, p, shape);
        m->off[p] = total;
        if (__builtin_add_overflow(total, m->numel[p], &total) ||
            total > (SIZE_MAX / sizeof(float)) / 4)
            return fail(err, "gpt2", "the model is too large to hold in memory");
    }
    m->n_params = total;
    return 0;
}

float *gpt2_p(const gpt2_model *m, int p) { return m->params + m->off[p]; }

float *gpt2_param(gpt2_model *m, int p, size_t *numel) {
    if (numel) *numel = m->numel[p];
    return m->numel[p] ? gpt2_p(m, p) : NULL;
}

float *gpt2_grad(gpt2_model *m, int p) {
    return m->grads && m->numel[p] ? m->grads + m->off[p] : NULL;
}

const gpt2_config *gpt2_config_of(const gpt2_model *m) { return &m->c; }

int gpt2_param_shape(const gpt2_model *m, int p, uint64_t shape[2]) {
    gpt2_param_count(&m->c, p, shape);
    return m->numel[p] ? PARAMS[p].ndim : 0;
}

static void free_training(gpt2_model *m) {
    free(m->grads), free(m->mom1), free(m->mom2);
    m->grads = m->mom1 = m->mom2 = NULL;
    m->step = 0;
}

void gpt2_free_acts(gpt2_model *m) {
    free(m->acts), free(m->scratch), free(m->pool);
    m->acts = m->scratch = NULL, m->pool = NULL;
    m->has_acts = 0;
}

static void free_labels(gpt2_config *c) {
    for (int i = 0; c->id2label && i < c->num_labels; i++)
        free(c->id2label[i]);
    free(c->id2label);
    c->id2label = NULL;
}

void gpt2_free(gpt2_model *m) {
    if (!m) return;
    free_labels(&m->c);
    cJSON_Delete(m->json);
    free(m->params);
    free_training(m);
    gpt2_free_acts(m);
    free(m);
}

static gpt2_model *model_alloc(const gpt2_config *c, int tied, acem_error *err) {
    gpt2_model *m = calloc(1, sizeof *m);
    if (!m) return fail(err, "gpt2", "out of memory"), NULL;
    m->c = *c;
    m->c.id2label = NULL;
    if (layout(m, tied, err) || !(m->params = calloc(m->n_params, sizeof(float)))) {
        if (!m->params && !err->msg[0]) fail(err, "gpt2", "out of memory for the parameters");
        gpt2_free(m);
        return NULL;
    }
    return m;
}

/* ---- loading -------------------------------------------------------------------- */

/* Reads tensor t (any float type the readers give) into dst as f32, a chunk at a time. */
static int read_f32(const acem_checkpoint *ck, const acem_tensor *t, float *dst, acem_error *err) {
    size_t es = acem_dtype_size(t->dtype);
    if (t->dtype == ACEM_DT_F32) return acem_checkpoint_read(ck, t, 0, dst, t->nbytes, err);
    void *buf = malloc(READ_CHUNK * es);
    if (!buf) return fail(err, acem_checkpoint_path(ck), "out of memory");
    int rc = 0;
    for (uint64_t i = 0; i < t->numel && !rc; i += READ_CHUNK) {
        uint64_t n = t->numel - i < READ_CHUNK ? t->numel - i : READ_CHUNK;
        if ((rc = acem_checkpoint_read(ck, t, i * es, buf, n * es, err))) break;
        for (uint64_t k = 0; k < n; k++)
            dst[i + k] = t->dtype == ACEM_DT_F16    ? acem_f16_to_f32(((uint16_t *)buf)[k])
                         : t->dtype == ACEM_DT_BF16 ? acem_bf16_to_f32(((uint16_t *)buf)[k])
                                                    : (float)((double *)buf)[k];
    }
    free(buf);
    return rc;
}

/* The types read_f32 converts. */
static int is_float(acem_dtype d) {
    return d == ACEM_DT_F32 || d == ACEM_DT_F16 || d == ACEM_DT_BF16 || d == ACEM_DT_F64;
}

/* The stored tensor of parameter p, layer l: present, a float type, of the right shape. */
static const acem_tensor *find_param(const acem_checkpoint *ck, const gpt2_model *m,
                                     const char *prefix, int p, int l, acem_error *err) {
    char name[192], tail[160];
    gpt2_param_name(p, l, tail, sizeof tail);
    snprintf(name, sizeof name, "%s%s", PARAMS[p].prefixed ? prefix : "",
             PARAMS[p].prefixed ? tail + strlen("transformer.") : tail);
    const acem_tensor *t = acem_checkpoint_find(ck, name);
    uint64_t shape[2];
    int nd = gpt2_param_shape(m, p, shape);
    const uint64_t *want = nd == 1 ? shape + 1 : shape;
    int ok = t && is_float(t->dtype);
    ok = ok && t->ndim == nd && !memcmp(t->shape, want, (size_t)nd * sizeof *want);
    if (!ok) {
        char s[64];
        snprintf(s, sizeof s, nd == 1 ? "[%llu]" : "[%llu, %llu]", (unsigned long long)want[0],
                 (unsigned long long)want[nd - 1]);
        gpt2_fail(err, "%s: tensor \"%s\" %s (a float tensor %s expected)",
                  acem_checkpoint_path(ck), name, t ? "has the wrong type or shape" : "is missing",
                  s);
        return NULL;
    }
    return t;
}

static int load_params(gpt2_model *m, const acem_checkpoint *ck, const char *prefix,
                       acem_error *err) {
    for (int p = 0; p < GPT2_N_PARAMS; p++) {
        if (!m->numel[p]) continue;
        int layers = PARAMS[p].layer ? m->c.n_layer : 1;
        size_t per = m->numel[p] / (size_t)layers;
        for (int l = 0; l < layers; l++) {
            const acem_tensor *t = find_param(ck, m, prefix, p, l, err);
            if (!t || read_f32(ck, t, gpt2_p(m, p) + (size_t)l * per, err)) return -1;
        }
    }
    return 0;
}

/* A tensor name GPT-2 checkpoints hold besides the parameters: attention's causal-mask
 * buffers (attn.bias, attn.masked_bias) of older transformers versions. */
static int is_buffer(const char *name) {
    size_t n = strlen(name);
    return (n > 10 && !strcmp(name + n - 10, ".attn.bias")) ||
           (n > 17 && !strcmp(name + n - 17, ".attn.masked_bias"));
}

/* Every stored tensor must be one the model reads (or a buffer): a tensor acem would ignore
 * means an architecture it does not implement. */
static int check_no_extra(const acem_checkpoint *ck, size_t expected, acem_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
        const char *name = acem_checkpoint_at(ck, i)->name;
        if (!is_buffer(name)) n++;
    }
    if (n == expected) return 0;
    gpt2_fail(err,
              "%s: holds %zu tensors besides attention buffers where GPT-2 has %zu: not a "
              "GPT-2 of this config",
              acem_checkpoint_path(ck), n, expected);
    return -1;
}

static size_t stored_count(const gpt2_model *m) {
    size_t n = 0;
    for (int p = 0; p < GPT2_N_PARAMS; p++)
        if (m->numel[p]) n += PARAMS[p].layer ? (size_t)m->c.n_layer : 1;
    return n;
}

/* The checkpoint's form: prefix "transformer." or "", tied or not, classifier or not. */
static int checkpoint_form(const acem_checkpoint *ck, const char **prefix, int *tied, int *rows,
                           acem_error *err) {
    *prefix = acem_checkpoint_find(ck, "transformer.wte.weight") ? "transformer."
              : acem_checkpoint_find(ck, "wte.weight")           ? ""
                                                                 : NULL;
    if (!*prefix)
        return fail(err, acem_checkpoint_path(ck), "has no wte.weight: not a GPT-2 checkpoint");
    const acem_tensor *lm = acem_checkpoint_find(ck, "lm_head.weight");
    const acem_tensor *score = acem_checkpoint_find(ck, "score.weight");
    if (lm && score)
        return fail(err, acem_checkpoint_path(ck), "holds both lm_head.weight and score.weight");
    *tied = !lm;
    *rows = 0;
    if (score) {
        if (score->ndim != 2 || score->shape[0] < 1 || score->shape[0] > GPT2_MAX_LABELS)
            return fail(err, acem_checkpoint_path(ck),
                        "score.weight must be [num_labels, n_embd] with 1..1024 labels");
        *rows = (int)score->shape[0];
    }
    return 0;
}

static int load_from(const char *dir, cJSON *j, const char *cfg_path, gpt2_model **out,
                     acem_error *err) {
    gpt2_config c = {0};
    if (check_supported(j, cfg_path, err) || read_hparams(j, &c, cfg_path, err)) return -1;
    acem_checkpoint *ck;
    if (acem_checkpoint_open(dir, &ck, err)) return -1;
    const char *prefix;
    int tied = 1, rc = -1;
    gpt2_model *m = NULL;
    if (checkpoint_form(ck, &prefix, &tied, &c.num_labels, err)) goto done;
    if (!(m = model_alloc(&c, tied, err))) goto done;
    m->json = j;
    if (read_labels(j, &m->c, cfg_path, err) || load_params(m, ck, prefix, err) ||
        check_no_extra(ck, stored_count(m), err))
        goto done;
    rc = 0;
done:
    acem_checkpoint_close(ck);
    if (rc && m) m->json = NULL, gpt2_free(m);
    if (!rc) *out = m;
    return rc;
}

int gpt2_load(const char *dir, gpt2_model **out, acem_error *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return fail(err, dir, "path too long");
    char *text = read_text(path, err);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return fail(err, path, "is not a JSON object");
    }
    int rc = load_from(dir, j, path, out, err);
    if (rc) cJSON_Delete(j);
    return rc;
}

/* ---- fresh models --------------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood 2014) and Box-Muller: a seeded normal stream. */
static double rng_normal(uint64_t *s) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        u[i] = ((double)((z ^ (z >> 31)) >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static void fill_normal(float *x, size_t n, double std, uint64_t *s) {
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(std * rng_normal(s));
}

/* transformers' GPT2PreTrainedModel._init_weights: weights N(0, 0.02), the residual
 * projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0, gains 1. */
static void init_weights(gpt2_model *m, uint64_t seed) {
    double proj = 0.02 / sqrt(2.0 * m->c.n_layer);
    for (int p = 0; p < GPT2_N_PARAMS; p++) {
        float *x = gpt2_p(m, p);
        if (p == GPT2_LN1_W || p == GPT2_LN2_W || p == GPT2_LNF_W)
            for (size_t i = 0; i < m->numel[p]; i++)
                x[i] = 1.0f;
        else if (gpt2_param_decays(p))
            fill_normal(x, m->numel[p], p == GPT2_ATTPROJ_W || p == GPT2_FCPROJ_W ? proj : 0.02,
                        &(uint64_t){seed * 31 + (uint64_t)p});
    }
}

int gpt2_new(const gpt2_config *c, uint64_t seed, gpt2_model **out, acem_error *err) {
    if (c->n_layer < 1 || c->n_head < 1 || c->n_embd < 1 || c->n_embd % c->n_head ||
        c->n_positions < 1 || c->vocab_size < 1 || c->n_embd > (1 << 16) || c->n_layer > 1024 ||
        c->n_positions > (1 << 20) || c->vocab_size > (1 << 24) || c->num_labels < 0 ||
        c->num_labels > GPT2_MAX_LABELS || !(c->ln_eps > 0))
        return fail(err, "gpt2", "invalid configuration for a new model");
    gpt2_model *m = model_alloc(c, 1, err);
    if (!m) return -1;
    if (!(m->json = cJSON_CreateObject())) {
        gpt2_free(m);
        return fail(err, "gpt2", "out of memory");
    }
    init_weights(m, seed);
    *out = m;
    return 0;
}

int gpt2_new_head(gpt2_model *m, int num_labels, uint64_t seed, acem_error *err) {
    if (num_labels < 1 || num_labels > GPT2_MAX_LABELS)
        return fail(err, "gpt2", "a score head needs 1..1024 labels");
    gpt2_config c = m->c;
    c.num_labels = num_labels;
    gpt2_model *n = model_alloc(&c, 1, err);
    if (!n) return -1;
    /* The tensors before lm_head keep their offsets: copy them in one piece. */
    memcpy(n->params, m->params, m->off[GPT2_LM_HEAD] * sizeof(float));
    fill_normal(gpt2_p(n, GPT2_SCORE), n->numel[GPT2_SCORE], 0.02, &(uint64_t){seed});
    free_labels(&m->c);
    free(m->params);
    free_training(m);
    gpt2_free_acts(m);
    m->c = c, m->c.id2label = NULL;
    memcpy(m->numel, n->numel, sizeof m->numel);
    memcpy(m->off, n->off, sizeof m->off);
    m->n_params = n->n_params;
    m->params = n->params;
    n->params = NULL;
    gpt2_free(n);
    return 0;
}

/* ---- another checkpoint's head ---------------------------------------------------- */

/* id2label of the head's folder, when path is a folder with a config.json: the expert's
 * class names travel with its head. A file, or a folder without one, names no labels. */
static int head_labels(gpt2_model *m, const char *path, acem_error *err) {
    char cfg[4096];
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) return 0;
    if (snprintf(cfg, sizeof cfg, "%s/config.json", path) >= (int)sizeof cfg)
        return fail(err, path, "path too long");
    if (access(cfg, F_OK)) return 0;
    char *text = read_text(cfg, err);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int rc = cJSON_IsObject(j) ? read_labels(j, &m->c, cfg, err)
                               : fail(err, cfg, "is not a JSON object");
    cJSON_Delete(j);
    return rc;
}

int gpt2_load_head(gpt2_model *m, const char *path, acem_error *err) {
    acem_checkpoint *ck;
    if (acem_checkpoint_open(path, &ck, err)) return -1;
    const acem_tensor *t = acem_checkpoint_find(ck, "score.weight");
    int rc = -1;
    if (!t)
        fail(err, acem_checkpoint_path(ck), "has no score.weight (a classifier's head)");
    else if (!is_float(t->dtype) || t->ndim != 2 || t->shape[0] < 1 ||
             t->shape[0] > GPT2_MAX_LABELS || t->shape[1] != (uint64_t)m->c.n_embd)
        gpt2_fail(err,
                  "%s: score.weight must be a float tensor [num_labels, %d] (this model's "
                  "n_embd) with 1..%d labels",
                  acem_checkpoint_path(ck), m->c.n_embd, GPT2_MAX_LABELS);
    else if (!gpt2_new_head(m, (int)t->shape[0], 0, err) &&
             !read_f32(ck, t, gpt2_p(m, GPT2_SCORE), err))
        rc = head_labels(m, path, err);
    acem_checkpoint_close(ck);
    return rc;
}

/* ---- AdamW ---------------------------------------------------------------------- */

gpt2_adamw gpt2_adamw_defaults(void) { return (gpt2_adamw){1e-3, 0.9, 0.999, 1e-8, 0.01}; }

/* torch.optim.AdamW (_single_tensor_adamw): decoupled decay first, then Adam. The scalars
 * are computed in double as Python does and rounded to f32 where torch's kernels take them;
 * each update is written in the order of ATen's kernels (lerp_, addcmul_, addcdiv_). */
static void adamw_tensor(float *p, const float *g, float *m1, float *m2, size_t n,
                         const gpt2_adamw *o, long step, int decays) {
    double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
    float keep = decays ? (float)(1.0 - o->lr * o->weight_decay) : 1.0f;
    float w1 = (float)(1.0 - o->beta1), b2 = (float)o->beta2, w2 = (float)(1.0 - o->beta2);
    float step_size = (float)(-o->lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)o->eps;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        p[i] *= keep;
        m1[i] = m1[i] + w1 * (g[i] - m1[i]);
        m2[i] = m2[i] * b2 + w2 * g[i] * g[i];
        p[i] = p[i] + step_size * m1[i] / (sqrtf(m2[i]) / bc2_sqrt + eps);
    }
}

int gpt2_adamw_step(gpt2_model *m, const gpt2_adamw *o, acem_error *err) {
    if (!m->grads) return fail(err, "gpt2", "AdamW step before any backward pass");
    if (!m->mom1 && (!(m->mom1 = calloc(m->n_params, sizeof(float))) ||
                     !(m->mom2 = calloc(m->n_params, sizeof(float)))))
        return fail(err, "gpt2", "out of memory for AdamW's moments");
    m->step++;
    for (int p = 0; p < GPT2_N_PARAMS; p++) {
        size_t o0 = m->off[p];
        adamw_tensor(m->params + o0, m->grads + o0, m->mom1 + o0, m->mom2 + o0, m->numel[p], o,
                     m->step, gpt2_param_decays(p));
    }
    return 0;
}

/* ---- saving --------------------------------------------------------------------- */

static int set_key(cJSON *j, const char *key, cJSON *v) {
    if (!v) return -1;
    if (cJSON_HasObjectItem(j, key))
        return cJSON_ReplaceItemInObjectCaseSensitive(j, key, v) ? 0 : -1;
    return cJSON_AddItemToObject(j, key, v) ? 0 : -1;
}

static int set_labels(cJSON *j, const gpt2_config *c) {
    cJSON *id2 = cJSON_CreateObject(), *l2i = cJSON_CreateObject();
    int rc = id2 && l2i ? 0 : -1;
    for (int i = 0; i < c->num_labels && !rc; i++) {
        char key[16], name[32];
        snprintf(key, sizeof key, "%d", i);
        snprintf(name, sizeof name, "LABEL_%d", i);
        const char *label = c->id2label ? c->id2label[i] : name;
        rc = !cJSON_AddStringToObject(id2, key, label) || !cJSON_AddNumberToObject(l2i, label, i);
    }
    if (rc) {
        cJSON_Delete(id2), cJSON_Delete(l2i);
        return -1;
    }
    return set_key(j, "id2label", id2) || set_key(j, "label2id", l2i);
}

/* config.json: the keys acem owns set from the model, the file's others kept. */
static char *config_text(const gpt2_model *m) {
    cJSON *j = cJSON_Duplicate(m->json, 1);
    const gpt2_config *c = &m->c;
    cJSON *arch = cJSON_CreateArray();
    if (arch)
        cJSON_AddItemToArray(arch,
                             cJSON_CreateString(c->num_labels ? "GPT2ForSequenceClassification"
                                                              : "GPT2LMHeadModel"));
    int rc =
        !j || set_key(j, "architectures", arch) ||
        set_key(j, "model_type", cJSON_CreateString("gpt2")) ||
        set_key(j, "activation_function", cJSON_CreateString("gelu_new")) ||
        set_key(j, "n_layer", cJSON_CreateNumber(c->n_layer)) ||
        set_key(j, "n_head", cJSON_CreateNumber(c->n_head)) ||
        set_key(j, "n_embd", cJSON_CreateNumber(c->n_embd)) ||
        set_key(j, "n_positions", cJSON_CreateNumber(c->n_positions)) ||
        set_key(j, "n_ctx", cJSON_CreateNumber(c->n_positions)) ||
        set_key(j, "vocab_size", cJSON_CreateNumber(c->vocab_size)) ||
        set_key(j, "layer_norm_epsilon", cJSON_CreateNumber(c->ln_eps)) ||
        set_key(j, "pad_token_id",
                c->pad_token_id < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(c->pad_token_id)) ||
        set_key(j, "tie_word_embeddings", cJSON_CreateBool(m->numel[GPT2_LM_HEAD] == 0)) ||
        set_key(j, "torch_dtype", cJSON_CreateString("float32"));
    if (!rc && c->num_labels) rc = set_labels(j, c);
    char *text = rc ? NULL : cJSON_Print(j);
    cJSON_Delete(j);
    return text;
}

static int save_config(const gpt2_model *m, const char *path, acem_error *err) {
    char *text = config_text(m);
    if (!text) return fail(err, path, "out of memory");
    acem_outputs *outs = NULL;
    int rc = acem_outputs_new(&outs, err) || acem_outputs_claim(outs, path, 1, err) ||
             acem_outputs_write(outs, path, text, strlen(text), err);
    acem_outputs_free(outs);
    free(text);
    return rc ? -1 : 0;
}

/* One acem_tensor_data per stored tensor, pointing into the parameter array (it is already
 * in Hugging Face's layout). */
static int save_weights(const gpt2_model *m, const char *path, acem_error *err) {
    size_t n = stored_count(m), k = 0;
    acem_tensor_data *td = calloc(n, sizeof *td);
    char(*names)[160] = calloc(n, sizeof *names);
    uint64_t(*shapes)[2] = calloc(n, sizeof *shapes);
    int rc = -1;
    if (!td || !names || !shapes) {
        fail(err, path, "out of memory");
        goto done;
    }
    for (int p = 0; p < GPT2_N_PARAMS; p++) {
        if (!m->numel[p]) continue;
        int layers = PARAMS[p].layer ? m->c.n_layer : 1;
        for (int l = 0; l < layers; l++, k++) {
            int nd = gpt2_param_shape(m, p, shapes[k]);
            td[k] = (acem_tensor_data){gpt2_param_name(p, l, names[k], sizeof names[k]),
                                       ACEM_DT_F32, nd, nd == 1 ? shapes[k] + 1 : shapes[k],
                                       gpt2_p(m, p) + (size_t)l * (m->numel[p] / layers)};
        }
    }
    acem_param meta = {"format", "pt"};
    rc = acem_save_safetensors(path, td, n, &meta, 1, err);
done:
    free(td), free(names), free(shapes);
    return rc;
}

int gpt2_save(const gpt2_model *m, const char *dir, acem_error *err) {
    char path[4096];
    if (mkdir(dir, 0777) && errno != EEXIST) {
        gpt2_fail(err, "%s: cannot create: %s", dir, strerror(errno));
        return -1;
    }
    if (snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path)
        return fail(err, dir, "path too long");
    if (save_weights(m, path, err)) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    return save_config(m, path, err);
}
