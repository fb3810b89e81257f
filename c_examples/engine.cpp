// engine.cpp: how an inference engine embeds smyrf from C++17.
//
// - a small RAII wrapper (smyrf::Plan, smyrf::Error) over the C interface;
// - activations in the [B, N, H, D] layout of a fused QKV projection, viewed through strides;
// - grouped-query attention: 8 query heads share 2 key/value heads;
// - one plan shared by worker threads; each worker runs its own heads on its own thread,
//   so the plan is built with num_threads = 1 and never starts threads of its own;
// - the engine's own thread pool lent to a call (smyrf_call_args.parallel_for): one call
//   over every head runs its tasks on the engine's workers, with the same bits;
// - an f16 K/V cache under f32 queries and outputs, with per-sequence key lengths.
//
//   usage: engine [OUTPUT_FILE]
//
// OUTPUT_FILE receives three [B][N][Hq][D] float outputs: the per-head calls, the one call
// on the thread pool, and the f16 K/V call on the thread pool.
#include <smyrf.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace smyrf {

// A failed call: the status and the library's explanation.
class Error : public std::runtime_error {
  public:
    explicit Error(smyrf_status status)
        : std::runtime_error(std::string(smyrf_status_message(status)) + ": " +
                             smyrf_last_error_message()),
          status_(status) {}
    smyrf_status status() const { return status_; }

  private:
    smyrf_status status_;
};

inline void check(smyrf_status status) {
    if (status != SMYRF_OK) {
        throw Error(status);
    }
}

// Owns a smyrf_plan; movable, not copyable. attention() is const: calls may run concurrently.
class Plan {
  public:
    Plan(const smyrf_config& config, size_t head_dim) {
        check(smyrf_plan_create(&config, head_dim, &plan_));
    }
    ~Plan() { smyrf_plan_destroy(plan_); }
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    Plan(Plan&& other) noexcept : plan_(std::exchange(other.plan_, nullptr)) {}
    Plan& operator=(Plan&& other) noexcept {
        std::swap(plan_, other.plan_);
        return *this;
    }

    const char* isa() const { return smyrf_isa_name(plan_); }

    // `args` may be null: no mask, no lse, the plan's threads.
    void attention(const smyrf_tensor& q, const smyrf_tensor& k, const smyrf_tensor& v,
                   const smyrf_tensor_mut& out, const smyrf_call_args* args) const {
        check(smyrf_attention(plan_, &q, &k, &v, &out, args));
    }

  private:
    smyrf_plan* plan_ = nullptr;
};

// A [B, N, H, D] activation buffer of element type T (float, or uint16_t holding f16 bits);
// all() views every head, head(h) the [B, 1, N, D] view of one.
template <typename T>
struct Activations {
    size_t batch, seq_len, heads, dim;
    uint32_t dtype;
    std::vector<T> data;

    Activations(size_t b, size_t n, size_t h, size_t d, uint32_t type)
        : batch(b), seq_len(n), heads(h), dim(d), dtype(type), data(b * n * h * d) {}

    smyrf_tensor all() const {
        return smyrf_tensor_bnhd(data.data(), dtype, batch, heads, seq_len, dim);
    }
    smyrf_tensor_mut all_mut() {
        return smyrf_tensor_mut_bnhd(data.data(), dtype, batch, heads, seq_len, dim);
    }
    // The strides stay those of all heads; the view starts at head h and holds one.
    smyrf_tensor head(size_t h) const {
        smyrf_tensor t = all();
        t.data = data.data() + h * dim;
        t.heads = 1;
        return t;
    }
    smyrf_tensor_mut head_mut(size_t h) {
        smyrf_tensor_mut t = all_mut();
        t.data = data.data() + h * dim;
        t.heads = 1;
        return t;
    }
};

}  // namespace smyrf

// The engine's thread pool: its worker threads start once and wait for work. parallel_for
// hands out the indices 0..n through an atomic counter to the workers and the calling thread
// and returns when all have run; it allocates nothing.
class ThreadPool {
  public:
    explicit ThreadPool(size_t threads) {
        for (size_t t = 0; t < threads; t++) {
            threads_.emplace_back([this] { work(); });
        }
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_) t.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    // Tasks that may run at once: the workers plus the calling thread.
    uint32_t concurrency() const { return static_cast<uint32_t>(threads_.size() + 1); }

