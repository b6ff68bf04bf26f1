/* checkpoint.c — a model argument as a list of tensors: one .safetensors or GGUF file, or
 * a Hugging Face directory (model.safetensors, or shards + model.safetensors.index.json),
 * named by a path, a Hugging Face id or MODEL+ADAPTER (refs.c); a LoRA adapter's tensors
 * read as the adapted ones (lora.c). GGUF's block-quantised tensors read as their
 * dequantised F32 values. */
#include "formats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct ck_file {
    char *path;
    int fd;
} ck_file;

struct acem_checkpoint {
    char *path;
    ck_file *files;
    size_t n_files;
    acem_tensor *tensors; /* storage order: shard by shard, by offset */
    size_t n_tensors;
    size_t *by_name;    /* indices into tensors, sorted by name */
    st_header meta;     /* metadata of the first shard (its tensors are moved out) */
    tensor_view *views; /* per tensor: a PyTorch strided view, or not strided */
    /* The last strided tensor read, gathered into row-major order. Reads are sequential
     * per tensor, but the fused kernel reads blocks of one tensor from several threads. */
    const acem_tensor *gathered_for;
    unsigned char *gathered;
    pthread_mutex_t gather_lock;
    lora *lora; /* a PEFT adapter applied to the tensors, or NULL */
};

const char *acem_checkpoint_path(const acem_checkpoint *ck) { return ck->path; }
size_t acem_checkpoint_count(const acem_checkpoint *ck) { return ck->n_tensors; }
const acem_tensor *acem_checkpoint_at(const acem_checkpoint *ck, size_t i) {
    return &ck->tensors[i];
}
size_t acem_checkpoint_file_count(const acem_checkpoint *ck) { return ck->n_files; }
const char *acem_checkpoint_file_path(const acem_checkpoint *ck, int file) {
    return ck->files[file].path;
}
size_t acem_checkpoint_metadata_count(const acem_checkpoint *ck) { return ck->meta.n_meta; }
void acem_checkpoint_metadata_at(const acem_checkpoint *ck, size_t i, const char **key,
                                 const char **value) {
    *key = ck->meta.meta_keys[i];
    *value = ck->meta.meta_values[i];
}

const char *acem_checkpoint_adapter(const acem_checkpoint *ck) {
    return ck->lora ? lora_dir(ck->lora) : NULL;
}

void acem_checkpoint_close(acem_checkpoint *ck) {
    if (!ck) return;
    lora_close(ck->lora);
    for (size_t i = 0; i < ck->n_files; i++) {
        if (ck->files[i].fd >= 0) close(ck->files[i].fd);
        free(ck->files[i].path);
    }
    for (size_t i = 0; i < ck->n_tensors; i++)
        free((char *)ck->tensors[i].name);
    st_header_free(&ck->meta);
    free(ck->views);
    free(ck->gathered);
    pthread_mutex_destroy(&ck->gather_lock);
    free(ck->files);
    free(ck->tensors);
    free(ck->by_name);
    free(ck->path);
    free(ck);
}

static const acem_tensor *g_sort_tensors; /* qsort has no context argument in C11 */
static int cmp_by_name(const void *a, const void *b) {
    return strcmp(g_sort_tensors[*(const size_t *)a].name, g_sort_tensors[*(const size_t *)b].name);
}

