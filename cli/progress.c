/* progress.c — a progress bar on stderr: tensors and bytes done, rate, ETA. */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BAR_MAX 30 /* columns of the bar itself on a wide terminal */
#define BAR_MIN 8  /* below this the bar is left out and the numbers keep the line */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_init(progress_bar *p, bool quiet) {
    p->enabled = !quiet && isatty(STDERR_FILENO);
    p->drawn = false;
    p->start = now();
    p->last_draw = 0;
}

/* Asked at every draw, so that a resized terminal gets a fitting line. */
static int terminal_columns(void) {
    struct winsize ws;
    return ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
}

/* One line, shorter than the terminal (writing its last column wraps on some terminals):
 * a bar of frac when there is room for one, then text. */
static void draw_line(double frac, const char *text) {
    int room = terminal_columns() - 1, len = (int)strlen(text);
    int bar = room - len - 3; /* "[", "] " */
    if (bar > BAR_MAX) bar = BAR_MAX;
    char line[BAR_MAX + 4] = "";
    if (bar >= BAR_MIN) {
        int filled = (int)(frac * bar);
        line[0] = '[';
        for (int i = 0; i < bar; i++)
            line[1 + i] = i < filled ? '#' : '.';
        memcpy(line + 1 + bar, "] ", 3);
    }
    int keep = room - (int)strlen(line);
    fprintf(stderr, "\r\033[K%s%.*s", line, keep > 0 ? keep : 0, text);
    fflush(stderr);
}

/* The time left at a steady rate, "m:ss" ("-:--" before there is a rate). */
static void eta_text(double done, double total, double elapsed, char eta[16]) {
    double rate = elapsed > 0 ? done / elapsed : 0;
    snprintf(eta, 16, "-:--");
    if (rate > 0) {
        int s = (int)((total - done) / rate);
        snprintf(eta, 16, "%d:%02d", s / 60, s % 60);
    }
}

static void draw(const progress_bar *p, const acem_progress *pr, double t) {
    double frac = pr->bytes_total ? (double)pr->bytes_done / (double)pr->bytes_total : 0;
    if (frac > 1) frac = 1;
    double el = t - p->start, rate = el > 0 ? (double)pr->bytes_done / el : 0;
    char eta[16], text[160];
    eta_text((double)pr->bytes_done, (double)pr->bytes_total, el, eta);
    snprintf(text, sizeof text, "%3.0f%%  %zu/%zu tensors  %.1f MiB/s  ETA %s", 100 * frac,
             pr->tensors_done, pr->tensors_total, rate / 1048576.0, eta);
    draw_line(frac, text);
}

/* Whether a drawing is due: the first one, then at most ten a second. */
static bool due(progress_bar *p, double t) {
    if (p->drawn && t - p->last_draw < 0.1) return false;
    p->drawn = true;
    p->last_draw = t;
    return true;
}

void progress_count(progress_bar *p, const char *what, size_t done, size_t total) {
    double t = now();
    if (!p->enabled || !total || !due(p, t)) return;
    double el = t - p->start;
    char eta[16], text[160];
    eta_text((double)done, (double)total, el, eta);
    snprintf(text, sizeof text, "%zu/%zu %s  %.1f/s  ETA %s", done, total, what,
             el > 0 ? (double)done / el : 0.0, eta);
    draw_line((double)done / (double)total, text);
}

void progress_clear(progress_bar *p) {
    if (!p->drawn) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

void progress_update(void *user, const acem_progress *pr) {
    progress_bar *p = user;
    if (!p->enabled) return;
    if (pr->phase == ACEM_PHASE_DONE) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        return;
    }
    double t = now();
    if (due(p, t)) draw(p, pr, t);
}

/* VmHWM, not getrusage's ru_maxrss: Linux carries a parent's high-water mark into
 * ru_maxrss across fork and exec, so acem started from a large process (a Python script)
 * would report that process's peak as its own. VmHWM belongs to this image alone. */
unsigned long long cli_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024ULL;
}
