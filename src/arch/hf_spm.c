/* hf_spm.c — tokenizer.model, SentencePiece's ModelProto, parsed by protobuf-c from acem's own
 * subset of the schema (sentencepiece.proto: pieces = 1 {piece 1, score 2, type 3},
 * trainer_spec = 2 {model_type 3}). protobuf-c rather than a hand-written wire reader: the file
 * is untrusted, and a Debian-packaged parser already refuses truncated varints, wrong wire
 * types and lengths past the end; acem checks only what the schema cannot say (UTF-8, enum
 * ranges, the model type). The token types follow _create_vocab_sentencepiece. */
#include "hf_spm.h"

#include "../formats/formats.h"
#include "sentencepiece.pb-c.h"

#include <stdlib.h>
#include <string.h>

#define SPM_MAX_BYTES (64ULL << 20) /* Llama 2's is 0.5 MB, Gemma's 256k vocabulary 4 MB */

typedef AcemSpm__ModelProto model_proto;
typedef AcemSpm__ModelProto__SentencePiece piece_proto;

/* The converter asks IsUnknown, IsControl, IsUnused, IsByte in that order; anything else,
 * USER_DEFINED pieces included, is NORMAL. gguf-py's TokenType has the same numbers. */
static int token_type(int piece_type) {
    switch (piece_type) {
    case ACEM_SPM__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNKNOWN:
    case ACEM_SPM__MODEL_PROTO__SENTENCE_PIECE__TYPE__CONTROL:
    case ACEM_SPM__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNUSED:
    case ACEM_SPM__MODEL_PROTO__SENTENCE_PIECE__TYPE__BYTE: return piece_type;
    default: return 1;
    }
}

static int check_piece(const piece_proto *p, size_t i, const char *path, acem_error *err) {
    if (p->type < 1 || p->type > 6)
        return acem_fail(err, "%s: piece %zu has type %d, outside SentencePiece's 1..6", path, i,
                         (int)p->type);
    if (!p->piece || !*p->piece) return acem_fail(err, "%s: piece %zu is empty", path, i);
    if (!acem_utf8_valid((const unsigned char *)p->piece, strlen(p->piece)))
        return acem_fail(err, "%s: piece %zu is not UTF-8", path, i);
    return 0;
}

/* llama.cpp's "llama" tokenizer merges pieces by score, as SentencePiece's BPE and unigram
 * models are meant to be read; a WORD or CHAR model would tokenise differently there. */
static int check_model_type(const model_proto *mp, const char *path, acem_error *err) {
    int t = mp->trainer_spec ? (int)mp->trainer_spec->model_type
                             : ACEM_SPM__MODEL_PROTO__TRAINER_SPEC__MODEL_TYPE__UNIGRAM;
    if (t == ACEM_SPM__MODEL_PROTO__TRAINER_SPEC__MODEL_TYPE__UNIGRAM ||
        t == ACEM_SPM__MODEL_PROTO__TRAINER_SPEC__MODEL_TYPE__BPE)
        return 0;
    return acem_fail(err,
                     "%s: SentencePiece model type %d (word or char) is not one llama.cpp's "
                     "\"llama\" tokenizer reads (unigram 1 or BPE 2)",
                     path, t);
}

int spm_model_read(spm_model *m, const char *path, acem_error *err) {
    memset(m, 0, sizeof *m);
    size_t len = 0;
    unsigned char *buf = (unsigned char *)acem_read_small_file(path, SPM_MAX_BYTES, &len, err);
    if (!buf) return -1;
    model_proto *mp = acem_spm__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!mp)
        return acem_fail(err,
                         "%s: not a SentencePiece model (protobuf: truncated, a wrong wire type "
                         "or a length past the end)",
                         path);
    m->proto = mp;
    if (!mp->n_pieces) {
        spm_model_free(m);
        return acem_fail(err, "%s: a SentencePiece model without pieces", path);
    }
    if (check_model_type(mp, path, err) ||
        !(m->pieces = acem_alloc(mp->n_pieces, sizeof *m->pieces, "the pieces", err))) {
        spm_model_free(m);
        return -1;
    }
    for (size_t i = 0; i < mp->n_pieces; i++) {
        const piece_proto *p = mp->pieces[i];
        if (check_piece(p, i, path, err)) {
            spm_model_free(m);
            return -1;
        }
        m->pieces[i] = (spm_piece){p->piece, p->score, token_type((int)p->type)};
    }
    m->n = mp->n_pieces;
    return 0;
}

void spm_model_free(spm_model *m) {
    if (m->proto) acem_spm__model_proto__free_unpacked(m->proto, NULL);
    free(m->pieces);
    memset(m, 0, sizeof *m);
}