const acem_tensor *acem_checkpoint_find(const acem_checkpoint *ck, const char *name) {
    size_t lo = 0, hi = ck->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->tensors[ck->by_name[mid]].name, name);
        if (c == 0) return &ck->tensors[ck->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const st_header *acem_checkpoint_gguf(const acem_checkpoint *ck) {
    return ck->meta.alignment ? &ck->meta : NULL;
}

int acem_checkpoint_read_stored(const acem_checkpoint *ck, const acem_tensor *t, uint64_t from,
                                void *dst, uint64_t n, acem_error *err) {
    uint64_t stored = t->nbytes;
    if (t->quant != ACEM_QUANT_NONE) acem_quant_stored_bytes(t->quant, t->numel, &stored);
    if (from > stored || n > stored - from)
        return acem_fail(err, "%s: read outside tensor \"%s\"", ck->path, t->name);
    const ck_file *f = &ck->files[t->file];
    return acem_pread_full(f->fd, f->path, dst, n, t->offset + from, err);
}

/* Bytes [from, from + nbytes) of a quantised tensor's F32 values: the blocks covering them
 * are read and dequantised a group at a time. */
#define QUANT_GROUP_ELEMS 65536u
static int read_quantised(const acem_checkpoint *ck, const acem_tensor *t, uint64_t from,
                          unsigned char *dst, uint64_t nbytes, acem_error *err) {
    const uint64_t be = acem_quant_block_elems(t->quant), bb = acem_quant_block_bytes(t->quant);
    float *values = acem_alloc(QUANT_GROUP_ELEMS, sizeof(float), "dequantised values", err);
    unsigned char *blocks =
        values ? acem_alloc(QUANT_GROUP_ELEMS / be, bb, "quantised blocks", err) : NULL;
    int rc = blocks ? 0 : -1;
    uint64_t end = from + nbytes;
    while (!rc && from < end) {
        uint64_t first = from / 4 / be, n = (end + 4 * be - 1) / (4 * be) - first;
        if (n > QUANT_GROUP_ELEMS / be) n = QUANT_GROUP_ELEMS / be;
        rc = acem_checkpoint_read_stored(ck, t, first * bb, blocks, n * bb, err);
        if (rc) break;
        acem_dequantize(t->quant, blocks, values, (size_t)n);
        uint64_t lo = from - first * be * 4, hi = n * be * 4;
        if (hi > end - first * be * 4) hi = end - first * be * 4;
        memcpy(dst, (unsigned char *)values + lo, (size_t)(hi - lo));
        dst += hi - lo;
        from += hi - lo;
    }
    free(values);
    free(blocks);
    return rc;
}

/* A strided view: the storage span it covers is read once and gathered (an odometer over
 * the indices) into row-major order, kept until another strided tensor is read. */
static int gather(acem_checkpoint *ck, const acem_tensor *t, const tensor_view *v,
                  acem_error *err) {
    const size_t es = acem_dtype_size(t->dtype);
    unsigned char *span = acem_alloc(v->span, es, "a strided tensor", err);
    unsigned char *out = span ? acem_alloc(t->numel, es, "a strided tensor", err) : NULL;
    const ck_file *f = &ck->files[t->file];
    if (!out || acem_pread_full(f->fd, f->path, span, v->span * es, v->base, err)) {
        free(span);
        free(out);
        return -1;
    }
    uint64_t idx[ACEM_MAX_DIMS] = {0}, pos = 0;
    for (uint64_t i = 0; i < t->numel; i++) {
        memcpy(out + i * es, span + pos * es, es);
        for (int d = t->ndim - 1; d >= 0; d--) {
            pos += v->stride[d];
            if (++idx[d] < t->shape[d]) break;
            pos -= idx[d] * v->stride[d];
            idx[d] = 0;
        }
    }
    free(span);
    free(ck->gathered);
    ck->gathered = out;
    ck->gathered_for = t;
    return 0;
}

static int read_model(const acem_checkpoint *ck, const acem_tensor *t, uint64_t from, void *dst,
                      uint64_t nbytes, acem_error *err) {
    if (t->quant != ACEM_QUANT_NONE) return read_quantised(ck, t, from, dst, nbytes, err);
    const tensor_view *v = &ck->views[t - ck->tensors];
    if (v->strided) {
        acem_checkpoint *w = (acem_checkpoint *)ck;
        pthread_mutex_lock(&w->gather_lock);
        int rc = ck->gathered_for != t ? gather(w, t, v, err) : 0;
        if (!rc) memcpy(dst, ck->gathered + from, (size_t)nbytes);
        pthread_mutex_unlock(&w->gather_lock);
        return rc;
    }
    const ck_file *f = &ck->files[t->file];
    return acem_pread_full(f->fd, f->path, dst, nbytes, t->offset + from, err);
}

/* A tensor the adapter changes, in the model's type (as merge_and_unload stores it): the
 * model's values, in double, adapted and rounded once, a block of elements at a time (so
 * that a read of a whole tensor holds no more than a block in double). */
#define ADAPT_BLOCK_ELEMS 65536u
static int read_adapted(const acem_checkpoint *ck, const lora_use *u, const acem_tensor *t,
                        uint64_t from, void *dst, uint64_t nbytes, acem_error *err) {
    const size_t es = acem_dtype_size(t->dtype);
    if (from % es || nbytes % es)
        return acem_fail(err, "%s: a read of part of an element of \"%s\"", ck->path, t->name);
    const uint64_t first = from / es, n = nbytes / es;
    double *v = acem_alloc(n < ADAPT_BLOCK_ELEMS ? (size_t)n : ADAPT_BLOCK_ELEMS, sizeof *v,
                           "adapted values", err);
    int rc = v ? 0 : -1;
    for (uint64_t at = 0; !rc && at < n; at += ADAPT_BLOCK_ELEMS) {
        uint64_t m = n - at < ADAPT_BLOCK_ELEMS ? n - at : ADAPT_BLOCK_ELEMS;
        unsigned char *out = (unsigned char *)dst + at * es;
        if (!u->full && !(rc = read_model(ck, t, (first + at) * es, out, m * es, err)))
            acem_convert_from_raw(out, t->dtype, v, ACEM_DT_F64, (size_t)m, false);
        if (!rc && !(rc = lora_values(ck->lora, u, t, first + at, m, v, err)))
            acem_convert_to_raw(v, ACEM_DT_F64, out, t->dtype, (size_t)m);
    }
    free(v);
    return rc;
}

int acem_checkpoint_read(const acem_checkpoint *ck, const acem_tensor *t, uint64_t from, void *dst,
                         uint64_t nbytes, acem_error *err) {
    if (from > t->nbytes || nbytes > t->nbytes - from)
        return acem_fail(err, "%s: read outside tensor \"%s\"", ck->path, t->name);
    const lora_use *u = ck->lora ? lora_use_of(ck->lora, (size_t)(t - ck->tensors)) : NULL;
    return u ? read_adapted(ck, u, t, from, dst, nbytes, err)
             : read_model(ck, t, from, dst, nbytes, err);
}

/* Snapshots of the Hugging Face cache link to ../../blobs/, inside their repository; a link
 * elsewhere would make any file on the machine an input. */
int acem_check_model_link(const char *dir, const char *path, acem_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode) || acem_path_within_model(dir, path))
        return 0;
    return acem_fail(err,
                     "%s: a link that leads out of the model directory; refusing to read "
                     "weights through it",
                     path);
}

