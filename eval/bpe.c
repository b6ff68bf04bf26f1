/* bpe.c — GPT-2's byte-level BPE: loading the Hugging Face files, pre-tokenisation through
 * PCRE2, the merge loop of openai/gpt-2 src/encoder.py, added tokens as Hugging Face
 * tokenizers' AddedVocabulary matches them. Rules and choices: docs/eval.md, "Tokenizer". */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe.h"

#include "textfile.h"

#include "formats/formats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tokenizer files are megabytes (GPT-2's tokenizer.json: 1.4 MB); this bounds what an
 * untrusted directory can make us read. */
#define BPE_MAX_FILE (512ULL << 20)
/* The word cache (encoder.py's self.cache) is dropped whole when it grows past these. */
#define CACHE_MAX_WORDS (1u << 17)
#define CACHE_MAX_IDS   (1u << 22)
#define CACHE_MAX_WORD  256

/* encoder.py's pre-tokenisation pattern, verbatim. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- hash maps ------------------------------------------------------------------------ */

/* Byte strings to 64-bit values, open addressing; keys live in one arena. */
typedef struct smap_entry {
    uint64_t hash, val;
    size_t off, len;
} smap_entry;
typedef struct smap {
    uint32_t *slots; /* entry index + 1, 0 when free */
    size_t cap;      /* a power of two, at least twice n */
    smap_entry *e;
    size_t n, ecap;
    char *keys;
    size_t klen, kcap;
} smap;

/* FNV-1a over a counted string, finished by splitmix64 so that the low bits (the slot)
 * depend on every byte. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return acem_mix64(h);
}

static size_t smap_slot(const smap *m, const char *k, size_t n, uint64_t h) {
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        uint32_t s = m->slots[i];
        if (!s) return i;
        const smap_entry *e = &m->e[s - 1];
        if (e->hash == h && e->len == n && !memcmp(m->keys + e->off, k, n)) return i;
    }
}

static bool smap_get(const smap *m, const char *k, size_t n, uint64_t *val) {
    if (!m->cap) return false;
    uint32_t s = m->slots[smap_slot(m, k, n, hash_bytes(k, n))];
    if (s) *val = m->e[s - 1].val;
    return s != 0;
}

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static bool smap_rehash(smap *m, size_t cap) {
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < m->n; i++) {
        const smap_entry *e = &m->e[i];
        m->slots[smap_slot(m, m->keys + e->off, e->len, e->hash)] = (uint32_t)(i + 1);
    }
    return true;
}

/* 0 when added, 1 when the key was there already (kept), -1 out of memory. */
static int smap_put(smap *m, const char *k, size_t n, uint64_t val) {
    if ((m->n + 1) * 2 > m->cap && !smap_rehash(m, m->cap ? m->cap * 2 : 64)) return -1;
    uint64_t h = hash_bytes(k, n);
    size_t i = smap_slot(m, k, n, h);
    if (m->slots[i]) return 1;
    if (m->n >= UINT32_MAX - 1 || !grow((void **)&m->e, &m->ecap, m->n + 1, sizeof *m->e) ||
        !grow((void **)&m->keys, &m->kcap, m->klen + n + 1, 1))
        return -1;
    memcpy(m->keys + m->klen, k, n);
    m->e[m->n] = (smap_entry){h, val, m->klen, n};
    m->klen += n;
    m->slots[i] = (uint32_t)++m->n;
    return 0;
}

static void smap_clear(smap *m) {
    if (m->cap) memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->n = m->klen = 0;
}

static void smap_free(smap *m) {
    free(m->slots);
    free(m->e);
    free(m->keys);
}

/* Merge ranks: the pair (left id, right id) to its rank and the id of the merged token
 * (encoder.py's bpe_ranks, keyed by ids: vocabulary strings and ids are one-to-one). */
typedef struct pair_slot {
    uint64_t key; /* left << 32 | right; PAIR_FREE when free (ids are below 2^31) */
    uint32_t rank;
    int32_t id;
} pair_slot;
#define PAIR_FREE UINT64_MAX
typedef struct pmap {
    pair_slot *s;
    size_t cap, n;
} pmap;

static pair_slot *pmap_slot(const pmap *m, uint64_t key) {
    for (size_t i = acem_mix64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1))
        if (m->s[i].key == key || m->s[i].key == PAIR_FREE) return &m->s[i];
}

static const pair_slot *pmap_get(const pmap *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    const pair_slot *s = pmap_slot(m, (uint64_t)a << 32 | (uint32_t)b);
    return s->key == PAIR_FREE ? NULL : s;
}

