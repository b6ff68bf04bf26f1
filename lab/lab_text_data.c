/* lab_text_data.c — the `text` suite's seven tasks and pretraining corpus, from files that
 * Debian 12 packages install (docs/lab.md, "The text suite"). Sources are read strictly;
 * examples are normalised (whitespace collapsed, cut at LAB_TEXT_MAX_BYTES), deduplicated
 * (a text under two labels is dropped), balanced per class and split by a seeded hash of
 * their group (a man page, or the text itself), so the same files and seed give the same
 * bytes on every machine. */
#include "lab.h"
#include "lab_text.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define MAX_FILE (64u << 20) /* no source file is near this; a larger one is refused */
#define PATH_LEN 1024

lab_text_sizes lab_text_sizes_for(bool quick) {
    return quick ? (lab_text_sizes){48, 8, 16} : (lab_text_sizes){320, 40, 80};
}

/* ---- growable buffers ------------------------------------------------------------ */

typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

static int sb_put(strbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = realloc(b->s, cap);
        if (!grown) return -1;
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

typedef struct example {
    char *text;
    int label;
    uint64_t group; /* examples of one group land in one split */
    uint64_t key;   /* seeded hash of the text: the order within a class */
} example;

typedef struct pool {
    example *e;
    int n, cap;
    int min_bytes;
} pool;

static int oom(acem_error *err) {
    snprintf(err->msg, sizeof err->msg, "lab: out of memory reading the text suite's data");
    return -1;
}

/* Length of the valid UTF-8 character at s (n bytes left), 0 if invalid (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_char(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (!len || len > n || s[0] > 0xf4) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0;
    if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0;
    return len;
}

/* Adds text (n bytes) with whitespace runs collapsed to one space, trimmed, cut
 * at the last whole character within LAB_TEXT_MAX_BYTES. Texts with other control
 * characters (fortunes' overstruck entries), invalid UTF-8 or shorter than the pool's minimum are
 * left out. group 0: the example is a group of its own. */
static int pool_add(pool *p, const char *text, size_t n, int label, uint64_t group,
                    acem_error *err) {
    char buf[LAB_TEXT_MAX_BYTES + 1];
    size_t len = 0;
    bool space = false;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            space = len > 0;
            i++;
            continue;
        }
        size_t w = utf8_char((const unsigned char *)text + i, n - i);
        if (c < 0x20 || c == 0x7f || !w) return 0; /* !w: a roff escape cut a character */
        if (len + space + w > LAB_TEXT_MAX_BYTES) break;
        if (space) buf[len++] = ' ';
        memcpy(buf + len, text + i, w);
        len += w;
        i += w;
        space = false;
    }
    if ((int)len < p->min_bytes) return 0;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 1024;
        example *grown = realloc(p->e, (size_t)cap * sizeof *grown);
        if (!grown) return oom(err);
        p->e = grown;
        p->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return oom(err);
    memcpy(copy, buf, len);
    copy[len] = '\0';
    p->e[p->n++] = (example){copy, label, group, 0};
    return 0;
}

static void pool_free(pool *p) {
    for (int i = 0; i < p->n; i++)
        free(p->e[i].text);
    free(p->e);
    *p = (pool){0};
}

/* ---- files ------------------------------------------------------------------------ */

/* The whole file (gunzipped when its name ends in .gz), NUL-terminated; refused unless it
 * is valid UTF-8 without NUL bytes. */
