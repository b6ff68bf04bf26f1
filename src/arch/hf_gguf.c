/* hf_gguf.c — llama.cpp's converter rules for Llama (Llama 2/3, Mistral), Qwen2 and GPT-2:
 * weights, keys, byte-level BPE (tokenizer.json) and SentencePiece (tokenizer.model, read by
 * hf_spm.c) vocabularies, re-implemented from convert_hf_to_gguf.py (conversion/base.py
 * TextModel.set_gguf_parameters, get_vocab_base, _set_vocab_gpt2, _create_vocab_sentencepiece;
 * conversion/llama.py LlamaModel; conversion/qwen.py Qwen2Model; conversion/gpt2.py GPT2Model)
 * and gguf-py (tensor_mapping.py, constants.py, vocab.py SpecialVocab). */
#include "hf_gguf.h"
#include "hf_spm.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define JSON_MAX_BYTES (256ULL << 20) /* tokenizer.json of a 256k vocabulary is ~20 MB */

/* gguf-py's GGUFValueType and TokenType (constants.py) */
enum { KV_U32 = 4, KV_I32 = 5, KV_F32 = 6, KV_BOOL = 7, KV_STRING = 8, KV_ARRAY = 9 };
enum { TOK_NORMAL = 1, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5 };

/* ---- the key-value section, built as GGUF stores it ---------------------------------- */

typedef struct kv_builder {
    st_header *h;
    uint64_t cap;
    size_t cap_n;
    acem_error *err;
    int failed;
} kv_builder;

static void put(kv_builder *b, const void *p, uint64_t n) {
    st_header *h = b->h;
    if (b->failed) return;
    if (h->kv_len + n > b->cap) {
        uint64_t cap = (b->cap ? b->cap : 4096) * 2 + n;
        unsigned char *raw = realloc(h->kv_raw, (size_t)cap);
        if (!raw) {
            b->failed = acem_fail(b->err, "out of memory for the GGUF key-values");
            return;
        }
        h->kv_raw = raw;
        b->cap = cap;
    }
    memcpy(h->kv_raw + h->kv_len, p, (size_t)n);
    h->kv_len += n;
}

static void put_le(kv_builder *b, uint64_t v, int bytes) {
    unsigned char le[8];
    for (int i = 0; i < bytes; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    put(b, le, (uint64_t)bytes);
}

static void put_str(kv_builder *b, const char *s) {
    put_le(b, strlen(s), 8);
    put(b, s, strlen(s));
}

/* Starts key-value `key` of type `type`, with `text` its value as the GGUF reader gives it. */
static void kv_begin(kv_builder *b, const char *key, uint32_t type, const char *text) {
    st_header *h = b->h;
    if (b->failed) return;
    if (h->n_meta + 2 > b->cap_n) {
        size_t cap = b->cap_n * 2 + 16;
        char **k = realloc(h->meta_keys, cap * sizeof *k);
        if (k) h->meta_keys = k;
        char **v = k ? realloc(h->meta_values, cap * sizeof *v) : NULL;
        if (v) h->meta_values = v;
        uint64_t *at = v ? realloc(h->kv_at, (cap + 1) * sizeof *at) : NULL;
        if (at) h->kv_at = at;
        if (!at) {
            b->failed = acem_fail(b->err, "out of memory for the GGUF key-values");
            return;
        }
        b->cap_n = cap;
    }
    h->kv_at[h->n_meta] = h->kv_len;
    h->meta_keys[h->n_meta] = acem_strdup(key, b->err);
    h->meta_values[h->n_meta] = acem_strdup(text, b->err);
    if (!h->meta_keys[h->n_meta] || !h->meta_values[h->n_meta]) {
        free(h->meta_keys[h->n_meta]);
        free(h->meta_values[h->n_meta]);
        b->failed = -1;
        return;
    }
    h->n_meta++;
    put_str(b, key);
    put_le(b, type, 4);
}

static void kv_u32(kv_builder *b, const char *key, uint32_t v) {
    char text[16];
    snprintf(text, sizeof text, "%u", v);
    kv_begin(b, key, KV_U32, text);
    put_le(b, v, 4);
}

static void kv_f32(kv_builder *b, const char *key, double v) {
    char text[32];
    float f = (float)v;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    snprintf(text, sizeof text, "%.9g", (double)f);
    kv_begin(b, key, KV_F32, text);
    put_le(b, bits, 4);
}

static void kv_bool(kv_builder *b, const char *key, bool v) {
    kv_begin(b, key, KV_BOOL, v ? "true" : "false");
    put_le(b, v, 1);
}

static void kv_string(kv_builder *b, const char *key, const char *v) {
    kv_begin(b, key, KV_STRING, v);
    put_str(b, v);
}

static void kv_array_head(kv_builder *b, const char *key, uint32_t type, size_t n) {
    char text[48];
    snprintf(text, sizeof text, "[%zu values]", n);
    kv_begin(b, key, KV_ARRAY, text);
    put_le(b, type, 4);
    put_le(b, n, 8);
}

/* ---- config.json --------------------------------------------------------------------- */

static cJSON *read_json(const char *path, acem_error *err) {
    size_t len;
    char *text = acem_read_small_file(path, JSON_MAX_BYTES, &len, err);
    if (!text) return NULL;
    cJSON *root =
        acem_utf8_valid((unsigned char *)text, len) ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        acem_json_error(path, root ? 0 : len, "not a valid JSON object", err);
        return NULL;
    }
    return root;
}

/* The first of `keys` that config.json holds (find_hparam), or NULL. */
static const cJSON *hparam(const cJSON *cfg, const char *const *keys) {
    for (; *keys; keys++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, *keys);
        if (v && !cJSON_IsNull(v)) return v;
    }
    return NULL;
}

/* A count from config.json: 0 and no value when absent and optional. */
static int count_of(const char *path, const cJSON *cfg, const char *const *keys, bool required,
                    long *v, acem_error *err) {
    const cJSON *x = hparam(cfg, keys);
    *v = 0;
    if (!x && !required) return 0;
    if (!cJSON_IsNumber(x) || x->valuedouble != (double)(long)x->valuedouble ||
        x->valuedouble < 1 || x->valuedouble > (double)(1u << 31))
        return acem_fail(err, "%s: \"%s\" is %s", path, keys[0],
                         x ? "not a positive integer below 2^31" : "missing");
    *v = (long)x->valuedouble;
    return 0;
}

