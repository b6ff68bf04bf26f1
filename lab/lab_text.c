/*
 * lab_text.c — `acem lab --suite text`: a tiny GPT-2 in Hugging Face's layout pretrained as
 * a causal language model on the corpus of lab_text_data.c, seven experts fine-tuned from
 * it in full with a fresh score head each (FusionBench's GPT-2 protocol), merged by every
 * method with the gpt2 preset (lab_merge_all), each merged backbone evaluated with each
 * expert's own head by acem eval's code (eval/evaluate.c, gpt2_load_head). The design and
 * the criterion (zero-shot Norm < 70, printed before any merge is evaluated) are fixed in
 * docs/lab.md, "The text suite".
 */
#include "lab.h"
#include "lab_text.h"

#include "bpe.h"
#include "evaluate.h"
#include "gpt2.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRITERION_NORM 0.70 /* docs/lab.md: zero-shot Norm must stay below it */
#define TEXT_SPLITS    3    /* train, val, test */
#define GRAM_EXAMPLES  512  /* training examples whose layer inputs give each X^T X */
#define TEXT_MATMULS   4    /* c_attn, attn.c_proj, c_fc, mlp.c_proj per block */
#define EVAL_BATCH     32   /* rows per evaluation batch */

static const int matmul_params[TEXT_MATMULS] = {GPT2_QKV_W, GPT2_ATTPROJ_W, GPT2_FC_W,
                                                GPT2_FCPROJ_W};

/* Model and schedule, set from measured training throughput only (docs/lab.md). */
typedef struct text_sizes {
    int n_layer, n_head, n_embd;
    int ctx;     /* pretraining window, tokens */
    int max_len; /* classification inputs cut at this many tokens */
    int batch;
    int pretrain_steps, finetune_steps;
    double pretrain_lr, finetune_lr;
} text_sizes;

static text_sizes text_sizes_for(bool quick) {
    if (quick) return (text_sizes){2, 2, 32, 64, 64, 16, 60, 40, 3e-3, 1e-3};
    return (text_sizes){2, 4, 64, 128, 128, 16, 800, 200, 2e-3, 1e-3};
}

typedef struct text_lab {
    const lab_options *o;
    text_sizes z;
    lab_text_data data;
    lab_suite *suite; /* task names and T, for the log and lab_report.c */
    eval_rows rows[LAB_TEXT_TASKS][TEXT_SPLITS];
    bpe_ids corpus; /* every document's ids, each followed by <|endoftext|> */
    char base[LAB_PATH], merged[LAB_PATH], expert[LAB_TEXT_TASKS][LAB_PATH];
    char gram[LAB_TEXT_TASKS][LAB_PATH];
    char intro[4096];
} text_lab;

static int fail(acem_error *err, const char *what, const char *path) {
    snprintf(err->msg, sizeof err->msg, "%.900s: %s", path, what);
    return -1;
}

/* ---- tokens ------------------------------------------------------------------------ */

static int push_id(bpe_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 1024;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return -1;
        ids->v = v, ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

static int row_len(const eval_rows *rows, size_t i) {
    return (int)(rows->start[i + 1] - rows->start[i]);
}

/* Rows pick[0 .. B) as one batch [B, T] right-padded with <|endoftext|> (the pad token),
 * their lengths into len; returns T, the longest. */
static int pad_batch(const eval_rows *rows, const size_t *pick, int B, int *ids, int *len) {
    int T = 1;
    for (int b = 0; b < B; b++) {
        len[b] = row_len(rows, pick[b]);
        T = len[b] > T ? len[b] : T;
    }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++)
            ids[(size_t)b * T + i] =
                i < len[b] ? rows->ids.v[rows->start[pick[b]] + (size_t)i] : BPE_BYTE_EOT;
    return T;
}

