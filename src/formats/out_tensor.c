/* out_tensor.c — what an output tensor declares, derived from its one type value. */
#include "formats.h"

acem_dtype out_tensor_dtype(const st_out_tensor *t) {
    if (t->type == ACEM_OUT_KEEP) return t->src->dtype;
    acem_dtype dt = acem_out_type_dtype(t->type);
    return dt != ACEM_DT_NONE ? dt : ACEM_DT_F32; /* block types are fed F32 values */
}

acem_quant out_tensor_quant(const st_out_tensor *t) {
    return t->type == ACEM_OUT_KEEP ? t->src->quant : acem_out_type_quant(t->type);
}

static bool numel_of(const st_out_tensor *t, uint64_t *numel) {
    *numel = 1;
    for (int d = 0; d < t->ndim; d++)
        if (!acem_mul_u64(*numel, t->shape[d], numel)) return false;
    return true;
}

bool out_tensor_stored_bytes(const st_out_tensor *t, uint64_t *bytes) {
    uint64_t numel;
    acem_quant q = out_tensor_quant(t);
    if (!numel_of(t, &numel)) return false;
    if (q == ACEM_QUANT_NONE)
        return acem_mul_u64(numel, acem_dtype_size(out_tensor_dtype(t)), bytes);
    return t->ndim > 0 && t->shape[t->ndim - 1] % acem_quant_block_elems(q) == 0 &&
           acem_quant_stored_bytes(q, numel, bytes);
}

bool out_tensor_fed_bytes(const st_out_tensor *t, uint64_t *bytes) {
    uint64_t numel;
    if (t->type == ACEM_OUT_KEEP || out_tensor_quant(t) == ACEM_QUANT_NONE)
        return out_tensor_stored_bytes(t, bytes);
    return numel_of(t, &numel) && acem_mul_u64(numel, sizeof(float), bytes);
}
