/* plan.h — decides once, before any heavy work, what happens to every tensor. */
#ifndef ACEM_PLAN_H
#define ACEM_PLAN_H

#include "arch/hf_gguf.h"
#include "internal.h"

typedef enum plan_action { PLAN_MERGE, PLAN_COPY } plan_action;

typedef struct plan_entry {
    const char *name; /* in the output: base->name, or renumbered in a slice */
    const acem_tensor *base;
    const acem_checkpoint *base_ck; /* the checkpoint base is read from */
    /* T: the checkpoint each expert's tensor is read from, and (with slices) its source in
     * the slice (the parameters it reads); NULL without slices. */
    const acem_checkpoint *const *expert_ck;
    const int *source;
    int slice; /* the config's slice the tensor is taken from, -1 without slices */
    double t;  /* where gradients are read: mergekit's t (params.h) */
    /* T descriptors of the same name and shape, of any float or block type (they are all
     * read in the compute precision); NULL for copied tensors (not float, or excluded:
     * they are copied from the base whatever the experts hold). */
    const acem_tensor **experts;
    plan_action action;
    const char *reason; /* why a tensor is copied (static string or a regex) */
    /* The output's type, or ACEM_OUT_KEEP when the base's stored bytes pass through as they
     * are (non-float tensors, and copied ones whose type does not change). */
    acem_out_type out;
    bool conv1d; /* a GPT-2 Conv1D weight stored (in, out), for --covariance-axis input */
    /* An embedding mapped to the output vocabulary (tokenizer_merge.h): base is then the
     * output's shape, and every input is read through the remap. */
    const struct tok_remap *remap;
} plan_entry;

/* A tensor an expert holds and the base does not: never merged, always reported. */
typedef struct plan_extra {
    int model; /* index into the experts */
    const acem_tensor *tensor;
} plan_extra;

typedef struct plan {
    plan_entry *entries; /* in the base's storage order; with slices in mergekit's order:
                            embeddings, the slices' layers, the tensors after the layers */
    size_t n;
    int T;           /* experts per tensor */
    long n_layers;   /* of the output: the base's, or the sum of the slices' */
    bool renumbered; /* slices changed the layers: config.json's count is the output's */
    size_t n_merge;
    size_t n_conv1d; /* entries transposed for --covariance-axis input */
    const acem_tensor **expert_slots;
    const acem_checkpoint **ck_slots;
    int *source_slots;
    char **names; /* renumbered names, owned */
    plan_extra *extras;
    size_t n_extras;
    uint64_t bytes_to_read;       /* stored bytes of all inputs, for progress */
    acem_llama_ftype llama_ftype; /* the llama-quantize mix that chose the types, or NONE */
    /* a Hugging Face base written as llama.cpp's GGUF: the names, shapes, layouts and
     * key-values of the output (NULL otherwise) */
    hf_gguf *hf;
} plan;

/* Experts per tensor: the models, or with slices (o->settings) the sources of every slice
 * that the method takes as experts, which must be as many in every slice. */
int plan_width(const acem_merge_options *o, int *T, acem_error *err);

/* Checks names and shapes across base and experts and assigns each tensor an action:
 * merged when floating point and not excluded (by --exclude or the preset). F8 tensors
 * are refused unless excluded. What is accepted but probably not meant (extra tensors in
 * an expert, an exclusion that matches nothing) goes to w. inputs are o->models opened;
 * without slices they are the experts. */
int plan_build(plan *p, const acem_checkpoint *base, const acem_checkpoint *const *inputs,
               const acem_merge_options *o, acem_warnings *w, acem_error *err);
void plan_free(plan *p);

/* The element type of the values the pipeline hands the writer for e: the float type it
 * stores, F32 for block types (the writer quantises them), the base's own for KEEP. */
acem_dtype plan_fed_dtype(const plan_entry *e);
/* A tensor's stored type as an output type: its blocks or float type (KEEP otherwise). */
acem_out_type plan_stored_type(const acem_tensor *t);
/* What happens to e, in words: "merged by ties", "copied from the base: not a
 * floating-point tensor", ...; matrix_only: the method merges 2-D tensors only. */
void plan_describe(const plan_entry *e, const char *method, bool matrix_only, char *buf,
                   size_t len);
/* GPT-2's Conv1D layers store their weight as (in, out): true for their names. */
bool plan_is_conv1d_name(const char *name);

/* The reference's exclusions per model family (ace-merging.md), as POSIX EREs. */
int plan_preset_patterns(const char *preset, const char *const **patterns, size_t *n);

#endif
