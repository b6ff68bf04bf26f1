/* testutil.h — helpers for the cmocka unit tests: temporary directories and files. */
#ifndef ACEM_TESTUTIL_H
#define ACEM_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "acem.h"

/* A fresh directory under $TMPDIR, removed (with its files) by tu_rmtree. */
char *tu_mkdtemp(void);
void tu_rmtree(const char *path);
/* Writes bytes to dir/name; returns the malloc'd path. */
char *tu_write(const char *dir, const char *name, const void *data, size_t n);
/* A safetensors file from a JSON header and a data buffer (header written as given). */
char *tu_write_st(const char *dir, const char *name, const char *json, const void *data, size_t n);
/* True when path exists. */
int tu_exists(const char *path);
/* Number of entries in a directory (without . and ..). */
int tu_count_entries(const char *dir);

#endif
