/* dtype.c — element types, IEEE half / bfloat16 conversions, bulk conversion between the
 * stored bytes and the compute type. All conversions to narrower types round to nearest,
 * ties to even; NaN stays NaN (quietened), values beyond the range become Inf. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[ACEM_DT_COUNT] = {
    [ACEM_DT_BOOL] = {"BOOL", 1},       [ACEM_DT_U8] = {"U8", 1},
    [ACEM_DT_I8] = {"I8", 1},           [ACEM_DT_F8_E5M2] = {"F8_E5M2", 1},
    [ACEM_DT_F8_E4M3] = {"F8_E4M3", 1}, [ACEM_DT_I16] = {"I16", 2},
    [ACEM_DT_U16] = {"U16", 2},         [ACEM_DT_F16] = {"F16", 2},
    [ACEM_DT_BF16] = {"BF16", 2},       [ACEM_DT_I32] = {"I32", 4},
    [ACEM_DT_U32] = {"U32", 4},         [ACEM_DT_F32] = {"F32", 4},
    [ACEM_DT_F64] = {"F64", 8},         [ACEM_DT_I64] = {"I64", 8},
    [ACEM_DT_U64] = {"U64", 8},
};

const char *acem_dtype_name(acem_dtype dt) {
    return (dt >= 0 && dt < ACEM_DT_COUNT) ? dtype_table[dt].name : "?";
}

acem_dtype acem_dtype_from_name(const char *name) {
    for (int i = 0; i < ACEM_DT_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0) return (acem_dtype)i;
    return ACEM_DT_NONE;
}

size_t acem_dtype_size(acem_dtype dt) {
    return (dt >= 0 && dt < ACEM_DT_COUNT) ? dtype_table[dt].size : 0;
}

int acem_dtype_is_mergeable(acem_dtype dt) {
    return dt == ACEM_DT_F64 || dt == ACEM_DT_F32 || dt == ACEM_DT_F16 || dt == ACEM_DT_BF16;
}

static inline uint32_t f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}
static inline float bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

float acem_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in f32 */
        float v = (float)m * 0x1p-24f;
        return bits_f32(f32_bits(v) | sign);
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t acem_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff); /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to Inf */
    if (a < 0x38800000u) {                      /* below 2^-14: f16 subnormal or zero */
        if (a < 0x33000000u) return sign;       /* below 2^-25: rounds to zero */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150); unit of the result is 2^-24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t v = a - 0x38000000u; /* rebias the exponent from 127 to 15 */
    uint32_t r = v >> 13, rem = v & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return sign | (uint16_t)r;
}

float acem_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t acem_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1); /* round to nearest, ties to even; overflow -> Inf */
    return (uint16_t)(x >> 16);
}

/* NaN and Inf are the values whose exponent bits are all ones. Blocks are screened with a
 * branch-free OR (it vectorises); only a block that holds one is searched element-wise. */
#define FIND_NONFINITE(T, MASK)                                                                    \
    do {                                                                                           \
        const T *x = raw;                                                                          \
        for (size_t b = 0; b < n; b += 4096) {                                                     \
            size_t e = n - b < 4096 ? n : b + 4096;                                                \
            int any = 0;                                                                           \
            for (size_t i = b; i < e; i++)                                                         \
                any |= (x[i] & (MASK)) == (MASK);                                                  \
            if (any)                                                                               \
                for (size_t i = b; i < e; i++)                                                     \
                    if ((x[i] & (MASK)) == (MASK)) return (int64_t)i;                              \
        }                                                                                          \
        return -1;                                                                                 \
    } while (0)

ACEM_SIMD_CLONES int64_t acem_first_nonfinite_raw(const void *raw, acem_dtype dt, size_t n) {
    switch (dt) {
    case ACEM_DT_F64: FIND_NONFINITE(uint64_t, 0x7ff0000000000000ULL);
    case ACEM_DT_F32: FIND_NONFINITE(uint32_t, 0x7f800000u);
    case ACEM_DT_F16: FIND_NONFINITE(uint16_t, 0x7c00u);
    default: FIND_NONFINITE(uint16_t, 0x7f80u);
    }
}
#undef FIND_NONFINITE

