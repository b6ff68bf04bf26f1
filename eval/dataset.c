/* dataset.c — TSV, CSV and JSONL evaluation data (rules: docs/eval.md, "Data files").
 *
 * TSV is GLUE's: fields split at every tab, no quoting at all (transformers' GLUE
 * processors read it with csv.reader(delimiter="\t", quotechar=None): MNLI's sentences hold
 * unbalanced quotes). CSV is RFC 4180: a field in double quotes may hold commas, quotes
 * doubled and line breaks. JSONL: one JSON object a line. Everything is read into memory;
 * rows are checked as they come and the first problem ends the read with path:line. */
#include "dataset.h"

#include "textfile.h"

#include "formats/formats.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DATA_MAX_FILE   (8ULL << 30)
#define EVAL_MAX_LABELS 65536

typedef enum { FMT_TSV, FMT_CSV, FMT_JSONL } data_format;

/* One field of a row: a span of the file (TSV) or, for CSV, at offset off of the reader's
 * buffer of the row's unquoted fields (s set when the row is complete: the buffer moves). */
typedef struct field {
    const char *s;
    size_t off, n;
} field;

typedef struct reader {
    const char *path;
    data_format fmt;
    const char *p, *end; /* what is left of the file */
    size_t line;         /* line of the next row */
    field *f;
    size_t nf, fcap;
    char *unq; /* the current CSV row's fields, unquoted */
    size_t unq_len, unq_cap;
    acem_error *err;
} reader;

/* The source's own example of a line break: the row ends at "\n", a "\r" before it goes. */
static size_t trim_cr(const char *s, size_t n) { return n && s[n - 1] == '\r' ? n - 1 : n; }

static int nomem(const char *path, acem_error *err) {
    return acem_fail(err, "%s: out of memory", path);
}
static int oom(reader *r) { return nomem(r->path, r->err); }

static int push_field(reader *r, const char *s, size_t off, size_t n) {
    if (r->nf == r->fcap) {
        size_t c = r->fcap ? 2 * r->fcap : 16;
        field *f = realloc(r->f, c * sizeof *f);
        if (!f) return oom(r);
        r->f = f;
        r->fcap = c;
    }
    r->f[r->nf++] = (field){s, off, n};
    return 0;
}

/* A TSV row: the line split at every tab. */
static int tsv_row(reader *r) {
    const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
    const char *e = nl ? nl : r->end;
    size_t n = trim_cr(r->p, (size_t)(e - r->p));
    for (const char *s = r->p, *stop = r->p + n;;) {
        const char *tab = memchr(s, '\t', (size_t)(stop - s));
        if (push_field(r, s, 0, (size_t)((tab ? tab : stop) - s))) return -1;
        if (!tab) break;
        s = tab + 1;
    }
    r->p = nl ? nl + 1 : r->end;
    return 0;
}

static int unq_append(reader *r, const char *s, size_t n) {
    if (r->unq_len + n + 1 > r->unq_cap) {
        size_t c = (r->unq_len + n + 1) * 2;
        char *u = realloc(r->unq, c);
        if (!u) return oom(r);
        r->unq = u;
        r->unq_cap = c;
    }
    memcpy(r->unq + r->unq_len, s, n);
    r->unq_len += n;
    return 0;
}

/* A quoted CSV field from just after its opening quote to the quote that is not doubled;
 * line breaks inside are text (and count as lines). After it: a comma, a line break or the
 * end of the file. */
static int csv_quoted(reader *r, const char **at, size_t start_line) {
    const char *s = *at;
    for (;;) {
        const char *q = memchr(s, '"', (size_t)(r->end - s));
        if (!q)
            return acem_fail(r->err, "%s:%zu: a quoted field is not closed", r->path, start_line);
        for (const char *c = s; c < q; c++)
            r->line += *c == '\n';
        bool doubled = q + 1 < r->end && q[1] == '"';
        if (unq_append(r, s, (size_t)(q - s) + doubled)) return -1;
        s = q + 1 + doubled;
        if (!doubled) break;
    }
    if (s < r->end && *s != ',' && *s != '\n' && !(*s == '\r' && s + 1 < r->end && s[1] == '\n'))
        return acem_fail(r->err,
                         "%s:%zu: a quoted field is followed by \"%c\", not a comma or the end "
                         "of the line",
                         r->path, r->line, *s);
    *at = s;
    return 0;
}