static int number_of(const char *path, const cJSON *cfg, const char *const *keys, bool *present,
                     double *v, acem_error *err) {
    const cJSON *x = hparam(cfg, keys);
    *present = x != NULL;
    if (x && !cJSON_IsNumber(x)) return acem_fail(err, "%s: \"%s\" is not a number", path, keys[0]);
    *v = x ? x->valuedouble : 0;
    return 0;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct arch_def {
    const char *model_type; /* config.json */
    const char *arch;       /* general.architecture */
    bool gpt2;              /* GPT-2's names, Conv1D and hyperparameters */
    bool llama;             /* LlamaModel: q/k permuted, vocab_size and rope.dimension_count */
} arch_def;

/* The architectures acem converts (Mistral is LlamaModel's too). */
static const arch_def arches[] = {{"llama", "llama", false, true},
                                  {"mistral", "llama", false, true},
                                  {"qwen2", "qwen2", false, false},
                                  {"gpt2", "gpt2", true, false}};

/* The hyperparameters of one model. */
typedef struct hparams {
    long n_layer, n_head, n_head_kv, n_embd, vocab;
} hparams;

/* A positive number of rope_scaling, or a refusal naming it. */
static int rope_number(const char *path, const cJSON *rs, const char *key, bool integer, double *v,
                       acem_error *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(rs, key);
    if (!cJSON_IsNumber(x) || !(x->valuedouble > 0) || x->valuedouble > 1e9 ||
        (integer && x->valuedouble != (double)(long)x->valuedouble))
        return acem_fail(err, "%s: rope_scaling \"%s\" is %s", path, key,
                         x ? (integer ? "not a positive integer" : "not a positive number")
                           : "missing (llama3 rope scaling needs it)");
    *v = x->valuedouble;
    return 0;
}

/* rope_type llama3 (Llama 3.1 / 3.2): llama.cpp scales each rotary frequency by the factor in
 * rope_freqs.weight (n_rot/2 values, F32), which LlamaModel.generate_extra_tensors computes
 * as transformers' _compute_llama3_parameters (modeling_rope_utils.py) does: with wavelength
 * w = 2 pi / theta^(-2i/n_rot) and L = original_max_position_embeddings, frequencies with
 * w < L / high_freq_factor are kept (1), those with w > L / low_freq_factor divided by factor,
 * and between them s = (L / w - low) / (high - low) gives 1 / ((1 - s) / factor + s), the
 * inverse of transformers' smoothed (1 - s) inv_freq / factor + s inv_freq. No key-value
 * marks it: llama.cpp reads the tensor. Fields transformers requires are required here. */
static int llama3_freqs(hf_gguf *h, const char *path, const cJSON *rs, double theta, long n_rot,
                        acem_error *err) {
    double factor = 0, low = 0, high = 0, orig = 0;
    if (rope_number(path, rs, "factor", false, &factor, err) ||
        rope_number(path, rs, "low_freq_factor", false, &low, err) ||
        rope_number(path, rs, "high_freq_factor", false, &high, err) ||
        rope_number(path, rs, "original_max_position_embeddings", true, &orig, err))
        return -1;
    if (factor < 1 || high <= low)
        return acem_fail(err, "%s: rope_scaling has %s", path,
                         factor < 1 ? "a factor below 1"
                                    : "a high_freq_factor not above its low_freq_factor");
    if (n_rot < 2 || n_rot % 2)
        return acem_fail(err, "%s: llama3 rope scaling needs an even head dimension, not %ld", path,
                         n_rot);
    if (!(h->gen = acem_alloc(1, sizeof *h->gen, "the rope factors", err))) return -1;
    hf_generated *g = &h->gen[h->n_gen++];
    *g = (hf_generated){"rope_freqs.weight",
                        "llama3 rope scaling factors",
                        {(uint64_t)n_rot / 2},
                        acem_alloc((size_t)n_rot / 2, sizeof(float), "the rope factors", err)};
    if (!g->data) return -1;
    const double pi = 3.14159265358979323846;
    for (long i = 0; i < n_rot / 2; i++) {
        double wavelen = 2 * pi * pow(theta, 2.0 * (double)i / (double)n_rot);
        double s = (orig / wavelen - low) / (high - low);
        g->data[i] = (float)(wavelen < orig / high  ? 1
                             : wavelen > orig / low ? factor
                                                    : 1 / ((1 - s) / factor + s));
    }
    return 0;
}

/* rope_scaling (or rope_parameters) as TextModel.set_gguf_parameters writes it: linear and
 * yarn as key-values; llama3 as the rope_freqs tensor, for LlamaModel (n_rot > 0) only, as
 * the converter does; longrope and dynamic are refused. */
static int rope_kvs(kv_builder *b, hf_gguf *h, const char *path, const cJSON *cfg, const char *arch,
                    long n_rot, acem_error *err) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_parameters");
    const cJSON *type = rs ? cJSON_GetObjectItemCaseSensitive(rs, "rope_type") : NULL;
    if (!type && rs) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const cJSON *theta = cJSON_GetObjectItemCaseSensitive(cfg, "rope_theta");
    if (!theta && rs) theta = cJSON_GetObjectItemCaseSensitive(rs, "rope_theta");
    char key[96];
    if (theta && cJSON_IsNumber(theta)) {
        snprintf(key, sizeof key, "%s.rope.freq_base", arch);
        kv_f32(b, key, theta->valuedouble);
    }
    if (!type || cJSON_IsNull(type) ||
        (cJSON_IsString(type) && !strcmp(type->valuestring, "default")))
        return 0;
    if (n_rot && cJSON_IsString(type) && !strcasecmp(type->valuestring, "llama3"))
        return llama3_freqs(h, path, rs, cJSON_IsNumber(theta) ? theta->valuedouble : 10000.0,
                            n_rot, err);
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    const cJSON *orig = cJSON_GetObjectItemCaseSensitive(rs, "original_max_position_embeddings");
    bool linear = cJSON_IsString(type) && !strcmp(type->valuestring, "linear");
    bool yarn = cJSON_IsString(type) && !strcmp(type->valuestring, "yarn");
    if ((!linear && !yarn) || !cJSON_IsNumber(factor) || (yarn && !cJSON_IsNumber(orig)))
        return acem_fail(err,
                         "%s: rope_scaling %s is not one acem converts (linear or yarn with a "
                         "factor, llama3 for Llama); convert with llama.cpp's "
                         "convert_hf_to_gguf.py",
                         path, cJSON_IsString(type) ? type->valuestring : "of an unknown type");
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    kv_string(b, key, type->valuestring);
    snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
    kv_f32(b, key, factor->valuedouble);
    if (yarn) {
        snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
        kv_u32(b, key, (uint32_t)orig->valuedouble);
    }
    return 0;
}

