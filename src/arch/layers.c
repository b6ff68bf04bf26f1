/* layers.c — layer indices in tensor names (layers.h). */
#include "layers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const arch_layer_count_keys[] = {"num_hidden_layers", "n_layer", NULL};

/* The digits of the first numeric path component: *at and *len; false when there is none.
 * At most 9 digits, so that the index fits a long everywhere. */
static bool layer_digits(const char *name, size_t *at, size_t *len) {
    for (const char *p = strchr(name, '.'); p; p = strchr(p + 1, '.')) {
        const char *q = p + 1;
        while (isdigit((unsigned char)*q))
            q++;
        if (q > p + 1 && (*q == '.' || !*q) && q - p < 10) {
            *at = (size_t)(p + 1 - name);
            *len = (size_t)(q - p - 1);
            return true;
        }
    }
    return false;
}

long tensor_layer(const char *name) {
    size_t at, len;
    return layer_digits(name, &at, &len) ? strtol(name + at, NULL, 10) : -1;
}

char *tensor_with_layer(const char *name, long layer, acem_error *err) {
    size_t at = 0, len = 0, n = strlen(name);
    layer_digits(name, &at, &len);
    char digits[24];
    int k = snprintf(digits, sizeof digits, "%ld", layer);
    char *out = acem_alloc(n - len + (size_t)k + 1, 1, "a tensor name", err);
    if (!out) return NULL;
    memcpy(out, name, at);
    memcpy(out + at, digits, (size_t)k);
    memcpy(out + at + (size_t)k, name + at + len, n - at - len + 1);
    return out;
}

/* Embedding tensors come before the layers in every architecture mergekit knows. */
bool tensor_before_layers(const char *name) {
    static const char *const marks[] = {"embed", "wte", "wpe", "word_embeddings"};
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++)
        if (strstr(name, marks[i])) return true;
    return false;
}
