/* cmd_lab.c — `acem lab`: the merging benchmark of lab/ (train, merge, evaluate, tables). */
#include "cli.h"
#include "lab.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *help =
    "usage: acem lab [--suite synthetic|digits|text|all] [--out DIR] [options]\n"
    "\n"
    "A merging benchmark that needs no downloads: a base MLP (d -> h -> h -> h, GELU) is\n"
    "pretrained on the inputs of every task, one expert per task is fine-tuned from it\n"
    "(fine-tuning strengths lr x steps spanning 30x), the experts are merged by every\n"
    "method of acem at its defaults (plus task arithmetic with lambda chosen on a\n"
    "validation split), and each merged backbone is evaluated with each task's own head.\n"
    "References: the base (zero-shot), each expert alone (individual), a model trained\n"
    "on all tasks (multitask), and regmean with the true Gram matrices (uses data).\n"
    "\n"
    "suites:\n"
    "  synthetic  T tasks over R^32: Gaussian mixtures in partly shared subspaces at\n"
    "             different scales, labels from per-task teacher networks (default)\n"
    "  digits     the 1,797 8x8 digits of Debian's python3-sklearn, as 8 tasks by fixed\n"
    "             transforms (identity, rotate, mirror, invert, permute, shift, noise, blur)\n"
    "  text       a tiny GPT-2 pretrained as a language model on text Debian ships, 7\n"
    "             experts fine-tuned in full with a fresh score head each on 7 text tasks\n"
    "             with real labels (fortune categories, WordNet senses and parts of\n"
    "             speech, the language of a word or a source line, man page sections),\n"
    "             merged with --preset gpt2 into Hugging Face folders (5-10 minutes\n"
    "             on 2 cores with --threads 1)\n"
    "  all        synthetic and digits, into DIR/synthetic and DIR/digits (not text)\n"
    "\n"
    "options:\n"
    "  --out DIR        checkpoints (base, experts/, heads, merged/, grams/) and results.md,\n"
    "                   results.csv, covariance.csv, results.svg (default acem-lab);\n"
    "                   a new or empty directory, or one an earlier acem lab made\n"
    "  --tasks N        synthetic tasks, 2..20 (default 8)\n"
    "  --seed N         everything is deterministic from it (default 0)\n"
    "  --quick          smaller models, fewer steps (CI: under 2 minutes)\n"
    "  --heads tuned|frozen\n"
    "                   after each task's linear probe, tuned (default) fine-tunes backbone\n"
    "                   and head; frozen fixes the probed heads and fine-tunes the backbone\n"
    "                   alone (as CLIP's zero-shot heads), so the task gains live in the\n"
    "                   merged deltas; the multitask model likewise\n"
    "  --data PATH      digits.csv.gz (default: " LAB_DIGITS_DEFAULT ")\n"
    "  --threads N      threads for the merges, and for text the model's (default: all cores)\n"
    "\n"
    "examples:\n"
    "  acem lab --quick --out /tmp/lab\n"
    "  acem lab --suite all --out lab-results\n"
    "  acem lab --suite all --heads frozen --out lab-frozen\n"
    "  acem lab --suite text --out lab-text\n"
    "  acem merge --method ace -o m.safetensors --base lab-results/synthetic/base.safetensors \\\n"
    "      --model lab-results/synthetic/experts/T1.safetensors --model ...\n";

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    *v = strtol(s, &end, 10);
    return *s && !*end && *v >= lo && *v <= hi ? 0 : -1;
}

static int run_suite(lab_options *o, const char *suite, const char *out) {
    acem_error err = {{0}};
    o->suite = suite;
    o->out = out;
    if (lab_run(o, &err)) {
        cli_error("%s", err.msg);
        return EXIT_FAIL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/results.md", out);
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_error("%s: cannot read back", path);
        return EXIT_FAIL;
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
    fclose(f);
    return EXIT_OK;
}

int cmd_lab(int argc, char **argv) {
    static const struct option longopts[] = {
        {"suite", required_argument, 0, 's'}, {"out", required_argument, 0, 'o'},
        {"tasks", required_argument, 0, 'T'}, {"seed", required_argument, 0, 'S'},
        {"quick", no_argument, 0, 'q'},       {"heads", required_argument, 0, 'H'},
        {"data", required_argument, 0, 'd'},  {"threads", required_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    lab_options o;
    lab_options_init(&o);
    const char *suite = "synthetic";
    long v;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 's': suite = optarg; break;
        case 'o': o.out = optarg; break;
        case 'q': o.quick = true; break;
        case 'd': o.data = optarg; break;
        case 'H':
            if (lab_heads_parse(optarg, &o.heads)) {
                cli_error("--heads must be tuned or frozen, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'T':
            if (parse_int(optarg, 2, LAB_MAX_TASKS, &v)) {
                cli_error("--tasks must be an integer in 2..%d, not \"%s\"", LAB_MAX_TASKS, optarg);
                return EXIT_USAGE;
            }
            o.tasks = (int)v;
            break;
        case 'S':
            if (parse_int(optarg, 0, 0x7fffffffL, &v)) {
                cli_error("--seed must be a non-negative integer, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            o.seed = (uint64_t)v;
            break;
        case 'j':
            if (parse_int(optarg, 0, 1024, &v)) {
                cli_error("--threads must be an integer in 0..1024, not \"%s\"", optarg);
                return EXIT_USAGE;
            }
            o.threads = (int)v;
            break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        case ':': cli_error("option %s needs a value", argv[optind - 1]); return EXIT_USAGE;
        default:
            cli_error("unknown option %s (see acem lab --help)", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        cli_error("unexpected argument \"%s\" (see acem lab --help)", argv[optind]);
        return EXIT_USAGE;
    }
    if (strcmp(suite, "all")) {
        if (strcmp(suite, "synthetic") && strcmp(suite, "digits") && strcmp(suite, "text")) {
            cli_error("unknown suite \"%s\" (synthetic, digits, text, all)", suite);
            return EXIT_USAGE;
        }
        return run_suite(&o, suite, o.out);
    }
    /* all: both suites under DIR */
    if (mkdir(o.out, 0755) != 0 && errno != EEXIST) {
        cli_error("%s: cannot create: %s", o.out, strerror(errno));
        return EXIT_FAIL;
    }
    static const char *const suites[2] = {"synthetic", "digits"};
    const char *root = o.out;
    int rc = EXIT_OK;
    for (int i = 0; i < 2 && rc == EXIT_OK; i++) {
        char out[4096];
        if ((size_t)snprintf(out, sizeof out, "%s/%s", root, suites[i]) >= sizeof out) {
            cli_error("--out is too long");
            return EXIT_USAGE;
        }
        rc = run_suite(&o, suites[i], out);
    }
    return rc;
}