static void arch_u32(kv_builder *b, const char *arch, const char *what, long v) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", arch, what);
    if (v > 0) kv_u32(b, key, (uint32_t)v);
}

/* GPT2Model.set_gguf_parameters. */
static int gpt2_kvs(kv_builder *b, const char *path, const cJSON *cfg, hparams *hp,
                    acem_error *err) {
    long n_ctx;
    bool has_eps;
    double eps = 0;
    if (count_of(path, cfg, KEYS("n_layer"), true, &hp->n_layer, err) ||
        count_of(path, cfg, KEYS("n_ctx", "n_positions"), true, &n_ctx, err) ||
        count_of(path, cfg, KEYS("n_embd"), true, &hp->n_embd, err) ||
        count_of(path, cfg, KEYS("n_head"), true, &hp->n_head, err) ||
        number_of(path, cfg, KEYS("layer_norm_epsilon"), &has_eps, &eps, err))
        return -1;
    if (!has_eps) return acem_fail(err, "%s: \"layer_norm_epsilon\" is missing", path);
    arch_u32(b, "gpt2", "block_count", hp->n_layer);
    arch_u32(b, "gpt2", "context_length", n_ctx);
    arch_u32(b, "gpt2", "embedding_length", hp->n_embd);
    arch_u32(b, "gpt2", "feed_forward_length", 4 * hp->n_embd);
    arch_u32(b, "gpt2", "attention.head_count", hp->n_head);
    kv_f32(b, "gpt2.attention.layer_norm_epsilon", eps);
    hp->n_head_kv = hp->n_head;
    return 0;
}

/* TextModel.set_gguf_parameters, and LlamaModel's additions for the llama architecture. */
static int llama_kvs(kv_builder *b, hf_gguf *h, const char *path, const cJSON *cfg,
                     const arch_def *a, hparams *hp, acem_error *err) {
    long n_ctx, n_ff, head_dim;
    bool has_eps;
    double eps = 0;
    if (count_of(path, cfg, KEYS("num_hidden_layers"), true, &hp->n_layer, err) ||
        count_of(path, cfg, KEYS("max_position_embeddings"), false, &n_ctx, err) ||
        count_of(path, cfg, KEYS("hidden_size"), true, &hp->n_embd, err) ||
        count_of(path, cfg, KEYS("intermediate_size"), false, &n_ff, err) ||
        count_of(path, cfg, KEYS("num_attention_heads"), true, &hp->n_head, err) ||
        count_of(path, cfg, KEYS("num_key_value_heads"), false, &hp->n_head_kv, err) ||
        count_of(path, cfg, KEYS("head_dim"), false, &head_dim, err) ||
        number_of(path, cfg, KEYS("rms_norm_eps"), &has_eps, &eps, err))
        return -1;
    arch_u32(b, a->arch, "block_count", hp->n_layer);
    arch_u32(b, a->arch, "context_length", n_ctx);
    arch_u32(b, a->arch, "embedding_length", hp->n_embd);
    arch_u32(b, a->arch, "feed_forward_length", n_ff);
    arch_u32(b, a->arch, "attention.head_count", hp->n_head);
    arch_u32(b, a->arch, "attention.head_count_kv", hp->n_head_kv);
    const long n_rot = head_dim ? head_dim : hp->n_embd / hp->n_head;
    if (rope_kvs(b, h, path, cfg, a->arch, a->llama ? n_rot : 0, err)) return -1;
    char key[96];
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a->arch);
    if (has_eps) kv_f32(b, key, eps);
    arch_u32(b, a->arch, "attention.key_length", head_dim);
    arch_u32(b, a->arch, "attention.value_length", head_dim);
    if (!hp->n_head_kv) hp->n_head_kv = hp->n_head;
    if (a->llama) {
        arch_u32(b, a->arch, "vocab_size", hp->vocab);
        arch_u32(b, a->arch, "rope.dimension_count", n_rot);
    }
    return 0;
}

/* ---- tensor names (gguf-py tensor_mapping.py) ----------------------------------------- */

typedef struct name_rule {
    const char *hf;   /* module, before ".weight" / ".bias" */
    const char *gguf; /* NULL: dropped */
    out_layout weight_layout;
    int rope; /* 1: q (n_head), 2: k (n_head_kv) */
} name_rule;

static const name_rule llama_block[] = {
    {"input_layernorm", "attn_norm", OUT_AS_FED, 0},
    {"self_attn.q_proj", "attn_q", OUT_ROPE_PAIRS, 1},
    {"self_attn.k_proj", "attn_k", OUT_ROPE_PAIRS, 2},
    {"self_attn.v_proj", "attn_v", OUT_AS_FED, 0},
    {"self_attn.o_proj", "attn_output", OUT_AS_FED, 0},
    {"post_attention_layernorm", "ffn_norm", OUT_AS_FED, 0},
    {"mlp.gate_proj", "ffn_gate", OUT_AS_FED, 0},
    {"mlp.up_proj", "ffn_up", OUT_AS_FED, 0},
    {"mlp.down_proj", "ffn_down", OUT_AS_FED, 0},
    {"self_attn.rotary_emb", NULL, OUT_AS_FED, 0}, /* inv_freq: recomputed by llama.cpp */
    {NULL, NULL, OUT_AS_FED, 0}};
static const name_rule llama_global[] = {{"model.embed_tokens", "token_embd", OUT_AS_FED, 0},
                                         {"model.norm", "output_norm", OUT_AS_FED, 0},
                                         {"lm_head", "output", OUT_AS_FED, 0},
                                         {NULL, NULL, OUT_AS_FED, 0}};