static int read_text(const char *path, strbuf *out, acem_error *err) {
    size_t n = strlen(path);
    bool gz = n > 3 && !strcmp(path + n - 3, ".gz");
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err->msg, sizeof err->msg,
                 "%.900s: cannot read it (%s); scripts/deps.sh installs the text suite's packages",
                 path, strerror(errno ? errno : ENOENT));
        return -1;
    }
    if (gzdirect(f) == gz) { /* the name and the content must agree */
        snprintf(err->msg, sizeof err->msg, "%.900s: %s", path,
                 gz ? "named .gz but not gzip data" : "gzip data without a .gz name");
        gzclose(f);
        return -1;
    }
    *out = (strbuf){0};
    char chunk[65536];
    int got, rc = 0;
    while (!rc && (got = gzread(f, chunk, sizeof chunk)) > 0)
        rc = out->len + (size_t)got > MAX_FILE ? 1 : sb_put(out, chunk, (size_t)got) ? 2 : 0;
    int zerr = 0;
    const char *zmsg = gzerror(f, &zerr);
    if (!rc && got < 0) {
        snprintf(err->msg, sizeof err->msg, "%.900s: %s", path, zmsg);
        rc = 3;
    }
    gzclose(f);
    if (rc == 1)
        snprintf(err->msg, sizeof err->msg, "%.900s: larger than %u MiB", path, MAX_FILE >> 20);
    if (rc == 2) oom(err);
    if (!rc && !out->s && sb_put(out, "", 0)) rc = oom(err);
    for (size_t i = 0, line = 1; !rc && i < out->len;) {
        size_t w = out->s[i] ? utf8_char((unsigned char *)out->s + i, out->len - i) : 0;
        if (!w) {
            snprintf(err->msg, sizeof err->msg, "%.900s: line %zu: %s", path, line,
                     out->s[i] ? "not valid UTF-8" : "a NUL byte");
            rc = 4;
        }
        line += out->s[i] == '\n';
        i += w;
    }
    if (rc) {
        free(out->s);
        *out = (strbuf){0};
        return -1;
    }
    return 0;
}

static int join(char *buf, const char *root, const char *path, acem_error *err) {
    if (snprintf(buf, PATH_LEN, "%s%s", root, path) < PATH_LEN) return 0;
    snprintf(err->msg, sizeof err->msg, "lab: path too long: %.900s%s", root, path);
    return -1;
}

/* Calls fn(line, length, line number) for every line of text (without its newline). */
typedef int (*line_fn)(void *ctx, const char *line, size_t n, size_t line_no, acem_error *err);

static int each_line(const strbuf *text, line_fn fn, void *ctx, acem_error *err) {
    size_t line_no = 1;
    for (const char *p = text->s, *end = text->s + text->len; p < end; line_no++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (fn(ctx, p, n, line_no, err)) return -1;
        p += n + 1;
    }
    return 0;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Regular files (not symbolic links) among the paths a package installs that start with
 * prefix and end with suffix, sorted; flat: directly in prefix; required: at least one. The
 * list is dpkg's
 * /var/lib/dpkg/info/PKG.list, or PKG:ARCH.list for a Multi-Arch: same package. */
typedef struct file_set {
    const char *package, *prefix, *suffix;
    bool flat, required;
} file_set;

static int package_list(const char *root, const char *package, char *path, acem_error *err) {
    char dir[PATH_LEN];
    if (join(dir, root, "/var/lib/dpkg/info", err)) return -1;
    if (snprintf(path, PATH_LEN, "%.700s/%.250s.list", dir, package) >= PATH_LEN) {
        snprintf(err->msg, sizeof err->msg, "lab: path too long: %.900s", dir);
        return -1;
    }
    struct stat st;
    if (!stat(path, &st)) return 0;
    DIR *d = opendir(dir);
    int found = 0;
    size_t plen = strlen(package);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n > plen + 6 && !strncmp(e->d_name, package, plen) && e->d_name[plen] == ':' &&
            !strcmp(e->d_name + n - 5, ".list") && !found++)
            snprintf(path, PATH_LEN, "%.700s/%.255s", dir, e->d_name);
    }
    if (d) closedir(d);
    if (found == 1) return 0;
    if (found)
        snprintf(err->msg, sizeof err->msg,
                 "%.900s: package %s has %d file lists (architectures); the text suite reads one",
                 dir, package, found);
    else
        snprintf(err->msg, sizeof err->msg,
                 "%.900s: no file list of package %s; scripts/deps.sh installs it", dir, package);
    return -1;
}

static int package_files(const char *root, const file_set *fs, char ***names, int *count,
                         acem_error *err) {
    char list[PATH_LEN];
    strbuf text;
    if (package_list(root, fs->package, list, err) || read_text(list, &text, err)) return -1;
    char **out = NULL;
    int n = 0, rc = 0;
    size_t pl = strlen(fs->prefix), sl = strlen(fs->suffix);
    for (char *line = strtok(text.s, "\n"); !rc && line; line = strtok(NULL, "\n")) {
        size_t len = strlen(line);
        if (len <= pl + sl || strncmp(line, fs->prefix, pl) ||
            strcmp(line + len - sl, fs->suffix) || (fs->flat && strchr(line + pl, '/')))
            continue;
        char path[PATH_LEN];
        struct stat st;
        if (join(path, root, line, err)) {
            rc = -1;
        } else if (!lstat(path, &st) && S_ISREG(st.st_mode)) {
            char **grown = realloc(out, (size_t)(n + 1) * sizeof *out);
            rc = grown && (grown[n] = strdup(path)) ? 0 : oom(err);
            out = grown ? grown : out;
            n += !rc;
        }
    }
    free(text.s);
    if (!rc && !n && fs->required) {
        snprintf(err->msg, sizeof err->msg, "%.900s: lists no file %s*%s", list, fs->prefix,
                 fs->suffix);
        rc = -1;
    }
    if (rc) {
        free_names(out, n);
        return -1;
    }
    if (n) qsort(out, (size_t)n, sizeof *out, name_cmp);
    *names = out;
    *count = n;
    return 0;
}

