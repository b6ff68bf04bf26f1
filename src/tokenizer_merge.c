/* tokenizer_merge.c — mergekit's tokenizer keys, read from mergekit's own code:
 *
 *  - the output vocabulary (tokenizer/build.py, build_tokenizer): `base` is the base's
 *    tokenizer stripped of ids >= its config.json vocab_size (get_stripped_tokenizer); a
 *    model is that model's tokenizer as it is; `union` is the base's with every other
 *    model's missing tokens appended (build_union_tokenizer, below);
 *  - each model's permutation: output id -> the model's id of the same token string, -1
 *    when it lacks the token or its id is >= its own vocab_size;
 *  - rows a model lacks (tokenizer/embed.py, assign_embedding_sources): present in one model
 *    only: that model's row; in none: zeros; in the base (a base_model merge): the base's
 *    row; otherwise the mean of the models that have it. Rows past the vocabulary
 *    (pad_to_multiple_of) are the mean of the model's mapped rows (PermutedEmbeddings);
 *  - config.json's vocab_size is the padded size (merge.py, _update_config_vocab), and a
 *    chat_template is set as merge.py's _set_chat_template decides.
 *
 * The remapped matrices are then merged by the method like any tensor. Vocabularies are
 * read from tokenizer.json (model.vocab, an object or Unigram's list, then added_tokens):
 * transformers' get_vocab() of a fast tokenizer. */
#include "tokenizer_merge.h"

#include "card.h"
#include "chat_templates.h"
#include "plan.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOK_MAX_VOCAB (1 << 24)

/* A vocabulary: token -> id, an open-addressing table over the strings of its JSON. */
typedef struct vocab {
    cJSON *json;
    const char **key;
    int64_t *id;
    size_t cap, n;
    int64_t size; /* config.json's vocab_size, or the vocabulary's length */
} vocab;

static void vocab_free(vocab *v) {
    cJSON_Delete(v->json);
    free(v->key);
    free(v->id);
    memset(v, 0, sizeof *v);
}

static size_t slot(const vocab *v, const char *tok) {
    size_t h = (size_t)acem_fnv1a64(tok) & (v->cap - 1);
    while (v->key[h] && strcmp(v->key[h], tok))
        h = (h + 1) & (v->cap - 1);
    return h;
}

static int64_t vocab_get(const vocab *v, const char *tok) {
    size_t h = slot(v, tok);
    return v->key[h] ? v->id[h] : -1;
}

/* As a Python dict takes updates: a later id of the same token replaces the earlier. */
static void vocab_put(vocab *v, const char *tok, int64_t id) {
    size_t h = slot(v, tok);
    v->n += !v->key[h];
    v->key[h] = tok;
    v->id[h] = id;
}

static int bad_tokenizer(const char *dir, const char *why, acem_error *err) {
    return acem_fail(err, "%s/tokenizer.json: %s", dir, why);
}

/* One entry's id: a whole number in [0, TOK_MAX_VOCAB). */
static bool valid_id(const cJSON *n, int64_t *id) {
    if (!cJSON_IsNumber(n) || !(n->valuedouble >= 0 && n->valuedouble < TOK_MAX_VOCAB) ||
        n->valuedouble != (double)(int64_t)n->valuedouble)
        return false;
    *id = (int64_t)n->valuedouble;
    return true;
}

