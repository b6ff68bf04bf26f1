/* workdir.c — a directory that one of acem's commands fills with files of its own (acem
 * example's models, the lab's checkpoints and tables) and that later runs regenerate in
 * place. Those files are rewritten without --force, so the directory must be acem's: it
 * is created with a marker naming the command, and an existing directory is used only
 * when it is empty or holds that marker. A directory of the user's (say ~/models, whose
 * base/model.safetensors the example would otherwise overwrite) is refused, untouched. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKDIR_MARKER ".acem-workdir"

/* Does dir hold the marker of owner? */
static bool marked_by(const char *dir, const char *owner) {
    char *path = acem_path_join(dir, WORKDIR_MARKER, NULL);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) : -1;
    free(path);
    if (fd < 0) return false;
    char buf[128];
    size_t want = strlen(owner);
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && want + 1 < sizeof buf &&
              read(fd, buf, sizeof buf) == (ssize_t)(want + 1) && !memcmp(buf, owner, want) &&
              buf[want] == '\n';
    close(fd);
    return ok;
}

static bool is_empty(const char *dir, acem_error *err, bool *empty) {
    DIR *d = opendir(dir);
    if (!d) {
        acem_fail(err, "%s: cannot list: %s", dir, strerror(errno));
        return false;
    }
    struct dirent *e;
    *empty = true;
    while (*empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) *empty = false;
    closedir(d);
    return true;
}

static int write_marker(const char *dir, const char *owner, acem_error *err) {
    char *path = acem_path_join(dir, WORKDIR_MARKER, err);
    if (!path) return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    size_t n = strlen(owner);
    int rc = fd >= 0 && write(fd, owner, n) == (ssize_t)n && write(fd, "\n", 1) == 1 ? 0 : -1;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && !rc) {
        rc = -1;
        e = errno;
    }
    if (rc) {
        acem_fail(err, "%s: cannot write: %s", path, strerror(e));
        if (fd >= 0) unlink(path);
    }
    free(path);
    return rc;
}

int acem_workdir_claim(const char *dir, const char *owner, acem_error *err) {
    if (!dir || !*dir) return acem_fail(err, "the directory name is empty");
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT) return acem_fail(err, "%s: cannot open: %s", dir, strerror(errno));
        if (mkdir(dir, 0755) != 0)
            return acem_fail(err, "%s: cannot create: %s", dir, strerror(errno));
        return write_marker(dir, owner, err);
    }
    if (!S_ISDIR(st.st_mode)) return acem_fail(err, "%s: exists and is not a directory", dir);
    if (marked_by(dir, owner)) return 0;
    bool empty;
    if (!is_empty(dir, err, &empty)) return -1;
    if (empty) return write_marker(dir, owner, err);
    return acem_fail(err,
                     "%s: exists, is not empty and was not made by `%s` (it has no %s); its "
                     "files would be overwritten: choose another directory",
                     dir, owner, WORKDIR_MARKER);
}
