/* gpt2_layers.c — GPT-2's forward and backward passes, one short function per layer, in the
 * order of Karpathy's llm.c (train_gpt2.c). N = B*T rows; C channels; NH heads of hs = C/NH.
 * Every matmul is an sgemm (OpenBLAS's threads); the element-wise work is split over rows
 * (or channels) by OpenMP. Reductions never cross threads: a sum is computed by one thread
 * in a fixed order (bias gradients are sgemv with a vector of ones), so a run with the same
 * thread count gives the same bytes. */
#include "gpt2_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- forward -------------------------------------------------------------------- */

/* out[N,C] = wte[ids] + wpe[t] */
static void encoder_forward(float *out, const int *ids, const float *wte, const float *wpe, int B,
                            int T, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * T; r++) {
        const float *e = wte + (size_t)ids[r] * C, *p = wpe + (size_t)(r % T) * C;
        for (int c = 0; c < C; c++)
            out[(size_t)r * C + c] = e[c] + p[c];
    }
}

/* out[N,C] = (inp - mean) * rstd * w + b per row; mean, rstd [N] kept for the backward
 * (torch.nn.LayerNorm: biased variance, rstd = 1 / sqrt(var + eps)). */
static void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *w, const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C;
        float m = 0, v = 0;
        for (int c = 0; c < C; c++)
            m += x[c];
        m /= C;
        for (int c = 0; c < C; c++)
            v += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(v / C + eps);
        for (int c = 0; c < C; c++)
            out[(size_t)r * C + c] = (x[c] - m) * s * w[c] + b[c];
        mean[r] = m, rstd[r] = s;
    }
}

/* out[N,OC] = inp[N,C] W[C,OC] + bias[OC] (Conv1D: W stored in x out); with acc, added to
 * what out holds (a residual). */
static void matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N,
                           int C, int OC, int acc) {
    if (!acc) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++)
            memcpy(out + (size_t)r * OC, bias, (size_t)OC * sizeof *bias);
    } else {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++)
            for (int o = 0; o < OC; o++)
                out[(size_t)r * OC + o] += bias[o];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, C, 1.0f, inp, C, w, OC, 1.0f, out,
                OC);
}

/* Row i of query block may look at key j when j <= i (causal) and j < len (padding). */
static int keys_of(int i, int len) { return (i < len ? i : len - 1) + 1; }

/* Softmax of each row of att[T,T] over its allowed keys; the others are set to 0. */
static void masked_softmax(float *att, int T, int len) {
    for (int i = 0; i < T; i++) {
        float *a = att + (size_t)i * T, mx = -INFINITY, sum = 0;
        int n = keys_of(i, len);
        for (int j = 0; j < n; j++)
            mx = a[j] > mx ? a[j] : mx;
        for (int j = 0; j < n; j++)
            sum += a[j] = expf(a[j] - mx);
        for (int j = 0; j < n; j++)
            a[j] /= sum;
        for (int j = n; j < T; j++)
            a[j] = 0;
    }
}

/* Per (b, h): att[T,T] = softmax(q k^T / sqrt(hs)) masked, out[b,:,h] = att v.
 * qkv [N,3C] holds q | k | v; out [N,C]; att [B,NH,T,T]. */
static void attention_forward(float *out, float *att, const float *qkv, const int *len, int B,
                              int T, int C, int NH) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *a = att + (size_t)bh * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, a,
                    T);
        masked_softmax(a, T, len[b]);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, v, C3, 0.0f,
                    out + (size_t)b * T * C + h * hs, C);
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

/* gelu_new (transformers' NewGELUActivation): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
static void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

/* The activations of layer l: its own block when training, else the one shared block. */
static gpt2_layer_acts layer_acts(const gpt2_model *m, int l) {
    size_t N = (size_t)m->B * m->T, C = (size_t)m->c.n_embd, NH = (size_t)m->c.n_head;
    float *p = m->acts + (m->train ? (size_t)l * m->layer_size : 0);
    gpt2_layer_acts a;
    a.ln1 = p, p += N * C;
    a.ln1_mean = p, p += N;
    a.ln1_rstd = p, p += N;
    a.qkv = p, p += N * 3 * C;
    a.att = p, p += (size_t)m->B * NH * m->T * m->T;
    a.atty = p, p += N * C;
    a.res2 = p, p += N * C;
    a.ln2 = p, p += N * C;
    a.ln2_mean = p, p += N;
    a.ln2_rstd = p, p += N;
    a.fch = p, p += N * 4 * C;
    a.fch_gelu = p, p += N * 4 * C;
    a.res3 = p;
    return a;
}