/* GPT2Model.modify_tensors: Conv1D weights are stored (in, out); attn.bias and
 * attn.masked_bias are the causal mask buffers. */
static const name_rule gpt2_block[] = {{"ln_1", "attn_norm", OUT_AS_FED, 0},
                                       {"attn.c_attn", "attn_qkv", OUT_TRANSPOSED, 0},
                                       {"attn.c_proj", "attn_output", OUT_TRANSPOSED, 0},
                                       {"ln_2", "ffn_norm", OUT_AS_FED, 0},
                                       {"mlp.c_fc", "ffn_up", OUT_TRANSPOSED, 0},
                                       {"mlp.c_proj", "ffn_down", OUT_TRANSPOSED, 0},
                                       {"attn", NULL, OUT_AS_FED, 0},
                                       {NULL, NULL, OUT_AS_FED, 0}};
static const name_rule gpt2_global[] = {{"transformer.wte", "token_embd", OUT_AS_FED, 0},
                                        {"transformer.wpe", "position_embd", OUT_AS_FED, 0},
                                        {"transformer.ln_f", "output_norm", OUT_AS_FED, 0},
                                        {"lm_head", "output", OUT_AS_FED, 0},
                                        {NULL, NULL, OUT_AS_FED, 0}};

static const name_rule *find_rule(const name_rule *rules, const char *module, size_t len) {
    for (; rules->hf; rules++)
        if (strlen(rules->hf) == len && strncmp(rules->hf, module, len) == 0) return rules;
    return NULL;
}

/* name without the model class's prefix ("model." / "transformer.", which a base-model save
 * omits) split into block, module and parameter; block -1 outside the layers. */
static const name_rule *rule_of(const arch_def *a, const char *name, long *block,
                                const char **param) {
    const char *prefix = a->gpt2 ? "transformer." : "model.", *layers = a->gpt2 ? "h." : "layers.";
    const char *s = strncmp(name, prefix, strlen(prefix)) == 0 ? name + strlen(prefix) : name;
    const char *dot = strrchr(name, '.');
    if (!dot) return NULL;
    *param = dot + 1;
    *block = -1;
    if (strncmp(s, layers, strlen(layers)) == 0) {
        char *end;
        *block = strtol(s + strlen(layers), &end, 10);
        if (end == s + strlen(layers) || *end != '.' || *block < 0 || end + 1 > dot) return NULL;
        return find_rule(a->gpt2 ? gpt2_block : llama_block, end + 1, (size_t)(dot - end - 1));
    }
    /* the global rules are written with their prefix; lm_head has none */
    const name_rule *r =
        find_rule(a->gpt2 ? gpt2_global : llama_global, name, (size_t)(dot - name));
    if (!r && s != name) return NULL;
    if (!r) {
        char full[256];
        snprintf(full, sizeof full, "%s%.*s", prefix, (int)(dot - s), s);
        r = find_rule(a->gpt2 ? gpt2_global : llama_global, full, strlen(full));
    }
    return r;
}

static int map_tensor(hf_gguf *h, size_t i, const arch_def *a, const hparams *hp, const char *path,
                      acem_error *err) {
    acem_tensor *v = &h->view[i];
    long block;
    const char *param = NULL;
    const name_rule *r = rule_of(a, v->name, &block, &param);
    const char *name = v->name;
    if (r && !r->gguf) { /* dropped: it keeps its own name, for messages */
        h->layout[i] = OUT_DROPPED;
        return 0;
    }
    v->name = "";
    if (!r || (strcmp(param, "weight") && strcmp(param, "bias")) || block >= hp->n_layer)
        return acem_fail(err,
                         "%s: tensor \"%s\" has no llama.cpp name for the %s architecture "
                         "(convert_hf_to_gguf.py refuses it too)",
                         path, name, a->arch);
    char gguf[128];
    if (block >= 0)
        snprintf(gguf, sizeof gguf, "blk.%ld.%s.%s", block, r->gguf, param);
    else
        snprintf(gguf, sizeof gguf, "%s.%s", r->gguf, param);
    if (!(v->name = acem_strdup(gguf, err))) return -1;
    bool weight = strcmp(param, "weight") == 0;
    h->layout[i] = r->weight_layout == OUT_TRANSPOSED && !weight ? OUT_AS_FED : r->weight_layout;
    if (h->layout[i] == OUT_TRANSPOSED) {
        if (v->ndim != 2)
            return acem_fail(err, "%s: tensor \"%s\" is a Conv1D weight but not 2-D", path, name);
        uint64_t rows = v->shape[0];
        v->shape[0] = v->shape[1];
        v->shape[1] = rows;
    }
    if (h->layout[i] == OUT_ROPE_PAIRS) {
        if (!a->llama) {
            h->layout[i] = OUT_AS_FED;
            return 0;
        }
        /* LlamaModel.permute: k_proj's rows are n_head_kv heads */
        h->n_head[i] = (uint32_t)(r->rope == 1 ? hp->n_head : hp->n_head_kv);
        if (v->ndim < 1 || v->shape[0] % (2 * (uint64_t)h->n_head[i]))
            return acem_fail(err,
                             "%s: tensor \"%s\" has %llu rows, which do not split into %u heads "
                             "of row pairs",
                             path, name, (unsigned long long)(v->ndim ? v->shape[0] : 0),
                             h->n_head[i]);
    }
    return 0;
}

/* ---- the tokenizer (_set_vocab_gpt2, get_vocab_base, SpecialVocab) ---------------------- */

/* tokenizer.ggml.pre: convert_hf_to_gguf.py names the pre-tokenizer by the hash of the ids a
 * transformers tokenizer gives a check text, which C cannot reproduce without that tokenizer;
 * acem names it from the pre-tokenizer's definition in tokenizer.json for the three it
 * recognises: GPT-2's ByteLevel with its built-in regex ("gpt-2"), and the Split regexes of Llama 3
 * ("llama-bpe") and Qwen2 ("qwen2") followed by a ByteLevel without one. */
