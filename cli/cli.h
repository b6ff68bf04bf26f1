/* cli.h — the acem command line: one file per subcommand, no merge logic here. */
#ifndef ACEM_CLI_H
#define ACEM_CLI_H

#include "acem.h"

#include <stdbool.h>

/* Exit statuses: 0 success, 1 failure, 2 usage error; 128 + signal when interrupted. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

int cmd_merge(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_example(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_lab(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Prints "acem: error: MSG" on one line to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* acem_warning_fn: prints "acem: warning: MSG" on one line to stderr. */
void cli_warning(void *user, const char *msg);
/* Makes s safe to print in place (text from the inputs): control characters become '?'
 * (newlines and tabs a space), so that no input drives the terminal or forges a line. */
char *cli_printable(char *s);

/* Progress bar on stderr (only when it is a terminal), as wide as the terminal and drawn
 * at the first update; the callback for acem_merge. */
typedef struct progress_bar {
    bool enabled, drawn;
    double start, last_draw;
} progress_bar;
void progress_init(progress_bar *p, bool quiet);
void progress_update(void *user, const acem_progress *p);
/* For a loop over items (acem eval's examples): "done/total what, rate, ETA" and a bar. */
void progress_count(progress_bar *p, const char *what, size_t done, size_t total);
/* Erases a drawn line. */
void progress_clear(progress_bar *p);

/* --dry-run: prints each line of the plan (user: an int, 0 at the start), then the summary. */
void cli_print_plan_line(void *user, const acem_plan_line *l);
void cli_print_dry_summary(const acem_merge_options *o, const acem_merge_summary *s);

/* Runs a merge with signal handling and prints the summary unless quiet. Options that
 * acem_check_options refuses are a usage error (EXIT_USAGE). */
int cli_run_merge(const acem_merge_options *o, bool quiet);

/* Peak resident set size of this process image (VmHWM), in bytes; 0 without /proc. */
unsigned long long cli_peak_rss(void);

#endif
