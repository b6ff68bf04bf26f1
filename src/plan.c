/* plan.c — matches tensors across inputs and assigns merge / copy. */
#include "plan.h"
#include "arch/layers.h"
#include "arch/llama_quant.h"
#include "formats/formats.h"
#include "methods/method.h"
#include "output.h"
#include "params.h"
#include "tokenizer_merge.h"

#include <cjson/cJSON.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ACE reference's exclusions (ace-merging.md, "Which tensors the reference merges").
 * Its patterns are Python re.match patterns, anchored at the start of the name. */
static const char *const preset_gpt2[] = {"score"};
static const char *const preset_bert[] = {"classifier", "bias", "LayerNorm", "embeddings"};
static const char *const preset_llama[] = {"embed_tokens", "^lm_head.weight"};
static const struct {
    const char *name;
    const char *const *patterns;
    size_t n;
} presets[] = {
    {"gpt2", preset_gpt2, 1},   {"bert", preset_bert, 4}, {"roberta", preset_bert, 4},
    {"llama", preset_llama, 2}, {"clip-vit", NULL, 0},
};

int plan_preset_patterns(const char *preset, const char *const **patterns, size_t *n) {
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        if (strcmp(presets[i].name, preset) == 0) {
            *patterns = presets[i].patterns;
            *n = presets[i].n;
            return 0;
        }
    return -1;
}

typedef struct exclusion {
    regex_t re;
    const char *pattern;
    bool hit; /* matched a tensor of the base */
} exclusion;

static int compile_exclusions(const acem_merge_options *o, exclusion **out, size_t *n,
                              acem_error *err) {
    const char *const *preset = NULL;
    size_t n_preset = 0;
    if (o->preset && plan_preset_patterns(o->preset, &preset, &n_preset))
        return acem_fail(err, "unknown preset \"%s\" (gpt2, bert, roberta, llama, clip-vit)",
                         o->preset);
    size_t total = (size_t)o->n_excludes + n_preset;
    exclusion *ex = acem_alloc(total + 1, sizeof *ex, "exclusions", err);
    if (!ex) return -1;
    for (size_t i = 0; i < total; i++) {
        const char *pat = i < (size_t)o->n_excludes ? o->excludes[i] : preset[i - o->n_excludes];
        int rc = regcomp(&ex[i].re, pat, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char msg[128];
            regerror(rc, &ex[i].re, msg, sizeof msg);
            for (size_t k = 0; k < i; k++)
                regfree(&ex[k].re);
            free(ex);
            return acem_fail(err, "--exclude \"%s\": %s", pat, msg);
        }
        ex[i].pattern = pat;
    }
    *out = ex;
    *n = total;
    return 0;
}

/* The first exclusion whose pattern is found in name, or NULL; every one found is marked,
 * so that one matching nothing can be named. */
static const char *excluded_by(exclusion *ex, size_t n_ex, const char *name) {
    const char *by = NULL;
    for (size_t k = 0; k < n_ex; k++)
        if (regexec(&ex[k].re, name, 0, NULL, 0) == 0) {
            ex[k].hit = true;
            if (!by) by = ex[k].pattern;
        }
    return by;
}

/* An --exclude that matches nothing is most often a typo or another model's naming: the
 * merge would run as if it had not been given. (A preset's patterns are a family's, not
 * all of which every model of it has.) */
static int warn_unmatched(const exclusion *ex, const acem_merge_options *o, acem_warnings *w,
                          acem_error *err) {
    for (int k = 0; k < o->n_excludes; k++)
        if (!ex[k].hit && acem_warn(w, err,
                                    "--exclude \"%s\" matches no tensor of the base: it keeps "
                                    "nothing from the base",
                                    ex[k].pattern))
            return -1;
    return 0;
}

/* True when the base directory's config.json says model_type "gpt2". */
static bool base_is_gpt2(const char *base) {
    if (!acem_is_dir(base)) return false;
    char *path = acem_path_join(base, "config.json", NULL);
    FILE *f = path ? fopen(path, "rb") : NULL;
    free(path);
    if (!f) return false;
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(buf, n);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    bool gpt2 = cJSON_IsString(type) && strcmp(type->valuestring, "gpt2") == 0;
    cJSON_Delete(root);
    return gpt2;
}

