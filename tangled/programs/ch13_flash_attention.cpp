// Generated from chapters/13-flash-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <string>
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

extern "C" int openblas_get_num_threads(void);  // OpenBLAS's own call (not part of CBLAS)

namespace {

// ⟨Compute dense causal attention for comparison⟩ 13-flash-attention.md:891
/// Chapter 1's matrix form with −∞ scores above the diagonal: the dense reference for causal attention.
template <class T>
xt::xtensor<T, 2> dense_causal_attention(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                         const xt::xtensor<T, 2>& V)
{
    const xt::xtensor<T, 2> K_t = xt::transpose(K);      // d_k×n
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q, K_t);  // n×n
    scores *= T(1) / std::sqrt(T(K.shape(1)));
    for (std::size_t i = 0; i < scores.shape(0); ++i)
        for (std::size_t j = i + 1; j < scores.shape(1); ++j) scores(i, j) = -std::numeric_limits<T>::infinity();
    const xt::xtensor<T, 2> weights = attn::softmax_rows(scores);  // n×n
    return xt::linalg::dot(weights, V);
}

/// Largest |a − b| over all elements.
template <class T>
double max_abs_difference(const xt::xtensor<T, 2>& a, const xt::xtensor<T, 2>& b)
{
    return double(xt::amax(xt::abs(a - b))());
}

