/* save.c — acem_save_safetensors: a whole in-memory model to one file, atomically. */
#include "formats/formats.h"
#include "output.h"

#include <stdlib.h>

int acem_save_safetensors(const char *path, const acem_tensor_data *tensors, size_t n,
                          const acem_param *metadata, size_t n_meta, acem_error *err) {
    if (!output_is_file(path) || output_is_gguf(path))
        return acem_fail(err, "%s: expected a .safetensors path", path);
    st_out_tensor *desc = acem_alloc(n + 1, sizeof *desc, "tensor descriptors", err);
    if (!desc) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++)
            if (!acem_mul_u64(numel, tensors[i].shape[d], &numel)) rc = -1;
        if (rc || tensors[i].ndim > ACEM_MAX_DIMS ||
            !acem_mul_u64(numel, acem_dtype_size(tensors[i].dtype), &desc[i].nbytes))
            rc = acem_fail(err, "%s: tensor \"%s\" has an impossible shape", path, tensors[i].name);
        desc[i].name = tensors[i].name;
        desc[i].dtype = tensors[i].dtype;
        desc[i].ndim = tensors[i].ndim;
        desc[i].shape = tensors[i].shape;
    }
    output out = {0};
    st_writer *w = NULL;
    if (!rc) rc = output_begin(&out, path, true, err);
    if (!rc) rc = st_writer_open(NULL, out.tmp_path, desc, n, 0, metadata, n_meta, &w, err);
    for (size_t i = 0; i < n && !rc; i++)
        rc = st_writer_write(w, tensors[i].data, desc[i].nbytes, err);
    if (!rc) rc = st_writer_finish(w, err);
    if (!rc) rc = output_commit(&out, err);
    if (rc) output_abort(&out);
    st_writer_free(w);
    free(desc);
    return rc ? -1 : 0;
}
