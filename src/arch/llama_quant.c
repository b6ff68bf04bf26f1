/* llama_quant.c — llama-quantize's per-tensor types for its mixes, re-implemented from
 * llama.cpp's src/llama-quant.cpp (llama_tensor_get_type, llama_tensor_get_type_impl,
 * tensor_type_fallback, tensor_allows_quantization) for the ftypes acem writes, without an
 * importance matrix, --pure, or per-tensor overrides. */
#include "llama_quant.h"
#include "../formats/formats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* tensor_category (llama-quant.cpp), by tensor_get_category's substring tests in its order. */
typedef enum category {
    CAT_TOKEN_EMBD,
    CAT_ATTN_Q,
    CAT_ATTN_V,
    CAT_ATTN_K,
    CAT_ATTN_QKV,
    CAT_ATTN_KV_B,
    CAT_ATTN_OUTPUT,
    CAT_FFN_UP,
    CAT_FFN_GATE,
    CAT_FFN_DOWN,
    CAT_OUTPUT,
    CAT_OTHER
} category;

static category category_of(const char *name) {
    static const struct {
        const char *part;
        category cat;
    } parts[] = {{"attn_qkv.weight", CAT_ATTN_QKV},
                 {"attn_kv_b.weight", CAT_ATTN_KV_B},
                 {"attn_v.weight", CAT_ATTN_V},
                 {"attn_k.weight", CAT_ATTN_K},
                 {"attn_q.weight", CAT_ATTN_Q},
                 {"attn_output.weight", CAT_ATTN_OUTPUT},
                 {"ffn_up", CAT_FFN_UP},
                 {"ffn_gate", CAT_FFN_GATE},
                 {"ffn_down", CAT_FFN_DOWN}};
    if (strcmp(name, "output.weight") == 0) return CAT_OUTPUT;
    if (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "per_layer_token_embd.weight") == 0)
        return CAT_TOKEN_EMBD;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if (strstr(name, parts[i].part)) return parts[i].cat;
    return CAT_OTHER;
}

