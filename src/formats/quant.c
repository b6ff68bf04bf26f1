/* quant.c — ggml block quantisation: the block layouts of Q8_0, Q4_0, Q4_K and Q6_K, their
 * dequantisation, and quantisers for Q8_0 and Q4_0 that follow ggml's reference rounding
 * (quantize_row_q8_0_ref / quantize_row_q4_0_ref). All multi-byte fields are little-endian.
 *
 *   Q8_0  34 bytes / 32 values:  f16 d, int8 q[32];               x = d * q
 *   Q4_0  18 bytes / 32 values:  f16 d, u8 qs[16];                x = d * (nibble - 8),
 *                                value j < 16 in the low nibble of qs[j], j >= 16 in the high
 *   Q4_K 144 bytes / 256 values: f16 d, f16 dmin, u8 scales[12], u8 qs[128]; eight
 *                                sub-blocks of 32 with 6-bit scale sc and min m:
 *                                x = d * sc * nibble - dmin * m
 *   Q6_K 210 bytes / 256 values: u8 ql[128], u8 qh[64], int8 scales[16], f16 d; sixteen
 *                                sub-blocks of 16: x = d * scale * (6-bit q - 32) */
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
    [ACEM_QUANT_Q6_K] = {"Q6_K", 14, 256, 210},
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
bool acem_quant_writable(acem_quant q) { return q == ACEM_QUANT_Q8_0 || q == ACEM_QUANT_Q4_0; }

acem_quant acem_quant_from_ggml(uint32_t type) {
    for (int q = ACEM_QUANT_NONE + 1; q < ACEM_QUANT_COUNT; q++)
        if (quant_table[q].ggml_type == type) return (acem_quant)q;
    return ACEM_QUANT_NONE;
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

static void dequant_q4k(const unsigned char *b, float *y) {
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *scales = b + 4, *qs = b + 16;
    for (int j = 0; j < 8; j += 2) { /* 64 values per 32 bytes: low nibbles, then high */
        int sc0, m0, sc1, m1;
        q4k_scale_min(j, scales, &sc0, &m0);
        q4k_scale_min(j + 1, scales, &sc1, &m1);
        for (int l = 0; l < 32; l++) {
            y[j * 32 + l] = d * (float)sc0 * (float)(qs[l] & 0x0F) - dmin * (float)m0;
            y[j * 32 + 32 + l] = d * (float)sc1 * (float)(qs[l] >> 4) - dmin * (float)m1;
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
        case ACEM_QUANT_Q4_K: dequant_q4k(b, dst); break;
        default: dequant_q6k(b, dst); break;
        }
    }
}

int64_t acem_quant_first_nonfinite(acem_quant q, const void *blocks, size_t n_blocks) {
    const unsigned char *b = blocks;
    const size_t bb = quant_table[q].block_bytes;
    /* The integer codes are finite: a value is NaN/Inf exactly when a scale is. */
    const size_t at = q == ACEM_QUANT_Q6_K ? 208 : 0, at2 = q == ACEM_QUANT_Q4_K ? 2 : at;
    for (size_t i = 0; i < n_blocks; i++, b += bb)
        if ((b[at + 1] & 0x7C) == 0x7C || (b[at2 + 1] & 0x7C) == 0x7C)
            return (int64_t)(i * quant_table[q].block_elems);
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

/* d = (the value of largest magnitude) / -8, nibble = min(15, trunc(x / d + 8.5)). */
static void quant_q4_0(const float *x, unsigned char *b) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < 16; j++) {
        int lo = (int)finite_or_zero(x[j] * id + 8.5f),
            hi = (int)finite_or_zero(x[j + 16] * id + 8.5f);
        b[2 + j] = (unsigned char)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
}

void acem_quantize(acem_quant q, const float *src, void *blocks, size_t n_blocks) {
    unsigned char *b = blocks;
    for (size_t i = 0; i < n_blocks; i++, src += 32, b += quant_table[q].block_bytes)
        (q == ACEM_QUANT_Q8_0 ? quant_q8_0 : quant_q4_0)(src, b);
}