/* ---- task 1: fortune categories (fortunes) ---------------------------------------- */

static const char *const fortune_classes[] = {"computers", "men-women", "people",
                                              "politics",  "science",   "work"};

/* A fortune file (strfile(1)): entries separated by lines holding only "%". */
typedef struct fortune_ctx {
    pool *p;
    int label, separators;
    const char *entry; /* where the current entry starts */
} fortune_ctx;

static int fortune_line(void *ctx_, const char *line, size_t n, size_t line_no, acem_error *err) {
    (void)line_no;
    fortune_ctx *c = ctx_;
    if (!c->entry) c->entry = line;
    if (n != 1 || line[0] != '%') return 0;
    c->separators++;
    int rc = pool_add(c->p, c->entry, (size_t)(line - c->entry), c->label, 0, err);
    c->entry = NULL;
    return rc;
}

static int fortunes(const char *root, pool *p, acem_error *err) {
    for (int k = 0; k < 6; k++) {
        char path[PATH_LEN], name[64];
        snprintf(name, sizeof name, "/usr/share/games/fortunes/%s", fortune_classes[k]);
        strbuf text;
        if (join(path, root, name, err) || read_text(path, &text, err)) return -1;
        fortune_ctx c = {p, k, 0, NULL};
        int rc =
            each_line(&text, fortune_line, &c, err) ||
            (c.entry && pool_add(p, c.entry, (size_t)(text.s + text.len - c.entry), k, 0, err));
        free(text.s);
        if (!rc && !c.separators) {
            snprintf(err->msg, sizeof err->msg, "%.900s: not a fortune file (no \"%%\" lines)",
                     path);
            rc = -1;
        }
        if (rc) return -1;
    }
    return 0;
}

/* ---- tasks 2-4: WordNet glosses (wordnet-base) ------------------------------------ */

/* wndb(5WN): "OFFSET LEX_FILENUM SS_TYPE W_CNT word lex_id ... | gloss", OFFSET being the
 * line's byte offset in the file; lexicographer file numbers as in lexnames(5WN). */
typedef struct wordnet_ctx {
    const char *path;
    pool *p;
    const char *types; /* the synset types the file may hold */
    int label;         /* >= 0: every gloss gets it; -1: by lexicographer file */
    const int *lexfiles;
    int classes;
    size_t offset; /* of the current line */
    bool data_seen;
} wordnet_ctx;

static int wordnet_line(void *ctx_, const char *line, size_t n, size_t line_no, acem_error *err) {
    wordnet_ctx *c = ctx_;
    size_t offset = c->offset;
    c->offset += n + 1;
    if (n >= 2 && line[0] == ' ' && line[1] == ' ' && !c->data_seen) return 0; /* licence */
    c->data_seen = true;
    char head[32];
    unsigned long off = 0;
    int lex = -1, used = 0;
    char type = 0;
    snprintf(head, sizeof head, "%.*s", (int)(n < 31 ? n : 31), line);
    const char *bar = memchr(line, '|', n);
    if (sscanf(head, "%8lu %2d %c %n", &off, &lex, &type, &used) != 3 || used != 14 ||
        !strchr(c->types, type) || !bar || bar + 1 == line + n || bar[1] != ' ') {
        snprintf(err->msg, sizeof err->msg,
                 "%.900s: line %zu: not a WordNet data line (OFFSET LEX_FILENUM %s ... | gloss)",
                 c->path, line_no, c->types);
        return -1;
    }
    if (off != offset) {
        snprintf(err->msg, sizeof err->msg,
                 "%.900s: line %zu: offset field %08lu but the line starts at byte %zu", c->path,
                 line_no, off, offset);
        return -1;
    }
    int label = c->label;
    for (int k = 0; label < 0 && k < c->classes; k++)
        if (c->lexfiles[k] == lex) label = k;
    return label < 0 ? 0 : pool_add(c->p, bar + 2, (size_t)(line + n - bar - 2), label, 0, err);
}

