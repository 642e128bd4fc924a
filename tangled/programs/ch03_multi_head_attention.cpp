// Generated from chapters/03-multi-head-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/measure.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/sentence.hpp"

namespace {

// ⟨Merge the heads the wrong way⟩ 03-multi-head-attention.md:125
/// The wrong merge: heads stored one after
/// another (h×n×d_k), memory re-read as n×(h·d_k).
xt::xtensor<double, 2> merge_by_reinterpreting_memory(
    const std::vector<xt::xtensor<double, 2>>& heads)
{
    const std::size_t h = heads.size(), n = heads[0].shape(0), d_k = heads[0].shape(1);
    std::vector<double> memory;  // head-major: head 0's n rows, then head 1's, ...
    for (const auto& head : heads)
        memory.insert(memory.end(), head.begin(), head.end());
    xt::xtensor<double, 2> merged = xt::zeros<double>({n, h * d_k});
    // the same bytes, read as n rows
    std::copy(memory.begin(), memory.end(), merged.begin());
    return merged;
}

// ⟨Count parameters and floating-point operations⟩ 03-multi-head-attention.md:556
/// Parameters of one multi-head attention layer
/// without biases: four d_model×d_model matrices.
double parameter_count(double d_model) { return 4 * d_model * d_model; }

/// Floating-point operations of multi-head self-attention
/// over n tokens: projections and attention.
std::pair<double, double> flop_count(double n, double d_model)
{
    return {8 * n * d_model * d_model, 4 * n * n * d_model};
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch03",
                             "multi-head attention: heads, merging, counts, time",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Show which token each merged element comes from⟩ 03-multi-head-attention.md:142
        // per head: element (i, c) holds i
        std::vector<xt::xtensor<double, 2>> token_of_element;
        const std::size_t merge_n = 6, merge_h = 2, merge_d_k = 3;
        for (std::size_t t = 0; t < merge_h; ++t) {
            xt::xtensor<double, 2> head = xt::zeros<double>({merge_n, merge_d_k});
            for (std::size_t i = 0; i < merge_n; ++i) xt::row(head, i) = double(i);
            token_of_element.push_back(head);
        }
        const xt::xtensor<double, 2> right = attn::merge_heads(token_of_element);
        const xt::xtensor<double, 2> wrong = merge_by_reinterpreting_memory(token_of_element);
        std::size_t misplaced = 0;
        for (std::size_t i = 0; i < merge_n; ++i)
            for (std::size_t c = 0; c < merge_h * merge_d_k; ++c)
                misplaced += (wrong(i, c) != double(i));
        results.add("misplaced_elements_wrong_merge", double(misplaced));
        results.add("merged_elements", double(wrong.size()));
        const std::vector<std::string> merge_rows = {"token 0", "token 1", "token 2",
                                                     "token 3", "token 4", "token 5"};
        std::vector<std::string> merge_columns;
        for (std::size_t t = 0; t < merge_h; ++t)
            for (std::size_t c = 0; c < merge_d_k; ++c)
                merge_columns.push_back("h" + std::to_string(t) + " c" + std::to_string(c));
        attn::plot::HeatmapStyle merge_style{"", merge_rows, merge_columns,
                                             "column of the merged matrix", "row"};
        merge_style.probabilities = false;
        merge_style.colorbar_label = "token the element came from";
        attn::plot::heatmap_grid(out / "merge.svg",
                                 {{right, attn::plot::titled(merge_style, "merge\\_heads")},
                                  {wrong, attn::plot::titled(merge_style,
                                                             "transpose(0,1).view(...)")}},
                                 2);
        // ⟨Embed the sentence with its positions⟩ 03-multi-head-attention.md:406
        const std::vector<std::string> tokens =
            attn::split_words("the cat saw the dog and the dog saw the cat");
        const std::size_t n = tokens.size(), d_word = 8, d_position = 16,
                          d_model = d_word + d_position;
        const std::size_t h = 2, d_k = d_model / h;
        // n×d_word
        const xt::xtensor<double, 2> words = attn::embed_words<double>(tokens, d_word, rng());
        // n×d_model
        xt::xtensor<double, 2> X = xt::zeros<double>({n, d_model});
        xt::view(X, xt::all(), xt::range(0, d_word)) = words;
        for (std::size_t i = 0; i < n; ++i) X(i, d_word + i) = 1.0;  // one-hot position
        // ⟨Build a previous-token head and a same-word head⟩ 03-multi-head-attention.md:420
        const double sharp = 4.0;  // scale of head 0's scores: q_{i}·k_{i-1}/√d_k = sharp²/√d_k
        xt::xtensor<double, 2> W_q = xt::zeros<double>({d_model, d_model}), W_k = W_q;
        for (std::size_t p = 0; p + 1 < d_k; ++p) {  // head 0: columns 0..d_k-1
            W_q(d_word + p, p) = sharp;              // query of position p -> column p
            W_k(d_word + p, p + 1) = sharp;          // key of position p -> column p+1
        }
        for (std::size_t c = 0; c < d_word; ++c) {   // head 1: columns d_k..2d_k-1
            W_q(c, d_k + c) = 1.5;
            W_k(c, d_k + c) = 1.5;
        }
        const attn::Mask everything = xt::ones<bool>({n, n});
        const auto head_weights =
            attn::multi_head_attention_weights(X, X, W_q, W_k, h, everything);
        attn::plot::heatmap_grid(
            out / "heads.svg",
            {{head_weights[0], {"head 0: the previous token", tokens, tokens}},
             {head_weights[1], {"head 1: the same word", tokens, tokens}}},
            2);
        double on_previous = 0, on_same_word = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (i > 0) on_previous += head_weights[0](i, i - 1) / double(n - 1);
            for (std::size_t j = 0; j < n; ++j)  // every occurrence of i's word, i's own too
                if (tokens[j] == tokens[i]) on_same_word += head_weights[1](i, j) / double(n);
        }
        results.add("head0_weight_on_previous_token_mean", on_previous);
        results.add("head1_weight_on_same_word_mean", on_same_word);
        // ⟨Compare with chapter 1 and with the reference loops⟩ 03-multi-head-attention.md:489
        const auto X_f = xt::xtensor<float, 2>(X);
        const double init = 1.0 / std::sqrt(double(d_model));
        const auto R_q = attn::random_normal<float>(d_model, d_model, init, rng);
        const auto R_k = attn::random_normal<float>(d_model, d_model, init, rng);
        const auto R_v = attn::random_normal<float>(d_model, d_model, init, rng);
        const auto R_o = attn::random_normal<float>(d_model, d_model, init, rng);
        const xt::xtensor<float, 2> I_f = xt::eye<float>(d_model);
        {
            const xt::xtensor<float, 2> one_head =
                attn::multi_head_attention(X_f, X_f, R_q, R_k, R_v, I_f, 1);
            const xt::xtensor<float, 2> Q = xt::linalg::dot(X_f, R_q),
                                        K = xt::linalg::dot(X_f, R_k),
                                        V = xt::linalg::dot(X_f, R_v);  // n×d_model each
            const xt::xtensor<float, 2> chapter1 = attn::scaled_dot_product_attention(Q, K, V);
            results.add("max_abs_difference_one_head_vs_chapter1",
                        xt::amax(xt::abs(one_head - chapter1))());
        }
        {
            const attn::Mask causal = attn::causal_mask(n);
            const std::size_t heads = 4;
            const xt::xtensor<float, 2> fast =
                attn::multi_head_attention(X_f, X_f, R_q, R_k, R_v, R_o, heads, causal);
            const auto Q_heads =
                attn::split_heads(xt::xtensor<float, 2>(xt::linalg::dot(X_f, R_q)), heads);
            const auto K_heads =
                attn::split_heads(xt::xtensor<float, 2>(xt::linalg::dot(X_f, R_k)), heads);
            const auto V_heads =
                attn::split_heads(xt::xtensor<float, 2>(xt::linalg::dot(X_f, R_v)), heads);
            std::vector<xt::xtensor<float, 2>> O_heads;
            for (std::size_t t = 0; t < heads; ++t)
                O_heads.push_back(
                    attn::masked_attention_by_rows(Q_heads[t], K_heads[t], V_heads[t], causal));
            const xt::xtensor<float, 2> reference =
                xt::linalg::dot(attn::merge_heads(O_heads), R_o);
            results.add("max_abs_difference_vs_reference_loops",
                        xt::amax(xt::abs(fast - reference))());
        }
        // ⟨Print the counts for the base Transformer⟩ 03-multi-head-attention.md:572
        const auto [projection_flops, attention_flops] = flop_count(512, 512);
        results.add("base_parameters", parameter_count(512));
        results.add("base_projection_gflop", projection_flops / 1e9);
        results.add("base_attention_gflop", attention_flops / 1e9);
        // ⟨Time the layer against the number of heads⟩ 03-multi-head-attention.md:596
        const int threads = 1;
        const attn::BlasThreads one_thread(threads);
        const std::size_t d_time = 256;
        const std::vector<std::size_t> head_counts = {1, 2, 4, 8, 16, 32, 64};
        using Lengths = std::vector<std::size_t>;
        const Lengths lengths = options.quick   ? Lengths{64, 128}
                                : options.bench ? Lengths{128, 256, 512, 1024}
                                                : Lengths{128, 256, 512};
        std::array<xt::xtensor<float, 2>, 4> W_time;  // W_q, W_k, W_v, W_o: d_model×d_model
        const double w_scale = 1 / std::sqrt(double(d_time));  // variance 1/d_model
        for (auto& W : W_time) W = attn::random_normal<float>(d_time, d_time, w_scale, rng);
        std::vector<std::vector<double>> seconds;  // [length][head count]
        for (std::size_t n_time : lengths) {  // tokens X: n×d_model
            const auto X_time = attn::random_normal<float>(n_time, d_time, 1.0, rng);
            std::vector<attn::Call> calls;
            for (std::size_t heads : head_counts)
                calls.push_back([&, heads] {
                    return attn::multi_head_attention(X_time, X_time, W_time[0], W_time[1],
                                                      W_time[2], W_time[3], heads);
                });
            const int rounds = n_time <= 256 ? 20 : 5;  // short calls: more rounds, same cost
            seconds.emplace_back();
            for (const attn::Timing& timing : attn::time_alternating(calls, rounds))
                seconds.back().push_back(timing.wall);
        }
        // ⟨Draw the time against the number of heads⟩ 03-multi-head-attention.md:627
        std::vector<attn::Series> curves;
        for (std::size_t l = 0; l < lengths.size(); ++l) {
            attn::Series curve{"n = " + std::to_string(lengths[l]) + " (1 thread)", {}, {}};
            for (std::size_t c = 0; c < head_counts.size(); ++c)
                curve.x.push_back(double(head_counts[c])),
                    curve.y.push_back(seconds[l][c] / seconds[l][0]);
            curves.push_back(curve);
        }
        attn::plot::LinePlotStyle time_style{"", "heads h (d_{model} = 256)",
                                             "time / time with one head"};
        time_style.log_x = time_style.log_y = true;
        attn::plot::lines(out / "time_against_heads.svg", curves, time_style);
        auto ratio = [&](std::size_t l, std::size_t heads) {
            const auto c = std::find(head_counts.begin(), head_counts.end(), heads);
            return seconds[l][std::size_t(c - head_counts.begin())] / seconds[l][0];
        };
        results.add("time_threads", threads);
        results.add("time_n_min", double(lengths.front()));
        results.add("time_n", double(lengths.back()));
        results.add("time_ms_h1_at_n", 1e3 * seconds.back().front());
        results.add("time_ratio_h8_vs_h1_at_n_min", ratio(0, 8), 2);
        results.add("time_ratio_h64_vs_h1_at_n_min", ratio(0, 64), 2);
        results.add("time_ratio_h8_vs_h1", ratio(lengths.size() - 1, 8), 2);
        results.add("time_ratio_h64_vs_h1", ratio(lengths.size() - 1, 64), 2);
        results.add_text("heads_trend", ratio(lengths.size() - 1, 64) > ratio(0, 64)
                                            ? "so many heads cost more, relative to one, at the"
                                              " longer sequence"
                                            : "yet in this run 64 heads cost no more, relative"
                                              " to one, at the longer sequence");
    });
}
