/* cmd_eval.c — `acem eval`: a GPT-2 classifier's accuracy on a data file (TSV, CSV, JSONL),
 * the merging papers' table over many tasks, a GPT-2 language model's perplexity
 * (docs/eval.md, "acem eval"). */
#include "cli.h"

#include "bpe.h"
#include "dataset.h"
#include "evaluate.h"
#include "gpt2.h"
#include "textfile.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yaml.h>

static const char *help =
    "usage: acem eval --model DIR --data FILE --text COL [--text-pair COL] --label COL\n"
    "                 [--head CKPT] [--max-length N] [--batch N] [--json OUT]\n"
    "       acem eval --model DIR --tasks TASKS.yaml [--json OUT]\n"
    "       acem eval --model DIR --perplexity FILE.txt [--stride N] [--json OUT]\n"
    "\n"
    "Evaluates a Hugging Face GPT-2 folder (config.json, weights, and its tokenizer:\n"
    "tokenizer.json or vocab.json + merges.txt) with acem's own forward pass.\n"
    "\n"
    "classification: FILE is TSV (GLUE's files as distributed), CSV or JSONL; COL a header\n"
    "  name or a 0-based index. A pair's two texts are tokenised apart and their ids joined\n"
    "  with no separator, the longer one cut first to fit --max-length (as FusionBench\n"
    "  tokenises GLUE for GPT-2). Labels: a name of the model's id2label, or an integer\n"
    "  below its number of classes; without id2label integers are their own ids and other\n"
    "  strings take ids in sorted order. Prints the accuracy and per-class counts.\n"
    "many tasks: TASKS.yaml lists tasks (name, data, text, text_pair, label, head,\n"
    "  max_length, individual); prints per-task accuracy, Avg and Norm (accuracy over the\n"
    "  task's individual accuracy), the merging papers' table.\n"
    "perplexity: the text in windows of n_positions tokens moved by --stride, each token\n"
    "  scored once with the window's context (Hugging Face's perplexity guide); prints the\n"
    "  tokens scored, perplexity and bits per byte.\n"
    "\n"
    "options:\n"
    "  -m, --model DIR       the model (and tokenizer) folder\n"
    "  -d, --data FILE       a .tsv, .csv or .jsonl file of examples\n"
    "      --text COL        the text column\n"
    "      --text-pair COL   the second text of a pair (MRPC, RTE, QNLI, ...)\n"
    "      --label COL       the label column\n"
    "      --head CKPT       score.weight from CKPT (a file or folder; its config.json's\n"
    "                        id2label too): an expert's head on a merged backbone\n"
    "      --max-length N    tokens per example (default: the model's n_positions)\n"
    "      --batch N         examples per forward pass (default 16; 1 when config.json\n"
    "                        has no pad_token_id, as transformers requires)\n"
    "      --tasks FILE      many tasks from a YAML file (docs/eval.md)\n"
    "      --perplexity FILE a UTF-8 text file\n"
    "      --stride N        tokens a window moves (default n_positions / 2)\n"
    "      --json OUT        also write the results as JSON (never over an input)\n"
    "      --force           replace an existing OUT\n"
    "  -q, --quiet           no progress line\n"
    "\n"
    "examples:\n"
    "  acem eval -m ./gpt2-sst2 -d glue/SST-2/dev.tsv --text sentence --label label\n"
    "  acem eval -m ./merged --head ./gpt2-mrpc -d glue/MRPC/dev.tsv \\\n"
    "      --text '#1 String' --text-pair '#2 String' --label Quality --json mrpc.json\n"
    "  acem eval -m ./gpt2-cola -d glue/CoLA/dev.tsv --text 3 --label 1   # no header\n"
    "  acem eval -m ./merged --tasks glue.yaml\n"
    "  acem eval -m ./gpt2 --perplexity wiki.test.txt --stride 512\n";

#define DEFAULT_BATCH 16
#define EVAL_MAX_TEXT (1ULL << 30) /* --perplexity: the text is held with its ids */