static int wordnet_file(const char *root, const char *pos, wordnet_ctx *c, acem_error *err) {
    char path[PATH_LEN], name[64];
    snprintf(name, sizeof name, "/usr/share/wordnet/data.%s", pos);
    strbuf text;
    if (join(path, root, name, err) || read_text(path, &text, err)) return -1;
    c->path = path;
    c->offset = 0;
    c->data_seen = false;
    int rc = each_line(&text, wordnet_line, c, err);
    free(text.s);
    return rc;
}

static const char *const noun_classes[] = {"animal",   "artifact", "food",
                                           "location", "person",   "plant"};
static const int noun_lexfiles[] = {5, 6, 13, 15, 18, 20};
static const char *const verb_classes[] = {"change", "communication", "contact",
                                           "motion", "possession",    "social"};
static const int verb_lexfiles[] = {30, 32, 35, 38, 40, 41};
static const char *const pos_classes[] = {"noun", "verb", "adj", "adv"};
static const char *const pos_types[] = {"n", "v", "as", "r"};

static int noun_supersense(const char *root, pool *p, acem_error *err) {
    wordnet_ctx c = {.p = p, .types = "n", .label = -1, .lexfiles = noun_lexfiles, .classes = 6};
    return wordnet_file(root, "noun", &c, err);
}

static int verb_supersense(const char *root, pool *p, acem_error *err) {
    wordnet_ctx c = {.p = p, .types = "v", .label = -1, .lexfiles = verb_lexfiles, .classes = 6};
    return wordnet_file(root, "verb", &c, err);
}

static int part_of_speech(const char *root, pool *p, acem_error *err) {
    for (int k = 0; k < 4; k++) {
        wordnet_ctx c = {.p = p, .types = pos_types[k], .label = k};
        if (wordnet_file(root, pos_classes[k], &c, err)) return -1;
    }
    return 0;
}

/* ---- task 5: the language of a word (wamerican, wngerman, wfrench, wspanish, witalian) */

static const char *const word_classes[] = {"english", "german", "french", "spanish", "italian"};
static const char *const word_files[] = {"american-english", "ngerman", "french", "spanish",
                                         "italian"};

typedef struct word_ctx {
    pool *p;
    int label;
} word_ctx;

/* Words that start with a lower-case ASCII letter and hold only letters (ASCII or any
 * non-ASCII character): capitals would mark German nouns, apostrophes English possessives. */
static int word_line(void *ctx_, const char *line, size_t n, size_t line_no, acem_error *err) {
    (void)line_no;
    word_ctx *c = ctx_;
    if (!n || line[0] < 'a' || line[0] > 'z') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x80 && !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))) return 0;
    }
    return pool_add(c->p, line, n, c->label, 0, err);
}

static int word_language(const char *root, pool *p, acem_error *err) {
    for (int k = 0; k < 5; k++) {
        char path[PATH_LEN], name[64];
        snprintf(name, sizeof name, "/usr/share/dict/%s", word_files[k]);
        strbuf text;
        if (join(path, root, name, err) || read_text(path, &text, err)) return -1;
        word_ctx c = {p, k};
        int rc = each_line(&text, word_line, &c, err);
        free(text.s);
        if (rc) return -1;
    }
    return 0;
}

/* ---- task 6: man page sections (manpages, manpages-dev) --------------------------- */

static const char *const man_classes[] = {"2", "3", "4", "5", "7"};

/* Prose of a roff page: text lines with escapes resolved and the text arguments of font
 * macros, cut into paragraphs at paragraph macros and blank lines; code (.nf/.fi,
 * .EX/.EE), tables (.TS/.TE) and the NAME, SYNOPSIS, SEE ALSO and COLOPHON sections are
 * left out (man(7), groff_man(7)). */
typedef struct roff {
    pool *p;
    int label;
    uint64_t group;
    strbuf para;
    bool skip_section, skip_block;
    const char *block_end;
} roff;

