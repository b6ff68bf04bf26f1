/* cmd_merge.c — `acem merge`: flags (or a YAML config) into acem_merge_options. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST 1024

static void print_help(FILE *to) {
    fprintf(
        to,
        "usage: acem merge --base B --model M1 --model M2 [...] --method NAME -o OUT [options]\n"
        "       acem merge CONFIG.yaml [-o OUT] [options]\n"
        "       acem merge STAGES.yaml -o OUT [--intermediate-dir DIR] [options]\n"
        "\n"
        "Merges T experts fine-tuned from one base (T >= 1 for linear and the task-vector\n"
        "methods, T >= 2 for the others): for every tensor, Dt = Wt - W0, the\n"
        "method combines the Dt into Delta, and OUT gets W0 + lambda * Delta. Models are\n"
        ".safetensors, GGUF or PyTorch .bin files or Hugging Face directories (model.safetensors\n"
        "or pytorch_model.bin, or shards with their .index.json). Relative paths in CONFIG.yaml\n"
        "are taken from its directory. OUT ending in .safetensors or .gguf is one file\n"
        "(GGUF: the base's key-values and, by default, each tensor's type, quantised blocks\n"
        "included); anything else is a directory that also receives the base directory's\n"
        "config and tokenizer files.\n"
        "Inputs may mix float and block types (F32 base, F16 or BF16 experts, Q8_0 GGUF...):\n"
        "each is read in its own type; names and shapes must agree. Tensors an expert has and\n"
        "the base lacks are left out with a warning; F8 tensors are refused unless excluded.\n"
        "The output appears only when complete; an existing one is kept unless --force.\n"
        "A config of several YAML documents (mergekit-multi) runs them in turn: every one but\n"
        "the last has a `name:` and is written to DIR/NAME (--intermediate-dir, default\n"
        "OUT.stages), where later documents find it by that name (or, as mergekit-mega, an\n"
        "out_path: later documents name that path); the last one goes to OUT.\n"
        "\n"
        "required:\n"
        "  -b, --base PATH            the base model W0\n"
        "  -m, --model PATH           an expert (repeat, at least twice)\n"
        "  -M, --method NAME          merge method (below)\n"
        "  -o, --output OUT           output file or directory\n"
        "\n"
        "options:\n"
        "  -l, --lambda X             scale of the merged delta (default: the method's)\n"
        "  -p, --param KEY=VALUE      method parameter (repeatable), e.g. density=0.3;\n"
        "                             lambda=X is --lambda X\n"
        "      --seed N               seed of random methods (DARE), default 0\n"
        "  -x, --exclude REGEX        keep tensors whose name matches from the base\n"
        "                             (POSIX extended regex, repeatable)\n"
        "      --preset P             the ACE reference's exclusions: gpt2, bert, roberta,\n"
        "                             llama, clip-vit\n"
        "      --dtype D              output dtype of float tensors: f32, f16, bf16, f64\n"
        "                             (default: as the base); with a .gguf output also\n"
        "                             q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k or\n"
        "                             q8_k (tensors of 2+ axes whose rows split into the\n"
        "                             type's 32- or 256-value blocks); a .gguf output keeps\n"
        "                             1-D tensors and norms F32\n"
        "                             under f16, bf16 and block types, as llama.cpp does;\n"
        "                             llama-quantize's mixes Q4_K_M, Q4_K_S, Q5_K_M, Q5_K_S,\n"
        "                             Q6_K, Q8_0, Q4_0, Q2_K, Q3_K_S, Q3_K_M (Q3_K), Q3_K_L\n"
        "                             on a GGUF base with llama.cpp's architecture keys:\n"
        "                             each tensor's type as llama-quantize picks it\n"
        "                             (docs/formats.md)\n"
        "      --precision P          compute precision f32 (default, as the ACE reference) or "
        "f64\n"
        "      --covariance-axis A    stored (default, as the ACE reference): covariances over "
        "the\n"
        "                             stored column axis; input: transpose GPT-2 Conv1D weights\n"
        "                             (stored in x out) so covariances run over the input axis\n"
        "                             (with --preset gpt2 or a base config.json of gpt2)\n"
        "      --max-shard-size S     split a directory output into shards of at most S\n"
        "                             bytes: 5GB is 5*10^9, 5GiB and 5G are 5*2^30 (K, M, T\n"
        "                             alike, as Hugging Face reads them)\n"
        "  -t, --threads N            worker threads (default: all cores)\n"
        "      --report FILE.json     write a per-tensor report (ace: gamma, branch, k, ...)\n"
        "      --gram MODEL=GRAMS     regmean: Gram matrices X^T X of MODEL's layer inputs, a\n"
        "                             safetensors file with n x n tensors named like the\n"
        "                             weights (repeat for every expert)\n"
        "      --allow-nonfinite      merge tensors holding NaN or Inf, and write merged values\n"
        "                             that are not finite in the output type (refused by default)\n"
        "      --strict               make every warning an error: tensors an expert has and\n"
        "                             the base lacks (else named and left out), an --exclude\n"
        "                             matching nothing, an expert given twice, an option that\n"
        "                             changes nothing, regmean tensors without Gram matrices\n"
        "      --dry-run              print the plan (every tensor: merged by which rule or\n"
        "                             copied and why, its stored type and file; every file;\n"
        "                             the memory bound) and exit without reading tensor data\n"
        "  -f, --force                replace an existing output acem wrote (only once the new\n"
        "                             one is done; a directory only when empty or holding\n"
        "                             nothing but the files acem listed in it)\n"
        "  -q, --quiet                no progress bar, no summary\n"
        "  -h, --help                 this help\n"
        "\n"
        "methods (integer and bool tensors are always copied from the base; the elementwise\n"
        "methods act on every other tensor; the covariance and spectral methods act on 2-D\n"
        "tensors and give every other one the mean of its deltas):\n");
    for (size_t i = 0; i < acem_method_count(); i++) {
        /* word-wrapped to 90 columns, continuation lines under the description */
        const char *d = acem_method_describe(i);
        fprintf(to, "  %-18s ", acem_method_name(i));
        int col = 21;
        for (bool first = true; *d; first = false) {
            int w = (int)strcspn(d, " ");
            if (!first && col + 1 + w > 90) {
                fprintf(to, "\n%21s", "");
                col = 21;
            } else if (!first) {
                fputc(' ', to);
                col++;
            }
            fprintf(to, "%.*s", w, d);
            col += w;
            d += w;
            while (*d == ' ')
                d++;
        }
        fputc('\n', to);
    }
    fprintf(
        to,
        "\n"
        "examples:\n"
        "  acem merge -b gpt2 -m gpt2-cola -m gpt2-sst2 -M ties -p density=0.2 -o merged\n"
        "  acem merge -b base.safetensors -m a.safetensors -m b.safetensors \\\n"
        "             -M task_arithmetic -l 0.5 --dtype bf16 -o merged.safetensors\n"
        "  acem merge -b gpt2 -m cola -m sst2 -m mrpc -M ace --preset gpt2 --report r.json -o out\n"
        "  acem merge merge.yaml -o merged      (schema: docs/config.md)\n"
        "\n"
        "Method semantics and parameters: docs/methods.md.\n");
}

