/* dataset.h — evaluation data files: TSV (GLUE's files as distributed), CSV (RFC 4180) and
 * JSONL, read into texts, optional pair texts and label ids (docs/eval.md, "Data files"). */
#ifndef ACEM_EVAL_DATASET_H
#define ACEM_EVAL_DATASET_H

#include "acem.h"

#include <stddef.h>
#include <stdint.h>

/* Whether the first row of a TSV or CSV file names the columns. AUTO: it does when any
 * column is given by a name (not all digits), it does not when all are 0-based indexes. */
typedef enum eval_header { EVAL_HEADER_AUTO, EVAL_HEADER_YES, EVAL_HEADER_NO } eval_header;

typedef struct eval_columns {
    const char *text, *pair, *label; /* a header name or a 0-based index; pair may be NULL */
    eval_header header;
    /* The model's labels in id order (config.json's id2label), or NULL: then integer labels
     * are their own ids and string labels take ids in byte order of the distinct strings. */
    const char *const *label_names;
    size_t n_label_names;
} eval_columns;

typedef struct eval_dataset {
    size_t n;
    char **text, **pair; /* pair is NULL without a pair column */
    int32_t *label;
    size_t *line;       /* the file line where each example starts */
    char **label_names; /* n_labels names, id order */
    size_t n_labels;
} eval_dataset;

/* Reads path, its format from the extension (.tsv, .csv, .jsonl; any case). Strict: -1
 * with one sentence naming path:line for a ragged row, bad quoting, a missing or unusable
 * value, NUL bytes or text that is not UTF-8. */
int eval_dataset_read(const char *path, const eval_columns *c, eval_dataset *d, acem_error *err);
void eval_dataset_free(eval_dataset *d);

#endif