static const char re_llama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char re_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static bool is_type(const cJSON *o, const char *type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

static bool json_flag(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static const char *pre_name(const cJSON *pre) {
    if (is_type(pre, "ByteLevel"))
        return json_flag(pre, "use_regex", true) && !json_flag(pre, "add_prefix_space", false)
                   ? "gpt-2"
                   : NULL;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!is_type(pre, "Sequence") || cJSON_GetArraySize(seq) != 2) return NULL;
    const cJSON *split = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
    if (!is_type(split, "Split") || !is_type(bl, "ByteLevel") || json_flag(bl, "use_regex", true) ||
        !cJSON_IsString(re))
        return NULL;
    return !strcmp(re->valuestring, re_llama3)  ? "llama-bpe"
           : !strcmp(re->valuestring, re_qwen2) ? "qwen2"
                                                : NULL;
}

typedef struct vocab {
    const char *path;
    char **tokens; /* borrowed from the JSON, or owned [PAD] names in pads */
    int32_t *types;
    char *pads;
    long n;
} vocab;

static int put_token(vocab *v, const cJSON *id, const char *text, int type, acem_error *err) {
    if (!cJSON_IsNumber(id) || id->valuedouble != (double)(long)id->valuedouble ||
        id->valuedouble < 0 || id->valuedouble >= (double)v->n)
        return acem_fail(err, "%s: token \"%.64s\" has an id outside the vocabulary of %ld",
                         v->path, text, v->n);
    long i = (long)id->valuedouble;
    if (v->tokens[i] && type == TOK_NORMAL)
        return acem_fail(err, "%s: id %ld is given to two tokens", v->path, i);
    v->tokens[i] = (char *)text;
    v->types[i] = type;
    return 0;
}

static bool framed(const char *s, const char *open, const char *close) {
    size_t n = strlen(s), a = strlen(open), b = strlen(close);
    return n >= a + b && !strncmp(s, open, a) && !strcmp(s + n - b, close);
}

/* does_token_look_special: added tokens some models do not mark special but are. */
static bool looks_special(const char *s) {
    return !strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") ||
           !strcmp(s, "[@BOS@]") || framed(s, "<|", "|>") ||
           framed(s, "<\xef\xbd\x9c", "\xef\xbd\x9c>") /* <｜...｜> */ || framed(s, "<unused", ">");
}

/* get_vocab_base: the vocabulary in id order, then the added tokens (CONTROL when special or
 * looking special, else USER_DEFINED), ids without a token "[PADi]" UNUSED. */
static int read_vocab(vocab *v, const cJSON *tok, acem_error *err) {
    const cJSON *model_vocab =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tok, "model"), "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens");
    if (!cJSON_IsObject(model_vocab))
        return acem_fail(err, "%s: model.vocab is missing or not an object", v->path);
    if (!(v->tokens = acem_alloc((size_t)v->n, sizeof *v->tokens, "the vocabulary", err)) ||
        !(v->types = acem_alloc((size_t)v->n, sizeof *v->types, "the vocabulary", err)) ||
        !(v->pads = acem_alloc((size_t)v->n, 24, "the vocabulary", err)))
        return -1;
    for (const cJSON *e = model_vocab->child; e; e = e->next)
        if (put_token(v, e, e->string, TOK_NORMAL, err)) return -1;
    for (const cJSON *a = cJSON_IsArray(added) ? added->child : NULL; a; a = a->next) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsString(content))
            return acem_fail(err, "%s: an added token has no content", v->path);
        const char *s = content->valuestring;
        bool special = json_flag(a, "special", false) || looks_special(s);
        if (put_token(v, cJSON_GetObjectItemCaseSensitive(a, "id"), s,
                      special ? TOK_CONTROL : TOK_USER_DEFINED, err))
            return -1;
    }
    for (long i = 0; i < v->n; i++)
        if (!v->tokens[i]) {
            v->tokens[i] = v->pads + 24 * i;
            snprintf(v->tokens[i], 24, "[PAD%d]", (int)i); /* ids fit in 31 bits */
            v->types[i] = TOK_UNUSED;
        }
    return 0;
}

/* tokenizer.ggml.merges: "a b" strings, or [a, b] pairs (transformers 4.45), whose spaces
 * SpecialVocab encodes as U+0120. */
static int put_merges(kv_builder *b, const char *path, const cJSON *merges, acem_error *err) {
    if (!cJSON_IsArray(merges) || !merges->child) return 0;
    kv_array_head(b, "tokenizer.ggml.merges", KV_STRING, (size_t)cJSON_GetArraySize(merges));
    for (const cJSON *m = merges->child; m; m = m->next) {
        if (cJSON_IsString(m)) {
            put_str(b, m->valuestring);
            continue;
        }
        const cJSON *l = cJSON_GetArrayItem(m, 0), *r = cJSON_GetArrayItem(m, 1);
        if (cJSON_GetArraySize(m) != 2 || !cJSON_IsString(l) || !cJSON_IsString(r))
            return acem_fail(err, "%s: a merge is neither \"a b\" nor a pair of strings", path);
        uint64_t n = 1;
        for (const char *s = l->valuestring; *s; s++)
            n += *s == ' ' ? 2 : 1;
        for (const char *s = r->valuestring; *s; s++)
            n += *s == ' ' ? 2 : 1;
        put_le(b, n, 8);
        for (const cJSON *part = l; part; part = part == l ? r : NULL) {
            for (const char *s = part->valuestring; *s; s++)
                put(b, *s == ' ' ? "\xc4\xa0" : s, *s == ' ' ? 2 : 1);
            if (part == l) put(b, " ", 1);
        }
    }
    return 0;
}

/* SpecialVocab's special token types that gguf-py's writer has a key for (cls has none). */
static const struct {
    const char *typ, *key;
} specials[] = {
    {"bos", "tokenizer.ggml.bos_token_id"},     {"eos", "tokenizer.ggml.eos_token_id"},
    {"unk", "tokenizer.ggml.unknown_token_id"}, {"sep", "tokenizer.ggml.seperator_token_id"},
    {"pad", "tokenizer.ggml.padding_token_id"}, {"mask", "tokenizer.ggml.mask_token_id"}};

/* The id of <typ>_token in tokenizer_config.json (a string or {"content"}) among the added
 * tokens, else config.json's <typ>_token_id; -1 when neither names one. bos falls back on
 * cls_token, eos on sep_token, as SpecialVocab does. */
