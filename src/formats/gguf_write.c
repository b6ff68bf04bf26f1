/* gguf_write.c — writes one GGUF v3 file front to back.
 *
 * Header: "GGUF", version 3, counts; the base's key-values copied byte for byte except
 * those this run writes anew: general.file_type and general.quantization_version (what this
 * file holds, as llama.cpp writes them), then acem.* as strings; tensor infos with ne[0] the last
 * row-major axis and offsets at the aligned running sum of the sizes; zero padding to the
 * alignment. Data: each tensor's stored bytes, then zeros up to the alignment. Tensors
 * stored as blocks receive F32 values that are quantised here a group of blocks at a time,
 * or their blocks unchanged when prequantised. A tensor with a layout (st_out_tensor.layout:
 * llama.cpp's converter's transpose or row permutation) is gathered whole, then stored in the
 * new order; a dropped one is received and not written. The caller writes into a temporary file;
 * making it visible is output.c's job. */
#include "formats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STAGE_ELEMS      65536u /* F32 values quantised per group: a multiple of every block */
#define GGML_TYPE_IDS    64u    /* above every ggml type id (GGML_TYPE_COUNT is 43) */
#define GGML_QNT_VERSION 2u     /* ggml.h: the version of the block formats */

struct gguf_writer {
    const char *path;
    const st_out_tensor *tensors;
    size_t n_tensors, cur;
    FILE *f;
    uint32_t alignment;
    uint64_t left;     /* input bytes the current tensor still expects */
    uint64_t stored;   /* bytes of the current tensor written to the file */
    uint64_t expected; /* the file's size as its header declares it */
    float *stage;      /* F32 input on its way into blocks */
    size_t staged;     /* bytes in stage */
    unsigned char *blocks;
    int64_t ftype;        /* general.file_type given, or -1 */
    unsigned char *whole; /* the current tensor's fed bytes, for a layout */
    unsigned char *row;   /* one reordered row */
    uint64_t whole_len;
};

static int put_bytes(gguf_writer *w, const void *p, size_t n, acem_error *err) {
    if (n && fwrite(p, 1, n, w->f) != n)
        return acem_fail(err, "%s: write failed: %s", w->path, strerror(errno));
    return 0;
}

