/* A caller that owns every byte its attention calls use (design §3, memory): it asks
 * smyrf_plan_workspace_size for the workspace of a call, allocates it itself, and counts
 * what the library allocates during its calls. The program replaces the C library's malloc,
 * calloc, realloc, free, posix_memalign, aligned_alloc and memalign (the Rust allocator of
 * the library calls them) with counting wrappers around glibc's own entry points.
 *
 *   usage: workspace
 * Prints one line per kind of call, "<name>: <n> allocations (...; <m> without it)", after
 * checking that each call with a workspace gives the bits of the same call without one;
 * exits nonzero on any failure. Each kind is called once before counting: the first call on a thread registers
 * that thread's error-message slot. */
#define _GNU_SOURCE
#include <smyrf.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- counting allocator ------------------------------------------------------------- */

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_memalign(size_t align, size_t size);

static atomic_int counting;
static atomic_long allocations;

static void count(void) {
    if (atomic_load(&counting)) {
        atomic_fetch_add(&allocations, 1);
    }
}

void *malloc(size_t size) {
    count();
    return __libc_malloc(size);
}
void *calloc(size_t count_, size_t size) {
    count();
    return __libc_calloc(count_, size);
}
void *realloc(void *ptr, size_t size) {
    count();
    return __libc_realloc(ptr, size);
}
void free(void *ptr) { __libc_free(ptr); }
void *memalign(size_t align, size_t size) {
    count();
    return __libc_memalign(align, size);
}
void *aligned_alloc(size_t align, size_t size) {
    count();
    return __libc_memalign(align, size);
}
int posix_memalign(void **out, size_t align, size_t size) {
    count();
    void *ptr = __libc_memalign(align, size);
    if (ptr == NULL) {
        return ENOMEM;
    }
    *out = ptr;
    return 0;
}

/* ---- an engine: worker threads started up front ------------------------------------- */

enum { WORKERS = 3 };

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    smyrf_task_fn task;
    void *task_context;
    size_t n_tasks;
    atomic_size_t next;
    unsigned long generation;
    int finished, quit;
    pthread_t threads[WORKERS];
} engine;

static void *worker_main(void *arg) {
    engine *e = arg;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        while (e->generation == seen && !e->quit) {
            pthread_cond_wait(&e->wake, &e->lock);
        }
        if (e->quit) {
            pthread_mutex_unlock(&e->lock);
            return NULL;
        }
        seen = e->generation;
        smyrf_task_fn task = e->task;
        void *context = e->task_context;
        size_t n = e->n_tasks;
        pthread_mutex_unlock(&e->lock);
        for (size_t i; (i = atomic_fetch_add(&e->next, 1)) < n;) {
            task(context, i);
        }
        pthread_mutex_lock(&e->lock);
        if (++e->finished == WORKERS) {
            pthread_cond_signal(&e->done);
        }
        pthread_mutex_unlock(&e->lock);
    }
}

/* smyrf_parallel_for_fn: every worker takes part in each run; it returns when all are done. */
static void engine_parallel_for(void *engine_context, size_t n_tasks, smyrf_task_fn task,
                                void *task_context) {
    engine *e = engine_context;
    pthread_mutex_lock(&e->lock);
    e->task = task;
    e->task_context = task_context;
    e->n_tasks = n_tasks;
    atomic_store(&e->next, 0);
    e->finished = 0;
    e->generation++;
    pthread_cond_broadcast(&e->wake);
    while (e->finished < WORKERS) {
        pthread_cond_wait(&e->done, &e->lock);
    }
    pthread_mutex_unlock(&e->lock);
}

static int engine_start(engine *e) {
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->done, NULL);
    for (int i = 0; i < WORKERS; i++) {
        if (pthread_create(&e->threads[i], NULL, worker_main, e) != 0) {
            return 1;
        }
    }
    return 0;
}

static void engine_stop(engine *e) {
    pthread_mutex_lock(&e->lock);
    e->quit = 1;
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->lock);
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(e->threads[i], NULL);
    }
}

/* ---- the calls ------------------------------------------------------------------------ */

enum { B = 2, HQ = 4, HKV = 2, N = 160, D = 16, DV = 8 };

static float q[B * HQ * N * D];
static uint16_t k[B * HKV * N * D], v[B * HKV * N * DV]; /* bfloat16 bits */
static uint8_t mask[B * N];
static uint16_t out[B * HQ * N * DV], reference[B * HQ * N * DV]; /* f16 bits */
static float lse[B * HQ * N], lse_reference[B * HQ * N];

static uint16_t bf16_of(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (uint16_t)(bits >> 16);
}

static int fail(const char *what, smyrf_status status) {
    fprintf(stderr, "%s: %s: %s\n", what, smyrf_status_message(status),
            smyrf_last_error_message());
    return 1;
}

/* One SMYRF (plan != NULL) or dense call, with the workspace and engine of `args`. */
static smyrf_status call(const smyrf_plan *plan, smyrf_call_args *args, uint16_t *result,
                         float *lse_result) {
    smyrf_tensor tq = smyrf_tensor_bhnd(q, SMYRF_DTYPE_F32, B, HQ, N, D);
    smyrf_tensor tk = smyrf_tensor_bhnd(k, SMYRF_DTYPE_BF16, B, HKV, N, D);
    smyrf_tensor tv = smyrf_tensor_bhnd(v, SMYRF_DTYPE_BF16, B, HKV, N, DV);
    smyrf_tensor_mut to = smyrf_tensor_mut_bhnd(result, SMYRF_DTYPE_F16, B, HQ, N, DV);
    args->key_mask = mask;
    args->lse_out = lse_result;
    return plan != NULL ? smyrf_attention(plan, &tq, &tk, &tv, &to, args)
                        : smyrf_dense_attention(&tq, &tk, &tv, 0.0f, &to, args);
}