static int tokenise(text_lab *L, acem_error *err) {
    bpe_tokenizer *tok;
    if (bpe_load(L->base, &tok, err)) return -1;
    int rc = 0;
    for (int d = 0; !rc && d < L->data.docs; d++)
        rc = bpe_encode(tok, L->data.doc[d], strlen(L->data.doc[d]), &L->corpus, err) ||
             (push_id(&L->corpus, BPE_BYTE_EOT) && fail(err, "out of memory", "lab text"));
    for (int t = 0; !rc && t < LAB_TEXT_TASKS; t++) {
        const lab_text_task *k = &L->data.task[t];
        const lab_text_set *sets[TEXT_SPLITS] = {&k->train, &k->val, &k->test};
        for (int s = 0; !rc && s < TEXT_SPLITS; s++) { /* as acem eval: cut to max_len */
            size_t bad;
            rc = eval_encode(tok, (const char *const *)sets[s]->text, NULL, (size_t)sets[s]->n,
                             (size_t)L->z.max_len, &L->rows[t][s], &bad, err);
        }
    }
    bpe_free(tok);
    return rc ? -1 : 0;
}

/* ---- training ---------------------------------------------------------------------- */

/* One forward, backward and AdamW step. */
static int train_step(gpt2_model *m, const gpt2_batch *b, double lr, acem_error *err) {
    const float *logits;
    float loss;
    gpt2_adamw opt = gpt2_adamw_defaults();
    opt.lr = lr;
    return gpt2_forward(m, b, 1, &logits, err) || gpt2_backward(m, b, &loss, err) ||
                   gpt2_adamw_step(m, &opt, err)
               ? -1
               : 0;
}

/* Causal LM on windows of ctx tokens at seeded offsets of the corpus. */
static int pretrain(text_lab *L, gpt2_model *m, acem_error *err) {
    int B = L->z.batch, T = L->z.ctx;
    if (L->corpus.n <= (size_t)T) return fail(err, "the corpus is shorter than a window", "lab");
    int *ids = malloc((size_t)B * T * sizeof *ids), *len = malloc((size_t)B * sizeof *len);
    int rc = ids && len ? 0 : fail(err, "out of memory", "lab text");
    lab_rng rng = lab_rng_for(L->o->seed, "text-pretrain", 0);
    for (int step = 0; !rc && step < L->z.pretrain_steps; step++) {
        for (int b = 0; b < B; b++) {
            size_t at = lab_rng_next(&rng) % (L->corpus.n - (size_t)T);
            for (int i = 0; i < T; i++)
                ids[(size_t)b * T + i] = L->corpus.v[at + (size_t)i];
            len[b] = T;
        }
        gpt2_batch batch = {B, T, ids, len, NULL};
        rc = train_step(m, &batch, L->z.pretrain_lr, err);
        if (!rc && (step + 1) % 100 == 0) lab_log(L->suite, "pretraining: step %d", step + 1);
    }
    free(ids), free(len);
    return rc;
}

/* Every parameter fine-tuned on seeded minibatches of task t's training rows. */
static int finetune(text_lab *L, gpt2_model *m, int t, acem_error *err) {
    const eval_rows *rows = &L->rows[t][0];
    const int *y = L->data.task[t].train.y;
    int B = L->z.batch, T = L->z.max_len;
    int *ids = malloc((size_t)B * T * sizeof *ids), *len = malloc((size_t)B * sizeof *len);
    int *labels = malloc((size_t)B * sizeof *labels);
    size_t *pick = malloc((size_t)B * sizeof *pick);
    int rc = ids && len && labels && pick ? 0 : fail(err, "out of memory", "lab text");
    lab_rng rng = lab_rng_for(L->o->seed, "text-finetune", t);
    for (int step = 0; !rc && step < L->z.finetune_steps; step++) {
        for (int b = 0; b < B; b++) {
            pick[b] = lab_rng_next(&rng) % rows->n;
            labels[b] = y[pick[b]];
        }
        int Tb = pad_batch(rows, pick, B, ids, len);
        gpt2_batch batch = {B, Tb, ids, len, labels};
        rc = train_step(m, &batch, L->z.finetune_lr, err);
    }
    free(ids), free(len), free(labels), free(pick);
    return rc;
}

