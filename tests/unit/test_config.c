/* test_config.c — the YAML schema: mergekit keys, acem keys, and refusals. */
#include "testutil.h"

#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int load(const char *dir, const char *yaml, acem_config **c, acem_merge_options *o,
                acem_error *err) {
    char *p = tu_write(dir, "c.yaml", yaml, strlen(yaml));
    acem_merge_options_init(o);
    int rc = acem_config_load(p, c, o, err);
    free(p);
    return rc;
}

/* Models are resolved as the config is read (a name like "base" that is no local path is
 * looked up as a Hugging Face id): local directories of these names. */
static void make_models(const char *dir, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        char model[4096];
        snprintf(model, sizeof model, "%s/%s", dir, names[i]);
        assert_int_equal(mkdir(model, 0755), 0);
    }
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
    assert_int_equal(o.n_params, 0); /* the config's parameters are settings, read per tensor */
    const setting *density = settings_find(&o.settings->top, "density");
    assert_true(density && density->n_cond == 1 && density->cond[0].v[0] == 0.3);
    assert_false(o.settings->mergekit);
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
        {"modules: {text: {models: [a]}}\n", "module \"text\": acem's architectures have one"},
        {"input_model_parameters: {a: {weight: 1}}\n", "not yet by acem"},
        {"base_model: b\nslices:\n  - base_model: a\n    sources: [{model: a, layer_range: [0, "
         "1]}]\n",
         "slice 1's base_model"},
        {"parameters:\n  weight: [1, x]\n", "must be a number"},
        {"parameters:\n  weight: {filter: mlp}\n", "needs a value"},
        {"parameters:\n  weight: [{filter: mlp, value: 1}, 2]\n", "only {filter, value}"},
        {"parameters:\n  weight: 1\n  weight: 2\n", "\"weight\" is given twice in parameters"},
        {"models:\n  - model: a\n    model: b\n", "\"model\" is given twice in models entry 1"},
        {"slices:\n  - sources: [{model: a, layer_range: [0, 1], model: b}]\n",
         "\"model\" is given twice in source 1 of slice 1"},
        {"parameters:\n  t: [{filter: a, value: 1, filter: b}]\n",
         "\"filter\" is given twice in a condition of parameter \"t\""},
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
    make_models(dir, (const char *[]){"a", "b"}, 2);
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

/* mergekit's per-model parameters, gradients and conditions; the base listed again under
 * models is no expert. */
static void test_mergekit_parameters(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    acem_config *c;
    acem_merge_options o;
    acem_error err = {{0}};
    const char *yaml = "models:\n"
                       "  - model: base\n"
                       "  - model: a\n"
                       "    parameters:\n"
                       "      weight: [0, 1, 0.5]\n"
                       "      density:\n"
                       "        - filter: mlp\n"
                       "          value: 0.25\n"
                       "        - value: [1, 0]\n"
                       "  - model: b\n"
                       "    parameters: {weight: 0.5, normalize: true}\n"
                       "merge_method: ties\n"
                       "base_model: base\n"
                       "parameters: ~\n";
    make_models(dir, (const char *[]){"base", "a", "b"}, 3);
    assert_int_equal(load(dir, yaml, &c, &o, &err), 0);
    assert_int_equal(o.n_models, 2);
    const acem_settings *s = o.settings;
    assert_true(s->mergekit && s->n_models == 2 && s->top.n == 0);
    double v;
    const setting *w = settings_find(&s->models[0], "weight");
    assert_true(setting_eval(w, "x", 0.75, &v) && v == 0.75); /* between 1 and 0.5 */
    const setting *d = settings_find(&s->models[0], "density");
    assert_true(setting_eval(d, "model.layers.0.mlp.up_proj.weight", 0.5, &v) && v == 0.25);
    assert_true(setting_eval(d, "model.layers.0.self_attn.q_proj.weight", 0.25, &v) && v == 0.75);
    assert_true(setting_eval(settings_find(&s->models[1], "normalize"), "x", 0, &v) && v == 1);
    acem_config_free(c);
    tu_rmtree(dir);
    free(dir);
}

/* Keys mergekit ignores are kept as warnings for the merge, in the file's order, naming the
 * key and where; a condition whose only other key is `pattern:` has no filter, as in
 * mergekit, and so matches every tensor. */
