/* fuzz_index.c — a Hugging Face directory whose model.safetensors.index.json is fuzzed,
 * beside two small valid shards (written by fuzz/make_seeds.py). */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const shards[] = {"model-00001-of-00002.safetensors",
                                     "model-00002-of-00002.safetensors"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *dir, *index;
    if (!dir) {
        dir = fz_path("model");
        if (mkdir(dir, 0755) != 0) fz_fail("cannot create", dir);
        for (size_t i = 0; i < sizeof shards / sizeof *shards; i++) {
            char dst[8192], src[256];
            snprintf(dst, sizeof dst, "%s/%s", dir, shards[i]);
            snprintf(src, sizeof src, "shards/%s", shards[i]);
            fz_copy_model(src, dst);
        }
        index = fz_path("model/model.safetensors.index.json");
    }
    fz_write(index, data, size);
    acem_checkpoint *ck;
    acem_error err = {{0}};
    if (acem_checkpoint_open(dir, &ck, &err) == 0) {
        fz_read_checkpoint(ck);
        acem_checkpoint_close(ck);
    } else {
        fz_check_error(&err, dir); /* the index, a shard or the directory */
    }
    return 0;
}
