/* stats.c — what ACE sees in each tensor: the experts' delta norms, the heterogeneity
 * gamma (ace-merging.md step 1) and each delta's effective rank (Roy & Vetterli 2007):
 * exp of the entropy of the normalised singular values, p_i = sigma_i / sum_j sigma_j. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

int delta_stats(const method_ctx *c, void *const *D, double *norm, double *erank, double *gamma,
                acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n;
    *gamma = ace_heterogeneity(c, D, norm); /* norm holds squared norms until below */
    void *work = acem_alloc(m * n + 1, la_size(&L), "a singular value workspace", err);
    void *s = acem_alloc(r + 1, la_size(&L), "singular values", err);
    int rc = -1;
    if (!work || !s) goto out;
    for (int t = 0; t < c->T; t++) {
        norm[t] = sqrt(norm[t]);
        la_copy(&L, m * n, D[t], work);
        int info = la_singular_values(&L, m, n, work, s);
        if (info) {
            acem_fail(err, "SVD: %s", la_strerror(info));
            goto out;
        }
        double total = 0, h = 0;
        for (size_t i = 0; i < r; i++)
            total += la_get(&L, s, i);
        for (size_t i = 0; i < r && total > 0; i++) {
            double p = la_get(&L, s, i) / total;
            if (p > 0) h -= p * log(p);
        }
        erank[t] = total > 0 ? exp(h) : 0.0;
    }
    rc = 0;
out:
    free(work);
    free(s);
    return rc;
}