/* Collected flags; applied over a YAML config when one is given. */
typedef struct flags {
    const char *base, *method, *out, *preset, *report, *config, *stage_dir;
    const char *models[MAX_LIST], *excludes[MAX_LIST];
    acem_param params[MAX_LIST], grams[MAX_LIST]; /* grams: model path -> Gram file */
    int n_models, n_excludes, n_params, n_grams;
    double lambda;
    long long seed, threads;
    uint64_t max_shard;
    acem_out_type out_type; /* --dtype; ACEM_OUT_INVALID: not given */
    acem_dtype precision;
    int force, quiet, allow_nonfinite, strict, dry_run;
    int axis; /* -1: not given, 0 stored, 1 input */
} flags;

static int parse_int(const char *s, const char *flag, long long lo, long long hi, long long *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        cli_error("%s expects an integer in [%lld, %lld], not \"%s\"", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_lambda(const char *s, const char *flag, double *out) {
    char *end;
    *out = strtod(s, &end);
    if (!*s || *end || !isfinite(*out)) {
        cli_error("%s expects a number, not \"%s\"", flag, s);
        return -1;
    }
    return 0;
}

static int push(const char **list, int *n, const char *v, const char *flag) {
    if (*n >= MAX_LIST) {
        cli_error("too many %s options", flag);
        return -1;
    }
    list[(*n)++] = v;
    return 0;
}

static int parse_flags(int argc, char **argv, flags *f) {
    enum {
        O_SEED = 256,
        O_PRESET,
        O_DTYPE,
        O_PRECISION,
        O_SHARD,
        O_REPORT,
        O_NONFINITE,
        O_AXIS,
        O_GRAM,
        O_STRICT,
        O_DRY_RUN,
        O_STAGES
    };
    static const struct option longopts[] = {
        {"base", required_argument, 0, 'b'},
        {"model", required_argument, 0, 'm'},
        {"method", required_argument, 0, 'M'},
        {"output", required_argument, 0, 'o'},
        {"lambda", required_argument, 0, 'l'},
        {"param", required_argument, 0, 'p'},
        {"exclude", required_argument, 0, 'x'},
        {"threads", required_argument, 0, 't'},
        {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"seed", required_argument, 0, O_SEED},
        {"preset", required_argument, 0, O_PRESET},
        {"dtype", required_argument, 0, O_DTYPE},
        {"precision", required_argument, 0, O_PRECISION},
        {"max-shard-size", required_argument, 0, O_SHARD},
        {"report", required_argument, 0, O_REPORT},
        {"allow-nonfinite", no_argument, 0, O_NONFINITE},
        {"covariance-axis", required_argument, 0, O_AXIS},
        {"gram", required_argument, 0, O_GRAM},
        {"strict", no_argument, 0, O_STRICT},
        {"dry-run", no_argument, 0, O_DRY_RUN},
        {"intermediate-dir", required_argument, 0, O_STAGES},
        {0, 0, 0, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:m:M:o:l:p:x:t:fqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': f->base = optarg; break;
        case 'm':
            if (push(f->models, &f->n_models, optarg, "--model")) return -1;
            break;
        case 'M': f->method = optarg; break;
        case 'o': f->out = optarg; break;
        case 'x':
            if (push(f->excludes, &f->n_excludes, optarg, "--exclude")) return -1;
            break;
        case 'f': f->force = 1; break;
        case 'q': f->quiet = 1; break;
        case 'h': print_help(stdout); return 1;
        case O_PRESET: f->preset = optarg; break;
        case O_REPORT: f->report = optarg; break;
        case O_NONFINITE: f->allow_nonfinite = 1; break;
        case O_STRICT: f->strict = 1; break;
        case O_DRY_RUN: f->dry_run = 1; break;
        case O_STAGES: f->stage_dir = optarg; break;
        case O_GRAM: {
            char *eq = strrchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1] || f->n_grams >= MAX_LIST) {
                cli_error("--gram expects MODEL_PATH=GRAMS.safetensors, not \"%s\"", optarg);
                return -1;
            }
            *eq = 0;
            f->grams[f->n_grams++] = (acem_param){optarg, eq + 1};
            break;
        }
        case O_AXIS:
            if (strcmp(optarg, "stored") && strcmp(optarg, "input")) {
                cli_error("--covariance-axis expects stored or input, not \"%s\"", optarg);
                return -1;
            }
            f->axis = !strcmp(optarg, "input") ? 1 : 0;
            break;
        case 'l':
            if (parse_lambda(optarg, "--lambda", &f->lambda)) return -1;
            break;
        case 'p': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || f->n_params >= MAX_LIST) {
                cli_error("--param expects KEY=VALUE, not \"%s\"", optarg);
                return -1;
            }
            *eq = 0;
            /* lambda is no method's parameter, but YAML's parameters take it: so does -p */
            if (!strcmp(optarg, "lambda")) {
                if (parse_lambda(eq + 1, "--param lambda", &f->lambda)) return -1;
                break;
            }
            f->params[f->n_params++] = (acem_param){optarg, eq + 1};
            break;
        }
        case 't':
            if (parse_int(optarg, "--threads", 1, 4096, &f->threads)) return -1;
            break;
        case O_SEED:
            if (parse_int(optarg, "--seed", 0, INT64_MAX, &f->seed)) return -1;
            break;
        case O_DTYPE:
            f->out_type = acem_out_type_parse(optarg);
            if (f->out_type == ACEM_OUT_INVALID) {
                const char *why = acem_out_type_refused(optarg);
                if (why)
                    cli_error("--dtype %s: %s", optarg, why);
                else
                    cli_error("--dtype: unknown type \"%s\"", optarg);
                return -1;
            }
            break;
        case O_PRECISION:
            f->precision = acem_dtype_parse(optarg);
            if (f->precision != ACEM_DT_F32 && f->precision != ACEM_DT_F64) {
                cli_error("--precision: unknown type \"%s\" (f32 or f64)", optarg);
                return -1;
            }
            break;
        case O_SHARD:
            if (acem_parse_size(optarg, &f->max_shard) || f->max_shard == 0) {
                cli_error("--max-shard-size expects a size like 5G or 500M, not \"%s\"", optarg);
                return -1;
            }
            break;
        case ':': cli_error("option %s needs a value", argv[optind - 1]); return -1;
        default:
            cli_error("unknown option %s (see acem merge --help)", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) f->config = argv[optind++];
    if (optind < argc) {
        cli_error("unexpected argument \"%s\"", argv[optind]);
        return -1;
    }
    return 0;
}

