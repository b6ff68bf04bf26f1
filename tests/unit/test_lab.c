/* test_lab.c — the lab's network against finite differences (every parameter and the
 * input, cross-entropy and squared error), Adam's update rule, the random streams, the
 * head regimes of fine-tuning (frozen heads keep the probe's bytes, the backbone moves),
 * and the digits suite's transforms and parser on a hand-made digits.csv.gz. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "lab.h"

#define ROWS 4

typedef struct fixture {
    lab_net backbone, head;
    lab_cache cb, ch;
    double x[ROWS * 5], target[ROWS * 3];
    int y[ROWS];
    bool squared; /* squared error against target instead of cross-entropy against y */
} fixture;

static void fixture_init(fixture *f, bool squared) {
    memset(f, 0, sizeof *f);
    acem_error err = {{0}};
    lab_rng rng = lab_rng_for(7, "test", 0);
    int widths[4] = {5, 7, 6, 4}, head_widths[2] = {4, 3};
    assert_int_equal(lab_net_init(&f->backbone, widths, 3, true, &rng, &err), 0);
    assert_int_equal(lab_net_init(&f->head, head_widths, 1, false, &rng, &err), 0);
    for (size_t i = 0; i < f->head.size; i++) /* non-zero biases everywhere */
        f->head.p[i] += 0.1 * lab_rng_normal(&rng);
    for (size_t i = 0; i < f->backbone.size; i++)
        f->backbone.p[i] += 0.1 * lab_rng_normal(&rng);
    for (int i = 0; i < ROWS * 5; i++)
        f->x[i] = lab_rng_normal(&rng);
    for (int i = 0; i < ROWS * 3; i++)
        f->target[i] = lab_rng_normal(&rng);
    for (int r = 0; r < ROWS; r++)
        f->y[r] = r % 3;
    f->squared = squared;
    assert_int_equal(lab_cache_init(&f->cb, &f->backbone, ROWS, &err), 0);
    assert_int_equal(lab_cache_init(&f->ch, &f->head, ROWS, &err), 0);
}

static void fixture_free(fixture *f) {
    lab_net_free(&f->backbone);
    lab_net_free(&f->head);
    lab_cache_free(&f->cb);
    lab_cache_free(&f->ch);
}

/* The loss; with grads, also its gradient (backbone, head, input). */
static double loss(fixture *f, double *gb, double *gh, double *gx) {
    lab_net_forward(&f->backbone, f->x, ROWS, &f->cb);
    lab_net_forward(&f->head, f->cb.a[3], ROWS, &f->ch);
    double *out = f->ch.a[1], *dout = f->ch.da[1];
    double l = f->squared ? lab_squared_error(out, f->target, ROWS, 3, dout)
                          : lab_cross_entropy(out, f->y, ROWS, 3, dout);
    if (gb) {
        lab_net_backward(&f->head, &f->ch, gh, f->cb.da[3]);
        lab_net_backward(&f->backbone, &f->cb, gb, gx);
    }
    return l;
}

/* Central difference of the loss in *p against the analytic g. */
static void check_one(fixture *f, double *p, double g, const char *what, size_t i) {
    const double h = 1e-6;
    double saved = *p;
    *p = saved + h;
    double up = loss(f, NULL, NULL, NULL);
    *p = saved - h;
    double down = loss(f, NULL, NULL, NULL);
    *p = saved;
    double fd = (up - down) / (2 * h), scale = fmax(1e-4, fabs(g) + fabs(fd));
    if (fabs(fd - g) / scale > 1e-5)
        fail_msg("%s[%zu]: analytic %.10g, finite difference %.10g", what, i, g, fd);
}

static void check_gradients(bool squared) {
    fixture f;
    fixture_init(&f, squared);
    double *gb = calloc(f.backbone.size, sizeof *gb), *gh = calloc(f.head.size, sizeof *gh);
    double gx[ROWS * 5];
    loss(&f, gb, gh, gx);
    for (size_t i = 0; i < f.backbone.size; i++)
        check_one(&f, &f.backbone.p[i], gb[i], "backbone", i);
    for (size_t i = 0; i < f.head.size; i++)
        check_one(&f, &f.head.p[i], gh[i], "head", i);
    for (size_t i = 0; i < ROWS * 5; i++)
        check_one(&f, &f.x[i], gx[i], "input", i);
    free(gb);
    free(gh);
    fixture_free(&f);
}