static smyrf_status workspace_size(const smyrf_plan *plan, const smyrf_call_args *args,
                                   size_t *bytes) {
    /* Only shapes and element types matter: no data. */
    smyrf_tensor tq = smyrf_tensor_bhnd(NULL, SMYRF_DTYPE_F32, B, HQ, N, D);
    smyrf_tensor tk = smyrf_tensor_bhnd(NULL, SMYRF_DTYPE_BF16, B, HKV, N, D);
    smyrf_tensor tv = smyrf_tensor_bhnd(NULL, SMYRF_DTYPE_BF16, B, HKV, N, DV);
    smyrf_tensor_mut to = smyrf_tensor_mut_bhnd(NULL, SMYRF_DTYPE_F16, B, HQ, N, DV);
    return plan != NULL ? smyrf_plan_workspace_size(plan, &tq, &tk, &tv, &to, args, bytes)
                        : smyrf_dense_workspace_size(&tq, &tk, &tv, &to, args, bytes);
}

/* Calls `plan` (NULL: dense attention) on the engine or not, without and with a workspace;
 * prints the allocations of the counted calls with one. */
static int check(const char *name, const smyrf_plan *plan, engine *e) {
    smyrf_call_args args = smyrf_call_args_default();
    if (e != NULL) {
        args.parallel_for = engine_parallel_for;
        args.parallel_context = e;
        args.parallel_workers = WORKERS;
    }
    /* Counted too: a plan's first call without a workspace grows the plan's scratch, which
     * shows that the counters see the library's allocations. */
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    smyrf_status status = call(plan, &args, reference, lse_reference);
    atomic_store(&counting, 0);
    long without = atomic_load(&allocations);
    if (status != SMYRF_OK) {
        return fail(name, status);
    }
    size_t bytes = 0;
    status = workspace_size(plan, &args, &bytes);
    if (status != SMYRF_OK) {
        return fail("workspace size", status);
    }
    /* Any alignment will do: start 3 bytes into the allocation. */
    unsigned char *memory = malloc(bytes + 3);
    if (memory == NULL) {
        return 1;
    }
    args.workspace = memory + 3;
    args.workspace_size = bytes;
    status = call(plan, &args, out, lse); /* the first call on a thread: not counted */
    if (status != SMYRF_OK) {
        return fail(name, status);
    }
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    for (int i = 0; i < 3 && status == SMYRF_OK; i++) {
        memset(out, 0, sizeof out);
        status = call(plan, &args, out, lse);
    }
    atomic_store(&counting, 0);
    if (status != SMYRF_OK) {
        return fail(name, status);
    }
    if (memcmp(out, reference, sizeof out) != 0 || memcmp(lse, lse_reference, sizeof lse) != 0) {
        fprintf(stderr, "%s: the workspace changed the results\n", name);
        return 1;
    }
    /* One byte short: refused, nothing written. */
    args.workspace_size = bytes - 1;
    memset(out, 0, sizeof out);
    status = call(plan, &args, out, lse);
    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) {
        if (out[i] != 0) {
            fprintf(stderr, "%s: a refused call wrote its output\n", name);
            return 1;
        }
    }
    if (status != SMYRF_ERROR_INVALID_ARGUMENT ||
        strstr(smyrf_last_error_message(), "workspace") == NULL) {
        fprintf(stderr, "%s: a short workspace gave %u: %s\n", name, (unsigned)status,
                smyrf_last_error_message());
        return 1;
    }
    free(memory);
    printf("%s: %ld allocations (workspace %zu bytes; %ld without it)\n", name,
           atomic_load(&allocations), bytes, without);
    return 0;
}

int main(void) {
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        q[i] = (float)((i * 7919) % 997) / 997.0f - 0.5f;
    }
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        k[i] = bf16_of((float)((i * 104729) % 991) / 991.0f - 0.5f);
    }
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        v[i] = bf16_of((float)((i * 3571) % 983) / 983.0f - 0.5f);
    }
    for (size_t j = 0; j < sizeof mask; j++) {
        mask[j] = (uint8_t)(j % 5 != 0);
    }
    engine workers;
    if (engine_start(&workers) != 0) {
        return 1;
    }
    smyrf_config plain = smyrf_config_default();
    plain.q_cluster_size = 16;
    plain.num_threads = 1;
    smyrf_config blocks = plain;
    blocks.n_sinks = 4;
    blocks.window = 8;
    blocks.n_samples = 4;
    smyrf_plan *plans[2] = {NULL, NULL};
    smyrf_status status = smyrf_plan_create(&plain, D, &plans[0]);
    if (status == SMYRF_OK) {
        status = smyrf_plan_create(&blocks, D, &plans[1]);
    }
    if (status != SMYRF_OK) {
        return fail("smyrf_plan_create", status);
    }
    int failed = check("smyrf, caller's thread", plans[0], NULL) ||
                 check("smyrf, engine", plans[0], &workers) ||
                 check("smyrf blocks, caller's thread", plans[1], NULL) ||
                 check("smyrf blocks, engine", plans[1], &workers);
    /* Without a plan the call reads SMYRF_ISA each time, which allocates when it is set. */
    const char *isa = getenv("SMYRF_ISA");
    if (!failed && (isa == NULL || isa[0] == '\0')) {
        failed = check("dense, engine", NULL, &workers);
    }
    smyrf_plan_destroy(plans[0]);
    smyrf_plan_destroy(plans[1]);
    engine_stop(&workers);
    return failed;
}
