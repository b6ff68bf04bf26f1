/* stats.h — per-tensor delta statistics for acem stats. */
#ifndef ACEM_STATS_H
#define ACEM_STATS_H

#include "linalg/linalg.h"
#include "methods/method.h"

/* norm, erank: T values each. */
int delta_stats(const method_ctx *c, void *const *deltas, double *norm, double *erank,
                double *gamma, acem_error *err);

#endif
