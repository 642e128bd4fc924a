// Generated from chapters/07-sparse-transformer.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/cost.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/sliding_window.hpp"
#include "attn/sparse_transformer.hpp"

extern "C" void openblas_set_num_threads(int threads);

namespace {

// ⟨Colour a pattern by head⟩ 07-sparse-transformer.md:624
/// 1 where only head 1 attends, 2 where only head 2 does, 3 where both do (0 where neither: masked).
xt::xtensor<double, 2> head_of_each_cell(const std::array<attn::Mask, 2>& heads)
{
    const xt::xtensor<double, 2> one = xt::cast<double>(heads[0]), two = xt::cast<double>(heads[1]);
    return xt::xtensor<double, 2>(one + 2.0 * two);
}

/// A pattern heatmap: cells coloured by head, unattended cells grey.
void draw_pattern(const std::filesystem::path& path, const std::array<attn::Mask, 2>& heads,
                  const std::string& title, const std::string& colour_key)
{
    const xt::xtensor<double, 2> head = head_of_each_cell(heads);
    attn::plot::HeatmapStyle style{title, {}, {}};
    style.probabilities = false;
    style.colorbar_label = colour_key;
    style.allowed = head > 0.0;
    attn::plot::heatmap(path, head, style);
}

/// The paper's second view: positions 0..n−1 as a grid of rows of ℓ, coloured by the head with which
/// `query` attends each one (4 marks the query itself); unattended positions grey.
void draw_grid(const std::filesystem::path& path, const std::array<attn::Mask, 2>& heads, std::size_t stride,
               std::size_t query, const std::string& title)
{
    const std::size_t n = heads[0].shape(0), rows = (n + stride - 1) / stride;
    const xt::xtensor<double, 2> head = head_of_each_cell(heads);
    xt::xtensor<double, 2> grid = xt::zeros<double>({rows, stride});  // ⌈n/ℓ⌉×ℓ
    attn::Mask attended = xt::zeros<bool>({rows, stride});
    for (std::size_t j = 0; j < n; ++j) {
        grid(j / stride, j % stride) = j == query ? 4.0 : head(query, j);
        attended(j / stride, j % stride) = grid(j / stride, j % stride) > 0;
    }
    attn::plot::HeatmapStyle style{title, {}, {}};
    style.x_label = "position mod ℓ", style.y_label = "position div ℓ";
    style.probabilities = false;
    style.colorbar_label = "1 head 1, 2 head 2, 3 both, 4 the query";
    style.allowed = attended;
    attn::plot::heatmap(path, grid, style);
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch07", "Sparse Transformer: strided and fixed patterns, kernels, O(n√n)",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        const std::size_t c_bench = 8;
        const std::size_t n_bench_max = options.quick ? 2048 : 16384;
        const std::size_t n_dense_max = options.quick ? 1024 : 4096;
        results.add("bench_c", double(c_bench));
        results.add("bench_n_max", double(n_bench_max));
        results.add("dense_n_max", double(n_dense_max));
        openblas_set_num_threads(1);  // dense attention on one core, as the sparse kernels
        // ⟨Draw the patterns⟩ 07-sparse-transformer.md:666
        {
            const std::size_t n_small = 32;
            draw_pattern(out / "strided_pattern.svg", attn::strided_head_masks(n_small, 4), "Strided pattern, n = 32, ℓ = 4",
                         "1 local, 2 strided, 3 both");
            draw_pattern(out / "fixed_pattern.svg", attn::fixed_head_masks(n_small, 8, 2),
                         "Fixed pattern, n = 32, ℓ = 8, c = 2", "1 own block, 2 summaries, 3 both");
            draw_grid(out / "grid_strided.svg", attn::strided_head_masks(64, 8), 8, 45, "Strided, ℓ = 8: query 45");
            draw_grid(out / "grid_fixed.svg", attn::fixed_head_masks(64, 8, 2), 8, 45, "Fixed, ℓ = 8, c = 2: query 45");
        }
        // ⟨Count the pairs two steps cannot reach⟩ 07-sparse-transformer.md:681
        {
            const std::size_t n_reach = 256, stride_reach = 16, c_reach = 4;
            const attn::Mask causal = attn::causal_mask(n_reach);
            const auto unreached = [&](const attn::Mask& mask) {  // pairs j ≤ i not reached within two steps
                const attn::Mask two_steps = attn::compose_masks(mask, mask);
                return double(xt::sum(xt::cast<int>(causal && !(mask || two_steps)))());
            };
            results.add("reach_n", double(n_reach));
            results.add("reach_stride", double(stride_reach));
            results.add("unreached_strided", unreached(attn::strided_mask(n_reach, stride_reach)));
            results.add("unreached_fixed", unreached(attn::fixed_mask(n_reach, stride_reach, c_reach)));

            const attn::Mask mask = attn::strided_mask(32, 4);
            const attn::Mask two_steps = attn::compose_masks(mask, mask);
            xt::xtensor<double, 2> steps = xt::zeros<double>({std::size_t(32), std::size_t(32)});  // n×n
            for (std::size_t i = 0; i < 32; ++i)
                for (std::size_t j = 0; j <= i; ++j) steps(i, j) = mask(i, j) ? 1.0 : two_steps(i, j) ? 2.0 : 3.0;
            attn::plot::HeatmapStyle style{"Steps of the strided pattern (ℓ = 4) from query i to key j", {}, {}};
            style.probabilities = false;
            style.colorbar_label = "steps";
            style.allowed = steps > 0.0;
            attn::plot::heatmap(out / "reach_steps.svg", steps, style);
        }
        // ⟨Compare the kernels with dense masked attention⟩ 07-sparse-transformer.md:401
        const std::size_t n_compare = 1000, stride_compare = 30, c_compare = 4;
        {
            const auto Q_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const auto K_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const auto V_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const xt::xtensor<float, 2> Q_f = Q_c, K_f = K_c, V_f = V_c;
            const attn::Mask strided = attn::strided_mask(n_compare, stride_compare);
            const attn::Mask fixed = attn::fixed_mask(n_compare, stride_compare, c_compare);
            const auto max_abs = [](const auto& a, const auto& b) { return double(xt::amax(xt::abs(a - b))()); };
            results.add("compare_n", double(n_compare));
            results.add("compare_stride", double(stride_compare));
            results.add("compare_c", double(c_compare));
            results.add("strided_error_double",
                        max_abs(attn::strided_attention(Q_c, K_c, V_c, stride_compare),
                                attn::scaled_dot_product_attention(Q_c, K_c, V_c, strided)), 2);
            results.add("strided_error_float",
                        max_abs(attn::strided_attention(Q_f, K_f, V_f, stride_compare),
                                attn::scaled_dot_product_attention(Q_f, K_f, V_f, strided)), 2);
            results.add("strided_error_vs_reference",
                        max_abs(attn::strided_attention(Q_c, K_c, V_c, stride_compare),
                                attn::pattern_attention_by_rows(Q_c, K_c, V_c, [&](std::size_t i, std::size_t j) {
                                    return bool(strided(i, j));
                                })), 2);
            results.add("fixed_error_double",
                        max_abs(attn::fixed_attention(Q_c, K_c, V_c, stride_compare, c_compare),
                                attn::scaled_dot_product_attention(Q_c, K_c, V_c, fixed)), 2);
            results.add("fixed_error_float",
                        max_abs(attn::fixed_attention(Q_f, K_f, V_f, stride_compare, c_compare),
                                attn::scaled_dot_product_attention(Q_f, K_f, V_f, fixed)), 2);
            results.add("fixed_error_vs_reference",
                        max_abs(attn::fixed_attention(Q_c, K_c, V_c, stride_compare, c_compare),
                                attn::pattern_attention_by_rows(Q_c, K_c, V_c, [&](std::size_t i, std::size_t j) {
                                    return bool(fixed(i, j));
                                })), 2);
        }
        // ⟨Time the kernels and dense attention against n⟩ 07-sparse-transformer.md:459
        attn::Series strided_time{"strided", {}, {}}, fixed_time{"fixed", {}, {}}, dense_time{"dense masked", {}, {}};
        attn::Series strided_memory{"strided", {}, {}}, fixed_memory{"fixed", {}, {}}, dense_memory{"dense masked", {}, {}};
        for (std::size_t n = 256; n <= n_bench_max; n *= 2) {
            const std::size_t stride = std::size_t(std::lround(std::sqrt(double(n))));                   // strided: √n
            const std::size_t block = std::size_t(std::lround(std::sqrt(double(c_bench * n))));         // fixed: √(c·n)
            const auto Q_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const auto K_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const auto V_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const int repeats = n <= 2048 ? 11 : 5;
            auto strided = [&] { return attn::strided_attention(Q_n, K_n, V_n, stride); };
            auto fixed = [&] { return attn::fixed_attention(Q_n, K_n, V_n, block, c_bench); };
            for (attn::Series* s : {&strided_time, &fixed_time, &strided_memory, &fixed_memory}) s->x.push_back(double(n));
            strided_time.y.push_back(attn::median_cpu_seconds(strided, repeats));
            fixed_time.y.push_back(attn::median_cpu_seconds(fixed, repeats));
            strided_memory.y.push_back(std::max(double(attn::largest_peak_memory_bytes(strided)), 4096.0) / (1 << 20));
            fixed_memory.y.push_back(std::max(double(attn::largest_peak_memory_bytes(fixed)), 4096.0) / (1 << 20));
            if (n <= n_dense_max) {
                const attn::Mask mask = attn::strided_mask(n, stride);  // n×n, built outside the clock
                auto dense = [&] { return attn::scaled_dot_product_attention(Q_n, K_n, V_n, mask); };
                dense_time.x.push_back(double(n)), dense_memory.x.push_back(double(n));
                dense_time.y.push_back(attn::median_cpu_seconds(dense, repeats));
                dense_memory.y.push_back(double(attn::largest_peak_memory_bytes(dense)) / (1 << 20));
            }
        }
        // ⟨Fit the slopes and find the crossovers⟩ 07-sparse-transformer.md:489
        const auto tail = [](const attn::Series& s) {  // the points with n ≥ 1024
            attn::Series t{s.label, {}, {}};
            for (std::size_t k = 0; k < s.x.size(); ++k)
                if (s.x[k] >= 1024) t.x.push_back(s.x[k]), t.y.push_back(s.y[k]);
            return t;
        };
        const auto slope = [&](const attn::Series& s) { return attn::loglog_slope(tail(s).x, tail(s).y); };
        const double strided_time_slope = slope(strided_time), fixed_time_slope = slope(fixed_time);
        const double strided_memory_slope = slope(strided_memory), fixed_memory_slope = slope(fixed_memory);
        const double dense_time_slope = attn::loglog_slope(dense_time.x, dense_time.y);
        const double dense_memory_slope = attn::loglog_slope(dense_memory.x, dense_memory.y);
        results.add("strided_time_slope", strided_time_slope);
        results.add("fixed_time_slope", fixed_time_slope);
        results.add("strided_memory_slope", strided_memory_slope);
        results.add("fixed_memory_slope", fixed_memory_slope);
        results.add("dense_time_slope", dense_time_slope);
        results.add("dense_memory_slope", dense_memory_slope);
        results.add_text("strided_time_crossover", attn::find_crossover(strided_time.x, strided_time.y, dense_time.y).describe());
        results.add_text("fixed_time_crossover", attn::find_crossover(fixed_time.x, fixed_time.y, dense_time.y).describe());
        results.add_text("strided_memory_crossover",
                         attn::find_crossover(strided_memory.x, strided_memory.y, dense_memory.y).describe());
        results.add("strided_seconds_at_n_max", strided_time.y.back());
        results.add("fixed_seconds_at_n_max", fixed_time.y.back());
        results.add("dense_seconds_at_dense_n_max", dense_time.y.back());
        results.add("strided_seconds_at_dense_n_max", strided_time.y[dense_time.y.size() - 1]);
        results.add("dense_mib_at_dense_n_max", dense_memory.y.back());
        results.add("strided_mib_at_dense_n_max", strided_memory.y[dense_memory.y.size() - 1]);
        results.add("strided_mib_at_n_max", strided_memory.y.back());
        // ⟨Draw the cost against n⟩ 07-sparse-transformer.md:520
        attn::plot::LinePlotStyle time_style{"CPU time of one call (ℓ ≈ √n strided, √(cn) fixed, c = " +
                                                 std::to_string(c_bench) + ", d_k = d_v = 64)", "n (tokens)", "CPU seconds"};
        time_style.log_x = time_style.log_y = true;
        attn::Series n_sqrt_n{"slope 1.5, for reference", {}, {}, "lines"};
        for (double n : strided_time.x) n_sqrt_n.x.push_back(n), n_sqrt_n.y.push_back(strided_time.y.back() * std::pow(n / strided_time.x.back(), 1.5));
        strided_time.label += " (slope " + attn::format_number(strided_time_slope) + ")";
        fixed_time.label += " (slope " + attn::format_number(fixed_time_slope) + ")";
        dense_time.label += " (slope " + attn::format_number(dense_time_slope) + ")";
        attn::plot::lines(out / "cost_time.svg", {dense_time, strided_time, fixed_time, n_sqrt_n}, time_style);

        attn::plot::LinePlotStyle memory_style{"Peak memory of one call", "n (tokens)", "MiB"};
        memory_style.log_x = memory_style.log_y = true;
        strided_memory.label += " (slope " + attn::format_number(strided_memory_slope) + ")";
        fixed_memory.label += " (slope " + attn::format_number(fixed_memory_slope) + ")";
        dense_memory.label += " (slope " + attn::format_number(dense_memory_slope) + ")";
        attn::plot::lines(out / "cost_memory.svg", {dense_memory, strided_memory, fixed_memory}, memory_style);
    });
}