static void test_cross_entropy_gradients(void **state) {
    (void)state;
    check_gradients(false);
}

static void test_squared_error_gradients(void **state) {
    (void)state;
    check_gradients(true);
}

/* backward adds to the gradient: two calls give twice one call. */
static void test_backward_accumulates(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f, false);
    double *once = calloc(f.backbone.size, sizeof *once), *twice = calloc(f.backbone.size, 8);
    double *gh = calloc(f.head.size, sizeof *gh);
    loss(&f, once, gh, NULL);
    loss(&f, twice, gh, NULL);
    loss(&f, twice, gh, NULL);
    for (size_t i = 0; i < f.backbone.size; i++)
        assert_true(fabs(twice[i] - 2 * once[i]) <= 1e-12 * (1 + fabs(once[i])));
    free(once);
    free(twice);
    free(gh);
    fixture_free(&f);
}

static void test_cross_entropy_value(void **state) {
    (void)state;
    double logits[3] = {1.0, 2.0, 3.0}, d[3];
    int y = 2;
    double expect = log(exp(1.0) + exp(2.0) + exp(3.0)) - 3.0;
    assert_true(fabs(lab_cross_entropy(logits, &y, 1, 3, d) - expect) < 1e-14);
    assert_true(fabs(d[0] + d[1] + d[2]) < 1e-15); /* softmax - onehot sums to 0 */
}

/* Adam's first step moves every parameter by lr * g / (|g| + eps) (bias-corrected). */
static void test_adam(void **state) {
    (void)state;
    acem_error err = {{0}};
    lab_adam a;
    assert_int_equal(lab_adam_init(&a, 3, 0.01, &err), 0);
    double p[3] = {1.0, -2.0, 0.5}, g[3] = {0.3, -4.0, 0.0};
    lab_adam_update(&a, p, g);
    assert_true(fabs(p[0] - (1.0 - 0.01 * 0.3 / (0.3 + 1e-8))) < 1e-15);
    assert_true(fabs(p[1] - (-2.0 + 0.01 * 4.0 / (4.0 + 1e-8))) < 1e-15);
    assert_true(p[2] == 0.5);
    /* second step with the same gradient: mhat = g, vhat = g^2 again */
    lab_adam_update(&a, p, g);
    assert_true(fabs(p[0] - (1.0 - 2 * 0.01 * 0.3 / (0.3 + 1e-8))) < 1e-14);
    lab_adam_free(&a);
}

static void test_rng_streams(void **state) {
    (void)state;
    lab_rng a = lab_rng_for(1, "x", 0), b = lab_rng_for(1, "x", 0), c = lab_rng_for(1, "x", 1),
            d = lab_rng_for(2, "x", 0);
    uint64_t va = lab_rng_next(&a);
    assert_true(va == lab_rng_next(&b));
    assert_true(va != lab_rng_next(&c));
    assert_true(va != lab_rng_next(&d));
    double sum = 0.0, sq = 0.0;
    lab_rng n = lab_rng_for(3, "normal", 0);
    for (int i = 0; i < 100000; i++) {
        double z = lab_rng_normal(&n);
        sum += z;
        sq += z * z;
    }
    assert_true(fabs(sum / 100000) < 0.02);
    assert_true(fabs(sq / 100000 - 1.0) < 0.02);
}

/* ---- head regimes ----------------------------------------------------------------- */

static bool same_params(const lab_net *a, const lab_net *b) {
    return a->size == b->size && !memcmp(a->p, b->p, a->size * sizeof *a->p);
}