/* category_is_attn_v: the tensors most sensitive to quantisation. */
static bool is_attn_v(category c) {
    return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* tensor_allows_quantization: 2-D and 3-D weights, less norms, expert gates, and the small or
 * positional tensors its list names. */
static bool allows_quantization(const acem_tensor *t) {
    static const char *const kept[] = {"_norm.weight",
                                       "ffn_gate_inp.weight",
                                       "ffn_gate_tid2eid.weight",
                                       "altup",
                                       "laurel",
                                       "per_layer_model_proj",
                                       "ssm_conv1d",
                                       "shortconv.conv.weight",
                                       "indexer.k_proj.weight",
                                       "indexer.q_proj.weight",
                                       "time_mix_first.weight",
                                       "time_mix_w0.weight",
                                       "time_mix_w1.weight",
                                       "time_mix_w2.weight",
                                       "time_mix_v0.weight",
                                       "time_mix_v1.weight",
                                       "time_mix_v2.weight",
                                       "time_mix_a0.weight",
                                       "time_mix_a1.weight",
                                       "time_mix_a2.weight",
                                       "time_mix_g1.weight",
                                       "time_mix_g2.weight",
                                       "time_mix_decay_w1.weight",
                                       "time_mix_decay_w2.weight",
                                       "time_mix_lerp_fused.weight",
                                       "attn_rel_b.weight",
                                       ".position_embd",
                                       "sam.pos_embd",
                                       "sam.neck.",
                                       "sam.net_",
                                       ".rel_pos",
                                       ".patch_embd",
                                       ".patch_merger",
                                       "a.rvq.codebook",
                                       "mm.a.code_embd"};
    if (gguf_n_dims(t->ndim, t->shape) < 2 || !ends_with(t->name, "weight")) return false;
    /* LLM_TN(arch)(LLM_TENSOR_POS_EMBD / LLM_TENSOR_TOKEN_TYPES, "weight") */
    if (strcmp(t->name, "position_embd.weight") == 0 || strcmp(t->name, "token_types.weight") == 0)
        return false;
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
        if (strstr(t->name, kept[i])) return false;
    return true;
}

/* The layer of "blk.N.…", -1 for others (llama_model_loader's weight_name_comparer). */
static int layer_of(const char *name) {
    int layer = -1;
    return sscanf(name, "blk.%d.", &layer) == 1 ? layer : -1;
}

/* llama-quantize visits the tensors by layer (others first), then by name. */
static bool visited_before(const char *a, const char *b) {
    int la = layer_of(a), lb = layer_of(b);
    return la != lb ? la < lb : strcmp(a, b) < 0;
}

/* How many quantised tensors of t's counter class (attn_v-like, or ffn_down) llama-quantize
 * visits before t: its i_attention_wv and i_ffn_down. */
static int visits_before(const llama_quant *q, const acem_tensor *t, bool attn_v) {
    int n = 0;
    for (size_t i = 0; i < q->model.n; i++) {
        const acem_tensor *u = &q->model.tensors[i];
        category c = category_of(u->name);
        bool same = attn_v ? is_attn_v(c) : c == CAT_FFN_DOWN;
        n += same && allows_quantization(u) && visited_before(u->name, t->name);
    }
    return n;
}

/* A GGUF key-value of the model as text, or NULL. */
static const char *kv(const llama_model_view *m, const char *key) {
    for (size_t i = 0; i < m->kv->n_meta; i++)
        if (strcmp(m->kv->meta_keys[i], key) == 0) return m->kv->meta_values[i];
    return NULL;
}

/* <arch>.<what> as an integer (the first of a per-layer array); `none` when absent. */
static int arch_int(const llama_model_view *m, const char *arch, const char *what, long none,
                    long *v, acem_error *err) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, what);
    const char *s = kv(m, key);
    *v = none;
    if (!s) return 0;
    char *end;
    *v = strtol(s + (*s == '['), &end, 10);
    if (end == s + (*s == '[') || *v < 0 || *v > 1 << 20)
        return acem_fail(err, "%s: key-value %s is \"%s\", not a count", m->path, key, s);
    return 0;
}

/* LLM_TYPE_70B as load_hparams sets it for the architectures that have one (src/models/
 * llama.cpp: 80 layers with grouped KV heads; qwen2.cpp, deci.cpp, olmo.cpp: 80; jais2.cpp:
 * 68 layers). */
static bool is_70b(const char *arch, long n_layer, long n_head, long n_head_kv) {
    if (strcmp(arch, "llama") == 0) return n_layer == 80 && n_head != n_head_kv;
    if (strcmp(arch, "jais2") == 0) return n_layer == 68;
    return n_layer == 80 &&
           (strcmp(arch, "qwen2") == 0 || strcmp(arch, "deci") == 0 || strcmp(arch, "olmo") == 0);
}

int llama_quant_init(llama_quant *q, const llama_model_view *base, acem_out_type mix,
                     acem_error *err) {
    memset(q, 0, sizeof *q);
    const char *arch = base->kv ? kv(base, "general.architecture") : NULL;
    long n_layer, n_expert, n_head, n_head_kv;
    if (!arch || arch_int(base, arch, "block_count", 0, &n_layer, err)) return arch ? -1 : 0;
    if (n_layer == 0) return 0;
    if (arch_int(base, arch, "expert_count", 0, &n_expert, err) ||
        arch_int(base, arch, "attention.head_count", 0, &n_head, err) ||
        arch_int(base, arch, "attention.head_count_kv", n_head, &n_head_kv, err))
        return -1;
    *q = (llama_quant){.model = *base,
                       .ftype = acem_out_type_mix(mix),
                       .n_layer = (int)n_layer,
                       .n_expert = (int)n_expert,
                       .falcon = strcmp(arch, "falcon") == 0,
                       .is_70b = is_70b(arch, n_layer, n_head, n_head_kv),
                       .n_gqa = n_head_kv > 0 ? (int)(n_head / n_head_kv) : 0,
                       .tied = true};
    q->default_type = acem_out_type_quant(mix);
    for (size_t i = 0; i < base->n; i++) { /* init_quantize_state_counters */
        category c = category_of(base->tensors[i].name);
        q->n_attention_wv += is_attn_v(c);
        q->tied &= c != CAT_OUTPUT;
    }
    return 1;
}

