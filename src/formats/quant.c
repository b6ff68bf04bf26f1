/* quant.c — ggml block quantisation: the block layouts of Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K,
 * Q6_K, their dequantisation and quantisation. All multi-byte fields are little-endian.
 *
 *   Q8_0  34 bytes / 32 values:  f16 d, int8 q[32];               x = d * q
 *   Q4_0  18 bytes / 32 values:  f16 d, u8 qs[16];                x = d * (nibble - 8),
 *                                value j < 16 in the low nibble of qs[j], j >= 16 in the high
 *   Q5_0  22 bytes / 32 values:  f16 d, u32 qh, u8 qs[16];        x = d * (5-bit q - 16),
 *                                nibbles as Q4_0, the fifth bit of value j is bit j of qh
 *   Q5_1  24 bytes / 32 values:  f16 d, f16 m, u32 qh, u8 qs[16]; x = d * q + m, q as Q5_0
 *   Q4_K 144 bytes / 256 values: f16 d, f16 dmin, u8 scales[12], u8 qs[128]; eight
 *                                sub-blocks of 32 with 6-bit scale sc and min m:
 *                                x = d * sc * nibble - dmin * m
 *   Q5_K 176 bytes / 256 values: as Q4_K, then u8 qh[32] before qs[128]: bit 2k (2k + 1) of
 *                                qh[l] is the fifth bit of value l of sub-block 2k (2k + 1)
 *   Q6_K 210 bytes / 256 values: u8 ql[128], u8 qh[64], int8 scales[16], f16 d; sixteen
 *                                sub-blocks of 16: x = d * scale * (6-bit q - 32)
 *   Q2_K  84 bytes / 256 values: u8 scales[16], u8 qs[64], f16 d, f16 dmin; sixteen sub-blocks
 *                                of 16, scale in the low and min in the high nibble of
 *                                scales[j]: x = d * scale * q - dmin * min, 2-bit q
 *   Q3_K 110 bytes / 256 values: u8 hmask[32], u8 qs[64], u8 scales[12], f16 d; sixteen
 *                                sub-blocks of 16 with 6-bit scales s (stored s + 32):
 *                                x = d * s * (q - 4), q's third bit set = 4 not subtracted
 *   Q8_K 292 bytes / 256 values: f32 d, int8 q[256], int16 bsums[16] (sums of 16 codes);
 *                                x = d * q
 *   Q2_K and Q3_K pack value v's two low bits in qs[v / 128 * 32 + v % 32] at bit
 *   2 * (v % 128 / 32); Q3_K's third bit is bit v / 32 of hmask[v % 32].
 *
 * The quantisers follow ggml's reference ones (quantize_row_*_ref): Q8_0, Q4_0, Q5_0, Q5_1 and
 * Q8_K directly, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K with their searches over trial scales. */
#include "formats.h"

#include <math.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    uint32_t ggml_type, block_elems, block_bytes;
} quant_table[ACEM_QUANT_COUNT] = {
    [ACEM_QUANT_NONE] = {"", 0, 1, 0},          [ACEM_QUANT_Q8_0] = {"Q8_0", 8, 32, 34},
    [ACEM_QUANT_Q4_0] = {"Q4_0", 2, 32, 18},    [ACEM_QUANT_Q4_K] = {"Q4_K", 12, 256, 144},
    [ACEM_QUANT_Q6_K] = {"Q6_K", 14, 256, 210}, [ACEM_QUANT_Q5_K] = {"Q5_K", 13, 256, 176},
    [ACEM_QUANT_Q5_0] = {"Q5_0", 6, 32, 22},    [ACEM_QUANT_Q5_1] = {"Q5_1", 7, 32, 24},
    [ACEM_QUANT_Q2_K] = {"Q2_K", 10, 256, 84},  [ACEM_QUANT_Q3_K] = {"Q3_K", 11, 256, 110},
    [ACEM_QUANT_Q8_K] = {"Q8_K", 15, 256, 292},
};

