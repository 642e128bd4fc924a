// Generated from chapters/20-training-at-length.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xsort.hpp>

#include "attn/attention_backward.hpp"
#include "attn/flash_attention.hpp"
#include "attn/flash_backward.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

namespace {

template <class T>
using Matrix = xt::xtensor<T, 2>;

// ⟨Run one training step three ways⟩ 20-training-at-length.md:618
/// The output of a forward pass and the gradients of its backward pass.
template <class T>
struct TrainingStep {
    xt::xtensor<T, 2> O;               // n×d_v
    attn::AttentionGradients<T> grad;  // dQ n×d_k, dK m×d_k, dV m×d_v
};

/// Chapter 4's way: the forward pass keeps the weights P (n×m) for the backward pass.
template <class T>
TrainingStep<T> dense_step(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                           const Matrix<T>& dO, bool causal)
{
    const Matrix<T> P =  // n×m
        causal ? attn::attention_weights(Q, K, attn::causal_mask(Q.shape(0)))
               : attn::attention_weights(Q, K);
    return {attn::detail::matmul(P, V), attn::attention_backward(Q, K, V, P, dO)};
}

/// Rabe and Staats' way: chunks of queries, each chunk's weights recomputed.
template <class T>
TrainingStep<T> chunked_step(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                             const Matrix<T>& dO, bool causal)
{
    return {attn::chunked_attention(Q, K, V, causal),
            attn::chunked_attention_backward(Q, K, V, dO, causal)};
}

/// FlashAttention's way: the forward pass keeps O and L, the backward pass recomputes
/// every tile of weights from them.
template <class T>
TrainingStep<T> tiled_step(const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                           const Matrix<T>& dO, bool causal,
                           const attn::AttentionTiles& tiles = {})
{
    const attn::FlashForward<T> forward =
        attn::flash_attention_lse(Q, K, V, causal, tiles);
    return {forward.O, attn::flash_attention_backward(Q, K, V, forward.O, dO,
                                                      forward.lse, causal, tiles)};
}

/// Largest |a − b| over all elements.
template <class T>
double max_abs(const Matrix<T>& a, const Matrix<double>& b)
{
    return double(xt::amax(xt::abs(Matrix<double>(a) - b))());
}

/// Largest |a − b| over dQ, dK and dV.
template <class T>
double gradient_gap(const attn::AttentionGradients<T>& a,
                    const attn::AttentionGradients<double>& b)
{
    return std::max({max_abs(a.dQ, b.dQ), max_abs(a.dK, b.dK), max_abs(a.dV, b.dV)});
}
// ⟨Record what a way of training costs⟩ 20-training-at-length.md:828
/// One way of training against n: the peak memory of a step, and the fastest
/// times of its forward and backward passes at the lengths timed.
struct TrainingCost {
    std::string label;                            // e.g. "dense (chapter 4)"
    attn::Series memory;                          // (n, peak MiB of one step)
    std::vector<double> n;                        // the lengths timed
    std::vector<attn::Timing> forward, backward;  // at each of them

    explicit TrainingCost(const std::string& name)
        : label(name), memory{name, {}, {}}
    {
    }

