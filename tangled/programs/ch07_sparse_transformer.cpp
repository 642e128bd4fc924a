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

#include "attn/machine.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/sliding_window.hpp"
#include "attn/sparse_transformer.hpp"

namespace {

// ⟨Colour a pattern by head⟩ 07-sparse-transformer.md:827
/// 1 where only head 1 attends, 2 where only head 2
/// does, 3 where both do (0 where neither: masked).
xt::xtensor<double, 2> head_of_each_cell(const std::array<attn::Mask, 2>& heads)
{
    const xt::xtensor<double, 2> one = xt::cast<double>(heads[0]),
                                 two = xt::cast<double>(heads[1]);
    return xt::xtensor<double, 2>(one + 2.0 * two);
}

/// A categorical panel: value 1 head 1, 2 head 2, 3 both, 4 the query; 0 grey.
attn::plot::Panel heads_panel(const xt::xtensor<double, 2>& head,
                              const std::string& title)
{
    attn::plot::HeatmapStyle style{title, {}, {}};
    style.probabilities = false;
    style.categories = {"head 1", "head 2", "both heads", "the query"};
    style.masked_label = "not attended";
    style.allowed = head > 0.0;
    return {head, style};
}

/// The paper's second view: positions 0..n−1 as a grid of rows
/// of ℓ, coloured by the head with which `query` attends each
/// one (4 marks the query itself); unattended positions grey.
attn::plot::Panel grid_panel(const std::array<attn::Mask, 2>& heads,
                             std::size_t stride, std::size_t query,
                             const std::string& title)
{
    const std::size_t n = heads[0].shape(0), rows = (n + stride - 1) / stride;
    const xt::xtensor<double, 2> head = head_of_each_cell(heads);
    xt::xtensor<double, 2> grid = xt::zeros<double>({rows, stride});  // ⌈n/ℓ⌉×ℓ
    for (std::size_t j = 0; j < n; ++j)
        grid(j / stride, j % stride) = j == query ? 4.0 : head(query, j);
    attn::plot::Panel panel = heads_panel(grid, title);
    panel.style.x_label = "position mod ℓ", panel.style.y_label = "position div ℓ";
    return panel;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch07",
                             "Sparse Transformer: strided and fixed patterns, kernels, "
                             "O(n√n)",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Choose the lengths to measure⟩ 07-sparse-transformer.md:966
        const std::size_t c_bench = 8;
        const std::size_t n_bench_min = options.bench ? 256 : 128;
        const std::size_t n_bench_max = options.quick ? 2048 : options.bench ? 16384 : 8192;
        const std::size_t n_dense_max = options.bench ? 4096 : 2048;
        const int repeats = options.quick ? 3 : 5;
        results.add("bench_c", double(c_bench));
        results.add("bench_n_min", double(n_bench_min));
        results.add("bench_n_max", double(n_bench_max));
        results.add("dense_n_max", double(n_dense_max));
        results.add("bench_repeats", repeats);
        results.add("cost_threads", 1);
        // ⟨Draw the patterns⟩ 07-sparse-transformer.md:867
        attn::plot::heatmap_grid(
            out / "patterns.svg",
            {heads_panel(head_of_each_cell(attn::strided_head_masks(32, 4)), "strided, ℓ = 4"),
             heads_panel(head_of_each_cell(attn::fixed_head_masks(32, 8, 2)),
                         "fixed, ℓ = 8, c = 2"),
             grid_panel(attn::strided_head_masks(64, 8), 8, 45, "strided, ℓ = 8, query 45"),
             grid_panel(attn::fixed_head_masks(64, 8, 2), 8, 45,
                        "fixed, ℓ = 8, c = 2, query 45")},
            2);
        // ⟨Count the pairs two steps cannot reach⟩ 07-sparse-transformer.md:882
        {
            const std::size_t n_reach = 256, stride_reach = 16, c_reach = 4;
            const attn::Mask causal = attn::causal_mask(n_reach);
            // pairs j ≤ i not reached within two steps
            const auto unreached = [&](const attn::Mask& mask) {
                const attn::Mask two_steps = attn::compose_masks(mask, mask);
                return double(xt::sum(xt::cast<int>(causal && !(mask || two_steps)))());
            };
            results.add("reach_n", double(n_reach));
            results.add("reach_stride", double(stride_reach));
            results.add("unreached_strided",
                        unreached(attn::strided_mask(n_reach, stride_reach)));
            results.add("unreached_fixed",
                        unreached(attn::fixed_mask(n_reach, stride_reach, c_reach)));

            const attn::Mask mask = attn::strided_mask(32, 4);
            const attn::Mask two_steps = attn::compose_masks(mask, mask);
            xt::xtensor<double, 2> steps =
                xt::zeros<double>({std::size_t(32), std::size_t(32)});  // n×n
            for (std::size_t i = 0; i < 32; ++i)
                for (std::size_t j = 0; j <= i; ++j)
                    steps(i, j) = mask(i, j) ? 1.0 : two_steps(i, j) ? 2.0 : 3.0;
            attn::plot::HeatmapStyle style{"", {}, {}};
            style.probabilities = false;
            style.categories = {"1 step", "2 steps", "3 or more"};
            style.masked_label = "j > i";
            style.allowed = steps > 0.0;
            attn::plot::heatmap(out / "reach_steps.svg", steps, style);
        }
        // ⟨Compare the kernels with dense masked attention⟩ 07-sparse-transformer.md:417
        const std::size_t n_compare = 1000, stride_compare = 30, c_compare = 4;
        {
            const auto Q_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const auto K_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const auto V_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const xt::xtensor<float, 2> Q_f = Q_c, K_f = K_c, V_f = V_c;
            const attn::Mask strided = attn::strided_mask(n_compare, stride_compare);
            const attn::Mask fixed = attn::fixed_mask(n_compare, stride_compare, c_compare);
            const auto max_abs = [](const auto& a, const auto& b) {
                return double(xt::amax(xt::abs(a - b))());
            };
            results.add("compare_n", double(n_compare));
            results.add("compare_stride", double(stride_compare));
            results.add("compare_c", double(c_compare));
            results.add("strided_error_double",
                        max_abs(attn::strided_attention(Q_c, K_c, V_c, stride_compare),
                                attn::scaled_dot_product_attention(Q_c, K_c, V_c, strided)), 2);
            results.add("strided_error_float",
                        max_abs(attn::strided_attention(Q_f, K_f, V_f, stride_compare),
                                attn::scaled_dot_product_attention(Q_f, K_f, V_f, strided)), 2);
            results.add(
                "strided_error_vs_reference",
                max_abs(attn::strided_attention(Q_c, K_c, V_c, stride_compare),
                        attn::pattern_attention_by_rows(
                            Q_c, K_c, V_c,
                            [&](std::size_t i, std::size_t j) { return bool(strided(i, j)); })),
                2);
            results.add("fixed_error_double",
                        max_abs(attn::fixed_attention(Q_c, K_c, V_c, stride_compare, c_compare),
                                attn::scaled_dot_product_attention(Q_c, K_c, V_c, fixed)), 2);
            results.add("fixed_error_float",
                        max_abs(attn::fixed_attention(Q_f, K_f, V_f, stride_compare, c_compare),
                                attn::scaled_dot_product_attention(Q_f, K_f, V_f, fixed)), 2);
            results.add(
                "fixed_error_vs_reference",
                max_abs(attn::fixed_attention(Q_c, K_c, V_c, stride_compare, c_compare),
                        attn::pattern_attention_by_rows(
                            Q_c, K_c, V_c,
                            [&](std::size_t i, std::size_t j) { return bool(fixed(i, j)); })),
                2);
        }
        // ⟨Time the kernels and dense attention against n⟩ 07-sparse-transformer.md:486
        attn::CostCurve strided{"strided", 1}, fixed{"fixed", 1}, dense{"dense", 1};
        std::vector<double> strided_keys, fixed_keys;  // keys visited (scores computed), per n
        for (std::size_t n = n_bench_min; n <= n_bench_max; n *= 2) {
            const std::size_t stride = std::size_t(std::lround(std::sqrt(double(n))));  // √n
            const std::size_t block = std::size_t(std::lround(std::sqrt(double(c_bench * n))));
            const auto Q_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const auto K_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const auto V_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const attn::Mask mask = n <= n_dense_max ? attn::strided_mask(n, stride)
                                                     : attn::Mask();  // n×n, outside the clock
            const attn::Call strided_call = [&] {
                return attn::strided_attention(Q_n, K_n, V_n, stride);
            };
            const attn::Call fixed_call = [&] {
                return attn::fixed_attention(Q_n, K_n, V_n, block, c_bench);
            };
            attn::Call dense_call;  // empty beyond n_dense_max: dense is skipped there
            if (n <= n_dense_max)
                dense_call = [&] {
                    return attn::scaled_dot_product_attention(Q_n, K_n, V_n, mask);
                };
            attn::measure_costs({&strided, &fixed, &dense}, double(n),
                                {strided_call, fixed_call, dense_call}, repeats);
            attn::KeyVisits strided_visits, fixed_visits;
            attn::strided_attention(Q_n, K_n, V_n, stride, &strided_visits);
            attn::fixed_attention(Q_n, K_n, V_n, block, c_bench, &fixed_visits);
            strided_keys.push_back(double(strided_visits.scores));
            fixed_keys.push_back(double(fixed_visits.scores));
        }
        // ⟨Fit the slopes and find the crossovers⟩ 07-sparse-transformer.md:522
        const attn::SlopeFit strided_fit = strided.time_fit(), fixed_fit = fixed.time_fit();
        const attn::SlopeFit dense_fit = dense.time_fit();
        results.add_fit("strided_time_slope", strided_fit);
        results.add_fit("fixed_time_slope", fixed_fit);
        results.add_fit("dense_time_slope", dense_fit);
        results.add_fit("strided_memory_slope", strided.memory_fit());
        results.add_fit("fixed_memory_slope", fixed.memory_fit());
        results.add_fit("dense_memory_slope", dense.memory_fit());
        results.add_text("strided_time_crossover",
                         attn::find_crossover(strided, dense).describe());
        results.add_text("fixed_time_crossover", attn::find_crossover(fixed, dense).describe());
        results.add_text("strided_memory_crossover",
                         attn::find_crossover(strided, dense, true).describe());
        const std::size_t shared = dense.n.size() - 1;  // dense's largest n, measured by all
        results.add("strided_seconds_at_n_max", strided.wall_seconds.back());
        results.add("fixed_seconds_at_n_max", fixed.wall_seconds.back());
        results.add("dense_seconds_at_dense_n_max", dense.wall_seconds[shared]);
        results.add("strided_seconds_at_dense_n_max", strided.wall_seconds[shared]);
        results.add("dense_mib_at_dense_n_max", dense.peak_mib[shared]);
        results.add("strided_mib_at_dense_n_max", strided.peak_mib[shared]);
        results.add("strided_mib_at_n_max", strided.peak_mib.back());
        // ⟨Draw the cost against n⟩ 07-sparse-transformer.md:546
        const auto with_fit = [](attn::Series series, const attn::SlopeFit& fit) {
            series.label += ", slope " + fit.text();
            return series;
        };
        {
            const std::vector<attn::Series> times = {with_fit(dense.time(), dense_fit),
                                                     with_fit(strided.time(), strided_fit),
                                                     with_fit(fixed.time(), fixed_fit)};
            const std::vector<attn::Series> memories = {
                with_fit(dense.memory(), dense.memory_fit()),
                with_fit(strided.memory(), strided.memory_fit()),
                with_fit(fixed.memory(), fixed.memory_fit())};
            attn::plot::LinePlotStyle style{"", "n (tokens)", "seconds (fastest round)"};
            style.log_x = style.log_y = true;
            attn::plot::leave_room_for_the_key(style, times);  // above the curves
            attn::plot::lines(out / "cost_time.svg", times, style);
            style.y_label = "peak MiB one call adds";
            attn::plot::leave_room_for_the_key(style, memories);
            attn::plot::lines(out / "cost_memory.svg", memories, style);
        }
        // ⟨Compare the keys visited with the time⟩ 07-sparse-transformer.md:619
        {
            const attn::SlopeFit strided_keys_fit = attn::loglog_fit(strided.n, strided_keys);
            const attn::SlopeFit fixed_keys_fit = attn::loglog_fit(fixed.n, fixed_keys);
            results.add_fit("strided_keys_slope", strided_keys_fit);
            results.add_fit("fixed_keys_slope", fixed_keys_fit);
            results.add("strided_keys_at_n_max", strided_keys.back());
            results.add("dense_keys_at_n_max", strided.n.back() * strided.n.back());
            // ⟨Divide each time by the keys visited⟩ 07-sparse-transformer.md:652
            attn::Series strided_per_key{"strided", strided.n, {}};
            attn::Series fixed_per_key{"fixed", fixed.n, {}};
            for (std::size_t k = 0; k < strided.n.size(); ++k) {
                strided_per_key.y.push_back(1e9 * strided.wall_seconds[k] / strided_keys[k]);
                fixed_per_key.y.push_back(1e9 * fixed.wall_seconds[k] / fixed_keys[k]);
            }
            attn::Series dense_per_key{"dense, per score (all n²)", dense.n, {}};
            for (std::size_t k = 0; k < dense.n.size(); ++k)
                dense_per_key.y.push_back(1e9 * dense.wall_seconds[k] / (dense.n[k] * dense.n[k]));
            results.add("dense_ns_per_score_at_dense_n_max", dense_per_key.y.back());
            const double flops_per_key = 2.0 * (64 + 64);  // q·k_j and p_j·v_j
            results.add("strided_gflops_at_n_max", flops_per_key / strided_per_key.y.back());
            const double n_dense = dense.n.back();
            const double dense_flops = attn::attention_flops(n_dense, n_dense, 64, 64);
            const double dense_seconds = dense.wall_seconds.back();
            results.add("dense_gflops_at_dense_n_max", dense_flops / dense_seconds / 1e9);
            const attn::SlopeFit per_key_fit =
                attn::loglog_fit(strided_per_key.x, strided_per_key.y);
            results.add_fit("strided_ns_per_key_slope", per_key_fit);
            results.add("strided_ns_per_key_at_n_min", strided_per_key.y.front());
            results.add("strided_ns_per_key_at_n_max", strided_per_key.y.back());
            results.add("fixed_ns_per_key_at_n_min", fixed_per_key.y.front());
            results.add("fixed_ns_per_key_at_n_max", fixed_per_key.y.back());
            // ⟨Say how the time slope compares with the count's⟩ 07-sparse-transformer.md:682
            const auto compare = [](const attn::SlopeFit& fit) -> std::string {
                if (fit.slope > 2 * fit.standard_error) return "steeper than";
                if (fit.slope < -2 * fit.standard_error) return "shallower than";
                return "the same, within two standard errors, as";
            };
            results.add_text("strided_time_vs_keys", compare(per_key_fit));
            results.add_text("fixed_time_vs_keys",
                             compare(attn::loglog_fit(fixed_per_key.x, fixed_per_key.y)));
            // ⟨Find where the strided keys outgrow the caches⟩ 07-sparse-transformer.md:702
            const attn::Machine machine = attn::this_machine();
            const double bytes_per_token = (64 + 64) * sizeof(float);  // a key and a value
            results.add("l2_kib", double(machine.l2_bytes) / 1024);
            results.add("l3_kib", double(machine.l3_bytes) / 1024);
            results.add("n_outgrowing_l2", double(machine.l2_bytes) / bytes_per_token);
            results.add("n_outgrowing_l3", double(machine.l3_bytes) / bytes_per_token);
            attn::Series strided_count{"strided, slope " + strided_keys_fit.text(), strided.n,
                                       strided_keys};
            attn::Series fixed_count{"fixed, slope " + fixed_keys_fit.text(), fixed.n,
                                     fixed_keys};
            attn::Series all_pairs{"dense: every pair, n²", strided.n, {}, "lines"};
            for (double n : strided.n) all_pairs.y.push_back(n * n);
            const std::vector<attn::Series> counts = {all_pairs, strided_count, fixed_count};
            attn::plot::LinePlotStyle style{"", "n (tokens)", "keys visited (scores computed)"};
            style.log_x = style.log_y = true;
            attn::plot::leave_room_for_the_key(style, counts);  // above the curves
            attn::plot::lines(out / "keys_visited.svg", counts, style);
            style.y_label = "nanoseconds per key visited";
            style.y_min = style.y_max = NAN;
            style.key = "top left";
            attn::plot::lines(out / "time_per_key.svg",
                              {dense_per_key, strided_per_key, fixed_per_key}, style);
        }
    });
}
