/*
 * acem.h — the one public header of libacem, a data-free model-merging library.
 *
 * The pipeline: checkpoints (safetensors files or Hugging Face directories) are opened and
 * fully validated, a plan assigns each tensor a rule (merge / copy from base), and the
 * merge streams tensor by tensor: read base + T experts, form deltas Dt = Wt - W0, apply
 * the method, write W0 + lambda * Delta. Memory stays bounded by a few tensors.
 *
 * Every function that can fail returns 0 on success and non-zero on failure, with one
 * human-readable sentence in the caller's acem_error naming the file and the problem.
 */
#ifndef ACEM_H
#define ACEM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ACEM_VERSION  "0.1.0"
#define ACEM_MAX_DIMS 8

typedef struct acem_error {
    char msg[1024];
} acem_error;

/* Element types of safetensors, in the format's spelling order. */
typedef enum acem_dtype {
    ACEM_DT_BOOL,
    ACEM_DT_U8,
    ACEM_DT_I8,
    ACEM_DT_F8_E5M2,
    ACEM_DT_F8_E4M3,
    ACEM_DT_I16,
    ACEM_DT_U16,
    ACEM_DT_F16,
    ACEM_DT_BF16,
    ACEM_DT_I32,
    ACEM_DT_U32,
    ACEM_DT_F32,
    ACEM_DT_F64,
    ACEM_DT_I64,
    ACEM_DT_U64,
    ACEM_DT_COUNT,
    ACEM_DT_NONE = -1
} acem_dtype;

const char *acem_dtype_name(acem_dtype dt);        /* "F32", ... */
acem_dtype acem_dtype_from_name(const char *name); /* ACEM_DT_NONE if unknown */
size_t acem_dtype_size(acem_dtype dt);
int acem_dtype_is_mergeable(acem_dtype dt); /* F64, F32, F16, BF16 */

/* GGUF block-quantised storage. A tensor stored so has dtype F32 (the values it
 * dequantises to; acem_checkpoint_read returns those) and quant naming its blocks. */
typedef enum acem_quant {
    ACEM_QUANT_NONE,
    ACEM_QUANT_Q8_0, /* 32 values: f16 scale d, 32 int8; x = q * d */
    ACEM_QUANT_Q4_0, /* 32 values: f16 d, 16 bytes of nibbles; x = (q - 8) * d */
    ACEM_QUANT_Q4_K, /* 256 values in 8 sub-blocks with 6-bit scales and mins; 4-bit codes */
    ACEM_QUANT_Q6_K, /* 256 values in 16 sub-blocks with int8 scales */
    ACEM_QUANT_Q5_K, /* as Q4_K with 5-bit codes */
    ACEM_QUANT_Q5_0, /* 32 values: f16 d, 32 fifth bits, 16 bytes of nibbles; x = (q - 16) * d */
    ACEM_QUANT_Q5_1, /* 32 values: f16 d, f16 m, fifth bits, nibbles; x = q * d + m */
    ACEM_QUANT_Q2_K, /* 256 values in 16 sub-blocks with 4-bit scales and mins; 2-bit codes */
    ACEM_QUANT_Q3_K, /* 256 values in 16 sub-blocks with 6-bit scales; 3-bit codes */
    ACEM_QUANT_Q8_K, /* 256 values: f32 d, 256 int8, 16 int16 sums; x = q * d */
    ACEM_QUANT_COUNT
} acem_quant;

const char *acem_quant_name(acem_quant q);  /* "Q8_0", ...; "" for ACEM_QUANT_NONE */
acem_quant acem_quant_parse(const char *s); /* "q8_0" / "Q8_0", ...; ACEM_QUANT_NONE if not */

/* The type an output stores a floating-point tensor as: one value, a float element type or
 * a GGUF block type, never both. ACEM_OUT_KEEP: as the base stores it (blocks included,
 * where the output format holds them). */