/* Flags given on the command line win over the config file's values. */
static void apply_flags(const flags *f, acem_merge_options *o, acem_param *params) {
    if (f->base) o->base = f->base;
    if (f->method) o->method = f->method;
    if (f->out) o->out = f->out;
    if (f->preset) o->preset = f->preset;
    if (f->report) o->report_path = f->report;
    if (f->n_models) { /* Gram files from the config belonged to its own model list */
        o->models = f->models;
        o->n_models = f->n_models;
        o->grams = NULL;
    }
    if (f->n_excludes) {
        o->excludes = f->excludes;
        o->n_excludes = f->n_excludes;
    }
    /* Config parameters first, flags after: a later key overrides an earlier one. */
    for (int i = 0; i < o->n_params; i++)
        params[i] = o->params[i];
    for (int i = 0; i < f->n_params; i++)
        params[o->n_params + i] = f->params[i];
    o->params = params;
    o->n_params += f->n_params;
    if (!isnan(f->lambda)) o->lambda = f->lambda;
    if (f->seed >= 0) o->seed = (uint64_t)f->seed;
    if (f->threads) o->threads = (int)f->threads;
    if (f->max_shard) o->max_shard_size = f->max_shard;
    if (f->out_type != ACEM_OUT_INVALID) o->out_type = f->out_type;
    if (f->precision != ACEM_DT_NONE) o->precision = f->precision;
    o->force |= f->force;
    o->allow_nonfinite |= f->allow_nonfinite;
    o->strict |= f->strict;
    o->dry_run |= f->dry_run;
    if (f->axis >= 0) o->covariance_axis_input = f->axis;
}

