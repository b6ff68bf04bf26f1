/* fuzz_tokenizer.c — a fuzzed tokenizer directory and text (eval/bpe.c). The input is
 * FILES NUL TEXT; FILES is tokenizer.json when it starts with "{", else vocab.json and
 * merges.txt separated by a line "---". An accepted tokenizer must encode the text (or
 * refuse it, when it is not UTF-8, with one line). */
#include "fuzz.h"

#include "bpe.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *dir, *tj, *vocab, *merges;
    if (!dir) {
        dir = fz_path("tok");
        if (mkdir(dir, 0755) != 0) fz_fail("cannot create", dir);
        tj = fz_path("tok/tokenizer.json");
        vocab = fz_path("tok/vocab.json");
        merges = fz_path("tok/merges.txt");
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t files = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t text_len = nul ? size - files - 1 : 0;
    fz_remove(tj);
    fz_remove(vocab);
    fz_remove(merges);
    if (files && data[0] == '{' && !memmem(data, files, "\n---\n", 5)) {
        fz_write(tj, data, files);
    } else {
        const uint8_t *sep = memmem(data, files, "\n---\n", 5);
        size_t nv = sep ? (size_t)(sep - data) : files;
        fz_write(vocab, data, nv);
        fz_write(merges, sep ? sep + 5 : data + nv, sep ? files - nv - 5 : 0);
    }
    bpe_tokenizer *t;
    acem_error err = {{0}};
    if (bpe_load(dir, &t, &err) != 0) {
        fz_check_error(&err, dir);
        return 0;
    }
    bpe_ids ids = {0};
    if (bpe_encode(t, text, text_len, &ids, &err) != 0) fz_check_error(&err, "UTF-8");
    free(ids.v);
    bpe_free(t);
    return 0;
}