static int vocab_fill(vocab *v, const char *dir, const cJSON *model_vocab, const cJSON *added,
                      acem_error *err) {
    int64_t i = 0, id;
    const cJSON *e;
    cJSON_ArrayForEach(e, model_vocab) {
        const char *tok =
            cJSON_IsArray(model_vocab) ? cJSON_GetStringValue(cJSON_GetArrayItem(e, 0)) : e->string;
        if (cJSON_IsArray(model_vocab) ? (id = i, !tok) : !valid_id(e, &id))
            return bad_tokenizer(dir, "model.vocab holds an entry that is not a token and an id",
                                 err);
        vocab_put(v, tok, id);
        i++;
    }
    cJSON_ArrayForEach(e, added) {
        const char *tok = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"));
        if (!tok || !valid_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
            return bad_tokenizer(dir, "added_tokens holds an entry without a content and an id",
                                 err);
        vocab_put(v, tok, id);
    }
    return 0;
}

/* dir's vocabulary; 1 when dir has no tokenizer.json. */
static int vocab_read(vocab *v, const char *dir, acem_error *err) {
    memset(v, 0, sizeof *v);
    char *path = acem_path_join(dir, "tokenizer.json", err);
    struct stat st;
    bool present = path && stat(path, &st) == 0;
    free(path);
    if (!present) return 1;
    if (!(v->json = card_read_json(dir, "tokenizer.json")))
        return bad_tokenizer(dir, "not a JSON object (or past 64 MiB)", err);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(v->json, "model");
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(v->json, "added_tokens");
    if (!cJSON_IsObject(mv) && !cJSON_IsArray(mv))
        return bad_tokenizer(dir, "no model.vocab (an object, or Unigram's list)", err);
    if (added && !cJSON_IsArray(added))
        return bad_tokenizer(dir, "added_tokens is not a list", err);
    size_t n = (size_t)cJSON_GetArraySize(mv) + (size_t)cJSON_GetArraySize(added);
    if (n > TOK_MAX_VOCAB) return bad_tokenizer(dir, "more than 2^24 tokens", err);
    for (v->cap = 16; v->cap < 2 * n; v->cap *= 2) {
    }
    if (!(v->key = acem_alloc(v->cap, sizeof *v->key, "a vocabulary", err)) ||
        !(v->id = acem_alloc(v->cap, sizeof *v->id, "a vocabulary", err)))
        return -1;
    return vocab_fill(v, dir, mv, added, err);
}

/* config.json's vocab_size (mergekit's get_vocab_size), else the vocabulary's length. */
static int64_t vocab_size_of(const char *dir, const vocab *v) {
    cJSON *cfg = card_read_json(dir, "config.json");
    int64_t n = (int64_t)v->n;
    valid_id(cJSON_GetObjectItemCaseSensitive(cfg, "vocab_size"), &n);
    cJSON_Delete(cfg);
    return n;
}

/* A model path's directory: itself, or the directory holding a weights file. */
static char *model_dir(const char *ref, acem_error *err) {
    acem_ref r; /* MODEL+ADAPTER: the model's tokenizer (an adapter has none of its own) */
    if (acem_ref_resolve(ref, NULL, &r, err)) return NULL;
    const char *path = r.model, *slash = strrchr(path, '/');
    char *d = acem_strdup(acem_is_dir(path) ? path : slash ? path : ".", err);
    if (d && !acem_is_dir(path) && slash) d[slash == path ? 1 : slash - path] = 0;
    acem_ref_free(&r);
    return d;
}

typedef struct tok_build {
    tok_plan *tp;
    const acem_merge_options *o;
    char **dirs;        /* per model */
    vocab *vocabs;      /* per model; a model without a tokenizer.json borrows the base's */
    const char **by_id; /* the output vocabulary, id -> token */
    vocab out;
    acem_warnings *w;
} tok_build;

static const char *model_path(const tok_build *b, int k) {
    return k ? b->o->models[k - 1] : b->o->base;
}

static bool same_dir(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    return !strcmp(a, b) || (realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb));
}

static int read_models(tok_build *b, acem_error *err) {
    tok_plan *tp = b->tp;
    for (int k = 0; k < tp->n_models; k++) {
        if (!(b->dirs[k] = model_dir(model_path(b, k), err))) return -1;
        int rc = vocab_read(&b->vocabs[k], b->dirs[k], err);
        if (rc < 0) return -1;
        if (rc > 0 && k == 0)
            return acem_fail(err, "%s: has no tokenizer.json, which tokenizer_source needs",
                             b->dirs[0]);
        if (rc > 0 && acem_warn(b->w, err,
                                "%s: has no tokenizer.json; its vocabulary is taken to be the "
                                "base's (as mergekit does)",
                                b->dirs[k]))
            return -1;
        vocab *v = rc > 0 ? &b->vocabs[0] : &b->vocabs[k];
        b->vocabs[k].size = vocab_size_of(b->dirs[k], v);
    }
    return 0;
}

/* mergekit's set of models: the base when it is one, each path once. */
static int count_models(tok_build *b, acem_error *err) {
    tok_plan *tp = b->tp;
    if (!(tp->counted = acem_alloc((size_t)tp->n_models, sizeof *tp->counted, "models", err)))
        return -1;
    for (int k = 0; k < tp->n_models; k++) {
        tp->counted[k] = k ? true : tp->base_is_model;
        for (int j = 0; j < k && tp->counted[k]; j++)
            tp->counted[k] = !(tp->counted[j] && same_dir(model_path(b, j), model_path(b, k)));
    }
    return 0;
}

typedef struct keyed {
    int64_t id;
    const char *key;
} keyed;

static int by_id_cmp(const void *a, const void *b) {
    int64_t x = ((const keyed *)a)->id, y = ((const keyed *)b)->id;
    return (x > y) - (x < y);
}

