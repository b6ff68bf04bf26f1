/* cmd_example.c — `acem example [DIR]`: a tiny base model and three experts fine-tuned
 * from it (synthetic, deterministic), merged end to end with the summary printed. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define N_EXPERTS 3

typedef struct spec {
    const char *name;
    int ndim;
    uint64_t shape[2];
} spec;

/* A two-layer MLP with embeddings and a norm, as a Hugging Face model would name it. */
static const spec tensors[] = {
    {"model.embed.weight", 2, {256, 64}}, {"model.layers.0.weight", 2, {128, 64}},
    {"model.layers.0.bias", 1, {128, 0}}, {"model.layers.1.weight", 2, {64, 128}},
    {"model.layers.1.bias", 1, {64, 0}},  {"model.norm.weight", 1, {64, 0}},
};
#define N_TENSORS   (sizeof tensors / sizeof *tensors)
#define N_POSITIONS 16

/* xorshift64* and Box-Muller: deterministic normals without any library state. */
static double normal(uint64_t *s) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        u[i] = ((double)((*s * 2685821657736338717ULL) >> 11) + 0.5) * 0x1.0p-53;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static int make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        cli_error("%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Writes DIR/NAME/model.safetensors and a config.json. */
static int save_model(const char *dir, const char *name, float *const *data,
                      const int64_t *positions) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (make_dir(path)) return -1;
    acem_tensor_data td[N_TENSORS + 1];
    static const uint64_t pos_shape[1] = {N_POSITIONS};
    for (size_t i = 0; i < N_TENSORS; i++)
        td[i] = (acem_tensor_data){tensors[i].name, ACEM_DT_F32, tensors[i].ndim, tensors[i].shape,
                                   data[i]};
    td[N_TENSORS] = (acem_tensor_data){"model.position_ids", ACEM_DT_I64, 1, pos_shape, positions};
    snprintf(path, sizeof path, "%s/%s/model.safetensors", dir, name);
    acem_error err = {{0}};
    const acem_param meta[] = {{"format", "pt"}};
    if (acem_save_safetensors(path, td, N_TENSORS + 1, meta, 1, &err)) {
        cli_error("%s", err.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s/config.json", dir, name);
    static const char config[] = "{\"model_type\": \"acem-example\", \"hidden_size\": 64}\n";
    acem_outputs *outs = NULL; /* in the example's own directory: its files are regenerated */
    int rc = acem_outputs_new(&outs, &err) || acem_outputs_claim(outs, path, 1, &err) ||
             acem_outputs_write(outs, path, config, sizeof config - 1, &err);
    acem_outputs_free(outs);
    if (rc) cli_error("%s", err.msg);
    return rc ? -1 : 0;
}

static uint64_t numel(const spec *s) {
    return s->ndim == 1 ? s->shape[0] : s->shape[0] * s->shape[1];
}

/* Base weights ~ N(0, 0.02^2); expert t adds a rank-2 update of strength 0.01 * 3^t, so
 * the experts differ in how far they moved (as fine-tunes with different budgets do). */
static int write_models(const char *dir) {
    float *base[N_TENSORS], *expert[N_TENSORS];
    int64_t positions[N_POSITIONS];
    for (int i = 0; i < N_POSITIONS; i++)
        positions[i] = i;
    uint64_t seed = 0x5eed;
    int rc = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        base[i] = malloc(numel(&tensors[i]) * sizeof(float));
        expert[i] = malloc(numel(&tensors[i]) * sizeof(float));
        if (!base[i] || !expert[i]) rc = -1;
        for (uint64_t k = 0; !rc && k < numel(&tensors[i]); k++)
            base[i][k] = (float)(0.02 * normal(&seed));
    }
    if (!rc) rc = save_model(dir, "base", base, positions);
    for (int t = 0; t < N_EXPERTS && !rc; t++) {
        double strength = 0.01 * pow(3.0, t);
        for (size_t i = 0; i < N_TENSORS; i++) {
            uint64_t rows = tensors[i].ndim == 2 ? tensors[i].shape[0] : 1;
            uint64_t cols = numel(&tensors[i]) / rows;
            double u[2][256], v[2][256];
            for (int r = 0; r < 2; r++) {
                for (uint64_t a = 0; a < rows; a++)
                    u[r][a] = normal(&seed);
                for (uint64_t b = 0; b < cols; b++)
                    v[r][b] = normal(&seed) / sqrt((double)cols);
            }
            for (uint64_t a = 0; a < rows; a++)
                for (uint64_t b = 0; b < cols; b++)
                    expert[i][a * cols + b] =
                        base[i][a * cols + b] +
                        (float)(strength * (u[0][a] * v[0][b] + u[1][a] * v[1][b]));
        }
        char name[32];
        snprintf(name, sizeof name, "expert-%d", t + 1);
        rc = save_model(dir, name, expert, positions);
    }
    for (size_t i = 0; i < N_TENSORS; i++) {
        free(base[i]);
        free(expert[i]);
    }
    return rc;
}

int cmd_example(int argc, char **argv) {
    const char *method = "ties";
    const char *dir = "acem-example";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: acem example [DIR] [--method NAME]\n"
                   "\n"
                   "Writes a tiny base model and three experts to DIR (default ./acem-example)\n"
                   "as Hugging Face directories, merges them into DIR/merged with the method\n"
                   "(default ties) and prints the summary. DIR is new, empty or one an\n"
                   "earlier acem example made: its files are rewritten. Then try:\n"
                   "  acem inspect acem-example/merged\n"
                   "  acem merge -b acem-example/base -m acem-example/expert-1 \\\n"
                   "             -m acem-example/expert-2 -M average -o merged.safetensors\n");
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--method") && i + 1 < argc)
            method = argv[++i];
        else if (argv[i][0] != '-')
            dir = argv[i];
        else {
            cli_error("unknown option %s (see acem example --help)", argv[i]);
            return EXIT_USAGE;
        }
    }
    acem_error err = {{0}};
    if (acem_workdir_claim(dir, "acem example", &err)) { /* its files are rewritten below */
        cli_error("%s", err.msg);
        return EXIT_FAIL;
    }
    if (write_models(dir)) return EXIT_FAIL;
    char paths[N_EXPERTS + 2][4096];
    const char *models[N_EXPERTS];
    snprintf(paths[0], sizeof paths[0], "%s/base", dir);
    snprintf(paths[1], sizeof paths[1], "%s/merged", dir);
    for (int t = 0; t < N_EXPERTS; t++) {
        snprintf(paths[t + 2], sizeof paths[t + 2], "%s/expert-%d", dir, t + 1);
        models[t] = paths[t + 2];
    }
    printf("acem: wrote a base model and %d experts to %s/\n", N_EXPERTS, dir);
    acem_merge_options o;
    acem_merge_options_init(&o);
    o.base = paths[0];
    o.models = models;
    o.n_models = N_EXPERTS;
    o.method = method;
    o.out = paths[1];
    o.force = 1;
    return cli_run_merge(&o, false);
}