const char *acem_quant_name(acem_quant q) {
    return q > ACEM_QUANT_NONE && q < ACEM_QUANT_COUNT ? quant_table[q].name : "";
}

acem_quant acem_quant_parse(const char *s) {
    for (int q = ACEM_QUANT_NONE + 1; q < ACEM_QUANT_COUNT; q++)
        if (strcasecmp(quant_table[q].name, s) == 0) return (acem_quant)q;
    return ACEM_QUANT_NONE;
}

uint32_t acem_quant_ggml_type(acem_quant q) { return quant_table[q].ggml_type; }
uint32_t acem_quant_block_elems(acem_quant q) { return quant_table[q].block_elems; }
uint32_t acem_quant_block_bytes(acem_quant q) { return quant_table[q].block_bytes; }
bool acem_quant_writable(acem_quant q) { return q > ACEM_QUANT_NONE && q < ACEM_QUANT_COUNT; }

acem_quant acem_quant_from_ggml(uint32_t type) {
    for (int q = ACEM_QUANT_NONE + 1; q < ACEM_QUANT_COUNT; q++)
        if (quant_table[q].ggml_type == type) return (acem_quant)q;
    return ACEM_QUANT_NONE;
}

uint64_t acem_stored_bytes_of(const acem_tensor *t, uint64_t n) {
    uint64_t bytes = n * acem_dtype_size(t->dtype); /* n <= numel: the reader checked */
    if (t->quant != ACEM_QUANT_NONE) acem_quant_stored_bytes(t->quant, n, &bytes);
    return bytes;
}

uint64_t acem_tensor_stored_bytes(const acem_tensor *t) {
    return acem_stored_bytes_of(t, t->numel);
}

const char *acem_tensor_type_name(const acem_tensor *t) {
    return t->quant != ACEM_QUANT_NONE ? acem_quant_name(t->quant) : acem_dtype_name(t->dtype);
}

bool acem_quant_stored_bytes(acem_quant q, uint64_t numel, uint64_t *bytes) {
    return numel % quant_table[q].block_elems == 0 &&
           acem_mul_u64(numel / quant_table[q].block_elems, quant_table[q].block_bytes, bytes);
}

static inline float half_at(const unsigned char *p) {
    return acem_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* Q4_K's packed 6-bit scale and min of sub-block j (ggml's get_scale_min_k4). */
