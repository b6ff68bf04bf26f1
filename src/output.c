/* output.c — nothing is lost. Every file and directory acem writes (the merged model, its
 * shards and index, copied config files, the report, stats tables, lab results) follows
 * the same rules:
 *
 *  - it is never one of the run's inputs (a model file, a model directory or any file in
 *    one, a Gram file, the config), never another output of the same run, and never a
 *    directory that holds an input;
 *  - an existing output is replaced only with --force, and a directory only when it is
 *    empty or acem wrote it: its manifest (MANIFEST) lists every file in it. Nothing else
 *    is ever deleted or moved;
 *  - it is written under "<out>.acem-tmp-<pid>" beside the destination and renamed into
 *    place when complete;
 *  - "<out>.acem-lock" is held (flock) from the start to the commit: a second run to the
 *    same output refuses while the first holds it, and a temporary of <out> found by the
 *    holder belongs to a run that has ended (on this host or another: the lock, unlike a
 *    pid, means the same across hosts and PID namespaces), so it is removed. */
#include "output.h"
#include "formats/formats.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANIFEST           ".acem-output.json"
#define MANIFEST_MAX_BYTES (16u << 20)
#define TMP_SUFFIX         ".acem-tmp-"
#define LOCK_SUFFIX        ".acem-lock"
#define OLD_SUFFIX         ".acem-old-"

static bool ends_with_nocase(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcasecmp(s + n - k, suffix) == 0;
}

bool output_is_gguf(const char *out) { return ends_with_nocase(out, ".gguf"); }

bool output_is_file(const char *out) {
    return ends_with_nocase(out, ".safetensors") || output_is_gguf(out);
}

int output_model_kind(const char *out, output_kind *kind, acem_error *err) {
    static const char *const unwritable[] = {".bin",  ".pt",      ".pth",  ".ckpt", ".h5",
                                             ".onnx", ".msgpack", ".json", ".yaml", ".yml"};
    size_t n = strlen(out);
    if (n == 0) return acem_fail(err, "the output path is empty");
    if (out[n - 1] == '/') {
        *kind = OUTPUT_DIR; /* "merged/" names a directory, whatever its suffix */
        return 0;
    }
    for (size_t i = 0; i < sizeof unwritable / sizeof *unwritable; i++)
        if (ends_with_nocase(out, unwritable[i]))
            return acem_fail(err,
                             "%s: acem cannot write %s files; name a .safetensors or .gguf "
                             "file, or a directory",
                             out, unwritable[i]);
    *kind = output_is_file(out) ? OUTPUT_FILE : OUTPUT_DIR;
    return 0;
}

/* ---- paths ---- */

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static const char *base_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The absolute path of path, whose parent exists (the path itself need not). */
static char *canonical(const char *path) {
    char *dir = dir_of(path), real[PATH_MAX];
    char *out = NULL;
    if (dir && realpath(dir, real)) out = acem_path_join(real, base_of(path), NULL);
    free(dir);
    return out;
}

static char *with_suffix(const char *path, const char *suffix, long pid, acem_error *err) {
    size_t n = strlen(path) + strlen(suffix) + 24;
    char *s = acem_alloc(n, 1, "a path", err);
    if (!s) return NULL;
    if (pid >= 0)
        snprintf(s, n, "%s%s%ld", path, suffix, pid);
    else
        snprintf(s, n, "%s%s", path, suffix);
    return s;
}

/* mkdir -p of path's parent, as mergekit does; the directories made are remembered so that
 * a failed run removes them again (only while they are empty). */
static int make_parents(output *o, acem_error *err) {
    char *dir = dir_of(o->final_path);
    if (!dir) return acem_fail(err, "out of memory");
    int rc = 0;
    for (char *p = dir + 1; !rc; p++) {
        bool end = *p == 0;
        if (*p != '/' && !end) continue;
        *p = 0;
        struct stat st;
        if (stat(dir, &st) != 0) {
            char **made = realloc(o->made, (o->n_made + 1) * sizeof *made);
            if (!made || mkdir(dir, 0755) != 0)
                rc = acem_fail(err, "%s: cannot create the directory %s: %s", o->final_path, dir,
                               made ? strerror(errno) : "out of memory");
            if (made) o->made = made;
            if (!rc && !(o->made[o->n_made++] = strdup(dir))) rc = acem_fail(err, "out of memory");
        } else if (!S_ISDIR(st.st_mode)) {
            rc = acem_fail(err, "%s: %s is not a directory", o->final_path, dir);
        }
        if (end) break;
        *p = '/';
    }
    free(dir);
    return rc;
}

