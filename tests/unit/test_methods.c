/* test_methods.c — method kernels on hand-made and random deltas (the float64 oracle
 * tests in test_methods_golden.py check every method end to end). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linalg/linalg.h"
#include "methods/method.h"

/* p holds the method's n_params values; every expert gets the same ones. */
static method_ctx ctx(uint64_t n, int T, bool f64, const double *p, int n_params) {
    static double ep[16 * METHOD_MAX_PARAMS];
    for (int t = 0; t < T; t++)
        memcpy(ep + t * n_params, p, (size_t)n_params * sizeof *p);
    method_ctx c;
    memset(&c, 0, sizeof c);
    c.tensor = "w";
    c.name_hash = acem_fnv1a64("w");
    c.ndim = 1;
    c.rows = 1;
    c.cols = c.numel = n;
    c.T = T;
    c.f64 = f64;
    c.threads = 1;
    c.p = p;
    c.ep = ep;
    c.n_params = n_params;
    return c;
}

static void test_ties_hand_case(void **state) {
    (void)state;
    /* density 0.5 of 4 entries: keep the 2 largest magnitudes of each task */
    float d0[4] = {3, -1, 0.5f, -4}, d1[4] = {-2, 5, 0.1f, -1}, d2[4] = {1, 1, 1, 1};
    void *d[3] = {d0, d1, d2};
    float out[4];
    double p[5] = {0.5, 1, 1, 0, 0}; /* density, weight, normalize, int8_mask, rescale */
    method_ctx c = ctx(4, 3, false, p, 5);
    assert_int_equal(method_ties.merge(&c, d, out, NULL), 0);
    /* trimmed: t0 {3,0,0,-4}; t1 {-2,5,0,0}; t2 all ones (ties at the threshold are kept)
     * entry 0: sum 3-2+1=2 > 0 -> mean(3,1)=2; entry 1: 5+1 -> 3; entry 2: 1 -> 1;
     * entry 3: -4+1 < 0 -> -4 */
    assert_true(out[0] == 2.0f && out[1] == 3.0f && out[2] == 1.0f && out[3] == -4.0f);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Trimming keeps exactly the entries whose magnitude is >= the k-th largest, with any
 * number of threads (each takes a slice of the histogram pass and of the trim). */
static void check_trim(bool f64, uint64_t n, double density, int distinct, int threads) {
    double *ref = malloc(n * sizeof(double)), *sorted = malloc(n * sizeof(double));
    void *buf = malloc(n * 8), *other = calloc(n, 8), *out = malloc(n * 8);
    uint64_t s = n * 31 + (uint64_t)distinct;
    for (uint64_t i = 0; i < n; i++) {
        s = acem_mix64(s);
        double v = distinct > 0 ? (double)(int64_t)(s % (uint64_t)distinct) - distinct / 2
                   : distinct < 0 /* one top-16-bit digit, distinct low bits */
                       ? ((s >> 40) & 1 ? -1 : 1) * (1 + (double)(s % 1000) * 0x1p-20)
                       : ldexp((double)(s >> 11) * 0x1p-53 - 0.5, (int)(s % 40) - 20);
        ref[i] = f64 ? v : (double)(float)v;
        wr(buf, i, ref[i], f64);
        sorted[i] = fabs(ref[i]);
    }
    qsort(sorted, n, sizeof(double), cmp);
    uint64_t k = (uint64_t)(density * (double)n);
    if (k < 1) k = 1;
    double thr = sorted[n - k];
    double p[5] = {density, 1, 1, 0, 0};
    method_ctx c = ctx(n, 2, f64, p, 5);
    c.threads = threads;
    void *d[2] = {buf, other};
    method_ties.merge(&c, d, out, NULL);
    for (uint64_t i = 0; i < n; i++) {
        double kept = fabs(ref[i]) >= thr ? ref[i] : 0.0;
        assert_true(rd(buf, i, f64) == kept); /* deltas hold the trimmed values */
    }
    free(ref);
    free(sorted);
    free(buf);
    free(other);
    free(out);
}

static void test_ties_trim_random(void **state) {
    (void)state;
    for (int f64 = 0; f64 < 2; f64++)
        for (int threads = 1; threads <= 3; threads++) {
            check_trim(f64, 1, 0.2, 0, threads);
            check_trim(f64, 2, 0.5, 0, threads);
            check_trim(f64, 1000, 0.2, 0, threads);
            check_trim(f64, 4097, 0.01, 0, threads);
            check_trim(f64, 100003, 0.2, 0, threads);
            check_trim(f64, 5000, 0.3, 7, threads); /* many equal magnitudes: not listed */
            check_trim(f64, 5000, 0.3, 2000, threads);
            check_trim(f64, 5000, 0.3, -1, threads); /* all in the top digit: not listed */
            check_trim(f64, 5000, 0.001, -1, threads);
            check_trim(f64, 300, 1.0, 0, threads);
            check_trim(f64, 300, 0.0, 0, threads); /* k = max(1, 0) = 1 */
        }
}

/* The DARE mask depends on (seed, name, t, i) only: chunked calls and any thread count
 * give the bits of one whole-tensor call. */
static void test_dare_chunk_and_thread_invariance(void **state) {
    (void)state;
    enum { N = 10007, T = 3 };
    float *src = malloc(N * T * sizeof(float)), *work = malloc(N * T * sizeof(float));
    float whole[N], pieces[N];
    for (int i = 0; i < N * T; i++)
        src[i] = (float)sin(i * 0.37);
    double p[6] = {0.9, 0, NAN, 1, 0, 0}; /* p, rescale, density, weight, normalize, int8 */
    for (int variant = 0; variant < 2; variant++) {
        const method_def *m = variant ? &method_dare_ties : &method_dare_linear;
        memcpy(work, src, N * T * sizeof(float));
        void *d[T] = {work, work + N, work + 2 * N};
        method_ctx c = ctx(N, T, false, p, 6);
        c.seed = 42;
        m->merge(&c, d, whole, NULL);
        memcpy(work, src, N * T * sizeof(float));
        c.threads = 2;
        for (uint64_t from = 0; from < N; from += 999) {
            c.offset = from;
            c.numel = N - from < 999 ? N - from : 999;
            void *dd[T] = {work + from, work + N + from, work + 2 * N + from};
            m->merge(&c, dd, pieces + from, NULL);
        }
        assert_memory_equal(whole, pieces, sizeof whole);
    }
    /* about 10% of the entries survive, scaled by 10 */
    memcpy(work, src, N * T * sizeof(float));
    void *d[T] = {work, work + N, work + 2 * N};
    method_ctx c = ctx(N, T, false, p, 6);
    float out[N];
    method_dare_linear.merge(&c, d, out, NULL);
    int kept = 0;
    for (int i = 0; i < N; i++)
        if (work[i] != 0) {
            kept++;
            assert_true(fabsf(work[i] - 10.0f * src[i]) <= 1e-5f * fabsf(src[i]) * 10);
        }
    assert_true(kept > N / 10 - 150 && kept < N / 10 + 150);
    free(src);
    free(work);
}

static void test_param_resolution(void **state) {
    (void)state;
    double v[METHOD_MAX_PARAMS];
    char desc[128];
    acem_error err = {{0}};
    acem_param ok[] = {{"p", "0.5"}, {"rescale", "l1"}};
    assert_int_equal(method_resolve_params(&method_dare_ties, ok, 2, false, v, &err), 0);
    assert_true(v[0] == 0.5 && v[1] == 1);
    method_describe_params(&method_dare_ties, v, desc, sizeof desc);
    assert_string_equal(desc, "p=0.5 rescale=l1 weight=1 normalize=true int8_mask=false");
    assert_false(method_dare_ties.elementwise(v));
    acem_param unknown[] = {{"densty", "0.5"}};
    assert_int_not_equal(method_resolve_params(&method_ties, unknown, 1, false, v, &err), 0);
    assert_non_null(strstr(err.msg, "no parameter \"densty\""));
    acem_param range[] = {{"density", "1.5"}};
    assert_int_not_equal(method_resolve_params(&method_ties, range, 1, false, v, &err), 0);
    acem_param junk[] = {{"density", "0.2x"}};
    assert_int_not_equal(method_resolve_params(&method_ties, junk, 1, false, v, &err), 0);
    acem_param choice[] = {{"rescale", "l2"}};
    assert_int_not_equal(method_resolve_params(&method_dare_linear, choice, 1, false, v, &err), 0);
    assert_non_null(method_find("average"));
    assert_null(method_find("nope"));
}

/* la_eig_sym_top on a Gram matrix with two dominant directions over a bulk, the case where
 * the whole bulk is one cluster for LAPACK's inverse iteration: the top k eigenvalues are
 * those of the full decomposition, and the eigenvectors are orthonormal with small
 * residuals, for k = 1, k inside the bulk and k = n. Double only: float32 MRRR on the bulk's
 * subset loses orthogonality to 1e-4, and ACE's refinement needs double anyway. */
static void check_eig_top(size_t n, size_t k) {
    const la L = {true, 1};
    const size_t m = 2 * n;
    void *X = malloc(m * n * la_size(&L)), *A = malloc(n * n * la_size(&L));
    void *B = malloc(n * n * la_size(&L)), *wall = malloc(n * la_size(&L));
    void *Z = malloc(n * n * la_size(&L)), *w = malloc(k * la_size(&L));
    void *Vt = malloc(k * n * la_size(&L));
    assert_true(X && A && B && wall && Z && w && Vt);
    uint64_t key = acem_rng_key(7, n, k);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double spike = 30.0 * (i % 2 ? 1.0 : -1.0) * ((j % 3) - 1.0) + (i < 5 ? 20.0 : 0.0);
            la_set(&L, X, i * n + j, acem_rng_uniform(key, i * n + j) - 0.5 + spike * (j < 4));
        }
    la_gram(&L, m, n, 1.0, X, 0.0, A);
    la_copy(&L, n * n, A, B);
    assert_int_equal(la_eig_sym(&L, n, B, wall, Z), 0);
    la_copy(&L, n * n, A, B);
    assert_int_equal(la_eig_sym_top(&L, n, k, B, w, Vt), 0);
    const double tol = 1e-12, top = la_get(&L, wall, n - 1);
    for (size_t i = 0; i < k; i++) {
        assert_true(fabs(la_get(&L, w, i) - la_get(&L, wall, n - k + i)) <= tol * top);
        double res = 0;
        for (size_t r = 0; r < n; r++) {
            double av = -la_get(&L, w, i) * la_get(&L, Vt, i * n + r);
            for (size_t c = 0; c < n; c++)
                av += la_get(&L, A, r * n + c) * la_get(&L, Vt, i * n + c);
            res += av * av;
        }
        assert_true(sqrt(res) <= tol * top);
        for (size_t j = 0; j <= i; j++) {
            double dot = 0;
            for (size_t c = 0; c < n; c++)
                dot += la_get(&L, Vt, i * n + c) * la_get(&L, Vt, j * n + c);
            assert_true(fabs(dot - (i == j)) <= 1e-12);
        }
    }
    free(X), free(A), free(B), free(wall), free(Z), free(w), free(Vt);
}

static void test_eig_sym_top(void **state) {
    (void)state;
    check_eig_top(1, 1);
    check_eig_top(150, 1);
    check_eig_top(150, 45);
    check_eig_top(150, 150);
    double A[4] = {1, 0, 0, 1}, w[1], Vt[2];
    assert_int_not_equal(la_eig_sym_top(&(la){false, 1}, 2, 1, A, w, Vt), 0); /* float: refused */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ties_hand_case),
        cmocka_unit_test(test_ties_trim_random),
        cmocka_unit_test(test_dare_chunk_and_thread_invariance),
        cmocka_unit_test(test_param_resolution),
        cmocka_unit_test(test_eig_sym_top),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
