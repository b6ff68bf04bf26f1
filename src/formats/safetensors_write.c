/* safetensors_write.c — writes one file or Hugging Face shards + index, sequentially.
 *
 * All headers are known before any data (names, dtypes, shapes come from the plan), so
 * each shard is written front to back: header padded with spaces so that the data starts
 * at a multiple of 8, then the tensors in order. The caller writes into a temporary
 * location; making it visible is output.c's job.
 *
 * Every byte passes through one aligned buffer that is written out whole, so the file
 * offsets of all writes but the last are multiples of the buffer size. That allows
 * O_DIRECT: new page-cache pages are slow to allocate on many machines (a fresh 2 GiB file
 * takes 5.1 s through the page cache and 1.7 s direct on the 2-core VM of the benchmarks),
 * and a merge's output is not read back. Where the filesystem refuses O_DIRECT the writer
 * falls back to buffered writes; the unaligned tail of a file is always written buffered.
 * Two buffers alternate: while a background thread writes a full one, the merge fills the
 * other, so reading and computing overlap with the disk. */
#include "formats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WRITE_BUFFER (4u << 20)
#define DIRECT_ALIGN 4096u /* covers 512- and 4096-byte logical blocks */

typedef struct shard {
    char *path;
    size_t first, end; /* tensors [first, end) */
    uint64_t expected; /* its size as its header declares it */
} shard;

struct st_writer {
    const st_out_tensor *tensors;
    uint64_t *nbytes; /* per tensor, as declared */
    size_t n_tensors;
    shard *shards;
    size_t n_shards;
    const char *dir;  /* NULL for a single file */
    acem_param *meta; /* owned copies: shards opened later must not see dead strings */
    size_t n_meta;
    int fd;
    bool direct; /* fd was opened with O_DIRECT */
    size_t cur_shard, cur_tensor;
    uint64_t left_in_tensor;
    unsigned char *bufs[2], *buf; /* buf: the one being filled */
    size_t buf_len;
    /* the background writer: one job at a time */
    pthread_t thread;
    bool thread_started, busy, quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const unsigned char *job;
    size_t job_len;
    int job_rc;
    acem_error job_err;
};

size_t st_writer_shards(const st_writer *w) { return w->n_shards; }

