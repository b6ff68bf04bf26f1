/* fuzz_config.c — a fuzzed YAML config (acem_config_load): every string an accepted
 * config hands out must stay readable until acem_config_free. */
#include "fuzz.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile size_t g_sink; /* keeps the walk from being optimised away */

static size_t len(const char *s) { return s ? strlen(s) : 0; }

static size_t walk(const char *const *list, int n) {
    size_t total = 0;
    for (int i = 0; list && i < n; i++)
        total += len(list[i]);
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char *path;
    if (!path) path = fz_path("merge.yaml");
    fz_write(path, data, size);
    acem_config *c;
    acem_merge_options o;
    acem_merge_options_init(&o);
    acem_error err = {{0}};
    if (acem_config_load(path, &c, &o, &err) == 0) {
        size_t total = len(o.method) + len(o.base) + len(o.out) + len(o.preset) +
                       len(o.report_path) + walk(o.models, o.n_models) +
                       walk(o.excludes, o.n_excludes) + walk(o.grams, o.grams ? o.n_models : 0);
        for (int i = 0; i < o.n_params; i++)
            total += len(o.params[i].key) + len(o.params[i].value);
        g_sink = total;
        acem_config_free(c);
    } else {
        fz_check_error(&err, path);
    }
    return 0;
}
