// Generated from chapters/11-performer.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/machine.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/performer.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace {

// ⟨Estimate the softmax kernel with random features⟩ 11-performer.md:275
/// The kind of random features compared in the experiments.
enum class FeatureKind { positive_iid, positive_orthogonal, trig_iid, trig_orthogonal };

/// Estimates of exp(x_p·y_p/√d) for each pair
/// of rows of X and Y (P×d) from one draw of W.
std::vector<double> kernel_estimates(const xt::xtensor<double, 2>& X,
                                     const xt::xtensor<double, 2>& Y, FeatureKind kind,
                                     std::size_t r, std::uint64_t seed)
{
    const std::size_t d = X.shape(1);
    const bool orthogonal = kind == FeatureKind::positive_orthogonal ||
                            kind == FeatureKind::trig_orthogonal;
    const bool positive =
        kind == FeatureKind::positive_iid || kind == FeatureKind::positive_orthogonal;
    const auto W = orthogonal ? attn::orthogonal_features<double>(r, d, seed)
                              : attn::iid_features<double>(r, d, seed);
    const xt::xtensor<double, 2> phi_X =
        positive ? attn::favor_features(X, W) : attn::trig_features(X, W);
    const xt::xtensor<double, 2> phi_Y =
        positive ? attn::favor_features(Y, W) : attn::trig_features(Y, W);
    std::vector<double> estimates(X.shape(0), 0.0);
    for (std::size_t p = 0; p < X.shape(0); ++p)
        for (std::size_t l = 0; l < phi_X.shape(1); ++l)
            estimates[p] += phi_X(p, l) * phi_Y(p, l);
    return estimates;
}

/// Mean over pairs of the relative mean squared error
/// E[(estimate − SM)²]/SM², over `draws` draws.
double relative_mse(const xt::xtensor<double, 2>& X, const xt::xtensor<double, 2>& Y,
                    FeatureKind kind, std::size_t r, int draws, std::uint64_t seed)
{
    const std::size_t pairs = X.shape(0), d = X.shape(1);
    double total = 0;
    for (int draw = 0; draw < draws; ++draw) {
        const auto estimates =
            kernel_estimates(X, Y, kind, r, seed + std::uint64_t(draw));
        for (std::size_t p = 0; p < pairs; ++p) {
            const double exact = std::exp(xt::sum(xt::row(X, p) * xt::row(Y, p))() /
                                          std::sqrt(double(d)));
            total += std::pow((estimates[p] - exact) / exact, 2);
        }
    }
    return total / double(draws) / double(pairs);
}

// ⟨Build pairs of vectors with a given length and angle⟩ 11-performer.md:327
/// Pairs of rows with ‖x̃‖ = ‖ỹ‖ = `norm` (x̃ = x·d^(−1/4)),
/// P×d each. If `angle` is NaN the directions are random;
/// otherwise y is at `angle` radians from x, in a random plane.
std::pair<xt::xtensor<double, 2>, xt::xtensor<double, 2>> make_pairs(
    std::size_t pairs, std::size_t d, double norm, double angle, std::mt19937_64& rng)
{
    auto unit = [&](xt::xtensor<double, 1> v) {
        return xt::xtensor<double, 1>(v / std::sqrt(xt::sum(v * v)()));
    };
    xt::xtensor<double, 2> X = xt::zeros<double>({pairs, d}),
                           Y = xt::zeros<double>({pairs, d});
    const double length = norm * std::sqrt(std::sqrt(double(d)));
    for (std::size_t p = 0; p < pairs; ++p) {
        const auto draws = attn::random_normal<double>(2, d, 1.0, rng);  // 2×d
        const xt::xtensor<double, 1> u = unit(xt::row(draws, 0));
        xt::xtensor<double, 1> v = unit(xt::row(draws, 1));
        if (!std::isnan(angle)) {
            v = unit(v - xt::sum(u * v)() * u);  // orthogonal to u
            v = std::cos(angle) * u + std::sin(angle) * v;
        }
        xt::row(X, p) = length * u;
        xt::row(Y, p) = length * v;
    }
    return {X, Y};
}

