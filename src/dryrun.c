/* dryrun.c — acem merge --dry-run: the plan in words, without reading a tensor or writing a
 * file. Every tensor with what will happen to it and why, the type it will be stored as and
 * the file that will hold it (the writer's own shard split), then every file the merge
 * would write. The caller has already validated every input header and every output rule. */
#include "dryrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void line(const acem_merge_options *o, const acem_plan_line *l) {
    if (o->plan) o->plan(o->plan_user, l);
}

static void file_line(const acem_merge_options *o, const char *dir, const char *name,
                      const char *what, uint64_t bytes) {
    char *path = dir ? acem_path_join(dir, name, NULL) : NULL;
    acem_plan_line l = {NULL, path ? path : name, what, "", 0, NULL, bytes};
    line(o, &l);
    free(path);
}

static void tensor_lines(const dryrun_facts *f, const size_t *shard_of, size_t shards,
                         const uint64_t *bytes, acem_merge_summary *s) {
    const acem_merge_options *o = f->o;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const plan_entry *e = i < f->plan->n ? &f->plan->entries[i] : NULL;
        const st_out_tensor *t = &f->tensors[i];
        char action[256], name[64];
        if (e)
            plan_describe(e, s->method, f->matrix_only, action, sizeof action);
        else
            snprintf(action, sizeof action, "generated: %s", f->plan->hf->gen[i - f->plan->n].what);
        const acem_quant q = out_tensor_quant(t);
        const char *type = q ? acem_quant_name(q) : acem_dtype_name(out_tensor_dtype(t));
        st_shard_name(shard_of[i], shards, name, sizeof name);
        char *path = f->kind == OUTPUT_DIR ? acem_path_join(o->out, name, NULL) : NULL;
        acem_plan_line l = {t->name, path ? path : o->out, action, type, t->ndim, t->shape,
                            bytes[i]};
        line(o, &l);
        free(path);
        s->tensors_merged += e && e->action == PLAN_MERGE;
        s->tensors_copied += e && e->action == PLAN_COPY;
        s->bytes_written += bytes[i];
    }
}

/* The files of a directory output besides its weights. */
static void directory_lines(const dryrun_facts *f, size_t shards) {
    const acem_merge_options *o = f->o;
    if (shards > 1) file_line(o, o->out, "model.safetensors.index.json", "shard index", 0);
    for (size_t i = 0; i < f->n_aux; i++)
        file_line(o, o->out, f->aux[i], "copied from the base directory", 0);
    file_line(o, o->out, "README.md", "model card of the merge", 0);
    file_line(o, o->out, "acem_config.yaml", "the resolved configuration", 0);
    file_line(o, o->out, ".acem-output.json", "the list of files acem wrote (for --force)", 0);
}

int dryrun_report(const dryrun_facts *f, acem_merge_summary *s, acem_error *err) {
    const size_t n = f->n_tensors;
    uint64_t *bytes = acem_alloc(n + 1, sizeof *bytes, "the plan", err);
    size_t *shard_of = bytes ? acem_alloc(n + 1, sizeof *shard_of, "the plan", err) : NULL;
    if (!shard_of) {
        free(bytes);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        out_tensor_stored_bytes(&f->tensors[i], &bytes[i]);
    const bool dir = f->kind == OUTPUT_DIR;
    s->shards = st_shard_split(bytes, n, dir ? f->shard_size : 0, shard_of);
    tensor_lines(f, shard_of, s->shards, bytes, s);
    uint64_t *per_shard = acem_alloc(s->shards + 1, sizeof *per_shard, "the plan", err);
    for (size_t i = 0; per_shard && i < n; i++)
        per_shard[shard_of[i]] += bytes[i];
    for (size_t k = 0; per_shard && k < s->shards; k++) {
        char name[64];
        st_shard_name(k, s->shards, name, sizeof name);
        file_line(f->o, dir ? f->o->out : NULL, dir ? name : f->o->out, "weights", per_shard[k]);
    }
    if (per_shard && dir) directory_lines(f, s->shards);
    if (per_shard && f->o->report_path)
        file_line(f->o, NULL, f->o->report_path, "the JSON report", 0);
    free(per_shard);
    free(shard_of);
    free(bytes);
    return per_shard ? 0 : -1;
}