/* Named glyphs and strings that stand for text; any other is dropped. */
static const char *glyph(const char *name, size_t n) {
    static const char *const map[][2] = {{"em", "-"},  {"en", "-"},  {"aq", "'"},   {"dq", "\""},
                                         {"lq", "\""}, {"rq", "\""}, {"oq", "'"},   {"cq", "'"},
                                         {"bu", "*"},  {"mu", "x"},  {"co", "(c)"}, {"hy", "-"}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (n == strlen(map[i][0]) && !strncmp(name, map[i][0], n)) return map[i][1];
    return "";
}

/* The escape at s (after the backslash) into out; returns the bytes it spans, or 0 at a
 * comment (the rest of the line is dropped). */
static size_t roff_escape(const char *s, size_t n, strbuf *out, int *rc) {
    if (!n) return 0;
    const char *name = NULL;
    size_t len = 0, span = 1;
    switch (s[0]) {
    case '"': return 0;
    case '-': *rc |= sb_put(out, "-", 1); return 1;
    case 'e':
    case '\\': *rc |= sb_put(out, "\\", 1); return 1;
    case ' ':
    case '~': *rc |= sb_put(out, " ", 1); return 1;
    case '(': name = s + 1, len = n >= 3 ? 2 : n - 1, span = 1 + len; break;
    case '[':
    case '*':
    case 'f':
    case 'n':
    case 's': {
        size_t i = s[0] == '[' ? 0 : 1; /* \[name], \*x, \*(xx, \*[name], \fX, \f(XX, ... */
        if (s[0] == 's')
            while (i < n && (s[i] == '+' || s[i] == '-' || (s[i] >= '0' && s[i] <= '9')))
                i++;
        if (i < n && s[i] == '(') {
            name = s + i + 1, len = n - i - 1 < 2 ? n - i - 1 : 2, span = i + 1 + len;
        } else if (i < n && s[i] == '[') {
            const char *close = memchr(s + i, ']', n - i);
            name = s + i + 1, len = close ? (size_t)(close - name) : n - i - 1;
            span = (size_t)(name - s) + len + (close != NULL);
        } else if (s[0] != 's') {
            name = s + i, len = i < n, span = i + len;
        } else {
            span = i;
        }
        if (s[0] == 'f' || s[0] == 'n' || s[0] == 's') name = NULL; /* fonts, registers, size */
        break;
    }
    default:
        if (strchr("&|^:%/,c)", s[0])) return 1; /* zero-width */
        *rc |= sb_put(out, s, 1);
        return 1;
    }
    if (name) {
        const char *g = glyph(name, len);
        *rc |= sb_put(out, g, strlen(g));
    }
    return span;
}

static int roff_text(const char *s, size_t n, strbuf *out) {
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        const char *bs = memchr(s + i, '\\', n - i);
        size_t run = bs ? (size_t)(bs - s) - i : n - i;
        rc |= sb_put(out, s + i, run);
        i += run;
        if (!bs) break;
        size_t span = roff_escape(s + i + 1, n - i - 1, out, &rc);
        if (!span) break;
        i += 1 + span;
    }
    return rc | sb_put(out, " ", 1);
}

static int roff_break(roff *r, acem_error *err) {
    int rc = 0;
    if (r->para.len && !r->skip_section)
        rc = pool_add(r->p, r->para.s, r->para.len, r->label, r->group, err);
    r->para.len = 0;
    return rc;
}

/* The arguments of a font macro (.B, .BR, ...), quotes removed; alternating-font macros
 * join them without spaces, as groff prints them. */
static int roff_macro_text(roff *r, const char *args, size_t n, bool alternate) {
    strbuf joined = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        while (i < n && args[i] == ' ')
            i++;
        if (i == n) break;
        bool quoted = args[i] == '"';
        size_t start = i + quoted;
        i = start;
        while (i < n && (quoted ? args[i] != '"' : args[i] != ' '))
            i++;
        rc = (joined.len && !alternate && sb_put(&joined, " ", 1)) ||
             sb_put(&joined, args + start, i - start);
        i += quoted;
    }
    if (!rc && joined.len) rc = roff_text(joined.s, joined.len, &r->para);
    free(joined.s);
    return rc;
}