/// The mean over pairs of Lemma 2's relative MSE
/// for r iid features: positive, or trigonometric.
double lemma2_relative_mse(const xt::xtensor<double, 2>& X,
                           const xt::xtensor<double, 2>& Y, std::size_t r,
                           bool positive)
{
    const double d = double(X.shape(1));
    double total = 0;
    for (std::size_t p = 0; p < X.shape(0); ++p) {
        const xt::xtensor<double, 1> x = xt::row(X, p) / std::sqrt(std::sqrt(d)),
                                     y = xt::row(Y, p) / std::sqrt(std::sqrt(d));
        const double xx = xt::sum(x * x)(), yy = xt::sum(y * y)(),
                     xy = xt::sum(x * y)();
        if (positive) total += (std::exp(xx + yy + 2 * xy) - 1) / double(r);  // ‖x+y‖²
        else
            total += std::exp(xx + yy - 2 * xy) *
                     std::pow(1 - std::exp(-(xx + yy - 2 * xy)), 2) / (2 * double(r));
    }
    return total / double(X.shape(0));
}

// ⟨Compute masked dense attention for the causal comparison⟩ 11-performer.md:1304
/// Dense causal attention: softmax over keys j ≤ i
/// only (scores above the diagonal set to −∞), n×d_v.
xt::xtensor<double, 2> causal_dense_attention(const xt::xtensor<double, 2>& Q,
                                              const xt::xtensor<double, 2>& K,
                                              const xt::xtensor<double, 2>& V)
{
    const xt::xtensor<double, 2> K_t = xt::transpose(K);
    xt::xtensor<double, 2> scores =
        xt::linalg::dot(Q, K_t) / std::sqrt(double(Q.shape(1)));  // n×n
    for (std::size_t i = 0; i < scores.shape(0); ++i)
        for (std::size_t j = i + 1; j < scores.shape(1); ++j)
            scores(i, j) = -std::numeric_limits<double>::infinity();
    return xt::linalg::dot(attn::softmax_rows(scores), V);
}

/// Root-mean-square of the entries of A − B.
double rms_difference(const xt::xtensor<double, 2>& A, const xt::xtensor<double, 2>& B)
{
    const xt::xtensor<double, 2> diff = A - B;
    return std::sqrt(xt::mean(diff * diff)());
}

