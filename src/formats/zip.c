/* zip.c — a strict reader of the uncompressed ("stored") zip archives torch.save writes.
 *
 * The end-of-central-directory record (and torch's ZIP64 record and locator) gives the
 * central directory; every entry there must be stored (method 0), unencrypted, with equal
 * compressed and uncompressed sizes, a UTF-8 name without NUL that no other entry has, and
 * a local header that agrees on the name; entries (local header + data) must lie before
 * the central directory and must not overlap. Only offsets are kept: data is read later
 * with pread. */
#include "formats.h"

#include <stdlib.h>
#include <string.h>

#define EOCD_SIZE       22u
#define EOCD64_SIZE     56u
#define LOCATOR_SIZE    20u
#define CDIR_SIZE       46u
#define LOCAL_SIZE      30u
#define MAX_COMMENT     65535u
#define ZIP_MAX_CDIR    (64u << 20)
#define ZIP_MAX_ENTRIES 1000000u

void zip_free(zip_archive *z) {
    for (size_t i = 0; i < z->n; i++)
        free(z->entries[i].name);
    free(z->entries);
    memset(z, 0, sizeof *z);
}

/* The central directory's offset, size and entry count from the (ZIP64) end records. */
static int find_cdir(const char *path, int fd, uint64_t size, uint64_t *cd_off, uint64_t *cd_len,
                     uint64_t *count, acem_error *err) {
    if (size < EOCD_SIZE) return acem_fail(err, "%s: too small to be a zip archive", path);
    uint64_t tail = size < EOCD_SIZE + MAX_COMMENT ? size : EOCD_SIZE + MAX_COMMENT;
    unsigned char *buf = acem_alloc(tail, 1, "the zip directory", err);
    if (!buf) return -1;
    int rc = acem_pread_full(fd, path, buf, tail, size - tail, err);
    uint64_t at = tail; /* the last record whose comment ends exactly at the end of file */
    for (uint64_t i = tail - EOCD_SIZE + 1; !rc && i-- > 0;)
        if (acem_le(buf + i, 4) == 0x06054b50 && i + EOCD_SIZE + acem_le(buf + i + 20, 2) == tail) {
            at = i;
            break;
        }
    if (rc || at == tail) {
        free(buf);
        return rc ? rc : acem_fail(err, "%s: no zip end-of-central-directory record", path);
    }
    const unsigned char *e = buf + at;
    uint64_t eocd = size - tail + at;
    *count = acem_le(e + 10, 2);
    *cd_len = acem_le(e + 12, 4);
    *cd_off = acem_le(e + 16, 4);
    if (acem_le(e + 4, 2) != 0 || acem_le(e + 6, 2) != 0 || acem_le(e + 8, 2) != *count)
        rc = acem_fail(err, "%s: multi-disk zip archives are not supported", path);
    free(buf);
    if (rc) return rc;
    if (*count == 0xFFFF || *cd_len == 0xFFFFFFFF || *cd_off == 0xFFFFFFFF) {
        unsigned char loc[LOCATOR_SIZE], rec[EOCD64_SIZE];
        if (eocd < LOCATOR_SIZE ||
            acem_pread_full(fd, path, loc, LOCATOR_SIZE, eocd - LOCATOR_SIZE, err))
            return acem_fail(err, "%s: ZIP64 end-of-central-directory locator missing", path);
        uint64_t rec_off = acem_le(loc + 8, 8);
        if (acem_le(loc, 4) != 0x07064b50 || acem_le(loc + 4, 4) != 0 || acem_le(loc + 16, 4) > 1 ||
            rec_off > eocd - LOCATOR_SIZE || eocd - LOCATOR_SIZE - rec_off < EOCD64_SIZE ||
            acem_pread_full(fd, path, rec, EOCD64_SIZE, rec_off, err) ||
            acem_le(rec, 4) != 0x06064b50 || acem_le(rec + 24, 8) != acem_le(rec + 32, 8))
            return acem_fail(err, "%s: malformed ZIP64 end-of-central-directory record", path);
        *count = acem_le(rec + 32, 8);
        *cd_len = acem_le(rec + 40, 8);
        *cd_off = acem_le(rec + 48, 8);
        eocd = rec_off;
    }
    uint64_t cd_end;
    if (!acem_add_u64(*cd_off, *cd_len, &cd_end) || cd_end > eocd)
        return acem_fail(err, "%s: the zip central directory lies outside the file", path);
    if (*cd_len > ZIP_MAX_CDIR || *count > ZIP_MAX_ENTRIES || *count > *cd_len / CDIR_SIZE)
        return acem_fail(err, "%s: the zip central directory claims %llu entries in %llu bytes",
                         path, (unsigned long long)*count, (unsigned long long)*cd_len);
    return 0;
}