// ⟨Time the two plain matrix products⟩ 13-flash-attention.md:1049
/// Seconds for S = Q·Kᵀ then O = S·V with two cblas_sgemm calls: the arithmetic of attention, no softmax.
double time_two_sgemms(const xt::xtensor<float, 2>& Q, const xt::xtensor<float, 2>& K,
                       const xt::xtensor<float, 2>& V, int repeats)
{
    const int n = int(Q.shape(0)), d_k = int(Q.shape(1)), d_v = int(V.shape(1));
    std::vector<float> S(std::size_t(n) * std::size_t(n)), O(std::size_t(n) * std::size_t(d_v));  // n×n, n×d_v
    return attn::median_seconds([&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d_k, 1.0f, Q.data(), d_k, K.data(), d_k,
                    0.0f, S.data(), n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d_v, n, 1.0f, S.data(), n, V.data(), d_v,
                    0.0f, O.data(), d_v);
        return O[0];
    }, repeats);
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch13", "FlashAttention on the CPU: exactness, speed, memory",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Compare flash attention with dense attention⟩ 13-flash-attention.md:914
        {
            const auto Q_d = attn::random_normal<double>(300, 64, 1.0, rng);  // n×d_k
            const auto K_d = attn::random_normal<double>(300, 64, 1.0, rng);  // m×d_k
            const auto V_d = attn::random_normal<double>(300, 64, 1.0, rng);  // m×d_v
            const xt::xtensor<float, 2> Q_f = Q_d, K_f = K_d, V_f = V_d;
            results.add("max_abs_error_float", max_abs_difference(attn::flash_attention(Q_f, K_f, V_f),
                                                                  attn::scaled_dot_product_attention(Q_f, K_f, V_f)));
            results.add("max_abs_error_double", max_abs_difference(attn::flash_attention(Q_d, K_d, V_d),
                                                                   attn::scaled_dot_product_attention(Q_d, K_d, V_d)));
            results.add("max_abs_error_causal_float", max_abs_difference(attn::flash_attention(Q_f, K_f, V_f, true),
                                                                         dense_causal_attention(Q_f, K_f, V_f)));
            results.add("max_abs_error_causal_double", max_abs_difference(attn::flash_attention(Q_d, K_d, V_d, true),
                                                                          dense_causal_attention(Q_d, K_d, V_d)));
            results.add_text("vector_kernel", attn::detail::has_avx2_fma() ? "AVX2 and FMA" : "none (portable kernel)");
        }
        // ⟨Draw which tiles the causal kernel visits⟩ 13-flash-attention.md:950
        {
            const std::size_t n_map = 768, tile = 64, tiles = n_map / tile;
            xt::xtensor<double, 2> share = xt::zeros<double>({tiles, tiles});  // query tile × key tile
            xt::xtensor<bool, 2> visited = xt::zeros<bool>({tiles, tiles});
            for (std::size_t a = 0; a < tiles; ++a) {
                const std::size_t visit = attn::detail::key_tiles_to_visit(n_map, (a + 1) * tile, tile, true);
                for (std::size_t b = 0; b < visit; ++b) {
                    visited(a, b) = true;
                    std::size_t kept = 0;  // scores with j ≤ i inside the tile
                    for (std::size_t i = a * tile; i < (a + 1) * tile; ++i)
                        for (std::size_t j = b * tile; j < (b + 1) * tile; ++j) kept += j <= i;
                    share(a, b) = double(kept) / double(tile * tile);
                }
            }
            results.add("skipped_tile_share", 1.0 - double(xt::sum(xt::cast<double>(visited))()) / double(tiles * tiles));
            attn::plot::HeatmapStyle style{"Causal attention, n = 768, 64×64 tiles: share of each tile's scores kept",
                                           {}, {}};
            style.x_label = "key tile";
            style.y_label = "query tile";
            style.colorbar_label = "share of scores kept";
            style.allowed = visited;
            attn::plot::heatmap(out / "causal_tiles.svg", share, style);
        }
        // ⟨Measure the vector exponential against std::exp2⟩ 13-flash-attention.md:991
        if (attn::detail::has_avx2_fma()) {
            const std::size_t points = options.quick ? 126 * 1024 : 126 * 8192, bins = 126;
            std::vector<float> x(points), y(points);
            for (std::size_t p = 0; p < points; ++p) x[p] = -126.0f * float(p) / float(points - 1);
            attn::detail::exp2_array(x.data(), y.data(), points);
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
            attn::plot::LinePlotStyle style{"Largest relative error of the vector 2^{x}, per unit interval of x", "x",
                                            "relative error / float epsilon"};
            style.y_min = 0, style.y_max = 4;
            style.key = "top right";
            attn::plot::lines(out / "exp2_error.svg", {worst}, style);
        } else {
            results.add_text("exp2_max_relative_error", "not measured (no AVX2)");
        }
        // ⟨Record the threads used⟩ 13-flash-attention.md:1134
        results.add("flash_threads", double(attn::detail::plan_flash({}, 64, 64).threads));
        results.add("openblas_threads", double(openblas_get_num_threads()));
        // ⟨Compare the portable kernel, the vector kernel and one thread⟩ 13-flash-attention.md:1246
        {
            const std::size_t n = 1024;
            const auto Q = attn::random_normal<float>(n, 64, 1.0, rng), K = attn::random_normal<float>(n, 64, 1.0, rng),
                       V = attn::random_normal<float>(n, 64, 1.0, rng);
            attn::FlashOptions portable, one_thread;
            portable.vectorised = false;
            one_thread.threads = 1;
            const double flops = 4.0 * double(n) * double(n) * 64.0;
            auto rate = [&](const attn::FlashOptions& o) {
                return flops / attn::median_seconds([&] { return attn::flash_attention(Q, K, V, false, o); }, 5) / 1e9;
            };
            results.add("gflops_portable", rate(portable));
            results.add("gflops_vector", rate(attn::FlashOptions{}));
            results.add("gflops_one_thread", rate(one_thread));
        }
        // ⟨Sweep the key tile size⟩ 13-flash-attention.md:1272
        {
            const std::size_t n = options.quick ? 512 : 2048;
            const auto Q = attn::random_normal<float>(n, 64, 1.0, rng), K = attn::random_normal<float>(n, 64, 1.0, rng),
                       V = attn::random_normal<float>(n, 64, 1.0, rng);
            attn::Series rate{"flash attention, n = " + std::to_string(n), {}, {}};
            for (std::size_t key_tile = 32; key_tile <= 1024; key_tile *= 2) {
                attn::FlashOptions o;
                o.key_tile = key_tile;
                const double seconds = attn::median_seconds([&] { return attn::flash_attention(Q, K, V, false, o); }, 3);
                rate.x.push_back(double(key_tile));
                rate.y.push_back(4.0 * double(n) * double(n) * 64.0 / seconds / 1e9);
            }
            const std::size_t best = std::size_t(rate.x[std::max_element(rate.y.begin(), rate.y.end()) - rate.y.begin()]);
            results.add("best_key_tile", double(best));
            results.add("chosen_key_tile", double(attn::detail::plan_flash({}, 64, 64).key_tile));
            attn::plot::LinePlotStyle style{"Rate against the key tile B_{c} (d = 64, B_{r} = 96)",
                                            "B_{c} (keys per tile)", "GFLOP/s"};
            style.log_x = true;
            style.y_min = 0, style.y_max = 1.2 * *std::max_element(rate.y.begin(), rate.y.end());
            style.key = "bottom center";
            attn::plot::lines(out / "key_tile.svg", {rate}, style);
        }
        // ⟨Time dense, the ceiling and flash attention against n⟩ 13-flash-attention.md:1066
        const std::size_t d = 64, n_max = options.quick ? 1024 : 16384;
        const std::size_t dense_n_max = options.quick ? 1024 : options.bench ? 8192 : 4096;
        attn::Series flash_time{"flash attention", {}, {}}, causal_time{"flash attention, causal", {}, {}};
        attn::Series dense_time{"dense (chapter 1)", {}, {}}, sgemm_time{"two sgemm calls (ceiling)", {}, {}};
        attn::Series flash_rate{"flash attention", {}, {}}, dense_rate{"dense (chapter 1)", {}, {}};
        attn::Series sgemm_rate{"two sgemm calls (ceiling)", {}, {}};
        attn::Series flash_memory{"flash attention", {}, {}}, dense_memory{"dense (chapter 1)", {}, {}};
        auto gflops = [&](std::size_t n, double seconds) { return 4.0 * double(n) * double(n) * double(d) / seconds / 1e9; };
        auto mib = [](std::size_t bytes) { return double(bytes) / double(1 << 20); };
        for (std::size_t n = 256; n <= n_max; n *= 2) {
            const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const int repeats = n <= 2048 ? 5 : n <= 4096 ? 3 : 1;
            auto flash = [&] { return attn::flash_attention(Q, K, V); };
            const double t_flash = attn::median_seconds(flash, repeats);
            const double t_causal = attn::median_seconds([&] { return attn::flash_attention(Q, K, V, true); }, repeats);
            for (attn::Series* s : {&flash_time, &causal_time, &flash_rate, &flash_memory}) s->x.push_back(double(n));
            flash_time.y.push_back(t_flash);
            causal_time.y.push_back(t_causal);
            flash_rate.y.push_back(gflops(n, t_flash));
            flash_memory.y.push_back(mib(attn::peak_memory_bytes(flash)));
            if (n <= dense_n_max) {
                auto dense = [&] { return attn::scaled_dot_product_attention(Q, K, V); };
                const double t_dense = attn::median_seconds(dense, repeats), t_sgemm = time_two_sgemms(Q, K, V, repeats);
                for (attn::Series* s : {&dense_time, &sgemm_time, &dense_rate, &sgemm_rate, &dense_memory})
                    s->x.push_back(double(n));
                dense_time.y.push_back(t_dense);
                sgemm_time.y.push_back(t_sgemm);
                dense_rate.y.push_back(gflops(n, t_dense));
                sgemm_rate.y.push_back(gflops(n, t_sgemm));
                dense_memory.y.push_back(mib(attn::peak_memory_bytes(dense)));
            }
            // ⟨Record the numbers at n = 4096 and n = 16384⟩ 13-flash-attention.md:1110
            if (n == std::min<std::size_t>(4096, dense_n_max)) {
                const std::string at = "_" + std::to_string(n);
                results.add("n_compare", double(n));
                results.add("gflops_flash", flash_rate.y.back());
                results.add("gflops_dense", dense_rate.y.back());
                results.add("gflops_sgemm", sgemm_rate.y.back());
                results.add("flash_share_of_sgemm_percent", 100.0 * flash_rate.y.back() / sgemm_rate.y.back());
                results.add("flash_speedup_over_dense", dense_time.y.back() / flash_time.y.back());
                results.add("causal_time_share_percent", 100.0 * causal_time.y.back() / flash_time.y.back());
                results.add("dense_memory_mib_compare", dense_memory.y.back());
                results.add("flash_memory_mib_compare", flash_memory.y.back());
            }
            if (n == n_max) {
                results.add("flash_memory_mib_at_n_max", flash_memory.y.back());
                results.add("input_mib_at_n_max", mib(3 * n * d * sizeof(float)));
                results.add("flash_seconds_at_n_max", flash_time.y.back());
            }
        }
        results.add("n_max", double(n_max));
        results.add("dense_n_max", double(dense_n_max));
        // ⟨Fit the slopes and draw time, rate and memory⟩ 13-flash-attention.md:1139
        auto tail = [](const attn::Series& s, std::size_t from) {  // the points with n ≥ from
            attn::Series t{s.label, {}, {}};
            for (std::size_t p = 0; p < s.x.size(); ++p)
                if (s.x[p] >= double(from)) t.x.push_back(s.x[p]), t.y.push_back(s.y[p]);
            return t;
        };
        const std::size_t fit_from = options.quick ? 256 : 1024;  // fixed costs dominate the smallest calls
        const double flash_slope = attn::loglog_slope(tail(flash_time, fit_from).x, tail(flash_time, fit_from).y);
        const double dense_slope = attn::loglog_slope(tail(dense_time, fit_from).x, tail(dense_time, fit_from).y);
        const double flash_memory_slope = attn::loglog_slope(tail(flash_memory, fit_from).x, tail(flash_memory, fit_from).y);
        const double dense_memory_slope = attn::loglog_slope(tail(dense_memory, fit_from).x, tail(dense_memory, fit_from).y);
        results.add("flash_time_slope", flash_slope);
        results.add("dense_time_slope", dense_slope);
        results.add("flash_memory_slope", flash_memory_slope);
        results.add("dense_memory_slope", dense_memory_slope);
        results.add("slope_fit_from", double(fit_from));
        std::size_t faster_from = 0;  // the smallest n from which flash is faster than dense
        for (std::size_t p = dense_time.x.size(); p-- > 0 && flash_time.y[p] < dense_time.y[p];) faster_from = std::size_t(dense_time.x[p]);
        if (faster_from) results.add("flash_faster_from_n", double(faster_from));
        else results.add_text("flash_faster_from_n", "no n measured");

        flash_time.label += " (slope " + attn::format_number(flash_slope) + ")";
        dense_time.label += " (slope " + attn::format_number(dense_slope) + ")";
        attn::plot::LinePlotStyle time_style{"Time of one call, d_{k} = d_{v} = 64, float", "n (tokens)", "seconds"};
        time_style.log_x = time_style.log_y = true;
        attn::plot::lines(out / "time.svg", {dense_time, sgemm_time, flash_time, causal_time}, time_style);

        attn::plot::LinePlotStyle rate_style{"Arithmetic rate, 4·n²·d operations per call", "n (tokens)", "GFLOP/s"};
        rate_style.log_x = true;
        rate_style.key = "bottom right";
        attn::plot::lines(out / "gflops.svg", {dense_rate, sgemm_rate, flash_rate}, rate_style);

        flash_memory.label += " (slope " + attn::format_number(flash_memory_slope) + ")";
        dense_memory.label += " (slope " + attn::format_number(dense_memory_slope) + ")";
        attn::plot::LinePlotStyle memory_style{"Peak memory a call adds to the process", "n (tokens)", "MiB"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "memory.svg", {dense_memory, flash_memory}, memory_style);
        // ⟨Estimate the memory traffic⟩ 13-flash-attention.md:1359
        {
            const double n = 4096, m = 4096, d_k = 64, d_v = 64, B_r = 96, MiB = 1 << 20;
            results.add("model_traffic_dense_mib_4096", 4 * n * m * 4 / MiB);
            results.add("model_traffic_flash_mib_4096", (std::ceil(n / B_r) * m + n) * (d_k + d_v) * 4 / MiB);
            results.add("exponentials_4096", n * m / 1e6);
        }
    });
}