/* A CSV row (RFC 4180): fields at commas, quoted ones as csv_quoted, a quote inside an
 * unquoted field refused; "\n" or "\r\n" outside quotes ends the row. */
static int csv_row(reader *r) {
    size_t start_line = r->line;
    r->unq_len = 0;
    const char *s = r->p;
    for (;;) {
        size_t off = r->unq_len;
        if (s < r->end && *s == '"') {
            s++;
            if (csv_quoted(r, &s, start_line)) return -1;
            if (s < r->end && *s == '\r') s++;
        } else {
            const char *e = s;
            while (e < r->end && *e != ',' && *e != '\n' && *e != '"')
                e++;
            if (e < r->end && *e == '"')
                return acem_fail(r->err, "%s:%zu: a quote inside an unquoted field", r->path,
                                 r->line);
            size_t n = e < r->end && *e == '\n' ? trim_cr(s, (size_t)(e - s)) : (size_t)(e - s);
            if (unq_append(r, s, n)) return -1;
            s = e;
        }
        if (push_field(r, NULL, off, r->unq_len - off)) return -1;
        if (s >= r->end || *s == '\n') break;
        s++; /* the comma */
    }
    for (size_t i = 0; i < r->nf; i++)
        r->f[i].s = r->unq + r->f[i].off;
    r->p = s < r->end ? s + 1 : r->end;
    return 0;
}

/* The next row's fields in r->f (TSV, CSV); 1 at the end of the file. A file's last line
 * break ends its last row, it does not start an empty one. */
static int next_row(reader *r, size_t *line) {
    r->nf = 0;
    if (r->p >= r->end) return 1;
    *line = r->line;
    int rc = r->fmt == FMT_TSV ? tsv_row(r) : csv_row(r);
    r->line++;
    return rc;
}

/* An index: all digits, at most 9 of them. */
static bool as_index(const char *col, size_t *i) {
    size_t n = strlen(col);
    if (!n || n > 9 || strspn(col, "0123456789") != n) return false;
    *i = (size_t)strtoul(col, NULL, 10);
    return true;
}

/* The column of COL: its header name (exact), else a 0-based index; *at is SIZE_MAX for a
 * column that is not asked for. */
static int resolve(reader *r, const char *col, const field *hdr, size_t nh, size_t width,
                   const char *what, size_t *at) {
    *at = SIZE_MAX;
    if (!col) return 0;
    for (size_t i = 0; hdr && i < nh; i++)
        if (hdr[i].n == strlen(col) && !memcmp(hdr[i].s, col, hdr[i].n)) {
            *at = i;
            return 0;
        }
    size_t i;
    if (!as_index(col, &i))
        return acem_fail(r->err, "%s: no column named \"%.200s\" (%s column)%s", r->path, col, what,
                         hdr ? "" : "; without a header row columns are 0-based indexes");
    if (i >= width)
        return acem_fail(r->err, "%s: %s column %zu is past the %zu columns of the file", r->path,
                         what, i, width);
    *at = i;
    return 0;
}

/* What the read collects before the label ids are known. */
typedef struct rows {
    eval_dataset *d;
    char **labels; /* label text of each example */
    size_t cap;
} rows;