/* ---- evaluation -------------------------------------------------------------------- */

/* Accuracy of m on task t's split s (1 validation, 2 test) with acem eval's loop, after
 * expert t's score head is put on m's backbone as acem eval --head does (own_head: m is
 * the expert). */
static int accuracy(text_lab *L, gpt2_model *m, int t, int s, bool own_head, double *acc,
                    acem_error *err) {
    const lab_text_task *k = &L->data.task[t];
    const lab_text_set *set = s == 1 ? &k->val : &k->test;
    if (!own_head && gpt2_load_head(m, L->expert[t], err)) return -1;
    int *pred = malloc((size_t)set->n * sizeof *pred);
    if (!pred) return fail(err, "out of memory", "lab text");
    int rc = eval_classify(m, &L->rows[t][s], EVAL_BATCH, pred, NULL, NULL, err), correct = 0;
    for (int i = 0; i < set->n; i++)
        correct += pred[i] == set->y[i];
    free(pred);
    *acc = (double)correct / set->n;
    return rc;
}

/* The backbone of the folder at path with each expert's head, on every task. */
static int evaluate_backbone(text_lab *L, const char *path, int split, lab_row *row,
                             acem_error *err) {
    gpt2_model *m;
    if (gpt2_load(path, &m, err)) return -1;
    int rc = 0;
    row->avg = 0.0;
    for (int t = 0; !rc && t < LAB_TEXT_TASKS; t++) {
        rc = accuracy(L, m, t, split, false, &row->acc[t], err);
        row->avg += row->acc[t] / LAB_TEXT_TASKS;
    }
    gpt2_free(m);
    return rc;
}

static int evaluate_merged(void *user, const char *path, bool validation, lab_row *row,
                           acem_error *err) {
    return evaluate_backbone(user, path, validation ? 1 : 2, row, err);
}

/* ---- covariance match -------------------------------------------------------------- */

/* X^T X of every matmul's inputs in expert m on GRAM_EXAMPLES of task t's training rows
 * (real tokens only), into gx[layer] (in x in), and saved as regmean's Gram file. */
static int input_grams(text_lab *L, gpt2_model *m, int t, const lab_cov_match *cov, double **gx,
                       acem_error *err) {
    const eval_rows *rows = &L->rows[t][0];
    int B = L->z.batch, T = L->z.max_len, C = L->z.n_embd;
    int n = rows->n < GRAM_EXAMPLES ? (int)rows->n : GRAM_EXAMPLES;
    int *ids = malloc((size_t)B * T * sizeof *ids), *len = malloc((size_t)B * sizeof *len);
    double *x = malloc((size_t)B * T * 4 * C * sizeof *x);
    size_t pick[GRAM_EXAMPLES];
    for (int i = 0; i < n; i++)
        pick[i] = (size_t)i;
    int rc = ids && len && x ? 0 : fail(err, "out of memory", "lab text grams");
    for (int l = 0; l < cov->layers; l++)
        memset(gx[l], 0, (size_t)cov->in[l] * cov->in[l] * sizeof(double));
    for (int i0 = 0; !rc && i0 < n; i0 += B) {
        int nb = n - i0 < B ? n - i0 : B;
        const float *logits;
        int Tb = pad_batch(rows, pick + i0, nb, ids, len);
        gpt2_batch batch = {nb, Tb, ids, len, NULL};
        if ((rc = gpt2_forward(m, &batch, 1, &logits, err))) break;
        for (int l = 0; l < cov->layers; l++) {
            int in = cov->in[l], rowsx = 0;
            const float *a =
                gpt2_matmul_input(m, matmul_params[l % TEXT_MATMULS], l / TEXT_MATMULS);
            for (int b = 0; b < nb; b++) /* real tokens only */
                for (int i = 0; i < len[b]; i++, rowsx++)
                    for (int j = 0; j < in; j++)
                        x[(size_t)rowsx * in + j] = a[((size_t)b * Tb + i) * in + j];
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, in, rowsx, 1.0, x, in, 1.0, gx[l],
                        in);
        }
    }
    free(ids), free(len), free(x);
    if (rc) return -1;
    acem_tensor_data td[LAB_MAX_LAYERS];
    uint64_t shapes[LAB_MAX_LAYERS][2];
    for (int l = 0; l < cov->layers; l++) {
        int in = cov->in[l];
        for (int i = 0; i < in; i++) /* the upper triangle mirrored */
            for (int j = 0; j < i; j++)
                gx[l][(size_t)i * in + j] = gx[l][(size_t)j * in + i];
        shapes[l][0] = shapes[l][1] = (uint64_t)in;
        td[l] = (acem_tensor_data){cov->name[l], ACEM_DT_F64, 2, shapes[l], gx[l]};
    }
    const acem_param meta[] = {{"format", "pt"}, {"producer", "acem lab: X^T X per layer"}};
    return acem_save_safetensors(L->gram[t], td, (size_t)cov->layers, meta, 2, err);
}

