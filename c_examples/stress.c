/*
 * stress.c: a reliability workout for the C interface, meant to run under AddressSanitizer
 * and UndefinedBehaviorSanitizer (the test suite builds it with -fsanitize=address,undefined).
 * Several threads share two plans and call them many times with varied shapes, layouts,
 * strides, masks, key lengths, head sinks and lse outputs, each tensor in a buffer of
 * exactly the elements its shape reaches, sometimes through an engine's parallel-for;
 * between good calls they make bad ones (NULL pointers, inconsistent or overflowing shapes,
 * overlapping outputs, bad scales and configs, unknown element types, misaligned 16-bit
 * data, struct sizes no version has, bad key lengths, head sinks and worker counts) and
 * create and destroy plans of their own.
 *
 *   usage: stress [ITERATIONS_PER_THREAD]   (default 300)
 *
 * Checked: every good call succeeds, writes only the rows of its output view (padding
 * between rows keeps its sentinel), gives finite outputs within the range of the values, is
 * bitwise repeatable (on the plan's threads or the engine's parallel-for), and with one
 * cluster matches dense attention; every bad call returns
 * the expected status with a message naming the function and writes nothing. Prints
 * "stress: ok" and exits 0 when everything held.
 */
#include <smyrf.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, D = 8 };

/* Bits of a float no computation produces: marks memory a call must not write. */
static const uint32_t SENTINEL = 0x7FC05EEDu;

/* Two plans every thread shares: clustered (own pool of 2 threads) and one cluster of one
 * round. */
static smyrf_plan *shared_clustered, *shared_exact;

typedef struct {
    uint64_t state;
} rng;

static uint64_t next_u64(rng *r) {
    /* xorshift64* */
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return r->state * 2685821657736338717ull;
}

static size_t below(rng *r, size_t n) { return (size_t)(next_u64(r) % n); }

static float uniform(rng *r) { return (float)(next_u64(r) >> 40) / 8388608.0f - 1.0f; }

typedef struct {
    size_t batch, heads, seq_len, dim, batch_stride, head_stride, seq_stride;
} shape;

/* Elements a view reaches: (B-1)·bs + (H-1)·hs + (N-1)·ss + dim. */
static size_t extent(const shape *s) {
    return (s->batch - 1) * s->batch_stride + (s->heads - 1) * s->head_stride +
           (s->seq_len - 1) * s->seq_stride + s->dim;
}

/* [B, H, N, D], [B, N, H, D], or padded [B, H, N, D] (gaps between rows, heads, batches). */
static shape layout(rng *r, size_t b, size_t h, size_t n, size_t dim) {
    shape s = {b, h, n, dim, 0, 0, 0};
    switch (below(r, 3)) {
    case 0:
        s.seq_stride = dim;
        s.head_stride = n * dim;
        s.batch_stride = h * n * dim;
        break;
    case 1:
        s.head_stride = dim;
        s.seq_stride = h * dim;
        s.batch_stride = n * h * dim;
        break;
    default:
        s.seq_stride = dim + 1 + below(r, 3);
        s.head_stride = n * s.seq_stride + below(r, 4);
        s.batch_stride = h * s.head_stride + below(r, 4);
        break;
    }
    return s;
}

/* A float view: the initialiser (which sets struct_size), then the shape's strides. */
static smyrf_tensor tensor(const shape *s, const float *data) {
    smyrf_tensor t = smyrf_tensor_bhnd(data, SMYRF_DTYPE_F32, s->batch, s->heads, s->seq_len,
                                       s->dim);
    t.batch_stride = s->batch_stride;
    t.head_stride = s->head_stride;
    t.seq_stride = s->seq_stride;
    return t;
}

static smyrf_tensor_mut tensor_mut(const shape *s, float *data) {
    smyrf_tensor_mut t = smyrf_tensor_mut_bhnd(data, SMYRF_DTYPE_F32, s->batch, s->heads,
                                               s->seq_len, s->dim);
    t.batch_stride = s->batch_stride;
    t.head_stride = s->head_stride;
    t.seq_stride = s->seq_stride;
    return t;
}

/* An engine's parallel-for that runs the tasks on the calling thread, last index first (any
 * order is allowed); it counts its calls so a refused call can show it never ran. */
