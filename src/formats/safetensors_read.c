/* safetensors_read.c — strict validation of a safetensors header.
 *
 * Layout: u64 little-endian N, N bytes of UTF-8 JSON, then the data buffer. The JSON is an
 * object {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}.
 * The rules follow the reference implementation: 2 <= N <= 1e8, the header inside the
 * file, known dtypes, integer shapes, and offsets that tile the buffer exactly. */
#include "formats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int acem_pread_full(int fd, const char *path, void *dst, uint64_t n, uint64_t off,
                    acem_error *err) {
    unsigned char *p = dst;
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t got = pread(fd, p, want, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) continue;
            return acem_fail(err, "%s: read failed: %s", path, strerror(errno));
        }
        if (got == 0) return acem_fail(err, "%s: unexpected end of file (was it truncated?)", path);
        p += got;
        off += (uint64_t)got;
        n -= (uint64_t)got;
    }
    return 0;
}

int acem_json_error(const char *path, size_t len, const char *invalid, acem_error *err) {
    void *probe = malloc(len + (1u << 20));
    free(probe);
    return acem_fail(err, "%s: %s", path, probe ? invalid : "out of memory parsing the JSON");
}

bool acem_utf8_valid(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0)
            n = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            n = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            n = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (len - i <= n) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

void st_header_free(st_header *h) {
    for (size_t i = 0; i < h->n_tensors; i++)
        free((char *)h->tensors[i].name);
    for (size_t i = 0; i < h->n_meta; i++) {
        free(h->meta_keys[i]);
        free(h->meta_values[i]);
    }
    free(h->tensors);
    free(h->meta_keys);
    free(h->meta_values);
    free(h->kv_raw);
    free(h->kv_at);
    free(h->views);
    memset(h, 0, sizeof *h);
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > ACEM_JSON_MAX_INT || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static int parse_metadata(const char *path, const cJSON *m, st_header *h, acem_error *err) {
    if (!cJSON_IsObject(m))
        return acem_fail(err, "%s: __metadata__ is not an object of strings", path);
    size_t n = (size_t)cJSON_GetArraySize(m);
    h->meta_keys = acem_alloc(n, sizeof(char *), "metadata", err);
    h->meta_values = acem_alloc(n, sizeof(char *), "metadata", err);
    if (!h->meta_keys || !h->meta_values) return -1;
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return acem_fail(err, "%s: __metadata__ value of \"%.64s\" is not a string", path,
                             e->string);
        h->meta_keys[h->n_meta] = acem_strdup(e->string, err);
        h->meta_values[h->n_meta] = acem_strdup(e->valuestring, err);
        h->n_meta++;
        if (!h->meta_keys[h->n_meta - 1] || !h->meta_values[h->n_meta - 1]) return -1;
    }
    return 0;
}

/* One tensor entry: exactly the keys dtype, shape and data_offsets. */
static int parse_tensor(const char *path, const cJSON *e, acem_tensor *t, uint64_t *begin,
                        acem_error *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return acem_fail(err, "%s: entry \"%.64s\" is not an object", path, name);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *k = e->child; k; k = k->next) {
        const cJSON **slot = strcmp(k->string, "dtype") == 0          ? &dtype
                             : strcmp(k->string, "shape") == 0        ? &shape
                             : strcmp(k->string, "data_offsets") == 0 ? &offs
                                                                      : NULL;
        if (!slot)
            return acem_fail(err, "%s: tensor \"%.64s\" has an unknown key \"%.32s\"", path, name,
                             k->string);
        if (*slot)
            return acem_fail(err, "%s: tensor \"%.64s\" repeats the key \"%s\"", path, name,
                             k->string);
        *slot = k;
    }
    if (!dtype || !shape || !offs)
        return acem_fail(err, "%s: tensor \"%.64s\" lacks %s", path, name,
                         !dtype   ? "a dtype"
                         : !shape ? "a shape"
                                  : "data_offsets");
    if (!cJSON_IsString(dtype) || acem_dtype_from_name(dtype->valuestring) == ACEM_DT_NONE)
        return acem_fail(err, "%s: tensor \"%.64s\" has an unknown dtype", path, name);
    t->dtype = acem_dtype_from_name(dtype->valuestring);

    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > ACEM_MAX_DIMS)
        return acem_fail(err, "%s: tensor \"%.64s\": shape must be a list of at most %d integers",
                         path, name, ACEM_MAX_DIMS);
    t->ndim = 0;
    t->numel = 1;
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (!json_uint(d, &v))
            return acem_fail(err,
                             "%s: tensor \"%.64s\": shape holds a value that is not a "
                             "non-negative integer",
                             path, name);
        if (!acem_mul_u64(t->numel, v, &t->numel))
            return acem_fail(err, "%s: tensor \"%.64s\": element count overflows", path, name);
        t->shape[t->ndim++] = v;
    }
    if (!acem_mul_u64(t->numel, acem_dtype_size(t->dtype), &t->nbytes))
        return acem_fail(err, "%s: tensor \"%.64s\": byte size overflows", path, name);

    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &b) ||
        !json_uint(offs->child->next, &en))
        return acem_fail(err,
                         "%s: tensor \"%.64s\": data_offsets must be two non-negative "
                         "integers",
                         path, name);
    if (en < b)
        return acem_fail(err, "%s: tensor \"%.64s\": data_offsets end before they begin", path,
                         name);
    if (en - b != t->nbytes)
        return acem_fail(err,
                         "%s: tensor \"%.64s\": data_offsets span %llu bytes but its "
                         "dtype and shape need %llu",
                         path, name, (unsigned long long)(en - b), (unsigned long long)t->nbytes);
    *begin = b;
    t->name = acem_strdup(name, err);
    return t->name ? 0 : -1;
}