static void q4k_scale_min(int j, const unsigned char *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K (qh NULL) and Q5_K: eight sub-blocks of 32 with 6-bit scales and mins; 64 values per
 * 32 qs bytes, low nibbles then high; Q5_K's fifth bit of value l of sub-block j is bit j of
 * qh[l]. */
static void dequant_q45k(const unsigned char *b, const unsigned char *qh, const unsigned char *qs,
                         float *y) {
    float d = half_at(b), dmin = half_at(b + 2);
    for (int j = 0; j < 8; j += 2) {
        int sc0, m0, sc1, m1;
        q4k_scale_min(j, b + 4, &sc0, &m0);
        q4k_scale_min(j + 1, b + 4, &sc1, &m1);
        for (int l = 0; l < 32; l++) {
            int lo = qs[l] & 0x0F, hi = qs[l] >> 4;
            if (qh) {
                lo |= ((qh[l] >> j) & 1) << 4;
                hi |= ((qh[l] >> (j + 1)) & 1) << 4;
            }
            y[j * 32 + l] = d * (float)sc0 * (float)lo - dmin * (float)m0;
            y[j * 32 + 32 + l] = d * (float)sc1 * (float)hi - dmin * (float)m1;
        }
        qs += 32;
    }
}

static void dequant_q6k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const signed char *sc = (const signed char *)(b + 192);
    float d = half_at(b + 208);
    for (int half = 0; half < 2; half++) { /* 128 values from 64 ql bytes and 32 qh bytes */
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0F) | ((qh[l] >> 0 & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0F) | ((qh[l] >> 2 & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

/* Value v's two low bits in Q2_K / Q3_K (the layout in the header). */
static inline int low2(const unsigned char *qs, int v) {
    return qs[v / 128 * 32 + v % 32] >> (2 * (v % 128 / 32)) & 3;
}

/* Q3_K's 6-bit scale of sub-block j, stored s + 32: low nibbles in scales[0..7] (j >= 8 the
 * high ones), the two high bits in scales[8 + j % 4] at bit 2 * (j / 4). */
static inline int q3k_scale(const unsigned char *s, int j) {
    int lo = j < 8 ? s[j] & 0x0F : s[j - 8] >> 4;
    return (lo | (s[8 + j % 4] >> (2 * (j / 4)) & 3) << 4) - 32;
}

/* ggml's dequantize_row_q2_K: x = (d * scale) * q - dmin * min. */
static void dequant_q2k(const unsigned char *b, float *y) {
    float d = half_at(b + 80), dmin = half_at(b + 82);
    for (int v = 0; v < 256; v++) {
        int sc = b[v / 16];
        y[v] = d * (float)(sc & 0x0F) * (float)low2(b + 16, v) - dmin * (float)(sc >> 4);
    }
}

/* ggml's dequantize_row_q3_K: x = (d * s) * (q - 4 unless the high bit is set). */
static void dequant_q3k(const unsigned char *b, float *y) {
    float d = half_at(b + 108);
    for (int v = 0; v < 256; v++) {
        int q = low2(b + 32, v) - (b[v % 32] >> (v / 32) & 1 ? 0 : 4);
        y[v] = d * (float)q3k_scale(b + 96, v / 16) * (float)q;
    }
}

static inline float f32_at(const unsigned char *p) {
    float f;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Q5_0 (m NULL) and Q5_1: the fifth bit of value j is bit j of the u32 qh (ggml's
 * dequantize_row_q5_0 / _q5_1). */
static void dequant_q5(const unsigned char *b, const unsigned char *m, float *y) {
    const unsigned char *qh = b + (m ? 4 : 2), *qs = qh + 4;
    uint32_t h =
        (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    float d = half_at(b);
    for (int j = 0; j < 32; j++) {
        int q = (j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4) | (int)((h >> j) & 1) << 4;
        y[j] = m ? (float)q * d + half_at(m) : (float)(q - 16) * d;
    }
}

void acem_dequantize(acem_quant q, const void *blocks, float *dst, size_t n_blocks) {
    const unsigned char *b = blocks;
    const size_t bb = quant_table[q].block_bytes, be = quant_table[q].block_elems;
    for (size_t i = 0; i < n_blocks; i++, b += bb, dst += be) {
        switch (q) {
        case ACEM_QUANT_Q8_0: {
            float d = half_at(b);
            for (int j = 0; j < 32; j++)
                dst[j] = d * (float)(signed char)b[2 + j];
            break;
        }
        case ACEM_QUANT_Q4_0: {
            float d = half_at(b);
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)((b[2 + j] & 0x0F) - 8);
                dst[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
            }
            break;
        }
        case ACEM_QUANT_Q5_0: dequant_q5(b, NULL, dst); break;
        case ACEM_QUANT_Q5_1: dequant_q5(b, b + 2, dst); break;
        case ACEM_QUANT_Q4_K: dequant_q45k(b, NULL, b + 16, dst); break;
        case ACEM_QUANT_Q5_K: dequant_q45k(b, b + 16, b + 48, dst); break;
        case ACEM_QUANT_Q2_K: dequant_q2k(b, dst); break;
        case ACEM_QUANT_Q3_K: dequant_q3k(b, dst); break;
        case ACEM_QUANT_Q8_K: {
            float d = f32_at(b);
            for (int j = 0; j < 256; j++)
                dst[j] = d * (float)(signed char)b[4 + j];
            break;
        }
        default: dequant_q6k(b, dst); break;
        }
    }
}

/* The byte offsets of a block's f16 scales (the second equal to the first for one scale). */
static void half_scales(acem_quant q, size_t *at, size_t *at2) {
    switch (q) {
    case ACEM_QUANT_Q6_K: *at = *at2 = 208; break;
    case ACEM_QUANT_Q3_K: *at = *at2 = 108; break;
    case ACEM_QUANT_Q2_K: *at = 80, *at2 = 82; break;
    case ACEM_QUANT_Q4_K:
    case ACEM_QUANT_Q5_K:
    case ACEM_QUANT_Q5_1: *at = 0, *at2 = 2; break;
    default: *at = *at2 = 0; break;
    }
}

int64_t acem_quant_first_nonfinite(acem_quant q, const void *blocks, size_t n_blocks) {
    const unsigned char *b = blocks;
    const size_t bb = quant_table[q].block_bytes;
    size_t at, at2;
    half_scales(q, &at, &at2);
    /* The integer codes are finite: a value is NaN/Inf exactly when a scale is (Q8_K's is
     * a float32). */
    for (size_t i = 0; i < n_blocks; i++, b += bb) {
        bool bad = q == ACEM_QUANT_Q8_K ? !isfinite(f32_at(b))
                                        : (b[at + 1] & 0x7C) == 0x7C || (b[at2 + 1] & 0x7C) == 0x7C;
        if (bad) return (int64_t)(i * quant_table[q].block_elems);
    }
    return -1;
}

static void put_half(unsigned char *p, float f) {
    uint16_t h = acem_f32_to_f16(f);
    p[0] = (unsigned char)h;
    p[1] = (unsigned char)(h >> 8);
}

/* With --allow-nonfinite a block may hold NaN or Inf: its codes become 0, never UB. */
static inline float finite_or_zero(float v) { return isfinite(v) ? v : 0.0f; }

/* d = amax / 127 and q = round-half-away(x / d), as ggml's reference. */
static void quant_q8_0(const float *x, unsigned char *b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < 32; j++)
        b[2 + j] = (unsigned char)(signed char)roundf(finite_or_zero(x[j] * id));
}

/* The first of the n values of largest magnitude, with its sign (ggml's amax / max scan). */
static float signed_absmax(int n, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* d = (the value of largest magnitude) / -8, nibble = min(15, trunc(x / d + 8.5)). */
static void quant_q4_0(const float *x, unsigned char *b) {
    float d = signed_absmax(32, x) / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < 16; j++) {
        int lo = (int)finite_or_zero(x[j] * id + 8.5f),
            hi = (int)finite_or_zero(x[j + 16] * id + 8.5f);
        b[2 + j] = (unsigned char)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
}

/* The 32 five-bit codes of a Q5_0 / Q5_1 block: nibbles in qs (value j < 16 low, j + 16 high),
 * the fifth bits in the u32 qh. */
static void put_q5_codes(const uint8_t *L, unsigned char *qh, unsigned char *qs) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (unsigned char)((L[j] & 0x0F) | (L[j + 16] & 0x0F) << 4);
        h |= (uint32_t)(L[j] >> 4 & 1) << j | (uint32_t)(L[j + 16] >> 4 & 1) << (j + 16);
    }
    for (int k = 0; k < 4; k++)
        qh[k] = (unsigned char)(h >> (8 * k));
}

/* d = (the value of largest magnitude) / -16, q = min(31, (int8) (x / d + 16.5)). */
static void quant_q5_0(const float *x, unsigned char *b) {
    uint8_t L[32];
    float d = signed_absmax(32, x) / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < 32; j++) {
        int v = (int)(int8_t)finite_or_zero(x[j] * id + 16.5f);
        L[j] = (uint8_t)(v < 31 ? v : 31);
    }
    put_q5_codes(L, b + 2, b + 6);
}

/* d = (max - min) / 31, m = min, q = (uint8) ((x - min) / d + 0.5). */
static void quant_q5_1(const float *x, unsigned char *b) {
    float min = x[0], max = x[0];
    uint8_t L[32];
    for (int j = 1; j < 32; j++) {
        min = x[j] < min ? x[j] : min;
        max = x[j] > max ? x[j] : max;
    }
    float d = (max - min) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(b, d);
    put_half(b + 2, min);
    for (int j = 0; j < 32; j++)
        L[j] = (uint8_t)finite_or_zero((x[j] - min) * id + 0.5f);
    put_q5_codes(L, b + 4, b + 8);
}

/* ---- K-quants: ggml's reference quantisers (quantize_row_q4_K_ref / _q6_K_ref), the same
 * float32 operations in the same order, without FMA. */

/* ggml's nearest_int: round half to even (exact for |v| < 2^22, where ggml's is). */
static inline int round_even(float v) { return (int)lrintf(v); }
static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

#define KQ_EPS 1e-15f /* ggml's GROUP_MAX_EPS: a group below it is all zero */

/* For symmetric codes at inverse scale iscale: sum_i w_i x_i l_i and sum_i w_i l_i^2 with
 * w_i = x_i^2, and (when L) the codes themselves, l_i + nmax. */
static void symmetric_trial(int n, int nmax, const float *x, float iscale, float *sumlx,
                            float *suml2, int8_t *L) {
    *sumlx = *suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1);
        float w = x[i] * x[i];
        *sumlx += w * x[i] * (float)l;
        *suml2 += w * (float)l * (float)l;
        if (L) L[i] = (int8_t)(l + nmax);
    }
}