static long special_id(const cJSON *tc, const cJSON *tok, const cJSON *cfg, const char *typ) {
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(tc, key);
    if (!e && !strcmp(typ, "bos")) e = cJSON_GetObjectItemCaseSensitive(tc, "cls_token");
    if (!e && !strcmp(typ, "eos")) e = cJSON_GetObjectItemCaseSensitive(tc, "sep_token");
    if (cJSON_IsObject(e)) e = cJSON_GetObjectItemCaseSensitive(e, "content");
    if (cJSON_IsString(e) && *e->valuestring) {
        const cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens");
        for (const cJSON *a = cJSON_IsArray(added) ? added->child : NULL; a; a = a->next) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content"),
                        *id = cJSON_GetObjectItemCaseSensitive(a, "id");
            if (cJSON_IsString(c) && !strcmp(c->valuestring, e->valuestring) && cJSON_IsNumber(id))
                return (long)id->valuedouble;
        }
    }
    snprintf(key, sizeof key, "%s_token_id", typ);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsNumber(id) && id->valuedouble >= 0 ? (long)id->valuedouble : -1;
}

/* SpecialVocab's fallback when tokenizer_config.json has no chat_template: the file
 * chat_template.jinja beside it. */
static int jinja_template(kv_builder *b, const char *dir, acem_error *err) {
    char *path = acem_path_join(dir, "chat_template.jinja", err);
    if (!path) return -1;
    size_t len = 0;
    const bool present = access(path, F_OK) == 0;
    char *text = present ? acem_read_small_file(path, ACEM_GGUF_MAX_STRING, &len, err) : NULL;
    int rc = present && !text ? -1 : 0;
    if (text && (!acem_utf8_valid((unsigned char *)text, len) || strlen(text) != len))
        rc = acem_fail(err, "%s: not UTF-8 text", path);
    else if (text)
        kv_string(b, "tokenizer.chat_template", text);
    free(text);
    free(path);
    return rc;
}

static int special_kvs(kv_builder *b, const char *dir, const cJSON *tok, const cJSON *cfg,
                       long n_vocab, acem_error *err) {
    char *path = acem_path_join(dir, "tokenizer_config.json", err);
    if (!path) return -1;
    const bool present = access(path, F_OK) == 0;
    cJSON *tc = present ? read_json(path, err) : NULL;
    int rc = present && !tc ? -1 : 0;
    for (size_t i = 0; !rc && i < sizeof specials / sizeof *specials; i++) {
        long id = special_id(tc, tok, cfg, specials[i].typ);
        if (id >= n_vocab)
            rc = acem_fail(err, "%s: the %s token's id %ld is outside the vocabulary of %ld", dir,
                           specials[i].typ, id, n_vocab);
        else if (id >= 0)
            kv_u32(b, specials[i].key, (uint32_t)id);
    }
    static const char *const adds[] = {"bos", "eos", "sep"};
    for (size_t i = 0; !rc && i < 3; i++) {
        char key[48];
        snprintf(key, sizeof key, "add_%s_token", adds[i]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(tc, key);
        snprintf(key, sizeof key, "tokenizer.ggml.add_%s_token", adds[i]);
        if (cJSON_IsBool(v)) kv_bool(b, key, cJSON_IsTrue(v));
    }
    const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
    if (!rc && cJSON_IsString(tmpl))
        kv_string(b, "tokenizer.chat_template", tmpl->valuestring);
    else if (!rc && tc && !tmpl)
        rc = jinja_template(b, dir, err);
    cJSON_Delete(tc);
    free(path);
    return rc;
}

/* _set_vocab_gpt2: a byte-level BPE tokenizer.json. */
static int bpe_kvs(kv_builder *b, const char *dir, const char *path, const cJSON *cfg, hparams *hp,
                   acem_error *err) {
    cJSON *tok = read_json(path, err);
    vocab v = {.path = path};
    int rc = -1;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tok, "model");
    const char *pre = tok ? pre_name(cJSON_GetObjectItemCaseSensitive(tok, "pre_tokenizer")) : NULL;
    if (!tok) goto out;
    if (!is_type(model, "BPE") || !pre) {
        acem_fail(err,
                  "%s: %s; acem names GPT-2's ByteLevel, Llama 3's and Qwen2's byte-level BPE "
                  "(a tokenizer.model beside it is read as SentencePiece; convert other tokenizers "
                  "with convert_hf_to_gguf.py)",
                  path,
                  is_type(model, "BPE") ? "a pre-tokenizer acem cannot name for llama.cpp"
                                        : "not a BPE tokenizer");
        goto out;
    }
    /* get_vocab_base: vocab_size from config.json, else the tokenizer's own count */
    if (!hp->vocab) {
        const cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens");
        hp->vocab = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(model, "vocab")) +
                    (cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0);
    }
    v.n = hp->vocab;
    if (read_vocab(&v, tok, err)) goto out;
    kv_string(b, "tokenizer.ggml.model", "gpt2");
    kv_string(b, "tokenizer.ggml.pre", pre);
    kv_array_head(b, "tokenizer.ggml.tokens", KV_STRING, (size_t)v.n);
    for (long i = 0; i < v.n; i++)
        put_str(b, v.tokens[i]);
    kv_array_head(b, "tokenizer.ggml.token_type", KV_I32, (size_t)v.n);
    for (long i = 0; i < v.n; i++)
        put_le(b, (uint32_t)v.types[i], 4);
    rc = put_merges(b, path, cJSON_GetObjectItemCaseSensitive(model, "merges"), err) ||
                 special_kvs(b, dir, tok, cfg, v.n, err)
             ? -1
             : 0;
out:
    free(v.tokens);
    free(v.types);
    free(v.pads);
    cJSON_Delete(tok);
    return rc;
}

/* ---- SentencePiece (tokenizer.model) ----------------------------------------------------- */

#define SPM_USER_SCORE (-1000.0f)  /* added tokens and the padding past the vocabulary */
#define SPM_PAD_SCORE  (-10000.0f) /* ids no piece has */

typedef struct spm_vocab {
    vocab v; /* tokens and types, [PADi] in pads; v.path is tokenizer.model */
    float *scores;
    char **owned; /* per id: an added token's text this file allocated, else NULL */
} spm_vocab;

