/* torch_read.c — a torch.save zip archive (PyTorch >= 1.6) as a checkpoint header.
 *
 * The archive holds <prefix>/data.pkl (the pickled state_dict, read by the restricted
 * unpickler in pickle.c), <prefix>/data/<key> (one stored entry per storage, raw
 * little-endian elements) and <prefix>/version. Every tensor is a view (offset, size,
 * stride) of a storage; it must lie inside its storage, whose entry must hold exactly its
 * elements. Row-major views point straight at their bytes; others (transposed, strided)
 * keep their strides for the checkpoint to gather. Several tensors may share a storage
 * (tied weights). */
#include "formats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The one <prefix>/data.pkl entry; its prefix is copied to prefix. */
static const zip_entry *find_pickle(const char *path, const zip_archive *z, char *prefix,
                                    size_t cap, acem_error *err) {
    const zip_entry *found = NULL;
    for (size_t i = 0; i < z->n; i++) {
        const char *s = strrchr(z->entries[i].name, '/');
        if (strcmp(s ? s + 1 : z->entries[i].name, "data.pkl") != 0) continue;
        if (found) {
            acem_fail(err, "%s: the archive holds more than one data.pkl", path);
            return NULL;
        }
        found = &z->entries[i];
    }
    if (!found) {
        acem_fail(err, "%s: a zip archive without data.pkl is not a torch.save checkpoint", path);
        return NULL;
    }
    size_t n = strlen(found->name) - strlen("data.pkl");
    if (n + 64 > cap) {
        acem_fail(err, "%s: the archive's entry names are too long", path);
        return NULL;
    }
    memcpy(prefix, found->name, n);
    prefix[n] = 0;
    return found;
}

static int read_entry(const char *path, int fd, const zip_entry *e, unsigned char **out,
                      acem_error *err) {
    if (e->size > ACEM_PICKLE_MAX_BYTES)
        return acem_fail(err, "%s: %s is larger than the %llu-byte limit", path, e->name,
                         ACEM_PICKLE_MAX_BYTES);
    if (!(*out = acem_alloc(e->size + 1, 1, "data.pkl", err))) return -1;
    if (acem_pread_full(fd, path, *out, e->size, e->data, err)) return -1;
    if (zip_crc32(*out, (size_t)e->size) != e->crc)
        return acem_fail(err, "%s: %s is corrupt (CRC mismatch)", path, e->name);
    return 0;
}

/* One tensor: bounds against its storage, and a direct or strided layout. */
static int place(const char *path, const zip_archive *z, const char *prefix, const torch_ref *r,
                 acem_tensor *t, tensor_view *v, acem_error *err) {
    char name[4096 + 128];
    snprintf(name, sizeof name, "%sdata/%s", prefix, r->key);
    const zip_entry *e = strlen(r->key) < 4096 ? zip_find(z, name) : NULL;
    size_t es = acem_dtype_size(r->dtype);
    uint64_t storage_bytes, numel = 1, last = r->offset, step;
    if (!e)
        return acem_fail(err, "%s: tensor \"%.64s\": storage \"%.64s\" is not in the archive", path,
                         r->name, r->key);
    if (!acem_mul_u64(r->storage_numel, es, &storage_bytes) || storage_bytes != e->size)
        return acem_fail(err,
                         "%s: tensor \"%.64s\": storage \"%.64s\" holds %llu bytes, not %llu "
                         "elements of %s",
                         path, r->name, r->key, (unsigned long long)e->size,
                         (unsigned long long)r->storage_numel, acem_dtype_name(r->dtype));
    bool ok = true;
    for (int d = 0; d < r->ndim; d++) {
        ok = ok && acem_mul_u64(numel, r->size[d], &numel);
        if (r->size[d] > 0)
            ok = ok && acem_mul_u64(r->size[d] - 1, r->stride[d], &step) &&
                 acem_add_u64(last, step, &last);
    }
    if (!ok || (numel > 0 && last >= r->storage_numel))
        return acem_fail(err,
                         "%s: tensor \"%.64s\" (offset %llu) reaches past its storage of %llu "
                         "elements",
                         path, r->name, (unsigned long long)r->offset,
                         (unsigned long long)r->storage_numel);
    t->name = r->name;
    t->dtype = r->dtype;
    t->ndim = r->ndim;
    memcpy(t->shape, r->size, sizeof r->size);
    t->numel = numel;
    t->nbytes = numel * es;
    t->offset = e->data + r->offset * es;
    uint64_t expect = 1; /* row-major strides; axes of length 1 may have any stride */
    for (int d = r->ndim - 1; d >= 0; d--) {
        if (r->size[d] != 1 && r->stride[d] != expect) v->strided = numel > 0;
        expect *= r->size[d];
    }
    v->base = t->offset;
    v->span = numel ? last - r->offset + 1 : 0;
    memcpy(v->stride, r->stride, sizeof r->stride);
    return 0;
}

static int build(const char *path, int fd, const zip_archive *z, int file, st_header *h,
                 acem_error *err) {
    char prefix[4096 + 64];
    const zip_entry *pkl = find_pickle(path, z, prefix, sizeof prefix - 64, err);
    if (!pkl) return -1;
    char name[sizeof prefix + 16];
    snprintf(name, sizeof name, "%sbyteorder", prefix);
    const zip_entry *order = zip_find(z, name);
    unsigned char *buf = NULL;
    if (order && (read_entry(path, fd, order, &buf, err) || order->size != 6 ||
                  memcmp(buf, "little", 6) != 0)) {
        free(buf);
        return acem_fail(err, "%s: only little-endian torch archives are supported", path);
    }
    free(buf);
    buf = NULL;
    torch_ref *refs = NULL;
    size_t n = 0;
    int rc = read_entry(path, fd, pkl, &buf, err) ||
                     pickle_state_dict(path, buf, (size_t)pkl->size, &refs, &n, err)
                 ? -1
                 : 0;
    free(buf);
    if (!rc && n > ACEM_ST_MAX_TENSORS)
        rc = acem_fail(err, "%s: %zu tensors (limit %u)", path, n, ACEM_ST_MAX_TENSORS);
    if (!rc && (!(h->tensors = acem_alloc(n + 1, sizeof *h->tensors, "tensors", err)) ||
                !(h->views = acem_alloc(n + 1, sizeof *h->views, "tensor views", err))))
        rc = -1;
    for (size_t i = 0; !rc && i < n; i++) {
        h->tensors[i].file = file;
        rc = place(path, z, prefix, &refs[i], &h->tensors[i], &h->views[i], err);
        if (!rc) {
            refs[i].name = NULL; /* the tensor owns it now */
            h->n_tensors++;
        }
    }
    torch_refs_free(refs, n);
    return rc;
}

int torch_header_read(const char *path, int fd, uint64_t file_size, int file, st_header *h,
                      acem_error *err) {
    memset(h, 0, sizeof *h);
    zip_archive z;
    if (zip_open(path, fd, file_size, &z, err)) return -1;
    int rc = build(path, fd, &z, file, h, err);
    zip_free(&z);
    if (rc) st_header_free(h);
    return rc;
}