/* ---- inputs ---- */

static int add_id(output_set *s, const struct stat *st, acem_error *err) {
    if (s->n_inputs == s->cap_inputs) {
        size_t cap = s->cap_inputs ? 2 * s->cap_inputs : 64;
        file_id *ids = realloc(s->inputs, cap * sizeof *ids);
        if (!ids) return acem_fail(err, "out of memory");
        s->inputs = ids;
        s->cap_inputs = cap;
    }
    s->inputs[s->n_inputs++] = (file_id){st->st_dev, st->st_ino};
    return 0;
}

static bool is_input(const output_set *s, const struct stat *st) {
    for (size_t i = 0; i < s->n_inputs; i++)
        if (s->inputs[i].dev == st->st_dev && s->inputs[i].ino == st->st_ino) return true;
    return false;
}

int output_set_add_input(output_set *s, const char *path, acem_error *err) {
    struct stat st;
    char real[PATH_MAX];
    if (stat(path, &st) != 0 || !realpath(path, real)) return 0; /* its reader will say why */
    char **paths = realloc(s->input_paths, (s->n_input_paths + 1) * sizeof *paths);
    if (!paths) return acem_fail(err, "out of memory");
    s->input_paths = paths;
    if (!(paths[s->n_input_paths] = strdup(real))) return acem_fail(err, "out of memory");
    s->n_input_paths++;
    if (add_id(s, &st, err)) return -1;
    if (!S_ISDIR(st.st_mode)) return 0;
    DIR *d = opendir(path);
    struct dirent *e;
    int rc = 0;
    while (!rc && d && (e = readdir(d))) {
        struct stat f;
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            fstatat(dirfd(d), e->d_name, &f, 0) == 0 && !S_ISDIR(f.st_mode))
            rc = add_id(s, &f, err);
    }
    if (d) closedir(d);
    return rc;
}

int output_set_add_checkpoint(output_set *s, const acem_checkpoint *ck, acem_error *err) {
    const char *adapter = acem_checkpoint_adapter(ck);
    if (output_set_add_input(s, acem_checkpoint_path(ck), err) ||
        (adapter && output_set_add_input(s, adapter, err)))
        return -1;
    for (size_t f = 0; f < acem_checkpoint_file_count(ck); f++)
        if (output_set_add_input(s, acem_checkpoint_file_path(ck, (int)f), err)) return -1;
    return 0;
}

/* ---- locks and temporaries ---- */

/* flock on "<out>.acem-lock". The holder unlinks the file when it is done, so a lock taken
 * on a file that has since been unlinked (or replaced) is no lock: retry on the new one. */
static int take_lock(output *o, acem_error *err) {
    if (!(o->lock_path = with_suffix(o->final_path, LOCK_SUFFIX, -1, err))) return -1;
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(o->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return acem_fail(err, "%s: cannot create the lock file %s: %s", o->final_path,
                             o->lock_path, strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK)
                return acem_fail(err,
                                 "%s: another acem run is writing this output (it holds %s); "
                                 "wait for it or choose another output",
                                 o->final_path, o->lock_path);
            return acem_fail(err, "%s: cannot lock %s: %s", o->final_path, o->lock_path,
                             strerror(e));
        }
        struct stat held, now;
        if (fstat(fd, &held) == 0 && stat(o->lock_path, &now) == 0 && held.st_dev == now.st_dev &&
            held.st_ino == now.st_ino) {
            o->lock_fd = fd;
            return 0;
        }
        close(fd);
    }
    return acem_fail(err, "%s: cannot take the lock %s", o->final_path, o->lock_path);
}

static void release_lock(output *o) {
    if (o->lock_fd >= 0) {
        unlink(o->lock_path); /* while still holding it: see take_lock */
        close(o->lock_fd);
    }
    o->lock_fd = -1;
    free(o->lock_path);
    o->lock_path = NULL;
}