static int put_uint(gguf_writer *w, uint64_t v, int n, acem_error *err) {
    unsigned char b[8];
    for (int i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    return put_bytes(w, b, (size_t)n, err);
}

static int put_string(gguf_writer *w, const char *s, acem_error *err) {
    size_t n = strlen(s);
    return put_uint(w, n, 8, err) || put_bytes(w, s, n, err) ? -1 : 0;
}

static int put_zeros(gguf_writer *w, uint64_t n, acem_error *err) {
    static const unsigned char zeros[64];
    for (; n > 0; n -= n < 64 ? n : 64)
        if (put_bytes(w, zeros, n < 64 ? (size_t)n : 64, err)) return -1;
    return 0;
}

static uint64_t padding(uint64_t n, uint32_t a) { return (a - n % a) % a; }

static bool dropped(const st_out_tensor *t) { return t->layout == OUT_DROPPED; }

static uint64_t stored_size(const st_out_tensor *t) {
    uint64_t bytes = 0;
    if (!dropped(t)) out_tensor_stored_bytes(t, &bytes); /* checked by ggml_type_of first */
    return bytes;
}

/* The ggml type of t, or an error for what GGUF cannot hold. */
static int ggml_type_of(const char *path, const st_out_tensor *t, uint32_t *type, acem_error *err) {
    acem_quant q = out_tensor_quant(t);
    uint64_t bytes;
    if (t->ndim > 4)
        return acem_fail(err, "%s: tensor \"%s\" has %d dimensions; GGUF holds at most 4", path,
                         t->name, t->ndim);
    if (!out_tensor_stored_bytes(t, &bytes))
        return acem_fail(err, "%s: tensor \"%s\": rows do not split into %s blocks of %u", path,
                         t->name, acem_quant_name(q), acem_quant_block_elems(q));
    if (q != ACEM_QUANT_NONE) {
        *type = acem_quant_ggml_type(q);
        return 0;
    }
    int64_t g = gguf_plain_type(out_tensor_dtype(t));
    if (g < 0)
        return acem_fail(err, "%s: tensor \"%s\" is %s, which GGUF cannot hold", path, t->name,
                         acem_dtype_name(out_tensor_dtype(t)));
    *type = (uint32_t)g;
    return 0;
}

static uint64_t fed_size(const st_out_tensor *t) {
    uint64_t bytes = 0;
    out_tensor_fed_bytes(t, &bytes);
    return bytes;
}

/* The caller writes a block type's F32 values, which are quantised here. */
static bool quantised_here(const st_out_tensor *t) {
    return t->type != ACEM_OUT_KEEP && out_tensor_quant(t) != ACEM_QUANT_NONE;
}

/* llama_ftype (llama.h) of a file whose most common tensor type is ggml type `type`, as
 * llama.cpp's loader names a file that lacks general.file_type (llama_model_loader: K-quants
 * as their _M mixes); -1 for types no llama_ftype names (F64, integers). */
static int64_t ftype_of(uint32_t type) {
    static const uint32_t ftypes[][2] = {
        {0 /* F32 */, 0 /* ALL_F32 */},        {1 /* F16 */, 1 /* MOSTLY_F16 */},
        {30 /* BF16 */, 32 /* BF16 */},        {2 /* Q4_0 */, 2 /* MOSTLY_Q4_0 */},
        {8 /* Q8_0 */, 7 /* Q8_0 */},          {12 /* Q4_K */, 15 /* MOSTLY_Q4_K_M */},
        {6 /* Q5_0 */, 8 /* MOSTLY_Q5_0 */},   {7 /* Q5_1 */, 9 /* MOSTLY_Q5_1 */},
        {13 /* Q5_K */, 17 /* Q5_K_M */},      {14 /* Q6_K */, 18 /* MOSTLY_Q6_K */},
        {10 /* Q2_K */, 10 /* MOSTLY_Q2_K */}, {11 /* Q3_K */, 12 /* MOSTLY_Q3_K_M */}};
    for (size_t i = 0; i < sizeof ftypes / sizeof *ftypes; i++)
        if (ftypes[i][0] == type) return ftypes[i][1];
    return -1;
}

/* general.file_type: the mix's llama_ftype when one chose the types; else the loader's rule (the
 * type that first reaches the largest count, F32 when none), counted over the tensors of 2 or more
 * ggml dimensions, the weights a file is named for (1-D tensors are F32 in every llama.cpp file).
 * Checks every tensor's type. */
static int file_type(const gguf_writer *w, int64_t *ftype, acem_error *err) {
    uint64_t count[GGML_TYPE_IDS] = {0}, most = 0;
    uint32_t top = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const st_out_tensor *t = &w->tensors[i];
        uint32_t type = 0;
        if (dropped(t)) continue;
        if (ggml_type_of(w->path, t, &type, err)) return -1;
        if (gguf_n_dims(t->ndim, t->shape) < 2 || type >= GGML_TYPE_IDS) continue;
        if (++count[type] > most) {
            most = count[type];
            top = type;
        }
    }
    *ftype = w->ftype >= 0 ? w->ftype : ftype_of(top);
    return 0;
}

/* The base's key-values that this run writes anew. */
static bool rewritten(const char *key) {
    return strncmp(key, "acem.", 5) == 0 || strcmp(key, "general.file_type") == 0 ||
           strcmp(key, "general.quantization_version") == 0;
}

static int put_u32_kv(gguf_writer *w, const char *key, uint32_t v, uint64_t *at, acem_error *err) {
    *at += 8 + strlen(key) + 4 + 4;
    return put_string(w, key, err) || put_uint(w, 4 /* uint32 */, 4, err) || put_uint(w, v, 4, err)
               ? -1
               : 0;
}

