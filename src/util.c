/* util.c — errors, checked allocation, formatting, clocks, paths. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

int acem_fail(acem_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* One line, always: a message quoting a hostile name must not break it. */
        for (char *p = err->msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return -1;
}

int acem_fail_naming(acem_error *err, const char *path) {
    if (err && !strstr(err->msg, path)) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err->msg);
        acem_fail(err, "%s: %s", path, inner);
    }
    return -1;
}

int acem_warn(acem_warnings *w, acem_error *err, const char *fmt, ...) {
    acem_error msg;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg.msg, sizeof msg.msg, fmt, ap);
    va_end(ap);
    if (w->o->strict) return acem_fail(err, "%s (an error with --strict)", msg.msg);
    for (char *p = msg.msg; *p; p++) /* one line, as errors are */
        if (*p == '\n' || *p == '\r') *p = ' ';
    char **grown = realloc(w->msgs, (w->n + 1) * sizeof *grown);
    if (!grown) return acem_fail(err, "out of memory for a warning");
    w->msgs = grown;
    if (!(w->msgs[w->n] = acem_strdup(msg.msg, err))) return -1;
    w->n++;
    if (w->o->warning) w->o->warning(w->o->warning_user, msg.msg);
    return 0;
}

void acem_warnings_free(acem_warnings *w) {
    for (size_t i = 0; i < w->n; i++)
        free(w->msgs[i]);
    free(w->msgs);
    w->msgs = NULL;
    w->n = 0;
}

void *acem_alloc(size_t n, size_t size, const char *what, acem_error *err) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        acem_fail(err, "allocation for %s overflows (%zu x %zu bytes)", what, n, size);
        return NULL;
    }
    void *p = calloc(total ? total : 1, 1);
    if (!p) {
        char b[32];
        acem_fail(err, "out of memory allocating %s for %s", acem_format_bytes(total, b, sizeof b),
                  what);
    }
    return p;
}

char *acem_strdup(const char *s, acem_error *err) {
    size_t n = strlen(s) + 1;
    char *d = acem_alloc(n, 1, "a string", err);
    if (d) memcpy(d, s, n);
    return d;
}

const char *acem_format_bytes(uint64_t n, char *buf, size_t len) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

double acem_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *acem_format_double(double v, char *buf, size_t len) {
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(buf, len, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

bool acem_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The Hugging Face cache repository (".../models--org--name", or datasets--, spaces--) of a
 * path inside one of its snapshots, cut in place; false when real is not in a snapshot. */
static bool cut_to_cache_repo(char *real) {
    static const char *const kinds[] = {"models--", "datasets--", "spaces--"};
    for (char *s = strstr(real, "/snapshots/"); s; s = strstr(s + 1, "/snapshots/")) {
        const char *repo = s;
        while (repo > real && repo[-1] != '/')
            repo--;
        for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
            if (strncmp(repo, kinds[k], strlen(kinds[k])) == 0) {
                *s = 0;
                return true;
            }
    }
    return false;
}

bool acem_path_within_model(const char *model_dir, const char *path) {
    char root[PATH_MAX], real[PATH_MAX];
    if (!realpath(model_dir, root) || !realpath(path, real)) return false;
    cut_to_cache_repo(root);
    size_t n = strlen(root);
    return strncmp(real, root, n) == 0 && (real[n] == '/' || (n == 1 && root[0] == '/'));
}

char *acem_path_join(const char *dir, const char *name, acem_error *err) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = acem_alloc(a + b + 2, 1, "a path", err);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

/* The unit's letter, then nothing (binary, as coreutils reads "5G"), "B" (decimal, as
 * Hugging Face and coreutils read "5GB") or "iB" (binary): returns the multiplier or 0. */
static uint64_t size_unit(const char *u) {
    static const char letters[] = "KMGT";
    const char *at = *u ? strchr(letters, toupper((unsigned char)*u)) : NULL;
    if (!at) return 0;
    int power = (int)(at - letters) + 1;
    uint64_t binary = 1, decimal = 1;
    for (int i = 0; i < power; i++) {
        binary *= 1024;
        decimal *= 1000;
    }
    if (!u[1] || !strcasecmp(u + 1, "iB")) return binary;
    return !strcasecmp(u + 1, "B") ? decimal : 0;
}

int acem_parse_size(const char *s, uint64_t *bytes) {
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -1;
    uint64_t unit = *end ? size_unit(end) : 1;
    if (!unit || v > UINT64_MAX / unit) return -1;
    *bytes = (uint64_t)v * unit;
    return 0;
}