bool plan_is_conv1d_name(const char *name) {
    static const char *const parts[] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if (strstr(name, parts[i])) return true;
    return false;
}

static bool is_f8(acem_dtype dt) { return dt == ACEM_DT_F8_E4M3 || dt == ACEM_DT_F8_E5M2; }

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* FP8 checkpoints keep float scales beside each F8 weight ("m.weight_scale_inv",
 * "m.weight_scale", "m.input_scale" beside "m.weight"): the values are q * scale, so a
 * scale belongs to the base's F8 values and stays with them when they are kept. */
static bool is_f8_scale(const acem_checkpoint *base, const char *name) {
    if (!ends_with(name, "scale") && !ends_with(name, "scale_inv")) return false;
    const char *dot = strrchr(name, '.');
    size_t k = dot ? (size_t)(dot - name) + 1 : 0;
    char *weight = malloc(k + sizeof "weight");
    if (!weight) return false;
    memcpy(weight, name, k);
    memcpy(weight + k, "weight", sizeof "weight");
    const acem_tensor *w = acem_checkpoint_find(base, weight);
    free(weight);
    return w && is_f8(w->dtype);
}

static int f8_error(const acem_checkpoint *ck, const acem_tensor *t, acem_error *err) {
    return acem_fail(err,
                     "%s: tensor \"%s\" is %s, which acem does not merge (FP8 values depend on "
                     "block scales such as weight_scale_inv); dequantise the checkpoint first, or "
                     "keep the tensor from the base with --exclude",
                     acem_checkpoint_file_path(ck, t->file), t->name, acem_dtype_name(t->dtype));
}

static bool same_shape(const acem_tensor *a, const acem_tensor *b) {
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(uint64_t) * a->ndim) == 0;
}

static void shape_str(const acem_tensor *t, char *buf, size_t len) {
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%s%llu", d ? ", " : "",
                              (unsigned long long)t->shape[d]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

/* A tensor of ck whose name differs from `name` only by leading dotted components
 * ("transformer.wte.weight" and "wte.weight"), or NULL. Only on the error path. */
static const char *prefixed_twin(const acem_checkpoint *ck, const char *name) {
    for (const char *p = strchr(name, '.'); p; p = strchr(p + 1, '.'))
        if (acem_checkpoint_find(ck, p + 1)) return p + 1;
    size_t n = strlen(name);
    for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
        const char *x = acem_checkpoint_at(ck, i)->name;
        size_t k = strlen(x);
        if (k > n && x[k - n - 1] == '.' && strcmp(x + k - n, name) == 0) return x;
    }
    return NULL;
}

static int missing_error(const acem_checkpoint *ck, const char *name, acem_error *err) {
    const char *path = acem_checkpoint_path(ck), *twin = prefixed_twin(ck, name);
    if (!twin) return acem_fail(err, "%s: tensor \"%s\" of the base is missing", path, name);
    return acem_fail(err,
                     "%s: tensor \"%s\" of the base is missing, but it holds \"%s\": the names "
                     "differ by a prefix (save base and experts with the same model class)",
                     path, name, twin);
}

/* A float tensor of the base needs its twin in every expert: same name (names[t]: the
 * base's, or its layer in the expert's slice source) and shape, of a float or block type
 * (converted to the compute precision when read). */
static int match_experts(plan_entry *e, const char *const *names, int T, bool vocab_rows,
                         acem_error *err) {
    const acem_tensor *b = e->base;
    for (int t = 0; t < T; t++) {
        const acem_checkpoint *ck = e->expert_ck[t];
        const char *path = acem_checkpoint_path(ck);
        const acem_tensor *x = acem_checkpoint_find(ck, names[t]);
        if (!x) return missing_error(ck, names[t], err);
        if (!acem_dtype_is_mergeable(x->dtype))
            return acem_fail(err, "%s: tensor \"%s\" is %s but %s in the base: %s", path, b->name,
                             acem_tensor_type_name(x), acem_tensor_type_name(b),
                             is_f8(x->dtype) ? "acem does not merge F8 tensors"
                                             : "it is not a float type to merge");
        /* rows of an embedding may differ: they are mapped to the output vocabulary */
        bool rows = vocab_rows && tok_is_embedding(b->name) && x->ndim == 2 && b->ndim == 2 &&
                    x->shape[1] == b->shape[1];
        if (!same_shape(x, b) && !rows) {
            char sx[160], sb[160];
            shape_str(x, sx, sizeof sx);
            shape_str(b, sb, sizeof sb);
            return acem_fail(err, "%s: tensor \"%s\" has shape %s but %s in the base", path,
                             x->name, sx, sb);
        }
        e->experts[t] = x;
    }
    return 0;
}

