// Generated from chapters/02-masked-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xview.hpp>

#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/sentence.hpp"

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch02",
                             "causal and padding masks, fully masked rows, cost",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Embed and project the sentence⟩ 02-masked-attention.md:393
        const std::vector<std::string> tokens =
            attn::split_words("the cat sat on the mat because it was tired");
        const std::size_t n = tokens.size(), d_model = 16, d_k = 8, d_v = 8;
        const std::uint64_t word_seed = rng();
        const double init = 1.0 / std::sqrt(double(d_model));  // entries of variance 1/d_model
        const auto W_q = attn::random_normal<float>(d_model, d_k, init, rng);
        const auto W_k = attn::random_normal<float>(d_model, d_k, init, rng);
        const auto W_v = attn::random_normal<float>(d_model, d_v, init, rng);
        auto project = [&](const std::vector<std::string>& words) {
            const auto X = attn::embed_words<float>(words, d_model, word_seed);  // n×d_model
            return std::array<xt::xtensor<float, 2>, 3>{xt::linalg::dot(X, W_q),
                                                        xt::linalg::dot(X, W_k),
                                                        // Q n×d_k, K n×d_k, V n×d_v
                                                        xt::linalg::dot(X, W_v)};
        };
        const auto [Q, K, V] = project(tokens);
        // ⟨Draw the causal mask, scores and weights⟩ 02-masked-attention.md:417
        const attn::Mask causal = attn::causal_mask(n);
        const xt::xtensor<double, 2> allowed_as_number = xt::cast<double>(causal);

        attn::plot::HeatmapStyle mask_style{"Causal mask: query i may attend keys j ≤ i",
                                            tokens, tokens};
        mask_style.colorbar_label = "allowed";
        mask_style.allowed = causal;
        attn::plot::heatmap(out / "mask.svg", allowed_as_number, mask_style);

        const xt::xtensor<float, 2> K_t = xt::transpose(K);
        // n×n
        const xt::xtensor<float, 2> scores = xt::linalg::dot(Q, K_t) / std::sqrt(float(d_k));
        attn::plot::HeatmapStyle score_style{"Scaled scores q_i·k_j/√d_k, future keys masked",
                                             tokens, tokens};
        score_style.probabilities = false;
        score_style.colorbar_label = "score";
        score_style.allowed = causal;
        attn::plot::heatmap(out / "scores_masked.svg", scores, score_style);

        const xt::xtensor<float, 2> weights = attn::attention_weights(Q, K, causal);  // n×n
        attn::plot::HeatmapStyle weight_style{"Causal attention weights", tokens, tokens};
        weight_style.allowed = causal;
        attn::plot::heatmap(out / "weights_causal.svg", weights, weight_style);
        // ⟨Change the last word and compare⟩ 02-masked-attention.md:477
        std::vector<std::string> changed = tokens;
        changed.back() = "hungry";
        const auto [Q_c, K_c, V_c] = project(changed);
        // n×d_v
        const xt::xtensor<float, 2> O = attn::scaled_dot_product_attention(Q, K, V, causal);
        const xt::xtensor<float, 2> O_c =
            attn::scaled_dot_product_attention(Q_c, K_c, V_c, causal);  // n×d_v
        // n×d_v
        const xt::xtensor<float, 2> change = xt::abs(O_c - O);
        results.add("first_row_weight", weights(0, 0));
        results.add("max_change_before_last",
                    xt::amax(xt::view(change, xt::range(0, n - 1), xt::all()))());
        results.add("max_change_at_last", xt::amax(xt::row(change, n - 1))());
        // ⟨Attend over a padded sentence⟩ 02-masked-attention.md:499
        const std::vector<std::string> padded = {"it",    "was",   "tired",
                                                 "<pad>", "<pad>", "<pad>"};
        const std::vector<bool> is_real = {true, true, true, false, false, false};
        const attn::Mask padding = attn::padding_mask(padded.size(), is_real);
        const auto [Q_p, K_p, V_p] = project(padded);
        // 6×6
        const xt::xtensor<float, 2> weights_padded = attn::attention_weights(Q_p, K_p, padding);
        attn::plot::HeatmapStyle padding_style{"Padding mask: no query attends a <pad> key",
                                               padded, padded};
        padding_style.allowed = padding;
        attn::plot::heatmap(out / "padding_weights.svg", weights_padded, padding_style);
        results.add("pad_weight_total",
                    xt::sum(xt::view(weights_padded, xt::all(), xt::range(3, 6)))());
        // ⟨Attend over a left-padded sentence under the causal mask⟩ 02-masked-attention.md:534
        const std::vector<std::string> left_padded = {"<pad>", "<pad>", "it", "was", "tired"};
        const attn::Mask left_mask =
            // 5×5
            attn::causal_mask(5) && attn::padding_mask(5, {false, false, true, true, true});
        const auto [Q_l, K_l, V_l] = project(left_padded);
        // 5×5
        const xt::xtensor<float, 2> weights_left = attn::attention_weights(Q_l, K_l, left_mask);
        const xt::xtensor<float, 2> O_left =
            attn::scaled_dot_product_attention(Q_l, K_l, V_l, left_mask);  // 5×d_v
        attn::plot::HeatmapStyle left_style{
            "Left padding under a causal mask: two rows see nothing", left_padded, left_padded};
        left_style.allowed = left_mask;
        attn::plot::heatmap(out / "left_padding_weights.svg", weights_left, left_style);
        {
            std::ofstream table(out / "fully_masked_rows.txt");
            table << "this book, float: outputs o_i (first 4 of d_v = " << d_v << " columns)\n";
            for (std::size_t i = 0; i < left_padded.size(); ++i) {
                table << std::left << std::setw(8) << left_padded[i] << std::right << std::fixed
                      << std::setprecision(4);
                for (std::size_t c = 0; c < 4; ++c) table << std::setw(10) << O_left(i, c);
                table << "\n";
            }
        }
        results.add("nan_count_left_padding", double(xt::sum(xt::isnan(O_left))()));
        // ⟨Compare with the reference and with dense attention on prefixes⟩ 02-masked-attention.md:598
        const xt::xtensor<float, 2> O_rows = attn::masked_attention_by_rows(Q, K, V, causal);
        results.add("max_abs_difference_rows_vs_matrix", xt::amax(xt::abs(O_rows - O))());
        float prefix_difference = 0;
        for (std::size_t i = 0; i < n; ++i) {
            auto prefix = xt::range(0, i + 1);                                 // tokens 0..i
            const xt::xtensor<float, 2> Q_i = xt::view(Q, prefix, xt::all());  // (i+1)×d_k
            const xt::xtensor<float, 2> K_i = xt::view(K, prefix, xt::all());  // (i+1)×d_k
            const xt::xtensor<float, 2> V_i = xt::view(V, prefix, xt::all());  // (i+1)×d_v
            const xt::xtensor<float, 2> O_i = attn::scaled_dot_product_attention(Q_i, K_i, V_i);
            const xt::xtensor<float, 1> last = xt::row(O_i, i), row = xt::row(O, i);
            prefix_difference = std::max(prefix_difference, xt::amax(xt::abs(last - row))());
        }
        results.add("max_abs_difference_causal_vs_prefix", prefix_difference);
        // ⟨Time masked against unmasked attention⟩ 02-masked-attention.md:628
        const int threads = 1;
        attn::CostCurve unmasked{"unmasked", threads}, masked{"causal mask", threads};
        const std::size_t n_max = options.quick ? 1024 : options.bench ? 4096 : 2048;
        for (std::size_t n_cost = 64; n_cost <= n_max; n_cost *= 2) {
            const auto Q_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
            const auto K_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
            const auto V_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);  // n×64
            const attn::Mask mask_n = attn::causal_mask(n_cost);                // n×n
            const int rounds = n_cost <= 512 ? 20 : 5;  // short calls: more rounds, same cost
            attn::measure_costs(
                {&unmasked, &masked}, double(n_cost),
                {[&] { return attn::scaled_dot_product_attention(Q_n, K_n, V_n); },
                 [&] { return attn::scaled_dot_product_attention(Q_n, K_n, V_n, mask_n); }},
                rounds);
        }
        // ⟨Compare the two cost curves⟩ 02-masked-attention.md:650
        const attn::SlopeFit masked_fit = masked.time_fit(), unmasked_fit = unmasked.time_fit();
        results.add_fit("time_slope", masked_fit);
        results.add_fit("unmasked_time_slope", unmasked_fit);
        std::vector<double> ratios;  // masked time / unmasked time, at each length
        for (std::size_t k = 0; k < masked.n.size(); ++k)
            ratios.push_back(masked.wall_seconds[k] / unmasked.wall_seconds[k]);
        const auto [low, high] = std::minmax_element(ratios.begin(), ratios.end());
        results.add("masked_over_unmasked_min", *low, 2);
        results.add("masked_over_unmasked_max", *high, 2);
        results.add("masked_over_unmasked_at_n_max", ratios.back(), 2);
        const std::string saved = attn::format_number(100 * (1 - *low), 2);
        results.add_text("masking_verdict",
                         *low >= 1 ? "at no length did the mask make the call cheaper"
                                   : "the masked call was faster at some lengths, by at most " +
                                         saved + " %, though it does all the unmasked" +
                                         " arithmetic and one pass more");
        results.add("cost_n_min", unmasked.n.front());
        results.add("cost_n_max", double(n_max));
        results.add("cost_threads", threads);
        // ⟨Draw masked against unmasked cost⟩ 02-masked-attention.md:672
        attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds"};
        time_style.log_x = time_style.log_y = true;
        attn::Series unmasked_series = unmasked.time(), masked_series = masked.time();
        unmasked_series.label += ", slope " + unmasked_fit.text();
        masked_series.label += ", slope " + masked_fit.text();
        attn::plot::lines(out / "cost_masked.svg", {unmasked_series, masked_series},
                          time_style);
    });
}
