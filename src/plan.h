/* plan.h — decides once, before any heavy work, what happens to every tensor. */
#ifndef ACEM_PLAN_H
#define ACEM_PLAN_H

#include "internal.h"

typedef enum plan_action { PLAN_MERGE, PLAN_COPY } plan_action;

typedef struct plan_entry {
    const acem_tensor *base;
    const acem_tensor **experts; /* T descriptors, same name, dtype and shape as base */
    plan_action action;
    const char *reason; /* why a tensor is copied (static string or a regex) */
    /* The output's type, or ACEM_OUT_KEEP when the base's stored bytes pass through as they
     * are (non-float tensors, and copied ones whose type does not change). */
    acem_out_type out;
    bool conv1d; /* a GPT-2 Conv1D weight stored (in, out), for --covariance-axis input */
} plan_entry;

typedef struct plan {
    plan_entry *entries; /* in the base's storage order */
    size_t n;
    size_t n_merge;
    const acem_tensor **expert_slots;
    uint64_t bytes_to_read; /* all inputs, for progress */
} plan;

/* Checks names, dtypes and shapes across base and experts and assigns each tensor an
 * action: merged when floating point and not excluded (by --exclude or the preset). */
int plan_build(plan *p, const acem_checkpoint *base, const acem_checkpoint *const *experts, int T,
               const acem_merge_options *o, acem_error *err);
void plan_free(plan *p);

/* The element type of the values the pipeline hands the writer for e: the float type it
 * stores, F32 for block types (the writer quantises them), the base's own for KEEP. */
acem_dtype plan_fed_dtype(const plan_entry *e);
/* A tensor's stored type as an output type: its blocks or float type (KEEP otherwise). */
acem_out_type plan_stored_type(const acem_tensor *t);

/* The reference's exclusions per model family (ace-merging.md), as POSIX EREs. */
int plan_preset_patterns(const char *preset, const char *const **patterns, size_t *n);

#endif