/* One sentence into err (printf-style); returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(acem_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

typedef struct eval_opts {
    const char *model, *data, *text, *pair, *label, *head, *json, *tasks, *perplexity;
    long max_length, batch, stride;
    bool force, quiet;
} eval_opts;

/* One task's outcome: confusion[label * K + predicted], and the class names (K). */
typedef struct class_result {
    size_t n, correct;
    int K;
    size_t *confusion;
    char **names;
} class_result;

static void result_free(class_result *r) {
    for (int k = 0; r->names && k < r->K; k++)
        free(r->names[k]);
    free(r->names);
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

/* ---- classification -------------------------------------------------------------- */

/* One task: the data file, its columns and the cut. */
typedef struct task_spec {
    const char *name, *data, *text, *pair, *label, *head;
    long max_length;
    double individual; /* 0: not given */
} task_spec;

/* The progress line as an eval_progress_fn (user: a progress_of). */
typedef struct progress_of {
    progress_bar bar;
    const char *what;
} progress_of;
static void on_progress(void *user, size_t done, size_t total) {
    progress_of *p = user;
    progress_count(&p->bar, p->what, done, total);
}

/* The class names: the model's id2label, else the data's names, else the ids. */
static int class_names(const gpt2_config *c, const eval_dataset *d, class_result *r) {
    if (!(r->names = calloc((size_t)r->K, sizeof *r->names))) return -1;
    for (int k = 0; k < r->K; k++) {
        char id[16];
        snprintf(id, sizeof id, "%d", k);
        const char *name = c->id2label               ? c->id2label[k]
                           : (size_t)k < d->n_labels ? d->label_names[k]
                                                     : id;
        if (!(r->names[k] = strdup(name))) return -1;
    }
    return 0;
}

/* Every label must be a row of the head: without id2label the data's own ids are checked
 * here (with it, the reader already refused a name or integer outside it). */
static int check_labels(const eval_dataset *d, int K, const char *path, acem_error *err) {
    for (size_t i = 0; i < d->n; i++)
        if (d->label[i] >= K)
            return fail(err, "%s:%zu: label \"%s\" has id %d, past the head's %d classes", path,
                        d->line[i], d->label_names[d->label[i]], (int)d->label[i], K);
    return 0;
}

/* Every example's ids, or an error naming path:line. */
static int encode_data(bpe_tokenizer *tok, const eval_dataset *d, size_t max, const char *path,
                       eval_rows *rows, acem_error *err) {
    size_t bad;
    if (!eval_encode(tok, (const char *const *)d->text, (const char *const *)d->pair, d->n, max,
                     rows, &bad, err))
        return 0;
    char why[sizeof err->msg];
    snprintf(why, sizeof why, "%s", err->msg);
    return fail(err, "%s:%zu: %s", path, d->line[bad], why);
}

/* The predictions counted into r's confusion matrix. */
static int classify_rows(gpt2_model *m, const eval_rows *rows, const eval_dataset *d, long batch,
                         bool quiet, class_result *r, acem_error *err) {
    int *pred = malloc(d->n * sizeof *pred);
    if (!pred) return fail(err, "out of memory");
    progress_of p = {.what = "examples"};
    progress_init(&p.bar, quiet);
    int rc = eval_classify(m, rows, (int)batch, pred, on_progress, &p, err);
    progress_clear(&p.bar);
    for (size_t i = 0; i < d->n && !rc; i++) {
        r->confusion[(size_t)d->label[i] * (size_t)r->K + (size_t)pred[i]]++;
        r->correct += pred[i] == d->label[i];
    }
    free(pred);
    return rc;
}

static int classify_task(gpt2_model *m, bpe_tokenizer *tok, const task_spec *t, long batch,
                         bool quiet, class_result *r, acem_error *err) {
    const gpt2_config *c = gpt2_config_of(m);
    if (c->num_labels < 1)
        return fail(err, "the model is a language model (no score.weight): give --head CKPT, "
                         "a classifier's head");
    if (t->max_length > c->n_positions)
        return fail(err, "max length %ld is past the model's n_positions %d", t->max_length,
                    c->n_positions);
    eval_columns cols = {t->text,
                         t->pair,
                         t->label,
                         EVAL_HEADER_AUTO,
                         (const char *const *)c->id2label,
                         c->id2label ? (size_t)c->num_labels : 0};
    eval_dataset d;
    eval_rows rows = {{0}, NULL, 0};
    memset(r, 0, sizeof *r);
    r->K = c->num_labels;
    int rc = eval_dataset_read(t->data, &cols, &d, err);
    if (!rc) rc = check_labels(&d, r->K, t->data, err);
    if (!rc)
        rc =
            encode_data(tok, &d, t->max_length > 0 ? (size_t)t->max_length : (size_t)c->n_positions,
                        t->data, &rows, err);
    if (!rc && (!(r->confusion = calloc((size_t)r->K * (size_t)r->K, sizeof *r->confusion)) ||
                class_names(c, &d, r)))
        rc = fail(err, "out of memory");
    if (!rc) r->n = d.n, rc = classify_rows(m, &rows, &d, batch, quiet, r, err);
    eval_rows_free(&rows);
    eval_dataset_free(&d);
    return rc;
}

/* Examples of label y predicted as p. */
static size_t cell(const class_result *r, int y, int p) {
    return r->confusion[(size_t)y * (size_t)r->K + (size_t)p];
}

static size_t row_sum(const class_result *r, int y) {
    size_t s = 0;
    for (int k = 0; k < r->K; k++)
        s += cell(r, y, k);
    return s;
}

static size_t col_sum(const class_result *r, int p) {
    size_t s = 0;
    for (int k = 0; k < r->K; k++)
        s += cell(r, k, p);
    return s;
}

static double accuracy(const class_result *r) {
    return r->n ? (double)r->correct / (double)r->n : 0;
}

static void print_classes(const class_result *r) {
    printf("  %-16s %9s %9s %9s\n", "label", "examples", "correct", "predicted");
    for (int k = 0; k < r->K; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s", r->names[k]);
        printf("  %-16s %9zu %9zu %9zu\n", cli_printable(name), row_sum(r, k), cell(r, k, k),
               col_sum(r, k));
    }
    printf("  confusion (rows: label, columns: predicted, in id order)\n");
    for (int y = 0; y < r->K; y++) {
        printf("   ");
        for (int p = 0; p < r->K; p++)
            printf(" %7zu", cell(r, y, p));
        printf("\n");
    }
}

static cJSON *result_json(const class_result *r) {
    cJSON *o = cJSON_CreateObject(), *classes = cJSON_AddArrayToObject(o, "classes");
    cJSON *conf = cJSON_AddArrayToObject(o, "confusion");
    cJSON_AddNumberToObject(o, "examples", (double)r->n);
    cJSON_AddNumberToObject(o, "correct", (double)r->correct);
    cJSON_AddNumberToObject(o, "accuracy", accuracy(r));
    for (int k = 0; k < r->K; k++) {
        cJSON *c = cJSON_CreateObject(), *row = cJSON_CreateArray();
        cJSON_AddStringToObject(c, "label", r->names[k]);
        cJSON_AddNumberToObject(c, "examples", (double)row_sum(r, k));
        cJSON_AddNumberToObject(c, "correct", (double)cell(r, k, k));
        cJSON_AddNumberToObject(c, "predicted", (double)col_sum(r, k));
        cJSON_AddItemToArray(classes, c);
        for (int p = 0; p < r->K; p++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)cell(r, k, p)));
        cJSON_AddItemToArray(conf, row);
    }
    return o;
}