// ⟨Choose the lengths of the cost curves⟩ 11-performer.md:1443
/// Lengths from 128 doubling up to `from`, then by factors of √2 from `from` to n_max.
std::vector<std::size_t> cost_lengths(std::size_t from, std::size_t n_max)
{
    std::vector<std::size_t> lengths;
    for (std::size_t n = 128; n < from; n *= 2) lengths.push_back(n);
    for (double n = double(from); n <= double(n_max) * 1.001; n *= std::sqrt(2.0))
        lengths.push_back(std::size_t(std::round(n)));
    return lengths;
}


}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(
        argc, argv, "ch11",
        "Performer: FAVOR+ estimators, attention error, cost against n",
        [](const attn::Options& options, attn::Results& results) {
            const std::filesystem::path& out = options.out;
            std::mt19937_64 rng(options.seed);
            // ⟨Measure the MSE against the number of features⟩ 11-performer.md:380
            {
                const std::size_t d = 16, pairs = 8;
                const double norm = 0.7;
                const int draws = options.quick ? 100 : 400;
                results.add("mse_d", double(d));
                results.add("mse_pairs", double(pairs));
                results.add("mse_norm", norm);
                results.add("mse_draws", double(draws));
                const auto [X, Y] =
                    make_pairs(pairs, d, norm, std::numeric_limits<double>::quiet_NaN(), rng);
                const std::vector<std::pair<FeatureKind, std::string>> kinds = {
                    {FeatureKind::positive_iid, "positive, iid"},
                    {FeatureKind::positive_orthogonal, "positive, orthogonal"},
                    {FeatureKind::trig_iid, "trigonometric, iid"},
                    {FeatureKind::trig_orthogonal, "trigonometric, orthogonal"}};
                std::vector<attn::Series> curves;
                for (const auto& [kind, label] : kinds) curves.push_back({label, {}, {}});
                attn::Series theory_positive{"Lemma 2, positive iid (∝ 1/r)", {}, {}, "lines"};
                attn::Series theory_trig{"Lemma 2, trigonometric iid (∝ 1/r)", {}, {}, "lines"};
                std::ofstream table(out / "mse_table.txt");
                table << std::left << std::setw(6) << "r";
                for (const auto& [kind, label] : kinds) table << std::setw(28) << label;
                table << "\n";
                for (std::size_t r = 4; r <= 512; r *= 2) {
                    table << std::setw(6) << r;
                    for (std::size_t k = 0; k < kinds.size(); ++k) {
                        const double mse = relative_mse(X, Y, kinds[k].first, r, draws,
                                                        options.seed + 7919 * r + 104729 * k);
                        curves[k].x.push_back(double(r));
                        curves[k].y.push_back(mse);
                        table << std::setw(28) << std::setprecision(3) << mse;
                    }
                    table << "\n";
                    theory_positive.x.push_back(double(r));
                    theory_positive.y.push_back(lemma2_relative_mse(X, Y, r, true));
                    theory_trig.x.push_back(double(r));
                    theory_trig.y.push_back(lemma2_relative_mse(X, Y, r, false));
                }
                results.add_fit("mse_slope_positive_iid",
                                attn::loglog_fit(curves[0].x, curves[0].y));
                results.add_fit("mse_slope_positive_orthogonal",
                                attn::loglog_fit(curves[1].x, curves[1].y));
                results.add("orthogonal_over_iid_positive_r16", curves[1].y[2] / curves[0].y[2]);
                results.add("orthogonal_over_iid_trig_r16", curves[3].y[2] / curves[2].y[2]);
                curves.push_back(theory_positive);
                curves.push_back(theory_trig);
                attn::plot::LinePlotStyle style{"", "r (random features)",
                                                "E[(estimate − SM)^2] / SM^2"};
                style.log_x = style.log_y = true;
                style.key = "below left Left reverse vertical maxrows 6";  // off the curves
                attn::plot::lines(out / "mse_vs_r.svg", curves, style);
            }
            // ⟨Measure the error against the angle⟩ 11-performer.md:474
            {
                const std::size_t d = 16, pairs = 8, r = 64;
                const double norm = 1.0;
                const int draws = options.quick ? 50 : 400;
                attn::Series positive{"positive", {}, {}}, trig{"trigonometric", {}, {}};
                attn::Series theory_positive{"Lemma 2, positive", {}, {}, "lines"},
                    theory_trig{"Lemma 2, trigonometric", {}, {}, "lines"};
                double negative_share = 0, exact_at_180 = 0, trig_at_0 = 0;
                for (int degrees = 0; degrees <= 180; degrees += 15) {
                    const auto [X, Y] = make_pairs(pairs, d, norm, degrees * M_PI / 180.0, rng);
                    const std::uint64_t seed = options.seed + 31 * std::uint64_t(degrees);
                    // y = x: the trigonometric estimate is
                    // exact (cos 0 = 1); log axes cannot show 0
                    if (degrees == 0) {
                        trig_at_0 = relative_mse(X, Y, FeatureKind::trig_iid, r, draws, seed);
                        continue;
                    }
                    if (degrees == 180) {  // y = −x: the positive estimate is exact
                        exact_at_180 =
                            relative_mse(X, Y, FeatureKind::positive_iid, r, draws, seed);
                        int negative = 0;
                        for (int draw = 0; draw < draws; ++draw)
                            for (double e : kernel_estimates(X, Y, FeatureKind::trig_iid, r,
                                                             seed + std::uint64_t(draw)))
                                negative += e < 0;
                        negative_share = double(negative) / double(draws * int(pairs));
                        break;
                    }
                    for (attn::Series* s : {&positive, &trig, &theory_positive, &theory_trig})
                        s->x.push_back(degrees);
                    positive.y.push_back(
                        relative_mse(X, Y, FeatureKind::positive_iid, r, draws, seed));
                    trig.y.push_back(relative_mse(X, Y, FeatureKind::trig_iid, r, draws, seed));
                    theory_positive.y.push_back(lemma2_relative_mse(X, Y, r, true));
                    theory_trig.y.push_back(lemma2_relative_mse(X, Y, r, false));
                }
                results.add("angle_r", double(r));
                results.add("angle_norm", norm);
                results.add("trig_relative_mse_at_0", trig_at_0);
                results.add("positive_relative_mse_at_15", positive.y.front());
                results.add("positive_lemma2_at_15", theory_positive.y.front());
                results.add("positive_relative_mse_at_165", positive.y.back());
                results.add("trig_relative_mse_at_15", trig.y.front());
                results.add("trig_relative_mse_at_165", trig.y.back());
                results.add("positive_relative_mse_at_180", exact_at_180);
                results.add("trig_negative_share_at_180", negative_share);
                attn::plot::LinePlotStyle style{"", "angle between x and y (degrees)",
                                                "E[(estimate − SM)^2] / SM^2"};
                style.log_y = true;  // the key below the plot, off the curves
                attn::plot::lines(out / "mse_vs_angle.svg",
                                  {positive, trig, theory_positive, theory_trig}, style);
            }
            // ⟨Draw dense and FAVOR+ weights⟩ 11-performer.md:1239
            {
                const std::size_t n_small = 24, d = 16, r = 256;
                // n×d, sinusoidal position codes
                xt::xtensor<double, 2> P = xt::zeros<double>({n_small, d});
                for (std::size_t i = 0; i < n_small; ++i)
                    for (std::size_t c = 0; c < d; c += 2) {
                        const double angle = double(i) / std::pow(10000.0, double(c) / double(d));
                        P(i, c) = 1.25 * std::sin(angle);
                        P(i, c + 1) = 1.25 * std::cos(angle);
                    }
                const auto W = attn::orthogonal_features<double>(r, d, options.seed);
                const xt::xtensor<double, 2> dense = attn::attention_weights(P, P);     // n×n
                const xt::xtensor<double, 2> favor = attn::performer_weights(P, P, W);  // n×n
                const xt::xtensor<double, 2> causal = attn::performer_weights(P, P, W, true);
                // one colour scale up to the largest bidirectional weight, so the band shows
                const double largest =
                    std::max(double(xt::amax(dense)()), double(xt::amax(favor)()));
                const auto weights_style = [&](const std::string& title) {
                    attn::plot::HeatmapStyle style{title, {}, {}};
                    style.probabilities = false;
                    style.colour_max = largest;
                    return style;
                };
                attn::plot::HeatmapStyle difference = weights_style("FAVOR+ − dense");
                difference.diverging = true;
                difference.colorbar_label = "difference of weights";
                attn::plot::HeatmapStyle masked = weights_style("causal FAVOR+");
                masked.allowed = attn::causal_mask(n_small);
                attn::plot::heatmap_grid(out / "weights.svg",
                                         {{dense, weights_style("dense")},
                                          {favor, weights_style("FAVOR+, r = 256")},
                                          {xt::xtensor<double, 2>(favor - dense), difference},
                                          {causal, masked}},
                                         2);
                results.add("weights_colour_max", largest, 3);
                results.add("weights_max_abs_error_r256", xt::amax(xt::abs(favor - dense))());
            }
            // ⟨Measure the attention error against r⟩ 11-performer.md:1328
            {
                const std::size_t n = options.quick ? 128 : 512, d = 16,
                                  r_max = options.quick ? 1024 : 4096;
                const int draws = options.quick ? 2 : 3;
                results.add("attention_n", double(n));
                results.add("attention_draws", double(draws));
                std::vector<attn::Series> curves;
                for (const double sigma : {0.5, 1.0}) {
                    const auto Q = attn::random_normal<double>(n, d, sigma, rng),
                               K = attn::random_normal<double>(n, d, sigma, rng);
                    const auto V = attn::random_normal<double>(n, d, 1.0, rng);
                    const auto dense = attn::scaled_dot_product_attention(Q, K, V),
                               causal = causal_dense_attention(Q, K, V);
                    const std::string tag = "σ = " + attn::format_number(sigma) + ", ";
                    attn::Series iid{tag + "iid", {}, {}}, ort{tag + "orthogonal", {}, {}},
                        causal_ort{tag + "causal, orthogonal", {}, {}};
                    double max_error = 0;
                    for (std::size_t r = 16; r <= r_max; r *= 4) {
                        double e_iid = 0, e_ort = 0, e_causal = 0;
                        for (int draw = 0; draw < draws; ++draw) {
                            const std::uint64_t seed =
                                options.seed + 1000 * r + std::uint64_t(draw);
                            const auto W_iid = attn::iid_features<double>(r, d, seed);
                            const auto W_ort = attn::orthogonal_features<double>(r, d, seed);
                            const auto O_ort = attn::performer_attention(Q, K, V, W_ort);
                            e_iid +=
                                rms_difference(attn::performer_attention(Q, K, V, W_iid), dense) /
                                draws;
                            e_ort += rms_difference(O_ort, dense) / draws;
                            e_causal +=
                                rms_difference(attn::performer_causal_attention(Q, K, V, W_ort),
                                               causal) /
                                draws;
                            if (r == r_max) max_error += xt::amax(xt::abs(O_ort - dense))() / draws;
                        }
                        for (attn::Series* s : {&iid, &ort, &causal_ort}) s->x.push_back(double(r));
                        iid.y.push_back(e_iid);
                        ort.y.push_back(e_ort);
                        causal_ort.y.push_back(e_causal);
                    }
                    const std::string key = sigma == 0.5 ? "small" : "unit";
                    results.add("output_rms_" + key, std::sqrt(xt::mean(xt::square(dense))()));
                    results.add("error_orthogonal_r16_" + key, ort.y.front());
                    results.add("error_orthogonal_rmax_" + key, ort.y.back());
                    results.add("error_iid_rmax_" + key, iid.y.back());
                    results.add("error_causal_rmax_" + key, causal_ort.y.back());
                    results.add("max_abs_error_orthogonal_rmax_" + key, max_error);
                    results.add_fit("error_slope_orthogonal_" + key,
                                    attn::loglog_fit(ort.x, ort.y));
                    curves.insert(curves.end(), {iid, ort, causal_ort});
                }
                results.add("attention_r_max", double(r_max));
                attn::Series trend{"∝ 1/√r", curves[1].x, {}, "lines"};
                for (double r : trend.x)
                    trend.y.push_back(curves[1].y.front() * std::sqrt(16.0 / r));
                curves.push_back(trend);
                attn::plot::LinePlotStyle style{"", "r (random features)",
                                                "RMS error of the output"};
                style.log_x = style.log_y = true;
                style.key = "below left Left reverse vertical maxrows 7";  // off the curves
                attn::plot::lines(out / "attention_error_vs_r.svg", curves, style);
            }
            // ⟨Time FAVOR+ and dense attention against n⟩ 11-performer.md:1455
            const std::size_t r_bench = 256, n_dense_max = 2048;
            const std::size_t n_fit = options.quick ? 128 : 512;
            const std::size_t n_max = options.quick ? 2048 : options.bench ? 16384 : 4096;
            const std::size_t n_short = 2048;  // calls below it are short: more rounds
            const int repeats = 3;
            results.add("bench_r", double(r_bench));
            results.add("fit_from", double(n_fit));
            results.add("rounds", double(repeats));
            results.add("rounds_short", double(3 * repeats));
            results.add("short_below", double(n_short));
            results.add("l2_kib", double(attn::cache_bytes(2)) / 1024);
            results.add("block_rows", double(attn::performer_block_rows<float>(64, 64, r_bench)));
            const auto W_bench = attn::orthogonal_features<float>(r_bench, 64, options.seed);
            attn::CostCurve dense{"dense", 1}, favor{"FAVOR+", 1}, whole{"FAVOR+ unblocked", 1};
            attn::CostCurve causal{"causal FAVOR+", 1}, causal_whole{"causal FAVOR+ unblocked", 1};
            for (const std::size_t n_cost : cost_lengths(n_fit, n_max)) {
                const auto Q_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                const auto K_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                const auto V_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                const auto& W = W_bench;
                attn::Call dense_call;  // empty beyond n_dense_max: no point there
                if (n_cost <= n_dense_max)
                    dense_call = [&] { return attn::scaled_dot_product_attention(Q_n, K_n, V_n); };
                attn::measure_costs(
                    {&dense, &favor, &whole, &causal, &causal_whole}, double(n_cost),
                    {dense_call, [&] { return attn::performer_attention(Q_n, K_n, V_n, W); },
                     [&] { return attn::performer_attention_unblocked(Q_n, K_n, V_n, W); },
                     [&] { return attn::performer_causal_attention(Q_n, K_n, V_n, W); },
                     [&] { return attn::performer_causal_attention_unblocked(Q_n, K_n, V_n, W); }},
                    n_cost < n_short ? 3 * repeats : repeats);
            }
            // ⟨Fit the slopes of the cost curves⟩ 11-performer.md:1495
            const attn::SlopeFit favor_fit = favor.time_fit(n_fit);
            const attn::SlopeFit whole_fit = whole.time_fit(n_fit);
            const attn::SlopeFit causal_fit = causal.time_fit(n_fit);
            const attn::SlopeFit causal_whole_fit = causal_whole.time_fit(n_fit);
            const attn::SlopeFit dense_fit = dense.time_fit();
            results.add_fit("favor_time_slope", favor_fit);
            results.add_fit("unblocked_time_slope", whole_fit);
            results.add_fit("causal_time_slope", causal_fit);
            results.add_fit("causal_unblocked_time_slope", causal_whole_fit);
            results.add_fit("dense_time_slope", dense_fit);
            const attn::SlopeFit favor_memory_fit = favor.memory_fit(n_fit);
            const attn::SlopeFit whole_memory_fit = whole.memory_fit(n_fit);
            const attn::SlopeFit causal_memory_fit = causal.memory_fit(n_fit);
            results.add_fit("favor_memory_slope", favor_memory_fit);
            results.add_fit("unblocked_memory_slope", whole_memory_fit);
            results.add_fit("causal_memory_slope", causal_memory_fit);
            const attn::Crossover time_crossover = attn::find_crossover(favor, dense);
            const attn::Crossover causal_crossover = attn::find_crossover(causal, dense);
            const attn::Crossover memory_crossover = attn::find_crossover(favor, dense, true);
            results.add_text("crossover_time", time_crossover.describe());
            results.add_text("crossover_causal_time", causal_crossover.describe());
            results.add_text("crossover_memory", memory_crossover.describe());
            results.add("max_n", favor.n.back());
            results.add("dense_max_n", dense.n.back());
            results.add("favor_seconds_at_max_n", favor.wall_seconds.back());
            results.add("unblocked_over_blocked_at_max_n",
                        whole.wall_seconds.back() / favor.wall_seconds.back(), 2);
            results.add("causal_seconds_at_max_n", causal.wall_seconds.back());
            results.add("causal_unblocked_over_blocked_at_max_n",
                        causal_whole.wall_seconds.back() / causal.wall_seconds.back(), 2);
            results.add("causal_over_bidirectional_at_max_n",
                        causal.wall_seconds.back() / favor.wall_seconds.back(), 2);
            results.add("favor_mib_at_max_n", favor.peak_mib.back());
            results.add("unblocked_mib_at_max_n", whole.peak_mib.back());
            results.add("causal_mib_at_max_n", causal.peak_mib.back());
            // ⟨Draw the cost against n⟩ 11-performer.md:1533
            const std::vector<std::pair<const attn::CostCurve*, attn::SlopeFit>> time_fits = {
                {&dense, dense_fit}, {&favor, favor_fit}, {&whole, whole_fit},
                {&causal, causal_fit}, {&causal_whole, causal_whole_fit}};
            std::vector<attn::Series> times;
            for (const auto& [curve, fit] : time_fits) {
                times.push_back(curve->time());
                times.back().label += ", slope " + fit.text();
            }
            attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds"};
            time_style.log_x = time_style.log_y = true;
            attn::plot::leave_room_for_the_key(time_style, times);
            attn::plot::lines(out / "cost_time.svg", times, time_style);
            std::vector<attn::Series> memories = {dense.memory(), favor.memory(), whole.memory(),
                                                  causal.memory()};
            memories[1].label += ", slope " + favor_memory_fit.text();
            memories[2].label += ", slope " + whole_memory_fit.text();
            memories[3].label += ", slope " + causal_memory_fit.text();
            attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB"};
            memory_style.log_x = memory_style.log_y = true;
            attn::plot::leave_room_for_the_key(memory_style, memories);
            attn::plot::lines(out / "cost_memory.svg", memories, memory_style);
        });
}