static int roff_line(void *ctx, const char *line, size_t n, size_t line_no, acem_error *err) {
    (void)line_no;
    roff *r = ctx;
    bool request = n && (line[0] == '.' || line[0] == '\'');
    char name[8] = {0};
    size_t i = request ? 1 : 0;
    while (request && i < n && line[i] == ' ')
        i++;
    size_t start = i;
    while (request && i < n && line[i] != ' ' && i - start < sizeof name - 1)
        i++;
    memcpy(name, line + start, i - start);
    if (r->skip_block) { /* inside code or a table */
        r->skip_block = !(request && !strcmp(name, r->block_end));
        return 0;
    }
    static const char *const blocks[][2] = {{"nf", "fi"}, {"EX", "EE"}, {"TS", "TE"}};
    for (int b = 0; request && b < 3; b++)
        if (!strcmp(name, blocks[b][0])) {
            r->skip_block = true;
            r->block_end = blocks[b][1];
            return roff_break(r, err);
        }
    if (!request && !n) return roff_break(r, err);
    if (!request) return roff_text(line, n, &r->para) ? oom(err) : 0;
    static const char *const breaks = " SH SS PP LP P TP IP HP sp ";
    char key[12];
    snprintf(key, sizeof key, " %s ", name);
    if (name[0] && strstr(breaks, key)) {
        if (roff_break(r, err)) return -1;
        if (!strcmp(name, "SH")) {
            const char *arg = line + i;
            size_t an = n - i;
            while (an && (*arg == ' ' || *arg == '"'))
                arg++, an--;
            static const char *const skipped[] = {"NAME", "SYNOPSIS", "SEE ALSO", "COLOPHON"};
            r->skip_section = false;
            for (int k = 0; k < 4; k++)
                r->skip_section |= !strncmp(arg, skipped[k], strlen(skipped[k]));
        }
        return 0;
    }
    static const char *const fonts = " B I SM SB BR IR RB RI BI IB ";
    if (name[0] && strstr(fonts, key) &&
        roff_macro_text(r, line + i, n - i, strlen(name) == 2 && name[0] != 'S'))
        return oom(err);
    return 0; /* any other request sets up layout, not text */
}

static int man_page(const char *path, int label, pool *p, acem_error *err) {
    strbuf text;
    if (read_text(path, &text, err)) return -1;
    int rc = 0;
    if (strncmp(text.s, ".so ", 4)) { /* a page that only includes another is no page */
        const char *page = strrchr(path, '/') + 1; /* "open.2.gz": unique within a section */
        roff r = {.p = p, .label = label, .group = lab_rng_for(0, page, 0).s | 1};
        rc = each_line(&text, roff_line, &r, err) || roff_break(&r, err);
        free(r.para.s);
    }
    free(text.s);
    return rc;
}

static int man_sections(const char *root, pool *p, acem_error *err) {
    static const char *const packages[] = {"manpages", "manpages-dev"};
    for (int k = 0; k < 5; k++)
        for (int pk = 0; pk < 2; pk++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "/usr/share/man/man%s/", man_classes[k]);
            /* Each package holds some of the sections (split() counts what each class got). */
            file_set fs = {packages[pk], prefix, ".gz", true, false};
            char **names = NULL;
            int n = 0, rc = 0;
            if (package_files(root, &fs, &names, &n, err)) return -1;
            for (int f = 0; !rc && f < n; f++)
                rc = man_page(names[f], k, p, err);
            free_names(names, n);
            if (rc) return -1;
        }
    return 0;
}

/* ---- task 7: the language of a source line --------------------------------------- */

static const char *const source_classes[] = {"c", "python", "perl", "cmake"};
static const file_set source_files[] = {
    {"libc6-dev", "/usr/include/", ".h", true, true},
    {"libpython3.11-stdlib", "/usr/lib/python3.11/", ".py", true, true},
    {"perl-modules-5.36", "/usr/share/perl/5.36.0/", ".pm", false, true},
    {"cmake-data", "/usr/share/cmake-3.25/Modules/", ".cmake", true, true},
};

typedef struct source_ctx {
    pool *p;
    int label;
} source_ctx;

static int source_line(void *ctx_, const char *line, size_t n, size_t line_no, acem_error *err) {
    (void)line_no;
    source_ctx *c = ctx_;
    return pool_add(c->p, line, n, c->label, 0, err);
}

static int source_language(const char *root, pool *p, acem_error *err) {
    for (int k = 0; k < 4; k++) {
        char **names;
        int n;
        if (package_files(root, &source_files[k], &names, &n, err)) return -1;
        int rc = 0;
        for (int f = 0; !rc && f < n; f++) {
            strbuf text;
            source_ctx c = {p, k};
            rc = read_text(names[f], &text, err) || each_line(&text, source_line, &c, err);
            free(text.s);
        }
        free_names(names, n);
        if (rc) return -1;
    }
    return 0;
}

/* ---- the tasks, balanced and split ------------------------------------------------ */

typedef int (*task_fn)(const char *root, pool *p, acem_error *err);

