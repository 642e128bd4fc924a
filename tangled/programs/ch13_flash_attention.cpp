// Generated from chapters/13-flash-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <any>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/flash_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace {

// ⟨Compute dense causal attention for comparison⟩ 13-flash-attention.md:1549
/// Chapter 1's matrix form with −∞ scores above the diagonal: the dense causal
/// reference.
template <class T>
xt::xtensor<T, 2> dense_causal_attention(const xt::xtensor<T, 2>& Q,
                                         const xt::xtensor<T, 2>& K,
                                         const xt::xtensor<T, 2>& V)
{
    const xt::xtensor<T, 2> K_t = xt::transpose(K);      // d_k×n
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q, K_t);  // n×n
    scores *= T(1) / std::sqrt(T(K.shape(1)));
    for (std::size_t i = 0; i < scores.shape(0); ++i)
        for (std::size_t j = i + 1; j < scores.shape(1); ++j)
            scores(i, j) = -std::numeric_limits<T>::infinity();
    const xt::xtensor<T, 2> weights = attn::softmax_rows(scores);  // n×n
    return xt::linalg::dot(weights, V);
}

/// Largest |a − b| over all elements.
template <class T>
double max_abs_difference(const xt::xtensor<T, 2>& a, const xt::xtensor<T, 2>& b)
{
    return double(xt::amax(xt::abs(a - b))());
}

// ⟨Compute 2^x with the kernel that runs here⟩ 13-flash-attention.md:1699
/// y = 2^x with the vector exponential of the kernel flash_attention<float> runs here.
void kernel_exp2(const float* x, float* y, std::size_t count)
{
    switch (attn::detail::resolve_kernel(attn::FlashKernel::best)) {
#if ATTN_FLASH_X86
    case attn::FlashKernel::avx512:
        return attn::detail::avx512::exp2_array(x, y, count);
    case attn::FlashKernel::avx2:
        return attn::detail::avx2::exp2_array(x, y, count);
#endif
    default:
        return attn::detail::emulated8::exp2_array(x, y, count);
    }
}

// ⟨Multiply two square matrices: the ceiling⟩ 13-flash-attention.md:1742
/// C = A·B for size×size float matrices with one cblas_sgemm: a compute-bound shape,
/// the ceiling of this machine's BLAS.
class SquareSgemm {
public:
    SquareSgemm(int size, std::mt19937_64& rng)
        : size_(size),
          A_(attn::random_normal<float>(size, size, 1.0, rng)),
          B_(attn::random_normal<float>(size, size, 1.0, rng)),
          C_(std::size_t(size) * size)
    {}
    float operator()()
    {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size_, size_, size_,
                    1.0f, A_.data(), size_, B_.data(), size_, 0.0f, C_.data(), size_);
        return C_[0];
    }
    double flops() const { return 2.0 * size_ * double(size_) * size_; }

private:
    int size_;
    xt::xtensor<float, 2> A_, B_;  // size×size
    std::vector<float> C_;         // size×size
};

// ⟨Multiply as attention does, without the softmax⟩ 13-flash-attention.md:1776
/// S = Q·Kᵀ (n×m) then O = S·V (n×d_v) with two cblas_sgemm calls into buffers
/// allocated once: the arithmetic of attention, no softmax.
class TwoSgemms {
public:
    TwoSgemms(const xt::xtensor<float, 2>& Q, const xt::xtensor<float, 2>& K,
              const xt::xtensor<float, 2>& V)
        : Q_(Q), K_(K), V_(V), S_(Q.shape(0) * K.shape(0)), O_(Q.shape(0) * V.shape(1))
    {}
    float operator()()
    {
        const int n = int(Q_.shape(0)), m = int(K_.shape(0)), d_k = int(Q_.shape(1)),
                  d_v = int(V_.shape(1));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, d_k, 1.0f, Q_.data(),
                    d_k, K_.data(), d_k, 0.0f, S_.data(), m);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d_v, m, 1.0f,
                    S_.data(), m, V_.data(), d_v, 0.0f, O_.data(), d_v);
        return O_[0];
    }

private:
    const xt::xtensor<float, 2>& Q_;  // n×d_k
    const xt::xtensor<float, 2>& K_;  // m×d_k
    const xt::xtensor<float, 2>& V_;  // m×d_v
    std::vector<float> S_, O_;        // n×m, n×d_v
};

