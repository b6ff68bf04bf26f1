/* cmd_stats.c — `acem stats`: per 2-D tensor, the experts' delta norms, ACE's heterogeneity
 * gamma and branch, and each delta's effective rank; a table, JSON, CSV and an SVG plot of
 * gamma by layer depth (the ACE paper's heterogeneity figure). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 1024

typedef struct row {
    char *name;
    uint64_t rows, cols;
    double gamma;
    int hetero;
    double *norm, *erank;
} row;

typedef struct table {
    row *rows;
    size_t n, cap;
    int T;
} table;

static int collect(void *user, const acem_tensor_stats *s) {
    table *tb = user;
    if (tb->n == tb->cap) {
        size_t cap = tb->cap ? 2 * tb->cap : 64;
        row *grown = realloc(tb->rows, cap * sizeof *grown);
        if (!grown) return -1;
        tb->rows = grown;
        tb->cap = cap;
    }
    row *r = &tb->rows[tb->n];
    r->name = strdup(s->name);
    r->norm = malloc((size_t)s->T * sizeof(double));
    r->erank = malloc((size_t)s->T * sizeof(double));
    if (!r->name || !r->norm || !r->erank) return -1;
    memcpy(r->norm, s->norm, (size_t)s->T * sizeof(double));
    memcpy(r->erank, s->erank, (size_t)s->T * sizeof(double));
    r->rows = s->rows;
    r->cols = s->cols;
    r->gamma = s->gamma;
    r->hetero = s->hetero;
    tb->T = s->T;
    tb->n++;
    return 0;
}

static void print_table(const table *tb, double threshold) {
    size_t w = 6;
    for (size_t i = 0; i < tb->n; i++)
        if (strlen(tb->rows[i].name) > w) w = strlen(tb->rows[i].name);
    printf("%-*s  %-12s  %9s  %-6s", (int)w, "tensor", "shape", "gamma", "branch");
    char label[32];
    for (int t = 0; t < tb->T; t++) {
        snprintf(label, sizeof label, "||D%d||", t + 1);
        printf("  %9s", label);
    }
    for (int t = 0; t < tb->T; t++) {
        snprintf(label, sizeof label, "erank%d", t + 1);
        printf("  %7s", label);
    }
    printf("\n");
    size_t hetero = 0;
    for (size_t i = 0; i < tb->n; i++) {
        const row *r = &tb->rows[i];
        char shape[32];
        snprintf(shape, sizeof shape, "%llux%llu", (unsigned long long)r->rows,
                 (unsigned long long)r->cols);
        for (const char *c = r->name; *c; c++) /* the file's text: no control characters */
            putchar((unsigned char)*c < 0x20 || *c == 0x7f ? '?' : *c);
        printf("%*s  %-12s  %9.4g  %-6s", (int)(w - strlen(r->name)), "", shape, r->gamma,
               r->hetero ? "hetero" : "homo");
        for (int t = 0; t < tb->T; t++)
            printf("  %9.4g", r->norm[t]);
        for (int t = 0; t < tb->T; t++)
            printf("  %7.1f", r->erank[t]);
        printf("\n");
        hetero += (size_t)r->hetero;
    }
    printf("%zu tensors, %zu above the threshold %g (ACE's heterogeneous branch), %zu below\n",
           tb->n, hetero, threshold, tb->n - hetero);
}

static void render_json(FILE *f, const table *tb, double threshold) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "threshold", threshold);
    cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < tb->n; i++) {
        const row *r = &tb->rows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->name);
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)r->rows));
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)r->cols));
        cJSON_AddNumberToObject(o, "gamma", r->gamma);
        cJSON_AddStringToObject(o, "branch", r->hetero ? "hetero" : "homo");
        cJSON_AddItemToObject(o, "norm", cJSON_CreateDoubleArray(r->norm, tb->T));
        cJSON_AddItemToObject(o, "effective_rank", cJSON_CreateDoubleArray(r->erank, tb->T));
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text) fprintf(f, "%s\n", text);
    free(text);
}