/* ---- perplexity ------------------------------------------------------------------ */

typedef struct ppl_result {
    size_t tokens, bytes; /* tokens scored, bytes of the text */
    double nll;           /* their summed negative log-likelihood, nats */
} ppl_result;

static int perplexity_file(gpt2_model *m, bpe_tokenizer *tok, const eval_opts *o, ppl_result *r,
                           acem_error *err) {
    memset(r, 0, sizeof *r);
    if (gpt2_config_of(m)->num_labels)
        return fail(err, "%s: a classifier (score.weight), not a language model", o->model);
    size_t len;
    char *text = eval_read_file(o->perplexity, EVAL_MAX_TEXT, &len, err);
    if (!text) return -1;
    bpe_ids ids = {0};
    int rc = bpe_encode(tok, text, len, &ids, err);
    if (rc) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        fail(err, "%s: %s", o->perplexity, why);
    } else if (ids.n < 2) {
        rc = fail(err, "%s: fewer than 2 tokens: nothing to predict", o->perplexity);
    }
    r->bytes = len;
    free(text);
    long stride = o->stride ? o->stride : (gpt2_config_of(m)->n_positions + 1) / 2;
    if (!rc && stride > gpt2_config_of(m)->n_positions)
        rc = fail(err, "--stride %ld is past the model's n_positions %d", stride,
                  gpt2_config_of(m)->n_positions);
    if (!rc) {
        progress_of p = {.what = "tokens"};
        progress_init(&p.bar, o->quiet);
        rc = eval_perplexity(m, ids.v, ids.n, (size_t)stride, on_progress, &p, &r->nll, &r->tokens,
                             err);
        progress_clear(&p.bar);
    }
    free(ids.v);
    return rc;
}