static int cmp_offset(const void *a, const void *b) {
    const acem_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes; /* empty tensors first */
}

/* Sorted by offset, the tensors must cover [0, buffer_size) exactly once. */
static int check_tiling(const char *path, st_header *h, uint64_t buffer_size, acem_error *err) {
    qsort(h->tensors, h->n_tensors, sizeof *h->tensors, cmp_offset);
    uint64_t at = 0;
    for (size_t i = 0; i < h->n_tensors; i++) {
        const acem_tensor *t = &h->tensors[i];
        if (t->offset != at)
            return acem_fail(err, "%s: tensor \"%.64s\" data %s at offset %llu, expected %llu",
                             path, t->name, t->offset > at ? "leaves a gap" : "overlaps",
                             (unsigned long long)t->offset, (unsigned long long)at);
        at += t->nbytes;
    }
    if (at != buffer_size)
        return acem_fail(err, "%s: the data buffer holds %llu bytes but the tensors cover %llu",
                         path, (unsigned long long)buffer_size, (unsigned long long)at);
    return 0;
}

static int parse_json(const char *path, const char *json, size_t len, uint64_t data_start,
                      uint64_t file_size, int file, st_header *h, acem_error *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) return acem_json_error(path, len, "header is not valid JSON", err);
    int rc = -1;
    for (const char *p = end; p < json + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            acem_fail(err, "%s: header has trailing bytes after the JSON object", path);
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        acem_fail(err, "%s: header is not a JSON object", path);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(root);
    if (n > ACEM_ST_MAX_TENSORS) {
        acem_fail(err, "%s: header lists %zu tensors (limit %u)", path, n, ACEM_ST_MAX_TENSORS);
        goto out;
    }
    if (!(h->tensors = acem_alloc(n, sizeof *h->tensors, "tensor descriptors", err))) goto out;
    bool seen_meta = false;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta) {
                acem_fail(err, "%s: __metadata__ appears twice", path);
                goto out;
            }
            seen_meta = true;
            if (parse_metadata(path, e, h, err)) goto out;
            continue;
        }
        acem_tensor *t = &h->tensors[h->n_tensors];
        uint64_t begin = 0;
        if (parse_tensor(path, e, t, &begin, err)) goto out;
        h->n_tensors++;
        t->file = file;
        t->offset = begin; /* relative until tiling is checked */
    }
    if (check_tiling(path, h, file_size - data_start, err)) goto out;
    for (size_t i = 0; i < h->n_tensors; i++)
        h->tensors[i].offset += data_start;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int st_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                   acem_error *err) {
    memset(h, 0, sizeof *h);
    if (file_size < 8)
        return acem_fail(err, "%s: too small to be a safetensors file (%llu bytes)", path,
                         (unsigned long long)file_size);
    unsigned char len8[8];
    if (acem_pread_full(fd, path, len8, 8, 0, err)) return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | len8[i];
    if (n < 2 || n > ACEM_ST_MAX_HEADER)
        return acem_fail(err, "%s: header length %llu is outside [2, %llu]", path,
                         (unsigned long long)n, ACEM_ST_MAX_HEADER);
    if (n > file_size - 8)
        return acem_fail(err, "%s: header length %llu runs past the end of the file (%llu bytes)",
                         path, (unsigned long long)n, (unsigned long long)file_size);
    char *json = acem_alloc(n + 1, 1, "the header", err);
    if (!json) return -1;
    int rc = -1;
    if (acem_pread_full(fd, path, json, n, 8, err)) goto out;
    if (memchr(json, 0, n)) {
        acem_fail(err, "%s: header contains a NUL byte", path);
        goto out;
    }
    if (!acem_utf8_valid((const unsigned char *)json, n)) {
        acem_fail(err, "%s: header is not valid UTF-8", path);
        goto out;
    }
    if (json[0] != '{') {
        acem_fail(err, "%s: header does not start with '{'", path);
        goto out;
    }
    rc = parse_json(path, json, n, 8 + n, file_size, file, h, err);
out:
    free(json);
    if (rc) st_header_free(h);
    return rc;
}
