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
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

namespace {

// ⟨Name the rule behind each tile⟩ 09-bigbird.md:302
/// The rule that allows tile (q, k): 3 global, 2 window,
/// 1 random, 0 none, as an n_blocks×n_blocks matrix.
xt::xtensor<double, 2> tile_rules(
    const std::vector<std::vector<std::size_t>>& key_blocks)
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

// ⟨Keep only some rules of the pattern⟩ 09-bigbird.md:377
/// The key blocks of each query block under a weaker pattern: the window only, or
/// window and random (BigBird's own random draws) with the two global blocks removed.
std::vector<std::vector<std::size_t>> without_global(
    const std::vector<std::vector<std::size_t>>& key_blocks, bool keep_random)
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

// ⟨Count the layers until every block has heard from every other⟩ 09-bigbird.md:398
/// The diameter of the pattern's graph: the fewest layers after which
/// every query block has heard from every key block (information
/// flows from key block k to query block q when q attends k).
std::size_t layers_to_reach_everyone(
    const std::vector<std::vector<std::size_t>>& key_blocks)
{
    const std::size_t n_blocks = key_blocks.size();
    // k → the query blocks that attend k
    std::vector<std::vector<std::size_t>> hears_from_me(n_blocks);
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
            // SIZE_MAX if never reached
            if (q != source) diameter = std::max(diameter, layers[q]);
    }
    return std::max<std::size_t>(diameter, 1);  // inside one block, one layer
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch09",
                             "BigBird: pattern, reach, kernel against dense, cost "
                             "against n",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Draw the pattern and the weights⟩ 09-bigbird.md:320
        {
            const std::size_t n = 64;
            const attn::BigBirdPattern pattern{4, 2, options.seed};
            const xt::xtensor<double, 2> rule =
                tile_rules(attn::bigbird_key_blocks(n / pattern.block, pattern));
            // n×n, each tile's rule
            xt::xtensor<double, 2> rule_of_token = xt::zeros<double>({n, n});
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < n; ++j)
                    rule_of_token(i, j) = rule(i / pattern.block, j / pattern.block);
            attn::plot::HeatmapStyle style{"", {}, {}};
            style.probabilities = false;
            style.categories = {"random", "window", "global"};  // rules 1, 2, 3
            style.allowed = attn::bigbird_mask(n, pattern);
            attn::plot::heatmap(out / "pattern.svg", rule_of_token, style);
            results.add("allowed_fraction_64",
                        double(std::count(style.allowed.begin(), style.allowed.end(), true)) /
                            double(n * n));
        }
        {
            const std::size_t n = 32;
            const attn::BigBirdPattern pattern{4, 1, options.seed};
            const auto Q = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
            const auto K = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
            attn::plot::HeatmapStyle style{"", {}, {}};
            style.allowed = attn::bigbird_mask(n, pattern);
            attn::plot::heatmap(out / "weights.svg",
                                attn::attention_weights(Q, K, style.allowed), style);
        }
        // ⟨Measure the layers each pattern needs against n⟩ 09-bigbird.md:430
        {
            attn::Series window{"window only", {}, {}}, random{"window + random", {}, {}},
                bigbird{"window + random + global (BigBird)", {}, {}};
            const attn::BigBirdPattern pattern{64, 3, options.seed};
            for (std::size_t n = 512; n <= 16384; n *= 2) {
                const auto key_blocks = attn::bigbird_key_blocks(n / pattern.block, pattern);
                for (attn::Series* s : {&window, &random, &bigbird}) s->x.push_back(double(n));
                window.y.push_back(
                    double(layers_to_reach_everyone(without_global(key_blocks, false))));
                random.y.push_back(
                    double(layers_to_reach_everyone(without_global(key_blocks, true))));
                bigbird.y.push_back(double(layers_to_reach_everyone(key_blocks)));
            }
            results.add("layers_window_16384", window.y.back());
            results.add("layers_random_16384", random.y.back());
            results.add("layers_bigbird_16384", bigbird.y.back());
            attn::plot::LinePlotStyle style{"", "n (tokens)", "layers"};
            style.log_x = style.log_y = true;
            attn::plot::lines(out / "layers.svg", {window, random, bigbird}, style);
        }
        // ⟨Compare the kernel with dense masked attention⟩ 09-bigbird.md:489
        for (const auto& [name, n, pattern] :
             {std::tuple<std::string, std::size_t, attn::BigBirdPattern>{
                  "base", 1920, {64, 3, options.seed}},
              {"small_blocks", 720, {16, 2, options.seed + 1}}}) {
            const auto Q = attn::random_normal<double>(n, 64, 1.0, rng);  // n×64
            const auto K = attn::random_normal<double>(n, 64, 1.0, rng);  // n×64
            const auto V = attn::random_normal<double>(n, 64, 1.0, rng);  // n×64
            const attn::Mask mask = attn::bigbird_mask(n, pattern);
            const xt::xtensor<double, 2> O_fast = attn::bigbird_attention(Q, K, V, pattern);
            const xt::xtensor<double, 2> O_dense =
                attn::scaled_dot_product_attention(Q, K, V, mask);
            results.add("max_abs_error_double_" + name, xt::amax(xt::abs(O_fast - O_dense))());
            const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
            const xt::xtensor<float, 2> O_fast_f =
                attn::bigbird_attention(Q_f, K_f, V_f, pattern);
            const xt::xtensor<float, 2> O_dense_f =
                attn::scaled_dot_product_attention(Q_f, K_f, V_f, mask);
            results.add("max_abs_error_float_" + name,
                        xt::amax(xt::abs(O_fast_f - O_dense_f))());
        }
        // ⟨Choose the lengths to measure⟩ 09-bigbird.md:701
        const std::size_t n_min = 64;
        const std::size_t n_max = options.quick ? 2048 : 16384;
        const std::size_t dense_n_max = options.bench ? 4096 : 2048;
        const double fit_from = options.quick ? 128 : 1024;
        const double dense_fit_from = options.bench ? 256 : 128;
        const int repeats = options.quick ? 3 : 5;
        results.add("n_max", double(n_max));
        results.add("dense_n_max", double(dense_n_max));
        results.add("fit_from", fit_from);
        results.add("dense_fit_from", dense_fit_from);
        results.add("repeats", repeats);
        results.add("cost_threads", 1);
        // ⟨Time the kernel and dense attention against n⟩ 09-bigbird.md:535
        const std::size_t d = 64;
        const attn::BigBirdPattern pattern{64, 3, options.seed};
        attn::CostCurve kernel{"BigBird block kernel", 1}, dense{"dense", 1};
        std::vector<double> scores;  // per n: the scores the kernel computes (KeyVisits)
        for (std::size_t n = n_min; n <= n_max; n *= 2) {
            const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const attn::Mask mask = n <= dense_n_max ? attn::bigbird_mask(n, pattern)
                                                     : attn::Mask();  // n×n, outside the clock
            const attn::Call kernel_call = [&] {
                return attn::bigbird_attention(Q, K, V, pattern);
            };
            attn::Call dense_call;  // empty beyond dense_n_max: dense is skipped there
            if (n <= dense_n_max)
                dense_call = [&] { return attn::scaled_dot_product_attention(Q, K, V, mask); };
            attn::measure_costs({&kernel, &dense}, double(n), {kernel_call, dense_call},
                                repeats);
            attn::KeyVisits visits;
            attn::bigbird_attention(Q, K, V, pattern, &visits);
            scores.push_back(double(visits.scores));
        }
        // ⟨Draw time and memory against n⟩ 09-bigbird.md:569
        attn::report_against_dense(kernel, dense, fit_from, dense_fit_from, out, results);
        // ⟨Fit the count of scores⟩ 09-bigbird.md:575
        {
            std::vector<double> fitted_n, fitted_scores;  // n ≥ fit_from
            for (std::size_t k = 0; k < kernel.n.size(); ++k)
                if (kernel.n[k] >= fit_from)
                    fitted_n.push_back(kernel.n[k]), fitted_scores.push_back(scores[k]);
            results.add_fit("scores_slope", attn::loglog_fit(fitted_n, fitted_scores));
            results.add("scores_at_n_max", scores.back());
            const double n_max_tokens = kernel.n.back();
            results.add("scores_fraction_at_n_max",
                        scores.back() / (n_max_tokens * n_max_tokens));
            // eight blocks: the first length at which the pattern leaves a block out
            const double n_8 = 8.0 * double(pattern.block);
            for (std::size_t k = 0; k < kernel.n.size() && k < dense.n.size(); ++k)
                if (kernel.n[k] == n_8) {
                    results.add("n_8_blocks", n_8);
                    results.add("scores_fraction_at_8_blocks", scores[k] / (n_8 * n_8));
                    results.add("dense_over_kernel_time_at_8_blocks",
                                dense.wall_seconds[k] / kernel.wall_seconds[k]);
                }
        }
    });
}