acem_out_type plan_stored_type(const acem_tensor *t) {
    if (t->quant != ACEM_QUANT_NONE) return acem_out_type_of_quant(t->quant);
    switch (t->dtype) {
    case ACEM_DT_F64: return ACEM_OUT_F64;
    case ACEM_DT_F32: return ACEM_OUT_F32;
    case ACEM_DT_F16: return ACEM_OUT_F16;
    case ACEM_DT_BF16: return ACEM_OUT_BF16;
    default: return ACEM_OUT_KEEP;
    }
}

acem_dtype plan_fed_dtype(const plan_entry *e) {
    if (e->out == ACEM_OUT_KEEP) return e->base->dtype;
    acem_dtype dt = acem_out_type_dtype(e->out);
    return dt != ACEM_DT_NONE ? dt : ACEM_DT_F32;
}

/* llama.cpp computes with these tensors in F32 only (its CPU backend aborts on an F16 norm
 * weight), so none of its tools writes them in another type: convert_hf_to_gguf.py stores
 * "n_dims <= 1 or new_name.endswith('_norm.weight')" as F32 (ModelBase.prepare_tensors), and
 * llama-quantize converts only tensors of ggml_n_dims >= 2 whose names do not end in
 * "_norm.weight" (src/llama-quant.cpp, tensor_allows_quantization). */
static bool llama_keeps_f32(const acem_tensor *t) {
    return gguf_n_dims(t->ndim, t->shape) < 2 || ends_with(t->name, "_norm.weight");
}

/* --dtype types that llama.cpp's F32 tensors are not written in (F32 and F64 apply to all). */
static bool half_or_block(acem_out_type t) {
    return t == ACEM_OUT_F16 || t == ACEM_OUT_BF16 || acem_out_type_quant(t) != ACEM_QUANT_NONE;
}

/* The type a float tensor is written as. --dtype names it; block types apply to tensors of
 * 2 or more axes whose rows split into their blocks (others keep their stored type). A GGUF
 * output follows llama.cpp: a half or block --dtype leaves the tensors llama.cpp keeps in
 * F32 as F32. By default each tensor keeps its stored type, except that a file format
 * without blocks (safetensors) receives their values as F32. */
static acem_out_type target_type(const acem_tensor *b, const acem_merge_options *o, bool gguf) {
    acem_out_type stored = plan_stored_type(b);
    acem_quant q = acem_out_type_quant(o->out_type);
    if (gguf && half_or_block(o->out_type) && llama_keeps_f32(b)) return ACEM_OUT_F32;
    if (q != ACEM_QUANT_NONE)
        return b->ndim >= 2 && b->shape[b->ndim - 1] % acem_quant_block_elems(q) == 0 ? o->out_type
                                                                                      : stored;
    if (o->out_type != ACEM_OUT_KEEP) return o->out_type;
    return !gguf && acem_out_type_quant(stored) != ACEM_QUANT_NONE ? ACEM_OUT_F32 : stored;
}

/* Under a llama-quantize mix, the type llama-quantize gives the tensor; those it leaves
 * alone keep their stored type, as in its output, except the ones llama.cpp keeps F32. */
static int mix_target_type(const llama_quant *lq, const acem_tensor *b, acem_out_type *to,
                           acem_error *err) {
    if (llama_keeps_f32(b)) {
        *to = ACEM_OUT_F32;
        return 0;
    }
    if (llama_quant_type(lq, b, to, err)) return -1;
    if (*to == ACEM_OUT_KEEP) *to = plan_stored_type(b);
    return 0;
}

/* A --dtype that names a llama-quantize mix applies it where the base is a GGUF that
 * llama-quantize takes; Q4_0, Q8_0 and Q6_K are plain block types on other bases. */
