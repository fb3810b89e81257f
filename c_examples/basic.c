/*
 * basic.c: SMYRF attention through the C interface on built-in data, compared with exact
 * dense attention; then a deliberately bad call, to show how errors are reported.
 *
 *   usage: basic [OUTPUT_FILE]
 *
 * With OUTPUT_FILE, the SMYRF output and its log-sum-exp are written there as raw floats
 * (out [B][H][N][D], then lse [B][H][N]), followed by the same two of the call with key
 * lengths and head sinks; the test suite compares them with the Rust API.
 */
#include <smyrf.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 2, H = 4, N = 256, D = 32, PADDING = 56 };

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

/* sum |a - b| / sum |b| over n values. */
static double relative_l1_error(const float *a, const float *b, size_t n) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i], r = b[i];
        diff += d < 0 ? -d : d;
        norm += r < 0 ? -r : r;
    }
    return diff / norm;
}

/* max |a - b| over n values. */
static double max_abs_diff(const float *a, const float *b, size_t n) {
    double max = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        d = d < 0 ? -d : d;
        max = d > max ? d : max;
    }
    return max;
}

int main(int argc, char **argv) {
    const size_t len = (size_t)B * H * N * D, lse_len = (size_t)B * H * N;
    float *q = malloc(len * sizeof *q), *k = malloc(len * sizeof *k);
    float *v = malloc(len * sizeof *v), *out = malloc(len * sizeof *out);
    float *dense = malloc(len * sizeof *dense), *lse = malloc(lse_len * sizeof *lse);
    float *out2 = malloc(len * sizeof *out2), *lse2 = malloc(lse_len * sizeof *lse2);
    uint8_t *mask = malloc((size_t)B * N);
    smyrf_plan *plan = NULL, *exact = NULL;
    int status = 1;
    if (!q || !k || !v || !out || !dense || !lse || !out2 || !lse2 || !mask) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    /* Each key is a noisy copy of the query at its position and the queries are long, so
     * attention is peaked, as in trained models, and clustering by inner product finds the
     * keys that matter. (On uniform noise attention is diffuse and any clustering loses.) */
    for (size_t i = 0; i < len; i++) {
        q[i] = 6.0f * value((uint32_t)i, 1);
        k[i] = value((uint32_t)i, 1) + 0.25f * value((uint32_t)i, 2);
        v[i] = value((uint32_t)i, 3);
    }
    /* Batch element 1 is a shorter sequence padded to N: its last keys take no part. */
    for (size_t b = 0; b < B; b++) {
        for (size_t j = 0; j < N; j++) {
            mask[b * N + j] = !(b == 1 && j >= N - PADDING);
        }
    }
    printf("smyrf %s (header %d.%d.%d)\n", smyrf_version(), SMYRF_VERSION_MAJOR,
           SMYRF_VERSION_MINOR, SMYRF_VERSION_PATCH);

    smyrf_config config = smyrf_config_default();
    config.n_hashes = 2;
    config.q_cluster_size = 32;
    config.seed = 42;
    config.num_threads = 1;
    if (!ok(smyrf_plan_create(&config, D, &plan), "smyrf_plan_create")) {
        goto done;
    }
    size_t scratch = 0;
    if (!ok(smyrf_plan_scratch_bytes(plan, N, N, D, &scratch), "smyrf_plan_scratch_bytes")) {
        goto done;
    }
    printf("isa: %s\nscratch: %zu bytes\n", smyrf_isa_name(plan), scratch);

    /* Contiguous [B, H, N, D] float views; the initialisers fill sizes, strides and
     * struct_size. */
    smyrf_tensor tq = smyrf_tensor_bhnd(q, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor tk = smyrf_tensor_bhnd(k, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor tv = smyrf_tensor_bhnd(v, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor_mut tout = smyrf_tensor_mut_bhnd(out, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor_mut tdense = smyrf_tensor_mut_bhnd(dense, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor_mut tout2 = smyrf_tensor_mut_bhnd(out2, SMYRF_DTYPE_F32, B, H, N, D);
    /* The optional parts of a call: the padding mask, and the lse output. */
    smyrf_call_args masked = smyrf_call_args_default();
    masked.key_mask = mask;
    smyrf_call_args with_lse = masked;
    with_lse.lse_out = lse;
    if (!ok(smyrf_attention(plan, &tq, &tk, &tv, &tout, &with_lse), "smyrf_attention") ||
        !ok(smyrf_dense_attention(&tq, &tk, &tv, 0.0f, &tdense, &masked),
            "smyrf_dense_attention")) {
        goto done;
    }
    double checksum = 0.0;
    for (size_t i = 0; i < len; i++) {
        checksum += out[i];
    }
    printf("checksum: %.6f\n", checksum);
    printf("smyrf vs dense, %d clusters of %u queries: relative L1 error %.4f\n",
           N / (int)config.q_cluster_size, (unsigned)config.q_cluster_size,
           relative_l1_error(out, dense, len));

    /* One cluster holding every query is exact dense attention. */
    config.q_cluster_size = N;
    if (!ok(smyrf_plan_create(&config, D, &exact), "smyrf_plan_create") ||
        !ok(smyrf_attention(exact, &tq, &tk, &tv, &tout, &masked), "smyrf_attention")) {
        goto done;
    }
    printf("one cluster vs dense: max |difference| %.2e\n", max_abs_diff(out, dense, len));

    /* A bad call: 3 query heads cannot share 4 key/value heads. Nothing is written. */
    tq.heads = 3;
    smyrf_status bad = smyrf_attention(plan, &tq, &tk, &tv, &tout, &masked);
    printf("bad call: status %u (%s): %s\n", (unsigned)bad, smyrf_status_message(bad),
           smyrf_last_error_message());
    tq.heads = H;

    /* What an engine passes instead of a mask: each batch element's number of valid keys
     * (all N for element 0, the first N - PADDING - 16 for element 1), plus one learned
     * sink logit per query head, which joins the softmax denominator and carries no value
     * (-INFINITY: no sink for that head). */
    const int32_t key_lengths[B] = {N, N - PADDING - 16};
    const float head_sinks[H] = {0.0f, 1.5f, -2.0f, -INFINITY};
    smyrf_call_args lengths_and_sinks = smyrf_call_args_default();
    lengths_and_sinks.key_lengths = key_lengths;
    lengths_and_sinks.head_sinks = head_sinks;
    lengths_and_sinks.lse_out = lse2;
    if (!ok(smyrf_attention(plan, &tq, &tk, &tv, &tout2, &lengths_and_sinks), "smyrf_attention")) {
        goto done;
    }
    double checksum2 = 0.0;
    for (size_t i = 0; i < len; i++) {
        checksum2 += out2[i];
    }
    printf("key lengths {%d, %d} and head sinks: checksum %.6f\n", (int)key_lengths[0],
           (int)key_lengths[1], checksum2);

    if (argc > 1) {
        /* Recompute with the first plan, so the file holds its output. */
        if (!ok(smyrf_attention(plan, &tq, &tk, &tv, &tout, &with_lse), "smyrf_attention")) {
            goto done;
        }
        FILE *file = fopen(argv[1], "wb");
        if (!file || fwrite(out, sizeof *out, len, file) != len ||
            fwrite(lse, sizeof *lse, lse_len, file) != lse_len ||
            fwrite(out2, sizeof *out2, len, file) != len ||
            fwrite(lse2, sizeof *lse2, lse_len, file) != lse_len || fclose(file) != 0) {
            fprintf(stderr, "cannot write %s\n", argv[1]);
            goto done;
        }
        printf("wrote %s\n", argv[1]);
    }
    status = 0;
done:
    smyrf_plan_destroy(exact);
    smyrf_plan_destroy(plan);
    free(q);
    free(k);
    free(v);
    free(out);
    free(dense);
    free(lse);
    free(out2);
    free(lse2);
    free(mask);
    return status;
}
