/* fuzz_util.c — the harnesses' shared helpers (fuzz.h). */
#include "fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[4096];

void fz_fail(const char *msg, const char *detail) {
    fprintf(stderr, "fuzz: %s: %s\n", msg, detail);
    abort();
}

void fz_remove(const char *path) {
    if (unlink(path) == 0) return;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        fz_remove(p);
    }
    if (d) closedir(d);
    rmdir(path);
}

static void remove_workdir(void) { fz_remove(g_dir); }

const char *fz_workdir(void) {
    if (!g_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/acem-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(g_dir)) fz_fail("cannot create a working directory", g_dir);
        atexit(remove_workdir);
    }
    return g_dir;
}

char *fz_path(const char *name) {
    size_t n = strlen(fz_workdir()) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) fz_fail("out of memory", name);
    snprintf(p, n, "%s/%s", g_dir, name);
    return p;
}

void fz_write(const char *path, const uint8_t *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fz_fail("cannot create", path);
    while (n > 0) {
        ssize_t k = write(fd, data, n);
        if (k <= 0) fz_fail("cannot write", path);
        data += k;
        n -= (size_t)k;
    }
    close(fd);
}

void fz_copy_model(const char *name, const char *dst) {
    const char *dir = getenv("ACEM_FUZZ_MODELS");
    if (!dir) fz_fail("ACEM_FUZZ_MODELS is not set", "run the harnesses through fuzz/run.sh");
    char src[4096];
    snprintf(src, sizeof src, "%s/%s", dir, name);
    FILE *f = fopen(src, "rb");
    if (!f) fz_fail("cannot open a model written by fuzz/make_seeds.py", src);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    fz_write(dst, buf, n);
}

void fz_read_checkpoint(const acem_checkpoint *ck) {
    acem_error err;
    for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
        const acem_tensor *t = acem_checkpoint_at(ck, i);
        if (acem_checkpoint_find(ck, t->name) != t) fz_fail("lookup by name failed", t->name);
        /* Sizes are bounded by the file (the offsets tile it), so this cannot be huge. */
        uint8_t *buf = malloc(t->nbytes ? t->nbytes : 1);
        if (!buf) fz_fail("out of memory reading", t->name);
        uint64_t half = t->nbytes / 2;
        if (acem_checkpoint_read(ck, t, 0, buf, t->nbytes, &err) ||
            acem_checkpoint_read(ck, t, 0, buf, half, &err) ||
            acem_checkpoint_read(ck, t, half, buf, t->nbytes - half, &err))
            fz_fail("an accepted tensor cannot be read", err.msg);
        if (acem_checkpoint_read(ck, t, t->nbytes, buf, 1, &err) == 0)
            fz_fail("a read past the tensor succeeded", t->name);
        free(buf);
    }
    for (size_t i = 0; i < acem_checkpoint_metadata_count(ck); i++) {
        const char *k, *v;
        acem_checkpoint_metadata_at(ck, i, &k, &v);
        if (strlen(k) + strlen(v) > (size_t)1 << 40) fz_fail("impossible metadata", k);
    }
}

void fz_check_error(const acem_error *err, const char *must_name) {
    if (!err->msg[0]) fz_fail("a rejection without a message", must_name);
    if (strchr(err->msg, '\n')) fz_fail("a message of more than one line", err->msg);
    if (!strstr(err->msg, must_name)) fz_fail("the message does not name the input", err->msg);
}