/* Parameter p of layer l. */
static float *lp(const gpt2_model *m, int p, int l) {
    return gpt2_p(m, p) + (size_t)l * (m->numel[p] / (size_t)m->c.n_layer);
}

/* One transformer block: res2 = inp + attn(ln_1(inp)), res3 = res2 + mlp(ln_2(res2)). */
static void block_forward(const gpt2_model *m, int l, const float *inp, const int *len) {
    gpt2_layer_acts a = layer_acts(m, l);
    int N = m->B * m->T, C = m->c.n_embd;
    size_t NC = (size_t)N * C;
    layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, inp, lp(m, GPT2_LN1_W, l),
                      lp(m, GPT2_LN1_B, l), N, C, (float)m->c.ln_eps);
    matmul_forward(a.qkv, a.ln1, lp(m, GPT2_QKV_W, l), lp(m, GPT2_QKV_B, l), N, C, 3 * C, 0);
    attention_forward(a.atty, a.att, a.qkv, len, m->B, m->T, C, m->c.n_head);
    memcpy(a.res2, inp, NC * sizeof(float));
    matmul_forward(a.res2, a.atty, lp(m, GPT2_ATTPROJ_W, l), lp(m, GPT2_ATTPROJ_B, l), N, C, C, 1);
    layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, lp(m, GPT2_LN2_W, l),
                      lp(m, GPT2_LN2_B, l), N, C, (float)m->c.ln_eps);
    matmul_forward(a.fch, a.ln2, lp(m, GPT2_FC_W, l), lp(m, GPT2_FC_B, l), N, C, 4 * C, 0);
    gelu_forward(a.fch_gelu, a.fch, (size_t)N * 4 * C);
    /* Shared buffers (inference): res3 is the inp of this layer, read for the last time in
     * the copy into res2 above. */
    memcpy(a.res3, a.res2, NC * sizeof(float));
    matmul_forward(a.res3, a.fch_gelu, lp(m, GPT2_FCPROJ_W, l), lp(m, GPT2_FCPROJ_B, l), N, 4 * C,
                   C, 1);
}

/* transformers' GPT2ForSequenceClassification: with pad_token_id, each row's rightmost
 * token that is not pad_token_id (argmax of position * (id != pad), so 0 for a row of pads);
 * without, the last position, and a batch of more than one row is refused. */
static int pool_positions(const gpt2_model *m, const gpt2_batch *b, acem_error *err) {
    if (m->c.pad_token_id < 0 && b->B > 1) {
        gpt2_fail(err, "gpt2: a classifier without pad_token_id takes batches of one row only");
        return -1;
    }
    for (int r = 0; r < b->B; r++) {
        int at = m->c.pad_token_id < 0 ? b->T - 1 : 0;
        for (int t = 0; t < b->T && m->c.pad_token_id >= 0; t++)
            if (b->ids[(size_t)r * b->T + t] != m->c.pad_token_id) at = t;
        m->pool[r] = at;
    }
    return 0;
}

/* logits: [N,V] = lnf [N,C] lm_head^T (wte when tied), or [B,K] = lnf[pool] score^T. */
static void head_forward(const gpt2_model *m) {
    int N = m->B * m->T, C = m->c.n_embd;
    if (!m->c.num_labels) {
        const float *w = m->numel[GPT2_LM_HEAD] ? gpt2_p(m, GPT2_LM_HEAD) : gpt2_p(m, GPT2_WTE);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, m->c.vocab_size, C, 1.0f, m->lnf, C,
                    w, C, 0.0f, m->logits, m->c.vocab_size);
        return;
    }
    for (int r = 0; r < m->B; r++)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, m->c.num_labels, C, 1.0f, gpt2_p(m, GPT2_SCORE), C,
                    m->lnf + ((size_t)r * m->T + m->pool[r]) * C, 1, 0.0f,
                    m->logits + (size_t)r * m->c.num_labels, 1);
}

/* ---- buffers -------------------------------------------------------------------- */

/* Floats of the activations for [B, T] (layer block and the rest) and of the backward
 * scratch; 0 when a size overflows. */
