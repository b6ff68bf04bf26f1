/* test_merge.c — acem_merge end to end through the library: atomic output, refusals,
 * --force, directory outputs with copied files, cancellation, exclusions. */
#include "testutil.h"

#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[512];
static char g_base[600], g_a[600], g_b[600], g_nan[600];

static void save(const char *path, float scale, float poison) {
    float w[12], bias[4];
    for (int i = 0; i < 12; i++)
        w[i] = (float)i * 0.1f + scale * (float)((i * 7) % 5);
    for (int i = 0; i < 4; i++)
        bias[i] = scale * (float)i;
    w[5] += poison;
    int64_t ids[3] = {1, 2, 3};
    uint64_t sw[2] = {3, 4}, sb[1] = {4}, si[1] = {3};
    acem_tensor_data td[] = {
        {"layer.weight", ACEM_DT_F32, 2, sw, w},
        {"layer.bias", ACEM_DT_F32, 1, sb, bias},
        {"ids", ACEM_DT_I64, 1, si, ids},
    };
    acem_error err = {{0}};
    assert_int_equal(acem_save_safetensors(path, td, 3, NULL, 0, &err), 0);
}

static int setup(void **state) {
    (void)state;
    char *d = tu_mkdtemp();
    snprintf(g_dir, sizeof g_dir, "%s", d);
    free(d);
    snprintf(g_base, sizeof g_base, "%s/base.safetensors", g_dir);
    snprintf(g_a, sizeof g_a, "%s/a.safetensors", g_dir);
    snprintf(g_b, sizeof g_b, "%s/b.safetensors", g_dir);
    snprintf(g_nan, sizeof g_nan, "%s/nan.safetensors", g_dir);
    save(g_base, 0, 0);
    save(g_a, 1, 0);
    save(g_b, -0.5f, 0);
    save(g_nan, 2, (float)NAN);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tu_rmtree(g_dir);
    return 0;
}

static acem_merge_options opts(const char **models, int n, const char *out) {
    acem_merge_options o;
    acem_merge_options_init(&o);
    o.base = g_base;
    o.models = models;
    o.n_models = n;
    o.method = "average";
    o.out = out;
    o.threads = 1;
    return o;
}

static void read_weight(const char *path, float *w) {
    acem_checkpoint *ck;
    acem_error err = {{0}};
    assert_int_equal(acem_checkpoint_open(path, &ck, &err), 0);
    const acem_tensor *t = acem_checkpoint_find(ck, "layer.weight");
    assert_int_equal(acem_checkpoint_read(ck, t, 0, w, 48, &err), 0);
    acem_checkpoint_close(ck);
}

static void test_average_values(void **state) {
    (void)state;
    const char *m[] = {g_a, g_b};
    char out[700];
    snprintf(out, sizeof out, "%s/avg.safetensors", g_dir);
    acem_merge_options o = opts(m, 2, out);
    acem_merge_summary s;
    acem_error err = {{0}};
    assert_int_equal(acem_merge(&o, &s, &err), 0);
    assert_int_equal(s.tensors_merged, 2);
    assert_int_equal(s.tensors_copied, 1);
    float w[12], w0[12];
    read_weight(out, w);
    read_weight(g_base, w0);
    for (int i = 0; i < 12; i++)
        assert_float_equal(w[i], w0[i] + 0.25f * (float)((i * 7) % 5), 1e-6);
    /* existing output: refused and untouched without force, replaced with it */
    o.lambda = 2.0;
    assert_int_not_equal(acem_merge(&o, &s, &err), 0);
    assert_non_null(strstr(err.msg, "already exists"));
    float again[12];
    read_weight(out, again);
    assert_memory_equal(again, w, sizeof w);
    o.force = 1;
    assert_int_equal(acem_merge(&o, &s, &err), 0);
    read_weight(out, again);
    assert_float_equal(again[1], w0[1] + 0.5f * (float)(7 % 5), 1e-6);
    unlink(out);
}

/* A failure in the middle (NaN in the second tensor read) leaves nothing behind. */
static void test_failure_leaves_nothing(void **state) {
    (void)state;
    const char *m[] = {g_a, g_nan};
    char out[700];
    snprintf(out, sizeof out, "%s/outdir", g_dir);
    int before = tu_count_entries(g_dir);
    acem_merge_options o = opts(m, 2, out);
    acem_error err = {{0}};
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "non-finite"));
    assert_non_null(strstr(err.msg, "nan.safetensors"));
    assert_non_null(strstr(err.msg, "layer.weight"));
    assert_false(tu_exists(out));
    assert_int_equal(tu_count_entries(g_dir), before);
    /* --allow-nonfinite merges it */
    o.allow_nonfinite = 1;
    assert_int_equal(acem_merge(&o, NULL, &err), 0);
    assert_true(tu_exists(out));
    tu_rmtree(out);
}

static void test_refusals(void **state) {
    (void)state;
    acem_error err = {{0}};
    const char *one[] = {g_a};
    acem_merge_options o = opts(one, 1, "x.safetensors");
    o.method = "ace"; /* its covariance solve needs two experts; average takes one */
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "method ace needs at least 2"));
    o = opts(one, 0, "x.safetensors");
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "method average needs at least 1"));
    const char *m[] = {g_a, g_b};
    o = opts(m, 2, g_a); /* output = an input */
    o.force = 1;
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "also an input"));
    o = opts(m, 2, "y.safetensors");
    o.method = "magic";
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "unknown method"));
    o.method = "ties";
    o.max_shard_size = 100;
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "needs a directory"));
    o.max_shard_size = 0;
    const char *bad_re[] = {"(unclosed"};
    o.excludes = bad_re;
    o.n_excludes = 1;
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "--exclude"));
    o.n_excludes = 0;
    o.preset = "gpt5";
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "unknown preset"));
    char unwritable[700]; /* missing parents are made, but not under a file */
    snprintf(unwritable, sizeof unwritable, "%s/sub/out", g_a);
    o = opts(m, 2, unwritable);
    assert_int_not_equal(acem_merge(&o, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "is not a directory"));
}

static void test_exclude_and_cancel(void **state) {
    (void)state;
    const char *m[] = {g_a, g_b};
    char out[700];
    snprintf(out, sizeof out, "%s/ex.safetensors", g_dir);
    acem_merge_options o = opts(m, 2, out);
    const char *ex[] = {"weight$"};
    o.excludes = ex;
    o.n_excludes = 1;
    acem_merge_summary s;
    acem_error err = {{0}};
    assert_int_equal(acem_merge(&o, &s, &err), 0);
    assert_int_equal(s.tensors_merged, 1);
    float w[12], w0[12];
    read_weight(out, w);
    read_weight(g_base, w0);
    assert_memory_equal(w, w0, sizeof w); /* excluded: copied from the base */
    unlink(out);
    volatile sig_atomic_t cancel = 1;
    o.cancel = &cancel;
    int before = tu_count_entries(g_dir);
    assert_int_not_equal(acem_merge(&o, &s, &err), 0);
    assert_non_null(strstr(err.msg, "interrupted"));
    assert_int_equal(tu_count_entries(g_dir), before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_average_values),
        cmocka_unit_test(test_failure_leaves_nothing),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_exclude_and_cancel),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
