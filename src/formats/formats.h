/* formats.h — readers and writers of checkpoint files (internal interface). */
#ifndef ACEM_FORMATS_H
#define ACEM_FORMATS_H

#include "internal.h"

/* Limits on untrusted input, as in the reference safetensors implementation. */
#define ACEM_ST_MAX_HEADER   100000000ULL
#define ACEM_ST_MAX_TENSORS  1000000u
#define ACEM_INDEX_MAX_BYTES 100000000ULL
/* JSON numbers arrive as doubles: integers above 2^53 cannot be represented exactly. */
#define ACEM_JSON_MAX_INT 9007199254740992.0

/* One parsed safetensors header. Tensors are sorted by data offset; names are owned. */
typedef struct st_header {
    acem_tensor *tensors;
    size_t n_tensors;
    char **meta_keys, **meta_values;
    size_t n_meta;
} st_header;

/* Reads and validates the header of the open file `fd` (size `file_size`); `file` is the
 * shard index stored in each tensor. Every rule of the format is checked here. */
int st_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                   acem_error *err);
void st_header_free(st_header *h);

/* Validates that buf[0..len) is UTF-8 (no overlongs, surrogates or code points > 10FFFF). */
bool acem_utf8_valid(const unsigned char *buf, size_t len);

/* The error for a JSON text of len bytes that cJSON did not parse: cJSON answers NULL for
 * bad JSON and for a failed allocation alike, so memory for a copy of the text is probed
 * to tell "out of memory" from `invalid`. Returns -1. */
int acem_json_error(const char *path, size_t len, const char *invalid, acem_error *err);

/* pread until done; -1 with err set on failure or a short file. */
int acem_pread_full(int fd, const char *path, void *dst, uint64_t n, uint64_t off, acem_error *err);

/* ---- writing ---- */

typedef struct st_out_tensor {
    const char *name;
    acem_dtype dtype;
    int ndim;
    const uint64_t *shape;
    uint64_t nbytes;
} st_out_tensor;

typedef struct st_writer st_writer;

/* Plans shards over `tensors` (in order; a new shard starts when the next tensor would
 * pass max_shard_size, 0 = one file), creates the files under dir (or the single file
 * `file_path` when dir is NULL) and writes every header up front. */
int st_writer_open(const char *dir, const char *file_path, const st_out_tensor *tensors, size_t n,
                   uint64_t max_shard_size, const acem_param *meta, size_t n_meta, st_writer **out,
                   acem_error *err);
/* Appends bytes of the current tensor; tensors are written in order. */
int st_writer_write(st_writer *w, const void *data, uint64_t n, acem_error *err);
/* Flushes, fsyncs and closes every shard and writes the index (when sharded). */
int st_writer_finish(st_writer *w, acem_error *err);
size_t st_writer_shards(const st_writer *w);
void st_writer_free(st_writer *w);

#endif
