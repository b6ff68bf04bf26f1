/*
 * lab_text.h — the `text` suite's data (lab_text_data.c): seven text classification tasks
 * whose labels come from files that Debian 12 packages install, and the pretraining corpus.
 * The design (sources, classes, sizes, splits, the discrimination criterion) is in
 * docs/lab.md, "The text suite".
 *
 * Every file is read strictly (valid UTF-8, no NUL, the format of its source, an error
 * naming the file and line otherwise); the same files and seed give the same bytes.
 */
#ifndef ACEM_LAB_TEXT_H
#define ACEM_LAB_TEXT_H

#include "acem.h"

#include <stdbool.h>
#include <stdint.h>

#define LAB_TEXT_TASKS       7
#define LAB_TEXT_MAX_CLASSES 6
#define LAB_TEXT_MAX_BYTES   320 /* an example's text, cut at a character boundary */

/* n texts (NUL-terminated UTF-8, whitespace collapsed to single spaces) and labels. */
typedef struct lab_text_set {
    int n;
    char **text;
    int *y;
} lab_text_set;

typedef struct lab_text_task {
    char name[24];
    char about[160]; /* one line for results.md */
    int classes;
    char class_name[LAB_TEXT_MAX_CLASSES][24];
    lab_text_set train, val, test; /* class-balanced, in a seeded order */
} lab_text_task;

/* Examples per class in each split. */
typedef struct lab_text_sizes {
    int train, val, test;
} lab_text_sizes;

typedef struct lab_text_data {
    lab_text_task task[LAB_TEXT_TASKS];
    int docs;   /* the pretraining corpus: the licences of base-files, then every task's */
    char **doc; /* training texts (never a validation or test text, never a label) */
} lab_text_data;

/* The default (quick: CI) sizes. */
lab_text_sizes lab_text_sizes_for(bool quick);
/* Reads every source under root ("" for the system; a test passes a directory holding
 * the same paths), builds the tasks and the corpus. On error d holds nothing. */
int lab_text_load(lab_text_data *d, const char *root, lab_text_sizes sizes, uint64_t seed,
                  acem_error *err);
void lab_text_free(lab_text_data *d);

/* `acem lab --suite text` (lab_text.c): options as lab_run's (heads must be tuned). */
typedef struct lab_options lab_options;
int lab_text_run(const lab_options *o, acem_error *err);

#endif