    void parallel_for(size_t n, smyrf_task_fn task, void* context) {
        // One job at a time, whichever thread asks.
        std::lock_guard<std::mutex> one_job(job_mutex_);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = task;
            context_ = context;
            n_ = n;
            next_.store(0, std::memory_order_relaxed);
            busy_ = threads_.size();
            generation_++;
        }
        wake_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [this] { return busy_ == 0; });
    }

  private:
    void drain() {
        for (;;) {
            const size_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= n_) return;
            task_(context_, i);
        }
    }

    void work() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            lock.unlock();
            drain();
            lock.lock();
            // The job's fields stay put until every worker has left it.
            if (--busy_ == 0) done_.notify_one();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex job_mutex_, mutex_;
    std::condition_variable wake_, done_;
    uint64_t generation_ = 0;
    size_t busy_ = 0;
    bool stop_ = false;
    smyrf_task_fn task_ = nullptr;
    void* context_ = nullptr;
    size_t n_ = 0;
    std::atomic<size_t> next_{0};
};

// The pool as a smyrf_parallel_for_fn (a C function type); engine_context is the pool.
extern "C" {
static void run_on_pool(void* pool, size_t n, smyrf_task_fn task, void* context) {
    static_cast<ThreadPool*>(pool)->parallel_for(n, task, context);
}
}

// IEEE binary16 bits of x, rounded to nearest even (as hardware conversions and
// half::f16::from_f32 round); NaN stays NaN.
static uint16_t to_f16(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint32_t sign = (bits >> 16) & 0x8000u, magnitude = bits & 0x7FFFFFFFu;
    if (magnitude >= 0x7F800000u) {  // infinity or NaN (kept quiet)
        const uint32_t nan = magnitude > 0x7F800000u ? 0x200u | ((magnitude >> 13) & 0x3FFu) : 0;
        return static_cast<uint16_t>(sign | 0x7C00u | nan);
    }
    if (magnitude >= 0x477FF000u) {  // 65520 and up round past the largest half, 65504
        return static_cast<uint16_t>(sign | 0x7C00u);
    }
    if (magnitude >= 0x38800000u) {  // normal half: drop 13 bits, ties to even, rebias
        const uint32_t rounded = magnitude + 0xFFFu + ((magnitude >> 13) & 1u);
        return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
    }
    // Subnormal half (units of 2^-24) or zero: the significand shifted right, ties to even;
    // a carry into bit 10 is the smallest normal, which is the right encoding.
    const uint32_t exponent = magnitude >> 23;
    if (exponent < 102) {  // below 2^-25: rounds to zero
        return static_cast<uint16_t>(sign);
    }
    const uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u, shift = 126 - exponent;
    uint32_t half = significand >> shift;
    const uint32_t rest = significand & ((1u << shift) - 1), tie = 1u << (shift - 1);
    if (rest > tie || (rest == tie && (half & 1u))) half++;
    return static_cast<uint16_t>(sign | half);
}

// Deterministic test data in [-1, 1]: a multiplicative hash of the element index.
static float value(uint32_t i, uint32_t salt) {
    uint32_t x = i * 2654435761u + salt * 40503u;
    x ^= x >> 15;
    return static_cast<float>(x % 2001u) / 1000.0f - 1.0f;
}

using F32 = smyrf::Activations<float>;
using F16 = smyrf::Activations<uint16_t>;

static double checksum(const F32& a) {
    double sum = 0.0;
    for (float x : a.data) sum += x;
    return sum;
}