/* Opens one safetensors file (or, when not a shard of a directory, a GGUF file) as shard
 * number ck->n_files and appends its tensors. dir: the model directory holding path, or
 * NULL for a file the user named (which may be GGUF; the files of a directory are
 * safetensors or PyTorch). */
static int add_file(acem_checkpoint *ck, const char *dir, const char *path, acem_error *err) {
    const bool may_be_gguf = dir == NULL;
    if (dir && acem_check_model_link(dir, path, err)) return -1;
    ck_file *f = &ck->files[ck->n_files];
    f->fd = -1;
    if (!(f->path = acem_strdup(path, err))) return -1;
    ck->n_files++;
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) /* a FIFO must not block us */;
    if (f->fd < 0) return acem_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) != 0) return acem_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return acem_fail(err, "%s: not a regular file", path);
    st_header h;
    unsigned char magic[9] = {0};
    size_t head = st.st_size < 9 ? (size_t)st.st_size : 9;
    if (head >= 4 && acem_pread_full(f->fd, path, magic, head, 0, err)) return -1;
    /* The magic numbers of the other formats can also open a safetensors file, as the first
     * bytes of its header length: a bare pickle's PROTO 0x80 (torch.save before 1.6) does for
     * header lengths 0x..80 (1 in 32 files, with 8-byte padding), and "PK\3\4" for one
     * length. A safetensors header then opens with '{' at byte 8, where neither a pickle of
     * torch.save nor a zip entry has one. ("GGUF" would be a length past the limit.) */
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | magic[i];
    bool st_like = st.st_size >= 9 && magic[8] == '{' && header_len <= (uint64_t)st.st_size - 8;
    bool gguf = memcmp(magic, "GGUF", 4) == 0;
    bool zip = !st_like && memcmp(magic, "PK\3\4", 4) == 0;
    size_t len = strlen(path);
    if (may_be_gguf && !gguf && len > 5 && strcmp(path + len - 5, ".gguf") == 0)
        return acem_fail(err, "%s: not a GGUF file (it does not start with \"GGUF\")", path);
    if (magic[0] == 0x80 && !st_like)
        return acem_fail(err,
                         "%s: a legacy (non-zip) PyTorch pickle, which acem does not read; re-save "
                         "it with torch.save of PyTorch >= 1.6 or convert it to safetensors",
                         path);
    int (*read_header)(const char *, int, uint64_t, int, st_header *, acem_error *) =
        may_be_gguf && gguf ? gguf_header_read
        : zip               ? torch_header_read
                            : st_header_read;
    if (read_header(path, f->fd, (uint64_t)st.st_size, (int)(ck->n_files - 1), &h, err)) return -1;
    size_t total = ck->n_tensors + h.n_tensors + 1;
    acem_tensor *grown = realloc(ck->tensors, total * sizeof *grown);
    if (grown) ck->tensors = grown;
    tensor_view *views = grown ? realloc(ck->views, total * sizeof *views) : NULL;
    if (views) ck->views = views;
    if (!grown || !views) {
        st_header_free(&h);
        return acem_fail(err, "%s: out of memory for tensor descriptors", path);
    }
    if (h.views)
        memcpy(views + ck->n_tensors, h.views, h.n_tensors * sizeof *views);
    else
        memset(views + ck->n_tensors, 0, h.n_tensors * sizeof *views);
    memcpy(ck->tensors + ck->n_tensors, h.tensors, h.n_tensors * sizeof *h.tensors);
    ck->n_tensors += h.n_tensors;
    h.n_tensors = 0; /* names now belong to ck */
    if (ck->n_files == 1)
        ck->meta = h;
    else
        st_header_free(&h);
    return 0;
}

