/* test_writer.c — writer round trips: header layout, padding, shards and index. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats.h"

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    b[*n] = 0;
    return b;
}

static void test_roundtrip_single_file(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -0.0f};
    uint16_t h[3] = {0x3c00, 0x7bff, 0x0001};
    int64_t ids[2] = {7, -9};
    uint64_t sa[2] = {2, 3}, sh[1] = {3}, si[1] = {2};
    acem_tensor_data td[] = {
        {"layer.w", ACEM_DT_F32, 2, sa, a},
        {"layer.h", ACEM_DT_BF16, 1, sh, h},
        {"ids", ACEM_DT_I64, 1, si, ids},
        {"scalar.empty", ACEM_DT_F16, 1, (uint64_t[]){0}, NULL},
    };
    acem_param meta[] = {{"format", "pt"}, {"note", "x\"y"}};
    acem_error err = {{0}};
    assert_int_equal(acem_save_safetensors(path, td, 4, meta, 2, &err), 0);

    size_t n;
    unsigned char *b = slurp(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | b[i];
    assert_int_equal((8 + hl) % 8, 0); /* padded so data is 8-aligned */
    assert_int_equal(b[8 + hl - 1] == ' ' || b[8 + hl - 1] == '}', 1);
    free(b);

    acem_checkpoint *ck;
    assert_int_equal(acem_checkpoint_open(path, &ck, &err), 0);
    assert_int_equal(acem_checkpoint_count(ck), 4);
    const acem_tensor *t = acem_checkpoint_find(ck, "layer.w");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    float back[6];
    assert_int_equal(acem_checkpoint_read(ck, t, 0, back, sizeof back, &err), 0);
    assert_memory_equal(back, a, sizeof a);
    int64_t ids2[2];
    assert_int_equal(acem_checkpoint_read(ck, acem_checkpoint_find(ck, "ids"), 0, ids2, 16, &err),
                     0);
    assert_memory_equal(ids2, ids, 16);
    assert_string_equal(acem_checkpoint_at(ck, 0)->name, "layer.w"); /* order kept */
    const char *k, *v;
    acem_checkpoint_metadata_at(ck, 1, &k, &v);
    assert_string_equal(v, "x\"y");
    acem_checkpoint_close(ck);
    assert_int_equal(tu_count_entries(dir), 1); /* no temporary left */
    tu_rmtree(dir);
    free(dir);
}

static void test_shards_and_index(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    enum { N = 7 };
    uint64_t shapes[N][1];
    st_out_tensor t[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        shapes[i][0] = (uint64_t)(10 + i);
        t[i] =
            (st_out_tensor){.name = names[i], .ndim = 1, .shape = shapes[i], .type = ACEM_OUT_F32};
    }
    st_writer *w;
    acem_error err = {{0}};
    acem_param meta[] = {{"format", "pt"}};
    assert_int_equal(st_writer_open(dir, NULL, t, N, 100, meta, 1, &w, &err), 0);
    size_t shards = st_writer_shards(w);
    assert_true(shards >= 3);
    for (int i = 0; i < N; i++) {
        float v[16];
        for (int k = 0; k < 16; k++)
            v[k] = (float)(i * 100 + k);
        /* write each tensor in two pieces to exercise buffering across calls */
        assert_int_equal(st_writer_write(w, v, 8, &err), 0);
        assert_int_equal(st_writer_write(w, (char *)v + 8, shapes[i][0] * 4 - 8, &err), 0);
    }
    assert_int_not_equal(st_writer_write(w, "x", 1, &err), 0); /* nothing more to write */
    assert_int_equal(st_writer_finish(w, &err), 0);
    st_writer_free(w);

    size_t n;
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    unsigned char *text = slurp(path, &n);
    cJSON *idx = cJSON_Parse((char *)text);
    free(text);
    assert_non_null(idx);
    const cJSON *total = cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "metadata"), "total_size");
    double sum = 0;
    for (int i = 0; i < N; i++)
        sum += (double)(shapes[i][0] * 4);
    assert_true(total->valuedouble == sum);
    char first[64];
    snprintf(first, sizeof first, "model-00001-of-%05zu.safetensors", shards);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "weight_map"), "t0")->valuestring, first);
    cJSON_Delete(idx);

    /* the directory reads back through the index with every value in place */
    acem_checkpoint *ck;
    assert_int_equal(acem_checkpoint_open(dir, &ck, &err), 0);
    assert_int_equal(acem_checkpoint_count(ck), N);
    assert_int_equal(acem_checkpoint_file_count(ck), shards);
    for (int i = 0; i < N; i++) {
        const acem_tensor *x = acem_checkpoint_at(ck, (size_t)i);
        assert_string_equal(x->name, names[i]);
        float v[16];
        assert_int_equal(acem_checkpoint_read(ck, x, 0, v, x->nbytes, &err), 0);
        assert_true(v[3] == (float)(i * 100 + 3));
    }
    acem_checkpoint_close(ck);
    tu_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_single_file),
        cmocka_unit_test(test_shards_and_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
