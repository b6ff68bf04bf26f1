/* fuzz_dataset.c — a fuzzed evaluation data file (eval/dataset.c). The first byte picks the
 * format (TSV, CSV, JSONL), the columns (names or indexes, with or without a pair) and
 * the header mode; the rest is the file. An accepted file must hand out n readable texts
 * and labels below n_labels, each with a name. */
#include "fuzz.h"

#include "dataset.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile size_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *paths[3];
    static const char *const names[3] = {"d.tsv", "d.csv", "d.jsonl"};
    if (!paths[0])
        for (int i = 0; i < 3; i++)
            paths[i] = fz_path(names[i]);
    if (!size) return 0;
    unsigned sel = data[0];
    const char *path = paths[sel % 3];
    static const char *const model[] = {"neg", "pos", "neutral"};
    eval_columns c = {sel & 4 ? "0" : "text",  sel & 8 ? (sel & 4 ? "2" : "pair") : NULL,
                      sel & 4 ? "1" : "label", (eval_header)((sel >> 4) % 3),
                      sel & 64 ? model : NULL, sel & 64 ? 3 : 0};
    fz_write(path, data + 1, size - 1);
    eval_dataset d;
    acem_error err = {{0}};
    if (eval_dataset_read(path, &c, &d, &err) != 0) {
        fz_check_error(&err, path);
        return 0;
    }
    size_t total = 0;
    for (size_t i = 0; i < d.n; i++) {
        if (d.label[i] < 0 || (size_t)d.label[i] >= d.n_labels) fz_fail("label out of range", path);
        total += strlen(d.text[i]) + (d.pair ? strlen(d.pair[i]) : 0) + d.line[i];
        total += strlen(d.label_names[d.label[i]]);
    }
    g_sink = total;
    eval_dataset_free(&d);
    return 0;
}