typedef enum acem_out_type {
    ACEM_OUT_KEEP,
    ACEM_OUT_F64,
    ACEM_OUT_F32,
    ACEM_OUT_F16,
    ACEM_OUT_BF16,
    ACEM_OUT_Q8_0,
    ACEM_OUT_Q4_0,
    ACEM_OUT_Q4_K,
    ACEM_OUT_Q5_K,
    ACEM_OUT_Q6_K,
    ACEM_OUT_Q5_0,
    ACEM_OUT_Q5_1,
    ACEM_OUT_Q2_K,
    ACEM_OUT_Q3_K,
    ACEM_OUT_Q8_K,
    /* llama-quantize's mixes (see acem_out_type_mix): an option value only, which the plan
     * turns into each tensor's type; never the type of a tensor. */
    ACEM_OUT_Q4_K_S,
    ACEM_OUT_Q4_K_M,
    ACEM_OUT_Q5_K_S,
    ACEM_OUT_Q5_K_M,
    ACEM_OUT_Q3_K_S,
    ACEM_OUT_Q3_K_M,
    ACEM_OUT_Q3_K_L,
    ACEM_OUT_COUNT,
    ACEM_OUT_INVALID = -1
} acem_out_type;

/* "f16", "bf16", "float32", "q4_k", "Q8_0", "q4_k_m", ... as a user types them;
 * ACEM_OUT_INVALID if unknown. */
acem_out_type acem_out_type_parse(const char *s);
/* Why a name acem_out_type_parse does not take is refused, for the mixes llama-quantize
 * itself runs only with an importance matrix (Q2_K_S); NULL for other names. */
const char *acem_out_type_refused(const char *s);
const char *acem_out_type_name(acem_out_type t); /* "F16", "Q4_K", ...; "as the base" */
/* The float type an output type stores, or ACEM_DT_NONE for a block type / KEEP. */
acem_dtype acem_out_type_dtype(acem_out_type t);
/* The block type an output type stores (a mix: its default type, llama.cpp's
 * llama_ftype_get_default_type), or ACEM_QUANT_NONE. */
acem_quant acem_out_type_quant(acem_out_type t);
/* The output type that stores blocks of q (ACEM_OUT_KEEP for ACEM_QUANT_NONE). */
acem_out_type acem_out_type_of_quant(acem_quant q);

/* llama-quantize's mixes, valued as llama.h's llama_ftype: each picks every tensor's type by
 * llama.cpp's rules from its name, layer and shape. */
typedef enum acem_llama_ftype {
    ACEM_FTYPE_NONE = 0,
    ACEM_FTYPE_Q4_0 = 2, /* LLAMA_FTYPE_MOSTLY_Q4_0 */
    ACEM_FTYPE_Q8_0 = 7, /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    ACEM_FTYPE_Q2_K = 10,
    ACEM_FTYPE_Q3_K_S = 11,
    ACEM_FTYPE_Q3_K_M = 12,
    ACEM_FTYPE_Q3_K_L = 13,
    ACEM_FTYPE_Q4_K_S = 14,
    ACEM_FTYPE_Q4_K_M = 15,
    ACEM_FTYPE_Q5_K_S = 16,
    ACEM_FTYPE_Q5_K_M = 17,
    ACEM_FTYPE_Q6_K = 18
} acem_llama_ftype;

/* The mix an output type asks for: Q4_K_S, Q4_K_M, Q5_K_S and Q5_K_M always (they need a GGUF
 * base with llama.cpp's architecture keys); Q4_0, Q8_0 and Q6_K on such a base (elsewhere they
 * are the plain block types); ACEM_FTYPE_NONE for the others. */
acem_llama_ftype acem_out_type_mix(acem_out_type t);

/* "f32", "F32", "float32", "bf16", ... as a user types them; ACEM_DT_NONE if unknown. */
acem_dtype acem_dtype_parse(const char *s);
/* A size into bytes; -1 if malformed. Units as Hugging Face (and coreutils) read them,
 * in any letter case: "5GB" is 5*10^9 bytes, "5GiB" and "5G" are 5*2^30; likewise K, M
 * and T. A bare number is bytes. */