/* Builds the by-name index and rejects a name that appears twice (also across shards). */
static int index_names(acem_checkpoint *ck, acem_error *err) {
    if (!(ck->by_name = acem_alloc(ck->n_tensors, sizeof(size_t), "the name index", err)))
        return -1;
    for (size_t i = 0; i < ck->n_tensors; i++)
        ck->by_name[i] = i;
    g_sort_tensors = ck->tensors;
    qsort(ck->by_name, ck->n_tensors, sizeof(size_t), cmp_by_name);
    for (size_t i = 1; i < ck->n_tensors; i++) {
        const acem_tensor *a = &ck->tensors[ck->by_name[i - 1]], *b = &ck->tensors[ck->by_name[i]];
        if (strcmp(a->name, b->name) == 0)
            return acem_fail(err, "%s: tensor \"%.64s\" appears twice", ck->files[b->file].path,
                             a->name);
    }
    return 0;
}

/* A shard name from an index must be a plain file name: no directories, no "..". */
static bool safe_shard_name(const char *s) {
    return *s && *s != '.' && !strchr(s, '/') && !strchr(s, '\\') && strlen(s) < 4096;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *acem_read_small_file(const char *path, uint64_t limit, size_t *len, acem_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) /* a FIFO must not block us */;
    if (fd < 0) {
        acem_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        acem_fail(err, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size > limit)
        acem_fail(err, "%s: larger than the %llu-byte limit", path, (unsigned long long)limit);
    else if ((buf = acem_alloc((size_t)st.st_size + 1, 1, path, err)) &&
             acem_pread_full(fd, path, buf, (uint64_t)st.st_size, 0, err)) {
        free(buf);
        buf = NULL;
    }
    if (buf) *len = (size_t)st.st_size;
    close(fd);
    return buf;
}

/* Reads model.safetensors.index.json, opens its shards (sorted by name) and checks that
 * the weight_map and the shards' contents agree exactly. */
static int open_sharded(acem_checkpoint *ck, const char *dir, const char *index_path,
                        acem_error *err) {
    size_t len;
    char *text = acem_check_model_link(dir, index_path, err)
                     ? NULL
                     : acem_read_small_file(index_path, ACEM_INDEX_MAX_BYTES, &len, err);
    if (!text) return -1;
    cJSON *root =
        acem_utf8_valid((unsigned char *)text, len) ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    int rc = -1;
    char **shards = NULL;
    char *seen = NULL;
    size_t n_shards = 0;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!root || !cJSON_IsObject(root)) {
        acem_json_error(index_path, root ? 0 : len, "not a valid JSON object", err);
        goto out;
    }
    if (!cJSON_IsObject(map) || !map->child) {
        acem_fail(err, "%s: weight_map is missing, empty or not an object", index_path);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(map);
    if (!(shards = acem_alloc(n, sizeof(char *), "shard names", err))) goto out;
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !safe_shard_name(e->valuestring)) {
            acem_fail(err, "%s: weight_map entry \"%.64s\" is not a plain shard file name",
                      index_path, e->string);
            goto out;
        }
        shards[n_shards++] = e->valuestring;
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_shards = u;
    if (!(ck->files = acem_alloc(n_shards, sizeof *ck->files, "shards", err))) goto out;
    for (size_t i = 0; i < n_shards; i++) {
        char *p = acem_path_join(dir, shards[i], err);
        int r = p ? add_file(ck, dir, p, err) : -1;
        free(p);
        if (r) goto out;
    }
    if (index_names(ck, err)) goto out;
    if ((size_t)cJSON_GetArraySize(map) != ck->n_tensors) {
        acem_fail(err, "%s: weight_map lists %d tensors but the shards hold %zu", index_path,
                  cJSON_GetArraySize(map), ck->n_tensors);
        goto out;
    }
    if (!(seen = acem_alloc(ck->n_tensors, 1, "the weight map check", err))) goto out;
    for (const cJSON *e = map->child; e; e = e->next) {
        const acem_tensor *t = acem_checkpoint_find(ck, e->string);
        const char *holder = t ? strrchr(ck->files[t->file].path, '/') : NULL;
        if (!t || strcmp(holder ? holder + 1 : ck->files[t->file].path, e->valuestring) != 0) {
            acem_fail(err, "%s: weight_map puts \"%.64s\" in %s, which does not hold it",
                      index_path, e->string, e->valuestring);
            goto out;
        }
        if (seen[t - ck->tensors]++) {
            acem_fail(err, "%s: weight_map lists \"%.64s\" twice", index_path, e->string);
            goto out;
        }
    }
    rc = 0;
out:
    free(seen);
    free(shards);
    cJSON_Delete(root);
    return rc;
}

