// engine.cpp: how an inference engine embeds smyrf from C++17.
//
// - a small RAII wrapper (smyrf::Plan, smyrf::Error) over the C interface;
// - activations in the [B, N, H, D] layout of a fused QKV projection, viewed through strides;
// - grouped-query attention: 8 query heads share 2 key/value heads;
// - one plan shared by worker threads; each worker runs its own heads on its own thread,
//   so the plan is built with num_threads = 1 and never starts threads of its own.
//
//   usage: engine [OUTPUT_FILE]   (writes the output [B][N][Hq][D] as raw floats)
#include <smyrf.h>

#include <cstdint>
#include <cstdio>
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

    void attention(const smyrf_tensor& q, const smyrf_tensor& k, const smyrf_tensor& v,
                   const uint8_t* key_mask, smyrf_tensor_mut& out) const {
        check(smyrf_attention(plan_, &q, &k, &v, key_mask, &out, nullptr));
    }

  private:
    smyrf_plan* plan_ = nullptr;
};

// A [B, N, H, D] activation buffer; head(h) is the [B, 1, N, D] view of one head.
struct Activations {
    size_t batch, seq_len, heads, dim;
    std::vector<float> data;

    Activations(size_t b, size_t n, size_t h, size_t d)
        : batch(b), seq_len(n), heads(h), dim(d), data(b * n * h * d) {}

    smyrf_tensor head(size_t h) const {
        return {data.data() + h * dim, batch, 1, seq_len, dim, seq_len * heads * dim, dim,
                heads * dim};
    }
    smyrf_tensor_mut head_mut(size_t h) {
        return {data.data() + h * dim, batch, 1, seq_len, dim, seq_len * heads * dim, dim,
                heads * dim};
    }
};

}  // namespace smyrf

// Deterministic test data in [-1, 1]: a multiplicative hash of the element index.
static float value(uint32_t i, uint32_t salt) {
    uint32_t x = i * 2654435761u + salt * 40503u;
    x ^= x >> 15;
    return static_cast<float>(x % 2001u) / 1000.0f - 1.0f;
}

int main(int argc, char** argv) {
    const size_t batch = 2, seq_len = 192, q_heads = 8, kv_heads = 2, dim = 32;
    const size_t workers = 4, padding = 40;
    smyrf::Activations q(batch, seq_len, q_heads, dim), k(batch, seq_len, kv_heads, dim),
        v(batch, seq_len, kv_heads, dim), out(batch, seq_len, q_heads, dim);
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
    try {
        const smyrf::Plan plan(config, dim);
        std::vector<std::string> errors(workers);
        std::vector<std::thread> threads;
        for (size_t w = 0; w < workers; w++) {
            threads.emplace_back([&, w] {
                try {
                    for (size_t h = w; h < q_heads; h += workers) {
                        const size_t kv = h / (q_heads / kv_heads);  // grouped-query attention
                        smyrf_tensor_mut o = out.head_mut(h);
                        plan.attention(q.head(h), k.head(kv), v.head(kv), mask.data(), o);
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
        double checksum = 0.0;
        for (float x : out.data) checksum += x;
        std::printf("engine: B=%zu N=%zu Hq=%zu Hkv=%zu d=%zu, %zu workers\n", batch, seq_len,
                    q_heads, kv_heads, dim, workers);
        std::printf("isa: %s\nchecksum: %.6f\n", plan.isa(), checksum);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "engine failed: %s\n", e.what());
        return 1;
    }

    if (argc > 1) {
        std::FILE* file = std::fopen(argv[1], "wb");
        if (!file ||
            std::fwrite(out.data.data(), sizeof(float), out.data.size(), file) !=
                out.data.size() ||
            std::fclose(file) != 0) {
            std::fprintf(stderr, "cannot write %s\n", argv[1]);
            return 1;
        }
        std::printf("wrote %s\n", argv[1]);
    }
    return 0;
}