/* ---- many tasks (TASKS.yaml) ----------------------------------------------------- */

/* The tasks file: {tasks: [{name, data, text, label, text_pair?, head?, max_length?,
 * individual?}, ...]}, every value a scalar, paths relative to the file's folder. */
typedef struct task_list {
    yaml_document_t doc;
    task_spec *t;
    size_t n;
    char **paths; /* the resolved data and head paths, owned (2 per task) */
    bool loaded;  /* doc holds a document */
} task_list;

static const char *const TASK_KEYS[] = {"name",  "data", "text",       "text_pair",
                                        "label", "head", "max_length", "individual"};
#define N_TASK_KEYS (sizeof TASK_KEYS / sizeof *TASK_KEYS)

static int yfail(acem_error *err, const char *path, const yaml_node_t *n, const char *what) {
    return fail(err, "%s:%zu: %s", path, n->start_mark.line + 1, what);
}

/* A path of the tasks file: absolute as written, else beside the file. */
static char *beside(const char *file, const char *p) {
    const char *slash = strrchr(file, '/');
    int dir = p[0] == '/' || !slash ? 0 : (int)(slash - file + 1);
    size_t n = (size_t)dir + strlen(p) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%.*s%s", dir, file, p);
    return s;
}

static int parse_long(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return *s && !*end && !errno && *v >= lo && *v <= hi ? 0 : -1;
}

/* One key of a task into its field. */
static int task_key(task_spec *t, int key, const char *v, const yaml_node_t *n, const char *path,
                    acem_error *err) {
    const char **str[] = {&t->name, &t->data, &t->text, &t->pair, &t->label, &t->head};
    if (key < 6) return *str[key] = v, 0;
    if (key == 6)
        return parse_long(v, 1, 1 << 20, &t->max_length)
                   ? yfail(err, path, n, "max_length must be a positive integer")
                   : 0;
    char *end;
    t->individual = strtod(v, &end);
    if (*end || end == v || !(t->individual > 0 && t->individual <= 1))
        return yfail(err, path, n, "individual must be an accuracy in (0, 1]");
    return 0;
}