static int open_mix(plan *p, const acem_checkpoint *base, const acem_merge_options *o,
                    llama_quant *lq, acem_error *err) {
    const acem_llama_ftype mix = acem_out_type_mix(o->out_type);
    if (mix == ACEM_FTYPE_NONE) return 0;
    /* the model as llama-quantize would see it: the base, or the GGUF it is converted to */
    const llama_model_view model =
        p->hf ? (llama_model_view){acem_checkpoint_path(base), p->hf->view, p->hf->n, &p->hf->kv}
              : (llama_model_view){acem_checkpoint_path(base), acem_checkpoint_at(base, 0),
                                   acem_checkpoint_count(base), acem_checkpoint_gguf(base)};
    int rc = llama_quant_init(lq, &model, o->out_type, err);
    if (rc < 0) return -1;
    /* Q4_0, Q8_0 and Q6_K are also plain block types; the others are mixes only */
    bool plain = acem_out_type_of_quant(acem_out_type_quant(o->out_type)) == o->out_type;
    if (rc == 0 && !plain)
        return acem_fail(err,
                         "%s: --dtype %s is llama-quantize's mix, which needs a GGUF base with "
                         "llama.cpp's architecture keys (general.architecture, <arch>.block_count) "
                         "or a Hugging Face directory written as GGUF",
                         acem_checkpoint_path(base), acem_out_type_name(o->out_type));
    p->llama_ftype = rc ? mix : ACEM_FTYPE_NONE;
    return 0;
}

/* A Hugging Face base with a GGUF output is converted as llama.cpp's converter would (not
 * yet with slices or a tokenizer_source: the converted names, key-values and vocabulary follow
 * the base's own layers and tokenizer). */
static int open_hf(plan *p, const acem_checkpoint *base, const acem_merge_options *o, bool slices,
                   acem_error *err) {
    if (!(p->hf = acem_alloc(1, sizeof *p->hf, "the GGUF conversion", err))) return -1;
    int rc =
        hf_gguf_open(p->hf, acem_checkpoint_path(base), o->out, base, err); /* a resolved id too */
    if (rc <= 0) {
        free(p->hf);
        p->hf = NULL;
    }
    if (rc > 0 && (slices || o->tokenizer_source))
        return acem_fail(err,
                         "%s: %s of a Hugging Face model written as GGUF %s not supported yet; "
                         "write safetensors, then convert with convert_hf_to_gguf.py",
                         o->out, slices ? "slices" : "a tokenizer_source", slices ? "are" : "is");
    return rc < 0 ? -1 : 0;
}

static int output_type(const plan *p, const llama_quant *lq, const acem_tensor *b,
                       const acem_merge_options *o, bool gguf, acem_out_type *to, acem_error *err) {
    *to = ACEM_OUT_KEEP;
    if (!acem_dtype_is_mergeable(b->dtype)) return 0;
    if (p->llama_ftype != ACEM_FTYPE_NONE) return mix_target_type(lq, b, to, err);
    *to = target_type(b, o, gguf);
    return 0;
}

/* Tensors the experts hold and the base lacks (a classification head, an adapter) have
 * nothing to be merged with: they are listed in the plan and named in one warning per
 * expert. */
static int find_extras(plan *p, const acem_checkpoint *base, const acem_checkpoint *const *experts,
                       int T, acem_warnings *w, acem_error *err) {
    size_t total = 0;
    for (int t = 0; t < T; t++)
        total += acem_checkpoint_count(experts[t]);
    if (!(p->extras = acem_alloc(total, sizeof *p->extras, "the plan", err))) return -1;
    for (int t = 0; t < T; t++) {
        size_t first = p->n_extras;
        for (size_t i = 0; i < acem_checkpoint_count(experts[t]); i++) {
            const acem_tensor *x = acem_checkpoint_at(experts[t], i);
            if (!acem_checkpoint_find(base, x->name)) p->extras[p->n_extras++] = (plan_extra){t, x};
        }
        size_t n = p->n_extras - first;
        if (n == 0) continue;
        char names[512] = "";
        for (size_t k = 0, len = 0; k < n && k < 3 && len < sizeof names; k++)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s\"%s\"", k ? ", " : "",
                                    p->extras[first + k].tensor->name);
        char more[64] = "";
        if (n > 3) snprintf(more, sizeof more, " and %zu more (the report lists them)", n - 3);
        if (acem_warn(w, err, "%s: %zu tensor%s that the base lacks %s not merged: %s%s",
                      acem_checkpoint_path(experts[t]), n, n == 1 ? "" : "s", n == 1 ? "is" : "are",
                      names, more))
            return -1;
    }
    return 0;
}

