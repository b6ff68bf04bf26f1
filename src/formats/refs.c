/* refs.c — a model reference as users write it, resolved to local paths (never downloaded):
 *
 *   PATH                 a file or a directory (relative: to `dir`, a config's folder)
 *   org/name[@revision]  a Hugging Face id in the local cache, laid out as huggingface_hub
 *                        lays it out (file_download.py): models--org--name/refs/<revision>
 *                        holds a commit, snapshots/<commit>/ the files (links into blobs/)
 *   MODEL+ADAPTER        mergekit's syntax (common.py, ModelReference.parse): a PEFT LoRA
 *                        adapter applied to MODEL; each side a path or an id
 *   ADAPTER              a PEFT adapter directory alone: applied to its
 *                        base_model_name_or_path, as PEFT's AutoPeftModel does
 *
 * A local path always wins over an id. The result names only local paths, so resolving it
 * again gives it back unchanged. */
#include "formats.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void acem_ref_free(acem_ref *r) {
    free(r->model);
    free(r->adapter);
    r->model = r->adapter = NULL;
}

char *acem_ref_text(const acem_ref *r, acem_error *err) {
    if (!r->adapter) return acem_strdup(r->model, err);
    size_t a = strlen(r->model), b = strlen(r->adapter);
    char *t = acem_alloc(a + b + 2, 1, "a model reference", err);
    if (t) snprintf(t, a + b + 2, "%s+%s", r->model, r->adapter);
    return t;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- the cache folder (huggingface_hub constants.py) ---- */

/* os.path.expanduser then os.path.expandvars, as huggingface_hub applies them to its
 * variables: a leading "~" is $HOME, $NAME and ${NAME} are replaced when set (values of up
 * to 4095 bytes: longer ones, past any path's length, are left as written). */
static char *expand(const char *v, acem_error *err) {
    const char *home = getenv("HOME");
    size_t cap = strlen(v) + 1 + (home ? strlen(home) : 0);
    for (const char *p = v; *p; p++) /* every variable's value, at most once per '$' */
        if (*p == '$') cap += 4096;
    char *out = acem_alloc(cap, 1, "a path", err);
    if (!out) return NULL;
    size_t k = 0;
    if (v[0] == '~' && (v[1] == '/' || !v[1]) && home) {
        k = (size_t)snprintf(out, cap, "%s", home);
        v++;
    }
    while (*v) {
        size_t len = 0;
        bool braced = v[0] == '$' && v[1] == '{';
        const char *name = v + 1 + braced;
        while (v[0] == '$' && (isalnum((unsigned char)name[len]) || name[len] == '_'))
            len++;
        char var[256];
        const char *val = NULL;
        if (len && len < sizeof var && (!braced || name[len] == '}')) {
            memcpy(var, name, len);
            var[len] = 0;
            val = getenv(var);
        }
        if (val && strlen(val) < 4096) {
            k += (size_t)snprintf(out + k, cap - k, "%s", val);
            v = name + len + braced;
        } else {
            out[k++] = *v++;
        }
    }
    out[k] = 0;
    return out;
}

/* HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub; *from says which. */
static char *cache_root(const char **from, acem_error *err) {
    static const char *const direct[] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = getenv(direct[i]);
        if (v && *v) {
            *from = direct[i];
            return expand(v, err);
        }
    }
    const char *v = getenv("HF_HOME"), *suffix = "hub";
    if (v && *v) {
        *from = "HF_HOME";
    } else if ((v = getenv("XDG_CACHE_HOME")) && *v) {
        *from = "XDG_CACHE_HOME";
        suffix = "huggingface/hub";
    } else {
        *from = NULL;
        v = "~/.cache";
        suffix = "huggingface/hub";
    }
    char *dir = expand(v, err), *root = dir ? acem_path_join(dir, suffix, err) : NULL;
    free(dir);
    return root;
}

/* ---- ids ---- */

static bool id_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}
static bool word_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* huggingface_hub's validate_repo_id (utils/_validators.py): "name" or "org/name", parts of
 * [A-Za-z0-9_.-] that start and end with a word character, no "--" or "..", 96 at most. */