typedef struct {
    long calls;
} serial_engine;

static void run_serially(void *engine, size_t n, smyrf_task_fn task, void *context) {
    ((serial_engine *)engine)->calls++;
    for (size_t i = n; i-- > 0;) {
        task(context, i);
    }
}

static float *sentinel_buffer(size_t len) {
    float *p = malloc(len * sizeof *p);
    if (p) {
        for (size_t i = 0; i < len; i++) {
            memcpy(&p[i], &SENTINEL, sizeof SENTINEL);
        }
    }
    return p;
}

static int is_sentinel(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits == SENTINEL;
}

static int all_sentinel(const float *p, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (!is_sentinel(p[i])) {
            return 0;
        }
    }
    return 1;
}

static float magnitude(float x) { return x < 0 ? -x : x; }

/* A failed check: report and count. */
typedef struct {
    int id;
    rng r;
    long good, bad, failures, engine_calls;
} worker;

#define CHECK(w, cond, ...)                                                                    \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            (w)->failures++;                                                                   \
            fprintf(stderr, "thread %d: check failed at line %d: %s: ", (w)->id, __LINE__,     \
                    #cond);                                                                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, " [%s]\n", smyrf_last_error_message());                            \
        }                                                                                      \
    } while (0)

/* The buffers of one call. */
typedef struct {
    shape qs, ks, vs, os;
    float *q, *k, *v, *out, *lse, *sinks;
    uint8_t *mask;
    int32_t *lengths;
    size_t out_len, lse_len;
} call;

static void free_call(call *c) {
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    free(c->lse);
    free(c->sinks);
    free(c->mask);
    free(c->lengths);
}

/* The call's options: its mask, key lengths, head sinks and (with `lse`) lse output. */
static smyrf_call_args call_args(const call *c, int lse) {
    smyrf_call_args a = smyrf_call_args_default();
    a.key_mask = c->mask;
    a.key_lengths = c->lengths;
    a.head_sinks = c->sinks;
    a.lse_out = lse ? c->lse : NULL;
    return a;
}

/* Random consistent shapes and exactly sized buffers; 0 when memory ran out. */
static int make_call(worker *w, call *c) {
    rng *r = &w->r;
    size_t b = 1 + below(r, 2), hkv = 1 + below(r, 2), hq = hkv * (1 + below(r, 2));
    static const size_t lengths[] = {1, 2, 7, 16, 31, 64, 65, 100};
    size_t nq = lengths[below(r, 8)], nk = lengths[below(r, 8)], dv = 1 + below(r, 12);
    memset(c, 0, sizeof *c);
    c->qs = layout(r, b, hq, nq, D);
    c->ks = layout(r, b, hkv, nk, D);
    c->vs = layout(r, b, hkv, nk, dv);
    c->os = layout(r, b, hq, nq, dv);
    size_t ql = extent(&c->qs), kl = extent(&c->ks), vl = extent(&c->vs);
    c->out_len = extent(&c->os);
    c->lse_len = b * hq * nq;
    c->q = malloc(ql * sizeof *c->q);
    c->k = malloc(kl * sizeof *c->k);
    c->v = malloc(vl * sizeof *c->v);
    c->out = sentinel_buffer(c->out_len);
    c->lse = below(r, 2) ? sentinel_buffer(c->lse_len) : NULL;
    int want_mask = below(r, 3), want_lengths = below(r, 4) == 0, want_sinks = below(r, 4) == 0;
    c->mask = want_mask ? malloc(b * nk) : NULL;
    c->lengths = want_lengths ? malloc(b * sizeof *c->lengths) : NULL;
    c->sinks = want_sinks ? malloc(hq * sizeof *c->sinks) : NULL;
    if (!c->q || !c->k || !c->v || !c->out || (want_mask && !c->mask) ||
        (want_lengths && !c->lengths) || (want_sinks && !c->sinks)) {
        return 0;
    }
    /* Gaps of padded inputs hold NaN: a library reading them would spoil its outputs. */
    for (size_t i = 0; i < ql; i++) c->q[i] = NAN;
    for (size_t i = 0; i < kl; i++) c->k[i] = NAN;
    for (size_t i = 0; i < vl; i++) c->v[i] = NAN;
    for (size_t bi = 0; bi < b; bi++) {
        for (size_t h = 0; h < hq; h++) {
            for (size_t i = 0; i < nq; i++) {
                float *row = c->q + bi * c->qs.batch_stride + h * c->qs.head_stride +
                             i * c->qs.seq_stride;
                for (size_t t = 0; t < D; t++) row[t] = 2.0f * uniform(r);
            }
        }
        for (size_t h = 0; h < hkv; h++) {
            for (size_t j = 0; j < nk; j++) {
                float *krow = c->k + bi * c->ks.batch_stride + h * c->ks.head_stride +
                              j * c->ks.seq_stride;
                float *vrow = c->v + bi * c->vs.batch_stride + h * c->vs.head_stride +
                              j * c->vs.seq_stride;
                for (size_t t = 0; t < D; t++) krow[t] = uniform(r);
                for (size_t t = 0; t < dv; t++) vrow[t] = uniform(r);
            }
        }
    }
    if (c->mask) {
        for (size_t i = 0; i < b * nk; i++) {
            /* Any nonzero byte is a valid key; now and then a batch element has none. */
            c->mask[i] = want_mask == 1 ? (uint8_t)below(r, 4) : (uint8_t)(i >= nk) * 255u;
        }
    }
    if (c->lengths) {
        /* Anything from no keys to all Nk. */
        for (size_t bi = 0; bi < b; bi++) c->lengths[bi] = (int32_t)below(r, nk + 1);
    }
    if (c->sinks) {
        static const float choices[] = {0.0f, 1.5f, -3.0f, 8.0f, -INFINITY};
        for (size_t h = 0; h < hq; h++) c->sinks[h] = choices[below(r, 5)];
    }
    return 1;
}

