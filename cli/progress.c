/* progress.c — a progress bar on stderr: tensors and bytes done, rate, ETA. */
#include "cli.h"

#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_init(progress_bar *p, bool quiet) {
    p->enabled = !quiet && isatty(STDERR_FILENO);
    p->start = now();
    p->last_draw = 0;
}

void progress_update(void *user, const acem_progress *pr) {
    progress_bar *p = user;
    if (!p->enabled) return;
    double t = now();
    if (pr->phase == ACEM_PHASE_DONE) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        return;
    }
    if (t - p->last_draw < 0.1) return;
    p->last_draw = t;
    double frac = pr->bytes_total ? (double)pr->bytes_done / (double)pr->bytes_total : 0;
    if (frac > 1) frac = 1;
    char bar[31];
    int filled = (int)(frac * 30);
    for (int i = 0; i < 30; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[30] = 0;
    double el = t - p->start, rate = el > 0 ? (double)pr->bytes_done / el : 0;
    double eta = rate > 0 ? (double)(pr->bytes_total - pr->bytes_done) / rate : 0;
    fprintf(stderr, "\r\033[K[%s] %3.0f%%  %zu/%zu tensors  %.1f MiB/s  ETA %d:%02d", bar,
            100 * frac, pr->tensors_done, pr->tensors_total, rate / 1048576.0, (int)eta / 60,
            (int)eta % 60);
    fflush(stderr);
}

unsigned long long cli_peak_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (unsigned long long)ru.ru_maxrss * 1024ULL;
}
