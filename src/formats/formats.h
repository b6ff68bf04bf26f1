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

/* GGUF: limits on the key-values and tensor infos before the data section. */
#define ACEM_GGUF_MAX_HEADER  (256ULL << 20)
#define ACEM_GGUF_MAX_KV      1000000u
#define ACEM_GGUF_MAX_STRING  (64ULL << 20)
#define ACEM_GGUF_MAX_NAME    4096u
#define ACEM_GGUF_MAX_NESTING 8
#define ACEM_GGUF_ALIGNMENT   32u

/* One parsed header (safetensors or GGUF). Tensors are sorted by data offset; names are
 * owned. meta_* are the metadata as text (GGUF values rendered for display). */
typedef struct st_header {
    acem_tensor *tensors;
    size_t n_tensors;
    char **meta_keys, **meta_values;
    size_t n_meta;
    /* GGUF only: the key-value section as stored, kv_at[i] the start of key-value i in it
     * (kv_at[n_kv] == kv_len), so that a GGUF output can carry them over verbatim. */
    unsigned char *kv_raw;
    uint64_t kv_len;
    uint64_t *kv_at;
    uint32_t alignment; /* 0 when not GGUF */
    /* PyTorch only (or NULL): per tensor, a strided view (views[i].strided) of the storage
     * starting at views[i].base; such tensors are gathered when read. */
    struct tensor_view *views;
} st_header;

typedef struct tensor_view {
    bool strided;
    uint64_t base, span; /* file offset of the view's element 0; storage elements spanned */
    uint64_t stride[ACEM_MAX_DIMS];
} tensor_view;

/* Reads and validates the header of the open file `fd` (size `file_size`); `file` is the
 * shard index stored in each tensor. Every rule of the format is checked here. */
int st_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                   acem_error *err);
void st_header_free(st_header *h);

/* The same for a GGUF file (v2 or v3, little-endian): key-values of every type, tensor
 * infos, general.alignment, offsets exactly where ggml puts them. */
int gguf_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                     acem_error *err);
/* ggml_n_dims (ggml.c) of a row-major shape: its axes from the first one of more than one
 * element on (ggml does not count trailing ne[i] <= 1), at least 1. */
static inline int gguf_n_dims(int ndim, const uint64_t *shape) {
    int first = 0;
    while (first < ndim && shape[first] <= 1)
        first++;
    return ndim - first > 1 ? ndim - first : 1;
}
/* ggml's plain element types: F32, F16, BF16, F64, I8, I16, I32, I64 (ACEM_DT_NONE / -1
 * for the others). */
acem_dtype gguf_plain_dtype(uint32_t ggml_type);
int64_t gguf_plain_type(acem_dtype dt);
/* The base checkpoint's GGUF header, or NULL when it is not a GGUF file. */
const st_header *acem_checkpoint_gguf(const acem_checkpoint *ck);
/* Reads stored bytes [from, from + n) of t: its blocks as they are on disk. */
int acem_checkpoint_read_stored(const acem_checkpoint *ck, const acem_tensor *t, uint64_t from,
                                void *dst, uint64_t n, acem_error *err);

/* ---- PyTorch zip checkpoints (zip.c, pickle.c, torch_read.c) ---- */

typedef struct zip_entry {
    char *name;
    uint64_t header, data, size; /* local header and data offsets, data size */
    uint32_t crc;
} zip_entry;

typedef struct zip_archive {
    zip_entry *entries; /* sorted by name */
    size_t n, cap;
} zip_archive;

int zip_open(const char *path, int fd, uint64_t size, zip_archive *z, acem_error *err);
const zip_entry *zip_find(const zip_archive *z, const char *name);
uint32_t zip_crc32(const unsigned char *p, size_t n);
void zip_free(zip_archive *z);

/* One tensor of a torch state_dict: a view of storage `key` (numel elements of dtype). */
typedef struct torch_ref {
    char *name, *key;
    acem_dtype dtype;
    uint64_t storage_numel, offset;
    int ndim;
    uint64_t size[ACEM_MAX_DIMS], stride[ACEM_MAX_DIMS];
} torch_ref;