/* 0 when added, 1 when the pair was there already, -1 out of memory. */
static int pmap_put(pmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) {
        pmap old = *m;
        m->cap = old.cap ? old.cap * 2 : 64;
        if (!(m->s = malloc(m->cap * sizeof *m->s))) return -1;
        for (size_t i = 0; i < m->cap; i++)
            m->s[i].key = PAIR_FREE;
        for (size_t i = 0; i < old.cap; i++)
            if (old.s[i].key != PAIR_FREE) *pmap_slot(m, old.s[i].key) = old.s[i];
        free(old.s);
    }
    pair_slot *s = pmap_slot(m, (uint64_t)a << 32 | (uint32_t)b);
    if (s->key != PAIR_FREE) return 1;
    *s = (pair_slot){(uint64_t)a << 32 | (uint32_t)b, rank, id};
    m->n++;
    return 0;
}

/* ---- the tokenizer -------------------------------------------------------------------- */

typedef struct added_token {
    char *text;
    size_t len;
    int32_t id;
} added_token;

/* One heap entry of the merge loop: the pair starting at symbol pos, of this rank. */
typedef struct merge_cand {
    uint32_t rank, pos;
} merge_cand;

struct bpe_tokenizer {
    smap vocab;            /* token as the files spell it (bytes_to_unicode form) -> id */
    pmap merges;           /* (left, right) -> rank, merged id */
    unsigned byte_cp[256]; /* bytes_to_unicode */
    int32_t byte_id[256];  /* id of each byte's one-character token */
    added_token *added;
    size_t n_added;
    bool add_prefix_space, use_regex, ignore_merges;
    pcre2_code *re;
    pcre2_match_data *md;
    smap cache; /* word bytes -> offset << 32 | count in cache_ids */
    bpe_ids cache_ids;
    /* the merge loop's work arrays, grown to the longest word */
    int32_t *sym;
    uint32_t *next, *prev;
    merge_cand *heap, *pending;
    size_t n_heap, n_pending, work_cap, heap_cap, pending_cap;
    char *buf; /* a segment with its prefix space, a word in unicode form */
    size_t buf_cap;
};

/* encoder.py's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
 * 68 bytes take the code points 256, 257, ... in byte order. */
static void bytes_to_unicode(unsigned cp[256]) {
    unsigned n = 0;
    for (unsigned b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        cp[b] = printable ? b : 256 + n++;
    }
}

/* The UTF-8 of a code point below 0x800 (bytes_to_unicode's are below 0x144). */
static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static int oom(acem_error *err, const char *what) {
    return acem_fail(err, "out of memory %s", what);
}

/* ---- reading the files ---------------------------------------------------------------- */

/* The whole file, checked to be UTF-8 (cJSON does not check). */
static char *read_text(const char *path, size_t *len, acem_error *err) {
    char *buf = eval_read_file(path, BPE_MAX_FILE, len, err);
    if (buf && !acem_utf8_valid((unsigned char *)buf, *len)) {
        acem_fail(err, "%s: not valid UTF-8", path);
        free(buf);
        return NULL;
    }
    return buf;
}

/* A JSON object from path, with nothing after it. */
static cJSON *read_json(const char *path, acem_error *err) {
    size_t len;
    char *text = read_text(path, &len, err);
    if (!text) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root)
        acem_json_error(path, len, "not valid JSON", err);
    else if (!cJSON_IsObject(root) || end[strspn(end, " \t\r\n")]) {
        acem_fail(err, "%s: not one JSON object", path);
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    return root;
}

/* A JSON number that is an integer in [0, 2^31). */
static bool json_id(const cJSON *v, int32_t *id) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 2147483648.0 ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return false;
    *id = (int32_t)v->valuedouble;
    return true;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The vocabulary object (token -> id): ids are integers in [0, 2^31), each token and each
 * id appears once (a JSON object may repeat a key; a repeated id would make two tokens
 * decode alike and break the id form of the merges). */
static int load_vocab(bpe_tokenizer *t, const cJSON *vocab, const char *path, acem_error *err) {
    if (!cJSON_IsObject(vocab) || !vocab->child)
        return acem_fail(err, "%s: the vocabulary is not a non-empty object", path);
    size_t n = (size_t)cJSON_GetArraySize(vocab), k = 0;
    int32_t *ids = acem_alloc(n, sizeof *ids, "the vocabulary ids", err);
    if (!ids) return acem_fail_naming(err, path);
    int rc = -1;
    for (const cJSON *e = vocab->child; e; e = e->next, k++) {
        if (!json_id(e, &ids[k])) {
            acem_fail(err, "%s: the id of token \"%.64s\" is not an integer in [0, 2^31)", path,
                      e->string);
            goto out;
        }
        int put = smap_put(&t->vocab, e->string, strlen(e->string), (uint64_t)ids[k]);
        if (put) {
            put < 0 ? oom(err, "reading the vocabulary")
                    : acem_fail(err, "%s: token \"%.64s\" appears twice in the vocabulary", path,
                                e->string);
            goto out;
        }
    }
    qsort(ids, n, sizeof *ids, cmp_i32);
    for (k = 1; k < n; k++)
        if (ids[k] == ids[k - 1]) {
            acem_fail(err, "%s: id %d is given to two tokens", path, (int)ids[k]);
            goto out;
        }
    rc = 0;
out:
    free(ids);
    return rc;
}