/* Is key j of batch element b valid? */
static int valid(const call *c, size_t b, size_t j) {
    return (c->mask == NULL || c->mask[b * c->ks.seq_len + j] != 0) &&
           (c->lengths == NULL || (size_t)c->lengths[b] > j);
}

/* Checks the outputs of a successful call: rows finite and within the values' range (zeros
 * for a batch element without valid keys), everything between rows untouched. */
static void check_outputs(worker *w, const call *c, const char *what) {
    const shape *o = &c->os;
    size_t group = c->qs.heads / c->ks.heads;
    char *covered = calloc(c->out_len, 1);
    if (!covered) {
        return;
    }
    for (size_t b = 0; b < o->batch; b++) {
        for (size_t h = 0; h < o->heads; h++) {
            float range = 0.0f;
            int any = 0;
            for (size_t j = 0; j < c->ks.seq_len; j++) {
                if (!valid(c, b, j)) continue;
                any = 1;
                const float *vrow = c->v + b * c->vs.batch_stride +
                                    (h / group) * c->vs.head_stride + j * c->vs.seq_stride;
                for (size_t t = 0; t < o->dim; t++) {
                    range = magnitude(vrow[t]) > range ? magnitude(vrow[t]) : range;
                }
            }
            for (size_t i = 0; i < o->seq_len; i++) {
                size_t at = b * o->batch_stride + h * o->head_stride + i * o->seq_stride;
                for (size_t t = 0; t < o->dim; t++) {
                    float x = c->out[at + t];
                    covered[at + t] = 1;
                    if (any) {
                        CHECK(w, isfinite(x) && magnitude(x) <= range * 1.00001f, "%s: %g", what,
                              (double)x);
                    } else {
                        CHECK(w, x == 0.0f, "%s: empty batch element gave %g", what, (double)x);
                    }
                }
                if (c->lse) {
                    /* Without keys, only the head's sink (if any) is left in the softmax: the
                     * sink itself for dense attention, plus ln R for R hash rounds. */
                    float l = c->lse[(b * c->qs.heads + h) * c->qs.seq_len + i];
                    float alone = c->sinks ? c->sinks[h] : -INFINITY;
                    int ok = any ? isfinite(l)
                             : alone == -INFINITY ? l == -INFINITY
                                                  : isfinite(l) && l >= alone;
                    CHECK(w, ok, "%s: lse %g", what, (double)l);
                }
            }
        }
    }
    for (size_t i = 0; i < c->out_len; i++) {
        CHECK(w, covered[i] || is_sentinel(c->out[i]), "%s wrote between rows at %zu", what, i);
    }
    free(covered);
}

