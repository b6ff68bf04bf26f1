/* internal.h — helpers shared by the library's modules (not part of the public API). */
#ifndef ACEM_INTERNAL_H
#define ACEM_INTERNAL_H

#include "acem.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ACEM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ACEM_PRINTF(a, b)
#endif

/* Sets err->msg (if err is non-NULL) and returns -1, so that `return acem_fail(...)`. */
int acem_fail(acem_error *err, const char *fmt, ...) ACEM_PRINTF(2, 3);

/* Overflow-checked arithmetic on sizes: return false on overflow. */
static inline bool acem_mul_u64(uint64_t a, uint64_t b, uint64_t *r) {
    return !__builtin_mul_overflow(a, b, r);
}
static inline bool acem_add_u64(uint64_t a, uint64_t b, uint64_t *r) {
    return !__builtin_add_overflow(a, b, r);
}

/* Returns -1 after making sure err's message names path (an allocation failure deep in a
 * parser does not know the file it was reading). */
int acem_fail_naming(acem_error *err, const char *path);

/* A model reference resolved to local paths (src/formats/refs.c, docs/config.md): a path,
 * a Hugging Face id in the local cache (org/name[@revision]), MODEL+ADAPTER or a PEFT
 * adapter directory alone. model: the model's path; adapter: a LoRA adapter directory to
 * apply to it, or NULL. Relative paths are taken from dir (NULL: the working directory). */
typedef struct acem_ref {
    char *model, *adapter;
} acem_ref;
int acem_ref_resolve(const char *ref, const char *dir, acem_ref *out, acem_error *err);
/* "MODEL" or "MODEL+ADAPTER": a reference that resolves to the same paths again. */
char *acem_ref_text(const acem_ref *r, acem_error *err);
void acem_ref_free(acem_ref *r);

/* malloc/calloc that report failure through err with what was being allocated. */
void *acem_alloc(size_t n, size_t size, const char *what, acem_error *err);
char *acem_strdup(const char *s, acem_error *err);

/* The warnings of one run, through one channel: each goes to the caller's callback and
 * is kept (for the report); under o->strict it is an error instead. */
typedef struct acem_warnings {
    const acem_merge_options *o;
    char **msgs;
    size_t n;
} acem_warnings;
/* Returns 0 after passing the warning on, -1 (err set) under strict or out of memory. */
int acem_warn(acem_warnings *w, acem_error *err, const char *fmt, ...) ACEM_PRINTF(3, 4);
void acem_warnings_free(acem_warnings *w);

/* v in the fewest significant digits that read back as v ("0.2", not "0.20000000000000001"),
 * so that a resolved parameter written into a config rebuilds the same merge. */
const char *acem_format_double(double v, char *buf, size_t len);

/* Monotonic seconds. */
double acem_now(void);

/* The hot element-wise loops (conversions, the linear merge's accumulation) are compiled
 * twice, for AVX2 and for baseline x86-64, and the loader picks one per machine (GCC's
 * function multiversioning): a distributed binary cannot assume -mavx2. The AVX2 clone has
 * no FMA, so results are bitwise the same either way. OpenMP-outlined loop bodies are not
 * cloned: cloned kernels take a range and parallel callers split it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACEM_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ACEM_SIMD_CLONES
#endif

/* Conversions between stored bytes and the compute type (F32 or F64). from_raw returns
 * the index of the first non-finite value, or -1 if all are finite (checked only when
 * check_finite). */
int64_t acem_convert_from_raw(const void *raw, acem_dtype dt, void *dst, acem_dtype compute,
                              size_t n, bool check_finite);
void acem_convert_to_raw(const void *src, acem_dtype compute, void *raw, acem_dtype dt, size_t n);
/* parallel: an OpenMP loop, else serial (for callers already inside a parallel region). */
void acem_combine_to_raw(const void *w0, const void *delta, double lambda, acem_dtype compute,
                         void *raw, acem_dtype dt, size_t n, bool parallel);
int64_t acem_first_nonfinite_raw(const void *raw, acem_dtype dt, size_t n);

/* Counter-based random numbers (splitmix64 finaliser): a pure function of the key. */
uint64_t acem_mix64(uint64_t x);
uint64_t acem_fnv1a64(const char *s);
/* Uniform in [0,1) for element i of expert t of tensor `name_hash` under `seed`. */
uint64_t acem_rng_key(uint64_t seed, uint64_t name_hash, uint64_t t);
static inline double acem_rng_uniform(uint64_t key, uint64_t i) {
    return (double)(acem_mix64(key ^ acem_mix64(i)) >> 11) * 0x1.0p-53;
}

/* True when path names an existing directory. */
bool acem_is_dir(const char *path);
/* True when path resolves inside model_dir, or inside the Hugging Face cache repository
 * holding it (model_dir is <repo>/snapshots/<rev>[/sub], whose links point into
 * <repo>/blobs): the only places a link in a model directory may lead. */
bool acem_path_within_model(const char *model_dir, const char *path);
/* Joins dir and name into a fresh string. */
char *acem_path_join(const char *dir, const char *name, acem_error *err);

#endif