// ⟨Say how two times compare⟩ 13-flash-attention.md:1865
/// "faster than", "about as fast as" or "slower than": `seconds` against `reference`.
std::string compare_speed(double seconds, double reference)
{
    const double speed = reference / seconds;
    return speed > 1.05       ? "faster than"
           : speed < 1 / 1.05 ? "slower than"
                              : "about as fast as";
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(
        argc, argv, "ch13", "FlashAttention on the CPU: exactness, speed, memory",
        [](const attn::Options& options, attn::Results& results) {
            const std::filesystem::path& out = options.out;
            std::mt19937_64 rng(options.seed);
            // ⟨Choose the lengths and the threads⟩ 13-flash-attention.md:2163
            constexpr std::size_t d = 64;  // d_k = d_v in every timing
            const std::size_t n_max = options.quick ? 1024 : options.bench ? 16384 : 8192;
            const std::size_t dense_n_max = options.quick ? 1024 : options.bench ? 8192 : 4096;
            const std::size_t n_compare = std::min<std::size_t>(options.bench ? 4096 : 2048,
                                                                dense_n_max);
            const int all_threads = int(std::max(1u, std::thread::hardware_concurrency()));
            // GFLOP/s of the ceiling on one thread and on all (measured below)
            double ceiling_one = 0, ceiling_all = 0;
            results.add("n_compare", double(n_compare));
            results.add("flash_threads", double(all_threads));
            // ⟨Record the caches, the tiles and the kernel⟩ 13-flash-attention.md:2178
            {
                const attn::detail::CacheSizes& caches = attn::detail::cache_sizes();
                results.add("l1d_kib", double(caches.l1d_bytes) / 1024);
                results.add("l2_kib", double(caches.l2_bytes) / 1024);
                results.add_text("cache_sizes_from", caches.from_sysfs
                                                         ? "sysfs"
                                                         : "fallback constants (sysfs unreadable)");
                const attn::FlashOptions plan = attn::detail::plan_flash({}, d, d);
                results.add("chosen_key_tile", double(plan.key_tile));
                results.add("chosen_query_tile", double(plan.query_tile));
                results.add_text("flash_kernel", attn::flash_kernel_name());
            }
            // ⟨Compare flash attention with dense attention⟩ 13-flash-attention.md:1575
            {
                const auto Q_d = attn::random_normal<double>(300, 64, 1.0, rng);  // n×d_k
                const auto K_d = attn::random_normal<double>(300, 64, 1.0, rng);  // m×d_k
                const auto V_d = attn::random_normal<double>(300, 64, 1.0, rng);  // m×d_v
                const xt::xtensor<float, 2> Q_f = Q_d, K_f = K_d, V_f = V_d;
                const auto dense_f = attn::scaled_dot_product_attention(Q_f, K_f, V_f);
                const auto dense_d = attn::scaled_dot_product_attention(Q_d, K_d, V_d);
                const auto causal_f = dense_causal_attention(Q_f, K_f, V_f);
                const auto causal_d = dense_causal_attention(Q_d, K_d, V_d);
                auto error = [&](const std::string& key, const auto& computed,
                                 const auto& reference) {
                    results.add(key, max_abs_difference(computed, reference));
                };
                error("max_abs_error_float", attn::flash_attention(Q_f, K_f, V_f), dense_f);
                error("max_abs_error_double", attn::flash_attention(Q_d, K_d, V_d), dense_d);
                error("max_abs_error_causal_float", attn::flash_attention(Q_f, K_f, V_f, true),
                      causal_f);
                error("max_abs_error_causal_double", attn::flash_attention(Q_d, K_d, V_d, true),
                      causal_d);
                error("max_abs_error_unfused_float", attn::unfused_attention(Q_f, K_f, V_f),
                      dense_f);
                error("max_abs_error_unfused_double", attn::unfused_attention(Q_d, K_d, V_d),
                      dense_d);
            }
            // ⟨Draw which tiles the causal kernel visits⟩ 13-flash-attention.md:1625
            {
                const std::size_t n_map = 768, tile = 64, tiles = n_map / tile;
                // query×key tiles
                xt::xtensor<double, 2> share = xt::zeros<double>({tiles, tiles});
                xt::xtensor<bool, 2> visited = xt::zeros<bool>({tiles, tiles});
                for (std::size_t a = 0; a < tiles; ++a) {
                    const std::size_t visit =
                        attn::detail::key_tiles_to_visit(n_map, (a + 1) * tile, tile, true);
                    for (std::size_t b = 0; b < visit; ++b) {
                        visited(a, b) = true;
                        std::size_t kept = 0;  // scores with j ≤ i inside the tile
                        for (std::size_t i = a * tile; i < (a + 1) * tile; ++i)
                            for (std::size_t j = b * tile; j < (b + 1) * tile; ++j) kept += j <= i;
                        share(a, b) = double(kept) / double(tile * tile);
                    }
                }
                results.add(
                    "skipped_tile_share",
                    1.0 - double(xt::sum(xt::cast<double>(visited))()) / double(tiles * tiles));
                attn::plot::HeatmapStyle style{"", {}, {}};  // the caption says what it shows
                style.x_label = "key tile";
                style.y_label = "query tile";
                style.colorbar_label = "share of scores kept";
                style.allowed = visited;
                attn::plot::heatmap(out / "causal_tiles.svg", share, style);
            }
            // ⟨Measure the vector exponential against std::exp2⟩ 13-flash-attention.md:1669
            {
                const std::size_t points = options.quick ? 126 * 1024 : 126 * 8192, bins = 126;
                std::vector<float> x(points), y(points);
                for (std::size_t p = 0; p < points; ++p)
                    x[p] = -126.0f * float(p) / float(points - 1);
                kernel_exp2(x.data(), y.data(), points);
                attn::Series worst{"fast 2^{x} against std::exp2", {}, {}};
                double largest = 0;
                for (std::size_t b = 0; b < bins; ++b) {
                    double bin_worst = 0;
                    for (std::size_t p = b * points / bins; p < (b + 1) * points / bins; ++p) {
                        const double exact = std::exp2(double(x[p]));
                        bin_worst = std::max(bin_worst, std::abs(double(y[p]) - exact) / exact);
                    }
                    worst.x.push_back(-126.0 + double(b) + 0.5);
                    worst.y.push_back(bin_worst / std::numeric_limits<float>::epsilon());
                    largest = std::max(largest, bin_worst);
                }
                results.add("exp2_max_relative_error", largest, 2);
                attn::plot::LinePlotStyle style{"", "x", "relative error / float epsilon"};
                style.y_min = 0, style.y_max = 4;
                attn::plot::lines(out / "exp2_error.svg", {worst}, style);
            }
            // ⟨Measure the ceiling and every kernel on one thread and on all⟩ 13-flash-attention.md:1817
            {
                const std::size_t n = n_compare, d = 64;
                const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                SquareSgemm ceiling(2048, rng);
                TwoSgemms two(Q, K, V);
                const double flops = attn::attention_flops(n, n, d, d);
                const std::vector<std::string> names = {"ceiling", "sgemm",    "dense",
                                                        "unfused", "portable", "flash"};
                for (const int pass : {0, 1}) {  // on one thread, then on all
                    const int threads = pass == 0 ? 1 : all_threads;
                    const attn::BlasThreads blas(threads);
                    attn::FlashOptions vector, portable;
                    vector.threads = portable.threads = unsigned(threads);
                    portable.kernel = attn::FlashKernel::portable;
                    const std::vector<attn::Timing> t = attn::time_alternating(
                        {[&] { return ceiling(); }, [&] { return two(); },
                         [&] { return attn::scaled_dot_product_attention(Q, K, V); },
                         [&] { return attn::unfused_attention(Q, K, V, false, vector); },
                         [&] { return attn::flash_attention(Q, K, V, false, portable); },
                         [&] { return attn::flash_attention(Q, K, V, false, vector); }},
                        options.quick ? 2 : 3);
                    const std::string on = pass == 0 ? "_1_thread" : "_all_threads";
                    std::vector<double> rate = {ceiling.flops() / t[0].wall / 1e9};
                    for (std::size_t k = 1; k < t.size(); ++k)
                        rate.push_back(flops / t[k].wall / 1e9);
                    for (std::size_t k = 0; k < t.size(); ++k)
                        results.add("gflops_" + names[k] + on, rate[k]);
                    results.add("flash_fraction_of_ceiling" + on, rate[5] / rate[0], 2);
                    (pass == 0 ? ceiling_one : ceiling_all) = rate[0];
                    // ⟨Compare the kernels in words⟩ 13-flash-attention.md:1876
                    if (pass == 0) {
                        results.add("vector_speedup_1_thread", t[4].wall / t[5].wall);
                    } else {
                        results.add_text("flash_vs_sgemm_phrase", compare_speed(t[5].wall, t[1].wall));
                        results.add("flash_speed_over_sgemm", t[1].wall / t[5].wall, 2);
                        results.add_text("flash_vs_unfused_phrase", compare_speed(t[5].wall, t[3].wall));
                        results.add("flash_speed_over_unfused", t[3].wall / t[5].wall, 2);
                        results.add_text("unfused_vs_dense_phrase", compare_speed(t[3].wall, t[2].wall));
                        results.add_text("flash_vs_dense_phrase", compare_speed(t[5].wall, t[2].wall));
                        results.add("flash_speedup_over_dense", t[2].wall / t[5].wall);
                        results.add("vector_speedup_all_threads", t[4].wall / t[5].wall);
                    }
                }
                results.add_text("all_threads_note",
                                 ceiling_all < ceiling_one
                                     ? "On this run even the ceiling was slower on all threads "
                                       "than on one: the machine had other work, and that column "
                                       "says nothing about how the kernels scale."
                                     : "");
            }
            // ⟨Sweep the key tile size⟩ 13-flash-attention.md:2122
            {
                const std::size_t n = options.quick ? 512 : 2048;
                const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                attn::Series rate{
                    "flash attention, n = " + std::to_string(n) + " (1 thread)", {}, {}};
                std::vector<attn::Call> calls;
                for (std::size_t key_tile = 32; key_tile <= 1024; key_tile *= 2) {
                    attn::FlashOptions o;
                    o.key_tile = key_tile;
                    o.threads = 1;
                    calls.push_back(
                        [&Q, &K, &V, o] { return attn::flash_attention(Q, K, V, false, o); });
                    rate.x.push_back(double(key_tile));
                }
                for (const attn::Timing& t : attn::time_alternating(calls, 3))
                    rate.y.push_back(attn::attention_flops(n, n, d, d) / t.wall / 1e9);
                const auto best = std::max_element(rate.y.begin(), rate.y.end()) - rate.y.begin();
                results.add("best_key_tile", rate.x[best]);
                attn::plot::LinePlotStyle style{"", "keys per tile, B_{c}", "GFLOP/s"};
                style.log_x = true;
                style.y_min = 0, style.y_max = 1.2 * rate.y[best];
                attn::plot::lines(out / "key_tile.svg", {rate}, style);
            }
            // ⟨Time every kernel against n⟩ 13-flash-attention.md:1944
            const int repeats_small = options.quick ? 2 : 5;
            attn::CostCurve dense("dense (chapter 1)", all_threads),
                sgemm("two sgemm calls", all_threads);
            attn::CostCurve unfused("three passes", all_threads),
                flash("flash attention", all_threads);
            attn::CostCurve causal("flash attention, causal", all_threads);
            attn::FlashOptions on_all;
            on_all.threads = unsigned(all_threads);
            for (std::size_t step = 0;; ++step) {
                const std::size_t n = (step % 2 ? 384 : 256)
                                      << (step / 2);  // 256, 384, 512, 768, …
                if (n > n_max) break;
                const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
                const bool small = n <= dense_n_max;
                std::optional<TwoSgemms> two;  // its n×n buffer only where it is measured
                if (small) two.emplace(Q, K, V);
                attn::Call dense_call, sgemm_call, unfused_call;
                if (small) {
                    dense_call = [&] { return attn::scaled_dot_product_attention(Q, K, V); };
                    sgemm_call = [&] { return (*two)(); };
                    unfused_call = [&] { return attn::unfused_attention(Q, K, V, false, on_all); };
                }
                attn::measure_costs({&dense, &sgemm, &unfused, &flash, &causal}, double(n),
                                    {dense_call, sgemm_call, unfused_call,
                                     [&] { return attn::flash_attention(Q, K, V, false, on_all); },
                                     [&] { return attn::flash_attention(Q, K, V, true, on_all); }},
                                    n <= 2048   ? repeats_small
                                    : n <= 4096 ? 3
                                                : 2);
            }
            results.add("n_max", double(n_max));
            results.add("dense_n_max", double(dense_n_max));
            // ⟨Record the numbers at n_compare and at the largest n⟩ 13-flash-attention.md:1985
            auto at = [](const attn::CostCurve& curve, double n) {  // the point of `curve` at n
                return std::size_t(std::find(curve.n.begin(), curve.n.end(), n) - curve.n.begin());
            };
            const std::size_t c = at(flash, double(n_compare)), last = flash.n.size() - 1;
            results.add("dense_memory_mib_compare", dense.peak_mib[at(dense, double(n_compare))]);
            results.add("unfused_memory_mib_compare",
                        unfused.peak_mib[at(unfused, double(n_compare))]);
            results.add("flash_memory_mib_compare", flash.peak_mib[c]);
            results.add("causal_time_share_percent",
                        100 * causal.wall_seconds[c] / flash.wall_seconds[c]);
            results.add("flash_memory_mib_at_n_max", flash.peak_mib[last]);
            results.add("input_mib_at_n_max", 3.0 * n_max * d * sizeof(float) / (1 << 20));
            const double scores_at_n_max = double(n_max * n_max * sizeof(float));  // bytes of n×n
            results.add("dense_scores_mib_at_n_max", scores_at_n_max / (1 << 20));
            results.add("flash_seconds_at_n_max", flash.wall_seconds[last]);
            // ⟨Fit the slopes and draw time, rate and memory⟩ 13-flash-attention.md:2008
            const double fit_from =
                options.quick ? 256 : 1024;  // fixed costs dominate the smallest calls
            results.add("slope_fit_from", fit_from);
            results.add_fit("flash_time_slope", flash.time_fit(fit_from));
            results.add_fit("dense_time_slope", dense.time_fit(fit_from));
            results.add_fit("unfused_time_slope", unfused.time_fit(fit_from));
            results.add_fit("flash_memory_slope", flash.memory_fit(fit_from));
            results.add_fit("dense_memory_slope", dense.memory_fit(fit_from));
            results.add_text("flash_crossover_dense",
                             attn::find_crossover(flash, dense).describe());

            attn::plot::LinePlotStyle time_style{"", "n (tokens)",
                                                 "seconds (fastest of the repeats)"};
            time_style.log_x = time_style.log_y = true;
            time_style.key = "below left Left reverse vertical maxrows 5";  // one column
            attn::plot::lines(out / "time.svg",
                              {dense.time(), sgemm.time(), unfused.time(), flash.time(),
                               causal.time()},
                              time_style);

            auto rate = [&](const attn::CostCurve& curve, bool causal_pairs) {  // GFLOP/s against n
                attn::Series s = curve.time();
                for (std::size_t k = 0; k < s.x.size(); ++k)
                    s.y[k] =
                        attn::attention_flops(s.x[k], s.x[k], d, d, causal_pairs) / s.y[k] / 1e9;
                return s;
            };
            const attn::Series roof{
                "sgemm 2048^3, the ceiling (" + std::to_string(all_threads) + " threads)",
                {256.0, double(n_max)},
                {ceiling_all, ceiling_all},
                "lines"};
            attn::plot::LinePlotStyle rate_style{"", "n (tokens)", "GFLOP/s (4 n^2 d per call)"};
            rate_style.log_x = true;
            double fastest = ceiling_all;  // the y range holds the ceiling and every point
            for (const attn::CostCurve* curve : {&dense, &sgemm, &unfused, &flash})
                for (double y : rate(*curve, false).y) fastest = std::max(fastest, y);
            rate_style.y_min = 0, rate_style.y_max = 1.1 * fastest;
            rate_style.key = time_style.key;
            attn::plot::lines(out / "gflops.svg",
                              {rate(dense, false), rate(sgemm, false), rate(unfused, false),
                               rate(flash, false), roof},
                              rate_style);

            attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB added to the process"};
            memory_style.log_x = memory_style.log_y = true;
            attn::plot::lines(out / "memory.svg",
                              {dense.memory(), unfused.memory(), flash.memory()}, memory_style);
            // ⟨Estimate the memory traffic⟩ 13-flash-attention.md:2257
            {
                const double n = 4096, m = 4096, d_k = 64, d_v = 64, MiB = 1 << 20;
                const double B_r = double(attn::detail::plan_flash({}, 64, 64).query_tile);
                results.add("model_traffic_dense_mib_4096", 4 * n * m * 4 / MiB);
                results.add("model_traffic_flash_mib_4096",
                            (std::ceil(n / B_r) * m + n) * (d_k + d_v) * 4 / MiB);
                results.add("exponentials_4096", n * m / 1e6);
            }
        });
}