/* The loops are written per (stored, compute) pair so that each one vectorises. */
#define CONVERT_LOOP(DST_T, EXPR)                                                                  \
    do {                                                                                           \
        DST_T *d = dst;                                                                            \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] = (DST_T)(EXPR);                                                                  \
    } while (0)

ACEM_SIMD_CLONES int64_t acem_convert_from_raw(const void *raw, acem_dtype dt, void *dst,
                                               acem_dtype compute, size_t n, bool check_finite) {
    const uint16_t *h = raw;
    if (compute == ACEM_DT_F64) {
        switch (dt) {
        case ACEM_DT_F64: memcpy(dst, raw, n * 8); break;
        case ACEM_DT_F32: CONVERT_LOOP(double, ((const float *)raw)[i]); break;
        case ACEM_DT_F16: CONVERT_LOOP(double, acem_f16_to_f32(h[i])); break;
        default: CONVERT_LOOP(double, acem_bf16_to_f32(h[i])); break;
        }
    } else {
        switch (dt) {
        case ACEM_DT_F64: CONVERT_LOOP(float, ((const double *)raw)[i]); break;
        case ACEM_DT_F32: memcpy(dst, raw, n * 4); break;
        case ACEM_DT_F16: CONVERT_LOOP(float, acem_f16_to_f32(h[i])); break;
        default: CONVERT_LOOP(float, acem_bf16_to_f32(h[i])); break;
        }
    }
    return check_finite ? acem_first_nonfinite_raw(raw, dt, n) : -1;
}

void acem_convert_to_raw(const void *src, acem_dtype compute, void *raw, acem_dtype dt, size_t n) {
    uint16_t *h = raw;
    if (compute == ACEM_DT_F64) {
        const double *s = src;
        switch (dt) {
        case ACEM_DT_F64: memcpy(raw, src, n * 8); break;
        case ACEM_DT_F32:
            for (size_t i = 0; i < n; i++)
                ((float *)raw)[i] = (float)s[i];
            break;
        /* Double rounding f64 -> f32 -> f16 can differ from direct rounding only on exact
         * f32 ties, far below the half-ulp of f16 that matters here. */
        case ACEM_DT_F16:
            for (size_t i = 0; i < n; i++)
                h[i] = acem_f32_to_f16((float)s[i]);
            break;
        default:
            for (size_t i = 0; i < n; i++)
                h[i] = acem_f32_to_bf16((float)s[i]);
            break;
        }
    } else {
        const float *s = src;
        switch (dt) {
        case ACEM_DT_F64:
            for (size_t i = 0; i < n; i++)
                ((double *)raw)[i] = s[i];
            break;
        case ACEM_DT_F32: memcpy(raw, src, n * 4); break;
        case ACEM_DT_F16:
            for (size_t i = 0; i < n; i++)
                h[i] = acem_f32_to_f16(s[i]);
            break;
        default:
            for (size_t i = 0; i < n; i++)
                h[i] = acem_f32_to_bf16(s[i]);
            break;
        }
    }
}

acem_dtype acem_dtype_parse(const char *s) {
    static const struct {
        const char *name;
        acem_dtype dt;
    } names[] = {
        {"f32", ACEM_DT_F32},   {"float32", ACEM_DT_F32},   {"F32", ACEM_DT_F32},
        {"f64", ACEM_DT_F64},   {"float64", ACEM_DT_F64},   {"F64", ACEM_DT_F64},
        {"f16", ACEM_DT_F16},   {"float16", ACEM_DT_F16},   {"F16", ACEM_DT_F16},
        {"bf16", ACEM_DT_BF16}, {"bfloat16", ACEM_DT_BF16}, {"BF16", ACEM_DT_BF16},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(names[i].name, s) == 0) return names[i].dt;
    return ACEM_DT_NONE;
}

/* out_i = w0_i + lambda * delta_i evaluated in double and rounded once to the stored
 * type, so that an f64 output of an f32 computation keeps the delta's precision. */
#define COMBINE_LOOP(SRC_T, STORE)                                                                 \
    do {                                                                                           \
        const SRC_T *a = w0, *b = delta;                                                           \
        for (size_t i = lo; i < hi; i++) {                                                         \
            double v = (double)a[i] + lambda * (double)b[i];                                       \
            STORE;                                                                                 \
        }                                                                                          \
    } while (0)
