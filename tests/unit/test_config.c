/* test_config.c — the YAML schema: mergekit keys, acem keys, and refusals. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load(const char *dir, const char *yaml, acem_config **c, acem_merge_options *o,
                acem_error *err) {
    char *p = tu_write(dir, "c.yaml", yaml, strlen(yaml));
    acem_merge_options_init(o);
    int rc = acem_config_load(p, c, o, err);
    free(p);
    return rc;
}

static void test_mergekit_schema(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    acem_config *c;
    acem_merge_options o;
    acem_error err = {{0}};
    const char *yaml = "merge_method: ties\n"
                       "base_model: ./base\n"
                       "models:\n"
                       "  - model: ./a\n"
                       "  - ./b\n"
                       "parameters:\n"
                       "  density: 0.3\n"
                       "  lambda: 0.7\n"
                       "dtype: bfloat16\n"
                       "exclude: ['^lm_head', 'embed']\n"
                       "preset: llama\n"
                       "seed: 7\n"
                       "max_shard_size: 2G\n"
                       "output: out\n";
    assert_int_equal(load(dir, yaml, &c, &o, &err), 0);
    assert_string_equal(o.method, "ties");
    /* relative paths are the config file's directory's */
    char expect[4096];
    snprintf(expect, sizeof expect, "%s/./base", dir);
    assert_string_equal(o.base, expect);
    assert_int_equal(o.n_models, 2);
    snprintf(expect, sizeof expect, "%s/./b", dir);
    assert_string_equal(o.models[1], expect);
    assert_int_equal(o.n_params, 1);
    assert_string_equal(o.params[0].key, "density");
    assert_string_equal(o.params[0].value, "0.3");
    assert_true(o.lambda == 0.7);
    assert_int_equal(o.out_type, ACEM_OUT_BF16);
    assert_int_equal(o.n_excludes, 2);
    assert_string_equal(o.preset, "llama");
    assert_int_equal(o.seed, 7);
    assert_int_equal(o.max_shard_size, 2ULL << 30);
    snprintf(expect, sizeof expect, "%s/out", dir);
    assert_string_equal(o.out, expect);
    acem_config_free(c);
    tu_rmtree(dir);
    free(dir);
}

static void test_refusals(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    static const struct {
        const char *yaml, *expect;
    } cases[] = {
        {"merge_methd: ties\n", "unknown key \"merge_methd\""},
        {"models:\n  - model: a\n    weight: 0.5\n", "per-model \"weight\""},
        {"lambda: abc\n", "must be a number"},
        {"dtype: f8\n", "unknown dtype"},
        {"models: a\n", "must be a list"},
        {"- a\n- b\n", "top level must be a mapping"},
        {"base: [1, 2]\n", "must be a single value"},
        {"seed: -3\n", "non-negative integer"},
        {"max_shard_size: lots\n", "not a size"},
        {"method: ties\n  bad indent: [\n", "c.yaml:"},
        {"parameters: 3\n", "must be a mapping"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        acem_config *c = NULL;
        acem_merge_options o;
        acem_error err = {{0}};
        int rc = load(dir, cases[i].yaml, &c, &o, &err);
        if (rc == 0 || !strstr(err.msg, cases[i].expect)) {
            print_error("yaml \"%s\": rc=%d \"%s\"\n", cases[i].yaml, rc, err.msg);
            fail();
        }
        assert_null(c);
    }
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mergekit_schema),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
