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
    acem_dtype out_dtype;
    acem_quant out_quant; /* GGUF output: blocks of this type (fed F32 values) */
    bool raw_copy;        /* copied as the base's stored blocks, unchanged */
    bool conv1d;          /* a GPT-2 Conv1D weight stored (in, out), for --covariance-axis input */
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

/* The reference's exclusions per model family (ace-merging.md), as POSIX EREs. */
int plan_preset_patterns(const char *preset, const char *const **patterns, size_t *n);

#endif
