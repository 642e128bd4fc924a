// Generated from chapters/10-linformer.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/linformer.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace {

// ⟨Accumulate the singular values of a matrix⟩ 10-linformer.md:55
/// Normalised cumulative singular values c_r =
/// Σ_{i≤r} σ_i / Σ σ_i of `A` (n×n), r = 1..n.
std::vector<double> cumulative_singular_values(const xt::xtensor<double, 2>& A)
{
    // singular values only
    const auto decomposition = xt::linalg::svd(A, false, false);
    const xt::xtensor<double, 1> sigma = std::get<1>(decomposition);  // n, descending
    const double total = xt::sum(sigma)();
    std::vector<double> cumulative;
    double running = 0;
    for (double s : sigma) cumulative.push_back((running += s) / total);
    return cumulative;
}

/// The smallest r with c_r ≥ level.
std::size_t rank_reaching(const std::vector<double>& cumulative, double level)
{
    const auto at = std::lower_bound(cumulative.begin(), cumulative.end(), level);
    return std::size_t(at - cumulative.begin()) + 1;
}

// ⟨Build structured and random inputs⟩ 10-linformer.md:83
/// Sinusoidal position codes (Vaswani et al. 2017,
/// §3.5) times `scale`: n×d, row i is position i.
xt::xtensor<double, 2> position_codes(std::size_t n, std::size_t d, double scale)
{
    xt::xtensor<double, 2> P = xt::zeros<double>({n, d});  // n×d
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c + 1 < d; c += 2) {
            const double angle = double(i) / std::pow(10000.0, double(c) / double(d));
            P(i, c) = scale * std::sin(angle);
            P(i, c + 1) = scale * std::cos(angle);
        }
    return P;
}

/// Queries and keys of one kind of input, n×d each, and values with N(0, 1) entries.
struct Inputs {
    xt::xtensor<double, 2> Q, K, V;
};

/// "random": N(0, 1) rows; "positions": Q = K = position codes; "vocabulary": n
/// words drawn from a vocabulary of 16 with fixed random embeddings and a weak
/// position code, projected by random W_q, W_k with entries of variance 1/d.
Inputs make_inputs(const std::string& kind, std::size_t n, std::size_t d,
                   std::mt19937_64& rng)
{
    // n×d
    const xt::xtensor<double, 2> V = attn::random_normal<double>(n, d, 1.0, rng);
    if (kind == "random")
        return {attn::random_normal<double>(n, d, 1.0, rng),
                attn::random_normal<double>(n, d, 1.0, rng), V};
    if (kind == "positions")
        return {position_codes(n, d, 1.0), position_codes(n, d, 1.0), V};
    const std::size_t vocabulary = 16;
    // vocabulary×d
    const auto embeddings = attn::random_normal<double>(vocabulary, d, 1.0, rng);
    std::uniform_int_distribution<std::size_t> word(0, vocabulary - 1);
    xt::xtensor<double, 2> X = position_codes(n, d, 0.5);  // n×d
    for (std::size_t i = 0; i < n; ++i) xt::row(X, i) += xt::row(embeddings, word(rng));
    // d×d
    const auto W_q = attn::random_normal<double>(d, d, 1.0 / std::sqrt(double(d)), rng);
    // d×d
    const auto W_k = attn::random_normal<double>(d, d, 1.0 / std::sqrt(double(d)), rng);
    return {xt::linalg::dot(X, W_q), xt::linalg::dot(X, W_k), V};
}

// ⟨Measure the error against k⟩ 10-linformer.md:471
/// Root-mean-square of the entries of A − B.
double rms_difference(const xt::xtensor<double, 2>& A, const xt::xtensor<double, 2>& B)
{
    const xt::xtensor<double, 2> diff = A - B;
    return std::sqrt(xt::mean(diff * diff)());
}

