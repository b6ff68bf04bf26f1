/* textfile.c — reading a whole input file of the evaluation layer into memory. */
#include "textfile.h"

#include "formats/formats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *eval_read_file(const char *path, uint64_t limit, size_t *len, acem_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        acem_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        acem_fail(err, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size > limit)
        acem_fail(err, "%s: larger than the %llu-byte limit", path, (unsigned long long)limit);
    else if ((buf = acem_alloc((size_t)st.st_size + 1, 1, path, err)) &&
             acem_pread_full(fd, path, buf, (uint64_t)st.st_size, 0, err)) {
        free(buf);
        buf = NULL;
    }
    close(fd);
    if (buf) *len = (size_t)st.st_size;
    return buf;
}