static int write_all(int fd, const char *path, const void *data, size_t n, acem_error *err) {
    const unsigned char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return acem_fail(err, "%s: write failed: %s", path, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int stop_direct(st_writer *w, acem_error *err) {
    int flags = fcntl(w->fd, F_GETFL);
    if (flags < 0 || fcntl(w->fd, F_SETFL, flags & ~O_DIRECT) < 0)
        return acem_fail(err, "%s: cannot leave direct I/O: %s", w->shards[w->cur_shard].path,
                         strerror(errno));
    w->direct = false;
    return 0;
}

/* Writes n bytes of an aligned buffer: direct while n is aligned (a short direct write, or
 * one the filesystem refuses, ends direct I/O for the file), buffered otherwise. */
static int write_out(st_writer *w, const unsigned char *buf, size_t n, acem_error *err) {
    const char *path = w->shards[w->cur_shard].path;
    size_t done = 0;
    while (w->direct && n - done >= DIRECT_ALIGN) {
        size_t len = (n - done) & ~(size_t)(DIRECT_ALIGN - 1);
        ssize_t k = write(w->fd, buf + done, len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno != EINVAL)
            return acem_fail(err, "%s: write failed: %s", path, strerror(errno));
        if (k > 0) done += (size_t)k;
        if (k < 0 || (size_t)k < len || done % DIRECT_ALIGN) break;
    }
    if (done < n && w->direct && stop_direct(w, err)) return -1;
    return write_all(w->fd, path, buf + done, n - done, err);
}

static void *writer_main(void *arg) {
    st_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->busy && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->busy) break; /* quit, with nothing left to write */
        const unsigned char *job = w->job;
        size_t len = w->job_len;
        pthread_mutex_unlock(&w->mu);
        acem_error e = {{0}};
        int rc = write_out(w, job, len, &e);
        pthread_mutex_lock(&w->mu);
        if (rc && !w->job_rc) {
            w->job_rc = rc;
            w->job_err = e;
        }
        w->busy = false;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Waits for the background write in flight, if any; its failure becomes ours. */
static int wait_idle(st_writer *w, acem_error *err) {
    pthread_mutex_lock(&w->mu);
    while (w->busy)
        pthread_cond_wait(&w->cv, &w->mu);
    int rc = w->job_rc;
    if (rc) *err = w->job_err;
    pthread_mutex_unlock(&w->mu);
    return rc ? -1 : 0;
}

/* Hands the full buffer to the background thread and goes on in the other one. */
static int flush_buffer(st_writer *w, acem_error *err) {
    if (wait_idle(w, err)) return -1;
    pthread_mutex_lock(&w->mu);
    w->job = w->buf;
    w->job_len = w->buf_len;
    w->busy = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->buf = w->buf == w->bufs[0] ? w->bufs[1] : w->bufs[0];
    w->buf_len = 0;
    return 0;
}

/* Appends bytes to the buffer, writing it out each time it fills. */
static int stage(st_writer *w, const void *data, size_t n, acem_error *err) {
    const unsigned char *p = data;
    while (n > 0) {
        size_t take = WRITE_BUFFER - w->buf_len < n ? WRITE_BUFFER - w->buf_len : n;
        memcpy(w->buf + w->buf_len, p, take);
        w->buf_len += take;
        p += take;
        n -= take;
        if (w->buf_len == WRITE_BUFFER && flush_buffer(w, err)) return -1;
    }
    return 0;
}

/* {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets"}, ...} for one shard. */
static char *shard_header(const st_writer *w, const shard *s, size_t *len, acem_error *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    for (size_t i = 0; i < w->n_meta; i++)
        cJSON_AddStringToObject(meta, w->meta[i].key, w->meta[i].value);
    uint64_t at = 0;
    for (size_t i = s->first; i < s->end; i++) {
        const st_out_tensor *t = &w->tensors[i];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(e, "dtype", acem_dtype_name(out_tensor_dtype(t)));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)at));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(at + w->nbytes[i])));
        at += w->nbytes[i];
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) {
        acem_fail(err, "out of memory building a safetensors header");
        return NULL;
    }
    size_t n = strlen(json), padded = (n + 7) & ~(size_t)7; /* 8 + padded is 8-aligned */
    char *out = realloc(json, padded + 1);
    if (!out) {
        free(json);
        acem_fail(err, "out of memory building a safetensors header");
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = 0;
    *len = padded;
    return out;
}

static int open_shard(st_writer *w, size_t i, acem_error *err) {
    shard *s = &w->shards[i];
    /* Shards are new names in a fresh directory; a single file's temporary already exists. */
    int flags = O_WRONLY | O_CLOEXEC | (w->dir ? O_CREAT | O_EXCL : O_TRUNC);
    w->fd = open(s->path, flags | O_DIRECT, 0644);
    w->direct = w->fd >= 0;
    if (w->fd < 0 && errno == EINVAL) w->fd = open(s->path, flags, 0644);
    if (w->fd < 0) return acem_fail(err, "%s: cannot create: %s", s->path, strerror(errno));
    size_t len;
    char *header = shard_header(w, s, &len, err);
    if (!header) return -1;
    unsigned char len8[8];
    for (int b = 0; b < 8; b++)
        len8[b] = (unsigned char)((uint64_t)len >> (8 * b));
    int rc = stage(w, len8, 8, err) || stage(w, header, len, err);
    free(header);
    s->expected = 8 + len;
    for (size_t k = s->first; k < s->end; k++)
        s->expected += w->nbytes[k];
    w->cur_shard = i;
    return rc ? -1 : 0;
}

/* A shard must be exactly as long as its header says: anything else is a bug that every
 * reader would refuse, so it is an error before the output is committed. */
static int check_size(const st_writer *w, const shard *s, acem_error *err) {
    struct stat st;
    if (fstat(w->fd, &st) != 0)
        return acem_fail(err, "%s: cannot stat: %s", s->path, strerror(errno));
    if ((uint64_t)st.st_size != s->expected)
        return acem_fail(err,
                         "%s: internal error: the file came to %llu bytes, but its header "
                         "declares %llu; nothing was committed",
                         s->path, (unsigned long long)st.st_size, (unsigned long long)s->expected);
    return 0;
}

