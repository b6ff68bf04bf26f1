/* lab.c — `acem lab`: build a suite, train base, experts and a multitask model, merge the
 * experts by every method, evaluate, write the tables. */
#include "lab.h"
#include "lab_text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void lab_options_init(lab_options *o) {
    *o = (lab_options){.suite = "synthetic", .out = "acem-lab", .tasks = 8};
}

static const char *const heads_names[] = {
    [LAB_HEADS_TUNED] = "tuned", [LAB_HEADS_FROZEN] = "frozen"};

const char *lab_heads_name(lab_heads h) { return heads_names[h]; }

int lab_heads_parse(const char *name, lab_heads *h) {
    for (int i = 0; i < (int)(sizeof heads_names / sizeof *heads_names); i++)
        if (!strcmp(name, heads_names[i])) {
            *h = (lab_heads)i;
            return 0;
        }
    return -1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void lab_log(const lab_suite *s, const char *fmt, ...) {
    static double start;
    if (start == 0.0) start = now();
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lab: [%s %6.1f s] ", s->name, now() - start);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int lab_make_dir(const char *dir, const char *sub, acem_error *err) {
    char path[LAB_PATH];
    if (lab_path(path, sizeof path, dir, sub, err)) return -1;
    if (mkdir(sub[0] ? path : dir, 0755) == 0 || errno == EEXIST) return 0;
    snprintf(err->msg, sizeof err->msg, "%.900s: cannot create: %s", sub[0] ? path : dir,
             strerror(errno));
    return -1;
}

static int train_models(const lab_options *o, const lab_suite *s, lab_models *m, acem_error *err) {
    int h = s->sizes.hidden, widths[LAB_DEPTH + 1] = {s->d, h, h, h};
    lab_rng init = lab_rng_for(o->seed, "base-init", 0);
    lab_log(s, "heads %s; pretraining the base: %d steps of masked reconstruction",
            lab_heads_name(o->heads), s->sizes.pretrain_steps);
    if (lab_net_init(&m->base, widths, LAB_DEPTH, true, &init, err) ||
        lab_pretrain(&m->base, s, o->seed, err) ||
        lab_save_nets(m->paths.base, &m->base, NULL, 0, err))
        return -1;
    for (int t = 0; t < s->T; t++) {
        lab_log(s, "fine-tuning expert %s: %d steps, lr %.2e", s->task[t].name, s->task[t].steps,
                s->task[t].lr);
        if (lab_net_clone(&m->expert[t], &m->base, err) ||
            lab_finetune(&m->expert[t], &m->head[t], s, t, o->seed, o->heads, err) ||
            lab_save_nets(m->paths.expert[t], &m->expert[t], NULL, 0, err))
            return -1;
    }
    lab_log(s, "training the multitask reference: %d steps over all tasks",
            s->sizes.multitask_steps);
    return lab_save_nets(m->paths.heads, NULL, m->head, s->T, err) ||
                   lab_net_clone(&m->multitask, &m->base, err) ||
                   lab_multitask(&m->multitask, m->multitask_head, s, o->seed, o->heads, err) ||
                   lab_save_nets(m->paths.multitask, &m->multitask, m->multitask_head, s->T, err)
               ? -1
               : 0;
}

/* Zero-shot, individual and multitask rows. */
static int reference_rows(const lab_options *o, const lab_suite *s, const lab_models *m,
                          lab_results *r, acem_error *err) {
    lab_row *zero = &r->row[0], *individual = &r->row[1], *multitask = &r->row[2];
    snprintf(zero->name, sizeof zero->name, "zero-shot");
    snprintf(individual->name, sizeof individual->name, "individual");
    snprintf(multitask->name, sizeof multitask->name, "multitask");
    snprintf(zero->about, sizeof zero->about, "the base backbone with each task's own head");
    snprintf(individual->about, sizeof individual->about, "each expert on its own task");
    snprintf(multitask->about, sizeof multitask->about, "%s",
             o->heads == LAB_HEADS_FROZEN
                 ? "one backbone trained on all tasks jointly, the same frozen heads"
                 : "one backbone trained on all tasks jointly, its own heads");
    if (lab_evaluate(&m->base, m->head, s, zero, err) ||
        lab_evaluate(&m->multitask, m->multitask_head, s, multitask, err))
        return -1;
    individual->avg = 0.0;
    for (int t = 0; t < s->T; t++) {
        if (lab_accuracy(&m->expert[t], &m->head[t], &s->task[t].test, &individual->acc[t], err))
            return -1;
        individual->avg += individual->acc[t] / s->T;
    }
    r->rows = 3;
    r->references = 4; /* and regmean with the true Grams, added with the merges */
    return 0;
}

void lab_normalise(lab_results *r) {
    const lab_row *individual = &r->row[1];
    for (int i = 0; i < r->rows; i++) {
        r->row[i].norm = 0.0;
        for (int t = 0; t < r->suite->T; t++)
            if (individual->acc[t] > 0.0)
                r->row[i].norm += r->row[i].acc[t] / individual->acc[t] / r->suite->T;
    }
}

static void free_models(lab_models *m) {
    lab_net_free(&m->base);
    lab_net_free(&m->multitask);
    for (int t = 0; t < LAB_MAX_TASKS; t++) {
        lab_net_free(&m->expert[t]);
        lab_net_free(&m->head[t]);
        lab_net_free(&m->multitask_head[t]);
    }
    free(m);
}

int lab_run(const lab_options *o, acem_error *err) {
    if (!strcmp(o->suite, "text")) return lab_text_run(o, err);
    lab_suite *s = calloc(1, sizeof *s);
    lab_models *m = calloc(1, sizeof *m);
    lab_results *r = calloc(1, sizeof *r);
    int rc = s && m && r ? 0 : -1;
    if (rc)
        snprintf(err->msg, sizeof err->msg, "lab: out of memory");
    else if (!strcmp(o->suite, "synthetic"))
        rc = lab_synthetic_suite(s, o->tasks, o->quick, o->seed, err);
    else if (!strcmp(o->suite, "digits"))
        rc = lab_digits_suite(s, o->data, o->quick, o->seed, err);
    else {
        snprintf(err->msg, sizeof err->msg, "lab: unknown suite \"%s\" (synthetic, digits, text)",
                 o->suite);
        rc = -1;
    }
    if (!rc) {
        r->suite = s;
        /* Its files are regenerated in place by every run: the directory must be the lab's. */
        rc = acem_workdir_claim(o->out, "acem lab", err) || lab_make_dir(o->out, "experts", err) ||
             lab_make_dir(o->out, "grams", err) || lab_make_dir(o->out, "merged", err) ||
             lab_paths_init(&m->paths, o->out, s, err) || train_models(o, s, m, err) ||
             reference_rows(o, s, m, r, err);
    }
    if (!rc) {
        lab_log(s, "covariance match: X^T X of every layer's inputs on the training data");
        rc = lab_covariance_match(o, s, m, r, err) || lab_evaluate_merges(o, s, m, r, err);
    }
    if (!rc) {
        lab_normalise(r);
        rc = lab_write_reports(o->out, r, o, err);
        if (!rc)
            lab_log(s, "heads %s: wrote %s/results.md, results.csv, covariance.csv, results.svg",
                    lab_heads_name(o->heads), o->out);
    }
    if (s) lab_suite_free(s);
    if (m) free_models(m);
    free(s);
    free(r);
    return rc ? -1 : 0;
}