/* A versioned struct inside a buffer larger than any size the library accepts (4096), so
 * that every struct_size tried but SIZE_MAX names bytes that really are there. */
#define BIG_STRUCT(name, type, field)                                                          \
    typedef union {                                                                            \
        type field;                                                                            \
        unsigned char bytes[4104];                                                             \
    } name
BIG_STRUCT(big_tensor, smyrf_tensor, t);
BIG_STRUCT(big_tensor_mut, smyrf_tensor_mut, t);
BIG_STRUCT(big_args, smyrf_call_args, a);
BIG_STRUCT(big_config, smyrf_config, c);

/* A struct_size the library must refuse, for a struct of minimum size `min` and this
 * header's size `full` at the start of a zeroed big buffer `bytes`: 0, one word, below the
 * minimum, above the 4096 limit, SIZE_MAX, or a newer, larger struct with a nonzero byte
 * past this library's layout (an option it cannot honour). */
static size_t bad_size(rng *r, size_t min, size_t full, unsigned char *bytes) {
    switch (below(r, 6)) {
    case 0: return 0;
    case 1: return sizeof(size_t);
    case 2: return min - 1 - below(r, 8);
    case 3: return 4097 + below(r, 7);
    case 4: return SIZE_MAX;
    default: {
        size_t extra = 1 + below(r, 64);
        bytes[full + below(r, extra)] = 1;
        return full + extra;
    }
    }
}

static void good_calls(worker *w) {
    call c;
    if (!make_call(w, &c)) {
        CHECK(w, 0, "out of memory");
        free_call(&c);
        return;
    }
    smyrf_tensor q = tensor(&c.qs, c.q), k = tensor(&c.ks, c.k), v = tensor(&c.vs, c.v);
    smyrf_tensor_mut out = tensor_mut(&c.os, c.out);
    smyrf_call_args args = call_args(&c, 1);
    if (below(&w->r, 4) == 0) {
        args.parallel_workers = 3; /* ignored without a parallel_for */
    }
    smyrf_status s = smyrf_attention(shared_clustered, &q, &k, &v, &out, &args);
    CHECK(w, s == SMYRF_OK, "shared clustered plan: status %u", (unsigned)s);
    check_outputs(w, &c, "clustered");

    /* The same call again, now and then on an engine's parallel-for: bitwise the same,
     * whatever the other threads do meanwhile. */
    float *first = malloc(c.out_len * sizeof *first);
    if (first) {
        memcpy(first, c.out, c.out_len * sizeof *first);
        serial_engine engine = {0};
        big_args big;
        memset(&big, 0, sizeof big);
        smyrf_call_args *again = &big.a;
        *again = args;
        if (below(&w->r, 2)) {
            again->parallel_for = run_serially;
            again->parallel_context = &engine;
            again->parallel_workers = 1 + (uint32_t)below(&w->r, 4);
        }
        /* Sizes of other versions: the first released layout of the options, or a newer
         * caller's larger struct whose extra bytes are zero. */
        switch (below(&w->r, 3)) {
        case 0:
            if (!again->parallel_for) again->struct_size = SMYRF_CALL_ARGS_MIN_SIZE;
            break;
        case 1: again->struct_size = sizeof *again + 1 + below(&w->r, 64); break;
        default: break;
        }
        big_tensor newer_q;
        memset(&newer_q, 0, sizeof newer_q);
        newer_q.t = q;
        newer_q.t.struct_size += 8 * below(&w->r, 3);
        s = smyrf_attention(shared_clustered, &newer_q.t, &k, &v, &out, again);
        CHECK(w, s == SMYRF_OK && memcmp(first, c.out, c.out_len * sizeof *first) == 0,
              "repeated call differs (parallel_for %s, struct_size %zu)",
              again->parallel_for ? "set" : "NULL", again->struct_size);
        /* A call with a single task runs it on the calling thread, so only the total over
         * the run says the engine was used. */
        w->engine_calls += engine.calls;
    }

    /* One cluster is dense attention. */
    float *dense = sentinel_buffer(c.out_len);
    if (first && dense) {
        smyrf_call_args no_lse = call_args(&c, 0);
        s = smyrf_attention(shared_exact, &q, &k, &v, &out, &no_lse);
        CHECK(w, s == SMYRF_OK, "shared exact plan: status %u", (unsigned)s);
        smyrf_tensor_mut dense_out = tensor_mut(&c.os, dense);
        s = smyrf_dense_attention(&q, &k, &v, 0.0f, &dense_out, &no_lse);
        CHECK(w, s == SMYRF_OK, "dense: status %u", (unsigned)s);
        for (size_t i = 0; i < c.out_len; i++) {
            float a = c.out[i], b = dense[i];
            if (is_sentinel(a) || is_sentinel(b)) {
                CHECK(w, is_sentinel(a) && is_sentinel(b), "gap written at %zu", i);
            } else {
                CHECK(w, magnitude(a - b) <= 1e-5f, "one cluster %g vs dense %g", (double)a,
                      (double)b);
            }
        }
    }
    free(first);
    free(dense);
    free_call(&c);
    w->good += 4;
}