static void render_csv(FILE *f, const table *tb, double threshold) {
    (void)threshold;
    fprintf(f, "tensor,rows,cols,gamma,branch");
    for (int t = 0; t < tb->T; t++)
        fprintf(f, ",norm_%d", t + 1);
    for (int t = 0; t < tb->T; t++)
        fprintf(f, ",erank_%d", t + 1);
    fprintf(f, "\n");
    for (size_t i = 0; i < tb->n; i++) {
        const row *r = &tb->rows[i];
        fputc('"', f); /* RFC 4180: a quote inside a quoted field is doubled */
        for (const char *c = r->name; *c; c++) {
            if (*c == '"') fputc('"', f);
            fputc(*c, f);
        }
        fprintf(f, "\",%llu,%llu,%.9g,%s", (unsigned long long)r->rows, (unsigned long long)r->cols,
                r->gamma, r->hetero ? "hetero" : "homo");
        for (int t = 0; t < tb->T; t++)
            fprintf(f, ",%.9g", r->norm[t]);
        for (int t = 0; t < tb->T; t++)
            fprintf(f, ",%.6g", r->erank[t]);
        fprintf(f, "\n");
    }
}

/* Layer depth: the first integer in the name ("transformer.h.11.mlp..." -> 11), else -1.
 * The kind: what follows that integer ("mlp.c_fc.weight"), or the whole name. */
static int depth_of(const char *name, const char **kind) {
    for (const char *p = name; *p; p++)
        if (isdigit((unsigned char)*p) && (p == name || p[-1] == '.')) {
            char *end;
            long v = strtol(p, &end, 10);
            if (*end == '.' || *end == 0) {
                *kind = *end ? end + 1 : name;
                return (int)v;
            }
        }
    *kind = name;
    return -1;
}

static void xml_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else if ((unsigned char)*s < 0x20 || *s == 0x7f) /* not allowed in XML 1.0 */
            fputc('?', f);
        else
            fputc(*s, f);
    }
}

/* gamma (log scale) against layer depth, one colour per tensor kind, the threshold drawn. */
static void render_svg(FILE *f, const table *tb, double threshold) {
    static const char *palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    const double W = 960, H = 540, left = 80, right = 250, top = 50, bottom = 60;
    int dmin = 0, dmax = 1;
    double gmin = threshold / 10, gmax = threshold * 10;
    const char *kinds[10];
    int n_kinds = 0;
    for (size_t i = 0; i < tb->n; i++) {
        const char *kind;
        int d = depth_of(tb->rows[i].name, &kind);
        if (d < dmin) dmin = d;
        if (d > dmax) dmax = d;
        double g = tb->rows[i].gamma > 1e-12 ? tb->rows[i].gamma : 1e-12;
        if (g < gmin) gmin = g;
        if (g > gmax) gmax = g;
    }
    double lmin = floor(log10(gmin)), lmax = ceil(log10(gmax));
    double pw = W - left - right, ph = H - top - bottom;
#define X(d) (left + pw * ((d)-dmin + 0.5) / (dmax - dmin + 1))
#define Y(g) (top + ph * (lmax - log10(g)) / (lmax - lmin))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"13\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f,
            "<text x=\"%.0f\" y=\"28\" font-size=\"17\" text-anchor=\"middle\">Task "
            "heterogeneity per tensor (ACE gamma) by layer depth, T = %d</text>\n",
            left + pw / 2, tb->T);
    for (double l = lmin; l <= lmax; l++) { /* decades */
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                left, left + pw, Y(pow(10, l)), Y(pow(10, l)));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%+.0f</text>\n", left - 8,
                Y(pow(10, l)) + 4, l);
    }
    int step = (dmax - dmin) > 24 ? (dmax - dmin) / 12 : 1;
    for (int d = dmin; d <= dmax; d += step) { /* depth -1 holds the tensors of no layer */
        char tick[16] = "no layer";
        if (d >= 0) snprintf(tick, sizeof tick, "%d", d);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", X(d),
                top + ph + 20, tick);
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#333\"/>\n",
            left, top, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">layer depth</text>\n",
            left + pw / 2, H - 15);
    fprintf(f,
            "<text transform=\"translate(22 %.1f) rotate(-90)\" text-anchor=\"middle\">gamma "
            "= var(ln ||Dt||^2) / mean(ln ||Dt||^2)^2</text>\n",
            top + ph / 2);
    fprintf(f,
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" "
            "stroke-width=\"2\" stroke-dasharray=\"8 5\"/>\n",
            left, left + pw, Y(threshold), Y(threshold));
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\">threshold %g: heterogeneous "
            "above</text>\n",
            left + 6, Y(threshold) - 6, threshold);
    for (size_t i = 0; i < tb->n; i++) {
        const char *kind;
        int d = depth_of(tb->rows[i].name, &kind), k = 0;
        while (k < n_kinds && strcmp(kinds[k], kind) != 0)
            k++;
        if (k == n_kinds && n_kinds < 10) kinds[n_kinds++] = kind;
        if (k == 10) k = 9; /* more kinds than colours share the last one */
        double g = tb->rows[i].gamma > 1e-12 ? tb->rows[i].gamma : 1e-12;
        /* kinds side by side within a layer */
        double dx = (k - 4.5) * pw / (dmax - dmin + 1) / 14;
        fprintf(f,
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\" fill-opacity=\"0.8\">"
                "<title>",
                X(d) + dx, Y(g), palette[k]);
        xml_escaped(f, tb->rows[i].name);
        fprintf(f, ": gamma %.4g</title></circle>\n", tb->rows[i].gamma);
    }
    for (int k = 0; k < n_kinds; k++) {
        double y = top + 10 + 22 * k;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>\n", W - right + 20, y,
                palette[k]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", W - right + 32, y + 4);
        xml_escaped(f, kinds[k]);
        fprintf(f, "%s</text>\n", k == 9 ? " and others" : "");
    }
    fprintf(f, "</svg>\n");