/* ZIP64 extra field: 64-bit sizes / offset for the fields that hold 0xFFFFFFFF. */
static int zip64_extra(const unsigned char *x, uint64_t len, uint64_t *usize, uint64_t *csize,
                       uint64_t *off) {
    uint64_t *want[3] = {*usize == 0xFFFFFFFF ? usize : NULL, *csize == 0xFFFFFFFF ? csize : NULL,
                         *off == 0xFFFFFFFF ? off : NULL};
    for (uint64_t i = 0; i + 4 <= len;) {
        uint64_t id = acem_le(x + i, 2), n = acem_le(x + i + 2, 2);
        if (i + 4 + n > len) return -1;
        if (id == 1) {
            uint64_t at = i + 4;
            for (int k = 0; k < 3; k++)
                if (want[k]) {
                    if (at + 8 > i + 4 + n) return -1;
                    *want[k] = acem_le(x + at, 8);
                    want[k] = NULL;
                    at += 8;
                }
        }
        i += 4 + n;
    }
    return want[0] || want[1] || want[2] ? -1 : 0;
}

static int cmp_start(const void *a, const void *b) {
    const zip_entry *x = a, *y = b;
    return x->header < y->header ? -1 : x->header > y->header;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const zip_entry *)a)->name, ((const zip_entry *)b)->name);
}

/* Checks an entry's local header against the central directory and sets its data offset. */
static int check_local(const char *path, int fd, zip_entry *e, uint64_t cd_off, acem_error *err) {
    unsigned char h[LOCAL_SIZE];
    size_t n = strlen(e->name);
    if (e->header > cd_off || cd_off - e->header < LOCAL_SIZE ||
        acem_pread_full(fd, path, h, LOCAL_SIZE, e->header, err) || acem_le(h, 4) != 0x04034b50)
        return acem_fail(err, "%s: zip entry \"%.64s\" has no local header", path, e->name);
    uint64_t name_len = acem_le(h + 26, 2), extra = acem_le(h + 28, 2);
    char *name = acem_alloc(n + 1, 1, "a zip entry name", err);
    if (!name) return -1;
    int rc = name_len != n || acem_le(h + 8, 2) != 0 || (acem_le(h + 6, 2) & 1) ||
             cd_off - e->header < LOCAL_SIZE + n ||
             acem_pread_full(fd, path, name, n, e->header + LOCAL_SIZE, err) ||
             memcmp(name, e->name, n) != 0;
    free(name);
    if (rc)
        return acem_fail(err, "%s: zip entry \"%.64s\": local header disagrees with the directory",
                         path, e->name);
    e->data = e->header + LOCAL_SIZE + n + extra;
    if (e->data > cd_off || e->size > cd_off - e->data)
        return acem_fail(err, "%s: zip entry \"%.64s\" runs into the central directory", path,
                         e->name);
    return 0;
}

