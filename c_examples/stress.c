/*
 * stress.c: a reliability workout for the C interface, meant to run under AddressSanitizer
 * and UndefinedBehaviorSanitizer (the test suite builds it with -fsanitize=address,undefined).
 * Several threads share two plans and call them many times with varied shapes, layouts,
 * strides, masks and lse outputs, each tensor in a buffer of exactly the elements its shape
 * reaches; between good calls they make bad ones (NULL pointers, inconsistent or
 * overflowing shapes, overlapping outputs, bad scales and configs) and create and destroy
 * plans of their own.
 *
 *   usage: stress [ITERATIONS_PER_THREAD]   (default 300)
 *
 * Checked: every good call succeeds, writes only the rows of its output view (padding
 * between rows keeps its sentinel), gives finite outputs within the range of the values, is
 * bitwise repeatable, and with one cluster matches dense attention; every bad call returns
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

/* Two plans every thread shares: clustered (own pool of 2 threads) and one cluster. */
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

static smyrf_tensor tensor(const shape *s, const float *data) {
    smyrf_tensor t = {data,          s->batch,       s->heads,     s->seq_len,
                      s->dim,        s->batch_stride, s->head_stride, s->seq_stride};
    return t;
}

static smyrf_tensor_mut tensor_mut(const shape *s, float *data) {
    smyrf_tensor_mut t = {data,          s->batch,       s->heads,     s->seq_len,
                          s->dim,        s->batch_stride, s->head_stride, s->seq_stride};
    return t;
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
    long good, bad, failures;
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
    float *q, *k, *v, *out, *lse;
    uint8_t *mask;
    size_t out_len, lse_len;
} call;

