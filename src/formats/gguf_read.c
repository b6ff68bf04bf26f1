/* gguf_read.c — strict validation of a GGUF file (versions 2 and 3, little-endian).
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 key-value count; key-values (string
 * key, u32 value type, value); tensor infos (string name, u32 n_dims, u64 ne[n_dims] with
 * ne[0] the fastest-varying dimension, u32 ggml type, u64 offset); padding to the
 * alignment (general.alignment, default 32); the data section. A string is a u64 length
 * and that many UTF-8 bytes. As in ggml's own reader, every tensor's offset must be the
 * aligned sum of the sizes before it, so tensors neither overlap nor leave gaps. The
 * shapes given to the rest of acem are row-major: ne reversed. */
#include "formats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    GT_U8,
    GT_I8,
    GT_U16,
    GT_I16,
    GT_U32,
    GT_I32,
    GT_F32,
    GT_BOOL,
    GT_STRING,
    GT_ARRAY,
    GT_U64,
    GT_I64,
    GT_F64,
    GT_COUNT
};
static const char *const type_name[GT_COUNT] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                "int32",  "float32", "bool",   "string", "array",
                                                "uint64", "int64",   "float64"};
/* Bytes per value; the smallest possible encoding for strings (8) and arrays (12). */
static const uint8_t type_size[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};

/* ggml's plain element types acem maps onto its dtypes. */
static const struct {
    uint32_t ggml;
    acem_dtype dt;
} plain_types[] = {
    {0, ACEM_DT_F32}, {1, ACEM_DT_F16},  {30, ACEM_DT_BF16}, {28, ACEM_DT_F64},
    {24, ACEM_DT_I8}, {25, ACEM_DT_I16}, {26, ACEM_DT_I32},  {27, ACEM_DT_I64},
};

acem_dtype gguf_plain_dtype(uint32_t ggml_type) {
    for (size_t i = 0; i < sizeof plain_types / sizeof *plain_types; i++)
        if (plain_types[i].ggml == ggml_type) return plain_types[i].dt;
    return ACEM_DT_NONE;
}

int64_t gguf_plain_type(acem_dtype dt) {
    for (size_t i = 0; i < sizeof plain_types / sizeof *plain_types; i++)
        if (plain_types[i].dt == dt) return plain_types[i].ggml;
    return -1;
}

/* The file read front to back into a growing buffer, never past the header limit. */
typedef struct cursor {
    const char *path;
    int fd;
    uint64_t size, have, cap, pos;
    unsigned char *buf;
    acem_error *err;
} cursor;

/* Makes bytes [pos, pos + n) available; `what` names them in the error. */
static int need(cursor *c, uint64_t n, const char *what) {
    uint64_t end;
    if (!acem_add_u64(c->pos, n, &end) || end > c->size)
        return acem_fail(c->err, "%s: %s runs past the end of the file", c->path, what);
    if (end > ACEM_GGUF_MAX_HEADER)
        return acem_fail(c->err, "%s: %s lies beyond the %llu-byte limit on GGUF headers", c->path,
                         what, ACEM_GGUF_MAX_HEADER);
    if (end <= c->have) return 0;
    uint64_t cap = c->cap ? c->cap : 65536;
    while (cap < end)
        cap *= 2;
    if (cap > c->size) cap = c->size;
    if (cap > ACEM_GGUF_MAX_HEADER) cap = ACEM_GGUF_MAX_HEADER;
    unsigned char *grown = realloc(c->buf, (size_t)cap);
    if (!grown) return acem_fail(c->err, "%s: out of memory reading the GGUF header", c->path);
    c->buf = grown;
    c->cap = cap;
    if (acem_pread_full(c->fd, c->path, c->buf + c->have, cap - c->have, c->have, c->err))
        return -1;
    c->have = cap;
    return 0;
}

