/* test_quant.c — ggml block quantisation: Q8_0 / Q4_0 round trips within their bounds,
 * block layouts (scale, nibble order), zero and non-finite blocks, K-quant edge blocks, names
 * and sizes. (tests/test_gguf.py checks the K-quant blocks against a numpy oracle.) */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats.h"

/* The block's float32 scale as the quantiser computes it. */
static float scale_of(acem_quant q, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return q == ACEM_QUANT_Q8_0 ? amax / 127.0f : max / -8.0f;
}

static void roundtrip(acem_quant q) {
    enum { BLOCKS = 512 };
    float *x = malloc(BLOCKS * 32 * sizeof *x), *y = malloc(BLOCKS * 32 * sizeof *y);
    unsigned char *b = malloc(BLOCKS * (size_t)acem_quant_block_bytes(q));
    srand(7);
    for (int i = 0; i < BLOCKS * 32; i++)
        x[i] = (float)((rand() / (double)RAND_MAX - 0.5) * pow(10.0, (i / 32) % 7 - 3));
    acem_quantize(q, x, b, BLOCKS);
    acem_dequantize(q, b, y, BLOCKS);
    for (int k = 0; k < BLOCKS; k++) {
        const unsigned char *blk = b + (size_t)k * acem_quant_block_bytes(q);
        float d = scale_of(q, x + 32 * k), d16 = acem_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
        for (int j = 0; j < 32; j++) {
            int code = q == ACEM_QUANT_Q8_0 ? (signed char)blk[2 + j]
                                            : ((j < 16 ? blk[2 + j] & 15 : blk[2 + j - 16] >> 4));
            bool clamped = q == ACEM_QUANT_Q4_0 && code == 15;
            if (q == ACEM_QUANT_Q4_0) code -= 8;
            double bound = fabs(d) * (clamped ? 1.0 : 0.5) + abs(code) * fabs(d - d16);
            assert_true(fabs((double)y[32 * k + j] - x[32 * k + j]) <= bound * (1 + 1e-6));
        }
    }
    free(x);
    free(y);
    free(b);
}

static void test_q8_0_roundtrip(void **state) {
    (void)state;
    roundtrip(ACEM_QUANT_Q8_0);
}

static void test_q4_0_roundtrip(void **state) {
    (void)state;
    roundtrip(ACEM_QUANT_Q4_0);
}

static void test_layouts(void **state) {
    (void)state;
    float x[32] = {0}, y[32];
    unsigned char b[34];
    x[0] = -8.0f; /* Q4_0: d = -8 / -8 = 1, code 0 */
    x[20] = 3.0f; /* code 11, in the high nibble of byte 4 */
    acem_quantize(ACEM_QUANT_Q4_0, x, b, 1);
    assert_int_equal(b[0] | b[1] << 8, 0x3c00); /* f16 1.0 */
    assert_int_equal(b[2] & 15, 0);
    assert_int_equal(b[2 + 4] >> 4, 11);
    acem_dequantize(ACEM_QUANT_Q4_0, b, y, 1);
    assert_true(y[0] == -8.0f && y[20] == 3.0f && y[1] == 0.0f);
    x[0] = 127.0f; /* Q8_0: d = 1, codes are the values */
    acem_quantize(ACEM_QUANT_Q8_0, x, b, 1);
    assert_int_equal(b[0] | b[1] << 8, 0x3c00);
    assert_int_equal((signed char)b[2], 127);
    assert_int_equal((signed char)b[22], 3);
    memset(x, 0, sizeof x); /* all zero: d = 0, every code 0 */
    acem_quantize(ACEM_QUANT_Q8_0, x, b, 1);
    acem_dequantize(ACEM_QUANT_Q8_0, b, y, 1);
    for (int j = 0; j < 32; j++)
        assert_true(y[j] == 0.0f);
}

static void test_nonfinite(void **state) {
    (void)state;
    float x[32] = {1.0f, NAN, INFINITY};
    unsigned char b[2 * 34];
    acem_quantize(ACEM_QUANT_Q8_0, x, b, 1); /* no undefined behaviour (UBSan build) */
    acem_quantize(ACEM_QUANT_Q4_0, x, b, 1);
    memset(b, 0, sizeof b);
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q8_0, b, 2), -1);
    b[34 + 1] = 0x7c; /* block 1's scale is +Inf */
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q8_0, b, 2), 32);
    unsigned char k[2 * 292] = {0};
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q2_K, k, 2), -1);
    k[84 + 83] = 0x7e; /* block 1's dmin (bytes 82, 83) is NaN */
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q2_K, k, 2), 256);
    memset(k, 0, sizeof k);
    k[109] = 0xfc; /* block 0's d (bytes 108, 109) is -Inf */
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q3_K, k, 2), 0);
    memset(k, 0, sizeof k);
    k[292 + 3] = 0x7f; /* block 1's float32 d is +Inf (0x7f800000) */
    k[292 + 2] = 0x80;
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q8_K, k, 2), 256);
    k[292 + 2] = 0x00; /* 0x7f000000: finite */
    assert_int_equal(acem_quant_first_nonfinite(ACEM_QUANT_Q8_K, k, 2), -1);
}