/* Each of the 256 bytes must have its one-character token: a byte-level BPE encodes any
 * text only then (encoder.py would raise KeyError, Hugging Face drop the byte). */
static int load_byte_ids(bpe_tokenizer *t, const char *path, acem_error *err) {
    bytes_to_unicode(t->byte_cp);
    for (int b = 0; b < 256; b++) {
        char u[2];
        size_t n = put_utf8(u, t->byte_cp[b]);
        uint64_t id;
        if (!smap_get(&t->vocab, u, n, &id))
            return acem_fail(err,
                             "%s: the vocabulary lacks \"%.*s\", the token of byte 0x%02X (a "
                             "byte-level BPE needs all 256)",
                             path, (int)n, u, b);
        t->byte_id[b] = (int32_t)id;
    }
    return 0;
}

/* Merge `rank`: tokens a and b, and their concatenation, must be in the vocabulary (as
 * Hugging Face's BPE builder requires); a pair listed twice is refused. */
static int add_merge(bpe_tokenizer *t, const char *a, size_t na, const char *b, size_t nb,
                     uint32_t rank, const char *where, acem_error *err) {
    uint64_t ia, ib, ic;
    if (!grow((void **)&t->buf, &t->buf_cap, na + nb + 1, 1)) return oom(err, "for a merge");
    memcpy(t->buf, a, na);
    memcpy(t->buf + na, b, nb);
    const char *miss = !smap_get(&t->vocab, a, na, &ia)             ? a
                       : !smap_get(&t->vocab, b, nb, &ib)           ? b
                       : !smap_get(&t->vocab, t->buf, na + nb, &ic) ? t->buf
                                                                    : NULL;
    if (miss)
        return acem_fail(err, "%s: merge \"%.*s %.*s\": \"%.*s\" is not in the vocabulary", where,
                         (int)na, a, (int)nb, b,
                         (int)(miss == a   ? na
                               : miss == b ? nb
                                           : na + nb),
                         miss);
    int put = pmap_put(&t->merges, (int32_t)ia, (int32_t)ib, rank, (int32_t)ic);
    if (put < 0) return oom(err, "reading the merges");
    if (put)
        return acem_fail(err, "%s: merge \"%.*s %.*s\" is listed twice", where, (int)na, a, (int)nb,
                         b);
    return 0;
}

/* "a b": two non-empty tokens and one space, as Hugging Face's merges parser wants. */
static int add_merge_line(bpe_tokenizer *t, const char *s, size_t n, uint32_t rank,
                          const char *where, acem_error *err) {
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)))
        return acem_fail(err, "%s: a merge is two tokens separated by one space", where);
    return add_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), rank, where, err);
}

/* merges.txt: one merge a line, rank = order; lines starting "#version" are skipped (as
 * Hugging Face does; encoder.py drops the first line whatever it holds), "\r\n" ends a line
 * as "\n" does, and only the last line may be empty. */
static int load_merges_txt(bpe_tokenizer *t, const char *path, acem_error *err) {
    size_t len;
    char *text = read_text(path, &len, err);
    if (!text) return -1;
    int rc = 0;
    uint32_t rank = 0;
    size_t line = 0;
    for (char *p = text; p < text + len && !rc;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        char *end = nl ? nl : text + len;
        size_t n = (size_t)(end - p) - (end > p && end[-1] == '\r');
        char where[1100];
        snprintf(where, sizeof where, "%.900s:%zu", path, ++line);
        if (n >= 8 && !memcmp(p, "#version", 8))
            ;
        else if (rank == UINT32_MAX)
            rc = acem_fail(err, "%s: too many merges", where);
        else
            rc = add_merge_line(t, p, n, rank++, where, err);
        p = end + 1;
    }
    free(text);
    return rc;
}

