/* test_dtype.c — half and bfloat16 conversions: every class, rounding ties, and an
 * exhaustive check that f32 -> f16/bf16 picks the nearest value, ties to even. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "internal.h"

static uint32_t bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}
static float from_bits(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void test_f16_classes(void **state) {
    (void)state;
    assert_int_equal(acem_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(acem_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(acem_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(acem_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(acem_f32_to_f16(65504.0f), 0x7bff);   /* largest normal */
    assert_int_equal(acem_f32_to_f16(0x1p-14f), 0x0400);   /* smallest normal */
    assert_int_equal(acem_f32_to_f16(0x1p-24f), 0x0001);   /* smallest subnormal */
    assert_int_equal(acem_f32_to_f16(0x3ffp-24f), 0x03ff); /* largest subnormal */
    assert_int_equal(acem_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(acem_f32_to_f16(-INFINITY), 0xfc00);
    assert_true((acem_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (acem_f32_to_f16(NAN) & 0x3ff));
    assert_int_equal(acem_f32_to_f16(65520.0f), 0x7c00); /* rounds to Inf */
    assert_int_equal(acem_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(acem_f32_to_f16(1e-9f), 0x0000); /* underflow */
    assert_true(acem_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(acem_f16_to_f32(0x8000) == 0.0f && signbit(acem_f16_to_f32(0x8000)));
    assert_true(isinf(acem_f16_to_f32(0x7c00)));
    assert_true(isnan(acem_f16_to_f32(0x7e00)));
    assert_true(acem_f16_to_f32(0x3555) == 0x1.554p-2f);
}

static void test_f16_ties(void **state) {
    (void)state;
    /* 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to the even mantissa (1). */
    assert_int_equal(acem_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    /* 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even). */
    assert_int_equal(acem_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    /* just above the tie rounds up */
    assert_int_equal(acem_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* subnormal ties: 2^-25 -> 0 (even), 3 * 2^-25 -> 2 * 2^-24 (even) */
    assert_int_equal(acem_f32_to_f16(0x1p-25f), 0x0000);
    assert_int_equal(acem_f32_to_f16(3 * 0x1p-25f), 0x0002);
    assert_int_equal(acem_f32_to_f16(0x1.000002p-25f), 0x0001);
}

static void test_bf16_classes_and_ties(void **state) {
    (void)state;
    assert_int_equal(acem_f32_to_bf16(0.0f), 0x0000);
    assert_int_equal(acem_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(acem_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(acem_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(acem_f32_to_bf16(-INFINITY), 0xff80);
    assert_true((acem_f32_to_bf16(NAN) & 0x7f80) == 0x7f80 && (acem_f32_to_bf16(NAN) & 0x7f));
    /* a NaN whose payload sits only in the low 16 bits must stay NaN */
    assert_true((acem_f32_to_bf16(from_bits(0x7f800001)) & 0x7f) != 0);
    assert_int_equal(acem_f32_to_bf16(from_bits(0x3f808000)), 0x3f80); /* tie -> even */
    assert_int_equal(acem_f32_to_bf16(from_bits(0x3f818000)), 0x3f82); /* tie -> even */
    assert_int_equal(acem_f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    assert_int_equal(acem_f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80); /* overflow -> Inf */
    assert_int_equal(acem_f32_to_bf16(from_bits(0x00000001)), 0x0000); /* subnormal */
    assert_int_equal(acem_f32_to_bf16(from_bits(0x00018000)), 0x0002);
    assert_true(acem_bf16_to_f32(0x0001) == from_bits(0x00010000));
}

/* Every f16 and bf16 value survives f32 and back (NaNs stay NaN). */
static void test_roundtrip_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = acem_f16_to_f32((uint16_t)h);
        if (isnan(f))
            assert_true(isnan(acem_f16_to_f32(acem_f32_to_f16(f))));
        else
            assert_int_equal(acem_f32_to_f16(f), h);
        float g = acem_bf16_to_f32((uint16_t)h);
        if (isnan(g))
            assert_true(isnan(acem_bf16_to_f32(acem_f32_to_bf16(g))));
        else
            assert_int_equal(acem_f32_to_bf16(g), h);
    }
}

/* For a finite x and its rounding h: no neighbour of h is closer, and on a tie h is even. */
static void check_nearest(float x, uint16_t h, float (*to32)(uint16_t)) {
    double v = to32(h), d = fabs((double)x - v);
    if (isinf(v)) return; /* overflow handled by the class tests */
    for (int step = -1; step <= 1; step += 2) {
        uint16_t n = (uint16_t)(h + step);
        double w = to32(n);
        if (isnan(w) || isinf(w) || signbit(w) != signbit(v)) continue;
        double dn = fabs((double)x - w);
        assert_true(d <= dn);
        if (d == dn) assert_true((h & 1) == 0);
    }
}

static void test_nearest_random(void **state) {
    (void)state;
    uint64_t s = 12345;
    for (int i = 0; i < 2000000; i++) {
        s = acem_mix64(s);
        float x = from_bits((uint32_t)s);
        if (!isfinite(x)) continue;
        if (fabsf(x) < 65504.0f) check_nearest(x, acem_f32_to_f16(x), acem_f16_to_f32);
        if (fabsf(x) < 3.38e38f) check_nearest(x, acem_f32_to_bf16(x), acem_bf16_to_f32);
    }
}

static void test_bulk_conversion_and_nonfinite(void **state) {
    (void)state;
    uint16_t raw[4] = {0x3c00, 0x4000, 0x7c00, 0x0000};
    float f[4];
    double d[4];
    assert_int_equal(acem_convert_from_raw(raw, ACEM_DT_F16, f, ACEM_DT_F32, 4, true), 2);
    assert_int_equal(acem_convert_from_raw(raw, ACEM_DT_F16, d, ACEM_DT_F64, 2, true), -1);
    assert_true(f[0] == 1.0f && f[1] == 2.0f && d[1] == 2.0);
    float src[3] = {1.0f, -0.5f, 3.0f};
    uint16_t out[3];
    acem_convert_to_raw(src, ACEM_DT_F32, out, ACEM_DT_BF16, 3);
    assert_int_equal(out[0], 0x3f80);
    assert_int_equal(out[1], 0xbf00);
    assert_int_equal(acem_dtype_size(ACEM_DT_BF16), 2);
    assert_int_equal(acem_dtype_from_name("F8_E4M3"), ACEM_DT_F8_E4M3);
    assert_int_equal(acem_dtype_from_name("F33"), ACEM_DT_NONE);
    assert_int_equal(acem_dtype_parse("bfloat16"), ACEM_DT_BF16);
    (void)bits;
}

static void test_parse_size(void **state) {
    (void)state;
    uint64_t v;
    assert_int_equal(acem_parse_size("512", &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(acem_parse_size("64K", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(acem_parse_size("5G", &v), 0);
    assert_int_equal(v, 5ULL << 30);
    assert_int_equal(acem_parse_size("2MiB", &v), 0);
    assert_int_equal(v, 2ULL << 20);
    /* as Hugging Face reads them: GB decimal, GiB binary, any case */
    assert_int_equal(acem_parse_size("5GB", &v), 0);
    assert_int_equal(v, 5000000000ULL);
    assert_int_equal(acem_parse_size("5gib", &v), 0);
    assert_int_equal(v, 5ULL << 30);
    assert_int_equal(acem_parse_size("500kb", &v), 0);
    assert_int_equal(v, 500000);
    assert_int_equal(acem_parse_size("5GBB", &v), -1);
    assert_int_equal(acem_parse_size("5Gi", &v), -1);
    assert_int_equal(acem_parse_size("20000000000TB", &v), -1);
    assert_int_equal(acem_parse_size("5X", &v), -1);
    assert_int_equal(acem_parse_size("-1", &v), -1);
    assert_int_equal(acem_parse_size("99999999999999999999", &v), -1);
    assert_int_equal(acem_parse_size("17179869184G", &v), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_classes),
        cmocka_unit_test(test_f16_ties),
        cmocka_unit_test(test_bf16_classes_and_ties),
        cmocka_unit_test(test_roundtrip_exhaustive),
        cmocka_unit_test(test_nearest_random),
        cmocka_unit_test(test_bulk_conversion_and_nonfinite),
        cmocka_unit_test(test_parse_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