/* The matmul weights of every block, as acem_stats and the Gram files name them; the
 * map's orientation is out x in (Conv1D stores in x out). */
static void cov_layers(const text_lab *L, lab_cov_match *cov) {
    int C = L->z.n_embd;
    const int ins[TEXT_MATMULS] = {C, C, C, 4 * C}, outs[TEXT_MATMULS] = {3 * C, C, 4 * C, C};
    cov->layers = 0;
    for (int l = 0; l < L->z.n_layer; l++)
        for (int k = 0; k < TEXT_MATMULS; k++, cov->layers++) {
            gpt2_param_name(matmul_params[k], l, cov->name[cov->layers], sizeof cov->name[0]);
            cov->in[cov->layers] = ins[k];
            cov->out[cov->layers] = outs[k];
        }
}

/* Dt^T (out x in) of layer l from the stored [in x out] weights of expert and base. */
static void delta_map(const lab_cov_match *cov, int l, gpt2_model *expert, gpt2_model *base,
                      double *D) {
    int p = matmul_params[l % TEXT_MATMULS], block = l / TEXT_MATMULS;
    size_t n, size = (size_t)cov->in[l] * cov->out[l];
    const float *we = gpt2_param(expert, p, &n) + (size_t)block * size,
                *w0 = gpt2_param(base, p, &n) + (size_t)block * size;
    for (int i = 0; i < cov->in[l]; i++)
        for (int o = 0; o < cov->out[l]; o++)
            D[(size_t)o * cov->in[l] + i] =
                (double)we[(size_t)i * cov->out[l] + o] - (double)w0[(size_t)i * cov->out[l] + o];
}