#define ACEM_PICKLE_MAX_BYTES (256ULL << 20)
#define ACEM_PICKLE_MAX_MEMO  (1u << 20)
#define ACEM_PICKLE_MAX_STACK (1u << 20)
#define ACEM_PICKLE_MAX_MARKS 1000u

/* Runs the restricted unpickler over data.pkl: only the opcodes and globals a state_dict
 * needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter,
 * torch.*Storage as persistent ids); nothing is ever executed. */
int pickle_state_dict(const char *path, const unsigned char *buf, size_t len, torch_ref **out,
                      size_t *n, acem_error *err);
void torch_refs_free(torch_ref *refs, size_t n);

/* A zip checkpoint of torch.save (PyTorch >= 1.6) as a header: contiguous tensors point at
 * their storage's bytes; other views carry their strides in h->views. */
int torch_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                      acem_error *err);

/* ---- ggml block quantisation (quant.c) ---- */
uint32_t acem_quant_ggml_type(acem_quant q);
acem_quant acem_quant_from_ggml(uint32_t type); /* ACEM_QUANT_NONE if not a known quant */
uint32_t acem_quant_block_elems(acem_quant q);
uint32_t acem_quant_block_bytes(acem_quant q);
bool acem_quant_writable(acem_quant q); /* a known quantisation: all have quantisers */
/* Stored bytes of numel values; false when numel is not whole blocks or on overflow. */
bool acem_quant_stored_bytes(acem_quant q, uint64_t numel, uint64_t *bytes);
/* Bytes that elements [i, i + n) of t take in its file (n whole blocks when quantised). */
uint64_t acem_stored_bytes_of(const acem_tensor *t, uint64_t n);
void acem_dequantize(acem_quant q, const void *blocks, float *dst, size_t n_blocks);
void acem_quantize(acem_quant q, const float *src, void *blocks, size_t n_blocks);
/* Index of the first value of the first block whose scale is NaN/Inf, or -1. */
int64_t acem_quant_first_nonfinite(acem_quant q, const void *blocks, size_t n_blocks);

/* The unsigned little-endian integer in p[0..n), n <= 8. */
static inline uint64_t acem_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Validates that buf[0..len) is UTF-8 (no overlongs, surrogates or code points > 10FFFF). */
bool acem_utf8_valid(const unsigned char *buf, size_t len);

/* The error for a JSON text of len bytes that cJSON did not parse: cJSON answers NULL for
 * bad JSON and for a failed allocation alike, so memory for a copy of the text is probed
 * to tell "out of memory" from `invalid`. Returns -1. */
int acem_json_error(const char *path, size_t len, const char *invalid, acem_error *err);

/* A file of a model directory reached through a link must stay inside the directory (or
 * the Hugging Face cache repository holding it): -1 with err set otherwise. */
int acem_check_model_link(const char *dir, const char *path, acem_error *err);
/* A regular file of at most limit bytes, NUL-terminated (*len without the NUL). */
char *acem_read_small_file(const char *path, uint64_t limit, size_t *len, acem_error *err);

/* ---- PEFT LoRA adapters (lora.c) ---- */

/* The adapter directory applied to ck's tensors, or NULL. */
const char *acem_checkpoint_adapter(const acem_checkpoint *ck);

typedef struct lora lora;
/* What an adapter does to one tensor of the model: full replaces it (modules_to_save, a
 * trained bias, an embedding PEFT saved with save_embedding_layers), and a and b, when
 * set, are its lora_A and lora_B, added as s B A (transposed when `transposed`:
 * fan_in_fan_out, embeddings). */
typedef struct lora_use {
    const acem_tensor *a, *b, *full;
    bool transposed;
} lora_use;
/* adapter_config.json's base_model_name_or_path (NULL when absent). */
int lora_base_model(const char *dir, char **base, acem_error *err);
/* Reads the adapter in dir and binds each of its tensors to model's: every shape, name and
 * setting checked, unsupported kinds refused. */