/* What this file holds, as llama-quantize writes it (src/llama-quant.cpp): the file type and
 * GGML_QNT_VERSION, both uint32. */
static int put_file_type(gguf_writer *w, int64_t ftype, uint64_t *at, acem_error *err) {
    if (ftype >= 0 && put_u32_kv(w, "general.file_type", (uint32_t)ftype, at, err)) return -1;
    return put_u32_kv(w, "general.quantization_version", GGML_QNT_VERSION, at, err);
}

static int write_header(gguf_writer *w, const st_header *from, const acem_param *meta,
                        size_t n_meta, acem_error *err) {
    int64_t ftype;
    if (file_type(w, &ftype, err)) return -1;
    uint64_t n_kv = n_meta + 1 + (ftype >= 0), n_written = 0;
    for (size_t i = 0; from && i < from->n_meta; i++)
        n_kv += !rewritten(from->meta_keys[i]);
    for (size_t i = 0; i < w->n_tensors; i++)
        n_written += !dropped(&w->tensors[i]);
    if (put_bytes(w, "GGUF", 4, err) || put_uint(w, 3, 4, err) || put_uint(w, n_written, 8, err) ||
        put_uint(w, n_kv, 8, err))
        return -1;
    uint64_t at = 24;
    for (size_t i = 0; from && i < from->n_meta; i++) {
        uint64_t len = from->kv_at[i + 1] - from->kv_at[i];
        if (rewritten(from->meta_keys[i])) continue;
        if (put_bytes(w, from->kv_raw + from->kv_at[i], (size_t)len, err)) return -1;
        at += len;
    }
    if (put_file_type(w, ftype, &at, err)) return -1;
    for (size_t i = 0; i < n_meta; i++) {
        char key[128];
        snprintf(key, sizeof key, "acem.%s", meta[i].key);
        if (put_string(w, key, err) || put_uint(w, 8 /* string */, 4, err) ||
            put_string(w, meta[i].value, err))
            return -1;
        at += 8 + strlen(key) + 4 + 8 + strlen(meta[i].value);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const st_out_tensor *t = &w->tensors[i];
        uint32_t type = 0;
        if (dropped(t)) continue;
        if (ggml_type_of(w->path, t, &type, err) || put_string(w, t->name, err) ||
            put_uint(w, t->ndim ? (uint64_t)t->ndim : 1, 4, err))
            return -1;
        for (int d = t->ndim - 1; d >= 0; d--)
            if (put_uint(w, t->shape[d], 8, err)) return -1;
        if ((t->ndim == 0 && put_uint(w, 1, 8, err)) || put_uint(w, type, 4, err) ||
            put_uint(w, offset, 8, err))
            return -1;
        at += 8 + strlen(t->name) + 4 + 8 * (uint64_t)(t->ndim ? t->ndim : 1) + 4 + 8;
        offset += stored_size(t) + padding(stored_size(t), w->alignment);
    }
    w->expected = at + padding(at, w->alignment) + offset;
    return put_zeros(w, padding(at, w->alignment), err);
}

/* Moves to the next tensor that expects input, padding each finished one. A finished
 * tensor must hold exactly the bytes its info declares: a mismatch would shift every later
 * tensor, and the file would be refused by every reader. */
static int advance(gguf_writer *w, acem_error *err) {
    while (w->left == 0 && w->cur < w->n_tensors) {
        const st_out_tensor *t = &w->tensors[w->cur];
        if (w->stored != stored_size(t))
            return acem_fail(err,
                             "%s: internal error: tensor \"%s\" came to %llu bytes, but its "
                             "header declares %llu; nothing was committed",
                             w->path, t->name, (unsigned long long)w->stored,
                             (unsigned long long)stored_size(t));
        if (!dropped(t) && put_zeros(w, padding(w->stored, w->alignment), err)) return -1;
        w->stored = 0;
        if (++w->cur < w->n_tensors) w->left = fed_size(&w->tensors[w->cur]);
    }
    return 0;
}

