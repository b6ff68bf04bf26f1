/* lab_report.c — results.md (the paper's table: rows methods and references, columns tasks,
 * Avg, Norm), results.csv, covariance.csv and results.svg (a bar chart of Avg). Every file
 * is written by acem's output rules (acem_outputs). Nothing time-dependent goes
 * into them, so the same seed gives the same bytes. */
#include "lab.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

typedef int (*writer_fn)(FILE *f, const lab_results *r, const lab_options *o);

/* Rendered into memory, then written by acem's output rules (temporary, rename). The lab's
 * --out directory is its own: every run regenerates these files, so they are replaced. */
static int write_file(acem_outputs *outs, const char *dir, const char *name, writer_fn fn,
                      const lab_results *r, const lab_options *o, acem_error *err) {
    char path[LAB_PATH];
    char *text = NULL;
    size_t len = 0;
    if (lab_path(path, sizeof path, dir, name, err) || acem_outputs_claim(outs, path, 1, err))
        return -1;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(err->msg, sizeof err->msg, "out of memory rendering %.900s", path);
        return -1;
    }
    int rc = fn(f, r, o);
    rc |= fclose(f); /* closed once, whatever fn did */
    if (rc) snprintf(err->msg, sizeof err->msg, "out of memory rendering %.900s", path);
    if (!rc) rc = acem_outputs_write(outs, path, text, len, err);
    free(text);
    return rc ? -1 : 0;
}

static void command_line(FILE *f, const lab_results *r, const lab_options *o) {
    fprintf(f, "acem lab --suite %s --seed %llu", r->suite->name, (unsigned long long)o->seed);
    if (!strcmp(r->suite->name, "synthetic")) fprintf(f, " --tasks %d", r->suite->T);
    fprintf(f, " --heads %s", lab_heads_name(o->heads));
    if (o->quick) fprintf(f, " --quick");
}

/* The MLP suites' description and tasks. */
static void mlp_intro(FILE *f, const lab_suite *s, const lab_options *o) {
    static const char *const regime[] = {
        [LAB_HEADS_TUNED] = "then backbone + head",
        [LAB_HEADS_FROZEN] = "then the backbone alone: the probed heads are frozen, and "
                             "shared by the base, the experts and the multitask model"};
    fprintf(f,
            "`\n\nMLP %d -> %d -> %d -> %d (GELU), one linear head per task; base pretrained "
            "by masked reconstruction of all tasks' inputs (%d steps); experts fine-tuned "
            "from it (linear probe, %s) with Adam. Heads: **%s**.\n\n",
            s->d, s->sizes.hidden, s->sizes.hidden, s->sizes.hidden, s->sizes.pretrain_steps,
            regime[o->heads], lab_heads_name(o->heads));
    fprintf(f, "## Tasks\n\n| task | inputs | train / val / test | fine-tuning steps | lr |\n"
               "|---|---|---|---|---|\n");
    for (int t = 0; t < s->T; t++) {
        const lab_task *k = &s->task[t];
        fprintf(f, "| %s | %s | %d / %d / %d | %d | %.2e |\n", k->name, k->about, k->train.n,
                k->val.n, k->test.n, k->steps, k->lr);
    }
}

static int write_markdown(FILE *f, const lab_results *r, const lab_options *o) {
    const lab_suite *s = r->suite;
    fprintf(f, "# acem lab: %s suite\n\n`", s->name);
    command_line(f, r, o);
    if (r->intro)
        fprintf(f, "`\n\n%s", r->intro);
    else
        mlp_intro(f, s, o);
    fprintf(f, "\n## Test accuracy (%%)\n\n| method |");
    for (int t = 0; t < s->T; t++)
        fprintf(f, " %s |", s->task[t].name);
    fprintf(f, " Avg | Norm | |\n|---|");
    for (int t = 0; t < s->T + 3; t++)
        fprintf(f, "---|");
    fprintf(f, "\n");
    for (int i = 0; i < r->rows; i++) {
        const lab_row *row = &r->row[i];
        fprintf(f, "| %s%s%s |", i < r->references ? "*" : "", row->name,
                i < r->references ? "*" : "");
        for (int t = 0; t < s->T; t++)
            fprintf(f, " %.1f |", 100.0 * row->acc[t]);
        fprintf(f, " %.1f | %.1f | %s |\n", 100.0 * row->avg, 100.0 * row->norm, row->about);
    }
    fprintf(
        f,
        "\nReferences in italics. Norm: mean over tasks of accuracy / individual accuracy. "
        "task_arithmetic_val: lambda %.2f (best mean validation accuracy of 0.05, 0.10, .. 1.0).\n",
        r->best_lambda);
    fprintf(f, "\n## Covariance match: does Dt^T Dt look like Xt^T Xt?\n\n"
               "Cosine similarity of the matrices, per layer, mean [min, max] over tasks: the "
               "expert's delta Gram against its own task's input second moment (inputs of the "
               "layer in that expert on its training data), against the other tasks' (mean), "
               "and a Gaussian R of the delta's shape against its own task's (the floor).\n\n"
               "| layer | shape | ACE gamma | ACE branch | own task | other tasks | random R |\n"
               "|---|---|---|---|---|---|---|\n");
    const lab_cov_match *c = &r->cov;
    for (int l = 0; l < c->layers; l++) {
        const double *cols[3] = {c->own[l], c->other[l], c->random[l]};
        fprintf(f, "| %s | %d x %d | %.3f | %s |", c->name[l], c->out[l], c->in[l], c->gamma[l],
                c->hetero[l] ? "heterogeneous" : "homogeneous");
        for (int k = 0; k < 3; k++) {
            double lo = 1.0, hi = -1.0, mean = 0.0;
            for (int t = 0; t < s->T; t++) {
                lo = cols[k][t] < lo ? cols[k][t] : lo;
                hi = cols[k][t] > hi ? cols[k][t] : hi;
                mean += cols[k][t] / s->T;
            }
            fprintf(f, " %.3f [%.3f, %.3f] |", mean, lo, hi);
        }
        fprintf(f, "\n");
    }
    return 0;
}