static const char not_float[] = "not a floating-point tensor";
static const char not_converted[] = "not written (llama.cpp's converter drops it)";
static const char f8_scale[] = "the scale of F8 values";

void plan_describe(const plan_entry *e, const char *method, bool matrix_only, char *buf,
                   size_t len) {
    if (e->action == PLAN_MERGE && matrix_only && e->base->ndim != 2)
        snprintf(buf, len, "merged: mean of the deltas (%s merges 2-D tensors)", method);
    else if (e->action == PLAN_MERGE)
        snprintf(buf, len, "merged by %s", method);
    else if (e->reason == not_converted)
        snprintf(buf, len, "%s", not_converted);
    else if (e->reason == not_float || e->reason == f8_scale)
        snprintf(buf, len, "copied from the base: %s", e->reason);
    else
        snprintf(buf, len, "copied from the base: matches the exclusion \"%s\"", e->reason);
}

/* What happens to one tensor of the base: merged when float and not excluded; copied when
 * not written to the output (dropped by the GGUF conversion), or
 * excluded, not float, or the scale of F8 values (the experts are then not consulted);
 * refused when F8 and not excluded. */
static int plan_entry_for(plan_entry *e, const char *const *names, int T, bool vocab_rows,
                          exclusion *ex, size_t n_ex, bool dropped, acem_error *err) {
    const acem_tensor *b = e->base;
    e->reason = dropped ? not_converted : excluded_by(ex, n_ex, e->name);
    if (is_f8(b->dtype) && !e->reason) return f8_error(e->base_ck, b, err);
    if (!e->reason && !acem_dtype_is_mergeable(b->dtype)) e->reason = not_float;
    if (!e->reason && is_f8_scale(e->base_ck, b->name)) e->reason = f8_scale;
    e->action = e->reason ? PLAN_COPY : PLAN_MERGE;
    return e->action == PLAN_MERGE ? match_experts(e, names, T, vocab_rows, err) : 0;
}

/* The layer count of a checkpoint: one more than the largest layer index of its names. */
static long layer_count(const acem_checkpoint *ck) {
    long n = 0;
    for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
        long layer = tensor_layer(acem_checkpoint_at(ck, i)->name);
        if (layer >= n) n = layer + 1;
    }
    return n;
}

/* The sources of a slice in the method's order of experts, and the reference source whose
 * tensors name the slice's layers (its base in mergekit): a method of deltas takes the
 * base's source as the base and the others as experts; a method of the weights takes every
 * source (slerp: the base's first, at t = 0). mergekit's methods find the base among a
 * slice's inputs (generalized_task_arithmetic.py, slerp.py: tensors[base_model]), so a slice
 * without it is an error for those. Returns the number of experts, or -1. */
static int slice_roles(const slice_def *sl, int index, const method_def *m, int *ref, int *order,
                       acem_error *err) {
    int base = -1, n = 0;
    for (int k = 0; k < sl->n_sources && base < 0; k++)
        if (sl->sources[k].input < 0) base = k;
    if (base < 0 && (!m->weights || m->base_first))
        return acem_fail(err,
                         "slice %d has no source of the base_model: %s needs the base among "
                         "every slice's sources (as mergekit does)",
                         index + 1, m->name);
    *ref = base >= 0 && (!m->weights || m->base_first) ? base : 0;
    if (m->weights && m->base_first) order[n++] = base;
    for (int k = 0; k < sl->n_sources; k++)
        if (m->weights ? !(m->base_first && k == base) : k != base) order[n++] = k;
    return n;
}

int plan_width(const acem_merge_options *o, int *T, acem_error *err) {
    const acem_settings *s = o->settings;
    *T = o->n_models;
    if (!s || !s->n_slices || !o->method || !method_find(o->method)) return 0;
    const method_def *m = method_find(o->method);
    for (int i = 0; i < s->n_slices; i++) {
        int ref, *order = acem_alloc((size_t)s->slices[i].n_sources, sizeof *order, "a slice", err);
        int n = order ? slice_roles(&s->slices[i], i, m, &ref, order, err) : -1;
        free(order);
        if (n < 0) return -1;
        if (i && n != *T)
            return acem_fail(err,
                             "slice %d gives %s %d model%s, slice 1 %d: acem merges the same "
                             "number of models in every slice",
                             i + 1, m->name, n, n == 1 ? "" : "s", *T);
        *T = n;
    }
    return 0;
}