/* tokenizer.json's model.merges: strings "a b" (tokenizers < 0.20) or pairs ["a", "b"]. */
static int load_merges_json(bpe_tokenizer *t, const cJSON *merges, const char *path,
                            acem_error *err) {
    if (!cJSON_IsArray(merges)) return acem_fail(err, "%s: model.merges is not an array", path);
    uint32_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        char where[1100];
        snprintf(where, sizeof where, "%.900s: model.merges[%u]", path, rank);
        const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
        int rc;
        if (cJSON_IsString(m))
            rc = add_merge_line(t, m->valuestring, strlen(m->valuestring), rank, where, err);
        else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(a) &&
                 cJSON_IsString(b) && a->valuestring[0] && b->valuestring[0])
            rc = add_merge(t, a->valuestring, strlen(a->valuestring), b->valuestring,
                           strlen(b->valuestring), rank, where, err);
        else
            rc = acem_fail(err, "%s: not a string \"a b\" nor a pair of non-empty strings", where);
        if (rc) return -1;
    }
    return 0;
}

/* A boolean member that may be absent (then def); -1 when present and not a boolean. */
static int json_bool(const cJSON *o, const char *key, bool def, bool *v) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!b) {
        *v = def;
        return 0;
    }
    if (!cJSON_IsBool(b)) return -1;
    *v = cJSON_IsTrue(b);
    return 0;
}

static int push_added(bpe_tokenizer *t, const char *s, int32_t id, const char *where,
                      acem_error *err);

/* One added token (tokenizer.json's added_tokens[i], tokenizer_config.json's
 * added_tokens_decoder[id]): non-empty content, matched in the text as it is. single_word,
 * lstrip and rstrip change what it matches; acem does not implement them and refuses a
 * token that sets them. normalized and special do not change the ids here (no normalizer;
 * special tokens are matched like the others, as encode() does by default). */
static int add_token(bpe_tokenizer *t, const cJSON *o, int32_t id, const char *where,
                     acem_error *err) {
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(o, "content");
    if (!cJSON_IsObject(o) || !cJSON_IsString(content) || !content->valuestring[0])
        return acem_fail(err, "%s: not an object with a non-empty string \"content\"", where);
    static const char *const flags[] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        bool v;
        if (json_bool(o, flags[i], false, &v))
            return acem_fail(err, "%s: \"%s\" is not a boolean", where, flags[i]);
        if (v && i < 3)
            return acem_fail(err, "%s: added token \"%.64s\" sets %s, which acem does not support",
                             where, content->valuestring, flags[i]);
    }
    return push_added(t, content->valuestring, id, where, err);
}

/* Adds the token s with its id; its text and id must be new, and agree with the
 * vocabulary when it has s. */
static int push_added(bpe_tokenizer *t, const char *s, int32_t id, const char *where,
                      acem_error *err) {
    size_t n = strlen(s);
    uint64_t vid;
    if (smap_get(&t->vocab, s, n, &vid) && vid != (uint64_t)id)
        return acem_fail(err, "%s: added token \"%.64s\" has id %d, the vocabulary's is %d", where,
                         s, (int)id, (int)vid);
    for (size_t i = 0; i < t->n_added; i++)
        if ((t->added[i].len == n && !memcmp(t->added[i].text, s, n)) || t->added[i].id == id)
            return acem_fail(err, "%s: added token \"%.64s\" (id %d) repeats a token or an id",
                             where, s, (int)id);
    added_token *a = realloc(t->added, (t->n_added + 1) * sizeof *a);
    if (!a) return oom(err, "for the added tokens");
    t->added = a;
    if (!(a[t->n_added].text = strdup(s))) return oom(err, "for the added tokens");
    a[t->n_added].len = n;
    a[t->n_added++].id = id;
    return 0;
}

static int load_added_array(bpe_tokenizer *t, const cJSON *arr, const char *path, acem_error *err) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return acem_fail(err, "%s: added_tokens is not an array", path);
    int i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        char where[1100];
        snprintf(where, sizeof where, "%.900s: added_tokens[%d]", path, i);
        int32_t id;
        if (!json_id(cJSON_GetObjectItemCaseSensitive(o, "id"), &id))
            return acem_fail(err, "%s: \"id\" is not an integer in [0, 2^31)", where);
        if (add_token(t, o, id, where, err)) return -1;
    }
    return 0;
}

/* A string member that must be absent, null or "" (options acem does not implement). */
static bool empty_or_absent(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return !v || cJSON_IsNull(v) || (cJSON_IsString(v) && !v->valuestring[0]);
}

/* The "ByteLevel" pre-tokenizer: add_prefix_space (default false as GPT-2's file says),
 * use_regex (default true). Anything else changes the ids in ways acem does not follow. */
static int load_pre_tokenizer(bpe_tokenizer *t, const cJSON *pre, const char *path,
                              acem_error *err) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsObject(pre) || !cJSON_IsString(type) || strcmp(type->valuestring, "ByteLevel"))
        return acem_fail(err, "%s: pre_tokenizer is not {\"type\": \"ByteLevel\", ...}", path);
    if (json_bool(pre, "add_prefix_space", false, &t->add_prefix_space) ||
        json_bool(pre, "use_regex", true, &t->use_regex))
        return acem_fail(err, "%s: pre_tokenizer.add_prefix_space / use_regex is not a boolean",
                         path);
    return 0;
}