#define COMBINE_TO(SRC_T)                                                                          \
    do {                                                                                           \
        switch (dt) {                                                                              \
        case ACEM_DT_F64: COMBINE_LOOP(SRC_T, ((double *)raw)[i] = v); break;                      \
        case ACEM_DT_F32: COMBINE_LOOP(SRC_T, ((float *)raw)[i] = (float)v); break;                \
        case ACEM_DT_F16: COMBINE_LOOP(SRC_T, h[i] = acem_f32_to_f16((float)v)); break;            \
        default: COMBINE_LOOP(SRC_T, h[i] = acem_f32_to_bf16((float)v)); break;                    \
        }                                                                                          \
    } while (0)

ACEM_SIMD_CLONES static void combine_range(const void *w0, const void *delta, double lambda,
                                           bool f64, void *raw, acem_dtype dt, size_t lo,
                                           size_t hi) {
    uint16_t *h = raw;
    if (f64)
        COMBINE_TO(double);
    else
        COMBINE_TO(float);
}
#undef COMBINE_TO
#undef COMBINE_LOOP

void acem_combine_to_raw(const void *w0, const void *delta, double lambda, acem_dtype compute,
                         void *raw, acem_dtype dt, size_t n, bool parallel) {
    const bool f64 = compute == ACEM_DT_F64;
    if (!parallel) {
        combine_range(w0, delta, lambda, f64, raw, dt, 0, n);
        return;
    }
#pragma omp parallel
    {
        size_t th = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        combine_range(w0, delta, lambda, f64, raw, dt, n * th / nt, n * (th + 1) / nt);
    }
}

/* Each output type is exactly one of a float type or a block type, or a llama-quantize mix
 * (mix_only: it exists as an option value, resolved per tensor by the plan). */
static const struct {
    acem_dtype dtype;
    acem_quant quant; /* a mix's: its default type */
    acem_llama_ftype mix;
    bool mix_only;
} out_types[ACEM_OUT_COUNT] = {
    [ACEM_OUT_KEEP] = {ACEM_DT_NONE, ACEM_QUANT_NONE, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_F64] = {ACEM_DT_F64, ACEM_QUANT_NONE, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_F32] = {ACEM_DT_F32, ACEM_QUANT_NONE, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_F16] = {ACEM_DT_F16, ACEM_QUANT_NONE, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_BF16] = {ACEM_DT_BF16, ACEM_QUANT_NONE, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_Q8_0] = {ACEM_DT_NONE, ACEM_QUANT_Q8_0, ACEM_FTYPE_Q8_0, false},
    [ACEM_OUT_Q4_0] = {ACEM_DT_NONE, ACEM_QUANT_Q4_0, ACEM_FTYPE_Q4_0, false},
    [ACEM_OUT_Q4_K] = {ACEM_DT_NONE, ACEM_QUANT_Q4_K, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_Q5_K] = {ACEM_DT_NONE, ACEM_QUANT_Q5_K, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_Q6_K] = {ACEM_DT_NONE, ACEM_QUANT_Q6_K, ACEM_FTYPE_Q6_K, false},
    [ACEM_OUT_Q5_0] = {ACEM_DT_NONE, ACEM_QUANT_Q5_0, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_Q5_1] = {ACEM_DT_NONE, ACEM_QUANT_Q5_1, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_Q2_K] = {ACEM_DT_NONE, ACEM_QUANT_Q2_K, ACEM_FTYPE_Q2_K, false},
    /* llama-quantize's Q3_K is its alias for Q3_K_M */
    [ACEM_OUT_Q3_K] = {ACEM_DT_NONE, ACEM_QUANT_Q3_K, ACEM_FTYPE_Q3_K_M, false},
    [ACEM_OUT_Q8_K] = {ACEM_DT_NONE, ACEM_QUANT_Q8_K, ACEM_FTYPE_NONE, false},
    [ACEM_OUT_Q4_K_S] = {ACEM_DT_NONE, ACEM_QUANT_Q4_K, ACEM_FTYPE_Q4_K_S, true},
    [ACEM_OUT_Q4_K_M] = {ACEM_DT_NONE, ACEM_QUANT_Q4_K, ACEM_FTYPE_Q4_K_M, true},
    [ACEM_OUT_Q5_K_S] = {ACEM_DT_NONE, ACEM_QUANT_Q5_K, ACEM_FTYPE_Q5_K_S, true},
    [ACEM_OUT_Q5_K_M] = {ACEM_DT_NONE, ACEM_QUANT_Q5_K, ACEM_FTYPE_Q5_K_M, true},
    [ACEM_OUT_Q3_K_S] = {ACEM_DT_NONE, ACEM_QUANT_Q3_K, ACEM_FTYPE_Q3_K_S, true},
    [ACEM_OUT_Q3_K_M] = {ACEM_DT_NONE, ACEM_QUANT_Q3_K, ACEM_FTYPE_Q3_K_M, true},
    [ACEM_OUT_Q3_K_L] = {ACEM_DT_NONE, ACEM_QUANT_Q3_K, ACEM_FTYPE_Q3_K_L, true},
};

