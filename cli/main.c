/* main.c — `acem COMMAND ...`: dispatch, errors, signals, the run summary. */
#include "cli.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *usage =
    "acem " ACEM_VERSION " - data-free model merging\n"
    "\n"
    "usage: acem COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  merge     merge fine-tuned experts of one base model (acem merge --help)\n"
    "  inspect   list the tensors and metadata of a checkpoint\n"
    "  stats     per-tensor delta norms, ACE's heterogeneity gamma, effective ranks\n"
    "  example   build a tiny base + 3 experts, merge them, print the summary\n"
    "  lab       a merging benchmark: train experts, merge by every method, evaluate\n"
    "  tokenize  the GPT-2 (byte-level BPE) token ids of each line of a text\n"
    "  eval      accuracy of a GPT-2 classifier on a data file, perplexity of a GPT-2 LM\n"
    "\n"
    "Run `acem COMMAND --help` for the options of a command.\n";

/* Names in messages come from the inputs: a tensor named "\e[2J..." must not drive the
 * terminal, nor a newline in one forge a line of output. */
char *cli_printable(char *s) {
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : '?';
    return s;
}

void cli_error(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "acem: error: %s\n", cli_printable(msg));
}

void cli_warning(void *user, const char *msg) {
    (void)user;
    char line[2048];
    snprintf(line, sizeof line, "%s", msg);
    fprintf(stderr, "acem: warning: %s\n", cli_printable(line));
}

/* acem's own OpenMP loops (deltas, conversions, combines) run between OpenBLAS calls on the
 * same cores. libgomp's default lets idle workers spin for milliseconds after every loop,
 * taking cores from the BLAS call that follows (5-10% of a GPT-2 ACE merge); passive
 * workers sleep at once. libgomp reads OMP_WAIT_POLICY in its constructor, before main(),
 * and nothing set earlier survives: libc's own initialiser resets environ to the one the
 * process started with (a setenv in a preinit_array function is lost). So when the user has
 * not chosen a policy, acem sets the passive one and executes itself again, once. If that
 * fails (no /proc), it goes on with libgomp's default. */
static void omp_passive_by_default(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || setenv("OMP_WAIT_POLICY", "passive", 0) != 0) return;
    execv("/proc/self/exe", argv);
}

static volatile sig_atomic_t g_signal;
/* The first SIGINT/SIGTERM/SIGHUP cancels the merge cleanly at the next chunk; a second one
 * ends the process at once (a long decomposition does not look at the flag), leaving at
 * most a temporary that the next run removes, never anything at the output path. SIGHUP is
 * a dropped SSH session or a closed terminal: as much a request to stop as the others. */
static void on_signal(int sig) {
    if (g_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    g_signal = sig;
}

static void catch_signals(void) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        sigaction(sigs[i], &sa, NULL);
}

int cli_run_merge(const acem_merge_options *opts, bool quiet) {
    acem_error err = {{0}};
    if (acem_check_options(opts, &err)) {
        cli_error("%s", err.msg);
        return EXIT_USAGE;
    }
    acem_merge_options o = *opts;
    progress_bar bar;
    progress_init(&bar, quiet);
    o.progress = progress_update;
    o.progress_user = &bar;
    o.warning = cli_warning;
    o.cancel = &g_signal;
    int plan_lines = 0;
    if (o.dry_run) {
        o.plan = cli_print_plan_line;
        o.plan_user = &plan_lines;
    }
    catch_signals();

    acem_merge_summary s;
    int rc = acem_merge(&o, &s, &err);
    if (bar.enabled) fprintf(stderr, "\r\033[K");
    if (rc) {
        if (g_signal) {
            cli_error("interrupted by signal %d; nothing was written to %s", (int)g_signal, o.out);
            return 128 + g_signal;
        }
        cli_error("%s", err.msg);
        return EXIT_FAIL;
    }
    if (o.dry_run) {
        cli_print_dry_summary(&o, &s);
        return EXIT_OK;
    }
    if (!quiet) {
        char rb[32], wb[32], peak[32];
        acem_format_bytes(s.bytes_read, rb, sizeof rb);
        acem_format_bytes(s.bytes_written, wb, sizeof wb);
        unsigned long long rss = cli_peak_rss();
        if (rss)
            acem_format_bytes(rss, peak, sizeof peak);
        else
            snprintf(peak, sizeof peak, "unknown (no /proc)");
        printf("acem: merged %s with %s (%s)\n", s.merged, s.method, s.params);
        printf("  tensors    %zu merged, %zu copied from the base\n", s.tensors_merged,
               s.tensors_copied);
        printf("  output     %s (%zu weight file%s, %s on disk)\n", o.out, s.shards,
               s.shards == 1 ? "" : "s", wb);
        printf("  read       %s in %.2f s (%.1f MiB/s)\n", rb, s.wall_seconds,
               s.wall_seconds > 0 ? (double)s.bytes_read / 1048576.0 / s.wall_seconds : 0.0);
        printf("  peak RSS   %s\n", peak);
        if (strcmp(s.covariance_axis, "none") != 0)
            printf("  covariance over the %s axis\n", s.covariance_axis);
        if (s.gram_fallbacks)
            printf("  regmean    %zu 2-D tensor%s merged as the average (no Gram matrices)\n",
                   s.gram_fallbacks, s.gram_fallbacks == 1 ? "" : "s");
        if (s.input_warnings)
            printf("  warnings   %zu about the inputs (above)\n", s.input_warnings);
        if (s.warnings)
            printf("  warnings   %zu tensor%s, first: %s\n", s.warnings, s.warnings == 1 ? "" : "s",
                   s.first_warning);
    }
    return EXIT_OK;
}

int main(int argc, char **argv) {
    omp_passive_by_default(argv);
    /* Past RLIMIT_FSIZE a write must fail with EFBIG (a clean error), not kill us. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("acem %s\n", ACEM_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "merge")) return cmd_merge(argc - 1, argv + 1);
    if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "example")) return cmd_example(argc - 1, argv + 1);
    if (!strcmp(argv[1], "stats")) return cmd_stats(argc - 1, argv + 1);
    if (!strcmp(argv[1], "lab")) return cmd_lab(argc - 1, argv + 1);
    if (!strcmp(argv[1], "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 1, argv + 1);
    cli_error("unknown command \"%s\" (try acem --help)", argv[1]);
    return EXIT_USAGE;
}