static int read_task(task_list *l, const yaml_node_t *m, task_spec *t, const char *path,
                     acem_error *err) {
    if (m->type != YAML_MAPPING_NODE) return yfail(err, path, m, "a task must be a mapping");
    memset(t, 0, sizeof *t);
    bool seen[N_TASK_KEYS] = {0};
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&l->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&l->doc, p->value);
        if (k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE)
            return yfail(err, path, k, "task keys and values must be plain scalars");
        const char *key = (const char *)k->data.scalar.value;
        size_t i = 0;
        while (i < N_TASK_KEYS && strcmp(TASK_KEYS[i], key))
            i++;
        char what[160];
        snprintf(what, sizeof what, "unknown key \"%.60s\" in a task (%s, ...)", key, TASK_KEYS[0]);
        if (i == N_TASK_KEYS) return yfail(err, path, k, what);
        snprintf(what, sizeof what, "key \"%s\" given twice", key);
        if (seen[i]) return yfail(err, path, k, what);
        seen[i] = true;
        if (task_key(t, (int)i, (const char *)v->data.scalar.value, v, path, err)) return -1;
    }
    if (!t->name || !t->data || !t->text || !t->label)
        return yfail(err, path, m, "a task needs name, data, text and label");
    return 0;
}

static void tasks_free(task_list *l) {
    for (size_t i = 0; l->paths && i < 2 * l->n; i++)
        free(l->paths[i]);
    free(l->paths);
    free(l->t);
    if (l->loaded) yaml_document_delete(&l->doc);
}

static int tasks_of(task_list *l, const char *path, const yaml_node_t *root, acem_error *err) {
    yaml_node_pair_t *p = root->data.mapping.pairs.start;
    yaml_node_t *k = yaml_document_get_node(&l->doc, p->key);
    yaml_node_t *seq = yaml_document_get_node(&l->doc, p->value);
    if (root->data.mapping.pairs.top - p != 1 || k->type != YAML_SCALAR_NODE ||
        strcmp((const char *)k->data.scalar.value, "tasks") || seq->type != YAML_SEQUENCE_NODE ||
        seq->data.sequence.items.top == seq->data.sequence.items.start)
        return yfail(err, path, root, "must be one key, tasks: a list of tasks");
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (!(l->t = calloc(n, sizeof *l->t)) || !(l->paths = calloc(2 * n, sizeof *l->paths)))
        return fail(err, "%s: out of memory", path);
    for (l->n = 0; l->n < n; l->n++) {
        task_spec *t = &l->t[l->n];
        yaml_node_t *m = yaml_document_get_node(&l->doc, seq->data.sequence.items.start[l->n]);
        if (read_task(l, m, t, path, err)) return -1;
        if (!(t->data = l->paths[2 * l->n] = beside(path, t->data)) ||
            (t->head && !(t->head = l->paths[2 * l->n + 1] = beside(path, t->head))))
            return l->n++, fail(err, "%s: out of memory", path);
    }
    return 0;
}

/* Strict: one document, a mapping with the one key tasks; every task's keys known. */
static int tasks_read(const char *path, task_list *l, acem_error *err) {
    memset(l, 0, sizeof *l);
    size_t len;
    char *text = eval_read_file(path, 1 << 24, &len, err);
    if (!text) return -1;
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int ok = yaml_parser_load(&parser, &l->doc);
    int rc = ok ? 0
                : fail(err, "%s:%zu: not YAML: %s", path, parser.problem_mark.line + 1,
                       parser.problem ? parser.problem : "parse error");
    yaml_parser_delete(&parser);
    free(text);
    if (!ok) return rc;
    l->loaded = true;
    yaml_node_t *root = yaml_document_get_root_node(&l->doc);
    if (!root || root->type != YAML_MAPPING_NODE || !root->data.mapping.pairs.top ||
        root->data.mapping.pairs.top == root->data.mapping.pairs.start)
        return fail(err, "%s: must be a mapping with the key tasks", path);
    return tasks_of(l, path, root, err);
}

/* ---- the command ----------------------------------------------------------------- */

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The run's last line: n items in how long, and acem's peak memory. */
static void print_summary(double start, size_t n, const char *what) {
    double s = seconds_now() - start;
    char peak[32] = "unknown (no /proc)";
    unsigned long long rss = cli_peak_rss();
    if (rss) acem_format_bytes(rss, peak, sizeof peak);
    printf("  %zu %s in %.2f s (%.1f/s), peak RSS %s\n", n, what, s, s > 0 ? (double)n / s : 0.0,
           peak);
}

