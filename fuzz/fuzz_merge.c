/* fuzz_merge.c — acem_merge with a fuzzed file as the base, as an expert, or as both,
 * beside valid tiny models (written by fuzz/make_seeds.py).
 *
 * Input: one selector byte (role, method, output kind), then the file: safetensors, GGUF or
 * a torch.save archive (the reader is picked by the first bytes). A GGUF base merged into a
 * single file is written as GGUF, so the writer copies the fuzzed key-values. After
 * a failed merge nothing may be left in the working directory but the inputs; after a
 * successful one the output must be a valid checkpoint that reads back completely. */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { ROLE_BASE, ROLE_EXPERT, ROLE_BOTH, N_ROLES };

static char *g_base, *g_e1, *g_e2, *g_fuzzed, *g_out_file, *g_out_gguf, *g_out_dir;

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_base) {
        g_base = fz_path("base.safetensors");
        g_e1 = fz_path("e1.safetensors");
        g_e2 = fz_path("e2.safetensors");
        g_fuzzed = fz_path("fuzzed.safetensors");
        g_out_file = fz_path("out.safetensors");
        g_out_gguf = fz_path("out.gguf");
        g_out_dir = fz_path("outdir");
        fz_copy_model("base.safetensors", g_base);
        fz_copy_model("e1.safetensors", g_e1);
        fz_copy_model("e2.safetensors", g_e2);
    }
    if (size < 1) return 0;
    unsigned sel = data[0];
    int role = (int)(sel % N_ROLES), is_dir = (int)((sel / N_ROLES) & 1);
    const char *method = acem_method_name((sel / (2 * N_ROLES)) % acem_method_count());
    fz_write(g_fuzzed, data + 1, size - 1);

    const char *models[2] = {g_e1, role == ROLE_BASE ? g_e2 : g_fuzzed};
    acem_merge_options o;
    acem_merge_options_init(&o);
    o.base = role == ROLE_EXPERT ? g_base : g_fuzzed;
    o.models = models;
    o.n_models = 2;
    o.method = method;
    int gguf_base = role != ROLE_EXPERT && size >= 5 && memcmp(data + 1, "GGUF", 4) == 0;
    o.out = is_dir ? g_out_dir : gguf_base ? g_out_gguf : g_out_file;
    o.max_shard_size = is_dir ? 64 : 0; /* a directory output is sharded */
    o.threads = 1;
    acem_error err = {{0}};
    int files_before = count_entries(fz_workdir());
    if (acem_merge(&o, NULL, &err) == 0) {
        acem_checkpoint *ck;
        if (acem_checkpoint_open(o.out, &ck, &err) != 0) fz_fail("the output is invalid", err.msg);
        fz_read_checkpoint(ck);
        acem_checkpoint_close(ck);
        fz_remove(o.out);
    } else {
        if (!err.msg[0] || strchr(err.msg, '\n')) fz_fail("a bad error message", err.msg);
        if (!strstr(err.msg, fz_workdir()) && strncmp(err.msg, "tensor \"", 8) != 0)
            fz_fail("the message names neither an input nor a tensor", err.msg);
        if (count_entries(fz_workdir()) != files_before)
            fz_fail("a failed merge left something behind", err.msg);
    }
    return 0;
}
