// Generated from chapters/08-longformer.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/longformer.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

namespace {

// ⟨Draw the pattern with its weights⟩ 08-longformer.md:545
/// Draw the attention weights of random Q, K (n×16)
/// under the Longformer mask, masked cells grey.
/// @return the fraction of the n² pairs the pattern allows
double draw_pattern(const std::filesystem::path& path, std::size_t n, std::size_t w,
                    std::size_t dilation, const std::vector<std::size_t>& global,
                    std::mt19937_64& rng)
{
    const auto Q = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
    const auto K = attn::random_normal<double>(n, 16, 1.0, rng);  // n×16
    const attn::Mask mask = attn::longformer_mask(n, w, dilation, global);
    attn::plot::HeatmapStyle style{"", {}, {}};
    style.allowed = mask;
    attn::plot::heatmap(path, attn::attention_weights(Q, K, mask), style);
    return double(std::count(mask.begin(), mask.end(), true)) / double(n * n);
}

// ⟨Measure how far a stack of layers sees⟩ 08-longformer.md:593
/// For layers 1..`layers`, the contiguous reach of token i when
/// every layer attends with `mask`: the largest r such that
/// every token within distance r of i can influence i's output.
std::vector<double> contiguous_reach(const attn::Mask& mask, std::size_t i,
                                     std::size_t layers)
{
    const std::size_t n = mask.shape(0);
    std::vector<bool> heard(n, false);  // tokens whose information has reached token i
    heard[i] = true;
    std::vector<double> reach;
    for (std::size_t layer = 0; layer < layers; ++layer) {
        std::vector<bool> next = heard;
        for (std::size_t j = 0; j < n; ++j)
            if (heard[j])
                // j attends k
                for (std::size_t k = 0; k < n; ++k) next[k] = next[k] || mask(j, k);
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
    return attn::run_program(argc, argv, "ch08",
                             "Longformer: pattern, kernel against dense, cost "
                             "against n",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Draw the two patterns⟩ 08-longformer.md:563
        results.add("allowed_fraction_window",
                    draw_pattern(out / "pattern.svg", 32, 3, 1, {0}, rng));
        results.add("allowed_fraction_dilated",
                    draw_pattern(out / "pattern_dilated.svg", 32, 3, 2, {0, 16}, rng));
        // ⟨Draw how far a stack of layers sees⟩ 08-longformer.md:619
        {
            const std::size_t n = 401, i = 200, w = 4, layers = 12;
            const attn::Mask plain = attn::longformer_mask(n, w, 1, {}),
                             dilated = attn::longformer_mask(n, w, 2, {});
            // a layer with one head of each: either may carry it
            const attn::Mask two_heads = plain || dilated;
            attn::Series s_plain{"w = 4, dilation 1", {}, contiguous_reach(plain, i, layers)};
            attn::Series s_dilated{
                "w = 4, dilation 2 in every head", {}, contiguous_reach(dilated, i, layers)};
            attn::Series s_two{
                "w = 4, one head of each", {}, contiguous_reach(two_heads, i, layers)};
            for (attn::Series* s : {&s_plain, &s_dilated, &s_two})
                for (std::size_t l = 1; l <= layers; ++l) s->x.push_back(double(l));
            results.add("reach_plain_12", s_plain.y.back());
            results.add("reach_dilated_12", s_dilated.y.back());
            results.add("reach_two_heads_12", s_two.y.back());
            attn::plot::LinePlotStyle style{"", "layers", "contiguous reach (tokens)"};
            attn::plot::lines(out / "reach.svg", {s_two, s_plain, s_dilated}, style);
        }
        // ⟨Compare the kernel with dense masked attention⟩ 08-longformer.md:664
        struct Setting {
            std::string name;
            std::size_t n, w, dilation;
            std::vector<std::size_t> global;
        };
        for (const Setting& s : {Setting{"window", 2000, 32, 1, {0}},
                                 Setting{"dilated", 2000, 8, 4, {0, 1000, 1999}}}) {
            const auto Q = attn::random_normal<double>(s.n, 64, 1.0, rng);  // n×64
            const auto K = attn::random_normal<double>(s.n, 64, 1.0, rng);  // n×64
            const auto V = attn::random_normal<double>(s.n, 64, 1.0, rng);  // n×64
            const attn::Mask mask = attn::longformer_mask(s.n, s.w, s.dilation, s.global);
            // The kernel against dense masked attention, in the precision of Q, K and V.
            auto largest_error = [&](const auto& Q, const auto& K, const auto& V) {
                return double(xt::amax(xt::abs(
                    attn::longformer_attention(Q, K, V, s.w, s.dilation, s.global) -
                    attn::scaled_dot_product_attention(Q, K, V, mask)))());
            };
            results.add("max_abs_error_double_" + s.name, largest_error(Q, K, V));
            using Floats = xt::xtensor<float, 2>;
            results.add("max_abs_error_float_" + s.name,
                        largest_error(Floats(Q), Floats(K), Floats(V)));
        }
        // ⟨Choose the lengths to measure⟩ 08-longformer.md:882
        const std::size_t n_min = 64;
        const std::size_t n_max = options.quick ? 2048 : 16384;
        const std::size_t dense_n_max = options.quick ? 2048 : 4096;
        const double fit_from = options.quick ? 128 : 256;
        const int repeats = options.quick ? 3 : 5;
        results.add("n_min", double(n_min));
        results.add("n_max", double(n_max));
        results.add("dense_n_max", double(dense_n_max));
        results.add("fit_from", fit_from);
        results.add("repeats", repeats);
        results.add("cost_threads", 1);
        // ⟨Time the kernel and dense attention against n⟩ 08-longformer.md:717
        const std::size_t d = 64, w = 64, dilation = 1;
        const std::vector<std::size_t> global = {0};
        attn::CostCurve kernel{"Longformer kernel", 1}, dense{"dense", 1};
        std::vector<double> scores;  // per n: the scores the kernel computes (KeyVisits)
        for (std::size_t n = n_min; n <= n_max; n *= 2) {
            const auto Q = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto K = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const auto V = attn::random_normal<float>(n, d, 1.0, rng);  // n×d
            const attn::Mask mask = n <= dense_n_max
                                        ? attn::longformer_mask(n, w, dilation, global)
                                        : attn::Mask();  // n×n, outside the clock
            const attn::Call kernel_call = [&] {
                return attn::longformer_attention(Q, K, V, w, dilation, global);
            };
            attn::Call dense_call;  // empty beyond dense_n_max: dense is skipped there
            if (n <= dense_n_max)
                dense_call = [&] { return attn::scaled_dot_product_attention(Q, K, V, mask); };
            attn::measure_costs({&kernel, &dense}, double(n), {kernel_call, dense_call},
                                repeats);
            attn::KeyVisits visits;  // one more call, outside the clock
            attn::longformer_attention(Q, K, V, w, dilation, global, &visits);
            scores.push_back(double(visits.scores));
        }
        // ⟨Draw time and memory against n⟩ 08-longformer.md:751
        attn::report_against_dense(kernel, dense, fit_from, fit_from, out, results);
        // ⟨Say whether the time grows linearly⟩ 08-longformer.md:799
        const auto first_fitted = std::size_t(
            std::find(kernel.n.begin(), kernel.n.end(), fit_from) - kernel.n.begin());
        const std::vector<double> fitted_n(kernel.n.begin() + first_fitted, kernel.n.end());
        const std::vector<double> fitted_scores(scores.begin() + first_fitted, scores.end());
        results.add_fit("scores_slope", attn::loglog_fit(fitted_n, fitted_scores));
        results.add("scores_at_n_max", scores.back());
        results.add("dense_scores_at_n_max", kernel.n.back() * kernel.n.back());
        const auto ns_per_score = [&](std::size_t k) {
            return 1e9 * kernel.wall_seconds[k] / scores[k];
        };
        results.add("ns_per_score_at_fit_from", ns_per_score(first_fitted));
        results.add("ns_per_score_at_n_max", ns_per_score(kernel.n.size() - 1));
        const attn::SlopeFit time_fit = kernel.time_fit(fit_from);
        const double distance = (time_fit.slope - 1) / time_fit.standard_error;  // in errors
        const std::string side = std::abs(distance) <= 2 ? "1 within"
                                 : distance < 0          ? "below 1 by more than"
                                                         : "above 1 by more than";
        results.add_text("time_vs_linear", "the slope is " + side + " two standard errors");
    });
}