/// RMS error against dense attention of the three projections,
/// for k = 16, 32, … < n; then the 1/√k trend and the error of
/// an output of zeros (the RMS of the dense output) for scale.
std::vector<attn::Series> error_against_k(const Inputs& in, int draws,
                                          std::uint64_t seed)
{
    const std::size_t n = in.Q.shape(0);
    // n×n, analysis only
    const xt::xtensor<double, 2> P = attn::attention_weights(in.Q, in.K);
    const xt::xtensor<double, 2> O = xt::linalg::dot(P, in.V);            // n×d_v
    attn::Series inside{"random E = F, inside the softmax", {}, {}},
        pooled{"mean pooling", {}, {}},
        after{"random E, after the softmax: P·E^T·E·V", {}, {}},
        trend{"∝ 1/√k", {}, {}, "lines"}, zero{"an output of zeros", {}, {}, "lines"};
    for (std::size_t k = 16; k < n; k *= 2) {
        double error_inside = 0, error_after = 0;
        for (int draw = 0; draw < draws; ++draw) {
            const auto E =
                attn::random_projection<double>(k, n, seed + 1000 * k + draw);  // k×n
            error_inside +=
                rms_difference(attn::linformer_attention(in.Q, in.K, in.V, E, E), O) /
                draws;
            // k×d_v
            const xt::xtensor<double, 2> EV = xt::linalg::dot(E, in.V);
            const xt::xtensor<double, 2> PEt =
                xt::linalg::dot(P, xt::xtensor<double, 2>(xt::transpose(E)));  // n×k
            error_after += rms_difference(xt::linalg::dot(PEt, EV), O) / draws;
        }
        const auto E_pool = attn::pooling_projection<double>(k, n);
        for (attn::Series* s : {&inside, &pooled, &after, &trend, &zero})
            s->x.push_back(double(k));
        inside.y.push_back(error_inside);
        pooled.y.push_back(rms_difference(
            attn::linformer_attention(in.Q, in.K, in.V, E_pool, E_pool), O));
        after.y.push_back(error_after);
        trend.y.push_back(after.y.front() * std::sqrt(16.0 / double(k)));
        zero.y.push_back(rms_difference(xt::zeros_like(O), O));
    }
    return {inside, pooled, after, trend, zero};
}


}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch10",
                             "Linformer: spectrum, error against k, cost against n",
                             [](const attn::Options& options, attn::Results& results) {
                                 const std::filesystem::path& out = options.out;
                                 std::mt19937_64 rng(options.seed);
                                 // ⟨Measure the spectrum of attention matrices⟩ 10-linformer.md:130
                                 const std::size_t n_spectrum = options.quick ? 128 : 512;
                                 results.add("spectrum_n", double(n_spectrum));
                                 std::vector<attn::Series> spectra;
                                 for (const std::string kind : {"random", "positions", "vocabulary"}) {
                                     const Inputs in = make_inputs(kind, n_spectrum, 64, rng);
                                     const auto cumulative =
                                         cumulative_singular_values(attn::attention_weights(in.Q, in.K));
                                     attn::Series curve{kind, {}, {}, "lines"};
                                     for (std::size_t r = 0; r < cumulative.size(); ++r) {
                                         curve.x.push_back(double(r + 1));
                                         curve.y.push_back(cumulative[r]);
                                     }
                                     spectra.push_back(curve);
                                     results.add("rank90_" + kind, double(rank_reaching(cumulative, 0.9)));
                                 }
                                 attn::plot::LinePlotStyle spectrum_style{"", "index r", "c_r"};
                                 spectrum_style.y_min = 0, spectrum_style.y_max = 1.02;
                                 spectrum_style.key = "bottom right";
                                 attn::plot::lines(out / "spectrum.svg", spectra, spectrum_style);
                                 // ⟨Draw dense and Linformer weights side by side⟩ 10-linformer.md:414
                                 {
                                     const std::size_t n_small = 32, k_small = 16;
                                     // n×64, a sharper band
                                     const xt::xtensor<double, 2> P = position_codes(n_small, 64, 2.0);
                                     const auto E = attn::pooling_projection<double>(k_small, n_small);  // k×n
                                     std::vector<std::string> token_labels, segment_labels;
                                     for (std::size_t i = 0; i < n_small; ++i) token_labels.push_back(std::to_string(i));
                                     for (std::size_t l = 0; l < k_small; ++l)
                                         segment_labels.push_back(std::to_string(l * n_small / k_small) + "–" +
                                                                  std::to_string((l + 1) * n_small / k_small - 1));
                                     attn::plot::heatmap(out / "weights_dense.svg", attn::attention_weights(P, P),
                                                         {"", token_labels, token_labels});
                                     attn::plot::HeatmapStyle pooled{"", token_labels, segment_labels};
                                     pooled.x_label = "projected key (tokens it averages)";
                                     attn::plot::heatmap(out / "weights_linformer.svg", attn::linformer_weights(P, P, E),
                                                         pooled);
                                 }
                                 // ⟨Compare with dense attention and the loop reference⟩ 10-linformer.md:783
                                 {
                                     const Inputs in = make_inputs("vocabulary", 64, 64, rng);
                                     const xt::xtensor<float, 2> Q(in.Q), K(in.K), V(in.V);
                                     const auto E = attn::random_projection<float>(16, 64, options.seed);  // 16×64
                                     results.add("max_abs_difference_fast_vs_loops",
                                                 xt::amax(xt::abs(attn::linformer_attention(Q, K, V, E, E) -
                                                                  attn::linformer_attention_by_rows(Q, K, V, E, E)))());
                                     const xt::xtensor<float, 2> I = xt::eye<float>(64);
                                     results.add("identity_max_abs_difference",
                                                 xt::amax(xt::abs(attn::linformer_attention(Q, K, V, I, I) -
                                                                  attn::scaled_dot_product_attention(Q, K, V)))());
                                 }
                                 // ⟨Draw the error against k⟩ 10-linformer.md:521
                                 const std::size_t n_error = options.quick ? 256 : 1024;
                                 const int error_draws = options.quick ? 2 : 5;
                                 results.add("error_n", double(n_error));
                                 results.add("error_draws", double(error_draws));
                                 for (const std::string kind : {"vocabulary", "random"}) {
                                     const Inputs in = make_inputs(kind, n_error, 64, rng);
                                     const auto curves = error_against_k(in, error_draws, options.seed);
                                     for (std::size_t c = 0; c < 3; ++c) {
                                         const std::string name = c == 0 ? "inside" : c == 1 ? "pooling" : "after";
                                         results.add("error_" + kind + "_" + name + "_k16", curves[c].y.front());
                                         results.add("error_" + kind + "_" + name + "_kmax", curves[c].y.back());
                                     }
                                     results.add("dense_output_rms_" + kind, curves[4].y.front());
                                     const attn::SlopeFit after_fit = attn::loglog_fit(curves[2].x, curves[2].y);
                                     results.add_fit("error_" + kind + "_after_slope", after_fit);
                                     if (kind == "vocabulary") results.add("error_kmax", curves[0].x.back());
                                     attn::plot::LinePlotStyle style{"", "k (projected length)",
                                                                     "RMS error of the output"};
                                     style.log_x = style.log_y = true;
                                     style.y_min = 0.01, style.y_max = 100;  // room for the legend above the curves
                                     style.key = "top right";
                                     attn::plot::lines(out / ("error_vs_k_" + kind + ".svg"), curves, style);
                                 }
                                 // ⟨Show that the first token sees the last⟩ 10-linformer.md:746
                                 {
                                     const std::size_t n_c = 64, k_c = 16;
                                     Inputs in = make_inputs("vocabulary", n_c, 64, rng);
                                     const auto E = attn::random_projection<double>(k_c, n_c, options.seed);  // k×n
                                     const xt::xtensor<double, 2> before =
                                         attn::linformer_attention(in.Q, in.K, in.V, E, E);
                                     xt::row(in.K, n_c - 1) = xt::row(attn::random_normal<double>(1, 64, 1.0, rng), 0);
                                     xt::row(in.V, n_c - 1) = xt::row(attn::random_normal<double>(1, 64, 1.0, rng), 0);
                                     const xt::xtensor<double, 2> after =
                                         attn::linformer_attention(in.Q, in.K, in.V, E, E);
                                     results.add("first_output_change_from_last_token",
                                                 xt::amax(xt::abs(xt::row(after, 0) - xt::row(before, 0)))());
                                 }
                                 // ⟨Time Linformer and dense attention against n⟩ 10-linformer.md:634
                                 const std::size_t k_bench = 256, n_dense_max = options.bench ? 4096 : 2048;
                                 const std::size_t n_fit = options.quick ? 128 : 1024;
                                 const std::size_t n_linformer_max = options.quick ? 2048 : 16384;
                                 const int repeats = options.quick ? 3 : 5;  // more for the cheap small sizes, below
                                 results.add("bench_k", double(k_bench));
                                 results.add("fit_from", double(n_fit));
                                 attn::CostCurve dense{"dense", 1}, linformer{"Linformer, k = 256", 1};
                                 for (std::size_t n_cost = 128; n_cost <= n_linformer_max; n_cost *= 2) {
                                     const auto Q_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                                     const auto K_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                                     const auto V_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                                     const std::uint64_t seed = options.seed + n_cost;
                                     const auto E = attn::random_projection<float>(k_bench, n_cost, seed);  // k×n
                                     attn::Call dense_call;  // empty beyond n_dense_max: no point there
                                     if (n_cost <= n_dense_max)
                                         dense_call = [&] { return attn::scaled_dot_product_attention(Q_n, K_n, V_n); };
                                     auto linformer_call = [&] {
                                         return attn::linformer_attention(Q_n, K_n, V_n, E, E);
                                     };
                                     const int rounds = n_cost < 2048 ? 3 * repeats : repeats;
                                     attn::measure_costs({&dense, &linformer}, double(n_cost),
                                                         {dense_call, linformer_call}, rounds);
                                 }
                                 // ⟨Draw the cost against n⟩ 10-linformer.md:665
                                 const attn::SlopeFit time_fit = linformer.time_fit(n_fit);
                                 const attn::SlopeFit memory_fit = linformer.memory_fit(n_fit);
                                 const attn::SlopeFit dense_fit = dense.time_fit();
                                 results.add_fit("linformer_time_slope", time_fit);
                                 results.add_fit("linformer_memory_slope", memory_fit);
                                 results.add_fit("dense_time_slope", dense_fit);
                                 const attn::Crossover time_crossover = attn::find_crossover(linformer, dense);
                                 const attn::Crossover memory_crossover = attn::find_crossover(linformer, dense, true);
                                 results.add_text("crossover_time", time_crossover.describe());
                                 results.add_text("crossover_memory", memory_crossover.describe());
                                 results.add("linformer_max_n", linformer.n.back());
                                 results.add("dense_max_n", dense.n.back());
                                 results.add("linformer_seconds_at_max_n", linformer.wall_seconds.back());
                                 results.add("linformer_mib_at_max_n", linformer.peak_mib.back());
                                 std::vector<attn::Series> times = {dense.time(), linformer.time()};
                                 times[0].label += ", slope " + dense_fit.text();
                                 times[1].label += ", slope " + time_fit.text();  // from n = n_fit, said in the caption
                                 attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds"};
                                 time_style.log_x = time_style.log_y = true;
                                 attn::plot::leave_room_for_the_key(time_style, times);
                                 attn::plot::lines(out / "cost_time.svg", times, time_style);
                                 std::vector<attn::Series> memories = {dense.memory(), linformer.memory()};
                                 memories[1].label += ", slope " + memory_fit.text();
                                 attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB"};
                                 memory_style.log_x = memory_style.log_y = true;
                                 attn::plot::leave_room_for_the_key(memory_style, memories);
                                 attn::plot::lines(out / "cost_memory.svg", memories, memory_style);
                             });
}
