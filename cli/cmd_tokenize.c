/* cmd_tokenize.c — `acem tokenize --model DIR [--file F]`: the GPT-2 token ids of each line,
 * one output line per input line (as llama.cpp's llama-tokenize prints them). */
#include "cli.h"

#include "bpe.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(FILE *to) {
    fprintf(to, "usage: acem tokenize --model DIR [--file F]\n"
                "\n"
                "Prints the token ids of each line of F (standard input without --file),\n"
                "space-separated, one output line per input line; the \"\\n\" that ends a line\n"
                "is not part of it (a \"\\r\" before it is). DIR holds a Hugging Face GPT-2\n"
                "tokenizer: tokenizer.json (preferred, as AutoTokenizer does) or vocab.json +\n"
                "merges.txt. Added tokens such as <|endoftext|> in the text become their ids.\n"
                "The text must be UTF-8: a line that is not stops the run with an error naming\n"
                "it (the lines before it are printed).\n"
                "\n"
                "options:\n"
                "  -m, --model DIR   the tokenizer's directory\n"
                "  -f, --file F      read F instead of standard input\n"
                "\n"
                "example:\n"
                "  echo 'Hello world' | acem tokenize --model ./gpt2     # 15496 995\n");
}

/* Encodes and prints each line of in; name is what errors call the input. */
static int tokenize_lines(bpe_tokenizer *t, FILE *in, const char *name) {
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    bpe_ids ids = {0};
    acem_error err = {{0}};
    int rc = EXIT_OK;
    errno = 0;
    while ((n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        size_t len = (size_t)n - (n > 0 && line[n - 1] == '\n');
        ids.n = 0;
        if (bpe_encode(t, line, len, &ids, &err)) {
            cli_error("%s:%zu: %s", name, lineno, err.msg);
            rc = EXIT_FAIL;
            break;
        }
        for (size_t i = 0; i < ids.n; i++)
            printf(i ? " %d" : "%d", (int)ids.v[i]);
        putchar('\n');
    }
    if (!rc && ferror(in)) {
        cli_error("%s: read failed: %s", name, strerror(errno));
        rc = EXIT_FAIL;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (!rc) cli_error("standard output: write failed: %s", strerror(errno));
        rc = EXIT_FAIL;
    }
    free(line);
    free(ids.v);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},
        {"file", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *file = NULL;
    if (argc < 2) { /* a bare `acem tokenize` asks how it is used */
        print_help(stderr);
        return EXIT_USAGE;
    }
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":m:f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 'h': print_help(stdout); return EXIT_OK;
        case ':': cli_error("option %s needs a value", argv[optind - 1]); return EXIT_USAGE;
        default:
            cli_error("unknown option %s (see acem tokenize --help)", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !model) {
        cli_error("tokenize needs --model DIR and no other arguments (see acem tokenize --help)");
        return EXIT_USAGE;
    }
    bpe_tokenizer *t;
    acem_error err = {{0}};
    if (bpe_load(model, &t, &err)) {
        cli_error("%s", err.msg);
        return EXIT_FAIL;
    }
    FILE *in = file ? fopen(file, "rb") : stdin;
    if (!in) {
        cli_error("%s: cannot open: %s", file, strerror(errno));
        bpe_free(t);
        return EXIT_FAIL;
    }
    int rc = tokenize_lines(t, in, file ? file : "standard input");
    if (file) fclose(in);
    bpe_free(t);
    return rc;
}