static char *copy(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

static int add_example(rows *rs, const char *path, size_t line, const field *text,
                       const field *pair, const field *label, acem_error *err) {
    eval_dataset *d = rs->d;
    if (d->n == rs->cap) {
        size_t c = rs->cap ? 2 * rs->cap : 256;
        char **t = realloc(d->text, c * sizeof *t);
        if (t) d->text = t;
        char **p = realloc(d->pair, c * sizeof *p);
        if (p) d->pair = p;
        char **l = realloc(rs->labels, c * sizeof *l);
        if (l) rs->labels = l;
        size_t *ln = realloc(d->line, c * sizeof *ln);
        if (ln) d->line = ln;
        if (!t || !p || !l || !ln) return nomem(path, err);
        rs->cap = c;
    }
    if (!label->n) return acem_fail(err, "%s:%zu: the label is empty", path, line);
    d->text[d->n] = copy(text->s, text->n);
    d->pair[d->n] = pair ? copy(pair->s, pair->n) : NULL;
    rs->labels[d->n] = copy(label->s, label->n);
    d->line[d->n] = line;
    if (!d->text[d->n] || (pair && !d->pair[d->n]) || !rs->labels[d->n]) {
        free(d->text[d->n]);
        free(d->pair[d->n]);
        free(rs->labels[d->n]);
        return nomem(path, err);
    }
    d->n++;
    return 0;
}

/* TSV and CSV: the header (when there is one), then every row as wide as the first. */
static int read_table(reader *r, const eval_columns *c, rows *rs) {
    bool header = c->header == EVAL_HEADER_YES;
    size_t ignored;
    if (c->header == EVAL_HEADER_AUTO)
        header = !as_index(c->text, &ignored) || (c->pair && !as_index(c->pair, &ignored)) ||
                 !as_index(c->label, &ignored);
    size_t line = 0;
    int rc = next_row(r, &line);
    if (rc) return rc < 0 ? -1 : acem_fail(r->err, "%s: no rows", r->path);
    size_t width = r->nf, at_text, at_pair, at_label;
    /* the header's names, copied: the next row reuses the reader's buffers */
    field *hdr = header ? malloc(width * sizeof *hdr) : NULL;
    char *hdr_unq = header && r->fmt == FMT_CSV ? copy(r->unq, r->unq_len) : NULL;
    if (header && (!hdr || (r->fmt == FMT_CSV && !hdr_unq))) {
        free(hdr);
        free(hdr_unq);
        return oom(r);
    }
    for (size_t i = 0; hdr && i < width; i++)
        hdr[i] = hdr_unq ? (field){hdr_unq + r->f[i].off, r->f[i].off, r->f[i].n} : r->f[i];
    rc = resolve(r, c->text, hdr, width, width, "text", &at_text) ||
                 resolve(r, c->pair, hdr, width, width, "pair", &at_pair) ||
                 resolve(r, c->label, hdr, width, width, "label", &at_label)
             ? -1
             : 0;
    free(hdr);
    free(hdr_unq);
    for (bool first = !header; !rc; first = false) {
        if (!first && (rc = next_row(r, &line))) break;
        if (r->nf != width) {
            rc = acem_fail(r->err, "%s:%zu: %zu fields, the first row has %zu", r->path, line,
                           r->nf, width);
            break;
        }
        rc = add_example(rs, r->path, line, &r->f[at_text],
                         at_pair == SIZE_MAX ? NULL : &r->f[at_pair], &r->f[at_label], r->err);
    }
    return rc < 0 ? -1 : 0;
}

/* A JSON string escape that cJSON would turn into a NUL and so cut the string short. */
static bool has_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 5 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && !strncmp(s + i + 2, "0000", 4)) return true;
        i++; /* skip the escaped character, so "\\u0000" is text */
    }
    return false;
}

/* The value of key in one JSONL object: a string, or for the label an integer. */
static int json_value(reader *r, const cJSON *o, const char *key, bool label, size_t line,
                      char *num, field *out) {
    const cJSON *v = NULL;
    for (const cJSON *e = o->child; e; e = e->next)
        if (!strcmp(e->string, key)) {
            if (v)
                return acem_fail(r->err, "%s:%zu: key \"%.200s\" appears twice", r->path, line,
                                 key);
            v = e;
        }
    if (!v) return acem_fail(r->err, "%s:%zu: no key \"%.200s\"", r->path, line, key);
    if (cJSON_IsString(v)) {
        *out = (field){v->valuestring, 0, strlen(v->valuestring)};
        return 0;
    }
    if (label && cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 2147483648.0 &&
        v->valuedouble == (double)(int32_t)v->valuedouble) {
        *out = (field){num, 0, (size_t)snprintf(num, 16, "%d", (int)v->valuedouble)};
        return 0;
    }
    return acem_fail(r->err, "%s:%zu: \"%.200s\" is not a string%s", r->path, line, key,
                     label ? " or a non-negative integer" : "");
}