static void test_ignored_keys(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    acem_config *c;
    acem_merge_options o;
    acem_error err = {{0}};
    const char *yaml = "merge_methd: ties\n"
                       "models:\n"
                       "  - model: a\n"
                       "    weight: 0.5\n"
                       "    parameters:\n"
                       "      weight: [{pattern: mlp, value: 0.25}, {value: 1}]\n"
                       "base_model: base\n"
                       "tokenizer: {source: union, padding: 8}\n";
    make_models(dir, (const char *[]){"base", "a"}, 2);
    assert_int_equal(load(dir, yaml, &c, &o, &err), 0);
    const acem_settings *s = o.settings;
    assert_int_equal(s->n_notes, 4);
    assert_non_null(strstr(s->notes[0], "unknown key \"merge_methd\" at the top level"));
    assert_non_null(strstr(s->notes[1], "unknown key \"weight\" in models entry 1"));
    assert_non_null(strstr(s->notes[2], "\"pattern\" in a condition of parameter \"weight\""));
    assert_non_null(strstr(s->notes[2], "matches every tensor"));
    assert_non_null(strstr(s->notes[3], "unknown key \"padding\" in tokenizer"));
    double v;
    const setting *w = settings_find(&s->models[0], "weight");
    assert_true(setting_eval(w, "model.layers.0.self_attn.q_proj.weight", 0, &v) && v == 0.25);
    assert_null(o.method); /* the misspelt key set nothing */
    acem_config_free(c);
    tu_rmtree(dir);
    free(dir);
}

/* mergekit-multi: documents in the order of what they read, the unnamed final merge last;
 * a cycle is refused. */
static void test_document_order(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    const char *yaml = "merge_method: linear\nmodels: [b, c]\n"
                       "---\nname: c\nmerge_method: linear\nmodels: [b, x]\n"
                       "---\nname: b\nmerge_method: linear\nmodels: [x, y]\n";
    char *p = tu_write(dir, "m.yaml", yaml, strlen(yaml));
    acem_error err = {{0}};
    size_t n = 0, order[3];
    assert_int_equal(acem_config_count(p, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(acem_config_order(p, order, n, &err), 0);
    assert_true(order[0] == 2 && order[1] == 1 && order[2] == 0);
    free(p);
    const char *cycle = "name: a\nmerge_method: linear\nmodels: [b]\n"
                        "---\nname: b\nmerge_method: linear\nmodels: [a]\n"
                        "---\nmerge_method: linear\nmodels: [a]\n";
    p = tu_write(dir, "cycle.yaml", cycle, strlen(cycle));
    assert_int_equal(acem_config_count(p, &n, &err), -1);
    assert_non_null(strstr(err.msg, "cycle"));
    free(p);
    tu_rmtree(dir);
    free(dir);
}

/* Where a gradient is read: layer i of n at i / (n - 1); embeddings at 0, the rest at 1. */
static void test_gradient_position(void **state) {
    (void)state;
    assert_int_equal(tensor_layer("model.layers.12.mlp.up_proj.weight"), 12);
    assert_int_equal(tensor_layer("transformer.h.3.attn.c_attn.weight"), 3);
    assert_int_equal(tensor_layer("lm_head.weight"), -1);
    assert_true(tensor_gradient_t("model.layers.2.mlp.weight", 5) == 0.5);
    assert_true(tensor_gradient_t("model.embed_tokens.weight", 5) == 0);
    assert_true(tensor_gradient_t("model.norm.weight", 5) == 1);
    assert_true(tensor_gradient_t("model.layers.0.mlp.weight", 1) == 1);
}

/* A slice renumbers a layer: the first numeric component of the name, wherever it is, of
 * any width (the output index may be longer or shorter than the source's). */
static void test_layer_rename(void **state) {
    (void)state;
    const struct {
        const char *in;
        long layer;
        const char *out;
    } cases[] = {
        {"model.layers.7.mlp.up_proj.weight", 12, "model.layers.12.mlp.up_proj.weight"},
        {"model.layers.17.self_attn.q_proj.weight", 3, "model.layers.3.self_attn.q_proj.weight"},
        {"transformer.h.0.attn.c_attn.weight", 100, "transformer.h.100.attn.c_attn.weight"},
        {"model.layers.2.block_sparse_moe.experts.5.w1.weight", 9,
         "model.layers.9.block_sparse_moe.experts.5.w1.weight"},
        {"encoder.layer.4", 0, "encoder.layer.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        acem_error err;
        char *got = tensor_with_layer(cases[i].in, cases[i].layer, &err);
        assert_non_null(got);
        assert_string_equal(got, cases[i].out);
        assert_int_equal(tensor_layer(got), cases[i].layer);
        free(got);
    }
    assert_true(tensor_before_layers("transformer.wpe.weight"));
    assert_false(tensor_before_layers("transformer.ln_f.weight"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mergekit_schema),     cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_mergekit_parameters), cmocka_unit_test(test_gradient_position),
        cmocka_unit_test(test_layer_rename),        cmocka_unit_test(test_ignored_keys),
        cmocka_unit_test(test_document_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