/* Removes a temporary acem made: a file, or a directory of plain files (acem never puts a
 * directory in one, so anything else makes rmdir fail and stays). */
static void remove_tmp(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat f;
        if (fstatat(dirfd(d), e->d_name, &f, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(f.st_mode))
            unlinkat(dirfd(d), e->d_name, 0);
    }
    if (d) closedir(d);
    rmdir(path);
}

/* name is "<base><suffix><digits>", a name acem gives to files of the output `base`. */
static bool named_for(const char *name, const char *base, const char *suffix) {
    size_t len = strlen(base), k = strlen(suffix);
    const char *tail = name + len;
    return strncmp(name, base, len) == 0 && strncmp(tail, suffix, k) == 0 && tail[k] &&
           strspn(tail + k, "0123456789") == strlen(tail + k);
}

static void remove_old_output(const char *dir);

/* Called with the lock held: "<out>.acem-tmp-<digits>" belongs to a run that has ended, and
 * is removed. "<out>.acem-old-<digits>" is an output that a run replacing it (on a
 * filesystem without an atomic exchange) had moved aside when it died: it is put back if
 * nothing took its place, else it was superseded and its listed files are removed. */
static void remove_stale_temporaries(const output *o) {
    char *dir = dir_of(o->final_path);
    const char *base = base_of(o->final_path);
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        bool tmp = named_for(e->d_name, base, TMP_SUFFIX),
             old = named_for(e->d_name, base, OLD_SUFFIX);
        char *path = tmp || old ? acem_path_join(dir, e->d_name, NULL) : NULL;
        struct stat st;
        if (path && tmp)
            remove_tmp(path);
        else if (path && lstat(o->final_path, &st) != 0)
            rename(path, o->final_path);
        else if (path)
            remove_old_output(path);
        free(path);
    }
    if (d) closedir(d);
    free(dir);
}

/* ---- replacing a directory ---- */

/* The names MANIFEST of dir lists; NULL with err set when it has none or it is not one. */
static cJSON *read_manifest(const char *dir, acem_error *err) {
    char *path = acem_path_join(dir, MANIFEST, err);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
    free(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MANIFEST_MAX_BYTES) {
        if (fd >= 0) close(fd);
        acem_fail(err, "%s: exists, is not empty and was not written by acem (it has no %s)", dir,
                  MANIFEST);
        return NULL;
    }
    char *text = malloc((size_t)st.st_size + 1);
    ssize_t got = text ? read(fd, text, (size_t)st.st_size) : -1;
    close(fd);
    cJSON *root = got == st.st_size ? cJSON_ParseWithLength(text, (size_t)got) : NULL;
    free(text);
    cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsArray(files)) {
        cJSON_Delete(root);
        acem_fail(err, "%s: its %s cannot be read; refusing to replace it", dir, MANIFEST);
        return NULL;
    }
    return root;
}

static bool listed(const cJSON *root, const char *name) {
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(root, "files")) {
        if (cJSON_IsString(f) && strcmp(f->valuestring, name) == 0) return true;
    }
    return false;
}

/* --force may replace dir only when it is empty or holds nothing but what its manifest
 * lists (plain files acem wrote). Anything else is the user's, and stays. */
static int check_replaceable(const char *dir, acem_error *err) {
    DIR *d = opendir(dir);
    if (!d) return acem_fail(err, "%s: cannot list: %s", dir, strerror(errno));
    cJSON *manifest = NULL;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, MANIFEST))
            continue;
        if (!manifest && !(manifest = read_manifest(dir, err))) {
            rc = -1;
            break;
        }
        struct stat st;
        if (!listed(manifest, e->d_name) ||
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            rc = acem_fail(err,
                           "%s: holds \"%s\", which acem did not write; refusing to replace "
                           "the directory (move it away or choose another output)",
                           dir, e->d_name);
    }
    closedir(d);
    cJSON_Delete(manifest);
    return rc;
}

