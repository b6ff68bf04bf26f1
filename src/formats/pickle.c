/* pickle.c — a restricted unpickler for the data.pkl of torch.save state_dicts.
 *
 * A pickle is a program for a stack machine; Python's unpickler runs it and calls whatever
 * globals it names, which is how a .bin file executes code. This one implements only the
 * opcodes protocol 2 state_dicts use and knows only these globals, by name, as inert
 * values: collections.OrderedDict (called with no arguments: an empty dict),
 * torch._utils._rebuild_tensor_v2 (a tensor view of a storage), torch._utils.
 * _rebuild_parameter (the tensor it wraps) and torch.{Double,Float,Half,BFloat16,Long,Int,
 * Short,Char,Byte,Bool}Storage (only inside a persistent id: a storage in the archive).
 * Any other opcode, global or call, or any malformed structure, is an error; nothing is
 * executed. Objects live in one list freed at the end, so no recursion depends on the
 * input; the stack, the memo and MARK nesting are bounded. */
#include "formats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum kind {
    K_NONE,
    K_BOOL,
    K_INT,
    K_FLOAT,
    K_STR,
    K_TUPLE,
    K_LIST,
    K_DICT, /* items: key, value, key, value, ... */
    K_GLOBAL,
    K_STORAGE,
    K_TENSOR
} kind;

enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE };

typedef struct obj {
    kind k;
    int64_t i;     /* int, bool; global: G_*; storage: numel */
    char *s;       /* str; storage: key */
    acem_dtype dt; /* storage class / storage */
    struct obj **items;
    size_t n, cap;
    torch_ref *ref; /* tensor */
} obj;

typedef struct vm {
    const char *path;
    const unsigned char *p, *end, *start;
    acem_error *err;
    obj **all; /* every object, for freeing */
    size_t n_all, cap_all;
    obj **stack; /* grown by doubling up to ACEM_PICKLE_MAX_STACK */
    size_t sp, stack_cap;
    size_t marks[ACEM_PICKLE_MAX_MARKS];
    size_t n_marks;
    obj **memo;
    size_t memo_cap;
} vm;

static const struct {
    const char *name;
    acem_dtype dt;
} storages[] = {
    {"DoubleStorage", ACEM_DT_F64},    {"FloatStorage", ACEM_DT_F32}, {"HalfStorage", ACEM_DT_F16},
    {"BFloat16Storage", ACEM_DT_BF16}, {"LongStorage", ACEM_DT_I64},  {"IntStorage", ACEM_DT_I32},
    {"ShortStorage", ACEM_DT_I16},     {"CharStorage", ACEM_DT_I8},   {"ByteStorage", ACEM_DT_U8},
    {"BoolStorage", ACEM_DT_BOOL},
};

static int bad(vm *m, const char *what) {
    return acem_fail(m->err, "%s: data.pkl: %s at byte %zu (refused; nothing was executed)",
                     m->path, what, (size_t)(m->p - m->start));
}

static obj *make(vm *m, kind k) {
    if (m->n_all == m->cap_all) {
        size_t cap = m->cap_all ? 2 * m->cap_all : 256;
        obj **grown = realloc(m->all, cap * sizeof *grown);
        if (!grown) {
            bad(m, "out of memory");
            return NULL;
        }
        m->all = grown;
        m->cap_all = cap;
    }
    obj *o = calloc(1, sizeof *o);
    if (!o) {
        bad(m, "out of memory");
        return NULL;
    }
    o->k = k;
    m->all[m->n_all++] = o;
    return o;
}

static int add_item(vm *m, obj *o, obj *x) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 4;
        obj **grown = realloc(o->items, cap * sizeof *grown);
        if (!grown) return bad(m, "out of memory");
        o->items = grown;
        o->cap = cap;
    }
    o->items[o->n++] = x;
    return 0;
}