/* A model's tokens in id order (below its vocab_size), for the union's order. */
static int by_id_order(const vocab *v, const char ***out, size_t *n, acem_error *err) {
    keyed *k = acem_alloc(v->n + 1, sizeof *k, "a vocabulary", err);
    *out = k ? acem_alloc(v->n + 1, sizeof **out, "a vocabulary", err) : NULL;
    *n = 0;
    for (size_t h = 0; *out && h < v->cap; h++)
        if (v->key[h] && v->id[h] < v->size) k[(*n)++] = (keyed){v->id[h], v->key[h]};
    if (*out) qsort(k, *n, sizeof *k, by_id_cmp);
    for (size_t i = 0; *out && i < *n; i++)
        (*out)[i] = k[i].key;
    free(k);
    return *out ? 0 : -1;
}

/* A token appended to the union: its added_tokens entry (as the model gave it, or
 * transformers' add_tokens(str) defaults: normalized, not special) under its new id. */
static int append_token(tok_build *b, vocab *seen, const char *tok, const cJSON *entry,
                        acem_error *err) {
    tok_plan *tp = b->tp;
    cJSON *e = entry ? cJSON_Duplicate(entry, 1) : cJSON_CreateObject();
    if (!tp->appended) tp->appended = cJSON_CreateArray();
    if (!e || !tp->appended) {
        cJSON_Delete(e);
        return acem_fail(err, "out of memory building the output vocabulary");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(e, "id");
    cJSON_AddNumberToObject(e, "id", (double)tp->V);
    if (!entry) {
        cJSON_AddStringToObject(e, "content", tok);
        cJSON_AddBoolToObject(e, "single_word", 0);
        cJSON_AddBoolToObject(e, "lstrip", 0);
        cJSON_AddBoolToObject(e, "rstrip", 0);
        cJSON_AddBoolToObject(e, "normalized", 1);
        cJSON_AddBoolToObject(e, "special", 0);
    }
    cJSON_AddItemToArray(tp->appended, e);
    if (seen) vocab_put(seen, tok, tp->V);
    b->by_id[tp->V++] = tok;
    return 0;
}

/* build.py's build_union_tokenizer: the base's vocabulary, then every other model's tokens
 * it lacks (models in order, each one's tokens by id: mergekit takes them in the order of a
 * Rust hash map) that no model has as an added token, then the models' added tokens it
 * lacks (the first model's settings of a token win). Ids at or past a model's vocab_size
 * are left out. */
static int union_vocab(tok_build *b, acem_error *err) {
    tok_plan *tp = b->tp;
    size_t total = 0;
    for (int k = 0; k < tp->n_models; k++)
        total += b->vocabs[k].n;
    vocab added = {0}, seen = {0};
    for (added.cap = 16; added.cap < 2 * total + 2; added.cap *= 2) {
    }
    seen.cap = added.cap;
    const cJSON **entries = acem_alloc(total + 1, sizeof *entries, "a vocabulary", err);
    size_t n_entries = 0;
    int rc = entries &&
                     (added.key = acem_alloc(added.cap, sizeof *added.key, "a vocabulary", err)) &&
                     (added.id = acem_alloc(added.cap, sizeof *added.id, "a vocabulary", err)) &&
                     (seen.key = acem_alloc(seen.cap, sizeof *seen.key, "a vocabulary", err)) &&
                     (seen.id = acem_alloc(seen.cap, sizeof *seen.id, "a vocabulary", err))
                 ? 0
                 : -1;
    for (int k = 0; !rc && k < tp->n_models; k++) { /* out_added_tokens */
        const vocab *v = &b->vocabs[k];
        const cJSON *e;
        int64_t id;
        if (!v->json || !(tp->counted[k] || k == 0)) continue;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(v->json, "added_tokens")) {
            const char *tok = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"));
            if (valid_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) && id < v->size &&
                vocab_get(&added, tok) < 0) {
                vocab_put(&added, tok, (int64_t)n_entries);
                entries[n_entries++] = e;
            }
        }
    }
    for (int k = 1; !rc && k < tp->n_models; k++) { /* out_vocab's new plain tokens */
        const char **keys = NULL;
        size_t n = 0;
        if (!b->vocabs[k].json || !tp->counted[k]) continue;
        rc = by_id_order(&b->vocabs[k], &keys, &n, err);
        for (size_t i = 0; !rc && i < n; i++)
            if (vocab_get(&b->vocabs[0], keys[i]) < 0 && vocab_get(&added, keys[i]) < 0 &&
                vocab_get(&seen, keys[i]) < 0)
                rc = append_token(b, &seen, keys[i], NULL, err);
        free(keys);
    }
    for (size_t i = 0; !rc && i < n_entries; i++) { /* then the added tokens */
        const char *tok =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entries[i], "content"));
        if (vocab_get(&b->vocabs[0], tok) < 0 && vocab_get(&seen, tok) < 0)
            rc = append_token(b, &seen, tok, entries[i], err);
    }
    free(entries);
    free(added.key);
    free(added.id);
    free(seen.key);
    free(seen.id);
    return rc;
}