/* The regime is a column, so that the tables of both regimes concatenate into one. */
static int write_csv(FILE *f, const lab_results *r, const lab_options *o) {
    fprintf(f, "method,heads");
    for (int t = 0; t < r->suite->T; t++)
        fprintf(f, ",%s", r->suite->task[t].name);
    fprintf(f, ",avg,norm\n");
    for (int i = 0; i < r->rows; i++) {
        fprintf(f, "%s,%s", r->row[i].name, lab_heads_name(o->heads));
        for (int t = 0; t < r->suite->T; t++)
            fprintf(f, ",%.2f", 100.0 * r->row[i].acc[t]);
        fprintf(f, ",%.2f,%.2f\n", 100.0 * r->row[i].avg, 100.0 * r->row[i].norm);
    }
    return 0;
}

static int write_covariance_csv(FILE *f, const lab_results *r, const lab_options *o) {
    fprintf(f, "layer,task,heads,gamma,hetero,cos_own,cos_other,cos_random\n");
    for (int l = 0; l < r->cov.layers; l++)
        for (int t = 0; t < r->suite->T; t++)
            fprintf(f, "%s,%s,%s,%.4f,%d,%.4f,%.4f,%.4f\n", r->cov.name[l], r->suite->task[t].name,
                    lab_heads_name(o->heads), r->cov.gamma[l], r->cov.hetero[l], r->cov.own[l][t],
                    r->cov.other[l][t], r->cov.random[l][t]);
    return 0;
}

/* Horizontal bars of Avg per row; references grey, methods blue, a dashed line at the
 * individual experts' Avg. */
static int write_svg(FILE *f, const lab_results *r, const lab_options *o) {
    enum { LEFT = 190, BAR = 20, GAP = 6, TOP = 40, WIDTH = 500 };
    int height = TOP + r->rows * (BAR + GAP) + 30;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"10\" y=\"22\" font-size=\"15\">acem lab, %s suite%s, heads %s: "
            "average test accuracy (%%)</text>\n",
            LEFT + WIDTH + 60, height, r->suite->name, o->quick ? " (quick)" : "",
            lab_heads_name(o->heads));
    for (int i = 0; i < r->rows; i++) {
        int y = TOP + i * (BAR + GAP);
        double w = WIDTH * r->row[i].avg;
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n"
                "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n"
                "<text x=\"%.1f\" y=\"%d\">%.1f</text>\n",
                LEFT - 8, y + BAR - 6, r->row[i].name, LEFT, y, w, BAR,
                i < r->references ? "#9e9e9e" : "#3b6fb6", LEFT + w + 4, y + BAR - 6,
                100.0 * r->row[i].avg);
    }
    double x = LEFT + WIDTH * r->row[1].avg;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"black\" "
            "stroke-dasharray=\"4 3\"/>\n<text x=\"%.1f\" y=\"%d\">individual</text>\n</svg>\n",
            x, TOP - 6, x, height - 24, x - 24, height - 10);
    return 0;
}

int lab_write_reports(const char *dir, const lab_results *r, const lab_options *o,
                      acem_error *err) {
    acem_outputs *outs = NULL;
    int rc = acem_outputs_new(&outs, err) ||
                     write_file(outs, dir, "results.md", write_markdown, r, o, err) ||
                     write_file(outs, dir, "results.csv", write_csv, r, o, err) ||
                     write_file(outs, dir, "covariance.csv", write_covariance_csv, r, o, err) ||
                     write_file(outs, dir, "results.svg", write_svg, r, o, err)
                 ? -1
                 : 0;
    acem_outputs_free(outs);
    return rc;
}