/* Runs a call that must fail with `want`; checks the message and that nothing was written. */
static void expect_refusal(worker *w, smyrf_status got, smyrf_status want, const char *function,
                           const float *out, size_t out_len, const char *what) {
    const char *message = smyrf_last_error_message();
    CHECK(w, got == want, "%s: status %u, expected %u", what, (unsigned)got, (unsigned)want);
    CHECK(w, strncmp(message, function, strlen(function)) == 0, "%s: message '%s'", what,
          message);
    if (out) {
        CHECK(w, all_sentinel(out, out_len), "%s: a refused call wrote its output", what);
    }
    w->bad++;
}

/* The refusal's message names the cause: it contains `needle` (or `other`, when not NULL). */
static void expect_cause(worker *w, const char *needle, const char *other) {
    const char *message = smyrf_last_error_message();
    CHECK(w, strstr(message, needle) || (other && strstr(message, other)), "message lacks '%s'",
          needle);
}

static void bad_calls(worker *w) {
    call c;
    if (!make_call(w, &c)) {
        CHECK(w, 0, "out of memory");
        free_call(&c);
        return;
    }
    smyrf_tensor q = tensor(&c.qs, c.q), k = tensor(&c.ks, c.k), v = tensor(&c.vs, c.v);
    smyrf_tensor_mut out = tensor_mut(&c.os, c.out);
    smyrf_call_args args = call_args(&c, 1);
    const smyrf_status invalid = SMYRF_ERROR_INVALID_ARGUMENT, null = SMYRF_ERROR_NULL_POINTER;
    smyrf_status s;
    switch (below(&w->r, 16)) {
    case 0:
        s = smyrf_attention(NULL, &q, &k, &v, &out, &args);
        expect_refusal(w, s, null, "smyrf_attention", c.out, c.out_len, "NULL plan");
        break;
    case 1: {
        smyrf_tensor bad = q;
        bad.data = NULL;
        s = smyrf_attention(shared_clustered, &bad, &k, &v, &out, &args);
        expect_refusal(w, s, null, "smyrf_attention", c.out, c.out_len, "NULL q data");
        break;
    }
    case 2: {
        /* Inconsistent shapes, each within its buffer (a shape never reaches past it):
         * query heads not a multiple of key heads, or k and v disagreeing. */
        smyrf_tensor bad_q = q, bad_k = k, bad_v = v;
        if (k.heads > 1) {
            bad_q.heads = 1;
        } else if (v.seq_len > 1) {
            bad_v.seq_len--;
        } else {
            bad_k.dim--;
        }
        s = smyrf_attention(shared_clustered, &bad_q, &bad_k, &bad_v, &out, &args);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "shapes");
        break;
    }
    case 3: {
        smyrf_tensor bad = v;
        bad.seq_len = 0;
        s = smyrf_attention(shared_clustered, &q, &k, &bad, &out, &args);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "zero length");
        break;
    }
    case 4: {
        /* A stride whose extent overflows: refused from the arithmetic, never followed. */
        smyrf_tensor bad = q;
        bad.batch = 2;
        bad.batch_stride = (size_t)1 << (sizeof(size_t) * 8 - 2);
        s = smyrf_dense_attention(&bad, &k, &v, 0.0f, &out, &args);
        expect_refusal(w, s, invalid, "smyrf_dense_attention", c.out, c.out_len, "overflow");
        break;
    }
    case 5: {
        /* The output inside the query buffer (when it fits there). */
        smyrf_tensor_mut bad = out;
        if (c.out_len > extent(&c.qs)) {
            break;
        }
        bad.data = c.q;
        smyrf_call_args no_lse = call_args(&c, 0);
        s = smyrf_attention(shared_clustered, &q, &k, &v, &bad, &no_lse);
        expect_refusal(w, s, invalid, "smyrf_attention", NULL, 0, "out overlaps q");
        break;
    }
    case 6: {
        /* lse on top of the output. */
        smyrf_call_args bad = args;
        bad.lse_out = c.out;
        s = smyrf_attention(shared_clustered, &q, &k, &v, &out, &bad);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "lse overlaps out");
        break;
    }
    case 7: {
        float scales[] = {-1.0f, NAN, INFINITY};
        s = smyrf_dense_attention(&q, &k, &v, scales[below(&w->r, 3)], &out, &args);
        expect_refusal(w, s, invalid, "smyrf_dense_attention", c.out, c.out_len, "scale");
        break;
    }
    case 8: {
        /* An element type that does not exist, on any of the four tensors. */
        static const uint32_t dtypes[] = {3, 0x7FFFFFFFu, UINT32_MAX};
        smyrf_tensor bad_q = q, bad_k = k, bad_v = v;
        smyrf_tensor_mut bad_out = out;
        uint32_t dtype = dtypes[below(&w->r, 3)];
        switch (below(&w->r, 4)) {
        case 0: bad_q.dtype = dtype; break;
        case 1: bad_k.dtype = dtype; break;
        case 2: bad_v.dtype = dtype; break;
        default: bad_out.dtype = dtype; break;
        }
        s = smyrf_attention(shared_clustered, &bad_q, &bad_k, &bad_v, &bad_out, &args);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "dtype");
        expect_cause(w, "dtype", NULL);
        break;
    }
    case 9: {
        /* A tensor descriptor whose struct_size no version has; each descriptor really is as
         * large as its size says, except SIZE_MAX, refused from the value alone. */
        big_tensor big;
        memset(&big, 0, sizeof big);
        int on_q = (int)below(&w->r, 2);
        big.t = on_q ? q : k;
        big.t.struct_size = bad_size(&w->r, SMYRF_TENSOR_MIN_SIZE, sizeof big.t, big.bytes);
        const smyrf_tensor *bad_q = on_q ? &big.t : &q, *bad_k = on_q ? &k : &big.t;
        if (below(&w->r, 2)) {
            s = smyrf_attention(shared_clustered, bad_q, bad_k, &v, &out, &args);
            expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "tensor size");
            expect_cause(w, "struct_size", "newer option");
        } else {
            s = smyrf_dense_attention(bad_q, bad_k, &v, 0.0f, &out, &args);
            expect_refusal(w, s, invalid, "smyrf_dense_attention", c.out, c.out_len,
                           "tensor size");
            expect_cause(w, "struct_size", "newer option");
        }
        break;
    }
    case 10: {
        /* The same for the output descriptor and for the call options (whose sizes 40, 48,
         * 56 and 60 end on a field: older versions, accepted). */
        big_tensor_mut big_out;
        big_args big;
        memset(&big_out, 0, sizeof big_out);
        memset(&big, 0, sizeof big);
        big_out.t = out;
        big.a = args;
        if (below(&w->r, 2)) {
            big_out.t.struct_size =
                bad_size(&w->r, SMYRF_TENSOR_MIN_SIZE, sizeof big_out.t, big_out.bytes);
        } else {
            static const size_t inside[] = {SMYRF_CALL_ARGS_MIN_SIZE + 4,
                                            SMYRF_CALL_ARGS_MIN_SIZE + 18};
            big.a.struct_size = below(&w->r, 3) == 0
                                    ? inside[below(&w->r, 2)]
                                    : bad_size(&w->r, SMYRF_CALL_ARGS_MIN_SIZE, sizeof big.a,
                                               big.bytes);
        }
        s = smyrf_attention(shared_clustered, &q, &k, &v, &big_out.t, &big.a);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "struct size");
        expect_cause(w, "struct_size", "newer option");
        break;
    }
    case 11: {
        /* A parallel-for that may run no task at once: refused before it is ever called. */
        serial_engine engine = {0};
        smyrf_call_args bad = args;
        bad.parallel_for = run_serially;
        bad.parallel_context = &engine;
        bad.parallel_workers = 0;
        s = smyrf_attention(shared_clustered, &q, &k, &v, &out, &bad);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "no workers");
        expect_cause(w, "parallel_workers", NULL);
        CHECK(w, engine.calls == 0, "a refused call ran the engine");
        break;
    }
    case 12: {
        /* A key length past Nk or negative. */
        int32_t lengths[2];
        for (size_t b = 0; b < 2; b++) lengths[b] = (int32_t)c.ks.seq_len;
        const int32_t bad_values[] = {(int32_t)c.ks.seq_len + 1, -1, INT32_MIN, INT32_MAX};
        lengths[below(&w->r, c.ks.batch)] = bad_values[below(&w->r, 4)];
        smyrf_call_args bad = args;
        bad.key_lengths = lengths;
        s = smyrf_dense_attention(&q, &k, &v, 0.0f, &out, &bad);
        expect_refusal(w, s, invalid, "smyrf_dense_attention", c.out, c.out_len,
                       "key lengths");
        expect_cause(w, "key_lengths", NULL);
        break;
    }
    case 13: {
        /* A head sink that is NaN or +infinity (-infinity means no sink). */
        float sinks[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        const float bad_values[] = {NAN, -NAN, INFINITY};
        sinks[below(&w->r, c.qs.heads)] = bad_values[below(&w->r, 3)];
        smyrf_call_args bad = args;
        bad.head_sinks = sinks;
        s = smyrf_attention(shared_clustered, &q, &k, &v, &out, &bad);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "head sinks");
        expect_cause(w, "head_sinks", NULL);
        break;
    }
    case 14: {
        /* 16-bit data one byte off its alignment; the view, in 2-byte elements, stays within
         * the float buffer. */
        uint32_t dtype = below(&w->r, 2) ? SMYRF_DTYPE_F16 : SMYRF_DTYPE_BF16;
        smyrf_tensor bad_q = q, bad_v = v;
        smyrf_tensor_mut bad_out = out;
        switch (below(&w->r, 3)) {
        case 0:
            bad_q.dtype = dtype;
            bad_q.data = (const char *)c.q + 1;
            break;
        case 1:
            bad_v.dtype = dtype;
            bad_v.data = (const char *)c.v + 1;
            break;
        default:
            bad_out.dtype = dtype;
            bad_out.data = (char *)c.out + 1;
            break;
        }
        s = smyrf_attention(shared_clustered, &bad_q, &k, &bad_v, &bad_out, &args);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "misaligned");
        expect_cause(w, "not aligned", NULL);
        break;
    }
    default: {
        static char untouched;
        big_config big;
        memset(&big, 0, sizeof big);
        big.c = smyrf_config_default();
        smyrf_plan *plan = (smyrf_plan *)&untouched; /* a refused create leaves it */
        smyrf_plan *const before = plan;
        int sized = 0;
        switch (below(&w->r, 6)) {
        case 0: big.c.n_hashes = 0; break;
        case 1: big.c.q_cluster_size = 0; break;
        case 2: big.c.isa = 99; break;
        case 3: big.c.num_threads = 5000; break;
        case 4:
            big.c.struct_size = SMYRF_CONFIG_MIN_SIZE + 2; /* inside `n_sinks` */
            sized = 1;
            break;
        default:
            big.c.struct_size = bad_size(&w->r, SMYRF_CONFIG_MIN_SIZE, sizeof big.c, big.bytes);
            sized = 1;
            break;
        }
        s = smyrf_plan_create(&big.c, D, &plan);
        expect_refusal(w, s, invalid, "smyrf_plan_create", NULL, 0, "bad config");
        if (sized) {
            expect_cause(w, "struct_size", "newer option");
        }
        CHECK(w, plan == before, "a refused plan was stored");
        break;
    }
    }
    if (c.lse) {
        CHECK(w, all_sentinel(c.lse, c.lse_len), "a refused call wrote lse");
    }
    free_call(&c);
}