int gguf_writer_open(const char *file_path, const st_out_tensor *tensors, size_t n,
                     const st_header *from, int64_t ftype, const acem_param *meta, size_t n_meta,
                     gguf_writer **out, acem_error *err) {
    *out = NULL;
    gguf_writer *w = acem_alloc(1, sizeof *w, "the writer", err);
    if (!w) return -1;
    w->path = file_path;
    w->tensors = tensors;
    w->n_tensors = n;
    w->ftype = ftype;
    w->alignment = from ? from->alignment : ACEM_GGUF_ALIGNMENT;
    int fd = open(file_path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0 || !(w->f = fdopen(fd, "wb"))) {
        acem_fail(err, "%s: cannot create: %s", file_path, strerror(errno));
        if (fd >= 0) close(fd);
        gguf_writer_free(w);
        return -1;
    }
    setvbuf(w->f, NULL, _IOFBF, 4u << 20);
    if (!(w->stage = acem_alloc(STAGE_ELEMS, sizeof(float), "the quantiser", err)) ||
        !(w->blocks = acem_alloc(STAGE_ELEMS / 32, 34, "the quantiser", err)) ||
        write_header(w, from, meta, n_meta, err)) {
        gguf_writer_free(w);
        return -1;
    }
    w->left = n ? fed_size(&tensors[0]) : 0;
    if (n && advance(w, err)) {
        gguf_writer_free(w);
        return -1;
    }
    *out = w;
    return 0;
}

static int flush_stage(gguf_writer *w, const st_out_tensor *t, acem_error *err) {
    acem_quant q = out_tensor_quant(t);
    size_t n_blocks = w->staged / (4 * acem_quant_block_elems(q));
    size_t bytes = n_blocks * acem_quant_block_bytes(q);
    acem_quantize(q, w->stage, w->blocks, n_blocks);
    w->staged = 0;
    w->stored += bytes;
    return put_bytes(w, w->blocks, bytes, err);
}

/* Stores n fed bytes of t (of `left` still due, these included): quantised here, or as they
 * are. Returns the bytes taken, which for a block type may be fewer than n. */
static int64_t store(gguf_writer *w, const st_out_tensor *t, const unsigned char *p, uint64_t n,
                     uint64_t left, acem_error *err) {
    if (!quantised_here(t)) {
        if (put_bytes(w, p, (size_t)n, err)) return -1;
        w->stored += n;
        return (int64_t)n;
    }
    const size_t cap = STAGE_ELEMS * sizeof(float);
    uint64_t take = n < cap - w->staged ? n : cap - w->staged;
    memcpy((unsigned char *)w->stage + w->staged, p, (size_t)take);
    w->staged += (size_t)take;
    if ((w->staged == cap || take == left) && flush_stage(w, t, err)) return -1;
    return (int64_t)take;
}

static int store_all(gguf_writer *w, const st_out_tensor *t, const unsigned char *p, uint64_t n,
                     uint64_t left, acem_error *err) {
    while (n > 0) {
        int64_t took = store(w, t, p, n, left, err);
        if (took < 0) return -1;
        p += took;
        n -= (uint64_t)took;
        left -= (uint64_t)took;
    }
    return 0;
}

/* Source row of stored row r under LlamaModel.permute: within each head of hd rows,
 * reshape(2, hd/2).swapaxes: stored row 2j + k is fed row k hd/2 + j. */
static uint64_t rope_source(uint64_t r, uint64_t hd) {
    uint64_t h = r / hd, i = r % hd;
    return h * hd + (i % 2) * (hd / 2) + i / 2;
}

/* Stores the gathered tensor in its layout, row by row. The stored shape is rows x cols;
 * a transposed tensor was fed cols x rows. */