/* The model for one task: the folder's, with the task's head when it names one. */
static int load_model(const char *dir, const char *head, gpt2_model **m, acem_error *err) {
    if (gpt2_load(dir, m, err)) return -1;
    if (head && gpt2_load_head(*m, head, err)) {
        gpt2_free(*m);
        *m = NULL;
        return -1;
    }
    return 0;
}

/* --json OUT: checked against the inputs before the work (never one of them). */
static int claim_json(const eval_opts *o, const char *const *inputs, size_t n, acem_outputs **outs,
                      acem_error *err) {
    *outs = NULL;
    if (!o->json) return 0;
    if (acem_outputs_new(outs, err)) return -1;
    for (size_t i = 0; i < n; i++)
        if (inputs[i] && acem_outputs_add_input(*outs, inputs[i], err)) return -1;
    return acem_outputs_claim(*outs, o->json, o->force, err);
}

static int write_json(acem_outputs *outs, const char *path, cJSON *j, acem_error *err) {
    char *text = j ? cJSON_Print(j) : NULL;
    int rc = text ? acem_outputs_write(outs, path, text, strlen(text), err)
                  : fail(err, "%s: out of memory", path);
    free(text);
    cJSON_Delete(j);
    return rc;
}

static void json_header(cJSON *j, const eval_opts *o) {
    cJSON_AddStringToObject(j, "model", o->model);
    if (o->head) cJSON_AddStringToObject(j, "head", o->head);
}

static int run_single(const eval_opts *o, bpe_tokenizer *tok, acem_error *err) {
    const char *inputs[] = {o->model, o->data, o->head};
    task_spec t = {o->data, o->data, o->text, o->pair, o->label, o->head, o->max_length, 0};
    acem_outputs *outs;
    gpt2_model *m = NULL;
    class_result r = {0, 0, 0, NULL, NULL};
    double start = seconds_now();
    int rc = claim_json(o, inputs, 3, &outs, err) || load_model(o->model, o->head, &m, err) ||
             classify_task(m, tok, &t, o->batch, o->quiet, &r, err);
    if (!rc) {
        char data[1024];
        snprintf(data, sizeof data, "%s", o->data);
        printf("acem eval: %s: accuracy %.2f%% (%zu of %zu)\n", cli_printable(data),
               100 * accuracy(&r), r.correct, r.n);
        print_classes(&r);
        print_summary(start, r.n, "examples");
        if (outs) {
            cJSON *j = result_json(&r);
            json_header(j, o);
            cJSON_AddStringToObject(j, "data", o->data);
            rc = write_json(outs, o->json, j, err);
        }
    }
    result_free(&r);
    gpt2_free(m);
    acem_outputs_free(outs);
    return rc;
}

/* The papers' table: a row per task, then Avg (mean accuracy) and Norm (mean of accuracy /
 * individual over the tasks that give individual). */
static void print_table(const task_list *l, const class_result *r) {
    double sum = 0, norm = 0;
    size_t nn = 0;
    printf("| task | examples | accuracy | individual | normalized |\n|---|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < l->n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s", l->t[i].name);
        double a = accuracy(&r[i]), ind = l->t[i].individual;
        sum += a;
        printf("| %s | %zu | %.2f |", cli_printable(name), r[i].n, 100 * a);
        if (ind > 0)
            printf(" %.2f | %.2f |\n", 100 * ind, 100 * a / ind), norm += a / ind, nn++;
        else
            printf(" | |\n");
    }
    printf("| Avg | | %.2f | | |\n", 100 * sum / (double)l->n);
    if (nn) printf("| Norm | | | | %.2f |\n", 100 * norm / (double)nn);
}