/* An added token over id `id` (the converter ignores ids past the vocabulary). */
static int spm_put(spm_vocab *s, double id, const char *text, int type, acem_error *err) {
    if (id != (double)(long)id || id < 0)
        return acem_fail(err, "%s: added token \"%.64s\" has id %g, not a count", s->v.path, text,
                         id);
    if (id >= (double)s->v.n) return 0;
    long i = (long)id;
    free(s->owned[i]);
    if (!(s->owned[i] = acem_strdup(text, err))) return -1;
    s->v.tokens[i] = s->owned[i];
    s->v.types[i] = type;
    s->scores[i] = SPM_USER_SCORE;
    return 0;
}

/* added_tokens.json: {"text": id}, USER_DEFINED. */
static int spm_added_json(spm_vocab *s, const char *dir, acem_error *err) {
    char *path = acem_path_join(dir, "added_tokens.json", err);
    if (!path) return -1;
    const bool present = access(path, F_OK) == 0;
    cJSON *a = present ? read_json(path, err) : NULL;
    int rc = present && !a ? -1 : 0;
    if (a && !cJSON_IsObject(a)) rc = acem_fail(err, "%s: not an object of ids", path);
    for (const cJSON *e = a && !rc ? a->child : NULL; e && !rc; e = e->next)
        rc = !cJSON_IsNumber(e) ? acem_fail(err, "%s: \"%.64s\" has no id", path, e->string)
                                : spm_put(s, e->valuedouble, e->string, TOK_USER_DEFINED, err);
    cJSON_Delete(a);
    free(path);
    return rc;
}

/* The text of a non-special added token with U+2581 (SentencePiece's space) as a space: the
 * converter's "pre-normalize user-defined spaces". */
static char *unspaced(const char *text, acem_error *err) {
    char *t = acem_strdup(text, err), *w = t;
    for (const char *r = text; t && *r;)
        if (!strncmp(r, "\xe2\x96\x81", 3)) {
            *w++ = ' ';
            r += 3;
        } else {
            *w++ = *r++;
        }
    if (t) *w = 0;
    return t;
}

/* tokenizer_config.json's added_tokens_decoder: {"id": {"content", "special"}}, CONTROL when
 * special or looking special, else USER_DEFINED with spaces restored. */
static int spm_added_decoder(spm_vocab *s, const cJSON *tc, acem_error *err) {
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(tc, "added_tokens_decoder");
    for (const cJSON *e = cJSON_IsObject(dec) ? dec->child : NULL; e; e = e->next) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        char *end = NULL;
        double id = strtod(e->string, &end);
        if (!cJSON_IsString(content) || !*e->string || *end)
            return acem_fail(err, "%s: added_tokens_decoder \"%.32s\" is not an id with content",
                             s->v.path, e->string);
        bool special = json_flag(e, "special", false) || looks_special(content->valuestring);
        char *text =
            special ? acem_strdup(content->valuestring, err) : unspaced(content->valuestring, err);
        int rc = text ? spm_put(s, id, text, special ? TOK_CONTROL : TOK_USER_DEFINED, err) : -1;
        free(text);
        if (rc) return -1;
    }
    return 0;
}

/* _create_vocab_sentencepiece: vocab_size ids (config.json, else the pieces), each piece's
 * text, score and type, then the added tokens. */
static int spm_fill(spm_vocab *s, const spm_model *m, const char *dir, acem_error *err) {
    vocab *v = &s->v;
    if (!(v->tokens = acem_alloc((size_t)v->n, sizeof *v->tokens, "the vocabulary", err)) ||
        !(v->types = acem_alloc((size_t)v->n, sizeof *v->types, "the vocabulary", err)) ||
        !(v->pads = acem_alloc((size_t)v->n, 24, "the vocabulary", err)) ||
        !(s->scores = acem_alloc((size_t)v->n, sizeof *s->scores, "the vocabulary", err)) ||
        !(s->owned = acem_alloc((size_t)v->n, sizeof *s->owned, "the vocabulary", err)))
        return -1;
    for (long i = 0; i < v->n; i++) {
        const bool piece = (size_t)i < m->n;
        if (!piece) snprintf(v->pads + 24 * i, 24, "[PAD%d]", (int)i); /* ids fit in 31 bits */
        v->tokens[i] = piece ? (char *)m->pieces[i].text : v->pads + 24 * i;
        v->types[i] = piece ? m->pieces[i].type : TOK_UNUSED;
        s->scores[i] = piece ? m->pieces[i].score : SPM_PAD_SCORE;
    }
    char *tc_path = acem_path_join(dir, "tokenizer_config.json", err);
    if (!tc_path) return -1;
    const bool present = access(tc_path, F_OK) == 0;
    cJSON *tc = present ? read_json(tc_path, err) : NULL;
    int rc = (present && !tc) || spm_added_json(s, dir, err) || spm_added_decoder(s, tc, err);
    cJSON_Delete(tc);
    free(tc_path);
    return rc ? -1 : 0;
}

/* _set_vocab_sentencepiece: tokenizer.ggml.model "llama", pre "default", tokens, scores and
 * types; SpecialVocab's ids from tokenizer.json's added tokens when there is one (a Llama 2
 * repository has both files), else tokenizer_config.json / config.json. */
static int spm_kvs(kv_builder *b, const char *dir, const char *path, const cJSON *cfg, hparams *hp,
                   acem_error *err) {
    spm_model m;
    if (spm_model_read(&m, path, err)) return -1;
    spm_vocab s = {.v = {.path = path, .n = hp->vocab ? hp->vocab : (long)m.n}};
    char *json_path = acem_path_join(dir, "tokenizer.json", err);
    const bool has_json = json_path && access(json_path, F_OK) == 0;
    cJSON *tok = has_json ? read_json(json_path, err) : NULL;
    int rc = -1;
    if (json_path && (!has_json || tok) && !spm_fill(&s, &m, dir, err)) {
        kv_string(b, "tokenizer.ggml.model", "llama");
        kv_string(b, "tokenizer.ggml.pre", "default");
        kv_array_head(b, "tokenizer.ggml.tokens", KV_STRING, (size_t)s.v.n);
        for (long i = 0; i < s.v.n; i++)
            put_str(b, s.v.tokens[i]);
        kv_array_head(b, "tokenizer.ggml.scores", KV_F32, (size_t)s.v.n);
        for (long i = 0; i < s.v.n; i++)
            put(b, &s.scores[i], 4); /* little-endian hosts only, as the GGUF writer */
        kv_array_head(b, "tokenizer.ggml.token_type", KV_I32, (size_t)s.v.n);
        for (long i = 0; i < s.v.n; i++)
            put_le(b, (uint32_t)s.v.types[i], 4);
        rc = special_kvs(b, dir, tok, cfg, s.v.n, err);
    }
    for (long i = 0; s.owned && i < s.v.n; i++)
        free(s.owned[i]);
    free(s.owned);
    free(s.scores);
    free(s.v.tokens);
    free(s.v.types);
    free(s.v.pads);
    cJSON_Delete(tok);
    free(json_path);
    spm_model_free(&m);
    return rc;
}

