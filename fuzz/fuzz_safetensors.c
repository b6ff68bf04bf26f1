/* fuzz_safetensors.c — a fuzzed .safetensors file: header and offset validation, then
 * every tensor of an accepted file is read. */
#include "fuzz.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *path;
    if (!path) path = fz_path("input.safetensors");
    fz_write(path, data, size);
    acem_checkpoint *ck;
    acem_error err = {{0}};
    if (acem_checkpoint_open(path, &ck, &err) == 0) {
        fz_read_checkpoint(ck);
        acem_checkpoint_close(ck);
    } else {
        fz_check_error(&err, path);
    }
    return 0;
}