/* One merge: the config's document doc (none without a config) with the flags over it;
 * intermediate: a named stage of a mergekit-multi file, written into stage_dir. */
static int merge_one(const flags *f, size_t doc, const char *stage_dir, bool intermediate) {
    acem_merge_options o;
    acem_merge_options_init(&o);
    acem_config *cfg = NULL;
    if (f->config) {
        acem_error err = {{0}};
        if (acem_config_load_stage(f->config, doc, stage_dir, &cfg, &o, &err)) {
            cli_error("%s", err.msg);
            return EXIT_FAIL;
        }
    }
    const char *doc_out = o.out; /* an intermediate's own: DIR/NAME, or its out_path */
    const char *name = cfg ? acem_config_name(cfg) : NULL;
    acem_error err = {{0}};
    if (intermediate && name && acem_workdir_claim(stage_dir, "acem merge", &err)) {
        cli_error("%s", err.msg);
        acem_config_free(cfg);
        return EXIT_FAIL;
    }
    acem_param *params = calloc((size_t)o.n_params + (size_t)f->n_params + 1, sizeof *params);
    if (!params) {
        cli_error("out of memory");
        acem_config_free(cfg);
        return EXIT_FAIL;
    }
    apply_flags(f, &o, params);
    if (intermediate) { /* -o is the last merge's; acem's own stages are replaced */
        o.out = doc_out;
        o.force |= name != NULL;
    }
    const char **grams = f->n_grams ? calloc((size_t)o.n_models + 1, sizeof *grams) : NULL;
    for (int g = 0; g < f->n_grams && grams; g++) {
        int t = 0;
        while (t < o.n_models && strcmp(o.models[t], f->grams[g].key) != 0)
            t++;
        if (t == o.n_models) {
            cli_error("--gram %s: not one of the --model paths", f->grams[g].key);
            free(grams);
            free(params);
            acem_config_free(cfg);
            return EXIT_USAGE;
        }
        grams[t] = f->grams[g].value;
    }
    if (grams) o.grams = grams;
    int rc;
    bool base_needed = !o.method || !acem_method_merges_weights(o.method);
    if ((!o.base && base_needed) || !o.out || !o.method || o.n_models < 1) {
        size_t n = 0; /* the merge does not start: the config's warnings would go unseen */
        const char *const *w = cfg ? acem_config_warnings(cfg, &n) : NULL;
        for (size_t i = 0; i < n; i++)
            cli_warning(NULL, w[i]);
        cli_error("%s", !o.base && base_needed ? "no base model (--base)"
                        : !o.method            ? "no method (--method; see acem merge --help)"
                        : !o.out               ? "no output path (-o)"
                                               : "no expert model (--model)");
        rc = EXIT_USAGE;
    } else {
        rc = cli_run_merge(&o, f->quiet);
        if (!rc && intermediate && !f->quiet)
            printf("acem: stage %zu%s%s%s written to %s\n", doc + 1, name ? " (\"" : "",
                   name ? name : "", name ? "\")" : "", doc_out);
    }
    free(grams);
    free(params);
    acem_config_free(cfg);
    return rc;
}