/* The parts of tokenizer.json that decide the ids; each one acem does not implement is
 * refused by name rather than ignored. */
static int load_tokenizer_json(bpe_tokenizer *t, const char *path, acem_error *err) {
    cJSON *root = read_json(path, err);
    if (!root) return -1;
    int rc = -1;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *post_type = cJSON_GetObjectItemCaseSensitive(post, "type");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    bool byte_fallback;
    if (!cJSON_IsObject(model) ||
        (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "BPE")))) {
        acem_fail(err, "%s: model is not a BPE model (model.type \"BPE\")", path);
    } else if (norm && !cJSON_IsNull(norm)) {
        acem_fail(err, "%s: a normalizer is set, which acem does not support", path);
    } else if (post && !cJSON_IsNull(post) &&
               !(cJSON_IsString(post_type) && !strcmp(post_type->valuestring, "ByteLevel"))) {
        acem_fail(err, "%s: post_processor is not null or ByteLevel (acem adds no tokens)", path);
    } else if (dropout && !cJSON_IsNull(dropout)) {
        acem_fail(err, "%s: model.dropout is set (BPE dropout is random; acem does not do it)",
                  path);
    } else if (!empty_or_absent(model, "continuing_subword_prefix") ||
               !empty_or_absent(model, "end_of_word_suffix")) {
        acem_fail(err,
                  "%s: model sets continuing_subword_prefix or end_of_word_suffix, which "
                  "acem does not support",
                  path);
    } else if (json_bool(model, "byte_fallback", false, &byte_fallback) || byte_fallback ||
               json_bool(model, "ignore_merges", false, &t->ignore_merges)) {
        acem_fail(err, "%s: model.byte_fallback is set or model.ignore_merges is not a boolean",
                  path);
    } else if (!load_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path,
                                   err) &&
               !load_vocab(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path, err) &&
               !load_byte_ids(t, path, err) &&
               !load_merges_json(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), path, err) &&
               !load_added_array(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), path,
                                 err)) {
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

/* Whether s is an added token with this id already (GPT-2's tokenizer_config.json lists
 * the <|endoftext|> that GPT2Tokenizer adds by default). */
static bool is_added(const bpe_tokenizer *t, const char *s, int32_t id) {
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id == id && !strcmp(t->added[i].text, s)) return true;
    return false;
}

/* tokenizer_config.json beside vocab.json + merges.txt: the tokens of added_tokens_decoder
 * (keyed by id). Its add_prefix_space (GPT2Tokenizer's: one space before the whole text,
 * whatever it starts with, unlike ByteLevel's) is refused rather than ignored. */
static int load_tokenizer_config(bpe_tokenizer *t, const char *path, acem_error *err) {
    cJSON *cfg = read_json(path, err);
    if (!cfg) return -1;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    bool prefix;
    int rc = 0;
    if (json_bool(cfg, "add_prefix_space", false, &prefix) || prefix)
        rc = acem_fail(err,
                       "%s: add_prefix_space is set (or not a boolean), which acem does not "
                       "support for vocab.json + merges.txt",
                       path);
    else if (dec && !cJSON_IsObject(dec))
        rc = acem_fail(err, "%s: added_tokens_decoder is not an object", path);
    for (const cJSON *o = dec ? dec->child : NULL; o && !rc; o = o->next) {
        char where[1100];
        snprintf(where, sizeof where, "%.900s: added_tokens_decoder[\"%.32s\"]", path, o->string);
        const char *k = o->string;
        long id = strspn(k, "0123456789") == strlen(k) && k[0] && strlen(k) <= 10
                      ? strtol(k, NULL, 10)
                      : -1;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (id < 0 || id > INT32_MAX)
            rc = acem_fail(err, "%s: the key is not an id", where);
        else if (!(cJSON_IsString(content) && is_added(t, content->valuestring, (int32_t)id)))
            rc = add_token(t, o, (int32_t)id, where, err);
    }
    cJSON_Delete(cfg);
    return rc;
}

/* vocab.json + merges.txt, as transformers' GPT2Tokenizer reads them: no prefix space,
 * the regex on, <|endoftext|> a special token when the vocabulary has it (GPT2Tokenizer's
 * default bos/eos/unk), and the added_tokens_decoder of tokenizer_config.json if the
 * directory has one (load_tokenizer_config). */