/* A plan of this thread's own: created, used, destroyed. */
static void own_plan(worker *w) {
    smyrf_config config = smyrf_config_default();
    config.n_hashes = 1 + (uint32_t)below(&w->r, 3);
    config.q_cluster_size = 1 + (uint32_t)below(&w->r, 40);
    config.num_threads = (uint32_t)below(&w->r, 3);
    config.seed = next_u64(&w->r);
    smyrf_plan *plan = NULL;
    smyrf_status s = smyrf_plan_create(&config, D, &plan);
    CHECK(w, s == SMYRF_OK && plan != NULL, "own plan: status %u", (unsigned)s);
    call c;
    memset(&c, 0, sizeof c);
    if (s == SMYRF_OK && make_call(w, &c)) {
        smyrf_tensor q = tensor(&c.qs, c.q), k = tensor(&c.ks, c.k), v = tensor(&c.vs, c.v);
        smyrf_tensor_mut out = tensor_mut(&c.os, c.out);
        smyrf_call_args args = call_args(&c, 1);
        s = smyrf_attention(plan, &q, &k, &v, &out, &args);
        CHECK(w, s == SMYRF_OK, "own plan call: status %u", (unsigned)s);
        check_outputs(w, &c, "own plan");
        w->good++;
    }
    free_call(&c);
    smyrf_plan_destroy(plan);
}