/* Removes an old acem output: the files its manifest lists, the manifest, the directory. */
static void remove_old_output(const char *dir) {
    acem_error ignore;
    cJSON *manifest = read_manifest(dir, &ignore);
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(manifest, "files")) {
        char *path = cJSON_IsString(f) && !strchr(f->valuestring, '/')
                         ? acem_path_join(dir, f->valuestring, NULL)
                         : NULL;
        if (path) unlink(path);
        free(path);
    }
    cJSON_Delete(manifest);
    char *path = acem_path_join(dir, MANIFEST, NULL);
    if (path) unlink(path);
    free(path);
    rmdir(dir);
}

/* An input inside the directory that would be replaced would be deleted with it. */
static int check_holds_no_input(const output_set *s, const output *o, acem_error *err) {
    char real[PATH_MAX];
    if (!realpath(o->final_path, real)) return 0;
    size_t n = strlen(real);
    for (size_t i = 0; i < s->n_input_paths; i++) {
        const char *in = s->input_paths[i];
        if (strncmp(in, real, n) == 0 && (in[n] == '/' || in[n] == 0))
            return acem_fail(err, "%s: the output directory holds an input (%s); choose another",
                             o->final_path, in);
    }
    return 0;
}

/* ---- begin, commit, abort ---- */

static int check_existing(output_set *s, output *o, bool force, acem_error *err) {
    struct stat st;
    if (lstat(o->final_path, &st) != 0) return 0;
    if (S_ISLNK(st.st_mode))
        return acem_fail(err, "%s: exists and is a symbolic link; refusing to replace it",
                         o->final_path);
    if (o->kind == OUTPUT_DIR && check_holds_no_input(s, o, err)) return -1;
    if (!force)
        return acem_fail(err, "%s: already exists (use --force to replace it)", o->final_path);
    if (o->kind == OUTPUT_FILE ? !S_ISREG(st.st_mode) : !S_ISDIR(st.st_mode))
        return acem_fail(err, "%s: exists and is not a %s; refusing to replace it", o->final_path,
                         o->kind == OUTPUT_FILE ? "file" : "directory");
    if (o->kind == OUTPUT_DIR && check_replaceable(o->final_path, err)) return -1;
    o->replaces = true;
    return 0;
}

static int check_path(output_set *s, output *o, bool dry, acem_error *err) {
    const char *base = base_of(o->final_path);
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return acem_fail(err, "%s: not a usable output name", o->final_path);
    if (strlen(base) + strlen(TMP_SUFFIX) + 10 > NAME_MAX)
        return acem_fail(err, "%s: the name is too long for its temporary (at most %d bytes)",
                         o->final_path, NAME_MAX - (int)strlen(TMP_SUFFIX) - 10);
    if (!dry && make_parents(o, err)) return -1;
    struct stat st;
    if (stat(o->final_path, &st) == 0 && is_input(s, &st))
        return acem_fail(err, "%s: the output path is also an input; choose another",
                         o->final_path);
    char *me = canonical(o->final_path);
    if (!me && dry) me = strdup(o->final_path); /* its parents are yet to be made */
    if (!me)
        return acem_fail(err, "%s: cannot resolve its directory: %s", o->final_path,
                         strerror(errno));
    for (size_t i = 0; i < s->n_outs; i++) {
        if (s->outs[i] == o) continue;
        const output *p = s->outs[i];
        char *other = canonical(p->final_path);
        bool same = other && strcmp(other, me) == 0;
        /* A file inside a directory output: that directory is moved into place whole at
         * its commit, and would find the file's parent already there (or replace it). */
        bool in_other = other && p->kind == OUTPUT_DIR && strncmp(me, other, strlen(other)) == 0 &&
                        me[strlen(other)] == '/';
        bool in_me = other && o->kind == OUTPUT_DIR && strncmp(other, me, strlen(me)) == 0 &&
                     other[strlen(me)] == '/';
        free(other);
        if (in_other || in_me) {
            free(me);
            return acem_fail(err,
                             "%s: lies inside %s, a directory output of this run; write it "
                             "beside that directory",
                             in_other ? o->final_path : p->final_path,
                             in_other ? p->final_path : o->final_path);
        }
        if (same) {
            free(me);
            return acem_fail(err, "%s: the same path is given for two outputs of this run",
                             o->final_path);
        }
    }
    free(me);
    return 0;
}

