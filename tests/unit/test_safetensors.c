/* test_safetensors.c — one crafted file per rejection rule of the reader, plus the files
 * it must accept. Each case names the rule and the phrase the error must contain. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct bad_case {
    const char *rule;
    const char *json; /* header text (NULL: raw bytes below) */
    size_t data_len;  /* zero bytes appended as the data buffer */
    const char *expect;
} bad_case;

#define T1 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static const bad_case header_cases[] = {
    {"header not starting with {", "[1,2]", 0, "does not start with '{'"},
    {"invalid JSON", "{\"a\":", 0, "not valid JSON"},
    {"trailing bytes after JSON", "{}  x", 0, "trailing bytes"},
    {"missing colon", "{\"a\" 1}", 0, "not valid JSON"},
    {"duplicate tensor names",
     "{" T1 ",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
     "appears twice"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "unknown dtype"},
    {"dtype not a string", "{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "unknown dtype"},
    {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
     "non-negative integer"},
    {"fractional shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
     "non-negative integer"},
    {"string in shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
     "non-negative integer"},
    {"shape not a list", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
     "shape must be a list"},
    {"more than 8 dims",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     "shape must be a list"},
    {"element count overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}",
     8, "element count overflows"},
    {"byte size overflow",
     "{\"a\":{\"dtype\":\"F64\",\"shape\":[1125899906842624,4096],\"data_offsets\":[0,8]}}", 8,
     "byte size overflows"},
    {"three data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
     "two non-negative integers"},
    {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
     "two non-negative integers"},
    {"offset beyond 2^53", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}",
     8, "two non-negative integers"},
    {"end before begin", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
     "end before they begin"},
    {"span differs from numel*size",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12, "need 8"},
    {"gap between tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\","
     "\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, "leaves a gap"},
    {"overlapping tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
     "\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "overlaps"},
    {"first tensor not at 0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
     "leaves a gap"},
    {"trailing data bytes", "{" T1 "}", 12, "data buffer holds 12"},
    {"data shorter than offsets", "{" T1 "}", 4, "data buffer holds 4"},
    {"metadata not an object", "{\"__metadata__\":[1]}", 0, "__metadata__ is not an object"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, "is not a string"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "appears twice"},
    {"entry not an object", "{\"a\":[1]}", 0, "is not an object"},
    {"unknown key in entry",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, "unknown key"},
    {"repeated key in entry",
     "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "repeats the key"},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "lacks data_offsets"},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "lacks a dtype"},
};

static void expect_reject(const char *path, const char *rule, const char *expect) {
    acem_checkpoint *ck = NULL;
    acem_error err = {{0}};
    int rc = acem_checkpoint_open(path, &ck, &err);
    if (rc == 0 || !strstr(err.msg, expect) || !strstr(err.msg, path)) {
        print_error("rule \"%s\": rc=%d message \"%s\" (expected \"%s\")\n", rule, rc, err.msg,
                    expect);
        acem_checkpoint_close(ck);
        fail();
    }
    assert_null(ck);
    assert_null(strchr(err.msg, '\n'));
}

static void test_header_rules(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char zeros[64] = {0};
    for (size_t i = 0; i < sizeof header_cases / sizeof *header_cases; i++) {
        const bad_case *c = &header_cases[i];
        char name[32];
        snprintf(name, sizeof name, "case%zu.safetensors", i);
        char *p = tu_write_st(dir, name, c->json, zeros, c->data_len);
        expect_reject(p, c->rule, c->expect);
        free(p);
    }
    tu_rmtree(dir);
    free(dir);
}

/* Rules about the 8-byte length prefix and the bytes of the header. */
static void test_length_and_bytes(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    unsigned char buf[64] = {0};
    char *p = tu_write(dir, "empty.safetensors", buf, 0);
    expect_reject(p, "empty file", "too small");
    free(p);
    p = tu_write(dir, "seven.safetensors", buf, 7);
    expect_reject(p, "7-byte file", "too small");
    free(p);
    buf[0] = 1; /* N = 1 */
    p = tu_write(dir, "n1.safetensors", buf, 16);
    expect_reject(p, "N < 2", "outside [2");
    free(p);
    uint64_t big = 100000001ULL;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(big >> (8 * i));
    p = tu_write(dir, "nbig.safetensors", buf, 16);
    expect_reject(p, "N > 1e8", "outside [2");
    free(p);
    memset(buf, 0xff, 8); /* N = 2^64 - 1 */
    p = tu_write(dir, "nmax.safetensors", buf, 16);
    expect_reject(p, "N = 2^64-1", "outside [2");
    free(p);
    memset(buf, 0, 8);
    buf[0] = 40; /* N = 40 but only 8 bytes follow */
    p = tu_write(dir, "past.safetensors", buf, 16);
    expect_reject(p, "N past end of file", "runs past the end");
    free(p);
    p = tu_write_st(dir, "utf8.safetensors", "{\"\xc3\x28\":1}", NULL, 0);
    expect_reject(p, "invalid UTF-8", "not valid UTF-8");
    free(p);
    p = tu_write_st(dir, "overlong.safetensors", "{\"\xc0\xaf\":1}", NULL, 0);
    expect_reject(p, "overlong UTF-8", "not valid UTF-8");
    free(p);
    p = tu_write_st(dir, "surrogate.safetensors", "{\"\xed\xa0\x80\":1}", NULL, 0);
    expect_reject(p, "UTF-8 surrogate", "not valid UTF-8");
    free(p);
    const char nul[] = {'{', '}', 0, ' '};
    unsigned char withnul[12] = {4, 0, 0, 0, 0, 0, 0, 0};
    memcpy(withnul + 8, nul, 4);
    p = tu_write(dir, "nul.safetensors", withnul, 12);
    expect_reject(p, "NUL in header", "NUL byte");
    free(p);
    /* 100,000 nested brackets: cJSON's nesting limit refuses it without recursion blowup */
    size_t depth = 100000;
    char *deep = malloc(depth + 3);
    deep[0] = '{';
    memset(deep + 1, '[', depth);
    deep[depth + 1] = 0;
    p = tu_write_st(dir, "deep.safetensors", deep, NULL, 0);
    expect_reject(p, "deep nesting", "not valid JSON");
    free(p);
    free(deep);
    tu_rmtree(dir);
    free(dir);
}

static void test_accepts_valid(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    float data[3] = {1.0f, 2.0f, 3.0f};
    /* Offsets listed out of order, an empty tensor, metadata and padding spaces. */
    const char *json = "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                       "\"__metadata__\":{\"format\":\"pt\"},"
                       "\"e\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}    ";
    char *p = tu_write_st(dir, "ok.safetensors", json, data, sizeof data);
    acem_checkpoint *ck;
    acem_error err = {{0}};
    assert_int_equal(acem_checkpoint_open(p, &ck, &err), 0);
    assert_int_equal(acem_checkpoint_count(ck), 3);
    assert_string_equal(acem_checkpoint_at(ck, 0)->name, "a"); /* storage order */
    const acem_tensor *b = acem_checkpoint_find(ck, "b");
    assert_non_null(b);
    float v;
    assert_int_equal(acem_checkpoint_read(ck, b, 0, &v, 4, &err), 0);
    assert_true(v == 3.0f);
    assert_int_not_equal(acem_checkpoint_read(ck, b, 2, &v, 4, &err), 0); /* outside */
    assert_null(acem_checkpoint_find(ck, "zz"));
    assert_int_equal(acem_checkpoint_metadata_count(ck), 1);
    acem_checkpoint_close(ck);
    free(p);
    tu_rmtree(dir);
    free(dir);
}

static void test_sharded_directories(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    float d[2] = {1, 2};
    free(tu_write_st(dir, "s1.safetensors", "{" T1 "}", d, 8));
    free(tu_write_st(dir, "s2.safetensors",
                     "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8));
    static const struct {
        const char *index, *expect;
    } cases[] = {
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"../s2.safetensors\"}}",
         "plain shard file name"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"/etc/passwd\"}}",
         "plain shard file name"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"missing.safetensors\"}}",
         "cannot open"},
        {"{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\"}}",
         "which does not hold it"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s1.safetensors\"}}",
         "lists 2 tensors but the shards hold 1"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}", "lists 2 tensors"},
        {"{\"weight_map\":[]}", "weight_map is missing"},
        {"{\"weight_map\":{\"a\":1}}", "plain shard file name"},
        {"[1]", "not a valid JSON object"},
        {"{\"weight_map\":", "not a valid JSON object"},
    };
    char *index_path = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        free(index_path);
        index_path =
            tu_write(dir, "model.safetensors.index.json", cases[i].index, strlen(cases[i].index));
        acem_checkpoint *ck = NULL;
        acem_error err = {{0}};
        int rc = acem_checkpoint_open(dir, &ck, &err);
        if (rc == 0 || !strstr(err.msg, cases[i].expect)) {
            print_error("index %s: rc=%d \"%s\"\n", cases[i].index, rc, err.msg);
            fail();
        }
    }
    const char *good = "{\"metadata\":{\"total_size\":16},"
                       "\"weight_map\":{\"b\":\"s2.safetensors\",\"a\":\"s1.safetensors\"}}";
    free(index_path);
    index_path = tu_write(dir, "model.safetensors.index.json", good, strlen(good));
    acem_checkpoint *ck;
    acem_error err = {{0}};
    assert_int_equal(acem_checkpoint_open(dir, &ck, &err), 0);
    assert_int_equal(acem_checkpoint_count(ck), 2);
    assert_int_equal(acem_checkpoint_file_count(ck), 2);
    acem_checkpoint_close(ck);
    /* the same name in two shards */
    free(tu_write_st(dir, "s2.safetensors", "{" T1 "}", d, 8));
    const char *dup = "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\"}}";
    free(index_path);
    index_path = tu_write(dir, "model.safetensors.index.json", dup, strlen(dup));
    assert_int_not_equal(acem_checkpoint_open(dir, &ck, &err), 0);
    assert_non_null(strstr(err.msg, "appears twice"));
    free(index_path);
    tu_rmtree(dir);
    free(dir);
}

static void test_directory_without_model(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    acem_checkpoint *ck;
    acem_error err = {{0}};
    assert_int_not_equal(acem_checkpoint_open(dir, &ck, &err), 0);
    assert_non_null(strstr(err.msg, "holds neither"));
    assert_int_not_equal(acem_checkpoint_open("/nonexistent/x.safetensors", &ck, &err), 0);
    assert_non_null(strstr(err.msg, "cannot open"));
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_length_and_bytes),
        cmocka_unit_test(test_accepts_valid),
        cmocka_unit_test(test_sharded_directories),
        cmocka_unit_test(test_directory_without_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