/* The converter's set_vocab: Llama and Qwen2 read tokenizer.model when there is one
 * (_set_vocab_sentencepiece), else tokenizer.json's byte-level BPE; GPT-2 only the latter. */
static int tokenizer_kvs(kv_builder *b, const char *dir, const cJSON *cfg, const arch_def *a,
                         hparams *hp, acem_error *err) {
    char *spm = a->gpt2 ? NULL : acem_path_join(dir, "tokenizer.model", err);
    char *json = acem_path_join(dir, "tokenizer.json", err);
    int rc = -1;
    if (json && (a->gpt2 || spm))
        rc = spm && access(spm, F_OK) == 0 ? spm_kvs(b, dir, spm, cfg, hp, err)
             : access(json, F_OK) == 0     ? bpe_kvs(b, dir, json, cfg, hp, err)
                                           : acem_fail(err, "%s: no tokenizer.json%s", dir,
                                                   a->gpt2 ? "" : " or tokenizer.model");
    free(spm);
    free(json);
    return rc;
}

/* ---- all of it ------------------------------------------------------------------------- */

/* general.type and general.name: the converter names the model after its directory when no
 * model card or --model-name says otherwise (prepare_metadata); the merged model's is the
 * output's file name without ".gguf". The model card heuristics (basename, size_label,
 * finetune, license, ...) are not re-implemented. */
static void general_kvs(kv_builder *b, const char *out_path, acem_error *err) {
    const char *slash = strrchr(out_path, '/');
    char *name = acem_strdup(slash ? slash + 1 : out_path, err);
    if (!name) {
        b->failed = 1;
        return;
    }
    size_t n = strlen(name);
    if (n > 5 && !strcasecmp(name + n - 5, ".gguf")) name[n - 5] = 0;
    kv_string(b, "general.type", "model");
    kv_string(b, "general.name", name);
    free(name);
}

static int convert(hf_gguf *h, const char *dir, const char *cfg_path, const char *out_path,
                   const cJSON *cfg, const acem_checkpoint *base, acem_error *err) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    const arch_def *a = NULL;
    for (size_t i = 0; cJSON_IsString(mt) && i < sizeof arches / sizeof *arches; i++)
        if (!strcmp(arches[i].model_type, mt->valuestring)) a = &arches[i];
    if (!a)
        return acem_fail(err,
                         "%s: model_type \"%.64s\" is not one acem writes as llama.cpp's GGUF "
                         "(llama, mistral, qwen2, gpt2); write safetensors and convert with "
                         "convert_hf_to_gguf.py",
                         cfg_path, cJSON_IsString(mt) ? mt->valuestring : "(missing)");
    h->arch = a->arch;
    kv_builder b = {.h = &h->kv, .err = err};
    hparams hp = {0};
    if (count_of(cfg_path, cfg, KEYS("vocab_size"), false, &hp.vocab, err)) return -1;
    kv_string(&b, "general.architecture", a->arch);
    general_kvs(&b, out_path, err);
    if ((a->gpt2 ? gpt2_kvs(&b, cfg_path, cfg, &hp, err)
                 : llama_kvs(&b, h, cfg_path, cfg, a, &hp, err)) ||
        b.failed || tokenizer_kvs(&b, dir, cfg, a, &hp, err) || b.failed)
        return -1;
    h->kv.kv_at[h->kv.n_meta] = h->kv.kv_len;
    h->kv.alignment = ACEM_GGUF_ALIGNMENT;
    h->n = acem_checkpoint_count(base);
    if (!(h->view = acem_alloc(h->n, sizeof *h->view, "the GGUF names", err)) ||
        !(h->layout = acem_alloc(h->n, sizeof *h->layout, "the GGUF names", err)) ||
        !(h->n_head = acem_alloc(h->n, sizeof *h->n_head, "the GGUF names", err)))
        return -1;
    for (size_t i = 0; i < h->n; i++) {
        h->view[i] = *acem_checkpoint_at(base, i);
        if (map_tensor(h, i, a, &hp, acem_checkpoint_path(base), err)) return -1;
    }
    return 0;
}

int hf_gguf_open(hf_gguf *h, const char *dir, const char *out_path, const acem_checkpoint *base,
                 acem_error *err) {
    memset(h, 0, sizeof *h);
    if (!acem_is_dir(dir)) return 0;
    char *cfg_path = acem_path_join(dir, "config.json", err);
    if (!cfg_path) return -1;
    if (access(cfg_path, F_OK) != 0) {
        free(cfg_path);
        return 0;
    }
    cJSON *cfg = read_json(cfg_path, err);
    int rc = cfg && convert(h, dir, cfg_path, out_path, cfg, base, err) == 0 ? 1 : -1;
    cJSON_Delete(cfg);
    free(cfg_path);
    if (rc < 0) hf_gguf_free(h);
    return rc;
}

void hf_gguf_free(hf_gguf *h) {
    for (size_t i = 0; h->view && h->layout && i < h->n; i++) /* names are set after both */
        if (h->layout[i] != OUT_DROPPED && h->view[i].name && *h->view[i].name)
            free((char *)h->view[i].name);
    for (size_t i = 0; i < h->kv.n_meta; i++) {
        free(h->kv.meta_keys[i]);
        free(h->kv.meta_values[i]);
    }
    for (size_t i = 0; i < h->n_gen; i++)
        free(h->gen[i].data);
    free(h->gen);
    free(h->view);
    free(h->layout);
    free(h->n_head);
    free(h->kv.meta_keys);
    free(h->kv.meta_values);
    free(h->kv.kv_raw);
    free(h->kv.kv_at);
    memset(h, 0, sizeof *h);
}
