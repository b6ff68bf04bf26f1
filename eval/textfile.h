/* textfile.h — reading a whole input file of the evaluation layer into memory. */
#ifndef ACEM_EVAL_TEXTFILE_H
#define ACEM_EVAL_TEXTFILE_H

#include "acem.h"

#include <stddef.h>
#include <stdint.h>

/* The bytes of the regular file path, NUL-terminated (the terminator not counted in *len);
 * NULL with err naming the file when it cannot be read or is larger than limit. */
char *eval_read_file(const char *path, uint64_t limit, size_t *len, acem_error *err);

#endif