/* use_more_bits: the first and last eighth of the layers and every third in between. */
static bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 ||
           (i_layer - n_layers / 8) % 3 == 2;
}

static uint64_t row_length(const acem_tensor *t) { return t->shape[t->ndim - 1]; }

/* The output (and a tied token_embd): Q8_0 for Falcon or rows that do not split into the
 * mix's blocks, else Q6_K unless the mix is Q8_0. */
static acem_quant output_type(const llama_quant *q, const acem_tensor *t) {
    if (q->falcon || row_length(t) % acem_quant_block_elems(q->default_type))
        return ACEM_QUANT_Q8_0;
    return q->default_type == ACEM_QUANT_Q8_0 ? ACEM_QUANT_Q8_0 : ACEM_QUANT_Q6_K;
}

static bool ftype_is(const llama_quant *q, acem_llama_ftype a, acem_llama_ftype b) {
    return q->ftype == a || q->ftype == b;
}

/* attn_v (and attn_qkv, attn_kv_b, which share its branch and counter). */
static acem_quant attn_v_type(const llama_quant *q, const acem_tensor *t) {
    acem_quant type = q->default_type;
    int i = visits_before(q, t, true);
    if (q->ftype == ACEM_FTYPE_Q2_K)
        type = q->n_gqa >= 4 ? ACEM_QUANT_Q4_K : ACEM_QUANT_Q3_K;
    else if (q->ftype == ACEM_FTYPE_Q3_K_M)
        type = i < 2 ? ACEM_QUANT_Q5_K : ACEM_QUANT_Q4_K;
    else if (q->ftype == ACEM_FTYPE_Q3_K_L)
        type = ACEM_QUANT_Q5_K;
    else if (ftype_is(q, ACEM_FTYPE_Q4_K_M, ACEM_FTYPE_Q5_K_M) &&
             use_more_bits(i, q->n_attention_wv))
        type = ACEM_QUANT_Q6_K;
    else if (q->ftype == ACEM_FTYPE_Q4_K_S && i < 4)
        type = ACEM_QUANT_Q5_K;
    /* 70B: 8 heads share attn_v */
    if (q->is_70b && (type == ACEM_QUANT_Q3_K || type == ACEM_QUANT_Q4_K)) type = ACEM_QUANT_Q5_K;
    return q->n_expert == 8 ? ACEM_QUANT_Q8_0 : type;
}

/* attn_output: with 8 experts Q5_K for the 2- to 4-bit mixes (not Q3_K_L), else more bits
 * for Q2_K, Q3_K_M and Q3_K_L; Falcon only for Q3_K_L. */
static acem_quant attn_output_type(const llama_quant *q) {
    if (q->falcon) return q->ftype == ACEM_FTYPE_Q3_K_L ? ACEM_QUANT_Q4_K : q->default_type;
    if (q->n_expert == 8)
        return q->ftype == ACEM_FTYPE_Q2_K || q->ftype == ACEM_FTYPE_Q3_K_S ||
                       q->ftype == ACEM_FTYPE_Q3_K_M || q->ftype == ACEM_FTYPE_Q4_K_S ||
                       q->ftype == ACEM_FTYPE_Q4_K_M
                   ? ACEM_QUANT_Q5_K
                   : q->default_type;
    switch (q->ftype) {
    case ACEM_FTYPE_Q2_K: return ACEM_QUANT_Q3_K;
    case ACEM_FTYPE_Q3_K_M: return ACEM_QUANT_Q4_K;
    case ACEM_FTYPE_Q3_K_L: return ACEM_QUANT_Q5_K;
    default: return q->default_type;
    }
}

/* ffn_down by its layer: the visit count, or for experts the layer of its name
 * (layer_info: Mixtral's expert tensors are not in layer order). */
