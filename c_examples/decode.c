/*
 * decode.c: a decode loop over an f16 K/V cache, as an engine runs one: the prompt's keys
 * are indexed once, then each step writes the new token's key and value into the cache,
 * appends the key to the KV-cache index and runs one query per head through smyrf_decode,
 * next to exact dense decode of the same cache. Ends with an append out of order, refused.
 *
 *   usage: decode [OUTPUT_FILE]
 *
 * With OUTPUT_FILE, every step's output [Hq][D] is written there as raw floats; the test
 * suite compares them with the Rust API.
 */
#include <smyrf.h>

#include <stdio.h>
#include <stdlib.h>

enum { HQ = 4, HKV = 2, D = 32, PROMPT = 1000, STEPS = 24, CAPACITY = 1024, BUDGET = 128, TOPIC = 48 };

/* Deterministic test data in [-1, 1]: a multiplicative hash of the element index. */
static float value(uint32_t i, uint32_t salt) {
    uint32_t x = i * 2654435761u + salt * 40503u;
    x ^= x >> 15;
    return (float)(x % 2001u) / 1000.0f - 1.0f;
}

/* Prints the failure and returns 0, or returns 1 on success. */
static int ok(smyrf_status status, const char *what) {
    if (status == SMYRF_OK) {
        return 1;
    }
    fprintf(stderr, "%s failed: %s\n  %s\n", what, smyrf_status_message(status),
            smyrf_last_error_message());
    return 0;
}

/* sqrt(x) for x >= 0 by Newton's iteration: the example needs no libm. */
static double root(double x) {
    double r = x > 1.0 ? x : 1.0;
    for (int i = 0; i < 60; i++) {
        r = 0.5 * (r + x / r);
    }
    return r;
}

/* IEEE binary16 bits of x, rounded to nearest even (x within the normal f16 range or 0). */
static uint16_t to_f16(float x) {
    union { float f; uint32_t u; } in = { x };
    uint32_t sign = (in.u >> 16) & 0x8000u, e = (in.u >> 23) & 0xffu, m = in.u & 0x7fffffu;
    if (e < 102) {
        return (uint16_t)sign; /* below half the smallest subnormal: zero */
    }
    if (e < 113) { /* subnormal */
        uint32_t shift = 126 - e, full = m | 0x800000u;
        uint32_t half = full >> shift, rest = full & ((1u << shift) - 1), mid = 1u << (shift - 1);
        half += rest > mid || (rest == mid && (half & 1));
        return (uint16_t)(sign | half);
    }
    uint32_t bits = ((e - 112) << 10) | (m >> 13), rest = m & 0x1fffu;
    bits += rest > 0x1000u || (rest == 0x1000u && (bits & 1));
    return (uint16_t)(sign | bits);
}

/* Component x of the topic of K/V head h around position t: keys of nearby tokens share
 * one, as text about one thing does, so key blocks have tight bounds. */
static float topic(size_t h, size_t t, size_t x) {
    return value((uint32_t)((h * CAPACITY + t / TOPIC) * D + x), 2);
}

/* Token t's key and value rows for every K/V head, written into the caches [HKV][CAPACITY][D]. */
static void write_token(uint16_t *k, uint16_t *v, size_t t) {
    for (size_t h = 0; h < HKV; h++) {
        for (size_t x = 0; x < D; x++) {
            uint32_t i = (uint32_t)((h * CAPACITY + t) * D + x);
            k[i] = to_f16(topic(h, t, x) + 0.25f * value(i, 4));
            v[i] = to_f16(value(i, 3));
        }
    }
}