/* A token's output id, or -1 (a scan: it serves the few tokens a config names). */
static int64_t out_id(const tok_build *b, const char *tok) {
    for (int64_t i = 0; i < b->tp->V; i++)
        if (!strcmp(b->by_id[i], tok)) return i;
    return -1;
}

/* The output vocabulary: the source's tokens by id, each id of 0..V-1 exactly once. */
static int output_vocab(tok_build *b, acem_error *err) {
    tok_plan *tp = b->tp;
    const char *src = b->o->tokenizer_source;
    bool uni = !strcmp(src, "union"), base = uni || !strcmp(src, "base");
    const vocab *v = &b->vocabs[0];
    int64_t limit = INT64_MAX;
    size_t room = 1 + (size_t)b->o->n_tokens;
    for (int k = 0; uni && k < tp->n_models; k++)
        room += b->vocabs[k].n;
    if (!(tp->src_dir = model_dir(base ? b->o->base : src, err))) return -1;
    if (base) {
        limit = v->size;
    } else {
        int rc = vocab_read(&b->out, tp->src_dir, err);
        if (rc > 0)
            return acem_fail(err, "%s: has no tokenizer.json (tokenizer_source)", tp->src_dir);
        if (rc < 0) return -1;
        v = &b->out;
    }
    tp->V = 0;
    for (size_t h = 0; h < v->cap; h++)
        tp->V += v->key[h] && v->id[h] < limit;
    if (base && tp->V < (int64_t)v->n)
        return acem_fail(err,
                         "%s: its tokenizer has ids past config.json's vocab_size %lld; mergekit "
                         "strips them from the tokenizer, which acem does not rewrite",
                         b->dirs[0], (long long)limit);
    if (!(b->by_id = acem_alloc((size_t)tp->V + room, sizeof *b->by_id, "a vocabulary", err)))
        return -1;
    for (size_t h = 0; h < v->cap; h++) {
        if (!v->key[h] || v->id[h] >= limit) continue;
        if (v->id[h] >= tp->V || b->by_id[v->id[h]])
            return acem_fail(err,
                             "%s/tokenizer.json: token ids are not 0..%lld, each once (\"%s\" has "
                             "%lld)",
                             tp->src_dir, (long long)tp->V - 1, v->key[h], (long long)v->id[h]);
        b->by_id[v->id[h]] = v->key[h];
    }
    if (uni && union_vocab(b, err)) return -1;
    for (int t = 0; t < b->o->n_tokens; t++) /* build.py: add_tokens(tokens' keys) */
        if (out_id(b, b->o->tokens[t].token) < 0 &&
            append_token(b, NULL, b->o->tokens[t].token, NULL, err))
            return -1;
    int64_t m = b->o->pad_to_multiple_of;
    tp->V_pad = m > 0 && tp->V % m ? (tp->V / m + 1) * m : tp->V;
    return 0;
}

/* A tokenizer.tokens entry (embed.py's compute_default_embedding): zeros, a model's row of
 * the token (which it must have), or its row of another token or id (model_token; the
 * token as the model's own tokenizer has it). The model must be one of the merge's. */
static int token_rule(tok_build *b, const acem_token_spec *s, acem_error *err) {
    tok_plan *tp = b->tp;
    int64_t i = out_id(b, s->token), row = -1;
    int k = 0;
    while (s->model && k < tp->n_models && !same_dir(model_path(b, k), s->model))
        k++;
    if (s->model && k == tp->n_models)
        return acem_fail(err, "tokenizer.tokens: token \"%s\": %s is not a model of the merge",
                         s->token, s->model);
    if (s->model && s->source_id >= 0)
        row = s->source_id;
    else if (s->model && s->source_token)
        row = vocab_get(b->vocabs[k].json ? &b->vocabs[k] : &b->vocabs[0], s->source_token);
    else if (s->model)
        row = tp->perm[k][i];
    if (s->model && row < 0)
        return acem_fail(err, "tokenizer.tokens: token \"%s\": %s has no token \"%s\"", s->token,
                         s->model, s->source_token ? s->source_token : s->token);
    tp->rule[i] = (tok_rule){s->model ? k : TOK_ZERO, row, s->force != 0};
    return 0;
}