static int ffn_down_type(const llama_quant *q, const acem_tensor *t, acem_quant *type,
                         acem_error *err) {
    int i = q->n_expert > 1 ? layer_of(t->name) : visits_before(q, t, false), n = q->n_layer;
    if (q->n_expert > 1 && (i < 0 || i >= n))
        return acem_fail(err, "%s: tensor \"%s\": llama-quantize cannot tell its layer in [0, %d)",
                         q->model.path, t->name, n);
    *type = q->default_type;
    if (q->ftype == ACEM_FTYPE_Q2_K)
        *type = ACEM_QUANT_Q3_K;
    else if (q->ftype == ACEM_FTYPE_Q3_K_M)
        *type = i < n / 16                          ? ACEM_QUANT_Q5_K
                : !q->falcon || use_more_bits(i, n) ? ACEM_QUANT_Q4_K
                                                    : ACEM_QUANT_Q3_K;
    else if (q->ftype == ACEM_FTYPE_Q3_K_L)
        *type = q->falcon ? ACEM_QUANT_Q4_K : ACEM_QUANT_Q5_K;
    else if (q->ftype == ACEM_FTYPE_Q4_K_M && q->falcon)
        *type = i < n / 16            ? ACEM_QUANT_Q6_K
                : use_more_bits(i, n) ? ACEM_QUANT_Q5_K
                                      : ACEM_QUANT_Q4_K;
    else if (ftype_is(q, ACEM_FTYPE_Q4_K_M, ACEM_FTYPE_Q5_K_M) && use_more_bits(i, n))
        *type = ACEM_QUANT_Q6_K;
    else if (q->ftype == ACEM_FTYPE_Q4_K_S && !q->falcon && i < n / 8)
        *type = ACEM_QUANT_Q5_K;
    return 0;
}

/* llama_tensor_get_type_impl for the mixes acem writes (the branches of other ftypes never
 * apply to them). */
static int mix_type(const llama_quant *q, const acem_tensor *t, acem_quant *type, acem_error *err) {
    category c = category_of(t->name);
    *type = q->default_type;
    if (c == CAT_OUTPUT || (q->tied && c == CAT_TOKEN_EMBD))
        *type = output_type(q, t);
    else if (is_attn_v(c))
        *type = attn_v_type(q, t);
    else if (c == CAT_ATTN_K && q->n_expert == 8)
        *type = ACEM_QUANT_Q8_0;
    else if (c == CAT_FFN_DOWN)
        return ffn_down_type(q, t, type, err);
    else if (c == CAT_ATTN_OUTPUT)
        *type = attn_output_type(q);
    return 0;
}

/* tensor_type_fallback: rows that do not split into the blocks take a 32-value type
 * (Q2_K, Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), and F16 when they do not
 * split into 32. */
static acem_out_type fallback(const acem_tensor *t, acem_quant type) {
    static const acem_quant to[ACEM_QUANT_COUNT] = {[ACEM_QUANT_Q2_K] = ACEM_QUANT_Q4_0,
                                                    [ACEM_QUANT_Q3_K] = ACEM_QUANT_Q4_0,
                                                    [ACEM_QUANT_Q4_K] = ACEM_QUANT_Q5_0,
                                                    [ACEM_QUANT_Q5_K] = ACEM_QUANT_Q5_1,
                                                    [ACEM_QUANT_Q6_K] = ACEM_QUANT_Q8_0};
    if (row_length(t) % acem_quant_block_elems(type) != 0 && to[type] != ACEM_QUANT_NONE)
        type = to[type];
    if (row_length(t) % acem_quant_block_elems(type) != 0) return ACEM_OUT_F16;
    return acem_out_type_of_quant(type);
}

int llama_quant_type(const llama_quant *q, const acem_tensor *t, acem_out_type *out,
                     acem_error *err) {
    acem_quant type;
    *out = ACEM_OUT_KEEP;
    if (!allows_quantization(t)) return 0;
    if (mix_type(q, t, &type, err)) return -1;
    *out = fallback(t, type);
    return 0;
}