/* Every weight matrix of the backbone moved away from the base's. */
static bool every_layer_moved(const lab_net *tuned, const lab_net *base) {
    for (int l = 0; l < base->layers; l++) {
        const lab_dense *d = &base->layer[l];
        if (!memcmp(tuned->p + d->w, base->p + d->w, (size_t)d->out * d->in * sizeof(double)))
            return false;
    }
    return true;
}

/* Fine-tunes a clone of base on task k for `steps` steps; 0 steps leaves the probe alone. */
static void finetune(const lab_net *base, lab_suite *s, int k, int steps, lab_heads regime,
                     lab_net *backbone, lab_net *head) {
    acem_error err = {{0}};
    int saved = s->task[k].steps;
    s->task[k].steps = steps;
    assert_int_equal(lab_net_clone(backbone, base, &err), 0);
    assert_int_equal(lab_finetune(backbone, head, s, k, 5, regime, &err), 0);
    s->task[k].steps = saved;
}

/* Under frozen, the expert's head and the multitask model's heads are the probe's, bit
 * for bit, while every backbone layer moves; under tuned the heads move too. */
static void check_regime(lab_heads regime) {
    acem_error err = {{0}};
    lab_suite *s = calloc(1, sizeof *s);
    assert_int_equal(lab_synthetic_suite(s, 2, true, 5, &err), 0);
    int h = s->sizes.hidden, widths[LAB_DEPTH + 1] = {s->d, h, h, h};
    lab_rng rng = lab_rng_for(5, "test-base", 0);
    lab_net base, probed[2], probe_head[2], expert, head, multitask, heads[2];
    assert_int_equal(lab_net_init(&base, widths, LAB_DEPTH, true, &rng, &err), 0);
    for (int k = 0; k < 2; k++) {
        finetune(&base, s, k, 0, regime, &probed[k], &probe_head[k]);
        assert_true(same_params(&probed[k], &base)); /* the probe never touches the backbone */
    }
    finetune(&base, s, 0, s->task[0].steps, regime, &expert, &head);
    assert_true(s->task[0].steps > 0 && every_layer_moved(&expert, &base));
    assert_true(same_params(&head, &probe_head[0]) == (regime == LAB_HEADS_FROZEN));

    s->sizes.multitask_steps = 20;
    assert_int_equal(lab_net_clone(&multitask, &base, &err), 0);
    assert_int_equal(lab_multitask(&multitask, heads, s, 5, regime, &err), 0);
    assert_true(every_layer_moved(&multitask, &base));
    for (int k = 0; k < 2; k++)
        assert_true(same_params(&heads[k], &probe_head[k]) == (regime == LAB_HEADS_FROZEN));

    lab_net *nets[] = {&base,   &probed[0], &probed[1], &probe_head[0], &probe_head[1],
                       &expert, &head,      &multitask, &heads[0],      &heads[1]};
    for (size_t i = 0; i < sizeof nets / sizeof *nets; i++)
        lab_net_free(nets[i]);
    lab_suite_free(s);
    free(s);
}

static void test_frozen_heads(void **state) {
    (void)state;
    check_regime(LAB_HEADS_FROZEN);
}

static void test_tuned_heads(void **state) {
    (void)state;
    check_regime(LAB_HEADS_TUNED);
}

static void test_heads_names(void **state) {
    (void)state;
    lab_heads h = LAB_HEADS_TUNED;
    assert_int_equal(lab_heads_parse("frozen", &h), 0);
    assert_int_equal(h, LAB_HEADS_FROZEN);
    assert_string_equal(lab_heads_name(h), "frozen");
    assert_int_equal(lab_heads_parse("tuned", &h), 0);
    assert_string_equal(lab_heads_name(h), "tuned");
    assert_int_equal(lab_heads_parse("Frozen", &h), -1);
    assert_int_equal(lab_heads_parse("", &h), -1);
}

/* ---- digits --------------------------------------------------------------------- */

