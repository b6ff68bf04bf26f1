/* fuzz.h — helpers shared by the libFuzzer harnesses (fuzz/run.sh builds and runs them).
 *
 * Every harness feeds its input to the library through a real file in a private working
 * directory (under $TMPDIR; fuzz/run.sh points it at a tmpfs) and checks acem's promises
 * on top of the sanitizers: a failure comes with one non-empty line naming the input, and
 * whatever was accepted can be read completely. Violations abort(), which libFuzzer
 * reports as a crash with the input saved. */
#ifndef ACEM_FUZZ_H
#define ACEM_FUZZ_H

#include "acem.h"

#include <stddef.h>
#include <stdint.h>

/* The harness's private directory, created on first use and removed at exit. */
const char *fz_workdir(void);
/* workdir/name, malloc'd. */
char *fz_path(const char *name);
/* Removes a file, or a directory and everything in it. */
void fz_remove(const char *path);
/* Replaces the file at path with data[0..n). */
void fz_write(const char *path, const uint8_t *data, size_t n);
/* Copies $ACEM_FUZZ_MODELS/name (valid files written by fuzz/make_seeds.py) to dst. */
void fz_copy_model(const char *name, const char *dst);
/* Reads every tensor of an accepted checkpoint whole and in two halves, looks each one up
 * by name, and walks the metadata. */
void fz_read_checkpoint(const acem_checkpoint *ck);
/* A rejection must be one non-empty line that contains `must_name` (a path). */
void fz_check_error(const acem_error *err, const char *must_name);
/* Aborts with msg (a broken promise, not a sanitizer finding). */
void fz_fail(const char *msg, const char *detail);

#endif
