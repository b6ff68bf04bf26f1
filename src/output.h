/* output.h — every file and directory acem writes, by one set of rules (output.c). */
#ifndef ACEM_OUTPUT_H
#define ACEM_OUTPUT_H

#include "internal.h"

#include <sys/types.h>

typedef enum output_kind { OUTPUT_FILE, OUTPUT_DIR } output_kind;

/* One output being written: a temporary beside the destination, renamed when complete. */
typedef struct output {
    char *final_path; /* as given, less trailing slashes */
    char *tmp_path;   /* being written; NULL once committed or aborted */
    char *lock_path;  /* "<final>.acem-lock", held from begin to commit or abort */
    int lock_fd;
    output_kind kind;
    bool replaces; /* an existing output is replaced at commit (--force) */
    char **made;   /* parent directories created for it, deepest last */
    size_t n_made;
} output;

typedef struct file_id {
    dev_t dev;
    ino_t ino;
} file_id;

/* A run's inputs and outputs: what no output may be. */
struct acem_outputs {
    file_id *inputs; /* every input file, every model directory and every file in one */
    size_t n_inputs, cap_inputs;
    char **input_paths; /* canonical paths of the inputs, to find one inside an output */
    size_t n_input_paths;
    output **outs;
    size_t n_outs;
};
typedef struct acem_outputs output_set;

/* What a model output path asks for: a .safetensors or .gguf file (any case), or a
 * directory; a weight suffix acem cannot write (.bin, .pt, ...) is refused. */
int output_model_kind(const char *out, output_kind *kind, acem_error *err);
bool output_is_file(const char *out);
bool output_is_gguf(const char *out);

/* Adds an input: a file, or a directory with every file in it. */
int output_set_add_input(output_set *s, const char *path, acem_error *err);
/* Adds a checkpoint's path and each of its files (shards may live elsewhere, as blobs). */
int output_set_add_checkpoint(output_set *s, const acem_checkpoint *ck, acem_error *err);
/* Checks every rule for path, takes its lock, removes temporaries of runs that ended,
 * creates missing parent directories and the temporary. The output belongs to the set.
 * dry (--dry-run): the rules are checked and nothing is made, locked or removed. */
int output_begin(output_set *s, const char *path, output_kind kind, bool force, bool dry,
                 output **o, acem_error *err);
/* Moves the finished temporary into place (a directory gets its manifest first). */
int output_commit(output *o, acem_error *err);
/* Removes the temporary and what was created for it. */
void output_abort(output *o);
/* A whole small file (a report, a table): written to the temporary and committed. */
int output_write_whole(output *o, const void *data, size_t n, acem_error *err);
/* Bytes on disk of what was written so far (the temporary, or the committed output). */
uint64_t output_bytes(const output *o);
/* Aborts every output not committed and frees the set's contents. */
void output_set_clear(output_set *s);

/* What became of an entry of the base directory. */
typedef enum output_aux_kind {
    OUTPUT_AUX_COPIED,  /* copied (or, dry, checked) */
    OUTPUT_AUX_OUTSIDE, /* a link out of the model: not followed */
    OUTPUT_AUX_SUBDIR,  /* a subdirectory (1_Pooling/, onnx/): not copied */
} output_aux_kind;
/* Called for each auxiliary entry of the base directory. Non-zero stops the copy. */
typedef int (*output_aux_fn)(void *user, const char *path, output_aux_kind kind, acem_error *err);
/* Copies the base directory's non-weight files (config.json, tokenizer, ...) into a
 * directory output: plain files, and links only where they resolve inside the base
 * directory or the Hugging Face cache repository holding it; never with wider
 * permissions than the source. dry: only check that each can be read (the pre-flight). */
int output_copy_aux_files(const output *o, const char *base_dir, const char *const *skip, bool dry,
                          output_aux_fn note, void *user, acem_error *err);
/* One file of dir into the directory output, under the same rules; nothing when dir lacks
 * it. skip (NULL-terminated, or NULL) above: names not copied from the base. */
int output_copy_aux_file(const output *o, const char *dir, const char *name, bool dry,
                         acem_error *err);

#endif