/* n images, all black but pixel (0, 1) = 16, labels i % 10. */
static char *write_digits(const char *dir, int n, const char *extra_line) {
    char *path = malloc(strlen(dir) + 32);
    sprintf(path, "%s/digits.csv.gz", dir);
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < 64; p++)
            gzprintf(f, "%d,", p == 1 ? 16 : 0);
        gzprintf(f, "%d\n", i % 10);
    }
    if (extra_line) gzputs(f, extra_line);
    gzclose(f);
    return path;
}

static int lit_pixel(const double *img) {
    int at = -1;
    for (int p = 0; p < 64; p++)
        if (img[p] > 0.5) at = at < 0 ? p : -2;
    return at;
}

static void test_digits_transforms(void **state) {
    (void)state;
    char *dir = tu_mkdtemp(), *path = write_digits(dir, 1000, NULL);
    lab_suite *s = calloc(1, sizeof *s);
    acem_error err = {{0}};
    assert_int_equal(lab_digits_suite(s, path, true, 0, &err), 0);
    assert_int_equal(s->T, 8);
    assert_int_equal(s->task[0].train.n + s->task[0].val.n + s->task[0].test.n, 1000);
    const double *img[8];
    for (int t = 0; t < 8; t++)
        img[t] = s->task[t].train.x;                   /* row 0: the same image in every task */
    assert_int_equal(lit_pixel(img[0]), 0 * 8 + 1);    /* identity */
    assert_int_equal(lit_pixel(img[1]), 1 * 8 + 7);    /* rotate 90 clockwise: (0,1) -> (1,7) */
    assert_int_equal(lit_pixel(img[2]), 0 * 8 + 6);    /* mirror: (0,1) -> (0,6) */
    assert_true(img[3][1] == 0.0 && img[3][0] == 1.0); /* invert */
    assert_true(lit_pixel(img[4]) >= 0);               /* permute: still one lit pixel */
    assert_int_equal(lit_pixel(img[5]), 1 * 8 + 3);    /* shift one down, two right */
    assert_true(fabs(img[7][0] - 1.0 / 9) < 1e-15 && fabs(img[7][9] - 1.0 / 9) < 1e-15 &&
                img[7][3] == 0.0); /* blur: the 3x3 box around (0,1) */
    double noise = 0.0;
    for (int p = 0; p < 64; p++)
        noise += (img[6][p] - img[0][p]) * (img[6][p] - img[0][p]);
    assert_true(noise > 0.5 && noise < 20.0); /* sd 0.3 over 64 pixels: about 5.8 */
    for (int t = 0; t < 8; t++)
        assert_int_equal(s->task[t].train.y[0], s->task[0].train.y[0]);
    lab_suite_free(s);
    free(s);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

static void expect_digits_error(const char *extra_line, int n, const char *needle) {
    char *dir = tu_mkdtemp(), *path = write_digits(dir, n, extra_line);
    lab_suite *s = calloc(1, sizeof *s);
    acem_error err = {{0}};
    assert_int_not_equal(lab_digits_suite(s, path, true, 0, &err), 0);
    if (!strstr(err.msg, needle) || !strstr(err.msg, path))
        fail_msg("expected \"%s\" and the path in: %s", needle, err.msg);
    free(s);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

static void test_digits_rejects_bad_files(void **state) {
    (void)state;
    expect_digits_error("1,2,3\n", 1000, "line 1001");
    expect_digits_error("0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
                        "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,17,3\n",
                        1000, "field 64");
    expect_digits_error("0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
                        "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,10\n",
                        1000, "field 65");
    expect_digits_error(NULL, 500, "500 images");
    lab_suite *s = calloc(1, sizeof *s);
    acem_error err = {{0}};
    assert_int_not_equal(lab_digits_suite(s, "/nonexistent/digits.csv.gz", true, 0, &err), 0);
    assert_non_null(strstr(err.msg, "python3-sklearn"));
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy_gradients),
        cmocka_unit_test(test_squared_error_gradients),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_cross_entropy_value),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_frozen_heads),
        cmocka_unit_test(test_tuned_heads),
        cmocka_unit_test(test_heads_names),
        cmocka_unit_test(test_digits_transforms),
        cmocka_unit_test(test_digits_rejects_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
