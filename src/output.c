/* output.c — nothing is lost: the output is built under a temporary name beside the
 * destination and renamed into place only when complete. On failure the temporary is
 * removed; an existing output is never touched unless --force, and then only replaced by
 * a finished one. */
#include "output.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

bool output_is_gguf(const char *out) { return ends_with(out, ".gguf"); }

bool output_is_file(const char *out) {
    return ends_with(out, ".safetensors") || output_is_gguf(out);
}

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int output_check_distinct(const char *out, const acem_checkpoint *const *inputs, int n,
                          acem_error *err) {
    for (int i = 0; i < n; i++) {
        const acem_checkpoint *ck = inputs[i];
        bool clash = same_file(out, acem_checkpoint_path(ck));
        for (size_t f = 0; !clash && f < acem_checkpoint_file_count(ck); f++)
            clash = same_file(out, acem_checkpoint_file_path(ck, (int)f));
        if (clash)
            return acem_fail(err, "%s: the output path is also an input; choose another", out);
    }
    return 0;
}

/* Removes the temporary file, or the temporary directory and the plain files acem put in it. */
static void remove_tree(const char *path, bool is_file) {
    if (is_file) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(path);
}

/* A run killed by SIGKILL leaves "<out>.acem-tmp-<pid>" (or ".acem-old-<pid>") behind.
 * Such names whose process no longer exists are removed before a new run starts; a
 * symbolic link is only unlinked, never followed. */
static void remove_stale_temporaries(const char *out) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    size_t len = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *tail = e->d_name + len;
        if (strncmp(e->d_name, base, len) != 0 ||
            (strncmp(tail, ".acem-tmp-", 10) != 0 && strncmp(tail, ".acem-old-", 10) != 0))
            continue;
        char *end;
        long pid = strtol(tail + 10, &end, 10);
        if (*end || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* malformed, alive, or not ours to judge */
        char *path = acem_path_join(dir, e->d_name, NULL);
        struct stat st;
        if (path && lstat(path, &st) == 0) remove_tree(path, !S_ISDIR(st.st_mode));
        free(path);
    }
    closedir(d);
}

int output_begin(output *o, const char *out, bool force, acem_error *err) {
    memset(o, 0, sizeof *o);
    o->final_path = out;
    o->is_file = output_is_file(out);
    remove_stale_temporaries(out);
    struct stat st;
    if (lstat(out, &st) == 0) {
        if (!force) return acem_fail(err, "%s: already exists (use --force to replace it)", out);
        if (o->is_file == (bool)S_ISDIR(st.st_mode))
            return acem_fail(err, "%s: exists and is a %s; refusing to replace it", out,
                             S_ISDIR(st.st_mode) ? "directory" : "file");
    }
    size_t n = strlen(out) + 32;
    if (!(o->tmp_path = acem_alloc(n, 1, "a path", err))) return -1;
    snprintf(o->tmp_path, n, "%s.acem-tmp-%ld", out, (long)getpid());
    /* Create the temporary now, so that an unusable destination is reported by its name. */
    int fd = o->is_file ? open(o->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    if (fd >= 0) close(fd);
    if (o->is_file ? fd < 0 : mkdir(o->tmp_path, 0755) != 0) {
        acem_fail(err, "%s: cannot create a temporary %s beside the output: %s", out,
                  o->is_file ? "file" : "directory", strerror(errno));
        free(o->tmp_path);
        o->tmp_path = NULL;
        return -1;
    }
    return 0;
}

void output_abort(output *o) {
    if (o->tmp_path) remove_tree(o->tmp_path, o->is_file);
    free(o->tmp_path);
    o->tmp_path = NULL;
}

static void fsync_parent(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (slash == buf)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(buf, sizeof buf, ".");
    int fd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int output_commit(output *o, acem_error *err) {
    const char *out = o->final_path;
    if (o->is_file || access(out, F_OK) != 0) {
        /* rename(2) replaces a file atomically; a directory only moves into a free name. */
        if (rename(o->tmp_path, out) != 0)
            return acem_fail(err, "%s: cannot move the finished output into place: %s", out,
                             strerror(errno));
    } else {
        /* --force over a directory: swap the old one aside, move the new one in, drop the old. */
        size_t n = strlen(out) + 32;
        char *old = acem_alloc(n, 1, "a path", err);
        if (!old) return -1;
        snprintf(old, n, "%s.acem-old-%ld", out, (long)getpid());
        if (rename(out, old) != 0 || rename(o->tmp_path, out) != 0) {
            int e = errno;
            rename(old, out); /* put the old output back if it was moved */
            free(old);
            return acem_fail(err, "%s: cannot replace the existing output: %s", out, strerror(e));
        }
        remove_tree(old, false);
        free(old);
    }
    fsync_parent(out);
    free(o->tmp_path);
    o->tmp_path = NULL;
    return 0;
}

/* Weight files and indexes are not carried over: the merged weights replace them. */
static bool is_weight_file(const char *name) {
    static const char *const ext[] = {".safetensors", ".bin",     ".pt",   ".pth",  ".ckpt",
                                      ".h5",          ".msgpack", ".gguf", ".onnx", ".index.json"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
        size_t k = strlen(ext[i]);
        if (n >= k && strcmp(name + n - k, ext[i]) == 0) return true;
    }
    return false;
}

static int copy_file(const char *src, const char *dst, acem_error *err) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return acem_fail(err, "%s: cannot open: %s", src, strerror(errno));
    int outfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (outfd < 0) {
        close(in);
        return acem_fail(err, "%s: cannot create: %s", dst, strerror(errno));
    }
    char buf[1 << 16];
    int rc = 0;
    for (;;) {
        ssize_t k = read(in, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = acem_fail(err, "%s: read failed: %s", src, strerror(errno));
            break;
        }
        if (k == 0) break;
        for (ssize_t off = 0; off < k;) {
            ssize_t w = write(outfd, buf + off, (size_t)(k - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                rc = acem_fail(err, "%s: write failed: %s", dst, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc) break;
    }
    if (!rc && fsync(outfd) != 0) rc = acem_fail(err, "%s: fsync failed: %s", dst, strerror(errno));
    close(in);
    close(outfd);
    return rc;
}

int output_copy_aux_files(const output *o, const char *base_dir, size_t *copied, acem_error *err) {
    *copied = 0;
    if (o->is_file || !acem_is_dir(base_dir)) return 0;
    DIR *d = opendir(base_dir);
    if (!d) return acem_fail(err, "%s: cannot list: %s", base_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.' || is_weight_file(e->d_name)) continue;
        char *src = acem_path_join(base_dir, e->d_name, err);
        char *dst = src ? acem_path_join(o->tmp_path, e->d_name, err) : NULL;
        struct stat st;
        if (!dst)
            rc = -1;
        else if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) {
            rc = copy_file(src, dst, err);
            if (!rc) (*copied)++;
        }
        free(src);
        free(dst);
    }
    closedir(d);
    return rc;
}