static int covariance_match(text_lab *L, lab_cov_match *cov, acem_error *err) {
    cov_layers(L, cov);
    int T = LAB_TEXT_TASKS, rc = 0;
    size_t widest = (size_t)16 * L->z.n_embd * L->z.n_embd; /* 4C x 4C */
    gpt2_model *base = NULL, *experts[LAB_TEXT_TASKS] = {0};
    double *gx[LAB_TEXT_TASKS][LAB_MAX_LAYERS] = {{0}}, *D[LAB_TEXT_TASKS] = {0};
    double *scratch = malloc(2 * widest * sizeof *scratch);
    rc = !scratch;
    for (int t = 0; t < T; t++) {
        rc |= !(D[t] = malloc(widest * sizeof(double)));
        for (int l = 0; l < cov->layers; l++)
            rc |= !(gx[t][l] = malloc(widest * sizeof(double)));
    }
    if (rc) rc = fail(err, "out of memory for Gram matrices", "lab text");
    if (!rc) rc = gpt2_load(L->base, &base, err);
    for (int t = 0; !rc && t < T; t++)
        rc = gpt2_load(L->expert[t], &experts[t], err) ||
             input_grams(L, experts[t], t, cov, gx[t], err);
    for (int l = 0; !rc && l < cov->layers; l++) {
        double *gxl[LAB_MAX_TASKS];
        for (int t = 0; t < T; t++) {
            gxl[t] = gx[t][l];
            delta_map(cov, l, experts[t], base, D[t]);
        }
        lab_cov_layer(cov, l, T, D, gxl, L->o->seed, scratch);
    }
    if (!rc) {
        const char *models[LAB_TEXT_TASKS];
        for (int t = 0; t < T; t++)
            models[t] = L->expert[t];
        acem_merge_options so;
        acem_merge_options_init(&so);
        so.base = L->base;
        so.models = models;
        so.n_models = T;
        so.preset = "gpt2";
        so.threads = L->o->threads;
        rc = lab_cov_branches(cov, &so, err);
    }
    gpt2_free(base);
    for (int t = 0; t < T; t++) {
        gpt2_free(experts[t]);
        free(D[t]);
        for (int l = 0; l < cov->layers; l++)
            free(gx[t][l]);
    }
    free(scratch);
    return rc ? -1 : 0;
}

/* ---- the driver -------------------------------------------------------------------- */

static gpt2_config base_config(const text_sizes *z) {
    return (gpt2_config){.n_layer = z->n_layer,
                         .n_head = z->n_head,
                         .n_embd = z->n_embd,
                         .n_positions = z->ctx > z->max_len ? z->ctx : z->max_len,
                         .vocab_size = BPE_BYTE_EOT + 1,
                         .ln_eps = 1e-5,
                         .pad_token_id = BPE_BYTE_EOT};
}

static int paths(text_lab *L, acem_error *err) {
    const char *out = L->o->out;
    if (lab_path(L->base, LAB_PATH, out, "base", err) ||
        lab_path(L->merged, LAB_PATH, out, "merged", err) || lab_make_dir(out, "base", err) ||
        lab_make_dir(out, "merged", err) || lab_make_dir(out, "experts", err) ||
        lab_make_dir(out, "grams", err))
        return -1;
    for (int t = 0; t < LAB_TEXT_TASKS; t++) {
        char name[64];
        snprintf(name, sizeof name, "experts/%s", L->data.task[t].name);
        if (lab_path(L->expert[t], LAB_PATH, out, name, err)) return -1;
        snprintf(name, sizeof name, "grams/%s.safetensors", L->data.task[t].name);
        if (lab_path(L->gram[t], LAB_PATH, out, name, err)) return -1;
    }
    return 0;
}

/* Base (saved as the LM it is) and the seven experts (saved as classifiers); the
 * individual row on the way. */
static int train_models(text_lab *L, lab_results *r, acem_error *err) {
    gpt2_config c = base_config(&L->z);
    gpt2_model *m;
    lab_log(L->suite, "pretraining the base: %d x %d tokens per step, %d steps, corpus %zu tokens",
            L->z.batch, L->z.ctx, L->z.pretrain_steps, L->corpus.n);
    lab_rng init = lab_rng_for(L->o->seed, "text-base-init", 0);
    if (gpt2_new(&c, lab_rng_next(&init), &m, err)) return -1;
    int rc = pretrain(L, m, err) || gpt2_save(m, L->base, err);
    gpt2_free(m);
    lab_row *individual = &r->row[1];
    individual->avg = 0.0;
    for (int t = 0; !rc && t < LAB_TEXT_TASKS; t++) {
        const lab_text_task *k = &L->data.task[t];
        lab_log(L->suite, "fine-tuning expert %s: %d steps, lr %.1e", k->name, L->z.finetune_steps,
                L->z.finetune_lr);
        lab_rng head = lab_rng_for(L->o->seed, "text-head-init", t);
        if ((rc = gpt2_load(L->base, &m, err))) break;
        rc = gpt2_new_head(m, k->classes, lab_rng_next(&head), err) || finetune(L, m, t, err) ||
             gpt2_save(m, L->expert[t], err) || bpe_write_byte_vocab(L->expert[t], err) ||
             accuracy(L, m, t, 2, true, &individual->acc[t], err);
        individual->avg += individual->acc[t] / LAB_TEXT_TASKS;
        gpt2_free(m);
    }
    return rc ? -1 : 0;
}