static int create_tmp(output *o, acem_error *err) {
    if (!(o->tmp_path = with_suffix(o->final_path, TMP_SUFFIX, (long)getpid(), err))) return -1;
    int fd = o->kind == OUTPUT_FILE
                 ? open(o->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644)
                 : -1;
    if (fd >= 0) close(fd);
    if (o->kind == OUTPUT_FILE ? fd < 0 : mkdir(o->tmp_path, 0755) != 0) {
        acem_fail(err, "%s: cannot create a temporary %s beside the output: %s", o->final_path,
                  o->kind == OUTPUT_FILE ? "file" : "directory", strerror(errno));
        free(o->tmp_path);
        o->tmp_path = NULL;
        return -1;
    }
    return 0;
}

int output_begin(output_set *s, const char *path, output_kind kind, bool force, bool dry,
                 output **out, acem_error *err) {
    *out = NULL;
    output **outs = realloc(s->outs, (s->n_outs + 1) * sizeof *outs);
    output *o = outs ? calloc(1, sizeof *o) : NULL;
    if (outs) s->outs = outs;
    if (!o) return acem_fail(err, "out of memory");
    s->outs[s->n_outs++] = o;
    o->kind = kind;
    o->lock_fd = -1;
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (!(o->final_path = strndup(path, n))) return acem_fail(err, "out of memory");
    if (!*path) return acem_fail(err, "the output path is empty");
    if (dry) { /* the rules only: nothing is made, locked or removed */
        if (check_path(s, o, true, err) || check_existing(s, o, force, err)) return -1;
        *out = o;
        return 0;
    }
    if (check_path(s, o, false, err) || take_lock(o, err)) return -1;
    remove_stale_temporaries(o);
    if (check_existing(s, o, force, err) || create_tmp(o, err)) return -1;
    *out = o;
    return 0;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* The manifest of a directory output: every file acem put in it, so that a later --force
 * knows what it may replace. */
static int write_manifest(const output *o, acem_error *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "written_by", "acem " ACEM_VERSION);
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    DIR *d = opendir(o->tmp_path);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') cJSON_AddItemToArray(files, cJSON_CreateString(e->d_name));
    if (d) closedir(d);
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    char *path = acem_path_join(o->tmp_path, MANIFEST, err);
    int rc = -1;
    int fd = json && path ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    if (fd >= 0) {
        size_t len = strlen(json);
        rc = write(fd, json, len) == (ssize_t)len && fsync(fd) == 0 ? 0 : -1;
        if (close(fd) != 0) rc = -1;
    }
    if (rc) acem_fail(err, "%s: cannot write %s: %s", o->final_path, MANIFEST, strerror(errno));
    free(json);
    free(path);
    return rc;
}

/* rename(2) that never replaces: an output that appeared meanwhile (not through acem, which
 * would hold the lock) is not overwritten without --force. */
