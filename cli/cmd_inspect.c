/* cmd_inspect.c — `acem inspect PATH`: tensors (name, dtype, shape, bytes) and metadata. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void print_help(FILE *to) {
    fprintf(to, "usage: acem inspect PATH\n"
                "\n"
                "Validates a checkpoint (a .safetensors, GGUF or PyTorch .bin file, or a Hugging\n"
                "Face directory of safetensors or pytorch_model.bin files) exactly as a merge\n"
                "would, then lists its metadata and tensors in storage order (bytes: as stored,\n"
                "GGUF's quantised blocks included).\n"
                "\n"
                "example:\n"
                "  acem inspect ./gpt2\n");
}

/* Text of the file (keys, values, names), padded to width: control characters are shown
 * as '?' so that a name holding "\n" or an escape sequence cannot forge a line. */
static void put_text(const char *s, size_t width) {
    size_t n = 0;
    for (; *s; s++, n++)
        putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
    for (; n < width; n++)
        putchar(' ');
}

int cmd_inspect(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        print_help(stdout);
        return EXIT_OK;
    }
    if (argc < 2) { /* a bare `acem inspect` asks how it is used */
        print_help(stderr);
        return EXIT_USAGE;
    }
    if (argc != 2) {
        cli_error("inspect takes exactly one path (see acem inspect --help)");
        return EXIT_USAGE;
    }
    acem_checkpoint *ck;
    acem_error err = {{0}};
    if (acem_checkpoint_open(argv[1], &ck, &err)) {
        cli_error("%s", err.msg);
        return EXIT_FAIL;
    }
    size_t n_meta = acem_checkpoint_metadata_count(ck);
    if (n_meta) printf("metadata:\n");
    for (size_t i = 0; i < n_meta; i++) {
        const char *k, *v;
        acem_checkpoint_metadata_at(ck, i, &k, &v);
        printf("  ");
        put_text(k, 0);
        printf(": ");
        put_text(v, 0);
        printf("\n");
    }
    size_t width = 4;
    for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
        size_t w = strlen(acem_checkpoint_at(ck, i)->name);
        if (w > width) width = w;
    }
    if (width > 80) width = 80;
    printf("%-*s  %-7s  %-24s  %12s\n", (int)width, "name", "dtype", "shape", "bytes");
    uint64_t total_bytes = 0, total_numel = 0;
    for (size_t i = 0; i < acem_checkpoint_count(ck); i++) {
        const acem_tensor *t = acem_checkpoint_at(ck, i);
        char shape[128];
        size_t k = (size_t)snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < t->ndim && k < sizeof shape; d++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%llu", d ? ", " : "",
                                  (unsigned long long)t->shape[d]);
        if (k < sizeof shape) snprintf(shape + k, sizeof shape - k, "]");
        put_text(t->name, width);
        printf("  %-7s  %-24s  %12llu\n", acem_tensor_type_name(t), shape,
               (unsigned long long)acem_tensor_stored_bytes(t));
        total_bytes += acem_tensor_stored_bytes(t);
        total_numel += t->numel;
    }
    char b[32];
    printf("%zu tensors in %zu file%s, %llu elements, %s\n", acem_checkpoint_count(ck),
           acem_checkpoint_file_count(ck), acem_checkpoint_file_count(ck) == 1 ? "" : "s",
           (unsigned long long)total_numel, acem_format_bytes(total_bytes, b, sizeof b));
    acem_checkpoint_close(ck);
    return EXIT_OK;
}