static int open_one(acem_checkpoint *ck, const char *dir, const char *path, acem_error *err) {
    if (!(ck->files = acem_alloc(1, sizeof *ck->files, "a file", err))) return -1;
    return add_file(ck, dir, path, err) || index_names(ck, err) ? -1 : 0;
}

/* The first of transformers' choices (modeling_utils.py: model.safetensors, its index,
 * pytorch_model.bin, its index) that the directory holds, else Mistral's single
 * consolidated.safetensors; *sharded for an index. */
static char *weights_of(const char *dir, bool *sharded, acem_error *err) {
    static const char *const names[] = {"model.safetensors", "model.safetensors.index.json",
                                        "pytorch_model.bin", "pytorch_model.bin.index.json",
                                        "consolidated.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *p = acem_path_join(dir, names[i], err);
        if (!p || access(p, F_OK) == 0) {
            *sharded = i == 1 || i == 3;
            return p;
        }
        free(p);
    }
    acem_fail(err,
              "%s: holds neither model.safetensors nor model.safetensors.index.json (nor "
              "pytorch_model.bin, pytorch_model.bin.index.json or consolidated.safetensors)",
              dir);
    return NULL;
}

static int open_model(acem_checkpoint *ck, const char *path, acem_error *err) {
    if (!acem_is_dir(path)) return open_one(ck, NULL, path, err);
    /* Without search permission every probe below fails as if the files were missing. */
    if (access(path, X_OK) != 0)
        return acem_fail(err, "%s: cannot open: %s", path, strerror(errno));
    bool sharded;
    char *weights = weights_of(path, &sharded, err);
    int rc = !weights  ? -1
             : sharded ? open_sharded(ck, path, weights, err)
                       : open_one(ck, path, weights, err);
    free(weights);
    return rc;
}

int acem_checkpoint_open(const char *path, acem_checkpoint **out, acem_error *err) {
    *out = NULL;
    acem_ref ref;
    if (acem_ref_resolve(path, NULL, &ref, err)) return -1;
    acem_checkpoint *ck = acem_alloc(1, sizeof *ck, "a checkpoint", err);
    int rc = -1;
    if (ck) {
        pthread_mutex_init(&ck->gather_lock, NULL);
        rc = (ck->path = acem_ref_text(&ref, err)) && !open_model(ck, ref.model, err) &&
                     !(ref.adapter && lora_open(ref.adapter, ck, &ck->lora, err))
                 ? 0
                 : -1;
    }
    acem_ref_free(&ref);
    if (rc) {
        acem_checkpoint_close(ck);
        return acem_fail_naming(err, path);
    }
    *out = ck;
    return 0;
}
