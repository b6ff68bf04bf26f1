/* layers.h — what a tensor's name says about the layer stack it belongs to, for gradients
 * (mergekit's position t) and for slices (a frankenmerge renumbers the layers it takes).
 *
 * mergekit knows each architecture's layer template (architecture JSON files: "model.layers.
 * ${layer_index}.mlp.up_proj.weight", "transformer.h.${layer_index}.attn.c_attn.weight");
 * acem reads the same index as the first path component of the name that is a number, which
 * is where every one of those templates puts it. */
#ifndef ACEM_ARCH_LAYERS_H
#define ACEM_ARCH_LAYERS_H

#include "../internal.h"

/* The layer a tensor belongs to ("model.layers.7.mlp" -> 7), or -1 outside the layers. */
long tensor_layer(const char *name);
/* name with its layer index replaced by layer ("model.layers.7.mlp" at 2 -> "model.layers.2.
 * mlp"), malloc'ed; NULL (err set) when out of memory. name must have a layer. */
char *tensor_with_layer(const char *name, long layer, acem_error *err);
/* A tensor outside the layers that comes before them (embeddings: mergekit's pre_weights);
 * the others (final norm, head) come after them (post_weights). */
bool tensor_before_layers(const char *name);
/* The config.json keys that hold the layer count: transformers' num_hidden_layers, GPT-2's
 * n_layer; NULL-terminated. */
extern const char *const arch_layer_count_keys[];

#endif