int main(int argc, char **argv) {
    uint16_t *k = calloc((size_t)HKV * CAPACITY * D, sizeof *k);
    uint16_t *v = calloc((size_t)HKV * CAPACITY * D, sizeof *v);
    float q[HQ * D], out[HQ * D], exact[HQ * D];
    smyrf_plan *plan = NULL;
    smyrf_kv_index *index = NULL;
    void *workspace = NULL;
    FILE *file = NULL;
    int status = 1;
    if (!k || !v) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    if (argc > 1 && !(file = fopen(argv[1], "wb"))) {
        perror(argv[1]);
        goto done;
    }
    /* The causal preset for a budget of BUDGET keys per query: sinks, a recent window and
     * key blocks chosen by their bounds; the index keeps those bounds for the cache. */
    smyrf_config config = smyrf_config_causal(BUDGET);
    if (!ok(smyrf_plan_create(&config, D, &plan), "smyrf_plan_create") ||
        !ok(smyrf_kv_index_create(plan, 1, HKV, CAPACITY, &index), "smyrf_kv_index_create")) {
        goto done;
    }
    printf("smyrf %s\nisa: %s\n", smyrf_version(), smyrf_isa_name(plan));
    for (size_t t = 0; t < PROMPT; t++) {
        write_token(k, v, t);
    }
    uint32_t length = PROMPT;
    smyrf_tensor k_cache = smyrf_tensor_bhnd(k, SMYRF_DTYPE_F16, 1, HKV, CAPACITY, D);
    if (!ok(smyrf_kv_index_append(index, &k_cache, &length, 1), "indexing the prompt")) {
        goto done;
    }
    /* One workspace for every step: its size depends on the views (the cache's capacity
     * bounds every length), so the decode calls below allocate nothing. */
    smyrf_call_args decode_args = smyrf_call_args_default();
    {
        smyrf_tensor qt = smyrf_tensor_bhnd(q, SMYRF_DTYPE_F32, 1, HQ, 1, D);
        smyrf_tensor vt = smyrf_tensor_bhnd(v, SMYRF_DTYPE_F16, 1, HKV, CAPACITY, D);
        smyrf_tensor_mut ot = smyrf_tensor_mut_bhnd(out, SMYRF_DTYPE_F32, 1, HQ, 1, D);
        size_t bytes = 0;
        if (!ok(smyrf_decode_workspace_size(plan, index, &qt, &k_cache, &vt, &ot, NULL, &bytes),
                "smyrf_decode_workspace_size")) {
            goto done;
        }
        if (!(workspace = malloc(bytes))) {
            fprintf(stderr, "out of memory\n");
            goto done;
        }
        decode_args.workspace = workspace;
        decode_args.workspace_size = bytes;
    }
    double worst = 0.0;
    for (size_t step = 0; step < STEPS; step++) {
        /* The new token: its key and value into the cache, its key into the index. */
        write_token(k, v, length);
        length += 1;
        if (!ok(smyrf_kv_index_append(index, &k_cache, &length, 1), "smyrf_kv_index_append")) {
            goto done;
        }
        /* Each head's query asks about the topic of one earlier stretch, far outside the
         * recent window, so attention is peaked, as in trained models, and the key blocks
         * must find that stretch. */
        for (size_t h = 0; h < HQ; h++) {
            size_t target = (step * 7919 + h * 104729) % (length - 200);
            for (size_t x = 0; x < D; x++) {
                uint32_t j = (uint32_t)((step * HQ + h) * D + x);
                q[h * D + x] = 3.0f * topic(h / (HQ / HKV), target, x) + 0.25f * value(j, 1);
            }
        }
        smyrf_tensor qt = smyrf_tensor_bhnd(q, SMYRF_DTYPE_F32, 1, HQ, 1, D);
        smyrf_tensor kt = smyrf_tensor_bhnd(k, SMYRF_DTYPE_F16, 1, HKV, CAPACITY, D);
        smyrf_tensor vt = smyrf_tensor_bhnd(v, SMYRF_DTYPE_F16, 1, HKV, CAPACITY, D);
        smyrf_tensor_mut ot = smyrf_tensor_mut_bhnd(out, SMYRF_DTYPE_F32, 1, HQ, 1, D);
        if (!ok(smyrf_decode(plan, index, &qt, &kt, &vt, &ot, &decode_args), "smyrf_decode")) {
            goto done;
        }
        /* Exact decode of the same cache: its first `length` keys. */
        smyrf_call_args args = smyrf_call_args_default();
        int32_t key_length = (int32_t)length;
        args.key_lengths = &key_length;
        smyrf_tensor_mut et = smyrf_tensor_mut_bhnd(exact, SMYRF_DTYPE_F32, 1, HQ, 1, D);
        if (!ok(smyrf_dense_attention(&qt, &kt, &vt, 0.0f, &et, &args), "exact decode")) {
            goto done;
        }
        double diff = 0.0, norm = 0.0;
        for (size_t i = 0; i < HQ * D; i++) {
            diff += (out[i] - exact[i]) * (double)(out[i] - exact[i]);
            norm += exact[i] * (double)exact[i];
        }
        double err = root(diff / norm);
        worst = err > worst ? err : worst;
        if (file && fwrite(out, sizeof out, 1, file) != 1) {
            perror("writing the output");
            goto done;
        }
    }
    uint32_t lengths_now = 0;
    size_t bytes = 0;
    if (!ok(smyrf_kv_index_lengths(index, &lengths_now, 1, &bytes), "smyrf_kv_index_lengths")) {
        goto done;
    }
    printf("decoded %d tokens after a %d-token prompt: %u keys indexed in %zu bytes "
           "(the f16 K/V cache holds %zu)\n",
           STEPS, PROMPT, lengths_now, bytes, (size_t)HKV * CAPACITY * D * 2 * 2);
    printf("worst relative L2 error against exact decode: "
           "%.3f\n", worst);

    /* Positions go in order: shortening a sequence is refused and changes nothing. */
    uint32_t shorter = length - 5;
    smyrf_status refused = smyrf_kv_index_append(index, &k_cache, &shorter, 1);
    printf("append out of order: %s: %s\n", smyrf_status_message(refused),
           smyrf_last_error_message());
    status = refused == SMYRF_ERROR_INVALID_ARGUMENT ? 0 : 1;

done:
    if (file) {
        fclose(file);
    }
    smyrf_kv_index_destroy(index);
    smyrf_plan_destroy(plan);
    free(workspace);
    free(k);
    free(v);
    return status;
}