static long iterations = 300;

static void *work(void *arg) {
    worker *w = arg;
    for (long i = 0; i < iterations; i++) {
        switch (below(&w->r, 8)) {
        case 0:
        case 1:
        case 2:
            bad_calls(w);
            break;
        case 3:
            own_plan(w);
            break;
        default:
            good_calls(w);
            break;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        iterations = strtol(argv[1], NULL, 10);
    }
    smyrf_config config = smyrf_config_default();
    config.n_hashes = 2;
    config.q_cluster_size = 8;
    config.seed = 7;
    config.num_threads = 2;
    smyrf_config exact = config;
    exact.q_cluster_size = 1000; /* ≥ every Nq here: one cluster */
    /* One round: R equal rounds merge to R times the key mass, against which a head sink
     * then weighs less than in dense attention. */
    exact.n_hashes = 1;
    exact.num_threads = 1;
    if (smyrf_plan_create(&config, D, &shared_clustered) != SMYRF_OK ||
        smyrf_plan_create(&exact, D, &shared_exact) != SMYRF_OK) {
        fprintf(stderr, "stress: cannot create the shared plans: %s\n",
                smyrf_last_error_message());
        return 1;
    }
    printf("stress: smyrf %s, %d threads x %ld iterations, isa %s\n", smyrf_version(), THREADS,
           iterations, smyrf_isa_name(shared_clustered));
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (worker){t, {0x9E3779B97F4A7C15ull * (uint64_t)(t + 1)}, 0, 0, 0, 0};
        if (pthread_create(&threads[t], NULL, work, &workers[t]) != 0) {
            fprintf(stderr, "stress: cannot start thread %d\n", t);
            return 1;
        }
    }
    long good = 0, bad = 0, failures = 0, engine_calls = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        good += workers[t].good;
        bad += workers[t].bad;
        failures += workers[t].failures;
        engine_calls += workers[t].engine_calls;
    }
    if (iterations >= 100 && engine_calls == 0) {
        fprintf(stderr, "stress: the engine's parallel-for never ran\n");
        failures++;
    }
    smyrf_plan_destroy(shared_clustered);
    smyrf_plan_destroy(shared_exact);
    printf("stress: %ld good calls (%ld parallel-for runs), %ld refused as expected, %ld failed "
           "checks\n",
           good, engine_calls, bad, failures);
    if (failures != 0) {
        return 1;
    }
    printf("stress: ok\n");
    return 0;
}