    /// (n, seconds of a step): the fastest forward plus the fastest backward pass, in
    /// wall-clock or in processor seconds.
    attn::Series step_seconds(bool cpu = false) const
    {
        attn::Series series{label, n, {}};
        for (std::size_t k = 0; k < n.size(); ++k)
            series.y.push_back(cpu ? forward[k].cpu + backward[k].cpu
                                   : forward[k].wall + backward[k].wall);
        return series;
    }
};

/// The y of `series` at x = n.
double value_at(const attn::Series& series, double n)
{
    const auto at = std::find(series.x.begin(), series.x.end(), n);
    if (at == series.x.end())
        throw std::invalid_argument("value_at: '" + series.label + "' has no n = " +
                                    std::to_string(n));
    return series.y[std::size_t(at - series.x.begin())];
}
// ⟨Take the median of a ratio over the longer lengths⟩ 20-training-at-length.md:1112
/// The median of `series`' y over its points with x ≥ from (of an even count, the mean
/// of the middle two).
double median_from_length(const attn::Series& series, double from)
{
    std::vector<double> y;
    for (std::size_t k = 0; k < series.x.size(); ++k)
        if (series.x[k] >= from) y.push_back(series.y[k]);
    if (y.empty())
        throw std::invalid_argument("median_from_length: no point from n = " +
                                    std::to_string(from));
    std::sort(y.begin(), y.end());
    const std::size_t middle = y.size() / 2;
    return y.size() % 2 ? y[middle] : (y[middle - 1] + y[middle]) / 2;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch20",
                             "training at length: FlashAttention's backward pass",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Compare the tiled and chunked backward passes with the dense one⟩ 20-training-at-length.md:682
        const std::size_t check_n = 203, check_m = 157, check_d_k = 24, check_d_v = 20;
        const attn::AttentionTiles check_tiles{32, 48};  // 203 = 6·32 + 11, 157 = 3·48 + 13
        for (const bool causal : {false, true}) {
            const std::size_t m = causal ? check_n : check_m;
            const auto Q = attn::random_normal<double>(check_n, check_d_k, 1.0, rng);  // n×d_k
            const auto K = attn::random_normal<double>(m, check_d_k, 1.0, rng);        // m×d_k
            const auto V = attn::random_normal<double>(m, check_d_v, 1.0, rng);        // m×d_v
            const auto dO = attn::random_normal<double>(check_n, check_d_v, 1.0, rng);  // n×d_v
            const TrainingStep<double> dense = dense_step(Q, K, V, dO, causal);
            const TrainingStep<double> tiled = tiled_step(Q, K, V, dO, causal, check_tiles);
            const TrainingStep<double> chunked = chunked_step(Q, K, V, dO, causal);
            const Matrix<float> Q_f = Q, K_f = K, V_f = V, dO_f = dO;
            const TrainingStep<float> tiled_f = tiled_step(Q_f, K_f, V_f, dO_f, causal,
                                                           check_tiles);
            const std::string tag = causal ? "_causal" : "";
            results.add("tiled_vs_dense" + tag + "_max_abs",
                        gradient_gap(tiled.grad, dense.grad), 2);
            results.add("chunked_vs_dense" + tag + "_max_abs",
                        gradient_gap(chunked.grad, dense.grad), 2);
            results.add("tiled_float_vs_dense" + tag + "_max_abs",
                        gradient_gap(tiled_f.grad, dense.grad), 2);
            results.add("forward_vs_dense" + tag + "_max_abs", max_abs(tiled.O, dense.O), 2);
            results.add("forward_vs_chapter13" + tag + "_max_abs",
                        max_abs(tiled.O, attn::flash_attention(Q, K, V, causal)), 2);
        }
        results.add("check_n", double(check_n));
        results.add("check_m", double(check_m));
        results.add("check_d_k", double(check_d_k));
        results.add("check_d_v", double(check_d_v));
        results.add("check_query_tile", double(check_tiles.query_tile));
        results.add("check_key_tile", double(check_tiles.key_tile));
        // ⟨Check the tiled gradients with finite differences⟩ 20-training-at-length.md:735
        double worst_relative_error = 0;
        for (const bool causal : {false, true}) {
            const std::size_t n = 9, m = causal ? 9 : 11;
            Matrix<double> Q = attn::random_normal<double>(n, 5, 1.0, rng);  // n×d_k
            Matrix<double> K = attn::random_normal<double>(m, 5, 1.0, rng);  // m×d_k
            Matrix<double> V = attn::random_normal<double>(m, 3, 1.0, rng);  // m×d_v
            const Matrix<double> G = attn::random_normal<double>(n, 3, 1.0, rng);  // n×d_v
            const attn::AttentionTiles tiles{4, 4};
            auto loss = [&] {
                const Matrix<double> O = attn::flash_attention_lse(Q, K, V, causal, tiles).O;
                return double(xt::sum(G * O)());
            };
            const attn::AttentionGradients<double> grad =
                tiled_step(Q, K, V, G, causal, tiles).grad;
            for (const double error :
                 {attn::relative_error(grad.dQ, attn::numerical_gradient(Q, loss)),
                  attn::relative_error(grad.dK, attn::numerical_gradient(K, loss)),
                  attn::relative_error(grad.dV, attn::numerical_gradient(V, loss))})
                worst_relative_error = std::max(worst_relative_error, error);
        }
        results.add("finite_difference_worst_relative_error", worst_relative_error, 2);
        // ⟨Measure the error against the tile size⟩ 20-training-at-length.md:768
        {
            const std::size_t n = 203, d = 24;
            const auto Q = attn::random_normal<double>(n, d, 1.0, rng);   // n×d_k
            const auto K = attn::random_normal<double>(n, d, 1.0, rng);   // n×d_k
            const auto V = attn::random_normal<double>(n, d, 1.0, rng);   // n×d_v
            const auto dO = attn::random_normal<double>(n, d, 1.0, rng);  // n×d_v
            const Matrix<float> Q_f = Q, K_f = K, V_f = V, dO_f = dO;
            const TrainingStep<double> dense = dense_step(Q, K, V, dO, false);
            attn::Series in_double{"tiled, double", {}, {}}, in_float{"tiled, float", {}, {}};
            double worst_double = 0;
            for (const std::size_t tile : {1, 2, 3, 5, 8, 13, 32, 64, 128, 203}) {
                const attn::AttentionTiles tiles{tile, tile};
                const double gap_double =
                    gradient_gap(tiled_step(Q, K, V, dO, false, tiles).grad, dense.grad);
                const double gap_float = gradient_gap(
                    tiled_step(Q_f, K_f, V_f, dO_f, false, tiles).grad, dense.grad);
                in_double.x.push_back(double(tile));
                in_double.y.push_back(gap_double);
                in_float.x.push_back(double(tile));
                in_float.y.push_back(gap_float);
                worst_double = std::max(worst_double, gap_double);
            }
            results.add("tile_sweep_worst_double", worst_double, 2);
            attn::plot::LinePlotStyle style{"", "tile size B_r = B_c",
                                            "largest |tiled − dense| over dQ, dK, dV"};
            style.log_x = style.log_y = true;
            style.key = "center right";
            attn::plot::lines(out / "error_by_tile.svg", {in_double, in_float}, style);
        }
        // ⟨Measure a training step against n⟩ 20-training-at-length.md:870
        const std::size_t d_cost = 64;
        const std::vector<std::size_t> cost_lengths =
            options.quick ? std::vector<std::size_t>{128, 256, 512, 1024, 2048}
                          : std::vector<std::size_t>{256, 512, 1024, 2048, 4096, 8192, 16384};
        // the largest n of dense and chunked training, and of the timing
        const std::size_t dense_n_max = options.quick ? 2048 : options.bench ? 8192 : 4096;
        const int repeats = options.quick ? 2 : 3;
        TrainingCost dense{"dense (chapter 4)"}, chunked{"query chunks of 64"},
            tiled{"tiles of 64 × 64"}, tiled_causal{"tiles of 64 × 64, causal"};
        for (const std::size_t n : cost_lengths) {
            const attn::BlasThreads one_thread(1);
            const auto Q = attn::random_normal<float>(n, d_cost, 1.0, rng);   // n×d_k
            const auto K = attn::random_normal<float>(n, d_cost, 1.0, rng);   // n×d_k
            const auto V = attn::random_normal<float>(n, d_cost, 1.0, rng);   // n×d_v
            const auto dO = attn::random_normal<float>(n, d_cost, 1.0, rng);  // n×d_v
            const std::vector<std::pair<TrainingCost*, attn::Call>> steps = {
                {&dense, [&] { return dense_step(Q, K, V, dO, false); }},
                {&chunked, [&] { return chunked_step(Q, K, V, dO, false); }},
                {&tiled, [&] { return tiled_step(Q, K, V, dO, false); }}};
            for (const auto& [way, step] : steps) {
                if (way != &tiled && n > dense_n_max) continue;
                const double mib = double(attn::peak_memory_bytes(step)) / (1 << 20);
                if (mib > 0) way->memory.x.push_back(double(n)), way->memory.y.push_back(mib);
            }
            if (n > dense_n_max) continue;  // beyond it, the tiled step's memory alone
            const Matrix<float> P = attn::attention_weights(Q, K);  // n×n
            const auto full = attn::flash_attention_lse(Q, K, V, false);
            const auto causal = attn::flash_attention_lse(Q, K, V, true);
            const auto t = attn::time_alternating(
                {[&] {
                     const Matrix<float> weights = attn::attention_weights(Q, K);  // n×n
                     return std::make_pair(weights, attn::detail::matmul(weights, V));
                 },
                 [&] { return attn::attention_backward(Q, K, V, P, dO); },
                 [&] { return attn::chunked_attention(Q, K, V); },
                 [&] { return attn::chunked_attention_backward(Q, K, V, dO); },
                 [&] { return attn::flash_attention_lse(Q, K, V, false); },
                 [&] { return attn::flash_attention_backward(Q, K, V, full.O, dO, full.lse); },
                 [&] { return attn::flash_attention_lse(Q, K, V, true); },
                 [&] {
                     return attn::flash_attention_backward(Q, K, V, causal.O, dO, causal.lse,
                                                           true);
                 }},
                repeats);
            const std::vector<TrainingCost*> timed = {&dense, &chunked, &tiled, &tiled_causal};
            for (std::size_t w = 0; w < timed.size(); ++w) {  // forward, backward in turn
                timed[w]->n.push_back(double(n));
                timed[w]->forward.push_back(t[2 * w]);
                timed[w]->backward.push_back(t[2 * w + 1]);
            }
        }
        // ⟨Fit and draw the cost of training⟩ 20-training-at-length.md:924
        const auto with_fit = [](attn::Series series, const attn::SlopeFit& fit) {
            series.label += ", slope " + fit.text();
            return series;
        };
        const std::vector<std::pair<const TrainingCost*, std::string>> ways = {
            {&dense, "dense"}, {&chunked, "chunked"}, {&tiled, "tiled"}};
        std::vector<attn::Series> memories, times;  // with their fits, for the figures
        for (const auto& [way, name] : ways) {
            const attn::Series time = way->step_seconds();
            const attn::SlopeFit memory_fit = attn::slope_from(way->memory),
                                 time_fit = attn::slope_from(time);
            results.add_fit("memory_slope_" + name, memory_fit);
            results.add_fit("time_slope_" + name, time_fit);
            results.add_fit("cpu_slope_" + name, attn::slope_from(way->step_seconds(true)));
            memories.push_back(with_fit(way->memory, memory_fit));
            times.push_back(with_fit(time, time_fit));
        }
        const double n_max = double(cost_lengths.back()), dense_n = double(dense_n_max);
        const double dense_seconds = value_at(dense.step_seconds(), dense_n),
                     tiled_seconds = value_at(tiled.step_seconds(), dense_n);
        results.add("n_max", n_max);
        results.add("dense_n_max", dense_n);
        results.add("mib_dense_at_dense_n_max", value_at(dense.memory, dense_n));
        results.add("mib_chunked_at_dense_n_max", value_at(chunked.memory, dense_n));
        results.add("mib_tiled_at_dense_n_max", value_at(tiled.memory, dense_n));
        results.add("mib_tiled_at_n_max", value_at(tiled.memory, n_max));
        results.add("seconds_dense_at_dense_n_max", dense_seconds);
        results.add("seconds_chunked_at_dense_n_max",
                    value_at(chunked.step_seconds(), dense_n));
        results.add("seconds_tiled_at_dense_n_max", tiled_seconds);
        // > 1: the tiled step is faster; within 10 % the two are "about as fast"
        const double gain = dense_seconds / tiled_seconds;
        results.add_text("tiled_against_dense_time", gain >= 1.1         ? "faster than"
                                                     : gain <= 1 / 1.1 ? "slower than"
                                                                       : "about as fast as");
        // P, dP and dS of dense training at the largest n: three n×n float matrices
        results.add("dense_gib_at_n_max_three_matrices", 3 * n_max * n_max * 4 / (1 << 30));
        attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "peak MiB of a training step"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "training_memory.svg", memories, memory_style);
        attn::plot::LinePlotStyle time_style{"", "n (tokens)",
                                             "seconds per training step (fastest passes)"};
        time_style.log_x = time_style.log_y = true;
        attn::plot::lines(out / "training_time.svg", times, time_style);
        // ⟨Weigh an exponential against a product⟩ 20-training-at-length.md:1071
        double exponential_units = 0;  // e: one exponential in units of one product per score
        {
            const attn::BlasThreads one_thread(1);
            const std::size_t n = options.quick ? 256 : 1024;
            const auto Q = attn::random_normal<float>(n, d_cost, 1.0, rng);  // n×d_k
            const auto K = attn::random_normal<float>(n, d_cost, 1.0, rng);  // n×d_k
            const float scale = 1.0f / std::sqrt(float(d_cost));
            Matrix<float> S = xt::empty<float>({n, n});  // n×n: s·Q·Kᵀ, ~N(0, 1)
            attn::detail::gemm(Q, false, K, true, scale, 0.0f, S);
            const auto t = attn::time_alternating(
                {[&] {
                     Matrix<float> scores = xt::empty<float>({n, n});  // n×n
                     attn::detail::gemm(Q, false, K, true, scale, 0.0f, scores);
                     return scores;
                 },
                 [&] {
                     Matrix<float> weights = xt::empty<float>({n, n});  // n×n
                     for (std::size_t k = 0; k < S.size(); ++k)
                         weights.data()[k] = std::exp(S.data()[k]);
                     return weights;
                 }},
                repeats);
            exponential_units = t[1].wall / t[0].wall;
        }
        // backward ÷ forward, as the count predicts it
        const double predicted_tiled = (5 + exponential_units) / (2 + exponential_units),
                     predicted_dense = 4 / (2 + exponential_units);
        results.add("exponential_units", exponential_units, 2);
        results.add("predicted_backward_over_forward_tiled", predicted_tiled);
        results.add("predicted_backward_over_forward_dense", predicted_dense);
        // ⟨Draw the backward pass against the forward pass⟩ 20-training-at-length.md:1129
        // (n, backward ÷ forward) of a way, or (n, its backward ÷ another's backward)
        const auto ratio = [](std::string label, const TrainingCost& way,
                              const std::vector<attn::Timing>& over) {
            attn::Series series{std::move(label), way.n, {}};
            for (std::size_t k = 0; k < way.n.size(); ++k)
                series.y.push_back(way.backward[k].wall / over[k].wall);
            return series;
        };
        const attn::Series
            dense_ratio = ratio("dense (chapter 4): backward ÷ forward", dense, dense.forward),
            tiled_ratio = ratio("tiled: backward ÷ forward", tiled, tiled.forward),
            causal_ratio = ratio("tiled, causal: backward ÷ forward", tiled_causal,
                                 tiled_causal.forward),
            causal_share = ratio("tiled backward: causal ÷ full", tiled_causal, tiled.backward);
        const double median_from = options.quick ? 512 : 1024;
        results.add("pass_n_min", tiled.n.front());
        results.add("pass_n_max", tiled.n.back());
        results.add("pass_median_from", median_from);
        results.add("pass_repeats", double(repeats));
        const double tiled_median = median_from_length(tiled_ratio, median_from);
        results.add("backward_over_forward_tiled", tiled_median);
        results.add("backward_over_forward_tiled_causal",
                    median_from_length(causal_ratio, median_from));
        results.add("backward_over_forward_tiled_at_n_min", tiled_ratio.y.front());
        results.add("causal_over_full_backward",
                    median_from_length(causal_share, median_from), 2);
        results.add("backward_over_forward_dense_at_n_min", dense_ratio.y.front());
        results.add("backward_over_forward_dense", dense_ratio.y.back());
        results.add("backward_over_forward_dense_n", dense_ratio.x.back());
        // How a measured ratio stands to the count's, and where the dense ratio goes with n:
        // beyond 10 % a difference, within it "about".
        const auto compare = [](double a, double b, const char* above, const char* below,
                                const char* about) {
            return a > 1.1 * b ? above : a < b / 1.1 ? below : about;
        };
        results.add_text("tiled_ratio_against_count",
                         compare(tiled_median, predicted_tiled, "above", "below",
                                 "within 10 % of"));
        // the dense ratio's change across the lengths timed, read off the line fitted
        // through all of them (not off the two end points alone)
        const double dense_change =
            std::pow(dense_ratio.x.back() / dense_ratio.x.front(),
                     attn::slope_from(dense_ratio).slope);
        results.add("dense_ratio_change", dense_change);
        results.add_text("dense_ratio_with_n",
                         compare(dense_change, 1, "rising with n", "falling with n",
                                 "about level in n"));
        attn::Series tiled_count{"count, tiled: (5 + e) ÷ (2 + e)", {}, {}},
            dense_count{"count, dense: 4 ÷ (2 + e)", {}, {}};
        for (const double n : {tiled_ratio.x.front(), tiled_ratio.x.back()}) {
            tiled_count.x.push_back(n), dense_count.x.push_back(n);
            tiled_count.y.push_back(predicted_tiled);
            dense_count.y.push_back(predicted_dense);
        }
        tiled_count.with = dense_count.with = "lines";
        attn::plot::LinePlotStyle pass_style{"", "n (tokens)", "ratio of times (1 thread)"};
        pass_style.log_x = true;
        pass_style.key = "below left Left reverse vertical maxrows 6";
        attn::plot::lines(
            out / "backward_over_forward.svg",
            {dense_ratio, tiled_ratio, causal_ratio, causal_share, tiled_count, dense_count},
            pass_style);
    });
}
