/* fuzz_pickle.c — the restricted unpickler on its own: fuzzed bytes as a torch.save
 * archive's data.pkl. Through a zip the CRC of data.pkl rejects almost every mutation
 * before the unpickler runs; here every input reaches it. An accepted state_dict must have
 * well-formed references (names, storage keys, shapes within ACEM_MAX_DIMS). */
#include "fuzz.h"

#include "formats/formats.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    torch_ref *refs = NULL;
    size_t n = 0;
    acem_error err = {{0}};
    if (pickle_state_dict("data.pkl", data, size, &refs, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!refs[i].name || !refs[i].key || refs[i].ndim < 0 || refs[i].ndim > ACEM_MAX_DIMS ||
                strlen(refs[i].name) == 0)
                fz_fail("an accepted state_dict holds a malformed reference", refs[i].name);
        torch_refs_free(refs, n);
    } else {
        fz_check_error(&err, "data.pkl");
    }
    return 0;
}