static int rename_noreplace(const char *from, const char *to) {
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
#endif
    struct stat st;
    if (lstat(to, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* --force over a directory acem wrote: swap the new one in atomically where the filesystem
 * can, then remove the old one's listed files under the temporary name. */
static int replace_dir(output *o) {
#ifdef RENAME_EXCHANGE
    if (renameat2(AT_FDCWD, o->tmp_path, AT_FDCWD, o->final_path, RENAME_EXCHANGE) == 0) {
        remove_old_output(o->tmp_path);
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS) return -1;
#endif
    /* No exchange here: move the old one aside as "<out>.acem-old-<pid>" (should this run
     * die before the next rename, the next run puts it back), then the new one in place. */
    acem_error ignore;
    char *old = with_suffix(o->final_path, OLD_SUFFIX, (long)getpid(), &ignore);
    if (!old) return -1;
    int rc = rename(o->final_path, old);
    if (!rc && (rc = rename(o->tmp_path, o->final_path)) != 0) {
        int e = errno;
        rename(old, o->final_path); /* put the old output back */
        errno = e;
    }
    if (!rc) remove_old_output(old);
    free(old);
    return rc;
}

int output_commit(output *o, acem_error *err) {
    if (o->kind == OUTPUT_DIR && write_manifest(o, err)) return -1;
    if (o->kind == OUTPUT_DIR) fsync_dir(o->tmp_path);
    /* Checked again just before the move: the old directory must still be acem's. */
    if (o->replaces && o->kind == OUTPUT_DIR && check_replaceable(o->final_path, err)) return -1;
    int rc = !o->replaces            ? rename_noreplace(o->tmp_path, o->final_path)
             : o->kind == OUTPUT_DIR ? replace_dir(o)
                                     : rename(o->tmp_path, o->final_path);
    if (rc)
        return acem_fail(err, "%s: cannot move the finished output into place: %s", o->final_path,
                         strerror(errno));
    char *dir = dir_of(o->final_path);
    if (dir) fsync_dir(dir);
    free(dir);
    free(o->tmp_path);
    o->tmp_path = NULL;
    release_lock(o);
    return 0;
}

void output_abort(output *o) {
    if (o->tmp_path) remove_tmp(o->tmp_path);
    free(o->tmp_path);
    o->tmp_path = NULL;
    release_lock(o);
    while (o->n_made > 0) { /* the parents made for it, deepest first, while empty */
        rmdir(o->made[--o->n_made]);
        free(o->made[o->n_made]);
    }
}

int output_write_whole(output *o, const void *data, size_t n, acem_error *err) {
    int fd = open(o->tmp_path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    int rc = fd < 0 ? -1 : 0;
    for (const char *p = data; !rc && n > 0;) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) rc = -1;
        p += k > 0 ? k : 0;
        n -= k > 0 ? (size_t)k : 0;
    }
    if (!rc && fsync(fd) != 0) rc = -1;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && !rc) { /* closed once, whatever happened before */
        rc = -1;
        e = errno;
    }
    if (rc) return acem_fail(err, "%s: cannot write: %s", o->final_path, strerror(e));
    return output_commit(o, err);
}

uint64_t output_bytes(const output *o) {
    const char *path = o->tmp_path ? o->tmp_path : o->final_path;
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return (uint64_t)st.st_size;
    uint64_t total = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat f;
        if (fstatat(dirfd(d), e->d_name, &f, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(f.st_mode))
            total += (uint64_t)f.st_size;
    }
    if (d) closedir(d);
    return total;
}

void output_set_clear(output_set *s) {
    for (size_t i = 0; i < s->n_outs; i++) {
        output *o = s->outs[i];
        output_abort(o);
        free(o->made);
        free(o->final_path);
        free(o);
    }
    for (size_t i = 0; i < s->n_input_paths; i++)
        free(s->input_paths[i]);
    free(s->input_paths);
    free(s->inputs);
    free(s->outs);
    memset(s, 0, sizeof *s);
}

/* ---- auxiliary files ---- */

/* Weight files and indexes are not carried over: the merged weights replace them. The
 * base's model card is not the merge's either. */
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

/* Copies src to dst with src's permissions at most (a 0600 file stays private). */
/* shown: the file as the user will find it (dst is inside the temporary). */
static int copy_file(const char *src, const char *dst, const char *shown, acem_error *err) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) != 0) {
        if (in >= 0) close(in);
        return acem_fail(err, "%s: cannot open: %s", src, strerror(errno));
    }
    int outfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0666);
    if (outfd < 0) {
        close(in);
        return acem_fail(err, "%s: cannot create: %s", shown, strerror(errno));
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
                rc = acem_fail(err, "%s: write failed: %s", shown, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc) break;
    }
    if (!rc && fsync(outfd) != 0)
        rc = acem_fail(err, "%s: fsync failed: %s", shown, strerror(errno));
    close(in);
    if (close(outfd) != 0 && !rc)
        rc = acem_fail(err, "%s: close failed: %s", shown, strerror(errno));
    return rc;
}