static int close_shard(st_writer *w, acem_error *err) {
    const shard *s = &w->shards[w->cur_shard];
    const char *path = s->path;
    int rc = wait_idle(w, err) || write_out(w, w->buf, w->buf_len, err) || check_size(w, s, err);
    w->buf_len = 0;
    if (!rc && fsync(w->fd) != 0)
        rc = acem_fail(err, "%s: fsync failed: %s", path, strerror(errno));
    if (close(w->fd) != 0 && !rc)
        rc = acem_fail(err, "%s: close failed: %s", path, strerror(errno));
    w->fd = -1;
    return rc;
}

size_t st_shard_split(const uint64_t *nbytes, size_t n, uint64_t max_shard, size_t *shard_of) {
    uint64_t bytes = 0;
    size_t shards = 1;
    for (size_t i = 0; i < n; i++) {
        if (max_shard && bytes > 0 && bytes + nbytes[i] > max_shard) {
            shards++;
            bytes = 0;
        }
        bytes += nbytes[i];
        shard_of[i] = shards - 1;
    }
    return shards;
}

void st_shard_name(size_t i, size_t n_shards, char *buf, size_t len) {
    if (n_shards > 1)
        snprintf(buf, len, "model-%05zu-of-%05zu.safetensors", i + 1, n_shards);
    else
        snprintf(buf, len, "model.safetensors");
}

static int plan_shards(st_writer *w, uint64_t max_shard, const char *file_path, acem_error *err) {
    size_t *shard_of = acem_alloc(w->n_tensors + 1, sizeof *shard_of, "shards", err);
    if (!shard_of ||
        !(w->shards = acem_alloc(w->n_tensors + 1, sizeof *w->shards, "shards", err))) {
        free(shard_of);
        return -1;
    }
    w->n_shards = st_shard_split(w->nbytes, w->n_tensors, max_shard, shard_of);
    for (size_t i = 0; i < w->n_tensors; i++) { /* shard k holds tensors [first, end) */
        if (i == 0 || shard_of[i] != shard_of[i - 1]) w->shards[shard_of[i]].first = i;
        w->shards[shard_of[i]].end = i + 1;
    }
    free(shard_of);
    for (size_t i = 0; i < w->n_shards; i++) {
        char name[64];
        st_shard_name(i, w->n_shards, name, sizeof name);
        w->shards[i].path =
            w->dir ? acem_path_join(w->dir, name, err) : acem_strdup(file_path, err);
        if (!w->shards[i].path) return -1;
    }
    return 0;
}

/* Moves on to the next tensor with bytes left, opening its shard when needed. */
static int advance(st_writer *w, acem_error *err) {
    while (w->left_in_tensor == 0 && w->cur_tensor < w->n_tensors) {
        size_t next = w->cur_tensor + 1;
        if (next >= w->n_tensors) {
            w->cur_tensor = next;
            break;
        }
        if (next >= w->shards[w->cur_shard].end) {
            if (close_shard(w, err) || open_shard(w, w->cur_shard + 1, err)) return -1;
        }
        w->cur_tensor = next;
        w->left_in_tensor = w->nbytes[next];
    }
    return 0;
}

/* Every tensor's size from its type; safetensors holds no GGUF blocks. */
static int declare_sizes(st_writer *w, const char *path, acem_error *err) {
    if (!(w->nbytes = acem_alloc(w->n_tensors + 1, sizeof *w->nbytes, "sizes", err))) return -1;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const st_out_tensor *t = &w->tensors[i];
        if (out_tensor_quant(t) != ACEM_QUANT_NONE)
            return acem_fail(err, "%s: tensor \"%s\": safetensors cannot hold %s blocks", path,
                             t->name, acem_quant_name(out_tensor_quant(t)));
        if (!out_tensor_stored_bytes(t, &w->nbytes[i]))
            return acem_fail(err, "%s: tensor \"%s\" has an impossible shape", path, t->name);
    }
    return 0;
}

