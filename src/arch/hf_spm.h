/* hf_spm.h — SentencePiece's tokenizer.model read as llama.cpp's converter reads it
 * (convert_hf_to_gguf.py conversion/base.py _create_vocab_sentencepiece): each piece's text,
 * score and gguf token type. */
#ifndef ACEM_HF_SPM_H
#define ACEM_HF_SPM_H

#include "../internal.h"

typedef struct spm_piece {
    const char *text; /* UTF-8, borrowed from the parsed model */
    float score;
    int type; /* gguf-py's TokenType: NORMAL 1, UNKNOWN 2, CONTROL 3, UNUSED 5, BYTE 6 */
} spm_piece;

typedef struct spm_model {
    void *proto; /* the protobuf-c message owning the texts */
    spm_piece *pieces;
    size_t n;
} spm_model;

/* 0 with m filled, or -1 with one line naming path for a file that is not a SentencePiece
 * model of the BPE or unigram kind. */
int spm_model_read(spm_model *m, const char *path, acem_error *err);
void spm_model_free(spm_model *m);

#endif