/* llama-quantize's names of the mix-only values. */
static const char *const mix_names[ACEM_OUT_COUNT] = {
    [ACEM_OUT_Q4_K_S] = "Q4_K_S", [ACEM_OUT_Q4_K_M] = "Q4_K_M", [ACEM_OUT_Q5_K_S] = "Q5_K_S",
    [ACEM_OUT_Q5_K_M] = "Q5_K_M", [ACEM_OUT_Q3_K_S] = "Q3_K_S", [ACEM_OUT_Q3_K_M] = "Q3_K_M",
    [ACEM_OUT_Q3_K_L] = "Q3_K_L",
};

static bool valid(acem_out_type t) { return t > ACEM_OUT_KEEP && t < ACEM_OUT_COUNT; }

acem_dtype acem_out_type_dtype(acem_out_type t) {
    return valid(t) ? out_types[t].dtype : ACEM_DT_NONE;
}

acem_quant acem_out_type_quant(acem_out_type t) {
    return valid(t) ? out_types[t].quant : ACEM_QUANT_NONE;
}

acem_llama_ftype acem_out_type_mix(acem_out_type t) {
    return valid(t) ? out_types[t].mix : ACEM_FTYPE_NONE;
}

acem_out_type acem_out_type_of_quant(acem_quant q) {
    for (int t = ACEM_OUT_KEEP + 1; q != ACEM_QUANT_NONE && t < ACEM_OUT_COUNT; t++)
        if (out_types[t].quant == q && !out_types[t].mix_only) return (acem_out_type)t;
    return ACEM_OUT_KEEP;
}

const char *acem_out_type_name(acem_out_type t) {
    if (!valid(t)) return "as the base";
    if (out_types[t].mix_only) return mix_names[t];
    return out_types[t].quant ? acem_quant_name(out_types[t].quant)
                              : acem_dtype_name(out_types[t].dtype);
}

acem_out_type acem_out_type_parse(const char *s) {
    acem_dtype dt = acem_dtype_parse(s);
    acem_quant q = dt == ACEM_DT_NONE ? acem_quant_parse(s) : ACEM_QUANT_NONE;
    for (int t = ACEM_OUT_KEEP + 1; t < ACEM_OUT_COUNT; t++) {
        if (out_types[t].mix_only ? strcasecmp(mix_names[t], s) == 0
                                  : (dt != ACEM_DT_NONE && out_types[t].dtype == dt) ||
                                        (q && out_types[t].quant == q))
            return (acem_out_type)t;
    }
    return ACEM_OUT_INVALID;
}

/* llama-quantize's mixes acem does not write, and why: Q2_K_S quantises its Q2_K tensors with
 * an importance matrix only (src/llama-quant.cpp, tensor_requires_imatrix). */
const char *acem_out_type_refused(const char *s) {
    if (strcasecmp(s, "Q2_K_S") == 0)
        return "llama-quantize's Q2_K_S needs an importance matrix (it refuses to run without "
               "one) and acem quantises without one; Q2_K is the mix without";
    return NULL;
}