/* JSONL: every line one object holding the keys (COL is a key here, digits or not). */
static int read_jsonl(reader *r, const eval_columns *c, rows *rs) {
    for (size_t line = 1; r->p < r->end; line++) {
        const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
        const char *e = nl ? nl : r->end;
        size_t n = trim_cr(r->p, (size_t)(e - r->p));
        const char *end = NULL;
        cJSON *o = has_nul_escape(r->p, n) ? NULL : cJSON_ParseWithLengthOpts(r->p, n, &end, 0);
        int rc = 0;
        field text, pair, label;
        char num[16];
        while (o && end < r->p + n && (*end == ' ' || *end == '\t'))
            end++;
        if (!o || !cJSON_IsObject(o) || end != r->p + n)
            rc = acem_fail(r->err, "%s:%zu: not one JSON object (without \\u0000)", r->path, line);
        else
            rc = json_value(r, o, c->text, false, line, num, &text) ||
                         (c->pair && json_value(r, o, c->pair, false, line, num, &pair)) ||
                         json_value(r, o, c->label, true, line, num, &label) ||
                         add_example(rs, r->path, line, &text, c->pair ? &pair : NULL, &label,
                                     r->err)
                     ? -1
                     : 0;
        cJSON_Delete(o);
        if (rc) return -1;
        r->p = nl ? nl + 1 : r->end;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Integer labels are their own ids; the names are "0" .. the largest. */
static int integer_labels(rows *rs, const char *path, acem_error *err) {
    eval_dataset *d = rs->d;
    size_t max = 0, idx = 0;
    for (size_t i = 0; i < d->n; i++) {
        as_index(rs->labels[i], &idx);
        if (idx >= EVAL_MAX_LABELS)
            return acem_fail(err, "%s:%zu: label %zu: at most %d classes", path, d->line[i], idx,
                             EVAL_MAX_LABELS);
        d->label[i] = (int32_t)idx;
        max = idx > max ? idx : max;
    }
    if (!(d->label_names = calloc(max + 1, sizeof(char *)))) return nomem(path, err);
    for (d->n_labels = 0; d->n_labels <= max; d->n_labels++) {
        char b[16];
        snprintf(b, sizeof b, "%zu", d->n_labels);
        if (!(d->label_names[d->n_labels] = strdup(b))) return nomem(path, err);
    }
    return 0;
}

/* String labels: the distinct strings in byte order (strcmp) take ids 0, 1, ... */
static int string_labels(rows *rs, const char *path, acem_error *err) {
    eval_dataset *d = rs->d;
    char **sorted = malloc(d->n * sizeof *sorted);
    if (!sorted || !(d->label_names = calloc(d->n, sizeof(char *)))) {
        free(sorted);
        return nomem(path, err);
    }
    memcpy(sorted, rs->labels, d->n * sizeof *sorted);
    qsort(sorted, d->n, sizeof *sorted, cmp_str);
    int rc = 0;
    for (size_t i = 0; i < d->n && !rc; i++)
        if (!d->n_labels || strcmp(d->label_names[d->n_labels - 1], sorted[i]))
            if (!(d->label_names[d->n_labels++] = strdup(sorted[i]))) rc = nomem(path, err);
    free(sorted);
    for (size_t i = 0; i < d->n && !rc; i++) {
        char **hit = bsearch(&rs->labels[i], d->label_names, d->n_labels, sizeof(char *), cmp_str);
        d->label[i] = (int32_t)(hit - d->label_names);
    }
    return rc;
}

/* Label ids: the model's names when given (a name, or an integer below their count); else
 * integers as themselves when every label is one; else the distinct strings in byte order.
 * Integer and non-integer labels mixed are an error (often a header row read as data). */
static int label_ids(rows *rs, const eval_columns *c, const char *path, acem_error *err) {
    eval_dataset *d = rs->d;
    if (!d->n) return acem_fail(err, "%s: no examples", path);
    if (!(d->label = calloc(d->n, sizeof *d->label))) return nomem(path, err);
    size_t idx;
    if (c->label_names) {
        for (size_t i = 0; i < d->n; i++) {
            size_t k = 0;
            while (k < c->n_label_names && strcmp(c->label_names[k], rs->labels[i]))
                k++;
            if (k == c->n_label_names && !(as_index(rs->labels[i], &k) && k < c->n_label_names))
                return acem_fail(err,
                                 "%s:%zu: label \"%.200s\" is not one of the model's %zu "
                                 "labels",
                                 path, d->line[i], rs->labels[i], c->n_label_names);
            d->label[i] = (int32_t)k;
        }
        d->n_labels = c->n_label_names;
        if (!(d->label_names = calloc(d->n_labels, sizeof(char *)))) return nomem(path, err);
        for (size_t k = 0; k < d->n_labels; k++)
            if (!(d->label_names[k] = strdup(c->label_names[k]))) return nomem(path, err);
        return 0;
    }
    bool ints = as_index(rs->labels[0], &idx);
    for (size_t i = 0; i < d->n; i++)
        if (as_index(rs->labels[i], &idx) != ints)
            return acem_fail(err,
                             "%s:%zu: label \"%.200s\" is %san integer while line %zu's is%s (a "
                             "header row read as data?)",
                             path, d->line[i], rs->labels[i], ints ? "not " : "", d->line[0],
                             ints ? "" : " not");
    return ints ? integer_labels(rs, path, err) : string_labels(rs, path, err);
}

/* The format by extension; NUL bytes refused; UTF-8 checked line by line, so that the
 * error names the line (a multi-byte sequence never holds the byte "\n"). */
static int check_text(const char *path, const char *buf, size_t len, acem_error *err) {
    const char *nul = memchr(buf, 0, len);
    size_t line = 1;
    for (const char *p = buf; p < buf + len; line++) {
        const char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        const char *e = nl ? nl : buf + len;
        if (nul && nul >= p && nul < e) return acem_fail(err, "%s:%zu: a NUL byte", path, line);
        if (!acem_utf8_valid((const unsigned char *)p, (size_t)(e - p)))
            return acem_fail(err, "%s:%zu: not valid UTF-8", path, line);
        p = e + 1;
    }
    return 0;
}

static int format_of(const char *path, data_format *f, acem_error *err) {
    const char *dot = strrchr(path, '.');
    if (dot && !strcasecmp(dot, ".tsv"))
        *f = FMT_TSV;
    else if (dot && !strcasecmp(dot, ".csv"))
        *f = FMT_CSV;
    else if (dot && !strcasecmp(dot, ".jsonl"))
        *f = FMT_JSONL;
    else
        return acem_fail(err, "%s: unknown data format (the name must end in .tsv, .csv or .jsonl)",
                         path);
    return 0;
}

int eval_dataset_read(const char *path, const eval_columns *c, eval_dataset *d, acem_error *err) {
    memset(d, 0, sizeof *d);
    reader r = {.path = path, .line = 1, .err = err};
    if (!c->text || !c->label)
        return acem_fail(err, "%s: a text and a label column are needed", path);
    if (format_of(path, &r.fmt, err)) return -1;
    size_t len;
    char *buf = eval_read_file(path, DATA_MAX_FILE, &len, err);
    if (!buf) return -1;
    rows rs = {.d = d};
    int rc = check_text(path, buf, len, err);
    if (!rc) {
        /* a byte order mark (MRPC's files from Microsoft start with one) is not text */
        size_t bom = len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3) ? 3 : 0;
        r.p = buf + bom;
        r.end = buf + len;
        rc = r.fmt == FMT_JSONL ? read_jsonl(&r, c, &rs) : read_table(&r, c, &rs);
    }
    if (!c->pair) {
        free(d->pair);
        d->pair = NULL;
    }
    rc = rc ? rc : label_ids(&rs, c, path, err);
    for (size_t i = 0; rs.labels && i < d->n; i++)
        free(rs.labels[i]);
    free(rs.labels);
    free(r.f);
    free(r.unq);
    free(buf);
    if (rc) eval_dataset_free(d);
    return rc;
}

void eval_dataset_free(eval_dataset *d) {
    for (size_t i = 0; i < d->n; i++) {
        free(d->text[i]);
        if (d->pair) free(d->pair[i]);
    }
    for (size_t i = 0; i < d->n_labels; i++)
        if (d->label_names) free(d->label_names[i]);
    free(d->text);
    free(d->pair);
    free(d->label);
    free(d->line);
    free(d->label_names);
    memset(d, 0, sizeof *d);
}
