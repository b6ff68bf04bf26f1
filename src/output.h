/* output.h — atomic output: a temporary beside the destination, renamed when complete. */
#ifndef ACEM_OUTPUT_H
#define ACEM_OUTPUT_H

#include "internal.h"

typedef struct output {
    const char *final_path;
    char *tmp_path; /* file or directory being written; NULL once committed or aborted */
    bool is_file;   /* final_path ends in .safetensors or .gguf */
} output;

bool output_is_file(const char *out);
bool output_is_gguf(const char *out); /* a GGUF file output */
/* Refuses an output path that is one of the inputs (or one of their shard files). */
int output_check_distinct(const char *out, const acem_checkpoint *const *inputs, int n,
                          acem_error *err);
/* Refuses an existing output unless force; creates the temporary (directory). */
int output_begin(output *o, const char *out, bool force, acem_error *err);
/* Copies the base directory's non-weight files (config.json, tokenizer, ...). */
int output_copy_aux_files(const output *o, const char *base_dir, size_t *copied, acem_error *err);
int output_commit(output *o, acem_error *err);
void output_abort(output *o);

#endif
