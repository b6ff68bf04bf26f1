/* dryrun.c — how `acem merge --dry-run` shows the plan: every tensor, every file, the memory
 * bound; then that nothing was read or written. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

void cli_print_plan_line(void *user, const acem_plan_line *l) {
    int *lines = user;
    char size[32], shape[96];
    if (l->tensor && (*lines)++ == 0) printf("tensors (name, shape, stored as, what happens):\n");
    if (!l->tensor && *lines >= 0) {
        printf("files that would be written:\n");
        *lines = -1;
    }
    if (!l->tensor) {
        printf("  %-48s %s%s%s%s\n", l->path, l->action, l->bytes ? " (" : "",
               l->bytes ? acem_format_bytes(l->bytes, size, sizeof size) : "", l->bytes ? ")" : "");
        return;
    }
    size_t k = (size_t)snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < l->ndim && k < sizeof shape; d++)
        k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%llu", d ? ", " : "",
                              (unsigned long long)l->shape[d]);
    if (k < sizeof shape) snprintf(shape + k, sizeof shape - k, "]");
    printf("  %-40s %-16s %-5s %s\n", l->tensor, shape, l->type, l->action);
}

void cli_print_dry_summary(const acem_merge_options *o, const acem_merge_summary *s) {
    char wb[32], bb[32], nn[32];
    printf("acem: dry run of %s on %s (%s)\n", s->method, s->merged, s->params);
    printf("  tensors    %zu merged, %zu copied from the base\n", s->tensors_merged,
           s->tensors_copied);
    printf("  output     %s (%zu weight file%s, %s of tensors)\n", o->out, s->shards,
           s->shards == 1 ? "" : "s", acem_format_bytes(s->bytes_written, wb, sizeof wb));
    printf("  memory     %s of buffers", acem_format_bytes(s->buffer_bytes, bb, sizeof bb));
    if (s->workspace_n)
        printf(", plus the method's n x n workspaces (n up to %llu: %s each in double)",
               (unsigned long long)s->workspace_n,
               acem_format_bytes(s->workspace_n * s->workspace_n * 8, nn, sizeof nn));
    printf("\n  nothing was read beyond the headers, and nothing was written\n");
}
