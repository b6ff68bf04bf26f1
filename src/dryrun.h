/* dryrun.h — acem merge --dry-run: the plan in words (dryrun.c). */
#ifndef ACEM_DRYRUN_H
#define ACEM_DRYRUN_H

#include "formats/formats.h"
#include "output.h"
#include "plan.h"

/* What the merge would do, as the pipeline has planned it. */
typedef struct dryrun_facts {
    const acem_merge_options *o;
    const plan *plan;
    const st_out_tensor *tensors; /* the output's tensors, as the writer would get them */
    size_t n_tensors;             /* the plan's, then the conversion's generated ones */
    output_kind kind;
    uint64_t shard_size;    /* of a directory output (0: one file) */
    bool matrix_only;       /* the method merges 2-D tensors, and gives others the mean */
    const char *const *aux; /* names of the files copied from the base directory */
    size_t n_aux;
} dryrun_facts;

/* Calls o->plan for every tensor and every file; fills the summary's counts and sizes. */
int dryrun_report(const dryrun_facts *f, acem_merge_summary *s, acem_error *err);

#endif
