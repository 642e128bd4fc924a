// Generated from chapters/01-self-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace {

// ⟨Measure the variance of q·k⟩ 01-self-attention.md:163
/// Sample variance of q·k over `pairs` draws of q, k ~ N(0, I_{d_k}).
double dot_product_variance(std::size_t d_k, std::size_t pairs, std::mt19937_64& rng)
{
    std::normal_distribution<double> normal(0.0, 1.0);
    double sum = 0, sum_sq = 0;
    for (std::size_t p = 0; p < pairs; ++p) {
        double dot = 0;
        for (std::size_t c = 0; c < d_k; ++c) dot += normal(rng) * normal(rng);
        sum += dot;
        sum_sq += dot * dot;
    }
    const double mean = sum / double(pairs);
    return (sum_sq - double(pairs) * mean * mean) / double(pairs - 1);
}

// ⟨Measure how saturated the weights are⟩ 01-self-attention.md:198
/// Mean over rows of each row's largest weight: 1/m for uniform rows, 1 for one-hot.
double mean_largest_weight(const xt::xtensor<double, 2>& weights)
{
    const xt::xtensor<double, 1> largest = xt::amax(weights, {1});  // n, materialised
    return xt::mean(largest)();
}

// ⟨Give each word a fixed random embedding⟩ 01-self-attention.md:448
/// Split `text` at spaces.
std::vector<std::string> split_words(const std::string& text)
{
    std::istringstream stream(text);
    std::vector<std::string> words;
    for (std::string word; stream >> word;) words.push_back(word);
    return words;
}