/* What every entry of a plan is built with. */
typedef struct build_ctx {
    plan *p;
    const acem_merge_options *o;
    const acem_checkpoint *base;
    const acem_checkpoint *const *inputs;
    exclusion *ex;
    size_t n_ex;
    llama_quant lq;
    bool gguf, gpt2;
    size_t n; /* entries so far (counted only while p->entries is NULL) */
} build_ctx;

/* Entry i's slots. */
static plan_entry *entry_at(plan *p, size_t i) {
    plan_entry *e = &p->entries[i];
    e->experts = p->expert_slots + i * (size_t)p->T;
    e->expert_ck = p->ck_slots + i * (size_t)p->T;
    e->source = p->source_slots + i * (size_t)p->T;
    e->slice = -1;
    return e;
}

/* Room for n entries of T experts each. */
static int plan_alloc(plan *p, size_t n, acem_error *err) {
    p->n = n;
    size_t slots = n * (size_t)p->T + 1;
    return (p->entries = acem_alloc(n + 1, sizeof *p->entries, "the plan", err)) &&
                   (p->expert_slots =
                        acem_alloc(slots, sizeof *p->expert_slots, "the plan", err)) &&
                   (p->ck_slots = acem_alloc(slots, sizeof *p->ck_slots, "the plan", err)) &&
                   (p->source_slots =
                        acem_alloc(slots, sizeof *p->source_slots, "the plan", err)) &&
                   (p->names = acem_alloc(n + 1, sizeof *p->names, "the plan", err))
               ? 0
               : -1;
}

/* An entry whose name, base and experts' checkpoints are set (names: each expert's tensor):
 * its action, output type and the bytes it reads. */
static int finish_entry(build_ctx *b, plan_entry *e, const char *const *names, acem_error *err) {
    plan *p = b->p;
    /* a Hugging Face base converted to GGUF (no slices: entry i is the base's tensor i) */
    const size_t i = (size_t)(e - p->entries);
    const bool dropped = p->hf && p->hf->layout[i] == OUT_DROPPED;
    if (plan_entry_for(e, names, p->T, b->o->tokenizer_source != NULL, b->ex, b->n_ex, dropped,
                       err))
        return -1;
    acem_out_type to = ACEM_OUT_KEEP; /* the types follow the output's names and shapes */
    if (!dropped &&
        output_type(p, &b->lq, p->hf ? &p->hf->view[i] : e->base, b->o, b->gguf, &to, err))
        return -1;
    e->out = e->action == PLAN_COPY && to == plan_stored_type(e->base) ? ACEM_OUT_KEEP : to;
    bool merged = e->action == PLAN_MERGE;
    e->conv1d = b->gpt2 && e->base->ndim == 2 && plan_is_conv1d_name(e->base->name);
    p->n_conv1d += merged && e->conv1d;
    p->n_merge += merged;
    p->bytes_to_read += acem_tensor_stored_bytes(e->base);
    for (int t = 0; merged && t < p->T; t++)
        p->bytes_to_read += acem_tensor_stored_bytes(e->experts[t]);
    return 0;
}

/* Without slices every tensor of the base is an entry, each expert's twin of the same name,
 * read at the position of its layer in the base. */
static int plan_models(build_ctx *b, const char **names, acem_error *err) {
    plan *p = b->p;
    if (plan_alloc(p, acem_checkpoint_count(b->base), err)) return -1;
    p->n_layers = layer_count(b->base);
    for (size_t i = 0; i < p->n; i++) {
        plan_entry *e = entry_at(p, i);
        e->base = acem_checkpoint_at(b->base, i);
        e->name = e->base->name;
        e->base_ck = b->base;
        e->t = tensor_gradient_t(e->name, p->n_layers);
        for (int t = 0; t < p->T; t++) {
            ((const acem_checkpoint **)e->expert_ck)[t] = b->inputs[t];
            names[t] = e->name;
        }
        if (finish_entry(b, e, names, err)) return -1;
    }
    return 0;
}