/* Permutations (build.py) and the rule for rows a model lacks (embed.py). */
static int permutations(tok_build *b, acem_error *err) {
    tok_plan *tp = b->tp;
    if (!(tp->perm = acem_alloc((size_t)tp->n_models, sizeof *tp->perm, "permutations", err)) ||
        !(tp->rule = acem_alloc((size_t)tp->V, sizeof *tp->rule, "permutations", err)))
        return -1;
    for (int k = 0; k < tp->n_models; k++) {
        const vocab *v = b->vocabs[k].json ? &b->vocabs[k] : &b->vocabs[0];
        if (!(tp->perm[k] = acem_alloc((size_t)tp->V, sizeof **tp->perm, "permutations", err)))
            return -1;
        for (int64_t i = 0; i < tp->V; i++) {
            int64_t id = vocab_get(v, b->by_id[i]);
            tp->perm[k][i] = id < b->vocabs[k].size ? id : -1;
        }
    }
    for (int64_t i = 0; i < tp->V; i++) {
        int present = 0, donor = 0;
        for (int k = 0; k < tp->n_models; k++)
            if (tp->counted[k] && tp->perm[k][i] >= 0 && !present++) donor = k;
        int from = present == 0                               ? TOK_ZERO
                   : present == 1                             ? donor
                   : tp->base_is_model && tp->perm[0][i] >= 0 ? 0
                                                              : TOK_AVERAGE;
        tp->rule[i] = (tok_rule){from, from >= 0 ? tp->perm[from][i] : -1, false};
    }
    for (int t = 0; t < b->o->n_tokens; t++)
        if (token_rule(b, &b->o->tokens[t], err)) return -1;
    return 0;
}

/* Python's str.strip(): the whitespace a template is compared without. */
static char *stripped(const char *s, acem_error *err) {
    static const char ws[] = " \t\n\r\v\f";
    s += strspn(s, ws);
    size_t n = strlen(s);
    while (n && strchr(ws, s[n - 1]))
        n--;
    char *t = acem_alloc(n + 1, 1, "a chat template", err);
    if (t) memcpy(t, s, n);
    return t;
}

/* A model's chat template as transformers loads it: chat_template.jinja, else
 * tokenizer_config.json's chat_template (a string, or a list of {name, template} whose
 * "default" one counts, as merge.py takes template.get("default")). */
static int model_template(const char *dir, char **out, acem_error *err) {
    cJSON *cfg = card_read_json(dir, "tokenizer_config.json");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *e;
    const char *text = cJSON_GetStringValue(t);
    const cJSON *list = cJSON_IsArray(t) ? t : NULL;
    cJSON_ArrayForEach(e, list) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "name"));
        if (name && !strcmp(name, "default"))
            text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "template"));
    }
    char *jinja = acem_path_join(dir, "chat_template.jinja", err);
    FILE *f = jinja ? fopen(jinja, "rb") : NULL;
    int rc = jinja ? 0 : -1;
    char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) {
        fclose(f);
        text = n < sizeof buf ? (buf[n] = 0, buf) : NULL;
    }
    if (n == sizeof buf)
        rc = acem_fail(err, "%s: larger than the 64 KiB a chat template may take", jinja);
    else if (!rc && text && *text && !(*out = stripped(text, err)))
        rc = -1;
    free(jinja);
    cJSON_Delete(cfg);
    return rc;
}

/* auto: the most common template among the models (Counter.most_common; a tie goes to the
 * first seen, base first, where mergekit's set order is arbitrary); none: NULL. */
static int auto_template(tok_build *b, acem_error *err) {
    int n = b->tp->n_models, best = 0, best_k = -1;
    char **t = acem_alloc((size_t)n, sizeof *t, "chat templates", err);
    int rc = t ? 0 : -1;
    for (int k = 0; !rc && k < n; k++) {
        if (!b->tp->counted[k]) continue;
        char *dir = model_dir(model_path(b, k), err);
        rc = dir ? model_template(dir, &t[k], err) : -1;
        free(dir);
    }
    for (int k = 0; !rc && k < n; k++) {
        int count = 0;
        for (int j = 0; t[k] && j < n; j++)
            count += t[j] && !strcmp(t[j], t[k]);
        if (count > best) best = count, best_k = k;
    }
    if (!rc && best_k >= 0) {
        b->tp->chat_template = t[best_k];
        t[best_k] = NULL;
    }
    for (int k = 0; t && k < n; k++)
        free(t[k]);
    free(t);
    return rc;
}

/* merge.py's _set_chat_template: auto, or Jinja text (at least 20 characters with a brace).
 * A builtin name (short, one line, no brace) names one of the formats mergekit ships a file
 * for (mergekit/_data/chat_templates): acem writes its own template for it
 * (chat_templates.c); a name it has none for is refused with the way out. */