int acem_parse_size(const char *s, uint64_t *bytes);

/* "1.5 GiB" style sizes into buf. */
const char *acem_format_bytes(uint64_t n, char *buf, size_t len);

/* Scalar conversions (round-to-nearest-even; NaN stays NaN, overflow gives Inf). */
float acem_f16_to_f32(uint16_t h);
uint16_t acem_f32_to_f16(float f);
float acem_bf16_to_f32(uint16_t b);
uint16_t acem_f32_to_bf16(float f);

/* ---- checkpoints ---------------------------------------------------------------- */

typedef struct acem_tensor {
    const char *name;
    acem_dtype dtype;
    int ndim;
    uint64_t shape[ACEM_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;
    int file;         /* index of the shard holding it */
    uint64_t offset;  /* absolute byte offset of its data in that shard */
    acem_quant quant; /* GGUF block quantisation of the stored bytes, or ACEM_QUANT_NONE */
} acem_tensor;

/* Bytes a tensor takes in its file: nbytes, or the size of its blocks when it is stored
 * block-quantised (nbytes is then the size of its values as F32). */
uint64_t acem_tensor_stored_bytes(const acem_tensor *t);
/* The type as the file stores it: "Q8_0" for a block-quantised tensor, else its dtype. */
const char *acem_tensor_type_name(const acem_tensor *t);

typedef struct acem_checkpoint acem_checkpoint;

/* path: a model reference (docs/config.md): a .safetensors or GGUF file (recognised by its
 * magic), a directory holding model.safetensors or shards plus
 * model.safetensors.index.json (or PyTorch's files), a Hugging Face id in the local cache
 * (org/name[@revision]), MODEL+ADAPTER or a PEFT LoRA adapter directory (the adapted
 * tensors read as merge_and_unload computes them). Everything is validated before this
 * returns; acem_checkpoint_path is then the reference resolved to local paths. */
int acem_checkpoint_open(const char *path, acem_checkpoint **out, acem_error *err);
void acem_checkpoint_close(acem_checkpoint *ck);
const char *acem_checkpoint_path(const acem_checkpoint *ck);
size_t acem_checkpoint_count(const acem_checkpoint *ck);
const acem_tensor *acem_checkpoint_at(const acem_checkpoint *ck, size_t i); /* storage order */
const acem_tensor *acem_checkpoint_find(const acem_checkpoint *ck, const char *name);
const char *acem_checkpoint_file_path(const acem_checkpoint *ck, int file);
size_t acem_checkpoint_file_count(const acem_checkpoint *ck);
/* Reads nbytes raw bytes of tensor t starting at byte `from` of its data. */
int acem_checkpoint_read(const acem_checkpoint *ck, const acem_tensor *t, uint64_t from, void *dst,
                         uint64_t nbytes, acem_error *err);
/* __metadata__ of the (first) file, or a GGUF file's key-values shown as text. */
size_t acem_checkpoint_metadata_count(const acem_checkpoint *ck);
void acem_checkpoint_metadata_at(const acem_checkpoint *ck, size_t i, const char **key,
                                 const char **value);

/* Writes tensors to one .safetensors file atomically (temporary name, then rename);
 * an existing file is replaced. Used by `acem example` and the lab to save models. */
typedef struct acem_tensor_data {
    const char *name;
    acem_dtype dtype;
    int ndim;
    const uint64_t *shape;
    const void *data; /* numel * dtype size bytes, row-major */
} acem_tensor_data;

typedef struct acem_param acem_param;
int acem_save_safetensors(const char *path, const acem_tensor_data *tensors, size_t n,
                          const acem_param *metadata, size_t n_meta, acem_error *err);

/* ---- files acem writes ------------------------------------------------------------
 * Every file acem writes follows one set of rules (SECURITY.md): never one of the run's
 * inputs (a model file, a model directory or any file in one, a Gram file, a config) nor
 * another output of the same run; an existing one is replaced only with force; written
 * under a temporary name beside it, locked against a concurrent run to the same path,
 * and renamed into place when complete. acem_merge applies them to its own outputs; a
 * program writing files of its own (acem stats' tables, the lab's results) uses these. */
typedef struct acem_outputs acem_outputs;
int acem_outputs_new(acem_outputs **s, acem_error *err);
/* A file, or a directory together with every file in it; a model reference (a Hugging
 * Face id, MODEL+ADAPTER) is the paths it names. */
int acem_outputs_add_input(acem_outputs *s, const char *path, acem_error *err);
/* Checks path against the rules now (before any heavy work) and creates its temporary. */
int acem_outputs_claim(acem_outputs *s, const char *path, int force, acem_error *err);
/* The whole content of a claimed path: written, synced, renamed into place. */
int acem_outputs_write(acem_outputs *s, const char *path, const void *data, size_t n,
                       acem_error *err);
/* Removes the temporaries of claimed paths that were not written. */
void acem_outputs_free(acem_outputs *s);
/* A working directory that a command of acem fills with files of its own and that later
 * runs regenerate in place (acem example's models, the lab's checkpoints and tables),
 * owner naming the command ("acem lab"). Created with a marker file when missing; an
 * existing directory is used only when it is empty or holds owner's marker, otherwise it
 * is the user's and refused untouched. */
int acem_workdir_claim(const char *dir, const char *owner, acem_error *err);

/* ---- merging -------------------------------------------------------------------- */

struct acem_param {
    const char *key;
    const char *value;
};

typedef enum acem_phase { ACEM_PHASE_PLAN, ACEM_PHASE_MERGE, ACEM_PHASE_DONE } acem_phase;

typedef struct acem_progress {
    acem_phase phase;
    size_t tensors_done, tensors_total;
    uint64_t bytes_done, bytes_total; /* bytes read from all inputs */
    const char *tensor;               /* the tensor being worked on */
} acem_progress;

typedef void (*acem_progress_fn)(void *user, const acem_progress *p);

/* One line of a dry run's plan: a tensor of the output (tensor set) or a file the merge
 * would write (tensor NULL). */
typedef struct acem_plan_line {
    const char *tensor;
    const char *path;   /* the file: for a tensor, the one that would hold it */
    const char *action; /* "merged by ties", "copied: not a floating-point tensor", ...;
                           for a file: what it is ("weights", "shard index", "model card") */
    const char *type;   /* the stored type it would have: "F16", "Q4_K", "I64"; "" for files */
    int ndim;
    const uint64_t *shape;
    uint64_t bytes; /* in the output (0 where not known before writing: copied files) */
} acem_plan_line;

typedef void (*acem_plan_fn)(void *user, const acem_plan_line *line);

/* A warning: something acem accepts but that is probably not what was meant (tensors an
 * expert has and the base lacks, an --exclude that matches nothing, the same expert given
 * twice, ...). One sentence naming what it is about, without a prefix. */
typedef void (*acem_warning_fn)(void *user, const char *message);

/* Method parameters as a YAML config gives them (per model and top-level, values that are
 * numbers, gradients over the layers or filtered by tensor name): built by acem_config_load,
 * read per tensor by acem_merge (docs/config.md). */
typedef struct acem_settings acem_settings;

/* One entry of mergekit's tokenizer.tokens (tokenizer/config.py, TokenEmbeddingConfig): the
 * token's embedding row in models that lack it (every model when force) is a model's row
 * of the same token (model set, source_token NULL, source_id -1), a model's row of another
 * token or id (kind model_token), or zeros (model NULL). A token the output vocabulary
 * lacks is added to it. */
typedef struct acem_token_spec {
    const char *token;
    const char *model;
    const char *source_token;
    long long source_id;
    int force;
} acem_token_spec;

typedef struct acem_merge_options {
    const char *base;
    const char *const *models;
    int n_models;
    const char *method;
    double lambda;            /* NaN: the method's default */
    const acem_param *params; /* every expert's value; a YAML config's per-model value wins */
    int n_params;
    const acem_settings *settings; /* a YAML config's parameters, or NULL */
    const char *const *excludes;   /* POSIX extended regexes, searched in the tensor name */
    int n_excludes;
    const char *preset;      /* gpt2|bert|roberta|llama|clip-vit or NULL */
    const char *out;         /* ends in .safetensors or .gguf: one file; else a directory */
    acem_out_type out_type;  /* float tensors' stored type; block types need a .gguf output
                                and apply to tensors of 2+ axes whose rows split into blocks;
                                a mix (acem_out_type_mix) picks each tensor's type */
    acem_dtype precision;    /* compute type, ACEM_DT_F32 (default) or ACEM_DT_F64 */
    int threads;             /* 0: all cores */
    uint64_t max_shard_size; /* 0: no sharding */
    uint64_t seed;
    int force;           /* replace an existing output */
    int allow_nonfinite; /* skip the NaN/Inf checks on inputs and merged outputs */
    /* Covariance methods build covariances over the stored column axis (0, as the ACE
     * reference) or, with 1, over the input axis: GPT-2 Conv1D tensors (stored in x out)
     * are transposed when preset is gpt2 or the base's config.json says model_type gpt2. */
    int covariance_axis_input;
    /* Warnings are all found before anything is written. Each goes to warning (when set)
     * and into the report; with strict, the first one fails the merge instead. */
    acem_warning_fn warning;
    void *warning_user;
    int strict;
    const char *report_path; /* JSON run report, or NULL */
    const char *config_path; /* the YAML these options came from (an input), or NULL */
    /* mergekit's tokenizer keys (docs/config.md): where the output's vocabulary and tokenizer
     * files come from ("base" or a model directory; NULL: the base's files, no remapping),
     * the vocabulary rounded up to a multiple of pad_to_multiple_of (0: not), and a chat
     * template ("auto", a builtin name or Jinja text) for tokenizer_config.json. */
    const char *tokenizer_source;
    int pad_to_multiple_of;
    const acem_token_spec *tokens;
    int n_tokens;
    const char *chat_template;
    /* regmean: Gram matrices per expert; grams[t] (or NULL) belongs to models[t]. */
    const char *const *grams;
    acem_progress_fn progress;
    void *progress_user;
    /* Dry run: every input's header is read and validated, every rule of the outputs checked,
     * and plan is called for every tensor and every file the merge would write; no tensor
     * data is read and nothing is written. */
    int dry_run;
    acem_plan_fn plan;
    void *plan_user;
    volatile sig_atomic_t *cancel; /* checked between chunks; non-zero aborts cleanly */
} acem_merge_options;

void acem_merge_options_init(acem_merge_options *o);

/* Checks what can be checked of o without opening a file: the method (when set) and its
 * parameters, lambda, the dtypes, the preset and the exclusion regexes. This is what tells
 * a usage error from any other failure: the options are wrong exactly when this fails
 * (the CLI then exits 2). acem_merge and acem_stats run it first. */
int acem_check_options(const acem_merge_options *o, acem_error *err);

typedef struct acem_merge_summary {
    char method[32];
    char merged[96];  /* what was merged, in words: "3 experts", "2 models", "3 slices of 2
                         models into 40 layers" */
    char params[512]; /* resolved parameters, "lambda=0.3 density=0.2" */
    size_t tensors_merged, tensors_copied;
    size_t shards;
    uint64_t bytes_read, bytes_written;
    double wall_seconds;
    size_t warnings; /* tensors for which the method reported a warning */
    char first_warning[256];
    size_t input_warnings;   /* warnings passed to acem_merge_options.warning */
    char covariance_axis[8]; /* axis the covariances ran over: "stored", "input", or "none"
                                when the method builds none */
    size_t gram_fallbacks;   /* regmean: 2-D tensors merged as the average of the deltas
                                because some expert has no Gram matrix for them */
    uint64_t buffer_bytes;   /* the merge's tensor buffers (a dry run computes them too) */
    uint64_t workspace_n;    /* covariance and spectral methods: the largest n of their n x n
                                double workspaces (a few of them per tensor), else 0 */
} acem_merge_summary;

/* Runs a whole merge. On failure nothing is left at o->out (an existing output is kept). */
int acem_merge(const acem_merge_options *o, acem_merge_summary *summary, acem_error *err);

/* Per 2-D tensor statistics of the deltas (acem stats): what ACE sees. */
typedef struct acem_tensor_stats {
    const char *name;
    uint64_t rows, cols;
    int T;
    double gamma;        /* ACE's heterogeneity (ace-merging.md step 1) */
    int hetero;          /* gamma > threshold: the branch ACE takes */
    const double *norm;  /* T values: ||Dt||_F */
    const double *erank; /* T values: effective rank exp(H), H the entropy of sigma / sum sigma */
} acem_tensor_stats;

typedef int (*acem_stats_fn)(void *user, const acem_tensor_stats *s);

/* Streams base + models (o->base, o->models, o->excludes, o->preset, o->threads,
 * o->precision are used) and calls fn for every 2-D floating-point tensor that a merge
 * would merge. A non-zero return from fn stops the walk with that status. */
int acem_stats(const acem_merge_options *o, double threshold, acem_stats_fn fn, void *user,
               acem_error *err);

/* Methods known to the library, for --help. */
size_t acem_method_count(void);
const char *acem_method_name(size_t i);
const char *acem_method_describe(size_t i);    /* one line: formula and parameters */
int acem_method_takes(size_t i, int n_models); /* 1 when method i merges n_models experts */
/* True for a method that merges the models' weights, not deltas (linear): it needs no base
 * (the first model names the tensors); 0 otherwise. */
int acem_method_merges_weights(const char *name);

/* ---- YAML configuration --------------------------------------------------------- */

/* Owns every string the options point to. Relative paths in the file (base, models,
 * grams, output, report) are taken from the file's directory; path must name a regular
 * file (a FIFO is refused, not waited on). Schema: docs/config.md. */
typedef struct acem_config acem_config;
int acem_config_load(const char *path, acem_config **out, acem_merge_options *o, acem_error *err);
void acem_config_free(acem_config *c);
/* mergekit-multi: a file of several YAML documents ("---" between them), each a merge. Every
 * document but the final merge has a `name:` (or an out_path of its own); a named one's merge
 * is written to stage_dir/NAME, and a model reference equal to another document's name is
 * that output. The final merge is the one document without a name, or else the last one
 * that no other reads. acem_config_count gives the number of documents (1 for a plain
 * config; acem_config_load refuses a file of several), acem_config_order the n document
 * indices in the order they must run (each after the merges it reads, the file's order
 * among those ready, the final merge last; a cycle is an error), acem_config_load_stage
 * loads document i (from 0) as acem_config_load loads one, acem_config_name its `name:`
 * (or NULL). */
int acem_config_count(const char *path, size_t *n, acem_error *err);
int acem_config_order(const char *path, size_t *order, size_t n, acem_error *err);
int acem_config_load_stage(const char *path, size_t i, const char *stage_dir, acem_config **out,
                           acem_merge_options *o, acem_error *err);
const char *acem_config_name(const acem_config *c);
/* What reading the config found accepted but probably not meant (keys mergekit ignores):
 * acem_merge passes each to acem_merge_options.warning (an error with strict); a caller that
 * stops before merging shows them itself. n gets the count. */
const char *const *acem_config_warnings(const acem_config *c, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