/* K-quant blocks of awkward values: no undefined behaviour (UBSan build), and where the
 * values are representable the round trip stays close: constant blocks, one outlier, values
 * near FLT_MAX and near the smallest normals, sign flips, zeros and non-finite values. */
static void check_kquant_block(acem_quant q, const float *x, double tol) {
    unsigned char b[292]; /* the largest 256-value block, Q8_K */
    float y[256];
    acem_quantize(q, x, b, 1);
    acem_dequantize(q, b, y, 1);
    double amax = 0, err = 0;
    for (int j = 0; j < 256; j++) {
        float v = isfinite(x[j]) ? x[j] : 0.0f;
        amax = fmax(amax, fabs(v));
        err = fmax(err, fabs((double)y[j] - v));
        if (tol >= 0) assert_true(isfinite(y[j]));
    }
    if (tol >= 0) assert_true(err <= tol * amax);
}

static void test_kquant_edges(void **state) {
    (void)state;
    float x[256];
    const acem_quant kquants[] = {ACEM_QUANT_Q4_K, ACEM_QUANT_Q5_K, ACEM_QUANT_Q6_K,
                                  ACEM_QUANT_Q2_K, ACEM_QUANT_Q3_K, ACEM_QUANT_Q8_K};
    /* 15, 31, 63 levels with 6- or 8-bit scales; 3 and 7 levels with 4- and 6-bit scales;
     * 255 levels with a float32 scale */
    const double tols[] = {1.0 / 8, 1.0 / 16, 1.0 / 32, 1.0 / 2, 1.0 / 4, 1.0 / 200};
    for (int k = 0; k < 6; k++) {
        const acem_quant q = kquants[k];
        const double tol = tols[k];
        for (int j = 0; j < 256; j++)
            x[j] = 0.0f;
        check_kquant_block(q, x, 0); /* all zero: exactly zero back */
        for (int j = 0; j < 256; j++)
            x[j] = 0.25f;
        check_kquant_block(q, x, tol);
        x[100] = -40.0f; /* one outlier */
        check_kquant_block(q, x, tol);
        for (int j = 0; j < 256; j++)
            x[j] = (j % 2 ? 1.0f : -1.0f) * (float)(j % 17) * 1e-3f;
        check_kquant_block(q, x, tol);
        for (int j = 0; j < 256; j++)
            x[j] = (j % 3 ? 1.0f : -1.0f) * 1e38f * (float)(1 + j % 3);
        check_kquant_block(q, x, -1); /* beyond f16 scales: only defined */
        for (int j = 0; j < 256; j++)
            x[j] = (j % 5 ? 1.0f : -1.0f) * 1e-37f * (float)(j % 7);
        check_kquant_block(q, x, -1); /* below f16 scales: only defined */
        x[3] = NAN;
        x[7] = INFINITY;
        x[9] = -INFINITY;
        check_kquant_block(q, x, -1);
    }
}

static void test_names(void **state) {
    (void)state;
    assert_int_equal(acem_quant_parse("q8_0"), ACEM_QUANT_Q8_0);
    assert_int_equal(acem_quant_parse("Q4_K"), ACEM_QUANT_Q4_K);
    assert_int_equal(acem_quant_parse("f16"), ACEM_QUANT_NONE);
    assert_string_equal(acem_quant_name(ACEM_QUANT_Q6_K), "Q6_K");
    assert_int_equal(acem_quant_from_ggml(8), ACEM_QUANT_Q8_0);
    assert_int_equal(acem_quant_from_ggml(0), ACEM_QUANT_NONE);
    uint64_t bytes;
    assert_true(acem_quant_stored_bytes(ACEM_QUANT_Q6_K, 512, &bytes) && bytes == 420);
    assert_false(acem_quant_stored_bytes(ACEM_QUANT_Q8_0, 33, &bytes));
    assert_false(acem_quant_stored_bytes(ACEM_QUANT_Q8_0, UINT64_MAX / 32 * 32, &bytes));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_roundtrip), cmocka_unit_test(test_q4_0_roundtrip),
        cmocka_unit_test(test_layouts),        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_names),          cmocka_unit_test(test_kquant_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