static int chat_template(tok_build *b, acem_error *err) {
    const char *s = b->o->chat_template;
    if (!s || !*s) return 0;
    if (!strcmp(s, "auto")) return auto_template(b, err);
    if (strlen(s) < 256 && !strchr(s, '\n') && !strchr(s, '{')) {
        const char *named = acem_chat_template_named(s);
        if (!named)
            return acem_fail(err,
                             "chat_template \"%.60s\" is not a format acem has a template for "
                             "(chatml, llama3, alpaca): give the template's Jinja text, or auto",
                             s);
        s = named;
    }
    if (strlen(s) < 20)
        return acem_fail(err, "chat_template \"%.60s\" is neither auto nor a Jinja template", s);
    return (b->tp->chat_template = acem_strdup(s, err)) ? 0 : -1;
}

int tok_plan_build(tok_plan *tp, const acem_merge_options *o, bool has_base, acem_warnings *w,
                   acem_error *err) {
    memset(tp, 0, sizeof *tp);
    if (!o->tokenizer_source && !o->chat_template) return 0;
    tp->n_models = o->n_models + 1;
    tp->base_is_model = has_base;
    tp->remap = o->tokenizer_source != NULL;
    tok_build b = {tp, o, NULL, NULL, NULL, {0}, w};
    size_t n = (size_t)tp->n_models;
    int rc = -1;
    if ((b.dirs = acem_alloc(n, sizeof *b.dirs, "models", err)) &&
        (b.vocabs = acem_alloc(n, sizeof *b.vocabs, "models", err)) && !count_models(&b, err) &&
        !(tp->remap && (read_models(&b, err) || output_vocab(&b, err) || permutations(&b, err))) &&
        !chat_template(&b, err))
        rc = 0;
    for (size_t k = 0; b.dirs && k < n; k++) {
        free(b.dirs[k]);
        if (b.vocabs) vocab_free(&b.vocabs[k]);
    }
    free(b.dirs);
    free(b.vocabs);
    free(b.by_id);
    vocab_free(&b.out);
    return rc;
}

void tok_plan_free(tok_plan *tp) {
    for (int k = 0; tp->perm && k < tp->n_models; k++)
        free(tp->perm[k]);
    free(tp->perm);
    free(tp->rule);
    free(tp->counted);
    cJSON_Delete(tp->appended);
    free(tp->chat_template);
    free(tp->src_dir);
    for (size_t i = 0; i < tp->n_remaps; i++) {
        free(tp->remaps[i].in);
        free(tp->remaps[i].ck);
    }
    free(tp->remaps);
    memset(tp, 0, sizeof *tp);
}

bool tok_is_embedding(const char *name) {
    static const char *const names[] = {"embed_tokens.weight", "lm_head.weight", "wte.weight",
                                        "embed_out.weight"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        size_t k = strlen(names[i]);
        if (n >= k && !strcmp(name + n - k, names[i]) && (n == k || name[n - k - 1] == '.'))
            return true;
    }
    return false;
}

/* Every model's id of every output token must be a row of its tensor. */
static int check_rows(const tok_plan *tp, const tok_remap *m, acem_error *err) {
    const acem_checkpoint *const *ck = m->ck;
    for (int k = 0; k < tp->n_models; k++) {
        const acem_tensor *t = m->in[k];
        if (t->ndim != 2 || t->shape[1] != m->out.shape[1])
            return acem_fail(err,
                             "%s: tensor \"%s\" must be a matrix of %llu columns to be "
                             "mapped to the output vocabulary",
                             acem_checkpoint_path(ck[k]), t->name,
                             (unsigned long long)m->out.shape[1]);
        for (int64_t i = 0; i < tp->V; i++)
            if (tp->perm[k][i] >= (int64_t)t->shape[0] ||
                (tp->rule[i].from == k && tp->rule[i].row >= (int64_t)t->shape[0]))
                return acem_fail(err,
                                 "%s: tensor \"%s\" has %llu rows, and the output vocabulary's "
                                 "id %lld would take its row %lld",
                                 acem_checkpoint_path(ck[k]), t->name,
                                 (unsigned long long)t->shape[0], (long long)i,
                                 (long long)(tp->perm[k][i] >= (int64_t)t->shape[0]
                                                 ? tp->perm[k][i]
                                                 : tp->rule[i].row));
    }
    return 0;
}

