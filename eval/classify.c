/* classify.c — a GPT-2 classifier over tokenised examples (classify.h). */
#include "classify.h"
#include "gpt2_internal.h"

#include <stdlib.h>
#include <string.h>

int token_rows_len(const token_rows *rows, size_t i) {
    return (int)(rows->start[i + 1] - rows->start[i]);
}

void token_rows_free(token_rows *rows) {
    free(rows->ids.v);
    free(rows->start);
    memset(rows, 0, sizeof *rows);
}

int token_rows_batch(const token_rows *rows, size_t i0, int B, int pad, int *buf, int *len) {
    int T = 0;
    for (int b = 0; b < B; b++) {
        len[b] = token_rows_len(rows, i0 + (size_t)b);
        T = len[b] > T ? len[b] : T;
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            buf[(size_t)b * T + t] =
                t < len[b] ? rows->ids.v[rows->start[i0 + (size_t)b] + (size_t)t] : pad;
    return T;
}

int gpt2_classify_batch(gpt2_model *m, const token_rows *rows, size_t i0, int B, int *buf, int *len,
                        int *pred, acem_error *err) {
    const gpt2_config *c = gpt2_config_of(m);
    int T = token_rows_batch(rows, i0, B, c->pad_token_id, buf, len);
    gpt2_batch batch = {B, T, buf, len, NULL};
    const float *logits;
    if (gpt2_forward(m, &batch, 0, &logits, err)) return -1;
    for (int b = 0; b < B; b++) {
        const float *l = logits + (size_t)b * c->num_labels;
        int best = 0;
        for (int k = 1; k < c->num_labels; k++)
            if (l[k] > l[best]) best = k;
        pred[b] = best;
    }
    return 0;
}

int gpt2_classify(gpt2_model *m, const token_rows *rows, int batch, int *pred, acem_error *err) {
    int B = gpt2_config_of(m)->pad_token_id < 0 ? 1 : batch, T = 0;
    for (size_t i = 0; i < rows->n; i++)
        T = token_rows_len(rows, i) > T ? token_rows_len(rows, i) : T;
    int *buf = malloc((size_t)B * (size_t)(T ? T : 1) * sizeof *buf);
    int *len = malloc((size_t)B * sizeof *len);
    int rc = buf && len ? 0 : gpt2_fail(err, "out of memory for a batch of %d rows", B);
    for (size_t i = 0; i < rows->n && !rc; i += (size_t)B) {
        int n = rows->n - i < (size_t)B ? (int)(rows->n - i) : B;
        rc = gpt2_classify_batch(m, rows, i, n, buf, len, pred + i, err);
    }
    free(buf), free(len);
    return rc;
}
