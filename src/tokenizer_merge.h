/* tokenizer_merge.h — mergekit's tokenizer_source / tokenizer: / chat_template (issue 13,
 * item 6): the output's vocabulary, every input's embedding and head rows mapped onto it,
 * and the tokenizer files the output gets (docs/config.md). */
#ifndef ACEM_TOKENIZER_MERGE_H
#define ACEM_TOKENIZER_MERGE_H

#include "internal.h"
#include "output.h"

struct plan;

/* Where an output row comes from in a model that lacks its token (mergekit's
 * assign_embedding_sources, or the config's tokenizer.tokens): the mean of the models that
 * have it, zeros, or a donor model's row; with force, in every model. */
enum { TOK_AVERAGE = -2, TOK_ZERO = -1 }; /* a donor is a model index >= 0 */
typedef struct tok_rule {
    int from;
    int64_t row; /* the donor's row */
    bool force;
} tok_rule;

typedef struct tok_remap {
    const acem_tensor **in;     /* per model (0: the base, then the experts): its own tensor */
    const acem_checkpoint **ck; /* per model: the checkpoint it is read from */
    acem_tensor out;            /* the output's shape: V_pad rows, the same columns */
} tok_remap;

typedef struct tok_plan {
    bool remap;             /* a tokenizer source was given: embeddings are remapped */
    int n_models;           /* the base, then the experts */
    bool base_is_model;     /* mergekit's base_model: a model of the merge (not a reference) */
    bool *counted;          /* per model: in mergekit's set of models (the base when it is one,
                               each path once) */
    int64_t V, V_pad;       /* output vocabulary, and rows after pad_to_multiple_of */
    int64_t **perm;         /* per model: output id -> the model's row, or -1 */
    tok_rule *rule;         /* per output id */
    char *src_dir;          /* the directory the tokenizer files are copied from */
    char *chat_template;    /* the text written into tokenizer_config.json, or NULL */
    struct cJSON *appended; /* added_tokens entries appended to the source's (union, tokens) */
    tok_remap *remaps;      /* one per remapped plan entry */
    size_t n_remaps;
} tok_plan;

/* Builds the plan from o's tokenizer keys and every model's tokenizer.json and config.json;
 * nothing to do (tp->remap false, no template) when o names no tokenizer key. */
int tok_plan_build(tok_plan *tp, const acem_merge_options *o, bool has_base, acem_warnings *w,
                   acem_error *err);
void tok_plan_free(tok_plan *tp);
/* Whether a tensor name is an embedding or head matrix (one row per token). */
bool tok_is_embedding(const char *name);
/* Marks the plan's embedding entries as remapped: each entry's base descriptor becomes the
 * output's shape (entry->remap indexes tp->remaps). */
int tok_plan_apply(tok_plan *tp, struct plan *p, acem_error *err);
/* Model k's rows of remap m mapped to the output vocabulary, in the compute precision
 * (f64 or f32), into dst (V_pad x cols). read(user, ck, t, row, into) loads one row of
 * tensor t of ck. */
typedef int (*tok_read_row)(void *user, const acem_checkpoint *ck, const acem_tensor *t,
                            uint64_t row, void *into, acem_error *err);
int tok_remap_rows(const tok_plan *tp, const tok_remap *m, int k, bool f64, void *dst,
                   tok_read_row read, void *user, acem_error *err);
/* Names of the base's files the output does not take from the base (tokenizer files when
 * another source gives them); NULL-terminated. */
const char *const *tok_skipped_aux(const tok_plan *tp, const char *base);
/* Into the output directory being written: the source's tokenizer files, config.json's
 * vocab_size, tokenizer_config.json's chat_template. dry: check only. */
int tok_write_files(const tok_plan *tp, const output *o, const char *base, bool dry,
                    acem_error *err);

#endif