static int store_laid_out(gguf_writer *w, const st_out_tensor *t, acem_error *err) {
    const size_t es = quantised_here(t) ? sizeof(float) : acem_dtype_size(out_tensor_dtype(t));
    const uint64_t rows = t->ndim ? t->shape[0] : 1, cols = rows ? w->whole_len / es / rows : 0;
    uint64_t left = w->whole_len;
    for (uint64_t r = 0; r < rows; r++, left -= cols * es) {
        const unsigned char *src = w->row;
        if (t->layout == OUT_TRANSPOSED)
            for (uint64_t c = 0; c < cols; c++)
                memcpy(w->row + c * es, w->whole + (c * rows + r) * es, es);
        else
            src = w->whole + rope_source(r, rows / t->n_head) * cols * es;
        if (store_all(w, t, src, cols * es, left, err)) return -1;
    }
    return 0;
}

/* Gathers the fed bytes of a tensor with a layout; stores it once whole. */
static int gather(gguf_writer *w, const st_out_tensor *t, const unsigned char *p, uint64_t n,
                  acem_error *err) {
    if (!w->whole) {
        w->whole_len = fed_size(t);
        uint64_t row = t->ndim ? w->whole_len / (t->shape[0] ? t->shape[0] : 1) : w->whole_len;
        if (!(w->whole = acem_alloc((size_t)w->whole_len, 1, "a reordered tensor", err)) ||
            !(w->row = acem_alloc((size_t)row, 1, "a reordered tensor", err)))
            return -1;
    }
    memcpy(w->whole + (w->whole_len - w->left), p, (size_t)n);
    if (n < w->left) return 0;
    int rc = store_laid_out(w, t, err);
    free(w->whole);
    free(w->row);
    w->whole = w->row = NULL;
    return rc;
}

int gguf_writer_write(gguf_writer *w, const void *data, uint64_t n, acem_error *err) {
    const unsigned char *p = data;
    while (n > 0) {
        if (w->cur >= w->n_tensors)
            return acem_fail(err, "internal error: more data written than the tensors hold");
        const st_out_tensor *t = &w->tensors[w->cur];
        int64_t take = (int64_t)(n < w->left ? n : w->left);
        if (t->layout == OUT_TRANSPOSED || t->layout == OUT_ROPE_PAIRS) {
            if (gather(w, t, p, (uint64_t)take, err)) return -1;
        } else if (!dropped(t) && (take = store(w, t, p, (uint64_t)take, w->left, err)) < 0) {
            return -1;
        }
        p += take;
        n -= (uint64_t)take;
        w->left -= (uint64_t)take;
        if (advance(w, err)) return -1;
    }
    return 0;
}

int gguf_writer_finish(gguf_writer *w, acem_error *err) {
    if (w->cur < w->n_tensors)
        return acem_fail(err, "internal error: tensor \"%s\" was not fully written",
                         w->tensors[w->cur].name);
    FILE *f = w->f;
    w->f = NULL;
    int rc = fflush(f) != 0 ? acem_fail(err, "%s: write failed: %s", w->path, strerror(errno)) : 0;
    struct stat st;
    if (!rc && fstat(fileno(f), &st) == 0 && (uint64_t)st.st_size != w->expected)
        rc = acem_fail(err,
                       "%s: internal error: the file came to %llu bytes, but its header "
                       "declares %llu; nothing was committed",
                       w->path, (unsigned long long)st.st_size, (unsigned long long)w->expected);
    if (!rc && fsync(fileno(f)) != 0)
        rc = acem_fail(err, "%s: fsync failed: %s", w->path, strerror(errno));
    if (fclose(f) != 0 && !rc)
        rc = acem_fail(err, "%s: close failed: %s", w->path, strerror(errno));
    return rc;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w->stage);
    free(w->blocks);
    free(w->whole);
    free(w->row);
    free(w);
}
