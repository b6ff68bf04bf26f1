/* cov.h — the covariance family's shared kernel.
 *
 * regmean, actmat, wudi and ace all merge a 2-D tensor as
 *     M = (sum_t X_t S_t) (sum_t S_t + R)^{-1}
 * where S_t (n x n) estimates task t's input covariance over the column axis, X_t is Dt
 * (or, for ace, its row-centred version) and R is a regulariser. They differ only in how
 * S_t and R are built and how the system is solved. */
#ifndef ACEM_COV_H
#define ACEM_COV_H

#include "linalg/linalg.h"
#include "method.h"

typedef struct cov_task {
    const void *X;     /* m x n rows multiplying S_t (Dt, or a centred copy) */
    double gram_scale; /* > 0: S_t = gram_scale X^T X exactly, so X S_t may be associated as
                          (X X^T) X gram_scale, cheaper when 2m < n; 0: S_t is general */
    bool skip;         /* contributes nothing (e.g. an all-zero delta under normalisation) */
    bool upper_only;   /* only S_t's upper triangle is set (the lower is stale): it is mirrored
                          where X S_t needs it whole, and P's sum once at the end */
} cov_task;

/* Builds task t's S_t into S (n x n) and says which X multiplies it. */
typedef int (*cov_estimate_fn)(const method_ctx *c, void *const *D, int t, void *S, cov_task *task,
                               void *user, acem_error *err);

/* Y (m x n) = sum_t X_t S_t, P (n x n) = sum_t S_t. Both are overwritten. S and, when the
 * association is used, K (m x m, may be NULL when 2m >= n) are workspaces. */
int cov_accumulate(const la *L, const method_ctx *c, void *const *D, cov_estimate_fn estimate,
                   void *user, void *Y, void *P, void *S, void *K, acem_error *err);

typedef enum cov_solver { COV_LU, COV_CHOLESKY, COV_PINV } cov_solver;

/* Y <- Y A^{-1} (A n x n, destroyed). COV_CHOLESKY falls back to LU when A is not positive
 * definite in the compute precision; COV_LU falls back to the pseudo-inverse when A is
 * singular; COV_PINV uses the symmetric eigendecomposition with eigenvalues at or below
 * n * eps * max treated as zero (actmat). eps is the machine epsilon of the precision the
 * method is defined in (2^-23 for f32), even when the solve itself runs in double. rcond receives
 * an estimate of 1 / cond_1(A) when the LU path ran (NaN otherwise). */
int cov_solve(const la *L, cov_solver solver, size_t m, size_t n, void *A, void *Y, double eps,
              double *rcond, acem_error *err);

/* Machine epsilon of the method's compute precision. */
static inline double machine_eps(const method_ctx *c) { return c->f64 ? 0x1p-52 : 0x1p-23; }

/* Workspace allocation in the compute precision (n elements), reported through err. */
void *cov_alloc(const la *L, size_t n, const char *what, acem_error *err);

#endif
