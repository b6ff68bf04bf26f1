/* card.h — what a merged output says about itself (card.c). */
#ifndef ACEM_CARD_H
#define ACEM_CARD_H

#include "internal.h"

#include <cjson/cJSON.h>

/* The resolved configuration as YAML that `acem merge` accepts; the caller frees it. */
char *card_config_yaml(const acem_merge_options *o, const acem_merge_summary *s, acem_error *err);
/* Into a directory output being written: acem_config.yaml, a model card (README.md), and
 * config.json's dtype updated to --dtype's and, when n_layers >= 0 (slices renumbered the
 * layers), its layer count to n_layers. */
int card_write(const char *dir, const acem_merge_options *o, const acem_merge_summary *s,
               const char *yaml, long n_layers, acem_error *err);

/* The JSON object in dir/name (at most 64 MiB), or NULL when it is missing or not one. */
cJSON *card_read_json(const char *dir, const char *name);
/* root, printed by cJSON with a final newline, as dir/name (replaced if there). */
int card_write_json(const char *dir, const char *name, const cJSON *root, acem_error *err);

#endif
