/* A caller built against another layout of the versioned structs than the library's:
 * tests/c_abi_versions.rs compiles it against an older header (fields removed from the
 * end) and a newer one (a field appended), and compares its output with the Rust API.
 *
 *   usage: versions OUTPUT_FILE   (writes out [1][2][64][8] as raw floats)
 * Prints the struct sizes it was built with and, for a newer layout, whether a set newer
 * option is refused. */
#include <smyrf.h>

#include <stdio.h>
#include <string.h>

enum { B = 1, H = 2, N = 64, D = 8 };

static int fail(const char *what, smyrf_status status) {
    fprintf(stderr, "%s: %s: %s\n", what, smyrf_status_message(status), smyrf_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    static float q[B * H * N * D], k[B * H * N * D], v[B * H * N * D], out[B * H * N * D];
    static uint8_t mask[B * N];
    if (argc != 2) {
        return 2;
    }
    for (int i = 0; i < B * H * N * D; i++) {
        q[i] = (float)((i * 7919) % 997) / 997.0f - 0.5f;
        k[i] = (float)((i * 104729) % 991) / 991.0f - 0.5f;
        v[i] = (float)((i * 3571) % 983) / 983.0f - 0.5f;
    }
    for (int j = 0; j < B * N; j++) {
        mask[j] = (uint8_t)(j % 5 != 0);
    }
    smyrf_config config = smyrf_config_default();
    config.q_cluster_size = 16;
    config.num_threads = 1;
    printf("config %zu args %zu\n", sizeof(smyrf_config), sizeof(smyrf_call_args));
    if (config.struct_size != sizeof(smyrf_config)) {
        fprintf(stderr, "the initialiser wrote struct_size %zu\n", config.struct_size);
        return 1;
    }
    smyrf_plan *plan = NULL;
    smyrf_status status = smyrf_plan_create(&config, D, &plan);
    if (status != SMYRF_OK) {
        return fail("smyrf_plan_create", status);
    }
    smyrf_tensor tq = smyrf_tensor_bhnd(q, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor tk = smyrf_tensor_bhnd(k, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor tv = smyrf_tensor_bhnd(v, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_tensor_mut to = smyrf_tensor_mut_bhnd(out, SMYRF_DTYPE_F32, B, H, N, D);
    smyrf_call_args args = smyrf_call_args_default();
    args.key_mask = mask;
    status = smyrf_attention(plan, &tq, &tk, &tv, &to, &args);
    if (status != SMYRF_OK) {
        return fail("smyrf_attention", status);
    }
#ifdef SMYRF_TEST_NEWER
    /* An option this library does not know must be refused, not ignored. */
    args.future_option = 1;
    float before = out[0];
    status = smyrf_attention(plan, &tq, &tk, &tv, &to, &args);
    printf("newer call option: %s (%s)\n", status == SMYRF_ERROR_INVALID_ARGUMENT ? "refused" : "accepted",
           smyrf_last_error_message());
    if (out[0] != before) {
        fprintf(stderr, "a refused call wrote its output\n");
        return 1;
    }
    smyrf_config newer = smyrf_config_default();
    newer.future_option = 1;
    smyrf_plan *other = NULL;
    status = smyrf_plan_create(&newer, D, &other);
    printf("newer config option: %s\n", status == SMYRF_ERROR_INVALID_ARGUMENT ? "refused" : "accepted");
    smyrf_plan_destroy(other);
#endif
    smyrf_plan_destroy(plan);
    FILE *file = fopen(argv[1], "wb");
    if (file == NULL || fwrite(out, sizeof out, 1, file) != 1 || fclose(file) != 0) {
        return 1;
    }
    return 0;
}
