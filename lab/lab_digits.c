/* lab_digits.c — the `digits` suite: the 1,797 8x8 handwritten digits (UCI, as shipped in
 * scikit-learn's digits.csv.gz), split once into train / validation / test, and turned into
 * eight tasks by fixed input transforms. The transforms do not depend on --seed (they
 * define the tasks); the split and everything learnt do. */
#include "lab.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SIDE       8
#define PIXELS     (SIDE * SIDE)
#define CLASSES    10
#define MAX_IMAGES 100000
#define N_TEST     500
#define N_VAL      300

typedef struct image {
    double px[PIXELS]; /* in [0, 1] */
    int label;
} image;

/* Reads "p0,...,p63,label" lines: pixels 0..16, label 0..9, nothing else. */
static int read_line(const char *path, long line_no, char *line, image *img, acem_error *err) {
    char *p = line;
    for (int i = 0; i <= PIXELS; i++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        int max = i < PIXELS ? 16 : CLASSES - 1;
        if (end == p || errno || v < 0 || v > max) {
            snprintf(err->msg, sizeof err->msg, "%s: line %ld: field %d is not an integer in 0..%d",
                     path, line_no, i + 1, max);
            return -1;
        }
        if (i < PIXELS)
            img->px[i] = (double)v / 16.0;
        else
            img->label = (int)v;
        char want = i < PIXELS ? ',' : '\0';
        if (*end == '\n' || *end == '\r') *end = '\0';
        if (*end != want) {
            snprintf(err->msg, sizeof err->msg, "%s: line %ld: expected %d comma-separated fields",
                     path, line_no, PIXELS + 1);
            return -1;
        }
        p = end + 1;
    }
    return 0;
}

static int load_digits(const char *path, image **out, int *n_out, acem_error *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err->msg, sizeof err->msg,
                 "%s: cannot open the digits data (%s); install Debian's python3-sklearn "
                 "(apt-get install python3-sklearn), or pass --data PATH to a copy of "
                 "scikit-learn's sklearn/datasets/data/digits.csv.gz",
                 path, strerror(errno ? errno : ENOENT));
        return -1;
    }
    image *img = NULL;
    int n = 0, cap = 0, rc = 0;
    char line[1024];
    while (!rc && gzgets(f, line, sizeof line)) {
        if (!strchr(line, '\n') && !gzeof(f)) {
            snprintf(err->msg, sizeof err->msg, "%s: line %d is too long", path, n + 1);
            rc = -1;
        } else if (n == MAX_IMAGES) {
            snprintf(err->msg, sizeof err->msg, "%s: more than %d images", path, MAX_IMAGES);
            rc = -1;
        } else if (n == cap) {
            cap = cap ? 2 * cap : 2048;
            image *grown = realloc(img, (size_t)cap * sizeof *img);
            if (!grown) snprintf(err->msg, sizeof err->msg, "lab: out of memory reading %s", path);
            rc = grown ? 0 : -1;
            img = grown ? grown : img;
        }
        if (!rc) rc = read_line(path, n + 1, line, &img[n], err);
        n += !rc;
    }
    int gz_err = 0;
    const char *gz_msg = gzerror(f, &gz_err);
    if (!rc && gz_err != Z_OK && gz_err != Z_STREAM_END) {
        snprintf(err->msg, sizeof err->msg, "%s: %s", path, gz_msg);
        rc = -1;
    }
    gzclose(f);
    if (!rc && n < N_TEST + N_VAL + 100) {
        snprintf(err->msg, sizeof err->msg, "%s: %d images, need at least %d", path, n,
                 N_TEST + N_VAL + 100);
        rc = -1;
    }
    if (rc) {
        free(img);
        return -1;
    }
    *out = img;
    *n_out = n;
    return 0;
}

/* ---- the eight transforms ------------------------------------------------------- */

typedef void (*transform_fn)(const double *in, double *out, int index);