#undef X
#undef Y
}

typedef void (*render_fn)(FILE *f, const table *tb, double threshold);

/* Renders into memory, then writes through acem's output rules: the path was claimed
 * before the statistics were computed, and the file appears only when complete. */
static int write_output(acem_outputs *outs, const char *path, render_fn render, const table *tb,
                        double threshold) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    acem_error err = {{0}};
    if (!f) {
        cli_error("out of memory");
        return -1;
    }
    render(f, tb, threshold);
    int rc = fclose(f) != 0 ? -1 : acem_outputs_write(outs, path, text, len, &err);
    if (rc) cli_error("%s", err.msg[0] ? err.msg : "out of memory");
    free(text);
    return rc;
}

/* Pre-flight: each table's path obeys the output rules (never an input, never twice,
 * existing only with --force) before any tensor is read. */
static int claim_outputs(acem_outputs *outs, const acem_merge_options *o, const char *const *paths,
                         int n, int force) {
    acem_error err = {{0}};
    int rc = acem_outputs_add_input(outs, o->base, &err);
    for (int t = 0; !rc && t < o->n_models; t++)
        rc = acem_outputs_add_input(outs, o->models[t], &err);
    for (int i = 0; !rc && i < n; i++)
        if (paths[i]) rc = acem_outputs_claim(outs, paths[i], force, &err);
    if (rc) cli_error("%s", err.msg);
    return rc;
}

static void print_help(FILE *to) {
    fprintf(to,
            "usage: acem stats --base B --model M1 --model M2 [...] [options]\n"
            "\n"
            "For every 2-D tensor a merge would merge: each expert's ||Dt||_F, ACE's\n"
            "heterogeneity gamma and the branch it takes (gamma > threshold: heterogeneous,\n"
            "normalised covariances and spectral refinement), and each delta's effective rank\n"
            "(exp of the entropy of its normalised singular values). Models are read as\n"
            "acem merge reads them: .safetensors, GGUF or PyTorch .bin files, or directories.\n"
            "\n"
            "options:\n"
            "  -b, --base PATH        the base model\n"
            "  -m, --model PATH       an expert (repeat)\n"
            "      --threshold X      ACE's gamma threshold (default 0.3)\n"
            "      --json FILE        write the statistics as JSON\n"
            "      --csv FILE         write them as CSV\n"
            "      --svg FILE         plot gamma by layer depth with the threshold drawn\n"
            "  -x, --exclude REGEX    skip tensors whose name matches (repeatable)\n"
            "      --preset P         the ACE reference's exclusions (gpt2, bert, roberta, llama,\n"
            "                         clip-vit)\n"
            "  -t, --threads N        worker threads (default: all cores)\n"
            "  -q, --quiet            no table on the terminal\n"
            "  -f, --force            replace existing --json/--csv/--svg files (never an input)\n"
            "\n"
            "example:\n"
            "  acem stats -b gpt2 -m gpt2-cola -m gpt2-sst2 -m gpt2-mrpc --svg gamma.svg\n");
}