static int load_vocab_merges(bpe_tokenizer *t, const char *dir, acem_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    cJSON *vocab = read_json(path, err);
    int rc = vocab && !load_vocab(t, vocab, path, err) && !load_byte_ids(t, path, err) ? 0 : -1;
    cJSON_Delete(vocab);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    if (rc || load_merges_txt(t, path, err)) return -1;
    t->use_regex = true;
    uint64_t eot;
    if (smap_get(&t->vocab, "<|endoftext|>", 13, &eot) &&
        push_added(t, "<|endoftext|>", (int32_t)eot, path, err))
        return -1;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    return access(path, F_OK) == 0 ? load_tokenizer_config(t, path, err) : 0;
}

static int compile_regex(bpe_tokenizer *t, acem_error *err) {
    int code;
    PCRE2_SIZE at;
    t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &code, &at, NULL);
    if (!t->re) return acem_fail(err, "PCRE2 cannot compile GPT-2's pattern (error %d)", code);
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* without JIT, pcre2_match interprets */
    if (!(t->md = pcre2_match_data_create_from_pattern(t->re, NULL)))
        return oom(err, "for the regex");
    return 0;
}

int bpe_load(const char *dir, bpe_tokenizer **out, acem_error *err) {
    bpe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return oom(err, "for the tokenizer");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat st;
    char merges[4096];
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    int rc;
    if (stat(path, &st) == 0)
        rc = load_tokenizer_json(t, path, err);
    else if (stat(merges, &st) == 0)
        rc = load_vocab_merges(t, dir, err);
    else
        rc = acem_fail(err, "%s: no tokenizer.json, nor vocab.json and merges.txt", dir);
    if (!rc) rc = compile_regex(t, err);
    if (rc) {
        bpe_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void bpe_free(bpe_tokenizer *t) {
    if (!t) return;
    smap_free(&t->vocab);
    free(t->merges.s);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].text);
    free(t->added);
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
    smap_free(&t->cache);
    free(t->cache_ids.v);
    free(t->sym);
    free(t->next);
    free(t->prev);
    free(t->heap);
    free(t->pending);
    free(t->buf);
    free(t);
}

/* ---- encoding ------------------------------------------------------------------------- */

static bool ids_push(bpe_ids *ids, int32_t id) {
    if (!grow((void **)&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v)) return false;
    ids->v[ids->n++] = id;
    return true;
}