static const acem_checkpoint *source_ck(const build_ctx *b, const slice_source *src) {
    return src->input < 0 ? b->base : b->inputs[src->input];
}

/* Which part of the output a tensor of a slice's reference source goes to. */
enum { PART_BEFORE, PART_LAYERS, PART_AFTER };

static bool in_part(const char *name, int part) {
    long layer = tensor_layer(name);
    return part == PART_LAYERS ? layer >= 0
                               : layer < 0 && tensor_before_layers(name) == (part == PART_BEFORE);
}

/* One slice's roles, as slice_roles gives them. */
typedef struct slice_plan {
    const slice_def *def;
    int index, ref;
    int *order;
} slice_plan;

/* One output tensor from a slice: rt of the reference source at layer `offset` of the slice
 * (-1: outside the layers), each expert's tensor of the same name at that layer of its own
 * source; written as layer out_layer, read at t. Only counted while p->entries is NULL. */
static int slice_tensor(build_ctx *b, const slice_plan *sp, const acem_tensor *rt, long offset,
                        long out_layer, double t, acem_error *err) {
    plan *p = b->p;
    size_t i = b->n++;
    if (!p->entries) return 0;
    plan_entry *e = entry_at(p, i);
    e->base = rt;
    e->base_ck = source_ck(b, &sp->def->sources[sp->ref]);
    e->slice = sp->index;
    e->t = t;
    e->name = rt->name;
    if (offset >= 0 && !(e->name = p->names[i] = tensor_with_layer(rt->name, out_layer, err)))
        return -1;
    char **names = acem_alloc((size_t)p->T + 1, sizeof *names, "tensor names", err);
    int rc = names ? 0 : -1;
    for (int k = 0; k < p->T && !rc; k++) {
        const slice_source *src = &sp->def->sources[sp->order[k]];
        ((const acem_checkpoint **)e->expert_ck)[k] = source_ck(b, src);
        ((int *)e->source)[k] = sp->order[k];
        names[k] = offset < 0 ? acem_strdup(rt->name, err)
                              : tensor_with_layer(rt->name, src->start + offset, err);
        if (!names[k]) rc = -1;
    }
    if (!rc) rc = finish_entry(b, e, (const char *const *)names, err);
    for (int k = 0; names && k < p->T; k++)
        free(names[k]);
    free(names);
    return rc;
}

/* The reference source's tensors of one part: for the layers, each layer of the slice in
 * turn (renumbered from *out_layer on), read at j / (L - 1) (1 when L = 1) as mergekit's
 * plan_slice does; before the layers at t = 0, after them at t = 1 (plan.py). */
static int slice_part(build_ctx *b, const slice_plan *sp, int part, long *out_layer,
                      acem_error *err) {
    const slice_source *ref = &sp->def->sources[sp->ref];
    const acem_checkpoint *ck = source_ck(b, ref);
    long len = part == PART_LAYERS ? ref->end - ref->start : 1;
    for (long j = 0; j < len; j++) {
        double t = part == PART_BEFORE              ? 0
                   : part == PART_AFTER || len == 1 ? 1
                                                    : (double)j / (double)(len - 1);
        for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
            const acem_tensor *rt = acem_checkpoint_at(ck, i);
            if (!in_part(rt->name, part) ||
                (part == PART_LAYERS && tensor_layer(rt->name) != ref->start + j))
                continue;
            if (slice_tensor(b, sp, rt, part == PART_LAYERS ? j : -1, *out_layer, t, err))
                return -1;
        }
        if (part == PART_LAYERS) ++*out_layer;
    }
    return 0;
}

/* Every source's layer_range lies within its model's layers, and the sources of a slice
 * span as many layers (mergekit: "All inputs to a slice must contain the same number of
 * layers"). */
static int check_ranges(const build_ctx *b, const slice_def *sl, int index, acem_error *err) {
    for (int k = 0; k < sl->n_sources; k++) {
        const slice_source *src = &sl->sources[k];
        long n = layer_count(source_ck(b, src));
        if (src->end > n)
            return acem_fail(err, "%s: slice %d takes layers [%ld, %ld), but the model has %ld",
                             src->model, index + 1, src->start, src->end, n);
        if (src->end - src->start != sl->sources[0].end - sl->sources[0].start)
            return acem_fail(err,
                             "slice %d: its sources span different numbers of layers (%s: %ld, "
                             "%s: %ld); all inputs to a slice must have as many (as mergekit)",
                             index + 1, sl->sources[0].model,
                             sl->sources[0].end - sl->sources[0].start, src->model,
                             src->end - src->start);
    }
    return 0;
}