static int read_uint(cursor *c, int n, uint64_t *v, const char *what) {
    if (need(c, (uint64_t)n, what)) return -1;
    *v = acem_le(c->buf + c->pos, n);
    c->pos += (uint64_t)n;
    return 0;
}

/* A string of at most `limit` bytes of UTF-8 without NUL; *at is its offset in buf. */
static int read_string(cursor *c, uint64_t limit, uint64_t *at, uint64_t *len, const char *what) {
    if (read_uint(c, 8, len, what)) return -1;
    if (*len > limit)
        return acem_fail(c->err, "%s: %s is %llu bytes long (limit %llu)", c->path, what,
                         (unsigned long long)*len, (unsigned long long)limit);
    if (need(c, *len, what)) return -1;
    *at = c->pos;
    if (memchr(c->buf + *at, 0, (size_t)*len) || !acem_utf8_valid(c->buf + *at, (size_t)*len))
        return acem_fail(c->err, "%s: %s is not valid UTF-8 text without NUL bytes", c->path, what);
    c->pos += *len;
    return 0;
}

/* Display text of a value, cut at a fixed length. */
typedef struct text {
    char s[240];
    size_t n;
} text;

static void put(text *t, const char *fmt, ...) ACEM_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...) {
    if (t->n >= sizeof t->s - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t->s + t->n, sizeof t->s - t->n, fmt, ap);
    va_end(ap);
    t->n = k < 0 ? t->n : t->n + (size_t)k;
    if (t->n >= sizeof t->s - 1) { /* cut at a character boundary, then mark the cut */
        size_t cut = sizeof t->s - 4;
        while (cut > 0 && ((unsigned char)t->s[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(t->s + cut, "...", 4);
        t->n = sizeof t->s - 1;
    }
}

/* The longest prefix of s[0..len) of at most max bytes that ends on a character boundary. */
static int utf8_prefix(const unsigned char *s, uint64_t len, int max) {
    if (len <= (uint64_t)max) return (int)len;
    while (max > 0 && (s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

static void put_number(text *t, int type, const unsigned char *p) {
    uint64_t u = acem_le(p, type_size[type]);
    switch (type) {
    case GT_I8: put(t, "%d", (int8_t)u); break;
    case GT_I16: put(t, "%d", (int16_t)u); break;
    case GT_I32: put(t, "%d", (int32_t)u); break;
    case GT_I64: put(t, "%lld", (long long)(int64_t)u); break;
    case GT_F32: {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        put(t, "%g", f);
        break;
    }
    case GT_F64: {
        double d;
        memcpy(&d, &u, 8);
        put(t, "%g", d);
        break;
    }
    case GT_BOOL: put(t, "%s", u ? "true" : "false"); break;
    default: put(t, "%llu", (unsigned long long)u); break;
    }
}

#define SHOWN_ITEMS 8

static int read_value(cursor *c, uint32_t type, int depth, text *t, const char *what);

static int read_array(cursor *c, int depth, text *t, const char *what) {
    if (depth >= ACEM_GGUF_MAX_NESTING)
        return acem_fail(c->err, "%s: %s nests arrays deeper than %d", c->path, what,
                         ACEM_GGUF_MAX_NESTING);
    uint64_t type, count;
    if (read_uint(c, 4, &type, what) || read_uint(c, 8, &count, what)) return -1;
    if (type >= GT_COUNT)
        return acem_fail(c->err, "%s: %s is an array of unknown value type %llu", c->path, what,
                         (unsigned long long)type);
    if (count > (c->size - c->pos) / type_size[type])
        return acem_fail(c->err, "%s: %s claims %llu elements of type %s, more than the file holds",
                         c->path, what, (unsigned long long)count, type_name[type]);
    put(t, "[");
    if (type != GT_STRING && type != GT_ARRAY) { /* fixed size: one bounds check */
        if (need(c, count * type_size[type], what)) return -1;
        for (uint64_t i = 0; i < count; i++) {
            const unsigned char *p = c->buf + c->pos + i * type_size[type];
            if (type == GT_BOOL && *p > 1)
                return acem_fail(c->err, "%s: %s holds a bool that is neither 0 nor 1", c->path,
                                 what);
            if (i < SHOWN_ITEMS) {
                put(t, i ? ", " : "");
                put_number(t, (int)type, p);
            }
        }
        c->pos += count * type_size[type];
    } else {
        for (uint64_t i = 0; i < count; i++) {
            text skip = {.n = sizeof skip.s}; /* items past the shown ones are not rendered */
            if (i < SHOWN_ITEMS) put(t, i ? ", " : "");
            if (read_value(c, (uint32_t)type, depth + 1, i < SHOWN_ITEMS ? t : &skip, what))
                return -1;
        }
    }
    if (count > SHOWN_ITEMS) put(t, ", ... (%llu items)", (unsigned long long)count);
    put(t, "]");
    return 0;
}

static int read_value(cursor *c, uint32_t type, int depth, text *t, const char *what) {
    if (type == GT_ARRAY) return read_array(c, depth, t, what);
    if (type == GT_STRING) {
        uint64_t at, len;
        if (read_string(c, ACEM_GGUF_MAX_STRING, &at, &len, what)) return -1;
        const unsigned char *p = c->buf + at;
        if (depth == 0)
            put(t, "%.*s", utf8_prefix(p, len, 200), (const char *)p);
        else
            put(t, "\"%.*s\"", utf8_prefix(p, len, 40), (const char *)p);
        return 0;
    }
    if (need(c, type_size[type], what)) return -1;
    if (type == GT_BOOL && c->buf[c->pos] > 1)
        return acem_fail(c->err, "%s: %s holds a bool that is neither 0 nor 1", c->path, what);
    put_number(t, (int)type, c->buf + c->pos);
    c->pos += type_size[type];
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_kvs(cursor *c, st_header *h, uint64_t n_kv) {
    uint64_t start = c->pos;
    if (!(h->meta_keys = acem_alloc(n_kv + 1, sizeof(char *), "metadata", c->err)) ||
        !(h->meta_values = acem_alloc(n_kv + 1, sizeof(char *), "metadata", c->err)) ||
        !(h->kv_at = acem_alloc(n_kv + 1, sizeof(uint64_t), "metadata", c->err)))
        return -1;
    h->alignment = ACEM_GGUF_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        char what[128];
        uint64_t at, len, type;
        h->kv_at[i] = c->pos - start;
        snprintf(what, sizeof what, "the key of key-value %llu", (unsigned long long)i);
        if (read_string(c, 65535, &at, &len, what)) return -1;
        if (len == 0) return acem_fail(c->err, "%s: %s is empty", c->path, what);
        char *key = acem_alloc(len + 1, 1, "a key", c->err);
        if (!key) return -1;
        memcpy(key, c->buf + at, (size_t)len);
        h->meta_keys[h->n_meta++] = key; /* owned by h from here on */
        snprintf(what, sizeof what, "key-value \"%.64s\"", key);
        if (read_uint(c, 4, &type, what)) return -1;
        if (type >= GT_COUNT)
            return acem_fail(c->err, "%s: %s has unknown value type %llu", c->path, what,
                             (unsigned long long)type);
        uint64_t value_at = c->pos;
        text t = {.n = 0};
        if (read_value(c, (uint32_t)type, 0, &t, what)) return -1;
        if (strcmp(key, "general.alignment") == 0) {
            uint64_t a = type == GT_U32 ? acem_le(c->buf + value_at, 4) : 0;
            if (a == 0 || (a & (a - 1)) || a > (1u << 20))
                return acem_fail(c->err,
                                 "%s: general.alignment must be a uint32 power of two up to 2^20",
                                 c->path);
            h->alignment = (uint32_t)a;
        }
        if (!(h->meta_values[h->n_meta - 1] = acem_strdup(t.s, c->err))) return -1;
    }
    h->kv_at[n_kv] = c->pos - start;
    h->kv_len = c->pos - start;
    if (!(h->kv_raw = acem_alloc(h->kv_len + 1, 1, "metadata", c->err))) return -1;
    memcpy(h->kv_raw, c->buf + start, (size_t)h->kv_len);
    char **sorted = acem_alloc(n_kv + 1, sizeof(char *), "metadata", c->err);
    if (!sorted) return -1;
    memcpy(sorted, h->meta_keys, n_kv * sizeof(char *));
    qsort(sorted, n_kv, sizeof *sorted, cmp_str);
    int rc = 0;
    for (uint64_t i = 1; i < n_kv && !rc; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            rc = acem_fail(c->err, "%s: key \"%.64s\" appears twice", c->path, sorted[i]);
    free(sorted);
    return rc;
}

/* One tensor info; *stored is its size in the data section. */
static int read_tensor_info(cursor *c, uint64_t i, acem_tensor *t, uint64_t *stored) {
    char what[128];
    uint64_t at, len, n_dims, type;
    snprintf(what, sizeof what, "the name of tensor %llu", (unsigned long long)i);
    if (read_string(c, ACEM_GGUF_MAX_NAME, &at, &len, what)) return -1;
    if (len == 0) return acem_fail(c->err, "%s: %s is empty", c->path, what);
    char *name = acem_alloc(len + 1, 1, "a tensor name", c->err);
    if (!name) return -1;
    memcpy(name, c->buf + at, (size_t)len);
    t->name = name;
    snprintf(what, sizeof what, "tensor \"%.64s\"", name);
    if (read_uint(c, 4, &n_dims, what)) return -1;
    if (n_dims < 1 || n_dims > 4)
        return acem_fail(c->err, "%s: %s has %llu dimensions (GGUF allows 1 to 4)", c->path, what,
                         (unsigned long long)n_dims);
    t->ndim = (int)n_dims;
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t ne;
        if (read_uint(c, 8, &ne, what)) return -1;
        if (ne > INT64_MAX || !acem_mul_u64(t->numel, ne, &t->numel))
            return acem_fail(c->err, "%s: %s: element count overflows", c->path, what);
        t->shape[t->ndim - 1 - d] = ne; /* ne[0] varies fastest: the last row-major axis */
    }
    if (read_uint(c, 4, &type, what) || read_uint(c, 8, &t->offset, what)) return -1;
    t->quant = acem_quant_from_ggml((uint32_t)type);
    t->dtype = t->quant != ACEM_QUANT_NONE ? ACEM_DT_F32 : gguf_plain_dtype((uint32_t)type);
    if (t->dtype == ACEM_DT_NONE || type > UINT32_MAX)
        return acem_fail(c->err,
                         "%s: %s has ggml type %llu, which acem does not read (F32, F16, BF16, "
                         "F64, I8-I64, Q8_0, Q4_0, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, "
                         "Q8_K)",
                         c->path, what, (unsigned long long)type);
    uint64_t row = t->shape[t->ndim - 1];
    if (t->quant != ACEM_QUANT_NONE && row % acem_quant_block_elems(t->quant) != 0)
        return acem_fail(c->err, "%s: %s: rows of %llu values do not split into %s blocks of %u",
                         c->path, what, (unsigned long long)row, acem_quant_name(t->quant),
                         acem_quant_block_elems(t->quant));
    bool ok = acem_mul_u64(t->numel, acem_dtype_size(t->dtype), &t->nbytes) &&
              (t->quant == ACEM_QUANT_NONE ? (*stored = t->nbytes, true)
                                           : acem_quant_stored_bytes(t->quant, t->numel, stored));
    if (!ok) return acem_fail(c->err, "%s: %s: byte size overflows", c->path, what);
    return 0;
}

static uint64_t align_up(uint64_t x, uint32_t a, bool *ok) {
    uint64_t r;
    *ok = *ok && acem_add_u64(x, a - 1, &r);
    return *ok ? r & ~(uint64_t)(a - 1) : 0;
}

/* Offsets in info order must be the aligned running sum of the sizes; data inside the file. */
static int check_layout(cursor *c, st_header *h, const uint64_t *stored) {
    bool ok = true;
    uint64_t data = align_up(c->pos, h->alignment, &ok), expected = 0, end = data;
    for (size_t i = 0; i < h->n_tensors && ok; i++) {
        acem_tensor *t = &h->tensors[i];
        if (t->offset != expected)
            return acem_fail(
                c->err, "%s: tensor \"%.64s\" has data offset %llu, expected %llu (%s)", c->path,
                t->name, (unsigned long long)t->offset, (unsigned long long)expected,
                t->offset % h->alignment ? "not aligned"
                : t->offset < expected   ? "overlaps the tensor before it"
                                         : "leaves a gap");
        ok = acem_add_u64(data, t->offset, &t->offset) && acem_add_u64(t->offset, stored[i], &end);
        if (ok && end > c->size)
            return acem_fail(c->err,
                             "%s: tensor \"%.64s\" data runs past the end of the file (%llu "
                             "bytes; was it truncated?)",
                             c->path, t->name, (unsigned long long)c->size);
        expected = align_up(expected + stored[i], h->alignment, &ok);
    }
    if (!ok) return acem_fail(c->err, "%s: tensor data offsets overflow", c->path);
    if (c->size > data + expected) /* only the last tensor's padding may follow it */
        return acem_fail(c->err, "%s: %llu bytes follow the end of the tensor data", c->path,
                         (unsigned long long)(c->size - end));
    return 0;
}

int gguf_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                     acem_error *err) {
    memset(h, 0, sizeof *h);
    cursor c = {.path = path, .fd = fd, .size = file_size, .err = err};
    uint64_t magic, version, n_tensors, n_kv;
    uint64_t *stored = NULL;
    int rc = -1;
    const char *what = "the GGUF header";
    if (read_uint(&c, 4, &magic, what) || read_uint(&c, 4, &version, what) ||
        read_uint(&c, 8, &n_tensors, what) || read_uint(&c, 8, &n_kv, what))
        goto out;
    if (version == 0x03000000 || version == 0x02000000) {
        acem_fail(err, "%s: big-endian GGUF files are not supported", path);
        goto out;
    }
    if (version != 2 && version != 3) {
        acem_fail(err, "%s: GGUF version %llu is not supported (only 2 and 3)", path,
                  (unsigned long long)version);
        goto out;
    }
    /* Every key-value takes at least 13 bytes and every tensor info at least 32. */
    if (n_tensors > ACEM_ST_MAX_TENSORS || n_kv > ACEM_GGUF_MAX_KV ||
        n_kv * 13 + n_tensors * 32 > file_size - c.pos) {
        acem_fail(err,
                  "%s: %llu tensors and %llu key-values cannot fit in %llu bytes (or pass "
                  "the limits of %u and %u)",
                  path, (unsigned long long)n_tensors, (unsigned long long)n_kv,
                  (unsigned long long)file_size, ACEM_ST_MAX_TENSORS, ACEM_GGUF_MAX_KV);
        goto out;
    }
    if (read_kvs(&c, h, n_kv) ||
        !(h->tensors = acem_alloc(n_tensors + 1, sizeof *h->tensors, "tensor infos", err)) ||
        !(stored = acem_alloc(n_tensors + 1, sizeof *stored, "tensor infos", err)))
        goto out;
    for (uint64_t i = 0; i < n_tensors; i++) {
        acem_tensor *t = &h->tensors[h->n_tensors];
        t->file = file;
        if (read_tensor_info(&c, i, t, &stored[i])) {
            free((char *)t->name);
            goto out;
        }
        h->n_tensors++;
    }
    rc = check_layout(&c, h, stored);
out:
    free(stored);
    free(c.buf);
    if (rc) st_header_free(h);
    return rc;
}