static size_t acts_floats(const gpt2_model *m, int B, int T, int train, size_t *layer,
                          size_t *scratch) {
    size_t N = (size_t)B * T, C = (size_t)m->c.n_embd, att, nc, head, L, all;
    int bad = gpt2_mul((size_t)B * m->c.n_head, (size_t)T * T, &att) || gpt2_mul(N, C, &nc);
    bad =
        bad || gpt2_mul(m->c.num_labels ? (size_t)B : N,
                        m->c.num_labels ? (size_t)m->c.num_labels : (size_t)m->c.vocab_size, &head);
    bad = bad || nc > SIZE_MAX / 64 || att > SIZE_MAX / 4;
    *layer = 16 * nc + 4 * N + att; /* ln1 atty res2 ln2 res3 (5) + qkv (3) + fch, gelu (8) */
    bad = bad || *layer < att || gpt2_mul(*layer, train ? (size_t)m->c.n_layer : 1, &L);
    all = L + 2 * nc + 2 * N + head;
    *scratch = 10 * nc + att + N; /* dres dln datty (1 each), dqkv (3), dfch (4), datt, ones */
    return bad || all < L || all > (SIZE_MAX / sizeof(float)) / 2 ? 0 : all;
}

static int alloc_acts(gpt2_model *m, int B, int T, int train, acem_error *err) {
    if (m->has_acts && m->B == B && m->T == T && m->train == train) return 0;
    gpt2_free_acts(m);
    size_t layer, scratch, all = acts_floats(m, B, T, train, &layer, &scratch);
    size_t N = (size_t)B * T, nc = N * (size_t)m->c.n_embd;
    if (!all || !(m->acts = malloc(all * sizeof(float))) ||
        !(m->pool = calloc((size_t)B, sizeof(int))) ||
        (train && !(m->scratch = malloc(scratch * sizeof(float))))) {
        gpt2_fail(err, "gpt2: out of memory for a batch of %d x %d", B, T);
        return -1;
    }
    m->B = B, m->T = T, m->train = train, m->layer_size = layer, m->has_acts = 1;
    float *p = m->acts + layer * (train ? (size_t)m->c.n_layer : 1);
    m->encoded = p, p += nc;
    m->lnf = p, p += nc;
    m->lnf_mean = p, p += N;
    m->lnf_rstd = p, p += N;
    m->logits = p;
    if (train) {
        p = m->scratch;
        m->dres = p, p += nc;
        m->dln = p, p += nc;
        m->datty = p, p += nc;
        m->dqkv = p, p += 3 * nc;
        m->dfch = p, p += 4 * nc;
        m->datt = p, p += (size_t)B * m->c.n_head * T * T;
        m->ones = p;
        for (size_t i = 0; i < N; i++)
            m->ones[i] = 1.0f;
    }
    return 0;
}

static int check_batch(const gpt2_model *m, const gpt2_batch *b, acem_error *err) {
    const char *bad = NULL;
    if (b->B < 1 || b->T < 1)
        bad = "a batch needs at least one row of one token";
    else if (b->T > m->c.n_positions)
        bad = "the batch is longer than n_positions";
    for (size_t i = 0; !bad && i < (size_t)b->B * b->T; i++)
        if (b->ids[i] < 0 || b->ids[i] >= m->c.vocab_size)
            bad = "a token id is outside the vocabulary";
    for (int r = 0; !bad && r < b->B; r++)
        if (b->len[r] < 1 || b->len[r] > b->T) bad = "a row's length is outside 1..T";
    if (!bad) return 0;
    gpt2_fail(err, "gpt2: %s", bad);
    return -1;
}

int gpt2_forward(gpt2_model *m, const gpt2_batch *b, int train, const float **logits,
                 acem_error *err) {
    if (check_batch(m, b, err) || alloc_acts(m, b->B, b->T, train, err)) return -1;
    if (m->c.num_labels && pool_positions(m, b, err)) return -1;
    int N = b->B * b->T, C = m->c.n_embd;
    encoder_forward(m->encoded, b->ids, gpt2_p(m, GPT2_WTE), gpt2_p(m, GPT2_WPE), b->B, b->T, C);
    for (int l = 0; l < m->c.n_layer; l++)
        block_forward(m, l, l ? layer_acts(m, l - 1).res3 : m->encoded, b->len);
    layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, layer_acts(m, m->c.n_layer - 1).res3,
                      gpt2_p(m, GPT2_LNF_W), gpt2_p(m, GPT2_LNF_B), N, C, (float)m->c.ln_eps);
    head_forward(m);
    *logits = m->logits;
    return 0;
}