/* Pre-flight for copy_file: the source can be read. */
static int check_readable(const char *src, acem_error *err) {
    int fd = open(src, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return acem_fail(err, "%s: cannot open: %s", src, strerror(errno));
    close(fd);
    return 0;
}

static bool skipped(const char *const *names, const char *name) {
    for (; names && *names; names++)
        if (!strcmp(*names, name)) return true;
    return false;
}

int output_copy_aux_file(const output *o, const char *dir, const char *name, bool dry,
                         acem_error *err) {
    char *src = acem_path_join(dir, name, err);
    char *dst = src && !dry ? acem_path_join(o->tmp_path, name, err) : NULL;
    char *shown = dst ? acem_path_join(o->final_path, name, err) : NULL;
    struct stat lst, st;
    int rc = 0;
    if (!src || (!dry && !shown))
        rc = -1;
    else if (lstat(src, &lst) != 0 || stat(src, &st) != 0 || !S_ISREG(st.st_mode))
        rc = 0; /* not there: nothing to copy */
    else if (S_ISLNK(lst.st_mode) && !acem_path_within_model(dir, src))
        rc = acem_fail(err, "%s: a link that leads out of the model directory; not copied", src);
    else
        rc = dry ? check_readable(src, err) : copy_file(src, dst, shown, err);
    free(src);
    free(dst);
    free(shown);
    return rc;
}

int output_copy_aux_files(const output *o, const char *base_dir, const char *const *skip, bool dry,
                          output_aux_fn note, void *user, acem_error *err) {
    if (o->kind == OUTPUT_FILE || !acem_is_dir(base_dir)) return 0;
    DIR *d = opendir(base_dir);
    if (!d) return acem_fail(err, "%s: cannot list: %s", base_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.' || is_weight_file(e->d_name) || !strcmp(e->d_name, "README.md") ||
            skipped(skip, e->d_name))
            continue;
        char *src = acem_path_join(base_dir, e->d_name, err);
        char *dst = src && !dry ? acem_path_join(o->tmp_path, e->d_name, err) : NULL;
        char *shown = dst ? acem_path_join(o->final_path, e->d_name, err) : NULL;
        struct stat lst, st;
        if (!src || (!dry && !shown)) {
            rc = -1;
        } else if (lstat(src, &lst) == 0 && stat(src, &st) == 0 && S_ISREG(st.st_mode)) {
            /* a link out of the model is never copied where it points */
            bool outside = S_ISLNK(lst.st_mode) && !acem_path_within_model(base_dir, src);
            rc = !outside && (dry ? check_readable(src, err) : copy_file(src, dst, shown, err));
            if (!rc && note)
                rc = note(user, src, outside ? OUTPUT_AUX_OUTSIDE : OUTPUT_AUX_COPIED, err);
        } else if (lstat(src, &lst) == 0 && S_ISDIR(lst.st_mode) && note) {
            rc =
                note(user, src, OUTPUT_AUX_SUBDIR, err); /* never copied: acem's outputs are flat */
        }
        free(src);
        free(dst);
        free(shown);
    }
    closedir(d);
    return rc;
}

/* ---- the public face, for the CLI's and the lab's own files ---- */

int acem_outputs_new(acem_outputs **s, acem_error *err) {
    return (*s = acem_alloc(1, sizeof **s, "the outputs", err)) ? 0 : -1;
}

/* A model reference (a Hugging Face id, MODEL+ADAPTER: refs.c) is the paths it names; one
 * that does not resolve is left to its reader to refuse. */
int acem_outputs_add_input(acem_outputs *s, const char *path, acem_error *err) {
    acem_ref ref;
    if (acem_ref_resolve(path, NULL, &ref, NULL)) return output_set_add_input(s, path, err);
    int rc = output_set_add_input(s, ref.model, err) ||
                     (ref.adapter && output_set_add_input(s, ref.adapter, err))
                 ? -1
                 : 0;
    acem_ref_free(&ref);
    return rc;
}

int acem_outputs_claim(acem_outputs *s, const char *path, int force, acem_error *err) {
    output *o;
    return output_begin(s, path, OUTPUT_FILE, force, false, &o, err);
}

int acem_outputs_write(acem_outputs *s, const char *path, const void *data, size_t n,
                       acem_error *err) {
    for (size_t i = 0; i < s->n_outs; i++) {
        output *o = s->outs[i];
        size_t k = strlen(o->final_path);
        if (o->tmp_path && strncmp(path, o->final_path, k) == 0 &&
            strspn(path + k, "/") == strlen(path + k))
            return output_write_whole(o, data, n, err);
    }
    return acem_fail(err, "%s: internal error: not an output claimed by this run", path);
}

void acem_outputs_free(acem_outputs *s) {
    if (!s) return;
    output_set_clear(s);
    free(s);
}