static void identity(const double *in, double *out, int index) {
    (void)index;
    memcpy(out, in, PIXELS * sizeof *in);
}
static void rotate(const double *in, double *out, int index) { /* 90 degrees clockwise */
    (void)index;
    for (int r = 0; r < SIDE; r++)
        for (int c = 0; c < SIDE; c++)
            out[r * SIDE + c] = in[(SIDE - 1 - c) * SIDE + r];
}
static void mirror(const double *in, double *out, int index) { /* left-right */
    (void)index;
    for (int r = 0; r < SIDE; r++)
        for (int c = 0; c < SIDE; c++)
            out[r * SIDE + c] = in[r * SIDE + SIDE - 1 - c];
}
static void invert(const double *in, double *out, int index) {
    (void)index;
    for (int i = 0; i < PIXELS; i++)
        out[i] = 1.0 - in[i];
}
static void permute(const double *in, double *out, int index) { /* one fixed permutation */
    (void)index;
    static int perm[PIXELS];
    static int ready;
    if (!ready) {
        for (int i = 0; i < PIXELS; i++)
            perm[i] = i;
        lab_rng rng = lab_rng_for(0, "digits-permutation", 0);
        lab_shuffle(&rng, perm, PIXELS);
        ready = 1;
    }
    for (int i = 0; i < PIXELS; i++)
        out[i] = in[perm[i]];
}
static void shift(const double *in, double *out, int index) { /* one down, two right */
    (void)index;
    for (int r = 0; r < SIDE; r++)
        for (int c = 0; c < SIDE; c++)
            out[r * SIDE + c] = r >= 1 && c >= 2 ? in[(r - 1) * SIDE + c - 2] : 0.0;
}
static void noise(const double *in, double *out, int index) { /* fixed per image */
    lab_rng rng = lab_rng_for(0, "digits-noise", index);
    for (int i = 0; i < PIXELS; i++)
        out[i] = in[i] + 0.3 * lab_rng_normal(&rng);
}
static void blur(const double *in, double *out, int index) { /* 3x3 box, zero padding */
    (void)index;
    for (int r = 0; r < SIDE; r++)
        for (int c = 0; c < SIDE; c++) {
            double sum = 0.0;
            for (int dr = -1; dr <= 1; dr++)
                for (int dc = -1; dc <= 1; dc++) {
                    int rr = r + dr, cc = c + dc;
                    if (rr >= 0 && rr < SIDE && cc >= 0 && cc < SIDE) sum += in[rr * SIDE + cc];
                }
            out[r * SIDE + c] = sum / 9.0;
        }
}

static const struct {
    const char *name, *about;
    transform_fn fn;
} transforms[] = {
    {"identity", "the digits as they are", identity},
    {"rotate", "rotated 90 degrees clockwise", rotate},
    {"mirror", "mirrored left-right", mirror},
    {"invert", "inverted intensities (1 - x)", invert},
    {"permute", "pixels in one fixed random order", permute},
    {"shift", "shifted one pixel down and two right", shift},
    {"noise", "Gaussian noise, sd 0.3, fixed per image", noise},
    {"blur", "3x3 box blur", blur},
};
#define N_TRANSFORMS (int)(sizeof transforms / sizeof *transforms)

/* Set rows = images[idx[0..n)] through transform t. */
static int fill(lab_set *set, const image *images, const int *idx, int n, int t, acem_error *err) {
    if (lab_set_alloc(set, n, PIXELS, err)) return -1;
    for (int r = 0; r < n; r++) {
        transforms[t].fn(images[idx[r]].px, set->x + (size_t)r * PIXELS, idx[r]);
        set->y[r] = images[idx[r]].label;
    }
    return 0;
}

int lab_digits_suite(lab_suite *s, const char *path, bool quick, uint64_t seed, acem_error *err) {
    memset(s, 0, sizeof *s);
    image *images;
    int n;
    if (load_digits(path ? path : LAB_DIGITS_DEFAULT, &images, &n, err)) return -1;
    snprintf(s->name, sizeof s->name, "digits");
    s->T = N_TRANSFORMS;
    s->d = PIXELS;
    s->sizes = lab_sizes_for(quick);
    int *idx = malloc((size_t)n * sizeof *idx), rc = idx ? 0 : -1;
    if (!idx) snprintf(err->msg, sizeof err->msg, "lab: out of memory");
    for (int i = 0; !rc && i < n; i++)
        idx[i] = i;
    lab_rng rng = lab_rng_for(seed, "digits-split", 0);
    if (!rc) lab_shuffle(&rng, idx, n);
    int n_train = n - N_TEST - N_VAL;
    for (int t = 0; !rc && t < N_TRANSFORMS; t++) {
        lab_task *task = &s->task[t];
        snprintf(task->name, sizeof task->name, "%s", transforms[t].name);
        snprintf(task->about, sizeof task->about, "%s", transforms[t].about);
        task->classes = CLASSES;
        rc = fill(&task->train, images, idx, n_train, t, err) ||
             fill(&task->val, images, idx + n_train, N_VAL, t, err) ||
             fill(&task->test, images, idx + n_train + N_VAL, N_TEST, t, err);
    }
    free(idx);
    free(images);
    if (rc) {
        lab_suite_free(s);
        return -1;
    }
    lab_assign_strengths(s, seed);
    return 0;
}