static int read_entries(const char *path, int fd, const unsigned char *cd, uint64_t cd_len,
                        uint64_t cd_off, zip_archive *z, acem_error *err) {
    uint64_t at = 0;
    for (size_t i = 0; i < z->cap; i++) {
        const unsigned char *c = cd + at;
        if (cd_len - at < CDIR_SIZE || acem_le(c, 4) != 0x02014b50)
            return acem_fail(err, "%s: malformed zip central directory entry %zu", path, i);
        uint64_t method = acem_le(c + 10, 2), csize = acem_le(c + 20, 4),
                 usize = acem_le(c + 24, 4);
        uint64_t n = acem_le(c + 28, 2), m = acem_le(c + 30, 2), k = acem_le(c + 32, 2),
                 off = acem_le(c + 42, 4);
        if (cd_len - at - CDIR_SIZE < n + m + k)
            return acem_fail(err, "%s: zip central directory entry %zu is truncated", path, i);
        zip_entry *e = &z->entries[z->n];
        if (!(e->name = acem_alloc(n + 1, 1, "a zip entry name", err))) return -1;
        memcpy(e->name, c + CDIR_SIZE, (size_t)n);
        z->n++;
        if (n == 0 || memchr(e->name, 0, (size_t)n) ||
            !acem_utf8_valid((const unsigned char *)e->name, (size_t)n))
            return acem_fail(err, "%s: zip entry %zu has an empty or invalid name", path, i);
        if (zip64_extra(c + CDIR_SIZE + n, m, &usize, &csize, &off))
            return acem_fail(err, "%s: zip entry \"%.64s\" has a malformed ZIP64 field", path,
                             e->name);
        if (method != 0 || (acem_le(c + 8, 2) & 1) || csize != usize)
            return acem_fail(err,
                             "%s: zip entry \"%.64s\" is compressed or encrypted (method %llu); "
                             "acem reads the stored entries torch.save writes",
                             path, e->name, (unsigned long long)method);
        e->header = off;
        e->size = usize;
        e->crc = (uint32_t)acem_le(c + 16, 4);
        if (check_local(path, fd, e, cd_off, err)) return -1;
        at += CDIR_SIZE + n + m + k;
    }
    qsort(z->entries, z->n, sizeof *z->entries, cmp_start);
    for (size_t i = 1; i < z->n; i++)
        if (z->entries[i].header < z->entries[i - 1].data + z->entries[i - 1].size)
            return acem_fail(err, "%s: zip entries \"%.64s\" and \"%.64s\" overlap", path,
                             z->entries[i - 1].name, z->entries[i].name);
    qsort(z->entries, z->n, sizeof *z->entries, cmp_name);
    for (size_t i = 1; i < z->n; i++)
        if (strcmp(z->entries[i].name, z->entries[i - 1].name) == 0)
            return acem_fail(err, "%s: zip entry \"%.64s\" appears twice", path,
                             z->entries[i].name);
    return 0;
}

int zip_open(const char *path, int fd, uint64_t size, zip_archive *z, acem_error *err) {
    memset(z, 0, sizeof *z);
    uint64_t cd_off = 0, cd_len = 0, count = 0;
    if (find_cdir(path, fd, size, &cd_off, &cd_len, &count, err)) return -1;
    unsigned char *cd = acem_alloc(cd_len + 1, 1, "the zip directory", err);
    z->cap = (size_t)count;
    if (!cd || !(z->entries = acem_alloc(count + 1, sizeof *z->entries, "zip entries", err)) ||
        acem_pread_full(fd, path, cd, cd_len, cd_off, err) ||
        read_entries(path, fd, cd, cd_len, cd_off, z, err)) {
        free(cd);
        zip_free(z);
        return -1;
    }
    free(cd);
    return 0;
}

const zip_entry *zip_find(const zip_archive *z, const char *name) {
    zip_entry key = {.name = (char *)name};
    return bsearch(&key, z->entries, z->n, sizeof *z->entries, cmp_name);
}

uint32_t zip_crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}