static cJSON *tasks_json(const eval_opts *o, const task_list *l, const class_result *r) {
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "tasks");
    json_header(j, o);
    double sum = 0, norm = 0;
    size_t nn = 0;
    for (size_t i = 0; i < l->n; i++) {
        cJSON *t = result_json(&r[i]);
        cJSON_AddStringToObject(t, "name", l->t[i].name);
        cJSON_AddStringToObject(t, "data", l->t[i].data);
        if (l->t[i].head) cJSON_AddStringToObject(t, "head", l->t[i].head);
        sum += accuracy(&r[i]);
        if (l->t[i].individual > 0) {
            cJSON_AddNumberToObject(t, "individual", l->t[i].individual);
            cJSON_AddNumberToObject(t, "normalized", accuracy(&r[i]) / l->t[i].individual);
            norm += accuracy(&r[i]) / l->t[i].individual, nn++;
        }
        cJSON_AddItemToArray(arr, t);
    }
    cJSON_AddNumberToObject(j, "avg", sum / (double)l->n);
    if (nn) cJSON_AddNumberToObject(j, "norm", norm / (double)nn);
    return j;
}

/* Every task with its own head on the model (read again for each task, so that a task
 * without a head gets the folder's own). */
static int run_tasks(const eval_opts *o, bpe_tokenizer *tok, acem_error *err) {
    task_list l;
    class_result *r = NULL;
    acem_outputs *outs = NULL;
    double start = seconds_now();
    int rc = tasks_read(o->tasks, &l, err);
    if (!rc && !(r = calloc(l.n, sizeof *r))) rc = fail(err, "out of memory");
    const char **inputs = rc ? NULL : calloc(2 * l.n + 2, sizeof *inputs);
    if (!rc && !inputs) rc = fail(err, "out of memory");
    if (!rc) {
        inputs[0] = o->model, inputs[1] = o->tasks;
        for (size_t i = 0; i < l.n; i++)
            inputs[2 + 2 * i] = l.t[i].data, inputs[3 + 2 * i] = l.t[i].head;
        rc = claim_json(o, inputs, 2 * l.n + 2, &outs, err);
    }
    for (size_t i = 0; i < l.n && !rc; i++) {
        gpt2_model *m;
        if ((rc = load_model(o->model, l.t[i].head, &m, err))) break;
        rc = classify_task(m, tok, &l.t[i], o->batch, o->quiet, &r[i], err);
        gpt2_free(m);
        if (rc) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            fail(err, "task \"%s\": %s", l.t[i].name, why);
        }
    }
    if (!rc) {
        size_t n = 0;
        for (size_t i = 0; i < l.n; i++)
            n += r[i].n;
        print_table(&l, r);
        print_summary(start, n, "examples");
    }
    if (!rc && outs) rc = write_json(outs, o->json, tasks_json(o, &l, r), err);
    for (size_t i = 0; r && i < l.n; i++)
        result_free(&r[i]);
    free(r);
    free(inputs);
    acem_outputs_free(outs);
    tasks_free(&l);
    return rc;
}

static int run_perplexity(const eval_opts *o, bpe_tokenizer *tok, acem_error *err) {
    const char *inputs[] = {o->model, o->perplexity};
    acem_outputs *outs;
    gpt2_model *m = NULL;
    ppl_result r;
    double start = seconds_now();
    int rc = claim_json(o, inputs, 2, &outs, err) || load_model(o->model, NULL, &m, err) ||
             perplexity_file(m, tok, o, &r, err);
    if (!rc) {
        double ppl = exp(r.nll / (double)r.tokens), bpb = r.nll / log(2.0) / (double)r.bytes;
        char name[1024];
        snprintf(name, sizeof name, "%s", o->perplexity);
        printf("acem eval: %s: %zu tokens scored, perplexity %.4f, %.4f bits per byte (%zu "
               "bytes)\n",
               cli_printable(name), r.tokens, ppl, bpb, r.bytes);
        print_summary(start, r.tokens, "tokens scored");
        if (outs) {
            cJSON *j = cJSON_CreateObject();
            json_header(j, o);
            cJSON_AddStringToObject(j, "text", o->perplexity);
            cJSON_AddNumberToObject(j, "tokens", (double)r.tokens);
            cJSON_AddNumberToObject(j, "bytes", (double)r.bytes);
            cJSON_AddNumberToObject(j, "nll", r.nll);
            cJSON_AddNumberToObject(j, "perplexity", ppl);
            cJSON_AddNumberToObject(j, "bits_per_byte", bpb);
            rc = write_json(outs, o->json, j, err);
        }
    }
    gpt2_free(m);
    acem_outputs_free(outs);
    return rc;
}

