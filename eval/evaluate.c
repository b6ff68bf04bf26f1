/* evaluate.c — the computations of `acem eval` (evaluate.h; docs/eval.md, "acem eval"). */
#include "evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int nomem(acem_error *err) {
    snprintf(err->msg, sizeof err->msg, "out of memory");
    return -1;
}

/* ---- tokenising examples --------------------------------------------------------- */

/* The pair rule of FusionBench's GLUE for GPT-2 (fusion_bench/dataset/gpt2_glue.py:
 * tokenizer(s1, s2, truncation=True)): GPT-2's tokenizer joins the two id lists with no
 * separator, and truncation is transformers' truncate_sequences (tokenization_utils_base.py)
 * with strategy longest_first, right side: of the tokens to remove, the excess of the longer
 * sequence goes first, then the rest is split evenly, the first sequence taking the floor
 * half. A single text (n2 = 0) keeps its first max tokens. */
void eval_truncate_pair(size_t *n1, size_t *n2, size_t max) {
    if (*n1 + *n2 <= max) return;
    size_t remove = *n1 + *n2 - max, diff = *n1 > *n2 ? *n1 - *n2 : *n2 - *n1;
    size_t first = diff < remove ? diff : remove, second = remove - first;
    size_t cut1, cut2;
    if (*n1 > *n2)
        cut1 = first + second / 2, cut2 = second - second / 2;
    else
        cut1 = second / 2, cut2 = first + second - second / 2;
    *n1 -= cut1, *n2 -= cut2;
}

/* Appends n ids to a (grown as bpe_encode grows it). */
static int append_ids(bpe_ids *a, const int32_t *v, size_t n) {
    if (!n) return 0;
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < a->n + n)
            cap *= 2;
        int32_t *p = realloc(a->v, cap * sizeof *p);
        if (!p) return -1;
        a->v = p, a->cap = cap;
    }
    memcpy(a->v + a->n, v, n * sizeof *v);
    a->n += n;
    return 0;
}

/* Example i's ids appended to rows: the text's, then the pair's, cut to max together. */
static int encode_example(bpe_tokenizer *tok, const char *const text[2], size_t max, bpe_ids s[2],
                          eval_rows *rows, acem_error *err) {
    s[0].n = s[1].n = 0;
    for (int k = 0; k < 2 && text[k]; k++)
        if (bpe_encode(tok, text[k], strlen(text[k]), &s[k], err)) return -1;
    size_t n1 = s[0].n, n2 = s[1].n;
    if (n1 + n2 == 0) {
        snprintf(err->msg, sizeof err->msg, "the text has no tokens");
        return -1;
    }
    eval_truncate_pair(&n1, &n2, max);
    if (append_ids(&rows->ids, s[0].v, n1) || append_ids(&rows->ids, s[1].v, n2)) return nomem(err);
    return 0;
}

int eval_encode(bpe_tokenizer *t, const char *const *text, const char *const *pair, size_t n,
                size_t max, eval_rows *rows, size_t *bad, acem_error *err) {
    memset(rows, 0, sizeof *rows);
    if (!(rows->start = malloc((n + 1) * sizeof *rows->start))) return *bad = 0, nomem(err);
    rows->n = n;
    bpe_ids s[2] = {{0}, {0}};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rows->start[i] = rows->ids.n;
        const char *texts[2] = {text[i], pair ? pair[i] : NULL};
        if ((rc = encode_example(t, texts, max, s, rows, err))) *bad = i;
    }
    rows->start[n] = rows->ids.n;
    free(s[0].v), free(s[1].v);
    return rc;
}

void eval_rows_free(eval_rows *rows) {
    free(rows->ids.v);
    free(rows->start);
    memset(rows, 0, sizeof *rows);
}

/* ---- classification -------------------------------------------------------------- */

static int row_len(const eval_rows *rows, size_t i) {
    return (int)(rows->start[i + 1] - rows->start[i]);
}

/* The rows order[0 .. B) as one batch right-padded with pad_token_id (a model without one
 * gets batches of one row, never padded), classified; predictions into pred[order[b]]. */