int st_writer_open(const char *dir, const char *file_path, const st_out_tensor *tensors, size_t n,
                   uint64_t max_shard_size, const acem_param *meta, size_t n_meta, st_writer **out,
                   acem_error *err) {
    *out = NULL;
    st_writer *w = acem_alloc(1, sizeof *w, "the writer", err);
    if (!w) return -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->tensors = tensors;
    w->n_tensors = n;
    w->dir = dir;
    w->fd = -1;
    if (!(w->meta = acem_alloc(n_meta + 1, sizeof *w->meta, "metadata", err)) ||
        declare_sizes(w, dir ? dir : file_path, err)) {
        st_writer_free(w);
        return -1;
    }
    for (; w->n_meta < n_meta; w->n_meta++) {
        acem_param *m = &w->meta[w->n_meta];
        m->key = acem_strdup(meta[w->n_meta].key, err);
        m->value = m->key ? acem_strdup(meta[w->n_meta].value, err) : NULL;
        if (!m->value) {
            w->n_meta++;
            st_writer_free(w);
            return -1;
        }
    }
    for (int b = 0; b < 2; b++)
        if (posix_memalign((void **)&w->bufs[b], DIRECT_ALIGN, WRITE_BUFFER) != 0) {
            w->bufs[b] = NULL;
            acem_fail(err, "out of memory for the write buffers");
        }
    w->buf = w->bufs[0];
    w->thread_started =
        w->bufs[0] && w->bufs[1] && !pthread_create(&w->thread, NULL, writer_main, w);
    if (!w->thread_started && w->bufs[0] && w->bufs[1])
        acem_fail(err, "cannot start the writer thread");
    if (!w->thread_started || plan_shards(w, dir ? max_shard_size : 0, file_path, err) ||
        open_shard(w, 0, err)) {
        st_writer_free(w);
        return -1;
    }
    /* Position on tensor 0 (or past the end when there are none / all are empty). */
    w->cur_tensor = 0;
    w->left_in_tensor = n ? w->nbytes[0] : 0;
    if (n && advance(w, err)) {
        st_writer_free(w);
        return -1;
    }
    *out = w;
    return 0;
}

int st_writer_write(st_writer *w, const void *data, uint64_t n, acem_error *err) {
    const unsigned char *p = data;
    while (n > 0) {
        if (w->cur_tensor >= w->n_tensors)
            return acem_fail(err, "internal error: more data written than the tensors hold");
        uint64_t take = n < w->left_in_tensor ? n : w->left_in_tensor;
        if (stage(w, p, (size_t)take, err)) return -1;
        p += take;
        n -= take;
        w->left_in_tensor -= take;
        if (advance(w, err)) return -1;
    }
    return 0;
}

static int write_index(st_writer *w, acem_error *err) {
    uint64_t total = 0;
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    for (size_t s = 0; s < w->n_shards; s++)
        for (size_t i = w->shards[s].first; i < w->shards[s].end; i++) {
            cJSON_AddStringToObject(map, w->tensors[i].name, strrchr(w->shards[s].path, '/') + 1);
            total += w->nbytes[i];
        }
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    char *path = acem_path_join(w->dir, "model.safetensors.index.json", err);
    int rc = -1;
    if (!json)
        acem_fail(err, "out of memory writing the index");
    else if (path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            acem_fail(err, "%s: cannot create: %s", path, strerror(errno));
        else {
            rc = write_all(fd, path, json, strlen(json), err) || write_all(fd, path, "\n", 1, err);
            if (!rc && fsync(fd) != 0)
                rc = acem_fail(err, "%s: fsync failed: %s", path, strerror(errno));
            if (close(fd) != 0 && !rc)
                rc = acem_fail(err, "%s: close failed: %s", path, strerror(errno));
        }
    }
    free(json);
    free(path);
    return rc ? -1 : 0;
}

int st_writer_finish(st_writer *w, acem_error *err) {
    if (w->cur_tensor < w->n_tensors)
        return acem_fail(err, "internal error: tensor \"%s\" was not fully written",
                         w->tensors[w->cur_tensor].name);
    if (close_shard(w, err)) return -1;
    return w->n_shards > 1 ? write_index(w, err) : 0;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    if (w->thread_started) { /* first: a write in flight still uses fd and the paths */
        pthread_mutex_lock(&w->mu);
        w->quit = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    if (w->fd >= 0) close(w->fd);
    for (size_t i = 0; i < w->n_shards; i++)
        free(w->shards[i].path);
    free(w->shards);
    for (size_t i = 0; i < w->n_meta; i++) {
        free((char *)w->meta[i].key);
        free((char *)w->meta[i].value);
    }
    free(w->meta);
    free(w->nbytes);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->bufs[0]);
    free(w->bufs[1]);
    free(w);
}
