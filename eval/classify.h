/* classify.h — a GPT-2 classifier's predictions over tokenised examples, in right-padded
 * batches: the accuracy loop of `acem eval` and of `acem lab --suite text`. */
#ifndef ACEM_EVAL_CLASSIFY_H
#define ACEM_EVAL_CLASSIFY_H

#include "bpe.h"
#include "gpt2.h"

/* n examples: example i is ids.v[start[i] .. start[i + 1]) (start has n + 1 entries). */
typedef struct token_rows {
    bpe_ids ids;
    size_t *start;
    size_t n;
} token_rows;

int token_rows_len(const token_rows *rows, size_t i);
void token_rows_free(token_rows *rows);

/* The rows [i0, i0 + B) into buf as one batch [B, T] right-padded with pad, their lengths
 * into len; returns T, the longest of them. */
int token_rows_batch(const token_rows *rows, size_t i0, int B, int pad, int *buf, int *len);
/* The rows [i0, i0 + B) as one batch right-padded with pad_token_id, classified: pred[b]
 * the argmax of row i0 + b's logits (the first of equal maxima, as torch.argmax). buf
 * holds B x (the longest row) ids, len B. A model without a pad token must take B = 1. */
int gpt2_classify_batch(gpt2_model *m, const token_rows *rows, size_t i0, int B, int *buf, int *len,
                        int *pred, acem_error *err);
/* Every row classified, in batches of up to `batch` rows (1 without a pad token). */
int gpt2_classify(gpt2_model *m, const token_rows *rows, int batch, int *pred, acem_error *err);

#endif
