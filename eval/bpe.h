/* bpe.h — GPT-2's byte-level BPE tokenizer (docs/eval.md, "Tokenizer").
 *
 * Loaded from a Hugging Face tokenizer directory: tokenizer.json (model BPE, ByteLevel
 * pre-tokenizer) when it is there, as AutoTokenizer prefers the fast tokenizer, else
 * vocab.json + merges.txt. Encoding is OpenAI's encoder.py (openai/gpt-2 src/encoder.py):
 * bytes_to_unicode, the pre-tokenisation regex (through PCRE2 in UTF + UCP mode), and the
 * lowest-ranked pair merged everywhere in a word, pass after pass; added tokens such as
 * <|endoftext|> are cut out of the text first, as Hugging Face's AddedVocabulary does. */
#ifndef ACEM_EVAL_BPE_H
#define ACEM_EVAL_BPE_H

#include "acem.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bpe_tokenizer bpe_tokenizer;

/* A growing array of token ids. */
typedef struct bpe_ids {
    int32_t *v;
    size_t n, cap;
} bpe_ids;

/* Loads the tokenizer of directory dir; -1 with one sentence naming the file on error. */
int bpe_load(const char *dir, bpe_tokenizer **out, acem_error *err);
void bpe_free(bpe_tokenizer *t);

/* Appends the ids of text[0..len) to ids. A tokenizer keeps a word cache and work arrays:
 * one thread at a time per bpe_tokenizer. The text must be UTF-8 (as Python's str and
 * Rust's &str, which GPT-2's and Hugging Face's encoders take, must be): otherwise -1
 * with err naming the byte offset of the first invalid sequence. NUL bytes are text. */
int bpe_encode(bpe_tokenizer *t, const char *text, size_t len, bpe_ids *ids, acem_error *err);

/* A byte-only vocabulary: GPT-2's 256 byte tokens (its bytes_to_unicode alphabet, in
 * GPT-2's own id order, '!' = 0) and <|endoftext|> at BPE_BYTE_EOT, written into dir as
 * vocab.json and an empty merges.txt, so that any GPT-2 tokenizer reads it. */
#define BPE_BYTE_EOT 256
int bpe_write_byte_vocab(const char *dir, acem_error *err);
/* The id of byte's token in that vocabulary (and in GPT-2's own). */
int bpe_byte_token_id(unsigned char byte);

#endif