static void free_call(call *c) {
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    free(c->lse);
    free(c->mask);
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
    int want_mask = below(r, 3);
    c->mask = want_mask ? malloc(b * nk) : NULL;
    if (!c->q || !c->k || !c->v || !c->out || (want_mask && !c->mask)) {
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
    return 1;
}

/* Is key j of batch element b valid? */
static int valid(const call *c, size_t b, size_t j) {
    return c->mask == NULL || c->mask[b * c->ks.seq_len + j] != 0;
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
                    float l = c->lse[(b * c->qs.heads + h) * c->qs.seq_len + i];
                    CHECK(w, any ? isfinite(l) : l == -INFINITY, "%s: lse %g", what, (double)l);
                }
            }
        }
    }
    for (size_t i = 0; i < c->out_len; i++) {
        CHECK(w, covered[i] || is_sentinel(c->out[i]), "%s wrote between rows at %zu", what, i);
    }
    free(covered);
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
    smyrf_status s = smyrf_attention(shared_clustered, &q, &k, &v, c.mask, &out, c.lse);
    CHECK(w, s == SMYRF_OK, "shared clustered plan: status %u", (unsigned)s);
    check_outputs(w, &c, "clustered");

    /* The same call again: bitwise the same, whatever the other threads do meanwhile. */
    float *first = malloc(c.out_len * sizeof *first);
    if (first) {
        memcpy(first, c.out, c.out_len * sizeof *first);
        s = smyrf_attention(shared_clustered, &q, &k, &v, c.mask, &out, c.lse);
        CHECK(w, s == SMYRF_OK && memcmp(first, c.out, c.out_len * sizeof *first) == 0,
              "repeated call differs");
    }

    /* One cluster is dense attention. */
    float *dense = sentinel_buffer(c.out_len);
    if (first && dense) {
        s = smyrf_attention(shared_exact, &q, &k, &v, c.mask, &out, NULL);
        CHECK(w, s == SMYRF_OK, "shared exact plan: status %u", (unsigned)s);
        smyrf_tensor_mut dense_out = tensor_mut(&c.os, dense);
        s = smyrf_dense_attention(&q, &k, &v, c.mask, 0.0f, &dense_out, NULL);
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

static void bad_calls(worker *w) {
    call c;
    if (!make_call(w, &c)) {
        CHECK(w, 0, "out of memory");
        free_call(&c);
        return;
    }
    smyrf_tensor q = tensor(&c.qs, c.q), k = tensor(&c.ks, c.k), v = tensor(&c.vs, c.v);
    smyrf_tensor_mut out = tensor_mut(&c.os, c.out);
    const smyrf_status invalid = SMYRF_ERROR_INVALID_ARGUMENT, null = SMYRF_ERROR_NULL_POINTER;
    smyrf_status s;
    switch (below(&w->r, 9)) {
    case 0:
        s = smyrf_attention(NULL, &q, &k, &v, c.mask, &out, c.lse);
        expect_refusal(w, s, null, "smyrf_attention", c.out, c.out_len, "NULL plan");
        break;
    case 1: {
        smyrf_tensor bad = q;
        bad.data = NULL;
        s = smyrf_attention(shared_clustered, &bad, &k, &v, c.mask, &out, c.lse);
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
        s = smyrf_attention(shared_clustered, &bad_q, &bad_k, &bad_v, c.mask, &out, c.lse);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "shapes");
        break;
    }
    case 3: {
        smyrf_tensor bad = v;
        bad.seq_len = 0;
        s = smyrf_attention(shared_clustered, &q, &k, &bad, c.mask, &out, c.lse);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "zero length");
        break;
    }
    case 4: {
        /* A stride whose extent overflows: refused from the arithmetic, never followed. */
        smyrf_tensor bad = q;
        bad.batch = 2;
        bad.batch_stride = (size_t)1 << (sizeof(size_t) * 8 - 2);
        s = smyrf_dense_attention(&bad, &k, &v, c.mask, 0.0f, &out, c.lse);
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
        s = smyrf_attention(shared_clustered, &q, &k, &v, c.mask, &bad, NULL);
        expect_refusal(w, s, invalid, "smyrf_attention", NULL, 0, "out overlaps q");
        break;
    }
    case 6: {
        /* lse on top of the output. */
        s = smyrf_attention(shared_clustered, &q, &k, &v, c.mask, &out, c.out);
        expect_refusal(w, s, invalid, "smyrf_attention", c.out, c.out_len, "lse overlaps out");
        break;
    }
    case 7: {
        float scales[] = {-1.0f, NAN, INFINITY};
        s = smyrf_dense_attention(&q, &k, &v, c.mask, scales[below(&w->r, 3)], &out, c.lse);
        expect_refusal(w, s, invalid, "smyrf_dense_attention", c.out, c.out_len, "scale");
        break;
    }
    default: {
        static char untouched;
        smyrf_config config = smyrf_config_default();
        smyrf_plan *plan = (smyrf_plan *)&untouched; /* a refused create leaves it */
        smyrf_plan *const before = plan;
        switch (below(&w->r, 4)) {
        case 0: config.n_hashes = 0; break;
        case 1: config.q_cluster_size = 0; break;
        case 2: config.isa = 99; break;
        default: config.num_threads = 5000; break;
        }
        s = smyrf_plan_create(&config, D, &plan);
        expect_refusal(w, s, invalid, "smyrf_plan_create", NULL, 0, "bad config");
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
        s = smyrf_attention(plan, &q, &k, &v, c.mask, &out, c.lse);
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
        workers[t] = (worker){t, {0x9E3779B97F4A7C15ull * (uint64_t)(t + 1)}, 0, 0, 0};
        if (pthread_create(&threads[t], NULL, work, &workers[t]) != 0) {
            fprintf(stderr, "stress: cannot start thread %d\n", t);
            return 1;
        }
    }
    long good = 0, bad = 0, failures = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        good += workers[t].good;
        bad += workers[t].bad;
        failures += workers[t].failures;
    }
    smyrf_plan_destroy(shared_clustered);
    smyrf_plan_destroy(shared_exact);
    printf("stress: %ld good calls, %ld refused as expected, %ld failed checks\n", good, bad,
           failures);
    if (failures != 0) {
        return 1;
    }
    printf("stress: ok\n");
    return 0;
}