/* Which mode the options ask for; a usage error when they mix or miss what it needs. */
static int check_mode(const eval_opts *o) {
    int modes = !!o->data + !!o->tasks + !!o->perplexity;
    const char *why = !o->model    ? "--model DIR is required"
                      : modes != 1 ? "give one of --data, --tasks and --perplexity"
                      : o->data && (!o->text || !o->label)
                          ? "--data needs --text COL and --label COL"
                      : !o->data && (o->text || o->pair || o->label || o->head || o->max_length)
                          ? "--text, --text-pair, --label, --head and --max-length go with --data"
                      : !o->perplexity && o->stride ? "--stride goes with --perplexity"
                                                    : NULL;
    if (why) cli_error("%s (see acem eval --help)", why);
    return why ? -1 : 0;
}

static int number_opt(const char *name, const char *v, long lo, long hi, long *out) {
    if (!parse_long(v, lo, hi, out)) return 0;
    cli_error("%s must be an integer in %ld..%ld, not \"%s\"", name, lo, hi, v);
    return -1;
}

static int parse_opts(int argc, char **argv, eval_opts *o) {
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"data", required_argument, 0, 'd'},
                                             {"text", required_argument, 0, 't'},
                                             {"text-pair", required_argument, 0, 'p'},
                                             {"label", required_argument, 0, 'l'},
                                             {"head", required_argument, 0, 'H'},
                                             {"max-length", required_argument, 0, 'L'},
                                             {"batch", required_argument, 0, 'B'},
                                             {"json", required_argument, 0, 'j'},
                                             {"tasks", required_argument, 0, 'T'},
                                             {"perplexity", required_argument, 0, 'P'},
                                             {"stride", required_argument, 0, 'S'},
                                             {"force", no_argument, 0, 'f'},
                                             {"quiet", no_argument, 0, 'q'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->batch = DEFAULT_BATCH;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":m:d:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'd': o->data = optarg; break;
        case 't': o->text = optarg; break;
        case 'p': o->pair = optarg; break;
        case 'l': o->label = optarg; break;
        case 'H': o->head = optarg; break;
        case 'j': o->json = optarg; break;
        case 'T': o->tasks = optarg; break;
        case 'P': o->perplexity = optarg; break;
        case 'f': o->force = true; break;
        case 'q': o->quiet = true; break;
        case 'L':
            if (number_opt("--max-length", optarg, 1, 1 << 20, &o->max_length)) return -1;
            break;
        case 'B':
            if (number_opt("--batch", optarg, 1, 4096, &o->batch)) return -1;
            break;
        case 'S':
            if (number_opt("--stride", optarg, 1, 1 << 20, &o->stride)) return -1;
            break;
        case 'h': fputs(help, stdout); return 1;
        case ':': cli_error("option %s needs a value", argv[optind - 1]); return -1;
        default: cli_error("unknown option %s (see acem eval --help)", argv[optind - 1]); return -1;
        }
    }
    if (optind != argc) {
        cli_error("unexpected argument \"%s\" (see acem eval --help)", argv[optind]);
        return -1;
    }
    return check_mode(o);
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2) { /* a bare `acem eval` asks how it is used */
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    eval_opts o;
    int p = parse_opts(argc, argv, &o);
    if (p) return p > 0 ? EXIT_OK : EXIT_USAGE;
    acem_error err = {{0}};
    bpe_tokenizer *tok;
    if (bpe_load(o.model, &tok, &err)) {
        cli_error("%s", err.msg);
        return EXIT_FAIL;
    }
    int rc = o.tasks  ? run_tasks(&o, tok, &err)
             : o.data ? run_single(&o, tok, &err)
                      : run_perplexity(&o, tok, &err);
    bpe_free(tok);
    if (rc) cli_error("%s", err.msg);
    return rc ? EXIT_FAIL : EXIT_OK;
}