/* Symmetric codes L in [0, 2 nmax) for n values: the scale nmax / max|x| and 18 trial scales
 * around it, the one with the least sum_i x_i^2 (x_i - scale (L_i - nmax))^2 (ggml's
 * make_qx_quants with rmse_type 1). Returns the scale, negative when the value of largest
 * magnitude is positive (codes run against the sign, as in ggml). */
static float symmetric_codes(int n, int nmax, const float *x, int8_t *L) {
    float max = signed_absmax(n, x), amax = fabsf(max), sumlx, suml2;
    if (amax < KQ_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    symmetric_trial(n, nmax, x, (float)-nmax / max, &sumlx, &suml2, L);
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        float iscale = -((float)nmax + 0.1f * (float)is) / max;
        if (is == 0) continue;
        symmetric_trial(n, nmax, x, iscale, &sumlx, &suml2, NULL);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            symmetric_trial(n, nmax, x, iscale, &sumlx, &suml2, L);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* The error of one value in make_qkx2_quants: absolute (use_mad, Q2_K) or squared. */
static inline float fit_error(float diff, bool mad) { return mad ? fabsf(diff) : diff * diff; }

/* Affine codes L in [0, nmax] for n <= 32 values, x ~ scale L - min with min >= 0: the best of
 * the plain fit and nstep + 1 trial scales, each a weighted least-squares fit, compared by
 * weighted squared or (mad) absolute error (ggml's make_qkx2_quants). Returns the scale;
 * *the_min gets min. */
static float affine_codes(int n, int nmax, const float *x, const float *w, uint8_t *L,
                          float *the_min, float rmin, float rdelta, int nstep, bool mad) {
    uint8_t trial[32];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        min = x[i] < min ? x[i] : min;
        max = x[i] > max ? x[i] : max;
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(round_even(iscale * (x[i] - min)), 0, nmax);
        best_error += w[i] * fit_error(scale * (float)L[i] + min - x[i], mad);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_even(iscale * (x[i] - min)), 0, nmax);
            trial[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float error = 0;
        for (int i = 0; i < n; i++) {
            error += w[i] * fit_error(this_scale * (float)trial[i] + this_min - x[i], mad);
        }
        if (error < best_error) {
            memcpy(L, trial, (size_t)n);
            best_error = error;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K and Q5_K: per 32-value sub-block an affine fit weighted by rms + |x|, codes in
 * [0, nmax]; scales and mins to 6 bits relative to the largest of each (d, dmin and the 12
 * scale bytes of b); then the codes L again against the stored scales. */
static void kquant_affine(const float *x, int nmax, float rmin, int nstep, unsigned char *b,
                          uint8_t *L) {
    uint8_t *sc = b + 4;
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xj[l] * xj[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(xj[l]);
        scales[j] = affine_codes(32, nmax, xj, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep, false);
        max_scale = scales[j] > max_scale ? scales[j] : max_scale;
        max_min = mins[j] > max_min ? mins[j] : max_min;
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) { /* ggml's 6-bit packing, undone by q4k_scale_min */
        uint8_t ls = (uint8_t)round_even(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)round_even(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0x0F) | (lm & 0x0F) << 4);
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put_half(b, max_scale / 63.0f);
    put_half(b + 2, max_min / 63.0f);
    float d_all = half_at(b), dmin_all = half_at(b + 2);
    for (int j = 0; j < 8; j++) {
        int s, m;
        q4k_scale_min(j, sc, &s, &m);
        float d = d_all * (float)s, dm = dmin_all * (float)m;
        if (d == 0.0f) continue;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clamp_int(round_even((x[32 * j + l] + dm) / d), 0, nmax);
    }
}

static void quant_q4_k(const float *x, unsigned char *b) {
    uint8_t L[256], *qs = b + 16;
    kquant_affine(x, 15, -1.0f, 20, b, L);
    for (int j = 0; j < 256; j += 64, qs += 32)
        for (int l = 0; l < 32; l++)
            qs[l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
}

static void quant_q5_k(const float *x, unsigned char *b) {
    uint8_t L[256], *qh = b + 16, *qs = b + 48;
    kquant_affine(x, 31, -0.5f, 15, b, L);
    memset(qh, 0, 32);
    for (int j = 0; j < 256; j += 64, qs += 32) /* sub-blocks j / 32 and j / 32 + 1 */
        for (int l = 0; l < 32; l++) {
            uint8_t lo = L[j + l], hi = L[j + l + 32];
            qh[l] |= (uint8_t)((lo >> 4) << (j / 32) | (hi >> 4) << (j / 32 + 1));
            qs[l] = (uint8_t)((lo & 0x0F) | (hi & 0x0F) << 4);
        }
}

/* Q6_K: per 16-value sub-block a symmetric fit; the scales to int8 relative to the largest
 * (which becomes -128 times d); then the codes again against the stored scales. */
static void quant_q6_k(const float *x, unsigned char *b) {
    int8_t L[256];
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    float scales[16], max_scale = 0, max_abs = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = symmetric_codes(16, 32, x + 16 * j, L + 16 * j);
        if (fabsf(scales[j]) > max_abs) {
            max_abs = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    if (max_abs < KQ_EPS) {
        memset(b, 0, 210);
        return;
    }
    float iscale = -128.0f / max_scale;
    put_half(b + 208, 1 / iscale);
    for (int j = 0; j < 16; j++) {
        int v = round_even(iscale * scales[j]);
        sc[j] = (int8_t)(v < 127 ? v : 127);
    }
    float d_all = half_at(b + 208);
    for (int j = 0; j < 16; j++) {
        float d = d_all * (float)sc[j];
        if (d == 0.0f) continue;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (int8_t)(clamp_int(round_even(x[16 * j + l] / d), -32, 31) + 32);
    }
    for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) /* dequant_q6k's layout */
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((L[j + l] & 0x0F) | (L[j + l + 64] & 0x0F) << 4);
            ql[l + 32] = (uint8_t)((L[j + l + 32] & 0x0F) | (L[j + l + 96] & 0x0F) << 4);
            qh[l] = (uint8_t)((L[j + l] >> 4) | (L[j + l + 32] >> 4) << 2 |
                              (L[j + l + 64] >> 4) << 4 | (L[j + l + 96] >> 4) << 6);
        }
}

/* Symmetric 3-bit codes L in [0, 8) for 16 values (ggml's make_q3_quants with do_rmse): the
 * codes at scale max / -4, then up to five passes that move single codes to the value that
 * maximises (sum w x l)^2 / (sum w l^2), w = x^2, while that improves. Returns the scale
 * sum w x l / sum w l^2; an all-zero group gets codes 0 (not 4) and scale 0, as in ggml. */
static float q3_codes(const float *x, int8_t *L) {
    const int n = 16, nmax = 4;
    float max = signed_absmax(n, x), amax = fabsf(max), sumlx, suml2;
    if (amax < KQ_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    symmetric_trial(n, nmax, x, (float)-nmax / max, &sumlx, &suml2, L);
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i], l = (float)(L[i] - nmax), slx = sumlx - w * x[i] * l;
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * l * l;
            int new_l = clamp_int(round_even(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (new_l == L[i] - nmax) continue;
            slx += w * x[i] * (float)new_l;
            sl2 += w * (float)new_l * (float)new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)(new_l + nmax);
                sumlx = slx;
                suml2 = sl2;
                n_changed++;
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Q2_K's and Q3_K's two low bits of each code L[v] (< 4) into qs (the header's layout). */
static void put_low2(const uint8_t *L, unsigned char *qs) {
    memset(qs, 0, 64);
    for (int v = 0; v < 256; v++)
        qs[v / 128 * 32 + v % 32] |= (unsigned char)(L[v] << (2 * (v % 128 / 32)));
}

/* Q2_K: per 16-value sub-block an affine fit of 2-bit codes weighted by |x| and compared by
 * absolute error; scales and mins to 4 bits relative to the largest of each; then the codes
 * again against the stored scales (quantize_row_q2_K_ref). */
static void quant_q2_k(const float *x, unsigned char *b) {
    uint8_t L[256], *sc = b;
    float scales[16], mins[16], w[16], max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            w[l] = fabsf(x[16 * j + l]);
        scales[j] = affine_codes(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
        max_scale = scales[j] > max_scale ? scales[j] : max_scale;
        max_min = mins[j] > max_min ? mins[j] : max_min;
    }
    memset(sc, 0, 16);
    float iscale = max_scale > 0 ? 15.0f / max_scale : 0.0f;
    float imin = max_min > 0 ? 15.0f / max_min : 0.0f;
    for (int j = 0; j < 16; j++) /* ggml stores the ints as uint8: no clamp */
        sc[j] = (uint8_t)((unsigned)round_even(iscale * scales[j]) |
                          (unsigned)round_even(imin * mins[j]) << 4);
    put_half(b + 80, max_scale > 0 ? max_scale / 15.0f : 0.0f);
    put_half(b + 82, max_min > 0 ? max_min / 15.0f : 0.0f);
    float d_all = half_at(b + 80), dmin_all = half_at(b + 82);
    for (int j = 0; j < 16; j++) {
        float d = d_all * (float)(sc[j] & 0x0F);
        if (d == 0.0f) continue;
        float dm = dmin_all * (float)(sc[j] >> 4);
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (uint8_t)clamp_int(round_even((x[16 * j + l] + dm) / d), 0, 3);
    }
    put_low2(L, b + 16);
}

/* Q3_K: per 16-value sub-block a symmetric 3-bit fit (q3_codes); the scales to 6 bits
 * relative to the largest in magnitude (which becomes -32 times d); then the codes again
 * against the stored scales, their third bits into hmask (quantize_row_q3_K_ref). */
static void quant_q3_k(const float *x, unsigned char *b) {
    int8_t L[256];
    uint8_t low[256], *hm = b, *sc = b + 96;
    float scales[16], max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = q3_codes(x + 16 * j, L + 16 * j);
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    memset(sc, 0, 12);
    float iscale = max_scale != 0 ? -32.0f / max_scale : 0.0f;
    for (int j = 0; j < 16 && max_scale != 0; j++) {
        int l = clamp_int(round_even(iscale * scales[j]), -32, 31) + 32;
        sc[j % 8] |= (uint8_t)((l & 0x0F) << (j < 8 ? 0 : 4));
        sc[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
    put_half(b + 108, max_scale != 0 ? 1 / iscale : 0.0f);
    float d_all = half_at(b + 108);
    for (int j = 0; j < 16; j++) {
        float d = d_all * (float)q3k_scale(sc, j);
        if (d == 0.0f) continue;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (int8_t)(clamp_int(round_even(x[16 * j + l] / d), -4, 3) + 4);
    }
    memset(hm, 0, 32);
    for (int v = 0; v < 256; v++) {
        hm[v % 32] |= (uint8_t)((L[v] > 3) << (v / 32));
        low[v] = (uint8_t)(L[v] & 3);
    }
    put_low2(low, b + 32);
}

/* Q8_K: d = max / -127 in float32 with max the value of largest magnitude, q = min(127,
 * round(x / d)), bsums the sums of each 16 codes (quantize_row_q8_K_ref). For an all-zero
 * block ggml leaves bsums as they were; acem writes them 0, the sums of its codes. */
static void quant_q8_k(const float *x, unsigned char *b) {
    float max = signed_absmax(256, x), amax = fabsf(max);
    memset(b, 0, 292);
    if (amax == 0.0f) return;
    float iscale = -127.0f / max, d = 1 / iscale;
    int sums[16] = {0};
    for (int j = 0; j < 256; j++) {
        int v = round_even(iscale * x[j]);
        v = v < 127 ? v : 127;
        b[4 + j] = (unsigned char)(signed char)v;
        sums[j / 16] += v;
    }
    uint32_t u;
    memcpy(&u, &d, sizeof u);
    for (int k = 0; k < 4; k++)
        b[k] = (unsigned char)(u >> (8 * k));
    for (int j = 0; j < 16; j++) {
        b[260 + 2 * j] = (unsigned char)(uint16_t)sums[j];
        b[261 + 2 * j] = (unsigned char)((uint16_t)sums[j] >> 8);
    }
}

void acem_quantize(acem_quant q, const float *src, void *blocks, size_t n_blocks) {
    static void (*const quantiser[ACEM_QUANT_COUNT])(const float *, unsigned char *) = {
        [ACEM_QUANT_Q8_0] = quant_q8_0, [ACEM_QUANT_Q4_0] = quant_q4_0,
        [ACEM_QUANT_Q4_K] = quant_q4_k, [ACEM_QUANT_Q6_K] = quant_q6_k,
        [ACEM_QUANT_Q5_K] = quant_q5_k, [ACEM_QUANT_Q5_0] = quant_q5_0,
        [ACEM_QUANT_Q5_1] = quant_q5_1, [ACEM_QUANT_Q2_K] = quant_q2_k,
        [ACEM_QUANT_Q3_K] = quant_q3_k, [ACEM_QUANT_Q8_K] = quant_q8_k,
    };
    const size_t be = quant_table[q].block_elems, bb = quant_table[q].block_bytes;
    float finite[256];
    unsigned char *b = blocks;
    for (size_t i = 0; i < n_blocks; i++, src += be, b += bb) {
        /* with --allow-nonfinite a block may hold NaN or Inf: the K-quant searches see 0 */
        const float *x = src;
        if (be == 256) {
            for (size_t j = 0; j < be; j++)
                finite[j] = finite_or_zero(src[j]);
            x = finite;
        }
        quantiser[q](x, b);
    }
}