static bool valid_repo_id(const char *s, size_t n) {
    if (n == 0 || n > 96) return false;
    int slashes = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/') {
            if (++slashes > 1) return false;
            continue;
        }
        bool edge = i == 0 || i == n - 1 || s[i - 1] == '/' || s[i + 1] == '/';
        if (!id_char(s[i]) || (edge && !word_char(s[i]))) return false;
        if (i + 1 < n && (s[i] == '-' || s[i] == '.') && s[i + 1] == s[i]) return false;
    }
    return true;
}

/* A revision names a file under refs/ (a branch or tag, "refs/pr/1") or a commit: no
 * component may climb out of the cache repository. */
static bool valid_revision(const char *s) {
    if (!*s || strlen(s) > 255 || *s == '/' || strstr(s, "..")) return false;
    for (; *s; s++)
        if (!id_char(*s) && *s != '/') return false;
    return true;
}

/* A commit as refs/<revision> holds it (huggingface_hub writes the bare hash): letters and
 * digits only, so that it is one plain name under snapshots/. */
static int read_commit(const char *path, char *commit, size_t len, acem_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 1; /* no such ref */
    ssize_t n = read(fd, commit, len - 1);
    close(fd);
    if (n < 0) return acem_fail(err, "%s: cannot read: %s", path, strerror(errno));
    while (n > 0 && isspace((unsigned char)commit[n - 1]))
        n--;
    commit[n] = 0;
    for (ssize_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)commit[i])) n = 0;
    if (n == 0 || (size_t)n >= len - 1)
        return acem_fail(err, "%s: not a commit hash (a cache reference holds one)", path);
    return 0;
}

static int not_cached(const char *id, const char *rev, const char *local, const char *root,
                      const char *from, const char *what, acem_error *err) {
    return acem_fail(err,
                     "model \"%s%s%s\": not a local path (no %s) and not in the Hugging Face "
                     "cache %s (%s%s): %s; fetch it with \"huggingface-cli download %s%s%s\" "
                     "(acem never downloads)",
                     id, rev ? "@" : "", rev ? rev : "", local, root, from ? "set by " : "",
                     from ? from : "the default; HF_HUB_CACHE or HF_HOME choose another", what, id,
                     rev ? " --revision " : "", rev ? rev : "");
}

/* org/name[@revision] (ref, n bytes; "local" the path it would have been) to its snapshot
 * directory: refs/<revision> (default main) gives the commit, or the revision is one. */
static int resolve_id(const char *ref, size_t n, const char *local, char **out, acem_error *err) {
    const char *at = memchr(ref, '@', n);
    size_t id_len = at ? (size_t)(at - ref) : n;
    char id[128], rev[256] = "main", path[8192], commit[128];
    memcpy(id, ref, id_len);
    id[id_len] = 0;
    if (at) snprintf(rev, sizeof rev, "%.*s", (int)(n - id_len - 1), at + 1);
    if (at && (n - id_len - 1 >= sizeof rev || !valid_revision(rev)))
        return acem_fail(err, "model \"%.*s\": \"%s\" is not a revision name", (int)n, ref, rev);
    const char *from;
    char *root = cache_root(&from, err);
    if (!root) return -1;
    if (strlen(root) >= 4096) {
        free(root);
        return acem_fail(err,
                         "model \"%.*s\": the Hugging Face cache folder's name is longer "
                         "than a path can be",
                         (int)n, ref);
    }
    char repo[256] = "models--";
    for (size_t i = 0, k = 8; i < id_len && k + 2 < sizeof repo; i++)
        if (id[i] == '/') {
            repo[k++] = '-';
            repo[k++] = '-';
        } else {
            repo[k++] = id[i];
        }
    char what[1024] = "";
    int got = 1, rc = -1;
    snprintf(path, sizeof path, "%s/%s", root, repo);
    if (!acem_is_dir(path)) {
        snprintf(what, sizeof what, "it holds no %s", repo);
    } else {
        snprintf(path, sizeof path, "%s/%s/refs/%s", root, repo, rev);
        if ((got = read_commit(path, commit, sizeof commit, err)) < 0) goto out;
        /* no refs/<revision>: the revision may be the commit itself */
        snprintf(path, sizeof path, "%s/%s/snapshots/%s", root, repo, got ? rev : commit);
        if (acem_is_dir(path) && (!got || !strchr(rev, '/')))
            rc = (*out = acem_strdup(path, err)) ? 0 : -1;
        else if (got)
            snprintf(what, sizeof what, "%s has neither refs/%s nor snapshots/%s", repo, rev, rev);
        else
            snprintf(what, sizeof what,
                     "%s/refs/%s names %s, but snapshots/%s is missing (an interrupted download?)",
                     repo, rev, commit, commit);
    }
    if (*what) not_cached(id, at ? rev : NULL, local, root, from, what, err);
out:
    free(root);
    return rc;
}