/* The criterion of docs/lab.md on the zero-shot and individual rows, logged and kept for
 * results.md before any merge is evaluated. */
static void criterion(text_lab *L, lab_results *r, size_t at) {
    lab_normalise(r);
    const lab_row *zero = &r->row[0], *ind = &r->row[1];
    char *p = L->intro + at, *end = L->intro + sizeof L->intro;
    p += snprintf(p, (size_t)(end - p),
                  "## Design criterion (docs/lab.md, fixed before any result)\n\n"
                  "zero-shot Norm %.1f (Avg %.1f) against individual Avg %.1f: criterion "
                  "zero-shot Norm < %.0f **%s**. Per task, zero-shot / individual:",
                  100.0 * zero->norm, 100.0 * zero->avg, 100.0 * ind->avg, 100.0 * CRITERION_NORM,
                  zero->norm < CRITERION_NORM ? "held" : "not held");
    for (int t = 0; t < LAB_TEXT_TASKS && p < end; t++)
        p += snprintf(p, (size_t)(end - p), "%s %s %.1f%%", t ? "," : "", L->data.task[t].name,
                      ind->acc[t] > 0 ? 100.0 * zero->acc[t] / ind->acc[t] : 0.0);
    if (p < end) snprintf(p, (size_t)(end - p), ".\n\n");
    lab_log(L->suite, "criterion: zero-shot Norm %.1f, Avg %.1f; individual Avg %.1f: %s",
            100.0 * zero->norm, 100.0 * zero->avg, 100.0 * ind->avg,
            zero->norm < CRITERION_NORM ? "held (< 70)" : "NOT held (>= 70)");
}

/* The model, the schedule and the tasks, for results.md; returns the length written. */
static size_t describe(text_lab *L) {
    const text_sizes *z = &L->z;
    size_t n = (size_t)snprintf(
        L->intro, sizeof L->intro,
        "GPT-2 (Hugging Face layout) of %d layers, %d heads, n_embd %d, byte-only vocabulary "
        "(257 ids, `<|endoftext|>` as pad); base pretrained as a causal LM on %zu corpus "
        "tokens (%d steps of %d x %d tokens, AdamW lr %.1e); experts fine-tuned from it in "
        "full with a fresh score head each (%d steps of %d examples cut at %d tokens, AdamW lr "
        "%.1e); merged with `--preset gpt2`, each merged backbone evaluated with each "
        "expert's score head.\n\n## Tasks\n\n| task | classes | train / val / test | chance |\n"
        "|---|---|---|---|\n",
        z->n_layer, z->n_head, z->n_embd, L->corpus.n, z->pretrain_steps, z->batch, z->ctx,
        z->pretrain_lr, z->finetune_steps, z->batch, z->max_len, z->finetune_lr);
    for (int t = 0; t < LAB_TEXT_TASKS && n < sizeof L->intro; t++) {
        const lab_text_task *k = &L->data.task[t];
        n += (size_t)snprintf(L->intro + n, sizeof L->intro - n,
                              "| %s | %d | %d / %d / %d | %.1f |\n", k->name, k->classes,
                              k->train.n, k->val.n, k->test.n, 100.0 / k->classes);
    }
    if (n < sizeof L->intro) n += (size_t)snprintf(L->intro + n, sizeof L->intro - n, "\n");
    return n < sizeof L->intro ? n : sizeof L->intro - 1;
}