/* One embedding entry: every model's tensor of it (and its checkpoint), the output's shape. */
static int remap_entry(tok_plan *tp, plan_entry *e, tok_remap *m, acem_error *err) {
    if (e->slice >= 0 || !e->expert_ck)
        return acem_fail(err, "tensor \"%s\": tokenizer_source with slices is not supported yet",
                         e->name);
    if (!(m->in = acem_alloc((size_t)tp->n_models, sizeof *m->in, "remaps", err)) ||
        !(m->ck = acem_alloc((size_t)tp->n_models, sizeof *m->ck, "remaps", err)))
        return -1;
    m->out = *e->base;
    for (int k = 0; k < tp->n_models; k++) {
        m->ck[k] = k ? e->expert_ck[k - 1] : e->base_ck;
        m->in[k] = k ? acem_checkpoint_find(m->ck[k], e->base->name) : e->base;
        if (!m->in[k])
            return acem_fail(err, "%s: lacks tensor \"%s\"", acem_checkpoint_path(m->ck[k]),
                             e->base->name);
    }
    m->out.shape[0] = (uint64_t)tp->V_pad;
    m->out.numel = (uint64_t)tp->V_pad * (e->base->ndim == 2 ? e->base->shape[1] : 0);
    m->out.nbytes = m->out.numel * acem_dtype_size(e->base->dtype);
    if (check_rows(tp, m, err)) return -1;
    e->base = &m->out;
    e->remap = m;
    return 0;
}

int tok_plan_apply(tok_plan *tp, plan *p, acem_error *err) {
    if (!tp->remap) return 0;
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += tok_is_embedding(p->entries[i].base->name);
    if (!n)
        return acem_fail(err,
                         "%s: tokenizer_source is given, but the base has no embedding "
                         "tensor (embed_tokens, lm_head, wte)",
                         p->n ? acem_checkpoint_path(p->entries[0].base_ck) : "the base");
    if (p->T != tp->n_models - 1)
        return acem_fail(err, "tokenizer_source with slices is not supported yet");
    if (!(tp->remaps = acem_alloc(n, sizeof *tp->remaps, "remaps", err))) return -1;
    for (size_t i = 0; i < p->n; i++)
        if (tok_is_embedding(p->entries[i].base->name) &&
            remap_entry(tp, &p->entries[i], &tp->remaps[tp->n_remaps++], err))
            return -1;
    return 0;
}

static void row_add(double *acc, const void *row, uint64_t n, bool f64) {
    for (uint64_t j = 0; j < n; j++)
        acc[j] += f64 ? ((const double *)row)[j] : (double)((const float *)row)[j];
}

static void row_set(void *dst, const double *v, double scale, uint64_t n, bool f64) {
    for (uint64_t j = 0; j < n; j++)
        if (f64)
            ((double *)dst)[j] = v[j] * scale;
        else
            ((float *)dst)[j] = (float)(v[j] * scale);
}

/* Output row i of a model that lacks token i: embed.py's default embedding. */
static int default_row(const tok_plan *tp, const tok_remap *m, int64_t i, bool f64, void *dst,
                       double *acc, tok_read_row read, void *user, acem_error *err) {
    const uint64_t cols = m->out.shape[1];
    const tok_rule *r = &tp->rule[i];
    int count = 0;
    memset(acc, 0, cols * sizeof *acc);
    for (int k = 0; k < tp->n_models && r->from == TOK_AVERAGE; k++) {
        if (!tp->counted[k] || tp->perm[k][i] < 0) continue;
        if (read(user, m->ck[k], m->in[k], (uint64_t)tp->perm[k][i], dst, err)) return -1;
        row_add(acc, dst, cols, f64);
        count++;
    }
    if (r->from >= 0) return read(user, m->ck[r->from], m->in[r->from], (uint64_t)r->row, dst, err);
    row_set(dst, acc, count ? 1.0 / count : 0.0, cols, f64);
    return 0;
}

int tok_remap_rows(const tok_plan *tp, const tok_remap *m, int k, bool f64, void *dst,
                   tok_read_row read, void *user, acem_error *err) {
    const uint64_t cols = m->out.shape[1];
    const size_t es = f64 ? 8 : 4;
    double *acc = acem_alloc(cols ? cols : 1, sizeof *acc, "a row", err);
    if (!acc) return -1;
    int rc = 0;
    for (int64_t i = 0; i < tp->V && !rc; i++) {
        void *row = (char *)dst + (size_t)i * cols * es;
        rc = tp->perm[k][i] >= 0 && !tp->rule[i].force
                 ? read(user, m->ck[k], m->in[k], (uint64_t)tp->perm[k][i], row, err)
                 : default_row(tp, m, i, f64, row, acc, read, user, err);
    }
    if (!rc && tp->V_pad > tp->V) { /* the padding: the mean of the mapped rows */
        memset(acc, 0, cols * sizeof *acc);
        for (int64_t i = 0; i < tp->V; i++)
            row_add(acc, (char *)dst + (size_t)i * cols * es, cols, f64);
        for (int64_t i = tp->V; i < tp->V_pad; i++)
            row_set((char *)dst + (size_t)i * cols * es, acc, 1.0 / (double)tp->V, cols, f64);
    }
    free(acc);
    return rc;
}