/* ---- references ---- */

/* The path n bytes of s name: relative ones from dir (when not NULL). */
static char *local_of(const char *s, size_t n, const char *dir, acem_error *err) {
    char *part = acem_alloc(n + 1, 1, "a model reference", err);
    if (!part) return NULL;
    memcpy(part, s, n);
    if (!dir || *part == '/' || !n) return part;
    char *local = acem_path_join(dir, part, err);
    free(part);
    return local;
}

/* One side of a reference (n bytes of s): the local path when it exists, else an id in the
 * cache; a path that is neither is returned as it is, for its reader to refuse. */
static int resolve_one(const char *s, size_t n, const char *dir, char **out, acem_error *err) {
    char *local = local_of(s, n, dir, err);
    if (!local) return -1;
    const char *at = memchr(s, '@', n);
    if (exists(local) || !valid_repo_id(s, at ? (size_t)(at - s) : n)) {
        *out = local;
        return 0;
    }
    int rc = resolve_id(s, n, local, out, err);
    free(local);
    return rc;
}

static bool is_adapter(const char *path) {
    char *config = acem_path_join(path, "adapter_config.json", NULL);
    bool yes = config && acem_is_dir(path) && exists(config);
    free(config);
    return yes;
}

/* An adapter alone: its base_model_name_or_path, resolved as a command-line reference. */
static int adapter_base(acem_ref *r, acem_error *err) {
    char *base = NULL;
    if (lora_base_model(r->adapter, &base, err)) return -1;
    if (!base)
        return acem_fail(err,
                         "%s: a LoRA adapter that does not name its base model "
                         "(base_model_name_or_path); write the model as BASE+%s",
                         r->adapter, r->adapter);
    int rc = resolve_one(base, strlen(base), NULL, &r->model, err);
    if (!rc && (is_adapter(r->model) || !exists(r->model)))
        rc = acem_fail(err, "%s: the adapter's base model \"%s\" is not a model directory",
                       r->adapter, base);
    if (rc) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err->msg);
        acem_fail(err,
                  "%s: its base model (base_model_name_or_path): %s; or write the model as "
                  "BASE+%s",
                  r->adapter, inner, r->adapter);
    }
    free(base);
    return rc;
}

int acem_ref_resolve(const char *ref, const char *dir, acem_ref *out, acem_error *err) {
    *out = (acem_ref){0};
    const char *plus = strchr(ref, '+');
    char *whole = local_of(ref, strlen(ref), dir, err);
    if (!whole) return -1;
    int rc = 0;
    if (exists(whole) || !plus) { /* a path with a '+' in its name is that path */
        free(whole);
        rc = resolve_one(ref, strlen(ref), dir, &out->model, err);
        if (!rc && is_adapter(out->model)) {
            out->adapter = out->model;
            out->model = NULL;
            rc = adapter_base(out, err);
        }
    } else {
        free(whole);
        if (strchr(plus + 1, '+'))
            rc = acem_fail(err, "model \"%s\": more than one '+' (MODEL+ADAPTER takes one)", ref);
        if (!rc) rc = resolve_one(ref, (size_t)(plus - ref), dir, &out->model, err);
        if (!rc) rc = resolve_one(plus + 1, strlen(plus + 1), dir, &out->adapter, err);
        if (!rc && !is_adapter(out->adapter))
            rc = acem_fail(err,
                           "%s: not a PEFT adapter directory (no adapter_config.json); in "
                           "MODEL+ADAPTER the part after '+' is a LoRA adapter",
                           out->adapter);
        if (!rc && is_adapter(out->model))
            rc = acem_fail(err,
                           "%s: a LoRA adapter, not a model; in MODEL+ADAPTER the part before "
                           "'+' is the model it applies to",
                           out->model);
    }
    if (rc) acem_ref_free(out);
    return rc;
}
