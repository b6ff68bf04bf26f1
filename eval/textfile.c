/* textfile.c — reading a whole input file of the evaluation layer into memory: libacem's
 * own strict reader (a regular file, never a FIFO waited on, bounded, one error line), so
 * that the command line reaches it without the library's internal headers. */
#include "textfile.h"

#include "formats/formats.h"

char *eval_read_file(const char *path, uint64_t limit, size_t *len, acem_error *err) {
    return acem_read_small_file(path, limit, len, err);
}