/* ---- backward ------------------------------------------------------------------- */

/* Softmax cross-entropy of one row of n logits against target, in place: the row becomes
 * (softmax - onehot) * scale; returns -log softmax[target]. */
static double crossentropy_row(float *z, int n, int target, float scale) {
    float mx = -INFINITY;
    double sum = 0;
    for (int i = 0; i < n; i++)
        mx = z[i] > mx ? z[i] : mx;
    for (int i = 0; i < n; i++)
        sum += exp((double)(z[i] - mx));
    double loss = log(sum) - (double)(z[target] - mx);
    for (int i = 0; i < n; i++)
        z[i] = (float)(exp((double)(z[i] - mx)) / sum) * scale;
    z[target] -= scale;
    return loss;
}

/* Language model: position t of row b predicts ids[b, t+1] when t + 1 < len[b] (the other
 * rows of dlogits are 0); the loss is the mean over those positions. dlogits overwrite
 * logits. */
static int lm_loss_backward(gpt2_model *m, const gpt2_batch *b, float *loss, acem_error *err) {
    int V = m->c.vocab_size;
    size_t count = 0;
    for (int r = 0; r < b->B; r++)
        count += (size_t)(b->len[r] - 1);
    if (!count) {
        gpt2_fail(err, "gpt2: no row has two tokens to predict one from");
        return -1;
    }
    int N = b->B * b->T;
    double *row = calloc((size_t)N, sizeof *row), total = 0;
    if (!row) {
        gpt2_fail(err, "gpt2: out of memory for the loss");
        return -1;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        int r = i / b->T, t = i % b->T;
        float *z = m->logits + (size_t)i * V;
        if (t + 1 < b->len[r])
            row[i] = crossentropy_row(z, V, b->ids[i + 1], 1.0f / (float)count);
        else
            memset(z, 0, (size_t)V * sizeof *z);
    }
    for (int i = 0; i < N; i++)
        total += row[i]; /* in order: no reduction across threads */
    free(row);
    *loss = (float)(total / (double)count);
    return 0;
}

/* Classifier: the mean over rows of the cross-entropy of the pooled logits. */
static int cls_loss_backward(gpt2_model *m, const gpt2_batch *b, float *loss, acem_error *err) {
    int K = m->c.num_labels;
    if (K < 2) {
        gpt2_fail(err, "gpt2: a classifier of one label is a regression (transformers' MSE), which "
                       "acem does not train");
        return -1;
    }
    for (int r = 0; r < b->B; r++)
        if (!b->labels || b->labels[r] < 0 || b->labels[r] >= K) {
            gpt2_fail(err, "gpt2: a label is missing or outside 0..%d", K - 1);
            return -1;
        }
    double total = 0;
    for (int r = 0; r < b->B; r++)
        total += crossentropy_row(m->logits + (size_t)r * K, K, b->labels[r], 1.0f / (float)b->B);
    *loss = (float)(total / b->B);
    return 0;
}

/* dinp[N,C] = dout[N,OC] W^T; dW[C,OC] += inp^T dout; db[OC] += dout^T 1. */
static void matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *ones, int N, int C, int OC) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, OC, 1.0f, dout, OC, w, OC, 0.0f,
                dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dw,
                OC);
    cblas_sgemv(CblasRowMajor, CblasTrans, N, OC, 1.0f, dout, OC, ones, 1, 1.0f, db, 1);
}

/* With xhat = (x - mean) rstd and g = dout * w: dinp += rstd (g - mean(g) - xhat mean(g xhat))
 * per row; dw += sum_rows dout xhat, db += sum_rows dout, each channel summed by one thread. */
static void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                               const float *inp, const float *w, const float *mean,
                               const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C, *g = dout + (size_t)r * C;
        float mg = 0, mgx = 0;
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - mean[r]) * rstd[r];
            mg += g[c] * w[c], mgx += g[c] * w[c] * xh;
        }
        mg /= C, mgx /= C;
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - mean[r]) * rstd[r];
            dinp[(size_t)r * C + c] += rstd[r] * (g[c] * w[c] - mg - xh * mgx);
        }
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float sw = 0, sb = 0;
        for (int r = 0; r < N; r++) {
            float g = dout[(size_t)r * C + c];
            sw += g * (inp[(size_t)r * C + c] - mean[r]) * rstd[r], sb += g;
        }
        dw[c] += sw, db[c] += sb;
    }
}