int lora_open(const char *dir, const acem_checkpoint *model, lora **out, acem_error *err);
void lora_close(lora *l);
const char *lora_dir(const lora *l);
/* The change to model tensor number `tensor`, or NULL when the adapter leaves it alone. */
const lora_use *lora_use_of(const lora *l, size_t tensor);
/* Elements [e0, e0 + n) of the adapted tensor w: v holds the model's values on entry
 * (unless u->full, which replaces them) and the adapted ones on return, in double.
 * Thread-safe. */
int lora_values(const lora *l, const lora_use *u, const acem_tensor *w, uint64_t e0, uint64_t n,
                double *v, acem_error *err);

/* pread until done; -1 with err set on failure or a short file. */
int acem_pread_full(int fd, const char *path, void *dst, uint64_t n, uint64_t off, acem_error *err);

/* ---- writing ---- */

/* One output tensor. Its type is one value: `type`, or, for ACEM_OUT_KEEP, the stored type of
 * `src` (whose stored bytes the caller then writes unchanged: values, or blocks). The
 * caller writes a float type's values, or F32 values for a block type, which the writer
 * quantises. Sizes follow from the type and shape alone, so the header and the data
 * cannot disagree. */
/* How a GGUF writer lays out a tensor's values (convert_hf_to_gguf.py's changes to a Hugging
 * Face tensor): as fed; not written at all (buffers llama.cpp has no use for); fed as the
 * transpose of `shape` (rows x cols fed as cols x rows: GPT-2's Conv1D weights); or each of
 * n_head groups of rows reordered from halves to adjacent pairs (LlamaModel.permute). */
typedef enum out_layout { OUT_AS_FED, OUT_DROPPED, OUT_TRANSPOSED, OUT_ROPE_PAIRS } out_layout;

typedef struct st_out_tensor {
    const char *name;
    int ndim;
    const uint64_t *shape; /* as stored */
    acem_out_type type;
    const acem_tensor *src; /* for ACEM_OUT_KEEP */
    out_layout layout;      /* GGUF only */
    uint32_t n_head;        /* OUT_ROPE_PAIRS */
} st_out_tensor;

/* Element type and block type the file declares for t (quant NONE for plain types). */
acem_dtype out_tensor_dtype(const st_out_tensor *t);
acem_quant out_tensor_quant(const st_out_tensor *t);
/* Bytes of t in the file, and bytes the caller writes for it; false on overflow or rows
 * that do not split into the blocks. */
bool out_tensor_stored_bytes(const st_out_tensor *t, uint64_t *bytes);
bool out_tensor_fed_bytes(const st_out_tensor *t, uint64_t *bytes);

/* The writer's split of tensors (their sizes in order) into shards: a shard closes when the
 * next tensor would pass max_shard (0: one file). Returns the count; shard_of[i] for each. */
size_t st_shard_split(const uint64_t *nbytes, size_t n, uint64_t max_shard, size_t *shard_of);
/* "model.safetensors", or "model-0000i-of-0000N.safetensors" for shard i of N > 1. */
void st_shard_name(size_t i, size_t n_shards, char *buf, size_t len);

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

/* GGUF v3 output to file_path: the key-values of `from` (a GGUF base, or NULL) less any
 * acem.* keys, then meta as acem.KEY strings, tensor infos, and data aligned as ggml
 * expects. general.file_type is `ftype` (a llama_ftype), or with -1 named from the tensors'
 * types. The same streaming contract as st_writer. */
typedef struct gguf_writer gguf_writer;
int gguf_writer_open(const char *file_path, const st_out_tensor *tensors, size_t n,
                     const st_header *from, int64_t ftype, const acem_param *meta, size_t n_meta,
                     gguf_writer **out, acem_error *err);
int gguf_writer_write(gguf_writer *w, const void *data, uint64_t n, acem_error *err);
int gguf_writer_finish(gguf_writer *w, acem_error *err);
void gguf_writer_free(gguf_writer *w);

#endif