static int classify_batch(gpt2_model *m, const eval_rows *rows, const size_t *order, int B,
                          int *buf, int *len, int *pred, acem_error *err) {
    const gpt2_config *c = gpt2_config_of(m);
    int T = 0;
    for (int b = 0; b < B; b++) {
        len[b] = row_len(rows, order[b]);
        T = len[b] > T ? len[b] : T;
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            buf[(size_t)b * T + t] =
                t < len[b] ? rows->ids.v[rows->start[order[b]] + (size_t)t] : c->pad_token_id;
    gpt2_batch batch = {B, T, buf, len, NULL};
    const float *logits;
    if (gpt2_forward(m, &batch, 0, &logits, err)) return -1;
    for (int b = 0; b < B; b++) { /* argmax, the first of equal maxima (torch.argmax) */
        const float *l = logits + (size_t)b * c->num_labels;
        int best = 0;
        for (int k = 1; k < c->num_labels; k++)
            if (l[k] > l[best]) best = k;
        pred[order[b]] = best;
    }
    return 0;
}

/* Examples by length, then by position: batches of similar lengths waste little on padding
 * (GLUE's sentences run from 3 to over 100 tokens), and the order is the same every run. */
typedef struct by_len {
    int len;
    size_t i;
} by_len;
static int cmp_len(const void *a, const void *b) {
    const by_len *x = a, *y = b;
    return x->len != y->len ? (x->len > y->len) - (x->len < y->len) : (x->i > y->i) - (x->i < y->i);
}

/* The rows' indexes, shortest first; *T the longest length. */
static size_t *length_order(const eval_rows *rows, int *T) {
    size_t n = rows->n;
    by_len *k = malloc(n * sizeof *k);
    size_t *order = malloc(n * sizeof *order);
    *T = 0;
    for (size_t i = 0; k && order && i < n; i++) {
        k[i] = (by_len){row_len(rows, i), i};
        *T = k[i].len > *T ? k[i].len : *T;
    }
    if (k && order) qsort(k, n, sizeof *k, cmp_len);
    for (size_t i = 0; k && order && i < n; i++)
        order[i] = k[i].i;
    if (!k) free(order), order = NULL;
    free(k);
    return order;
}

int eval_classify(gpt2_model *m, const eval_rows *rows, int batch, int *pred,
                  eval_progress_fn progress, void *user, acem_error *err) {
    const gpt2_config *c = gpt2_config_of(m);
    if (c->num_labels < 1) {
        snprintf(err->msg, sizeof err->msg,
                 "the model is a language model (no score.weight), not a classifier");
        return -1;
    }
    int B = c->pad_token_id < 0 || batch < 1 ? 1 : batch, T;
    size_t *order = length_order(rows, &T);
    int *buf = order ? malloc((size_t)B * (size_t)T * sizeof *buf) : NULL;
    int *len = malloc((size_t)B * sizeof *len);
    int rc = order && buf && len ? 0 : nomem(err);
    for (size_t i = 0; i < rows->n && !rc; i += (size_t)B) {
        int n = rows->n - i < (size_t)B ? (int)(rows->n - i) : B;
        rc = classify_batch(m, rows, order + i, n, buf, len, pred, err);
        if (!rc && progress) progress(user, i + (size_t)n, rows->n);
    }
    free(order), free(buf), free(len);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------------ */

/* -log softmax(l)[y] in double. */
static double token_nll(const float *l, int V, int y) {
    double mx = l[0], s = 0;
    for (int v = 1; v < V; v++)
        mx = l[v] > mx ? l[v] : mx;
    for (int v = 0; v < V; v++)
        s += exp((double)l[v] - mx);
    return log(s) + mx - (double)l[y];
}

/* Hugging Face's perplexity guide ("Perplexity of fixed-length models"): windows
 * [begin, begin + P) for begin = 0, stride, 2 stride, ... until one reaches the end; in each
 * only the tokens past the previous window's end are scored (target -100 before them), each
 * predicted from the positions before it in the window. A window's first token has nothing
 * before it and is not scored (with stride < P that is only the text's first). */
int eval_perplexity(gpt2_model *m, const int32_t *ids, size_t n, size_t stride,
                    eval_progress_fn progress, void *user, double *nll, size_t *tokens,
                    acem_error *err) {
    const gpt2_config *c = gpt2_config_of(m);
    size_t P = (size_t)c->n_positions, prev_end = 0;
    *nll = 0, *tokens = 0;
    if (c->num_labels || n < 2 || stride < 1 || stride > P) {
        snprintf(err->msg, sizeof err->msg,
                 c->num_labels
                     ? "a classifier (score.weight), not a language model"
                     : "perplexity needs 2 tokens or more and a stride in 1..n_positions");
        return -1;
    }
    for (size_t begin = 0;; begin += stride) {
        size_t end = begin + P < n ? begin + P : n, T = end - begin;
        int len = (int)T;
        gpt2_batch b = {1, (int)T, ids + begin, &len, NULL};
        const float *logits;
        if (gpt2_forward(m, &b, 0, &logits, err)) return -1;
        for (size_t t = prev_end > begin ? prev_end - begin : 1; t < T; t++, ++*tokens)
            *nll +=
                token_nll(logits + (t - 1) * (size_t)c->vocab_size, c->vocab_size, ids[begin + t]);
        prev_end = end;
        if (progress) progress(user, end, n);
        if (end == n) return 0;
    }
}