static const struct {
    const char *name, *about;
    const char *const *classes;
    int n_classes;
    int min_bytes; /* shorter texts carry no signal: single letters; source lines of brackets,
                    * "else:", "endif()" */
    task_fn build;
} tasks[LAB_TEXT_TASKS] = {
    {"fortune", "the fortune file of a fortune (fortunes)", fortune_classes, 6, 3, fortunes},
    {"noun_sense", "WordNet lexicographer file of a noun's gloss (wordnet-base)", noun_classes, 6,
     3, noun_supersense},
    {"verb_sense", "WordNet lexicographer file of a verb's gloss (wordnet-base)", verb_classes, 6,
     3, verb_supersense},
    {"pos", "part of speech of a WordNet gloss (wordnet-base)", pos_classes, 4, 3, part_of_speech},
    {"word_lang", "the language of a word (wamerican, wngerman, wfrench, wspanish, witalian)",
     word_classes, 5, 3, word_language},
    {"man_section", "the section of a man page paragraph (manpages, manpages-dev)", man_classes, 5,
     3, man_sections},
    {"source_lang", "the language of a source line (libc6-dev, libpython3.11-stdlib, ...)",
     source_classes, 4, 24, source_language},
};

static int by_text(const void *a_, const void *b_) {
    const example *a = a_, *b = b_;
    int c = strcmp(a->text, b->text);
    return c                      ? c
           : a->label != b->label ? a->label - b->label
                                  : (a->group > b->group) - (a->group < b->group);
}

/* Within a class: groups in seeded order, a group's examples in seeded order. */
static int by_split_order(const void *a_, const void *b_) {
    const example *a = a_, *b = b_;
    if (a->label != b->label) return a->label - b->label;
    if (a->group != b->group) return a->group < b->group ? -1 : 1;
    return (a->key > b->key) - (a->key < b->key);
}

static int by_key(const void *a_, const void *b_) {
    const example *a = a_, *b = b_;
    return (a->key > b->key) - (a->key < b->key);
}

/* Keeps one copy of each text and drops texts that occur under two labels. */
static void dedupe(pool *p) {
    if (p->n) qsort(p->e, (size_t)p->n, sizeof *p->e, by_text);
    int kept = 0;
    for (int i = 0; i < p->n;) {
        int j = i + 1;
        bool mixed = false;
        for (; j < p->n && !strcmp(p->e[j].text, p->e[i].text); j++)
            mixed |= p->e[j].label != p->e[i].label;
        for (int k = i + !mixed; k < j; k++)
            free(p->e[k].text);
        if (!mixed) p->e[kept++] = p->e[i];
        i = j;
    }
    p->n = kept;
}

static int set_alloc(lab_text_set *s, int n) {
    s->text = calloc((size_t)n, sizeof *s->text);
    s->y = calloc((size_t)n, sizeof *s->y);
    return s->text && s->y ? 0 : -1;
}

/* Moves the pool's examples into the splits: per class, whole groups in seeded order fill
 * test, then validation, then training; a group never spans two splits (the rest of the
 * group that reaches a split's size is dropped). Each split is then put in seeded order. */
static int split(pool *p, lab_text_task *t, lab_text_sizes sz, uint64_t seed, acem_error *err) {
    uint64_t salt = lab_rng_for(seed, t->name, 0).s;
    for (int i = 0; i < p->n; i++) {
        example *e = &p->e[i];
        e->key = lab_rng_for(salt, e->text, 0).s;
        e->group = e->group ? lab_rng_for(salt ^ e->group, "group", 0).s : e->key;
    }
    if (p->n) qsort(p->e, (size_t)p->n, sizeof *p->e, by_split_order);
    lab_text_set *sets[3] = {&t->test, &t->val, &t->train};
    int want[3] = {sz.test, sz.val, sz.train};
    for (int s = 0; s < 3; s++)
        if (set_alloc(sets[s], want[s] * t->classes)) return oom(err);
    for (int i = 0, c = 0; c < t->classes; c++) {
        int s = 0, got = 0, have = 0;
        for (; i < p->n && p->e[i].label == c; i++) {
            bool new_group = i == 0 || p->e[i].group != p->e[i - 1].group || p->e[i - 1].label != c;
            if (got == want[s] && new_group && s < 2) s++, got = 0;
            if (got == want[s]) continue; /* the rest of a group, or more than needed */
            lab_text_set *set = sets[s];
            set->text[set->n] = p->e[i].text;
            set->y[set->n++] = c;
            p->e[i].text = NULL;
            got++, have++;
        }
        if (s < 2 || got < want[2]) {
            snprintf(err->msg, sizeof err->msg,
                     "lab: text task %s: class %s has %d usable examples, the sizes need %d",
                     t->name, t->class_name[c], have, (sz.train + sz.val + sz.test));
            return -1;
        }
    }
    for (int s = 0; s < 3; s++) { /* seeded order, classes mixed */
        pool tmp = {0};
        int n = sets[s]->n;
        tmp.e = malloc((size_t)n * sizeof *tmp.e);
        if (!tmp.e) return oom(err);
        for (int i = 0; i < n; i++)
            tmp.e[i] = (example){sets[s]->text[i], sets[s]->y[i], 0,
                                 lab_rng_for(salt + (uint64_t)s + 1, sets[s]->text[i], 0).s};
        qsort(tmp.e, (size_t)n, sizeof *tmp.e, by_key);
        for (int i = 0; i < n; i++)
            sets[s]->text[i] = tmp.e[i].text, sets[s]->y[i] = tmp.e[i].label;
        free(tmp.e);
    }
    return 0;
}

