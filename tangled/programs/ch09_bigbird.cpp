// Generated from chapters/09-bigbird.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <queue>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/bigbird.hpp"
#include "attn/cost_curve.hpp"
#include "attn/masked_attention.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

extern "C" void openblas_set_num_threads(int threads);  // OpenBLAS's own control

namespace {

// ⟨Name the rule behind each tile⟩ 09-bigbird.md:270
/// The rule that allows tile (q, k): 3 global, 2 window, 1 random, 0 none, as an n_blocks×n_blocks matrix.
xt::xtensor<double, 2> tile_rules(const std::vector<std::vector<std::size_t>>& key_blocks)
{
    const std::size_t n_blocks = key_blocks.size(), last = n_blocks - 1;
    xt::xtensor<double, 2> rule = xt::zeros<double>({n_blocks, n_blocks});
    for (std::size_t q = 0; q < n_blocks; ++q)
        for (std::size_t k : key_blocks[q]) {
            const bool global = q == 0 || q == last || k == 0 || k == last;
            const bool window = k + 1 >= q && k <= q + 1;
            rule(q, k) = global ? 3 : window ? 2 : 1;
        }
    return rule;
}

// ⟨Keep only some rules of the pattern⟩ 09-bigbird.md:338
/// The key blocks of each query block under a weaker pattern: the window only, or window and random
/// (BigBird's own random draws) with the two global blocks removed.
std::vector<std::vector<std::size_t>> without_global(const std::vector<std::vector<std::size_t>>& key_blocks,
                                                     bool keep_random)
{
    const std::size_t n_blocks = key_blocks.size(), last = n_blocks - 1;
    std::vector<std::vector<std::size_t>> kept(n_blocks);
    for (std::size_t q = 0; q < n_blocks; ++q)
        for (std::size_t k : key_blocks[q]) {
            const bool window = k + 1 >= q && k <= q + 1;
            const bool random = !window && q != 0 && q != last && k != 0 && k != last;
            if (window || (keep_random && random)) kept[q].push_back(k);
        }
    return kept;
}

// ⟨Count the layers until every block has heard from every other⟩ 09-bigbird.md:359
/// The diameter of the pattern's graph: the fewest layers after which every query block has heard
/// from every key block (information flows from key block k to query block q when q attends k).
std::size_t layers_to_reach_everyone(const std::vector<std::vector<std::size_t>>& key_blocks)
{
    const std::size_t n_blocks = key_blocks.size();
    std::vector<std::vector<std::size_t>> hears_from_me(n_blocks);  // k → the query blocks that attend k
    for (std::size_t q = 0; q < n_blocks; ++q)
        for (std::size_t k : key_blocks[q]) hears_from_me[k].push_back(q);
    std::size_t diameter = 0;
    for (std::size_t source = 0; source < n_blocks; ++source) {
        std::vector<std::size_t> layers(n_blocks, SIZE_MAX);
        std::queue<std::size_t> frontier;
        layers[source] = 0;
        frontier.push(source);
        while (!frontier.empty()) {
            const std::size_t k = frontier.front();
            frontier.pop();
            for (std::size_t q : hears_from_me[k])
                if (layers[q] == SIZE_MAX) layers[q] = layers[k] + 1, frontier.push(q);
        }
        for (std::size_t q = 0; q < n_blocks; ++q)
            if (q != source) diameter = std::max(diameter, layers[q]);  // SIZE_MAX if never reached
    }
    return std::max<std::size_t>(diameter, 1);  // inside one block, one layer
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch09", "BigBird: pattern, reach, kernel against dense, cost against n",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Draw the pattern and the weights⟩ 09-bigbird.md:286
        {
            const std::size_t n = 64;
            const attn::BigBirdPattern pattern{4, 2, options.seed};
            const xt::xtensor<double, 2> rule = tile_rules(attn::bigbird_key_blocks(n / pattern.block, pattern));
            xt::xtensor<double, 2> rule_of_token = xt::zeros<double>({n, n});  // n×n, each tile's rule
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < n; ++j) rule_of_token(i, j) = rule(i / pattern.block, j / pattern.block);
            attn::plot::HeatmapStyle style{"BigBird pattern: n = 64, blocks of 4, 2 random blocks", {}, {}};
            style.probabilities = false;
            style.colorbar_label = "rule: 1 random, 2 window, 3 global";
            style.allowed = attn::bigbird_mask(n, pattern);
            attn::plot::heatmap(out / "pattern.svg", rule_of_token, style);
            results.add("allowed_fraction_64", double(std::count(style.allowed.begin(), style.allowed.end(), true)) /
                                                   double(n * n));
        }
        {
            const std::size_t n = 32;
            const attn::BigBirdPattern pattern{4, 1, options.seed};
            const auto Q = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
            const auto K = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
            attn::plot::HeatmapStyle style{"BigBird weights: n = 32, blocks of 4, 1 random block", {}, {}};
            style.allowed = attn::bigbird_mask(n, pattern);
            attn::plot::heatmap(out / "weights.svg", attn::attention_weights(Q, K, style.allowed), style);
        }
        // ⟨Measure the layers each pattern needs against n⟩ 09-bigbird.md:387
        {
            attn::Series window{"window only", {}, {}}, random{"window + random", {}, {}},
                bigbird{"window + random + global (BigBird)", {}, {}};
            const attn::BigBirdPattern pattern{64, 3, options.seed};
            for (std::size_t n = 512; n <= 16384; n *= 2) {
                const auto key_blocks = attn::bigbird_key_blocks(n / pattern.block, pattern);
                for (attn::Series* s : {&window, &random, &bigbird}) s->x.push_back(double(n));
                window.y.push_back(double(layers_to_reach_everyone(without_global(key_blocks, false))));
                random.y.push_back(double(layers_to_reach_everyone(without_global(key_blocks, true))));
                bigbird.y.push_back(double(layers_to_reach_everyone(key_blocks)));
            }
            results.add("layers_window_16384", window.y.back());
            results.add("layers_random_16384", random.y.back());
            results.add("layers_bigbird_16384", bigbird.y.back());
            attn::plot::LinePlotStyle style{"Layers until every token can depend on every other (b = 64, r = 3)",
                                            "n (tokens)", "layers"};
            style.log_x = style.log_y = true;
            attn::plot::lines(out / "layers.svg", {window, random, bigbird}, style);
        }
        // ⟨Compare the kernel with dense masked attention⟩ 09-bigbird.md:445
        for (const auto& [name, n, pattern] : {std::tuple<std::string, std::size_t, attn::BigBirdPattern>{
                                                   "base", 1920, {64, 3, options.seed}},
                                               {"small_blocks", 720, {16, 2, options.seed + 1}}}) {
            const auto Q = attn::random_normal<double>(n, 64, 1.0, rng);  // n×64
            const auto K = attn::random_normal<double>(n, 64, 1.0, rng);  // n×64
            const auto V = attn::random_normal<double>(n, 64, 1.0, rng);  // n×64
            const attn::Mask mask = attn::bigbird_mask(n, pattern);
            const xt::xtensor<double, 2> O_fast = attn::bigbird_attention(Q, K, V, pattern);
            const xt::xtensor<double, 2> O_dense = attn::scaled_dot_product_attention(Q, K, V, mask);
            results.add("max_abs_error_double_" + name, xt::amax(xt::abs(O_fast - O_dense))());
            const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
            const xt::xtensor<float, 2> O_fast_f = attn::bigbird_attention(Q_f, K_f, V_f, pattern);
            const xt::xtensor<float, 2> O_dense_f = attn::scaled_dot_product_attention(Q_f, K_f, V_f, mask);
            results.add("max_abs_error_float_" + name, xt::amax(xt::abs(O_fast_f - O_dense_f))());
        }
        // ⟨Time the kernel and dense attention against n⟩ 09-bigbird.md:482
        openblas_set_num_threads(1);
        results.add("blas_threads", 1);
        const std::size_t d = 64;
        const attn::BigBirdPattern pattern{64, 3, options.seed};
        const std::size_t n_max = options.quick ? 2048 : 16384;
        const std::size_t dense_n_max = options.quick ? 1024 : options.bench ? 8192 : 4096;
        attn::Series kernel_time{"BigBird block kernel", {}, {}}, dense_time{"dense masked attention", {}, {}};
        attn::Series kernel_memory{"BigBird block kernel", {}, {}}, dense_memory{"dense masked attention", {}, {}};
        for (std::size_t n = 64; n <= n_max; n *= 2) {
            const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const int repeats = 7;
            attn::record_cost(kernel_time, kernel_memory, n, [&] { return attn::bigbird_attention(Q, K, V, pattern); },
                              repeats);
            if (n <= dense_n_max) {
                const attn::Mask mask = attn::bigbird_mask(n, pattern);  // built outside the timing
                attn::record_cost(dense_time, dense_memory, n,
                                  [&] { return attn::scaled_dot_product_attention(Q, K, V, mask); }, repeats);
            }
        }
        // ⟨Draw time and memory against n⟩ 09-bigbird.md:506
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
        attn::plot::LinePlotStyle time_style{"CPU time of one call (d_k = d_v = 64, b = 64, r = 3, float, 1 thread)",
                                             "n (tokens)", "seconds"};
        time_style.log_x = time_style.log_y = true;
        attn::plot::lines(out / "cost_time.svg", {kernel_time, dense_time}, time_style);
        attn::plot::LinePlotStyle memory_style{"Peak memory one call adds", "n (tokens)", "MiB"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "cost_memory.svg", {attn::positive_points(kernel_memory), attn::positive_points(dense_memory)},
                          memory_style);
    });
}