int cmd_stats(int argc, char **argv) {
    static const struct option longopts[] = {
        {"base", required_argument, 0, 'b'},
        {"model", required_argument, 0, 'm'},
        {"threshold", required_argument, 0, 'T'},
        {"json", required_argument, 0, 'J'},
        {"csv", required_argument, 0, 'C'},
        {"svg", required_argument, 0, 'S'},
        {"exclude", required_argument, 0, 'x'},
        {"preset", required_argument, 0, 'P'},
        {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},
        {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *models[MAX_MODELS], *excludes[MAX_MODELS];
    acem_merge_options o;
    acem_merge_options_init(&o);
    o.models = models;
    o.excludes = excludes;
    const char *json = NULL, *csv = NULL, *svg = NULL;
    double threshold = 0.3;
    int quiet = 0, force = 0, c;
    char *end;
    if (argc < 2) { /* a bare `acem stats` asks how it is used */
        print_help(stderr);
        return EXIT_USAGE;
    }
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":b:m:x:t:qfh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': o.base = optarg; break;
        case 'm':
        case 'x':
            if ((c == 'm' ? o.n_models : o.n_excludes) >= MAX_MODELS) {
                cli_error("too many options");
                return EXIT_USAGE;
            }
            if (c == 'm')
                models[o.n_models++] = optarg;
            else
                excludes[o.n_excludes++] = optarg;
            break;
        case 'T':
            threshold = strtod(optarg, &end);
            if (!*optarg || *end || !(threshold >= 0)) {
                cli_error("--threshold expects a non-negative number, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'J': json = optarg; break;
        case 'C': csv = optarg; break;
        case 'S': svg = optarg; break;
        case 'P': o.preset = optarg; break;
        case 't':
            o.threads = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || o.threads < 1 || o.threads > 4096) {
                cli_error("--threads expects an integer in [1, 4096], not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'q': quiet = 1; break;
        case 'f': force = 1; break;
        case 'h': print_help(stdout); return EXIT_OK;
        case ':': cli_error("option %s needs a value", argv[optind - 1]); return EXIT_USAGE;
        default:
            cli_error("unknown option %s (see acem stats --help)", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !o.base || o.n_models < 2) {
        cli_error("stats needs --base and at least 2 --model (see acem stats --help)");
        return EXIT_USAGE;
    }
    acem_error err = {{0}};
    if (acem_check_options(&o, &err)) {
        cli_error("%s", err.msg);
        return EXIT_USAGE;
    }
    acem_outputs *outs = NULL;
    const char *paths[] = {json, csv, svg};
    if (acem_outputs_new(&outs, &err) || claim_outputs(outs, &o, paths, 3, force)) {
        if (!outs) cli_error("%s", err.msg);
        acem_outputs_free(outs);
        return EXIT_FAIL;
    }
    progress_bar bar;
    progress_init(&bar, quiet);
    o.progress = progress_update;
    o.progress_user = &bar;
    o.warning = cli_warning;
    table tb = {0};
    int rc = acem_stats(&o, threshold, collect, &tb, &err) ? EXIT_FAIL : EXIT_OK;
    if (rc) cli_error("%s", err.msg[0] ? err.msg : "out of memory");
    if (!rc && !quiet) print_table(&tb, threshold);
    if (!rc && json && write_output(outs, json, render_json, &tb, threshold)) rc = EXIT_FAIL;
    if (!rc && csv && write_output(outs, csv, render_csv, &tb, threshold)) rc = EXIT_FAIL;
    if (!rc && svg && write_output(outs, svg, render_svg, &tb, threshold)) rc = EXIT_FAIL;
    acem_outputs_free(outs); /* the temporaries of tables not written are removed */
    for (size_t i = 0; i < tb.n; i++) {
        free(tb.rows[i].name);
        free(tb.rows[i].norm);
        free(tb.rows[i].erank);
    }
    free(tb.rows);
    return rc;
}