static int push(vm *m, obj *o) {
    if (!o) return -1;
    if (m->sp == m->stack_cap) {
        if (m->stack_cap >= ACEM_PICKLE_MAX_STACK) return bad(m, "stack deeper than the limit");
        size_t cap = m->stack_cap ? 2 * m->stack_cap : 64;
        if (cap > ACEM_PICKLE_MAX_STACK) cap = ACEM_PICKLE_MAX_STACK;
        obj **grown = realloc(m->stack, cap * sizeof *grown);
        if (!grown) return bad(m, "out of memory");
        m->stack = grown;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = o;
    return 0;
}

static obj *pop(vm *m) {
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp <= floor) {
        bad(m, "stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

static int take(vm *m, size_t n, const unsigned char **bytes) {
    if ((size_t)(m->end - m->p) < n) return bad(m, "truncated opcode argument");
    *bytes = m->p;
    m->p += n;
    return 0;
}

/* Pops everything above the last MARK into a new tuple/list-like object of kind k. */
static obj *pop_mark(vm *m, kind k) {
    if (m->n_marks == 0) {
        bad(m, "no MARK on the stack");
        return NULL;
    }
    size_t at = m->marks[--m->n_marks];
    obj *o = make(m, k);
    for (size_t i = at; o && i < m->sp; i++)
        if (add_item(m, o, m->stack[i])) return NULL;
    m->sp = at;
    return o;
}

static int memo_put(vm *m, uint64_t i) {
    if (i >= ACEM_PICKLE_MAX_MEMO) return bad(m, "memo index beyond the limit");
    if (m->sp == 0) return bad(m, "memo store of an empty stack");
    if (i >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= i)
            cap *= 2;
        obj **grown = realloc(m->memo, cap * sizeof *grown);
        if (!grown) return bad(m, "out of memory");
        memset(grown + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *grown);
        m->memo = grown;
        m->memo_cap = cap;
    }
    m->memo[i] = m->stack[m->sp - 1];
    return 0;
}

static int memo_get(vm *m, uint64_t i) {
    if (i >= m->memo_cap || !m->memo[i]) return bad(m, "memo lookup of an unset index");
    return push(m, m->memo[i]);
}

static int global(vm *m) {
    const unsigned char *a = m->p, *nl1 = memchr(a, '\n', (size_t)(m->end - a));
    const unsigned char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(m->end - nl1 - 1)) : NULL;
    if (!nl2) return bad(m, "truncated GLOBAL");
    int ml = (int)(nl1 - a), nlen = (int)(nl2 - nl1 - 1);
    const char *mod = (const char *)a, *name = (const char *)nl1 + 1;
    m->p = nl2 + 1;
    obj *o = make(m, K_GLOBAL);
    if (!o) return -1;
#define IS(s, l, lit) ((l) == (int)strlen(lit) && memcmp((s), (lit), (size_t)(l)) == 0)
    if (IS(mod, ml, "collections") && IS(name, nlen, "OrderedDict"))
        o->i = G_ORDERED_DICT;
    else if (IS(mod, ml, "torch._utils") && IS(name, nlen, "_rebuild_tensor_v2"))
        o->i = G_REBUILD_TENSOR;
    else if (IS(mod, ml, "torch._utils") && IS(name, nlen, "_rebuild_parameter"))
        o->i = G_REBUILD_PARAMETER;
    else {
        o->i = -1;
        for (size_t i = 0; IS(mod, ml, "torch") && i < sizeof storages / sizeof *storages; i++)
            if (IS(name, nlen, storages[i].name)) {
                o->i = G_STORAGE;
                o->dt = storages[i].dt;
            }
    }
#undef IS
    if (o->i < 0)
        return acem_fail(m->err,
                         "%s: data.pkl: global %.*s.%.*s is not allowed (refused; nothing was "
                         "executed)",
                         m->path, ml < 64 ? ml : 64, mod, nlen < 64 ? nlen : 64, name);
    return push(m, o);
}

static bool is_int(const obj *o) { return o && o->k == K_INT; }

/* A tuple of at most ACEM_MAX_DIMS non-negative ints. */
static int dims(vm *m, const obj *t, uint64_t *out, int *nd) {
    if (!t || t->k != K_TUPLE || t->n > ACEM_MAX_DIMS) return bad(m, "malformed tensor size");
    for (size_t i = 0; i < t->n; i++) {
        if (!is_int(t->items[i]) || t->items[i]->i < 0) return bad(m, "malformed tensor size");
        out[i] = (uint64_t)t->items[i]->i;
    }
    *nd = (int)t->n;
    return 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static obj *rebuild_tensor(vm *m, const obj *args) {
    if (args->n < 6 || args->n > 7 || args->items[0]->k != K_STORAGE || !is_int(args->items[1]) ||
        args->items[1]->i < 0 || args->items[4]->k != K_BOOL || args->items[5]->k != K_DICT) {
        bad(m, "malformed _rebuild_tensor_v2 arguments");
        return NULL;
    }
    obj *t = make(m, K_TENSOR);
    torch_ref *r = t ? calloc(1, sizeof *r) : NULL;
    if (!r) {
        if (t) bad(m, "out of memory");
        return NULL;
    }
    t->ref = r;
    const obj *s = args->items[0];
    int nd2;
    r->dtype = s->dt;
    r->storage_numel = (uint64_t)s->i;
    r->offset = (uint64_t)args->items[1]->i;
    if (!(r->key = acem_strdup(s->s, m->err)) || dims(m, args->items[2], r->size, &r->ndim) ||
        dims(m, args->items[3], r->stride, &nd2))
        return NULL;
    if (nd2 != r->ndim) {
        bad(m, "tensor size and stride differ in length");
        return NULL;
    }
    return t;
}

/* ('storage', torch.XStorage, key, location, numel) */
static int persistent_id(vm *m) {
    obj *pid = pop(m);
    if (!pid) return -1;
    obj **x = pid->items;
    if (pid->k != K_TUPLE || pid->n != 5 || x[0]->k != K_STR || strcmp(x[0]->s, "storage") ||
        x[1]->k != K_GLOBAL || x[1]->i != G_STORAGE || x[2]->k != K_STR || x[3]->k != K_STR ||
        !is_int(x[4]) || x[4]->i < 0)
        return bad(m, "persistent id is not ('storage', torch.*Storage, key, location, numel)");
    obj *s = make(m, K_STORAGE);
    if (!s) return -1;
    s->dt = x[1]->dt;
    s->s = x[2]->s; /* owned by the key string object */
    s->i = x[4]->i;
    return push(m, s);
}

static int reduce(vm *m) {
    obj *args = pop(m), *fn = args ? pop(m) : NULL;
    if (!fn) return -1;
    if (fn->k != K_GLOBAL || args->k != K_TUPLE) return bad(m, "REDUCE of a non-allowed callable");
    if (fn->i == G_ORDERED_DICT && args->n == 0) return push(m, make(m, K_DICT));
    if (fn->i == G_REBUILD_TENSOR) {
        obj *t = rebuild_tensor(m, args);
        return t ? push(m, t) : -1;
    }
    if (fn->i == G_REBUILD_PARAMETER && (args->n == 3 || args->n == 4) &&
        args->items[0]->k == K_TENSOR)
        return push(m, args->items[0]);
    return bad(m, "REDUCE of a non-allowed callable or with unexpected arguments");
}

static int set_items(vm *m, obj *dict, obj *const *kv, size_t n) {
    if (!dict || dict->k != K_DICT || n % 2) return bad(m, "SETITEM(S) on a non-dict");
    for (size_t i = 0; i < n; i++)
        if (add_item(m, dict, kv[i])) return -1;
    return 0;
}

static int string(vm *m, size_t len_bytes) {
    const unsigned char *b = NULL, *s = NULL;
    if (take(m, len_bytes, &b)) return -1;
    uint64_t n = acem_le(b, (int)len_bytes);
    if (n > (uint64_t)(m->end - m->p)) return bad(m, "string length beyond the end of data.pkl");
    if (take(m, (size_t)n, &s)) return -1;
    if (memchr(s, 0, (size_t)n) || !acem_utf8_valid(s, (size_t)n))
        return bad(m, "string that is not UTF-8 without NUL");
    obj *o = make(m, K_STR);
    if (!o || !(o->s = acem_alloc(n + 1, 1, "a pickle string", m->err))) return -1;
    memcpy(o->s, s, (size_t)n);
    return push(m, o);
}

static int integer(vm *m, int n, bool is_signed) {
    const unsigned char *b = NULL;
    if (take(m, (size_t)n, &b)) return -1;
    uint64_t v = acem_le(b, n);
    obj *o = make(m, K_INT);
    if (!o) return -1;
    o->i = is_signed && n < 8 && (v >> (8 * n - 1)) ? (int64_t)(v | ~0ULL << (8 * n)) : (int64_t)v;
    return push(m, o);
}

static int step(vm *m, int op, bool *stop) {
    const unsigned char *b = NULL;
    obj *o, *x, *y;
    switch (op) {
    case 0x80: return take(m, 1, &b) || b[0] > 5 ? bad(m, "unknown protocol") : 0;
    case '.': *stop = true; return 0;
    case '(':
        if (m->n_marks >= ACEM_PICKLE_MAX_MARKS) return bad(m, "MARKs nested beyond the limit");
        m->marks[m->n_marks++] = m->sp;
        return 0;
    case '}': return push(m, make(m, K_DICT));
    case ']': return push(m, make(m, K_LIST));
    case ')': return push(m, make(m, K_TUPLE));
    case 'N': return push(m, make(m, K_NONE));
    case 0x88:
    case 0x89:
        if ((o = make(m, K_BOOL))) o->i = op == 0x88;
        return push(m, o);
    case 'K': return integer(m, 1, false);
    case 'M': return integer(m, 2, false);
    case 'J': return integer(m, 4, true);
    case 0x8a:
        if (take(m, 1, &b)) return -1;
        if (b[0] > 8) return bad(m, "LONG1 wider than 64 bits");
        return b[0] == 0 ? push(m, make(m, K_INT)) : integer(m, b[0], true);
    case 'G': {
        if (take(m, 8, &b) || !(o = make(m, K_FLOAT))) return -1;
        return push(m, o); /* value unused */
    }
    case 'X': return string(m, 4);
    case 0x8c: return string(m, 1);
    case 'q': return take(m, 1, &b) || memo_put(m, b[0]);
    case 'r': return take(m, 4, &b) || memo_put(m, acem_le(b, 4));
    case 'h': return take(m, 1, &b) || memo_get(m, b[0]);
    case 'j': return take(m, 4, &b) || memo_get(m, acem_le(b, 4));
    case 'c': return global(m);
    case 't': return push(m, pop_mark(m, K_TUPLE));
    case 0x85:
    case 0x86:
    case 0x87: {
        int n = op - 0x84;
        if (m->sp < (size_t)n || (m->n_marks && m->sp - m->marks[m->n_marks - 1] < (size_t)n))
            return bad(m, "stack underflow");
        if (!(o = make(m, K_TUPLE))) return -1;
        for (int i = 0; i < n; i++)
            if (add_item(m, o, m->stack[m->sp - (size_t)n + (size_t)i])) return -1;
        m->sp -= (size_t)n;
        return push(m, o);
    }
    case 'R': return reduce(m);
    case 'Q': return persistent_id(m);
    case 'b': /* BUILD: a state_dict's _metadata attribute; kept nowhere */
        x = pop(m);
        return !x || m->sp == 0 || m->stack[m->sp - 1]->k != K_DICT || x->k != K_DICT
                   ? bad(m, "BUILD of something other than a dict")
                   : 0;
    case 's':
        y = pop(m);
        x = y ? pop(m) : NULL;
        if (!x) return -1;
        obj *kv[2] = {x, y};
        return set_items(m, m->sp ? m->stack[m->sp - 1] : NULL, kv, 2);
    case 'u':
        if (!(o = pop_mark(m, K_TUPLE))) return -1;
        return set_items(m, m->sp ? m->stack[m->sp - 1] : NULL, o->items, o->n);
    case 'a':
        if (!(x = pop(m))) return -1;
        if (m->sp == 0 || m->stack[m->sp - 1]->k != K_LIST) return bad(m, "APPEND to a non-list");
        return add_item(m, m->stack[m->sp - 1], x);
    case 'e':
        if (!(o = pop_mark(m, K_TUPLE))) return -1;
        if (m->sp == 0 || m->stack[m->sp - 1]->k != K_LIST) return bad(m, "APPENDS to a non-list");
        for (size_t i = 0; i < o->n; i++)
            if (add_item(m, m->stack[m->sp - 1], o->items[i])) return -1;
        return 0;
    default: {
        char what[64];
        snprintf(what, sizeof what, "opcode 0x%02x is not allowed", op);
        m->p--;
        return bad(m, what);
    }
    }
}

void torch_refs_free(torch_ref *refs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(refs[i].name);
        free(refs[i].key);
    }
    free(refs);
}

/* The result must be a dict of str -> tensor. */
static int collect(vm *m, const obj *d, torch_ref **out, size_t *n) {
    if (d->k != K_DICT) return bad(m, "the pickle is not a dict of tensors (a state_dict)");
    torch_ref *refs = acem_alloc(d->n / 2 + 1, sizeof *refs, "tensor references", m->err);
    if (!refs) return -1;
    size_t k = 0;
    for (size_t i = 0; i < d->n; i += 2, k++) {
        const obj *key = d->items[i], *v = d->items[i + 1];
        if (key->k != K_STR || v->k != K_TENSOR) {
            torch_refs_free(refs, k);
            return acem_fail(m->err,
                             "%s: data.pkl: entry %zu is not a name -> tensor pair (not a "
                             "state_dict)",
                             m->path, i / 2);
        }
        refs[k] = *v->ref;
        refs[k].name = acem_strdup(key->s, m->err);
        refs[k].key = acem_strdup(v->ref->key, m->err);
        if (!refs[k].name || !refs[k].key) {
            torch_refs_free(refs, k + 1);
            return -1;
        }
    }
    *out = refs;
    *n = k;
    return 0;
}

int pickle_state_dict(const char *path, const unsigned char *buf, size_t len, torch_ref **out,
                      size_t *n, acem_error *err) {
    *out = NULL;
    *n = 0;
    vm m = {.path = path, .p = buf, .start = buf, .end = buf + len, .err = err};
    int rc = -1;
    bool stop = false;
    while (!stop && m.p < m.end)
        if (step(&m, *m.p++, &stop)) goto out;
    if (!stop)
        bad(&m, "no STOP opcode");
    else if (m.p != m.end)
        bad(&m, "bytes after STOP");
    else if (m.sp != 1 || m.n_marks)
        bad(&m, "STOP with a stack other than one object");
    else
        rc = collect(&m, m.stack[0], out, n);
out:
    for (size_t i = 0; i < m.n_all; i++) {
        obj *o = m.all[i];
        if (o->k == K_STR) free(o->s);
        if (o->ref) {
            free(o->ref->key);
            free(o->ref);
        }
        free(o->items);
        free(o);
    }
    free(m.all);
    free(m.stack);
    free(m.memo);
    return rc;
}