/* The files of a tokenizer (what merge.py's _copy_tokenizer copies and save_pretrained
 * writes), taken from the tokenizer source rather than the base. */
static const char *const tokenizer_files[] = {"tokenizer.json",
                                              "tokenizer_config.json",
                                              "special_tokens_map.json",
                                              "tokenizer.model",
                                              "added_tokens.json",
                                              "vocab.json",
                                              "merges.txt",
                                              "vocab.txt",
                                              "chat_template.jinja",
                                              "chat_template.json",
                                              NULL};
/* With a chat template set, a template file would override it when transformers loads. */
static const char *const template_files[] = {"chat_template.jinja", "chat_template.json", NULL};

static bool other_source(const tok_plan *tp, const char *base) {
    return tp->remap && !same_dir(tp->src_dir, base);
}

const char *const *tok_skipped_aux(const tok_plan *tp, const char *base) {
    return other_source(tp, base) ? tokenizer_files : tp->chat_template ? template_files : NULL;
}

/* The union's new tokens into the base's tokenizer files, as save_pretrained writes them:
 * tokenizer.json's added_tokens, and tokenizer_config.json's added_tokens_decoder where the
 * base has one. */
static int write_union(const tok_plan *tp, const output *o, acem_error *err) {
    cJSON *tj = card_read_json(o->tmp_path, "tokenizer.json");
    cJSON *tc = card_read_json(o->tmp_path, "tokenizer_config.json");
    cJSON *list = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    cJSON *dec = cJSON_GetObjectItemCaseSensitive(tc, "added_tokens_decoder"), *e;
    if (!list && tj) list = cJSON_AddArrayToObject(tj, "added_tokens");
    int rc = cJSON_IsArray(list) ? 0
                                 : acem_fail(err,
                                             "%s: the base's tokenizer.json does not "
                                             "read back",
                                             o->final_path);
    cJSON *items = rc ? NULL : tp->appended;
    cJSON_ArrayForEach(e, items) {
        cJSON *d = cJSON_Duplicate(e, 1), *in_dec = cJSON_Duplicate(e, 1);
        char id[32];
        snprintf(id, sizeof id, "%d", (int)cJSON_GetNumberValue(cJSON_GetObjectItem(e, "id")));
        if (!d || !in_dec) rc = acem_fail(err, "out of memory");
        if (d) cJSON_AddItemToArray(list, d);
        if (in_dec && cJSON_IsObject(dec)) {
            cJSON_DeleteItemFromObjectCaseSensitive(in_dec, "id");
            cJSON_AddItemToObject(dec, id, in_dec);
        } else {
            cJSON_Delete(in_dec);
        }
    }
    if (!rc) rc = card_write_json(o->tmp_path, "tokenizer.json", tj, err);
    if (!rc && cJSON_IsObject(dec))
        rc = card_write_json(o->tmp_path, "tokenizer_config.json", tc, err);
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    return rc;
}

int tok_write_files(const tok_plan *tp, const output *o, const char *base, bool dry,
                    acem_error *err) {
    if (!tp->remap && !tp->chat_template) return 0;
    if (o->kind != OUTPUT_DIR)
        return acem_fail(err,
                         "%s: tokenizer_source and chat_template need a directory output "
                         "(the tokenizer files go beside the weights)",
                         o->final_path);
    for (int i = 0; other_source(tp, base) && tokenizer_files[i]; i++) {
        bool tmpl = !strcmp(tokenizer_files[i], "chat_template.jinja") ||
                    !strcmp(tokenizer_files[i], "chat_template.json");
        if (!(tmpl && tp->chat_template) &&
            output_copy_aux_file(o, tp->src_dir, tokenizer_files[i], dry, err))
            return -1;
    }
    if (dry) return 0;
    if (cJSON_GetArraySize(tp->appended) && write_union(tp, o, err)) return -1;
    cJSON *cfg = tp->remap ? card_read_json(o->tmp_path, "config.json") : NULL;
    if (cfg) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "vocab_size");
        cJSON_AddNumberToObject(cfg, "vocab_size", (double)tp->V_pad);
    }
    int rc = cfg ? card_write_json(o->tmp_path, "config.json", cfg, err) : 0;
    cJSON_Delete(cfg);
    if (rc || !tp->chat_template) return rc;
    cJSON *tc = card_read_json(o->tmp_path, "tokenizer_config.json");
    if (!tc && !(tc = cJSON_CreateObject())) return acem_fail(err, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(tc, "chat_template");
    rc = cJSON_AddStringToObject(tc, "chat_template", tp->chat_template)
             ? card_write_json(o->tmp_path, "tokenizer_config.json", tc, err)
             : acem_fail(err, "out of memory");
    cJSON_Delete(tc);
    return rc;
}
