/* save.c — acem_save_safetensors: a whole in-memory model to one file, atomically (an
 * existing file of that name is replaced, as the caller asked for it by name). */
#include "formats/formats.h"
#include "output.h"

#include <stdlib.h>

int acem_save_safetensors(const char *path, const acem_tensor_data *tensors, size_t n,
                          const acem_param *metadata, size_t n_meta, acem_error *err) {
    if (!output_is_file(path) || output_is_gguf(path))
        return acem_fail(err, "%s: expected a .safetensors path", path);
    st_out_tensor *desc = acem_alloc(n + 1, sizeof *desc, "tensor descriptors", err);
    acem_tensor *src = desc ? acem_alloc(n + 1, sizeof *src, "tensor descriptors", err) : NULL;
    if (!src) {
        free(desc);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (tensors[i].ndim < 0 || tensors[i].ndim > ACEM_MAX_DIMS ||
            acem_dtype_size(tensors[i].dtype) == 0)
            rc = acem_fail(err, "%s: tensor \"%s\" has an impossible shape or dtype", path,
                           tensors[i].name);
        src[i].dtype = tensors[i].dtype; /* the bytes are stored as given */
        desc[i] = (st_out_tensor){.name = tensors[i].name,
                                  .ndim = tensors[i].ndim,
                                  .shape = tensors[i].shape,
                                  .type = ACEM_OUT_KEEP,
                                  .src = &src[i]};
        uint64_t nbytes;
        if (!rc && !out_tensor_stored_bytes(&desc[i], &nbytes))
            rc = acem_fail(err, "%s: tensor \"%s\" has an impossible shape", path, tensors[i].name);
    }
    output_set outs = {0};
    output *out = NULL;
    st_writer *w = NULL;
    if (!rc) rc = output_begin(&outs, path, OUTPUT_FILE, true, false, &out, err);
    if (!rc) rc = st_writer_open(NULL, out->tmp_path, desc, n, 0, metadata, n_meta, &w, err);
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t nbytes = 0;
        out_tensor_fed_bytes(&desc[i], &nbytes);
        rc = st_writer_write(w, tensors[i].data, nbytes, err);
    }
    if (!rc) rc = st_writer_finish(w, err);
    st_writer_free(w);
    if (!rc) rc = output_commit(out, err);
    output_set_clear(&outs);
    free(src);
    free(desc);
    return rc ? -1 : 0;
}
