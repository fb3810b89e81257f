/*
 * basic.c: SMYRF attention through the C interface on built-in data, compared with exact
 * dense attention; then a deliberately bad call, to show how errors are reported.
 *
 *   usage: basic [OUTPUT_FILE]
 *
 * With OUTPUT_FILE, the SMYRF output and its log-sum-exp are written there as raw floats
 * (out [B][H][N][D], then lse [B][H][N]); the test suite compares them with the Rust API.
 */
#include <smyrf.h>

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

/* A contiguous [B, H, N, dim] view. */
static smyrf_tensor view(const float *data, size_t heads, size_t dim) {
    smyrf_tensor t = {data, B, heads, N, dim, heads * N * dim, N * dim, dim};
    return t;
}

static smyrf_tensor_mut view_mut(float *data) {
    smyrf_tensor_mut t = {data, B, H, N, D, (size_t)H * N * D, (size_t)N * D, D};
    return t;
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
    uint8_t *mask = malloc((size_t)B * N);
    smyrf_plan *plan = NULL, *exact = NULL;
    int status = 1;
    if (!q || !k || !v || !out || !dense || !lse || !mask) {
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

    smyrf_tensor tq = view(q, H, D), tk = view(k, H, D), tv = view(v, H, D);
    smyrf_tensor_mut tout = view_mut(out), tdense = view_mut(dense);
    if (!ok(smyrf_attention(plan, &tq, &tk, &tv, mask, &tout, lse), "smyrf_attention") ||
        !ok(smyrf_dense_attention(&tq, &tk, &tv, mask, 0.0f, &tdense, NULL),
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
        !ok(smyrf_attention(exact, &tq, &tk, &tv, mask, &tout, NULL), "smyrf_attention")) {
        goto done;
    }
    printf("one cluster vs dense: max |difference| %.2e\n", max_abs_diff(out, dense, len));

    /* A bad call: 3 query heads cannot share 4 key/value heads. Nothing is written. */
    tq.heads = 3;
    smyrf_status bad = smyrf_attention(plan, &tq, &tk, &tv, mask, &tout, NULL);
    printf("bad call: status %u (%s): %s\n", (unsigned)bad, smyrf_status_message(bad),
           smyrf_last_error_message());
    tq.heads = H;

    if (argc > 1) {
        /* Recompute with the first plan, so the file holds its output. */
        if (!ok(smyrf_attention(plan, &tq, &tk, &tv, mask, &tout, lse), "smyrf_attention")) {
            goto done;
        }
        FILE *file = fopen(argv[1], "wb");
        if (!file || fwrite(out, sizeof *out, len, file) != len ||
            fwrite(lse, sizeof *lse, lse_len, file) != lse_len || fclose(file) != 0) {
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
    free(mask);
    return status;
}