static bool same_bits(const F32& a, const F32& b) {
    return a.data.size() == b.data.size() &&
           std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

int main(int argc, char** argv) {
    const size_t batch = 2, seq_len = 192, q_heads = 8, kv_heads = 2, dim = 32;
    const size_t workers = 4, padding = 40;
    F32 q(batch, seq_len, q_heads, dim, SMYRF_DTYPE_F32),
        k(batch, seq_len, kv_heads, dim, SMYRF_DTYPE_F32),
        v(batch, seq_len, kv_heads, dim, SMYRF_DTYPE_F32),
        out(batch, seq_len, q_heads, dim, SMYRF_DTYPE_F32);
    for (size_t i = 0; i < q.data.size(); i++) q.data[i] = value(static_cast<uint32_t>(i), 4);
    for (size_t i = 0; i < k.data.size(); i++) k.data[i] = value(static_cast<uint32_t>(i), 5);
    for (size_t i = 0; i < v.data.size(); i++) v.data[i] = value(static_cast<uint32_t>(i), 6);
    // Batch element 1 is padded: its last keys take no part.
    std::vector<uint8_t> mask(batch * seq_len, 1);
    for (size_t j = seq_len - padding; j < seq_len; j++) mask[seq_len + j] = 0;

    try {
        smyrf_config bad = smyrf_config_default();
        bad.n_hashes = 0;
        smyrf::Plan refused(bad, dim);
    } catch (const smyrf::Error& e) {
        std::printf("refused as expected (status %u): %s\n", static_cast<unsigned>(e.status()),
                    e.what());
    }

    smyrf_config config = smyrf_config_default();
    config.n_hashes = 2;
    config.q_cluster_size = 32;
    config.seed = 7;
    config.num_threads = 1;  // the engine owns the threads
    F32 pooled(batch, seq_len, q_heads, dim, SMYRF_DTYPE_F32);
    F32 cached(batch, seq_len, q_heads, dim, SMYRF_DTYPE_F32);
    try {
        const smyrf::Plan plan(config, dim);
        smyrf_call_args masked = smyrf_call_args_default();
        masked.key_mask = mask.data();

        // 1. Each engine thread runs its own heads, one call per head.
        std::vector<std::string> errors(workers);
        std::vector<std::thread> threads;
        for (size_t w = 0; w < workers; w++) {
            threads.emplace_back([&, w] {
                try {
                    for (size_t h = w; h < q_heads; h += workers) {
                        const size_t kv = h / (q_heads / kv_heads);  // grouped-query attention
                        plan.attention(q.head(h), k.head(kv), v.head(kv), out.head_mut(h),
                                       &masked);
                    }
                } catch (const std::exception& e) {
                    errors[w] = e.what();
                }
            });
        }
        for (auto& t : threads) t.join();
        for (const auto& e : errors) {
            if (!e.empty()) throw std::runtime_error(e);
        }
        std::printf("engine: B=%zu N=%zu Hq=%zu Hkv=%zu d=%zu, %zu workers\n", batch, seq_len,
                    q_heads, kv_heads, dim, workers);
        std::printf("isa: %s\nchecksum: %.6f\n", plan.isa(), checksum(out));

        // 2. One call over every head, its tasks on the engine's pool (the pool's threads
        //    plus this one): the same bits as the per-head calls, and as the same call on
        //    this thread alone.
        ThreadPool pool(workers - 1);
        smyrf_call_args on_pool = masked;
        on_pool.parallel_for = run_on_pool;
        on_pool.parallel_context = &pool;
        on_pool.parallel_workers = pool.concurrency();
        plan.attention(q.all(), k.all(), v.all(), pooled.all_mut(), &on_pool);
        F32 alone(batch, seq_len, q_heads, dim, SMYRF_DTYPE_F32);
        plan.attention(q.all(), k.all(), v.all(), alone.all_mut(), &masked);
        if (!same_bits(pooled, out) || !same_bits(pooled, alone)) {
            throw std::runtime_error("the pool's call differs from the per-head calls");
        }
        std::printf("thread pool (%u at once): same bits as the per-head calls\n",
                    static_cast<unsigned>(on_pool.parallel_workers));

        // 3. An f16 K/V cache (converted once, as an engine stores it) under f32 queries and
        //    outputs, with each sequence's key count instead of a mask.
        F16 k16(batch, seq_len, kv_heads, dim, SMYRF_DTYPE_F16),
            v16(batch, seq_len, kv_heads, dim, SMYRF_DTYPE_F16);
        for (size_t i = 0; i < k.data.size(); i++) k16.data[i] = to_f16(k.data[i]);
        for (size_t i = 0; i < v.data.size(); i++) v16.data[i] = to_f16(v.data[i]);
        const int32_t key_lengths[] = {static_cast<int32_t>(seq_len),
                                       static_cast<int32_t>(seq_len - padding)};
        smyrf_call_args cache = on_pool;
        cache.key_mask = nullptr;
        cache.key_lengths = key_lengths;
        plan.attention(q.all(), k16.all(), v16.all(), cached.all_mut(), &cache);
        cache.parallel_for = nullptr;  // this thread alone
        plan.attention(q.all(), k16.all(), v16.all(), alone.all_mut(), &cache);
        if (!same_bits(cached, alone)) {
            throw std::runtime_error("the pool's f16 call differs from the serial one");
        }
        std::printf("f16 K/V, key lengths {%d, %d}: checksum %.6f\n",
                    static_cast<int>(key_lengths[0]), static_cast<int>(key_lengths[1]),
                    checksum(cached));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "engine failed: %s\n", e.what());
        return 1;
    }

    if (argc > 1) {
        std::FILE* file = std::fopen(argv[1], "wb");
        bool written = file != nullptr;
        for (const F32* a : {&out, &pooled, &cached}) {
            written = written && std::fwrite(a->data.data(), sizeof(float), a->data.size(),
                                             file) == a->data.size();
        }
        if (file && std::fclose(file) != 0) written = false;
        if (!written) {
            std::fprintf(stderr, "cannot write %s\n", argv[1]);
            return 1;
        }
        std::printf("wrote %s\n", argv[1]);
    }
    return 0;
}