/* mergekit's plan (plan.py): the tensors before the layers from the first slice's sources,
 * every slice's layers in turn, renumbered consecutively, then the tensors after the layers
 * from the last slice's sources. Walked twice: to count, then to fill. */
static int walk_slices(build_ctx *b, slice_plan *sp, int n, acem_error *err) {
    long out_layer = 0;
    b->n = 0;
    if (slice_part(b, &sp[0], PART_BEFORE, &out_layer, err)) return -1;
    for (int i = 0; i < n; i++)
        if (slice_part(b, &sp[i], PART_LAYERS, &out_layer, err)) return -1;
    b->p->n_layers = out_layer;
    return slice_part(b, &sp[n - 1], PART_AFTER, &out_layer, err);
}

static int plan_slices(build_ctx *b, acem_error *err) {
    const acem_settings *s = b->o->settings;
    const method_def *m = method_find(b->o->method);
    slice_plan *sp = acem_alloc((size_t)s->n_slices, sizeof *sp, "slices", err);
    int rc = sp ? 0 : -1;
    for (int i = 0; i < s->n_slices && !rc; i++) {
        sp[i] = (slice_plan){&s->slices[i], i, 0, NULL};
        sp[i].order =
            acem_alloc((size_t)s->slices[i].n_sources, sizeof *sp[i].order, "a slice", err);
        rc = !sp[i].order || check_ranges(b, &s->slices[i], i, err) ||
                     slice_roles(&s->slices[i], i, m, &sp[i].ref, sp[i].order, err) < 0
                 ? -1
                 : 0;
    }
    b->p->renumbered = true;
    if (!rc)
        rc = walk_slices(b, sp, s->n_slices, err) || plan_alloc(b->p, b->n, err) ||
                     walk_slices(b, sp, s->n_slices, err)
                 ? -1
                 : 0;
    for (int i = 0; sp && i < s->n_slices; i++)
        free(sp[i].order);
    free(sp);
    return rc;
}

int plan_build(plan *p, const acem_checkpoint *base, const acem_checkpoint *const *inputs,
               const acem_merge_options *o, acem_warnings *w, acem_error *err) {
    memset(p, 0, sizeof *p);
    build_ctx b = {.p = p, .o = o, .base = base, .inputs = inputs};
    if (plan_width(o, &p->T, err) || compile_exclusions(o, &b.ex, &b.n_ex, err)) return -1;
    int rc = -1;
    const char **names = NULL;
    const bool slices = o->settings && o->settings->n_slices;
    b.gpt2 = o->covariance_axis_input &&
             ((o->preset && strcmp(o->preset, "gpt2") == 0) || base_is_gpt2(o->base));
    b.gguf = o->out && output_is_gguf(o->out);
    if ((b.gguf && open_hf(p, base, o, slices, err)) || open_mix(p, base, o, &b.lq, err) ||
        !(names = acem_alloc((size_t)p->T + 1, sizeof *names, "tensor names", err)) ||
        (slices ? plan_slices(&b, err) : plan_models(&b, names, err)))
        goto out;
    /* in a frankenmerge the layers a slice leaves out are not extras */
    rc = (!slices && find_extras(p, base, inputs, p->T, w, err)) || warn_unmatched(b.ex, o, w, err)
             ? -1
             : 0;
out:
    for (size_t k = 0; k < b.n_ex; k++)
        regfree(&b.ex[k].re);
    free(b.ex);
    free(names);
    if (rc) plan_free(p);
    return rc;
}

void plan_free(plan *p) {
    if (p->hf) hf_gguf_free(p->hf);
    free(p->hf);
    for (size_t i = 0; p->names && i < p->n; i++)
        free(p->names[i]);
    free(p->names);
    free(p->entries);
    free(p->expert_slots);
    free(p->ck_slots);
    free(p->source_slots);
    free(p->extras);
    memset(p, 0, sizeof *p);
}