/* mergekit-multi (and mergekit-mega): the documents in the order of what they read
 * (acem_config_order), the named ones into the stage directory (made by acem, or one it made
 * before; never a directory of the user's), those with an out_path to it, the final into -o. Flags
 * that name models apply to one merge, not to every stage. */
static int merge_stages(flags *f, size_t n) {
    if (f->base || f->method || f->n_models || f->n_grams || f->report || f->dry_run) {
        cli_error("%s: a config of %zu merges takes no --base, --method, --model, --gram, "
                  "--report or --dry-run (each document names its own)",
                  f->config, n);
        return EXIT_USAGE;
    }
    char *dir = NULL;
    if (!f->stage_dir && asprintf(&dir, "%s.stages", f->out ? f->out : f->config) < 0) {
        cli_error("out of memory");
        return EXIT_FAIL;
    }
    size_t *order = dir || f->stage_dir ? calloc(n, sizeof *order) : NULL;
    acem_error err = {{0}};
    int rc = EXIT_OK;
    if (!order) {
        cli_error("out of memory");
        rc = EXIT_FAIL;
    } else if (acem_config_order(f->config, order, n, &err)) {
        cli_error("%s", err.msg);
        rc = EXIT_FAIL;
    }
    for (size_t i = 0; i < n && rc == EXIT_OK; i++)
        rc = merge_one(f, order[i], f->stage_dir ? f->stage_dir : dir, i + 1 < n);
    free(order);
    free(dir);
    return rc;
}

int cmd_merge(int argc, char **argv) {
    if (argc < 2) { /* a bare `acem merge` asks how it is used */
        print_help(stderr);
        return EXIT_USAGE;
    }
    static flags f;
    memset(&f, 0, sizeof f);
    f.lambda = NAN;
    f.seed = -1;
    f.out_type = ACEM_OUT_INVALID;
    f.precision = ACEM_DT_NONE;
    f.axis = -1;
    int r = parse_flags(argc, argv, &f);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    size_t n = 1;
    if (f.config) {
        acem_error err = {{0}};
        if (acem_config_count(f.config, &n, &err)) {
            cli_error("%s", err.msg);
            return EXIT_FAIL;
        }
    }
    if (f.stage_dir && n < 2) {
        cli_error("--intermediate-dir is for a config of several merges (mergekit-multi)");
        return EXIT_USAGE;
    }
    return n > 1 ? merge_stages(&f, n) : merge_one(&f, 0, NULL, false);
}
