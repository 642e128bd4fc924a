// Generated from chapters/08-longformer.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/cost_curve.hpp"
#include "attn/longformer.hpp"
#include "attn/masked_attention.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

extern "C" void openblas_set_num_threads(int threads);  // OpenBLAS's own control

namespace {

// ⟨Draw the pattern with its weights⟩ 08-longformer.md:475
/// Draw the attention weights of random Q, K (n×16) under the Longformer mask, masked cells grey.
/// @return the fraction of the n² pairs the pattern allows
double draw_pattern(const std::filesystem::path& path, std::size_t n, std::size_t w, std::size_t dilation,
                    const std::vector<std::size_t>& global, const std::string& title, std::mt19937_64& rng)
{
    const auto Q = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
    const auto K = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
    const attn::Mask mask = attn::longformer_mask(n, w, dilation, global);
    attn::plot::HeatmapStyle style{title, {}, {}};
    style.allowed = mask;
    attn::plot::heatmap(path, attn::attention_weights(Q, K, mask), style);
    return double(std::count(mask.begin(), mask.end(), true)) / double(n * n);
}

// ⟨Measure how far a stack of layers sees⟩ 08-longformer.md:523
/// For layers 1..`layers`, the contiguous reach of token i when every layer attends with `mask`:
/// the largest r such that every token within distance r of i can influence i's output.
std::vector<double> contiguous_reach(const attn::Mask& mask, std::size_t i, std::size_t layers)
{
    const std::size_t n = mask.shape(0);
    std::vector<bool> heard(n, false);  // tokens whose information has reached token i
    heard[i] = true;
    std::vector<double> reach;
    for (std::size_t layer = 0; layer < layers; ++layer) {
        std::vector<bool> next = heard;
        for (std::size_t j = 0; j < n; ++j)
            if (heard[j])
                for (std::size_t k = 0; k < n; ++k) next[k] = next[k] || mask(j, k);  // j attends k
        heard = next;
        std::size_t r = 0;
        while (r < i && i + r + 1 < n && heard[i - r - 1] && heard[i + r + 1]) ++r;
        reach.push_back(double(r));
    }
    return reach;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch08", "Longformer: pattern, kernel against dense, cost against n",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Draw the two patterns⟩ 08-longformer.md:491
        results.add("allowed_fraction_window",
                    draw_pattern(out / "pattern.svg", 32, 3, 1, {0},
                                 "Longformer weights: n = 32, w = 3 on each side, token 0 global", rng));
        results.add("allowed_fraction_dilated",
                    draw_pattern(out / "pattern_dilated.svg", 32, 3, 2, {0, 16},
                                 "Longformer weights: w = 3, dilation 2, tokens 0 and 16 global", rng));
        // ⟨Draw how far a stack of layers sees⟩ 08-longformer.md:546
        {
            const std::size_t n = 401, i = 200, w = 4, layers = 12;
            const attn::Mask plain = attn::longformer_mask(n, w, 1, {}), dilated = attn::longformer_mask(n, w, 2, {});
            const attn::Mask two_heads = plain || dilated;  // a layer with one head of each: either may carry it
            attn::Series s_plain{"w = 4, dilation 1", {}, contiguous_reach(plain, i, layers)};
            attn::Series s_dilated{"w = 4, dilation 2 in every head", {}, contiguous_reach(dilated, i, layers)};
            attn::Series s_two{"w = 4, one head of each", {}, contiguous_reach(two_heads, i, layers)};
            for (attn::Series* s : {&s_plain, &s_dilated, &s_two})
                for (std::size_t l = 1; l <= layers; ++l) s->x.push_back(double(l));
            results.add("reach_plain_12", s_plain.y.back());
            results.add("reach_dilated_12", s_dilated.y.back());
            results.add("reach_two_heads_12", s_two.y.back());
            attn::plot::LinePlotStyle style{"Tokens on each side that have all reached token i", "layers",
                                            "contiguous reach (tokens)"};
            attn::plot::lines(out / "reach.svg", {s_two, s_plain, s_dilated}, style);
        }
        // ⟨Compare the kernel with dense masked attention⟩ 08-longformer.md:588
        struct Setting {
            std::string name;
            std::size_t n, w, dilation;
            std::vector<std::size_t> global;
        };
        for (const Setting& s : {Setting{"window", 2000, 32, 1, {0}}, Setting{"dilated", 2000, 8, 4, {0, 1000, 1999}}}) {
            const auto Q = attn::random_normal<double>(s.n, 64, 1.0, rng);  // n×64
            const auto K = attn::random_normal<double>(s.n, 64, 1.0, rng);  // n×64
            const auto V = attn::random_normal<double>(s.n, 64, 1.0, rng);  // n×64
            const attn::Mask mask = attn::longformer_mask(s.n, s.w, s.dilation, s.global);
            const xt::xtensor<double, 2> O_fast = attn::longformer_attention(Q, K, V, s.w, s.dilation, s.global);
            const xt::xtensor<double, 2> O_dense = attn::scaled_dot_product_attention(Q, K, V, mask);
            results.add("max_abs_error_double_" + s.name, xt::amax(xt::abs(O_fast - O_dense))());
            const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
            const xt::xtensor<float, 2> O_fast_f = attn::longformer_attention(Q_f, K_f, V_f, s.w, s.dilation, s.global);
            const xt::xtensor<float, 2> O_dense_f = attn::scaled_dot_product_attention(Q_f, K_f, V_f, mask);
            results.add("max_abs_error_float_" + s.name, xt::amax(xt::abs(O_fast_f - O_dense_f))());
        }
        // ⟨Time the kernel and dense attention against n⟩ 08-longformer.md:630
        openblas_set_num_threads(1);
        results.add("blas_threads", 1);
        const std::size_t d = 64, w = 64, dilation = 1;
        const std::vector<std::size_t> global = {0};
        const std::size_t n_max = options.quick ? 2048 : 16384;
        const std::size_t dense_n_max = options.quick ? 1024 : options.bench ? 8192 : 4096;
        attn::Series kernel_time{"Longformer kernel", {}, {}}, dense_time{"dense masked attention", {}, {}};
        attn::Series kernel_memory{"Longformer kernel", {}, {}}, dense_memory{"dense masked attention", {}, {}};
        for (std::size_t n = 64; n <= n_max; n *= 2) {
            const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const int repeats = 7;
            auto kernel = [&] { return attn::longformer_attention(Q, K, V, w, dilation, global); };
            attn::record_cost(kernel_time, kernel_memory, n, kernel, repeats);
            if (n <= dense_n_max) {
                const attn::Mask mask = attn::longformer_mask(n, w, dilation, global);  // built outside the timing
                attn::record_cost(dense_time, dense_memory, n,
                                  [&] { return attn::scaled_dot_product_attention(Q, K, V, mask); }, repeats);
            }
        }
        // ⟨Draw time and memory against n⟩ 08-longformer.md:729
        const double fit_from = options.quick ? 256 : 1024;
        const double time_slope = attn::slope_from(kernel_time, fit_from);
        const double memory_slope = attn::slope_from(kernel_memory, fit_from);
        const double dense_time_slope = attn::slope_from(dense_time, fit_from);
        const double dense_memory_slope = attn::slope_from(dense_memory, fit_from);
        results.add("fit_from", fit_from);
        results.add("time_slope", time_slope);
        results.add("memory_slope", memory_slope);
        results.add("dense_time_slope", dense_time_slope);
        results.add("dense_memory_slope", dense_memory_slope);
        const double crossover_n = attn::crossover(kernel_time, dense_time);
        results.add_text("crossover", crossover_n == 0                  ? "nowhere in the sizes measured"
                                      : crossover_n == kernel_time.x[0] ? "n = " + attn::format_number(crossover_n) +
                                                                              ", the smallest size measured,"
                                                                        : "n = " + attn::format_number(crossover_n));
        results.add("n_max", double(n_max));
        results.add("dense_n_max", double(dense_n_max));
        results.add("kernel_ms_at_n_max", 1e3 * kernel_time.y.back());
        results.add("kernel_mib_at_n_max", kernel_memory.y.back());
        const std::size_t last_dense = dense_time.x.size() - 1;
        results.add("speedup_at_dense_n_max", dense_time.y[last_dense] / kernel_time.y[last_dense]);
        results.add("memory_ratio_at_dense_n_max", dense_memory.y[last_dense] / kernel_memory.y[last_dense]);
        kernel_time.label += " (slope " + attn::format_number(time_slope) + ")";
        dense_time.label += " (slope " + attn::format_number(dense_time_slope) + ")";
        kernel_memory.label += " (slope " + attn::format_number(memory_slope) + ")";
        dense_memory.label += " (slope " + attn::format_number(dense_memory_slope) + ")";
        attn::plot::LinePlotStyle time_style{"CPU time of one call (d_k = d_v = 64, w = 64, float, 1 thread)",
                                             "n (tokens)", "seconds"};
        time_style.log_x = time_style.log_y = true;
        attn::plot::lines(out / "cost_time.svg", {kernel_time, dense_time}, time_style);
        attn::plot::LinePlotStyle memory_style{"Peak memory one call adds", "n (tokens)", "MiB"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "cost_memory.svg", {attn::positive_points(kernel_memory), attn::positive_points(dense_memory)},
                          memory_style);
    });
}