/// One row per token, N(0, 1) entries drawn from a generator seeded by the word and
/// `rng`'s first draw.
xt::xtensor<float, 2> embed(const std::vector<std::string>& tokens, std::size_t d_model,
                            std::mt19937_64& rng)
{
    const std::uint64_t salt = rng();
    xt::xtensor<float, 2> X = xt::zeros<float>({tokens.size(), d_model});  // n×d_model
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        std::mt19937_64 word_rng(salt ^ std::hash<std::string>{}(tokens[i]));
        xt::row(X, i) =
            xt::row(attn::random_normal<float>(1, d_model, 1.0, word_rng), 0);
    }
    return X;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(
        argc, argv, "ch01",
        "self-attention on a sentence, √d_k, softmax overflow, cost",
        [](const attn::Options& options, attn::Results& results) {
            const std::filesystem::path& out = options.out;
            std::mt19937_64 rng(options.seed);
            // ⟨Embed the sentence⟩ 01-self-attention.md:426
            const std::vector<std::string> tokens =
                split_words("the cat sat on the mat because it was tired");
            const std::size_t d_model = 16, d_k = 8, d_v = 8;
            const xt::xtensor<float, 2> X = embed(tokens, d_model, rng);  // n×d_model
            // ⟨Project the embeddings to queries, keys and values⟩ 01-self-attention.md:433
            const auto W_q =
                attn::random_normal<float>(d_model, d_k, 1.0 / std::sqrt(double(d_model)), rng);
            const auto W_k =
                attn::random_normal<float>(d_model, d_k, 1.0 / std::sqrt(double(d_model)), rng);
            const auto W_v =
                attn::random_normal<float>(d_model, d_v, 1.0 / std::sqrt(double(d_model)), rng);
            const xt::xtensor<float, 2> Q = xt::linalg::dot(X, W_q);  // n×d_k
            const xt::xtensor<float, 2> K = xt::linalg::dot(X, W_k);  // n×d_k
            const xt::xtensor<float, 2> V = xt::linalg::dot(X, W_v);  // n×d_v
            // ⟨Attend over the sentence and draw it⟩ 01-self-attention.md:511
            const xt::xtensor<float, 2> K_t = xt::transpose(K);
            const xt::xtensor<float, 2> scores =
                xt::linalg::dot(Q, K_t) / std::sqrt(float(d_k));                          // n×n
            const xt::xtensor<float, 2> weights = attn::softmax_rows(scores);             // n×n
            const xt::xtensor<float, 2> O = attn::scaled_dot_product_attention(Q, K, V);  // n×d_v

            attn::plot::HeatmapStyle score_style{"Scaled scores q_i·k_j/√d_k", tokens, tokens};
            score_style.probabilities = false;
            score_style.colorbar_label = "score";
            attn::plot::heatmap(out / "scores.svg", scores, score_style);
            attn::plot::heatmap(out / "weights.svg", weights,
                                {"Attention weights softmax(QK^T/√d_k)", tokens, tokens});
            // ⟨Compare the row form with the matrix form⟩ 01-self-attention.md:547
            const xt::xtensor<float, 2> O_rows = attn::attention_by_rows(Q, K, V);  // n×d_v
            results.add("max_abs_difference_rows_vs_matrix", xt::amax(xt::abs(O_rows - O))());
            // ⟨Measure variance and saturation against d_k⟩ 01-self-attention.md:650
            attn::Series unscaled{"var(q·k)", {}, {}}, scaled{"var(q·k/√d_k)", {}, {}},
                theory{"d_k (theory)", {}, {}, "lines"};
            attn::Series peak_unscaled{"without 1/√d_k", {}, {}},
                peak_scaled{"with 1/√d_k", {}, {}};
            const std::size_t pairs = options.quick ? 2000 : 20000;
            const int draws = options.quick ? 5 : 50;
            for (std::size_t d = 4; d <= 1024; d *= 2) {
                const double variance = dot_product_variance(d, pairs, rng);
                for (attn::Series* s : {&unscaled, &scaled, &theory, &peak_unscaled, &peak_scaled})
                    s->x.push_back(double(d));
                unscaled.y.push_back(variance);
                scaled.y.push_back(variance / double(d));
                theory.y.push_back(double(d));
                double largest_unscaled = 0, largest_scaled = 0;
                xt::xtensor<double, 2> weights_unscaled;  // 10×10, of the last draw
                for (int draw = 0; draw < draws; ++draw) {
                    const auto Q_d = attn::random_normal<double>(10, d, 1.0, rng);  // 10×d
                    const auto K_d = attn::random_normal<double>(10, d, 1.0, rng);  // 10×d
                    const xt::xtensor<double, 2> raw =
                        xt::linalg::dot(Q_d, xt::xtensor<double, 2>(xt::transpose(K_d)));
                    weights_unscaled = attn::softmax_rows(raw);
                    const xt::xtensor<double, 2> scaled_raw = raw / std::sqrt(double(d));
                    largest_unscaled += mean_largest_weight(weights_unscaled) / draws;
                    largest_scaled += mean_largest_weight(attn::softmax_rows(scaled_raw)) / draws;
                }
                peak_unscaled.y.push_back(largest_unscaled);
                peak_scaled.y.push_back(largest_scaled);
                if (d == 512) {
                    results.add("variance_unscaled_512", variance);
                    results.add("variance_scaled_512", variance / double(d));
                    results.add("max_weight_unscaled_512", peak_unscaled.y.back());
                    results.add("max_weight_scaled_512", peak_scaled.y.back());
                    attn::plot::heatmap(out / "weights_unscaled.svg", weights_unscaled,
                                        {"Unscaled softmax(QK^T) at d_k = 512: saturated", {}, {}});
                }
            }
            attn::plot::LinePlotStyle variance_style{
                "Variance of the dot product of two N(0, I) vectors", "d_k", "variance"};
            variance_style.log_x = variance_style.log_y = true;
            attn::plot::lines(out / "variance.svg", {unscaled, theory, scaled}, variance_style);
            attn::plot::LinePlotStyle peak_style{
                "Mean largest weight per row (10×10 random scores, " + std::to_string(draws) +
                    " draws)",
                "d_k", "mean of max_j a_{ij}"};
            peak_style.log_x = true;
            peak_style.y_min = 0, peak_style.y_max = 1.05;
            attn::plot::lines(out / "saturation.svg", {peak_unscaled, peak_scaled}, peak_style);
            // ⟨Show the naive softmax overflowing⟩ 01-self-attention.md:630
            {
                const std::vector<float> big = {100.0f, 101.0f, 102.0f};
                std::ofstream table(out / "softmax_overflow.txt");
                table << std::left << std::setw(26) << "scores s (float)" << std::right
                      << std::fixed << std::setprecision(4);
                for (float s : big) table << std::setw(10) << s;
                float total = 0;
                for (float s : big) total += std::exp(s);
                table << "\n" << std::left << std::setw(26) << "naive: e^s / sum e^s" << std::right;
                for (float s : big) table << std::setw(10) << std::exp(s) / total;
                const xt::xtensor<float, 2> row = {{100.0f, 101.0f, 102.0f}};
                const xt::xtensor<float, 2> stable = attn::softmax_rows(row);
                table << "\n"
                      << std::left << std::setw(26) << "stable: e^(s-max) / sum" << std::right;
                for (float a : stable) table << std::setw(10) << a;
                table << "\n";
            }
            // ⟨Time dense attention against n⟩ 01-self-attention.md:566
            const int threads = 1;  // as every comparison in Part II
            attn::CostCurve dense{"dense attention", threads};
            const std::size_t n_max = options.quick ? 1024 : options.bench ? 8192 : 4096;
            for (std::size_t n_cost = n_max >> 5; n_cost <= n_max; n_cost *= 2) {
                const auto Q_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                const auto K_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                const auto V_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
                auto dense_call = [&] { return attn::scaled_dot_product_attention(Q_n, K_n, V_n); };
                attn::measure_costs({&dense}, double(n_cost), {dense_call}, 5);
            }
            const attn::SlopeFit time_fit = dense.time_fit(), memory_fit = dense.memory_fit();
            results.add_fit("time_slope", time_fit);
            results.add_fit("memory_slope", memory_fit);
            results.add("memory_mib_at_n_max", dense.peak_mib.back());
            results.add("n_min", dense.n.front());
            results.add("n_max", double(n_max));
            results.add("cost_threads", threads);
            // ⟨Draw the cost against n⟩ 01-self-attention.md:586
            attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds"};
            time_style.log_x = time_style.log_y = true;
            attn::Series time_series = dense.time();
            time_series.label += ", slope " + time_fit.text();
            attn::plot::lines(out / "cost_time.svg", {time_series}, time_style);

            attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB"};
            memory_style.log_x = memory_style.log_y = true;
            attn::Series memory_series = dense.memory();
            memory_series.label += ", slope " + memory_fit.text();
            attn::plot::lines(out / "cost_memory.svg", {memory_series}, memory_style);
        });
}