/* The candidate heap, ordered by (rank, position). */
static bool cand_less(merge_cand a, merge_cand b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static bool heap_push(bpe_tokenizer *t, merge_cand c) {
    if (!grow((void **)&t->heap, &t->heap_cap, t->n_heap + 1, sizeof *t->heap)) return false;
    size_t i = t->n_heap++;
    for (; i && cand_less(c, t->heap[(i - 1) / 2]); i = (i - 1) / 2)
        t->heap[i] = t->heap[(i - 1) / 2];
    t->heap[i] = c;
    return true;
}

static merge_cand heap_pop(bpe_tokenizer *t) {
    merge_cand top = t->heap[0], last = t->heap[--t->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->n_heap) break;
        if (c + 1 < t->n_heap && cand_less(t->heap[c + 1], t->heap[c])) c++;
        if (!cand_less(t->heap[c], last)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (t->n_heap) t->heap[i] = last;
    return top;
}

#define NONE UINT32_MAX

/* Queues the pair starting at symbol pos if it is a merge. A pair ranked below the pass in
 * progress (cur) waits for the pass to end: encoder.py merges every occurrence of its
 * chosen pair before it looks at the pairs that merging made. (Trained merges never rank a
 * merge of a made token before the merge that made it, so this only matters for odd files,
 * where Hugging Face, merging one occurrence at a time, can differ from encoder.py.) */
static bool queue_pair(bpe_tokenizer *t, uint32_t pos, uint32_t cur) {
    if (pos == NONE || t->next[pos] == NONE) return true;
    const pair_slot *m = pmap_get(&t->merges, t->sym[pos], t->sym[t->next[pos]]);
    if (!m) return true;
    merge_cand c = {m->rank, pos};
    if (cur == NONE || m->rank > cur) return heap_push(t, c);
    if (!grow((void **)&t->pending, &t->pending_cap, t->n_pending + 1, sizeof *t->pending))
        return false;
    t->pending[t->n_pending++] = c;
    return true;
}

/* encoder.py's bpe(): repeatedly take the lowest-ranked adjacent pair and merge all its
 * occurrences, left to right and without overlap, until no adjacent pair is a merge. Done
 * with a heap of (rank, position) over a linked list of symbols, O(n log n) in the word's
 * length instead of encoder.py's O(n^2): the same-rank entries pop in position order, which
 * is encoder.py's left-to-right scan, and an entry whose pair no longer stands there is
 * skipped. sym[] holds the byte ids of the word on entry; returns the symbol count. */
static int merge_word(bpe_tokenizer *t, size_t n, size_t *out_n) {
    t->n_heap = t->n_pending = 0;
    for (uint32_t i = 0; i < n; i++) {
        t->next[i] = i + 1 < n ? i + 1 : NONE;
        t->prev[i] = i ? i - 1 : NONE;
    }
    for (uint32_t i = 0; i + 1 < n; i++)
        if (!queue_pair(t, i, NONE)) return -1;
    uint32_t cur = NONE;
    size_t count = n;
    while (t->n_heap || t->n_pending) {
        if (t->n_pending && (!t->n_heap || t->heap[0].rank != cur)) {
            for (size_t k = 0; k < t->n_pending; k++)
                if (!heap_push(t, t->pending[k])) return -1;
            t->n_pending = 0;
        }
        merge_cand c = heap_pop(t);
        uint32_t r = t->next[c.pos];
        const pair_slot *m =
            t->sym[c.pos] < 0 || r == NONE ? NULL : pmap_get(&t->merges, t->sym[c.pos], t->sym[r]);
        if (!m || m->rank != c.rank) continue; /* stale: this pair is gone */
        cur = c.rank;
        t->sym[c.pos] = m->id;
        t->sym[r] = -1;
        t->next[c.pos] = t->next[r];
        if (t->next[r] != NONE) t->prev[t->next[r]] = c.pos;
        count--;
        if (!queue_pair(t, t->prev[c.pos], cur) || !queue_pair(t, c.pos, cur)) return -1;
    }
    *out_n = count;
    return 0;
}

/* The word's unicode form (bytes_to_unicode of each byte), for the vocabulary lookup of
 * ignore_merges. */
static size_t unicode_form(const bpe_tokenizer *t, const unsigned char *w, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += put_utf8(out + k, t->byte_cp[w[i]]);
    return k;
}

static bool cache_put(bpe_tokenizer *t, const char *w, size_t n, const int32_t *ids, size_t k) {
    if (n > CACHE_MAX_WORD) return true;
    if (t->cache.n >= CACHE_MAX_WORDS || t->cache_ids.n + k > CACHE_MAX_IDS) {
        smap_clear(&t->cache);
        t->cache_ids.n = 0;
    }
    uint64_t at = (uint64_t)t->cache_ids.n << 32 | k;
    for (size_t i = 0; i < k; i++)
        if (!ids_push(&t->cache_ids, ids[i])) return false;
    return smap_put(&t->cache, w, n, at) >= 0;
}

/* The merge loop's arrays for a word of n bytes. */
static bool work_reserve(bpe_tokenizer *t, size_t n) {
    if (n <= t->work_cap) return true;
    size_t cap = n < 64 ? 64 : n * 2;
    int32_t *sym = realloc(t->sym, cap * sizeof *sym);
    if (sym) t->sym = sym;
    uint32_t *next = realloc(t->next, cap * sizeof *next);
    if (next) t->next = next;
    uint32_t *prev = realloc(t->prev, cap * sizeof *prev);
    if (prev) t->prev = prev;
    if (!sym || !next || !prev) return false;
    t->work_cap = cap;
    return true;
}

/* The ids of one pre-token (encoder.py: the byte_encoder form, bpe(), then the encoder). */
static int encode_word(bpe_tokenizer *t, const char *w, size_t n, bpe_ids *ids, acem_error *err) {
    uint64_t at;
    if (smap_get(&t->cache, w, n, &at)) {
        for (size_t i = 0; i < (at & 0xffffffff); i++)
            if (!ids_push(ids, t->cache_ids.v[(at >> 32) + i])) return oom(err, "encoding");
        return 0;
    }
    if (n >= NONE) return acem_fail(err, "a pre-token of %zu bytes is too long", n);
    if (!grow((void **)&t->buf, &t->buf_cap, 2 * n + 1, 1)) return oom(err, "encoding");
    uint64_t whole;
    if (t->ignore_merges &&
        smap_get(&t->vocab, t->buf, unicode_form(t, (const unsigned char *)w, n, t->buf), &whole)) {
        int32_t id = (int32_t)whole;
        return ids_push(ids, id) && cache_put(t, w, n, &id, 1) ? 0 : oom(err, "encoding");
    }
    if (!work_reserve(t, n)) return oom(err, "encoding");
    for (size_t i = 0; i < n; i++)
        t->sym[i] = t->byte_id[(unsigned char)w[i]];
    size_t k, first = ids->n;
    if (merge_word(t, n, &k)) return oom(err, "encoding");
    for (uint32_t i = 0; i != NONE; i = t->next[i])
        if (!ids_push(ids, t->sym[i])) return oom(err, "encoding");
    return cache_put(t, w, n, ids->v + first, k) ? 0 : oom(err, "encoding");
}

/* One stretch of text between added tokens: ByteLevel's prefix space, then the regex's
 * matches (findall: the pattern's alternatives cover every character, so they tile it). */
static int encode_segment(bpe_tokenizer *t, const char *s, size_t n, bpe_ids *ids,
                          acem_error *err) {
    if (t->add_prefix_space && s[0] != ' ') {
        char *seg = malloc(n + 1);
        if (!seg) return oom(err, "encoding");
        seg[0] = ' ';
        memcpy(seg + 1, s, n);
        t->add_prefix_space = false;
        int rc = encode_segment(t, seg, n + 1, ids, err);
        t->add_prefix_space = true;
        free(seg);
        return rc;
    }
    if (!t->use_regex) return n ? encode_word(t, s, n, ids, err) : 0;
    for (size_t off = 0; off < n;) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, t->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return acem_fail(err, "pre-tokenisation failed (PCRE2 error %d)", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        if (encode_word(t, s + ov[0], ov[1] - ov[0], ids, err)) return -1;
        off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    return 0;
}

/* The added token at the leftmost position of text[from..len), longest first there (the
 * leftmost-longest matching of Hugging Face's AddedVocabulary); NULL when none occurs. */
static const added_token *next_added(const bpe_tokenizer *t, const char *text, size_t len,
                                     size_t from, size_t *at) {
    const added_token *best = NULL;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        const char *p = memmem(text + from, len - from, a->text, a->len);
        size_t pos = p ? (size_t)(p - text) : 0;
        if (p && (!best || pos < *at || (pos == *at && a->len > best->len))) {
            best = a;
            *at = pos;
        }
    }
    return best;
}

int bpe_encode(bpe_tokenizer *t, const char *text, size_t len, bpe_ids *ids, acem_error *err) {
    if (!acem_utf8_valid((const unsigned char *)text, len)) {
        /* PCRE2's own check finds the offset of the first invalid sequence */
        int rc = pcre2_match(t->re, (PCRE2_SPTR)text, len, 0, 0, t->md, NULL);
        return acem_fail(err, "not valid UTF-8 at byte %zu",
                         rc < 0 && rc != PCRE2_ERROR_NOMATCH ? (size_t)pcre2_get_startchar(t->md)
                                                             : (size_t)0);
    }
    size_t from = 0, at = 0;
    for (const added_token *a; (a = next_added(t, text, len, from, &at)); from = at + a->len) {
        if (at > from && encode_segment(t, text + from, at - from, ids, err)) return -1;
        if (!ids_push(ids, a->id)) return oom(err, "encoding");
    }
    return from < len ? encode_segment(t, text + from, len - from, ids, err) : 0;
}

/* ---- a byte-only vocabulary -------------------------------------------------------- */

static int write_whole(const char *path, const char *text, acem_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return acem_fail(err, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : acem_fail(err, "%s: write failed", path);
}

int bpe_byte_token_id(unsigned char byte) {
    unsigned cp[256];
    bytes_to_unicode(cp);
    int id = 0;
    for (int b = 0; b < 256; b++)
        id += cp[b] < cp[byte];
    return id;
}

/* vocab.json: every byte's one-character token at bpe_byte_token_id, then <|endoftext|>;
 * merges.txt: only its version line. */
int bpe_write_byte_vocab(const char *dir, acem_error *err) {
    unsigned cp[256];
    bytes_to_unicode(cp);
    cJSON *vocab = cJSON_CreateObject();
    int byte_of[256];
    for (int b = 0; b < 256; b++)
        byte_of[bpe_byte_token_id((unsigned char)b)] = b;
    for (int id = 0; vocab && id <= BPE_BYTE_EOT; id++) {
        char u[3] = {0};
        if (id < BPE_BYTE_EOT) put_utf8(u, cp[byte_of[id]]);
        if (!cJSON_AddNumberToObject(vocab, id < BPE_BYTE_EOT ? u : "<|endoftext|>", id)) {
            cJSON_Delete(vocab);
            vocab = NULL;
        }
    }
    char *text = vocab ? cJSON_PrintUnformatted(vocab) : NULL;
    cJSON_Delete(vocab);
    if (!text) return oom(err, "writing a vocabulary");
    char path[4096];
    int rc = snprintf(path, sizeof path, "%s/vocab.json", dir) >= (int)sizeof path
                 ? acem_fail(err, "%s: path too long", dir)
                 : write_whole(path, text, err);
    free(text);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    return rc ? -1 : write_whole(path, "#version: 0.2\n", err);
}