/* The softmax's backward on one [T,T] block, in place over dP: dS = P (dP - rowsum(P dP)). */
static void softmax_backward(float *d, const float *a, int T) {
    for (int i = 0; i < T; i++) {
        float *di = d + (size_t)i * T, s = 0;
        const float *ai = a + (size_t)i * T;
        for (int j = 0; j < T; j++)
            s += ai[j] * di[j];
        for (int j = 0; j < T; j++)
            di[j] = ai[j] * (di[j] - s);
    }
}

/* Per (b, h), with S = q k^T / sqrt(hs), P = softmax(S), y = P v:
 * dP = dy v^T, dv = P^T dy, dS = softmax'(dP), dq = dS k / sqrt(hs), dk = dS^T q / sqrt(hs).
 * dqkv [N,3C] is overwritten; datt [B,NH,T,T] is scratch. */
static void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                               const float *att, int B, int T, int C, int NH) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        size_t o = (size_t)b * T * C3 + (size_t)h * hs;
        const float *q = qkv + o, *k = q + C, *v = q + 2 * C, *a = att + (size_t)bh * T * T;
        const float *dy = dout + (size_t)b * T * C + h * hs;
        float *dq = dqkv + o, *dk = dq + C, *dv = dq + 2 * C, *d = datt + (size_t)bh * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dy, C, v, C3, 0.0f, d,
                    T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, dy, C, 0.0f, dv,
                    C3);
        softmax_backward(d, a, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, d, T, k, C3, 0.0f,
                    dq, C3);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, d, T, q, C3, 0.0f, dk,
                    C3);
    }
}

/* d gelu_new / dx, applied in place: d[i] *= gelu'(x[i]). */
static void gelu_backward(float *d, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float u = GELU_K * (x[i] + 0.044715f * x[i] * x[i] * x[i]), th = tanhf(u);
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * x[i] * x[i]);
        d[i] *= 0.5f * (1.0f + th) + 0.5f * x[i] * (1.0f - th * th) * du;
    }
}

/* Gradient of parameter p of layer l. */
static float *lg(const gpt2_model *m, int p, int l) {
    return m->grads + m->off[p] + (size_t)l * (m->numel[p] / (size_t)m->c.n_layer);
}

/* One block backward: dres holds d res3 on entry and d inp on return. */
static void block_backward(gpt2_model *m, int l, const float *inp) {
    gpt2_layer_acts a = layer_acts(m, l);
    int N = m->B * m->T, C = m->c.n_embd;
    matmul_backward(m->dfch, lg(m, GPT2_FCPROJ_W, l), lg(m, GPT2_FCPROJ_B, l), m->dres, a.fch_gelu,
                    lp(m, GPT2_FCPROJ_W, l), m->ones, N, 4 * C, C);
    gelu_backward(m->dfch, a.fch, (size_t)N * 4 * C);
    matmul_backward(m->dln, lg(m, GPT2_FC_W, l), lg(m, GPT2_FC_B, l), m->dfch, a.ln2,
                    lp(m, GPT2_FC_W, l), m->ones, N, C, 4 * C);
    layernorm_backward(m->dres, lg(m, GPT2_LN2_W, l), lg(m, GPT2_LN2_B, l), m->dln, a.res2,
                       lp(m, GPT2_LN2_W, l), a.ln2_mean, a.ln2_rstd, N, C);
    matmul_backward(m->datty, lg(m, GPT2_ATTPROJ_W, l), lg(m, GPT2_ATTPROJ_B, l), m->dres, a.atty,
                    lp(m, GPT2_ATTPROJ_W, l), m->ones, N, C, C);
    attention_backward(m->dqkv, m->datt, m->datty, a.qkv, a.att, m->B, m->T, C, m->c.n_head);
    matmul_backward(m->dln, lg(m, GPT2_QKV_W, l), lg(m, GPT2_QKV_B, l), m->dqkv, a.ln1,
                    lp(m, GPT2_QKV_W, l), m->ones, N, C, 3 * C);
    layernorm_backward(m->dres, lg(m, GPT2_LN1_W, l), lg(m, GPT2_LN1_B, l), m->dln, inp,
                       lp(m, GPT2_LN1_W, l), a.ln1_mean, a.ln1_rstd, N, C);
}