static int build_task(const char *root, int k, lab_text_sizes sz, uint64_t seed, lab_text_task *t,
                      acem_error *err) {
    snprintf(t->name, sizeof t->name, "%s", tasks[k].name);
    snprintf(t->about, sizeof t->about, "%s", tasks[k].about);
    t->classes = tasks[k].n_classes;
    for (int c = 0; c < t->classes; c++)
        snprintf(t->class_name[c], sizeof t->class_name[c], "%s", tasks[k].classes[c]);
    pool p = {.min_bytes = tasks[k].min_bytes};
    int rc = tasks[k].build(root, &p, err);
    if (!rc) {
        dedupe(&p);
        rc = split(&p, t, sz, seed, err);
    }
    pool_free(&p);
    return rc;
}

/* ---- the pretraining corpus -------------------------------------------------------- */

static int add_doc(lab_text_data *d, char *text, acem_error *err) {
    char **grown = realloc(d->doc, (size_t)(d->docs + 1) * sizeof *grown);
    if (!grown || !text) {
        free(text);
        if (grown) d->doc = grown;
        return oom(err);
    }
    d->doc = grown;
    d->doc[d->docs++] = text;
    return 0;
}

/* The licence texts (files, not links, of /usr/share/common-licenses, by name), then every
 * task's training texts. */
static int corpus(const char *root, lab_text_data *d, acem_error *err) {
    char **names = NULL;
    int n = 0, rc = 0;
    file_set fs = {"base-files", "/usr/share/common-licenses/", "", true, true};
    if (package_files(root, &fs, &names, &n, err)) return -1;
    for (int f = 0; !rc && f < n; f++) {
        strbuf text;
        rc = read_text(names[f], &text, err) || add_doc(d, text.s, err);
    }
    free_names(names, n);
    for (int k = 0; !rc && k < LAB_TEXT_TASKS; k++)
        for (int i = 0; !rc && i < d->task[k].train.n; i++)
            rc = add_doc(d, strdup(d->task[k].train.text[i]), err);
    return rc;
}

void lab_text_free(lab_text_data *d) {
    for (int k = 0; k < LAB_TEXT_TASKS; k++) {
        lab_text_set *sets[3] = {&d->task[k].train, &d->task[k].val, &d->task[k].test};
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < sets[s]->n; i++)
                free(sets[s]->text[i]);
            free(sets[s]->text);
            free(sets[s]->y);
        }
    }
    for (int i = 0; i < d->docs; i++)
        free(d->doc[i]);
    free(d->doc);
    memset(d, 0, sizeof *d);
}

int lab_text_load(lab_text_data *d, const char *root, lab_text_sizes sizes, uint64_t seed,
                  acem_error *err) {
    memset(d, 0, sizeof *d);
    if (sizes.train < 1 || sizes.val < 1 || sizes.test < 1) {
        snprintf(err->msg, sizeof err->msg, "lab: text suite sizes must be at least 1 per split");
        return -1;
    }
    int rc = 0;
    for (int k = 0; !rc && k < LAB_TEXT_TASKS; k++)
        rc = build_task(root, k, sizes, seed, &d->task[k], err);
    if (!rc) rc = corpus(root, d, err);
    if (rc) lab_text_free(d);
    return rc ? -1 : 0;
}