static int reference_rows(text_lab *L, lab_results *r, acem_error *err) {
    lab_row *zero = &r->row[0], *ind = &r->row[1];
    snprintf(zero->name, sizeof zero->name, "zero-shot");
    snprintf(zero->about, sizeof zero->about, "the base backbone with each expert's head");
    snprintf(ind->name, sizeof ind->name, "individual");
    snprintf(ind->about, sizeof ind->about, "each expert on its own task");
    r->rows = 2;
    r->references = 3; /* and regmean with the true Grams, added with the merges */
    return evaluate_backbone(L, L->base, 2, zero, err);
}

static int run(text_lab *L, lab_results *r, acem_error *err) {
    lab_text_sizes sizes = lab_text_sizes_for(L->o->quick);
    lab_log(L->suite, "reading the tasks and the corpus from Debian's files");
    if (lab_text_load(&L->data, "", sizes, L->o->seed, err)) return -1;
    L->suite->T = LAB_TEXT_TASKS;
    for (int t = 0; t < LAB_TEXT_TASKS; t++) {
        snprintf(L->suite->task[t].name, sizeof L->suite->task[t].name, "%s", L->data.task[t].name);
        L->suite->task[t].classes = L->data.task[t].classes;
    }
    if (acem_workdir_claim(L->o->out, "acem lab", err) || paths(L, err) ||
        bpe_write_byte_vocab(L->base, err) || tokenise(L, err) || train_models(L, r, err) ||
        reference_rows(L, r, err))
        return -1;
    criterion(L, r, describe(L));
    lab_log(L->suite, "covariance match: X^T X of every matmul's inputs on %d training examples",
            GRAM_EXAMPLES);
    if (covariance_match(L, &r->cov, err)) return -1;
    const char *models[LAB_TEXT_TASKS], *grams[LAB_TEXT_TASKS];
    for (int t = 0; t < LAB_TEXT_TASKS; t++) {
        models[t] = L->expert[t];
        grams[t] = L->gram[t];
    }
    lab_merge_job j = {.suite = L->suite,
                       .base = L->base,
                       .merged_dir = L->merged,
                       .suffix = "",
                       .preset = "gpt2",
                       .models = models,
                       .grams = grams,
                       .grams_input_axis = 1,
                       .seed = L->o->seed,
                       .threads = L->o->threads,
                       .evaluate = evaluate_merged,
                       .user = L};
    if (lab_merge_all(&j, r, err)) return -1;
    lab_normalise(r);
    r->intro = L->intro;
    return lab_write_reports(L->o->out, r, L->o, err);
}

int lab_text_run(const lab_options *o, acem_error *err) {
    if (o->heads != LAB_HEADS_TUNED) {
        snprintf(err->msg, sizeof err->msg,
                 "lab: the text suite fine-tunes a fresh score head per expert (--heads tuned)");
        return -1;
    }
    text_lab *L = calloc(1, sizeof *L);
    lab_results *r = calloc(1, sizeof *r);
    lab_suite *s = calloc(1, sizeof *s);
    if (!L || !r || !s) {
        free(L), free(r), free(s);
        return fail(err, "out of memory", "lab");
    }
    snprintf(s->name, sizeof s->name, "text");
    if (o->threads > 0) { /* the model's sgemms and loops too, not only the merges */
        omp_set_num_threads(o->threads);
        openblas_set_num_threads(o->threads);
    }
    L->o = o;
    L->z = text_sizes_for(o->quick);
    L->suite = s;
    r->suite = s;
    int rc = run(L, r, err);
    if (!rc) lab_log(s, "wrote %s/results.md, results.csv, covariance.csv, results.svg", o->out);
    lab_text_free(&L->data);
    for (int t = 0; t < LAB_TEXT_TASKS; t++) {
        for (int k = 0; k < TEXT_SPLITS; k++)
            eval_rows_free(&L->rows[t][k]);
    }
    free(L->corpus.v);
    free(L), free(r), free(s);
    return rc ? -1 : 0;
}