/* dlnf from the head's dlogits, and the head's weight gradient. */
static void head_backward(gpt2_model *m) {
    int N = m->B * m->T, C = m->c.n_embd, V = m->c.vocab_size, K = m->c.num_labels;
    if (!K) {
        int untied = m->numel[GPT2_LM_HEAD] != 0;
        const float *w = gpt2_p(m, untied ? GPT2_LM_HEAD : GPT2_WTE);
        float *dw = m->grads + m->off[untied ? GPT2_LM_HEAD : GPT2_WTE];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, V, 1.0f, m->logits, V, w, C,
                    0.0f, m->dln, C);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, N, 1.0f, m->logits, V, m->lnf, C,
                    1.0f, dw, C);
        return;
    }
    memset(m->dln, 0, (size_t)N * C * sizeof(float));
    for (int r = 0; r < m->B; r++) {
        size_t row = (size_t)r * m->T + m->pool[r];
        const float *dz = m->logits + (size_t)r * K;
        cblas_sgemv(CblasRowMajor, CblasTrans, K, C, 1.0f, gpt2_p(m, GPT2_SCORE), C, dz, 1, 0.0f,
                    m->dln + row * C, 1);
        cblas_sger(CblasRowMajor, K, C, 1.0f, dz, 1, m->lnf + row * C, 1,
                   m->grads + m->off[GPT2_SCORE], C);
    }
}

/* dwte[ids[r]] += d[r], dwpe[t] += sum_b d[b,t]: each channel block, or each position, by
 * one thread, rows in order. */
static void encoder_backward(float *dwte, float *dwpe, const float *d, const int *ids, int B, int T,
                             int C) {
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 16)
        for (int r = 0; r < B * T; r++)
            for (int c = c0; c < C && c < c0 + 16; c++)
                dwte[(size_t)ids[r] * C + c] += d[(size_t)r * C + c];
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                dwpe[(size_t)t * C + c] += d[((size_t)b * T + t) * C + c];
}

int gpt2_backward(gpt2_model *m, const gpt2_batch *b, float *loss, acem_error *err) {
    if (!m->has_acts || !m->train || m->B != b->B || m->T != b->T) {
        gpt2_fail(err, "gpt2: backward without a training forward of this batch");
        return -1;
    }
    if (!m->grads && !(m->grads = malloc(m->n_params * sizeof(float)))) {
        gpt2_fail(err, "gpt2: out of memory for the gradients");
        return -1;
    }
    if (m->c.num_labels ? cls_loss_backward(m, b, loss, err) : lm_loss_backward(m, b, loss, err))
        return -1;
    memset(m->grads, 0, m->n_params * sizeof(float));
    int N = b->B * b->T, C = m->c.n_embd, L = m->c.n_layer;
    head_backward(m);
    memset(m->dres, 0, (size_t)N * C * sizeof(float));
    layernorm_backward(m->dres, m->grads + m->off[GPT2_LNF_W], m->grads + m->off[GPT2_LNF_B],
                       m->dln, layer_acts(m, L - 1).res3, gpt2_p(m, GPT2_LNF_W), m->lnf_mean,
                       m->lnf_rstd, N, C);
    for (int l = L - 1; l >= 0; l--)
        block_backward(m, l, l ? layer_acts(m, l - 1).res3 : m->encoded);
    encoder_backward(m->grads + m->off[GPT2_WTE], m->grads + m->off[GPT2_WPE], m->dres, b->ids,
                     b->B, b->T, C);
    return 0;
}

const float *gpt2_matmul_input(const gpt2_model *m, int p, int l) {
    if (!m->has_acts || !m->train || l < 0 || l >= m->c.n_layer) return NULL;
    gpt2_layer_acts a = layer_acts(m, l);
    switch (p) {
    case GPT2_QKV_W: return a.ln1;
    case GPT2_ATTPROJ_W: return a.atty;
    case GPT2_FC_W: return a.ln2;
    case GPT2_FCPROJ_W: return a.fch_gelu;
    default: return NULL;
    }
}
