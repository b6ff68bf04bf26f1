/* evaluate.h — what `acem eval` computes, for the command and for the lab: examples
 * tokenised as FusionBench tokenises GLUE for GPT-2, classified in length-sorted batches,
 * and a language model's strided perplexity (docs/eval.md, "acem eval"). */
#ifndef ACEM_EVAL_EVALUATE_H
#define ACEM_EVAL_EVALUATE_H

#include "bpe.h"
#include "gpt2.h"

#include <stddef.h>
#include <stdint.h>

/* n examples' ids, one after another: example i at ids.v[start[i] .. start[i + 1]). */
typedef struct eval_rows {
    bpe_ids ids;
    size_t *start, n;
} eval_rows;

/* The pair rule: n1 + n2 ids cut to at most max, the longer sequence first (transformers'
 * longest_first); a single text (n2 = 0) keeps its first max. */
void eval_truncate_pair(size_t *n1, size_t *n2, size_t max);

/* Row i: text[i]'s ids followed by pair[i]'s (pair NULL: single texts), no separator, cut
 * to max together. On error (text that is not UTF-8, or no tokens at all) *bad is the
 * failing example and err says why. */
int eval_encode(bpe_tokenizer *t, const char *const *text, const char *const *pair, size_t n,
                size_t max, eval_rows *rows, size_t *bad, acem_error *err);
void eval_rows_free(eval_rows *rows);

/* Called after each batch or window with the items done and their total. */
typedef void (*eval_progress_fn)(void *user, size_t done, size_t total);

/* pred[i]: the argmax (first of equal maxima) of row i's pooled logits, the rows taken
 * shortest first in batches of up to batch rows, right-padded with pad_token_id (one row
 * at a time without one, as transformers requires). */
int eval_classify(gpt2_model *m, const eval_rows *rows, int batch, int *pred,
                  eval_progress_fn progress, void *user, acem_error *err);

/* Hugging Face's strided perplexity over ids[0 .. n) (n >= 2, 1 <= stride <= n_positions):
 * the summed negative log-likelihood in nats of the tokens scored, and their count. */
int eval_perplexity(gpt2_model *m, const int32_t *ids, size_t n, size_t stride,
                    eval_progress_fn progress, void *user, double *nll, size_t *tokens,
                    acem_error *err);

#endif
